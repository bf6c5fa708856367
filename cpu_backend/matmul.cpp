#include "cpu_backend/matmul.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <dnnl.hpp>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu_backend/activation_q8.h"
#include "cpu_backend/dequantize_bf16.h"
#include "cpu_backend/gemv_q8.h"
#include "offload/core/dequantize.h"

namespace strata::cpu {
namespace {

using dnnl::memory;

// f32 -> bf16, round to nearest even (NaN stays NaN), as dtype.h's f32_to_bf16 but inline, so
// that the per-element loops below vectorize instead of calling across translation units.
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

class OneDnnMatmul final : public CpuMatmul {
 public:
  explicit OneDnnMatmul(const MatmulOptions& options)
      : options_(options), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    if (options_.precision == MatmulPrecision::kBF16 && options_.amx_tiles &&
        options_.amx.unit == TileUnit::kAmx && amx_bf16_available()) {
      amx_ = std::make_unique<AmxGemm>(options_.amx);
      if (options_.amx_int8 && amx_int8_available()) {
        amx_int8_ = std::make_unique<AmxInt8Gemm>(TileUnit::kAmx);
      }
    }
  }

  const MatmulOptions& options() const override { return options_; }

  Status run(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) override {
    if (n_tokens <= 0) return Status::ok();
    if (n_tokens <= options_.gemv_max_tokens) {
      if (amx_ != nullptr && n_tokens >= options_.amx_min_tokens)
        return run_tiles(w, x, n_tokens, y);
      if (options_.int8_gemv && gemv_q8_supports(w.type)) {
        // Quantized again for each matrix that reads x (q, k and v each): ~0.25 ns a value,
        // ~1 % of a Q4_0 layer's GEMV time at the 8B's shapes.
        STRATA_RETURN_IF_ERROR(x8_.quantize(x, n_tokens, w.cols));
        return gemv_q8_batched(w, x8_, n_tokens, y);
      }
      return gemv_batched(w, x, n_tokens, y);
    }
    if (amx_ != nullptr) return run_tiles(w, x, n_tokens, y);
    try {
      return run_tiled(w, x, n_tokens, y);
    } catch (const dnnl::error& e) {
      return Status::device_error(std::string("oneDNN matmul failed: ") + e.what());
    }
  }

 private:
  // kBF16 on the AMX tiles: Q8_0 / Q4_0 on the int8 ones (amx_int8, amx_int8_prefill), the rest
  // on bf16.
  Status run_tiles(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) {
    if (amx_int8_ != nullptr && AmxInt8Gemm::supports(w.type) && w.cols % 32 == 0 &&
        (n_tokens <= AmxInt8Gemm::kStreamingTokens || options_.amx_int8_prefill)) {
      STRATA_RETURN_IF_ERROR(x8_.quantize(x, n_tokens, w.cols));
      return amx_int8_->run(w, x8_, n_tokens, y, w.rows);
    }
    return amx_->run(w, x, n_tokens, y, w.rows);
  }

  // One oneDNN matmul per (tokens, K, tile rows, dst stride, precision). The weights' layout is
  // left to oneDNN (format any): with AMX it wants them blocked, so each dequantized tile is
  // reordered into that layout once per call instead of oneDNN re-blocking a plain layout inside
  // every kernel invocation.
  struct Primitive {
    dnnl::matmul matmul;
    dnnl::memory::desc weights_md;         // the layout the matmul wants
    std::optional<dnnl::reorder> reorder;  // plain [n][k] tile -> weights_md, when they differ
  };

  Primitive& primitive(int64_t t, int64_t k, int64_t n, int64_t ldy, memory::data_type dt) {
    auto key = std::make_tuple(t, k, n, ldy, static_cast<int>(dt));
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    memory::desc src({t, k}, dt, memory::dims{k, 1});
    memory::desc wei_any({k, n}, dt, memory::format_tag::any);
    memory::desc wei_plain({k, n}, dt, memory::dims{1, k});  // tile stored [n][k]: "ba"
    memory::desc dst({t, n}, memory::data_type::f32, memory::dims{ldy, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei_any, dst), engine_);
    Primitive p{dnnl::matmul(pd), pd.weights_desc(), std::nullopt};
    if (p.weights_md != wei_plain) {
      p.reorder =
          dnnl::reorder(dnnl::reorder::primitive_desc(engine_, wei_plain, engine_, p.weights_md));
    }
    return cache_.emplace(key, std::move(p)).first->second;
  }

  Status run_tiled(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) {
    const int64_t k = w.cols;
    const bool bf16 = options_.precision == MatmulPrecision::kBF16;
    const memory::data_type dt = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    const int64_t elem_bytes = bf16 ? 2 : 4;
    const int64_t tile_rows =
        std::max<int64_t>(16, std::min<int64_t>(w.rows, options_.tile_bytes / (k * elem_bytes)));
    const int64_t row_stride = w.row_stride_bytes();

    const void* src_ptr = x;
    if (bf16) {
      if (static_cast<int64_t>(x_bf16_.size()) < n_tokens * k) x_bf16_.resize(n_tokens * k);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n_tokens * k; ++i) x_bf16_[i] = to_bf16(x[i]);
      src_ptr = x_bf16_.data();
    }
    // f32: dequantize straight into the tile. bf16: through one f32 row per thread (stays in
    // L1/L2), so the only tile-sized buffer written is the bf16 one.
    if (bf16) {
      const int64_t rows_needed = static_cast<int64_t>(omp_get_max_threads()) * k;
      if (static_cast<int64_t>(row_f32_.size()) < rows_needed) row_f32_.resize(rows_needed);
      if (static_cast<int64_t>(tile_bf16_.size()) < tile_rows * k) tile_bf16_.resize(tile_rows * k);
    } else if (static_cast<int64_t>(tile_f32_.size()) < tile_rows * k) {
      tile_f32_.resize(tile_rows * k);
    }

    for (int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
      const int64_t n = std::min(tile_rows, w.rows - r0);
      Status status;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < n; ++r) {
        const uint8_t* src = w.data + (r0 + r) * row_stride;
        Status s;
        if (bf16 && k % 32 == 0) {  // runs of 32 back to back: a plain row
          float* scratch = row_f32_.data() + static_cast<int64_t>(omp_get_thread_num()) * k;
          s = dequantize_row_bf16(w.type, src, k, tile_bf16_.data() + r * k, 32, scratch);
        } else {
          float* out = bf16 ? row_f32_.data() + static_cast<int64_t>(omp_get_thread_num()) * k
                            : tile_f32_.data() + r * k;
          s = dequantize_row(w.type, src, out, k);
          if (s.is_ok() && bf16) {
            uint16_t* dst = tile_bf16_.data() + r * k;
#pragma omp simd
            for (int64_t i = 0; i < k; ++i) dst[i] = to_bf16(out[i]);
          }
        }
        if (!s.is_ok()) {
#pragma omp critical
          status = s;
        }
      }
      STRATA_RETURN_IF_ERROR(status);
      Primitive& p = primitive(n_tokens, k, n, w.rows, dt);
      memory::desc src_md({n_tokens, k}, dt, memory::dims{k, 1});
      memory::desc wei_plain_md({k, n}, dt, memory::dims{1, k});
      memory::desc dst_md({n_tokens, n}, memory::data_type::f32, memory::dims{w.rows, 1});
      memory src_mem(src_md, engine_, const_cast<void*>(src_ptr));
      memory wei_mem(wei_plain_md, engine_,
                     bf16 ? static_cast<void*>(tile_bf16_.data()) : tile_f32_.data());
      if (p.reorder) {
        const size_t need = p.weights_md.get_size();
        if (blocked_.size() < need) blocked_.resize(need);
        memory blocked_mem(p.weights_md, engine_, blocked_.data());
        p.reorder->execute(stream_, wei_mem, blocked_mem);
        wei_mem = blocked_mem;
      }
      memory dst_mem(dst_md, engine_, y + r0);
      p.matmul.execute(
          stream_, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, wei_mem}, {DNNL_ARG_DST, dst_mem}});
      stream_.wait();
    }
    return Status::ok();
  }

  MatmulOptions options_;
  ActivationsQ8 x8_;                       // int8_gemv's quantized x, reused
  std::unique_ptr<AmxGemm> amx_;           // kBF16 products when the CPU has AMX
  std::unique_ptr<AmxInt8Gemm> amx_int8_;  // their Q8_0 / Q4_0 ones (amx_int8, amx_int8_prefill)
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int>, Primitive> cache_;
  std::vector<uint8_t> blocked_;  // one tile in the matmul's weight layout
  std::vector<float> tile_f32_;
  std::vector<float> row_f32_;  // one dequantized row per thread (bf16 path)
  std::vector<uint16_t> tile_bf16_;
  std::vector<uint16_t> x_bf16_;
};

}  // namespace

StatusOr<std::unique_ptr<CpuMatmul>> CpuMatmul::create(const MatmulOptions& options) {
  try {
    return std::unique_ptr<CpuMatmul>(new OneDnnMatmul(options));
  } catch (const dnnl::error& e) {
    return Status::device_error(std::string("oneDNN CPU engine could not be created: ") + e.what());
  }
}

}  // namespace strata::cpu
