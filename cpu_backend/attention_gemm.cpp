#include "cpu_backend/attention_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <dnnl.hpp>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include "cpu_backend/kv_row.h"

namespace strata::cpu {
namespace {

using dnnl::memory;

class OneDnnPrefillAttention final : public PrefillAttention {
 public:
  explicit OneDnnPrefillAttention(int64_t max_tile_tokens)
      : max_tile_(max_tile_tokens), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  Status run(const float* q, int64_t n_tokens, int64_t first_position, const KvLayerView& kv,
             const AttentionShape& shape, float* out) override {
    try {
      return run_impl(q, n_tokens, first_position, kv, shape, out);
    } catch (const dnnl::error& e) {
      return Status::device_error(std::string("oneDNN attention matmul failed: ") + e.what());
    }
  }

 private:
  // Shapes: G = query heads per KV head, T = query tile tokens, C = visible keys, D = head dim,
  // Q = q row stride (n_head * D).
  struct Matmuls {
    dnnl::matmul scores;  // [G][T][D] x [1][D][C] -> [G][T][C]
    dnnl::matmul mix;     // [G][T][C] x [1][C][D] -> [G][T][D] (strided into out)
    memory::desc q_md, kt_md, s_md, v_md, o_md;
  };

  Matmuls& matmuls(int64_t G, int64_t T, int64_t C, int64_t D, int64_t Q) {
    auto key = std::make_tuple(G, T, C, D, Q);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    if (cache_.size() > 256) cache_.clear();  // shapes grow with the context; keep it bounded
    const auto f32 = memory::data_type::f32;
    Matmuls m;
    m.q_md = memory::desc({G, T, D}, f32, memory::dims{D, Q, 1});
    m.kt_md = memory::desc({1, D, C}, f32, memory::dims{C * D, 1, D});  // K rows [C][D] as K^T
    m.s_md = memory::desc({G, T, C}, f32, memory::dims{T * C, C, 1});
    m.v_md = memory::desc({1, C, D}, f32, memory::dims{C * D, D, 1});
    m.o_md = memory::desc({G, T, D}, f32, memory::dims{D, Q, 1});
    m.scores = dnnl::matmul(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(m.q_md, m.kt_md, m.s_md), engine_));
    m.mix = dnnl::matmul(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(m.s_md, m.v_md, m.o_md), engine_));
    return cache_.emplace(key, std::move(m)).first->second;
  }

  // Copies head `kvh` of the first n_keys K and V rows out of the paged blocks into k_, v_.
  void gather(const KvLayerView& kv, int64_t kvh, int64_t n_keys, int64_t D) {
    k_.resize(static_cast<size_t>(n_keys * D));
    v_.resize(static_cast<size_t>(n_keys * D));
    const int64_t head_bytes = kv_bytes(kv.dtype, D);  // one KV head's slice of a row
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n_keys; ++p) {
      const char* kr = static_cast<const char*>(kv_k_row(kv, p)) + kvh * head_bytes;
      const char* vr = static_cast<const char*>(kv_v_row(kv, p)) + kvh * head_bytes;
      float* kd = k_.data() + p * D;
      float* vd = v_.data() + p * D;
      const float* k = kv_row_f32(kr, D, kv.dtype, kd);
      const float* v = kv_row_f32(vr, D, kv.dtype, vd);
      if (k != kd) std::memcpy(kd, k, D * sizeof(float));  // f32 rows come back in place
      if (v != vd) std::memcpy(vd, v, D * sizeof(float));
    }
  }

  Status run_impl(const float* q, int64_t n_tokens, int64_t first_position, const KvLayerView& kv,
                  const AttentionShape& shape, float* out) {
    const int64_t D = shape.head_dim;
    const int64_t G = shape.n_head / shape.n_head_kv;
    const int64_t Q = shape.n_head * D;
    const int64_t n_keys = first_position + n_tokens;
    if (n_keys > kv.num_tokens)
      return Status::internal("attention: the KV cache holds too few tokens");
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));

    // The score matrix is G x T x C floats: shrink the query tile as the context grows so that
    // it stays under kMaxScoreFloats (128 MiB) even at 128k tokens of context.
    constexpr int64_t kMaxScoreFloats = 32ll << 20;
    const int64_t tile = std::clamp<int64_t>(kMaxScoreFloats / (G * n_keys), 1, max_tile_);
    for (int64_t kvh = 0; kvh < shape.n_head_kv; ++kvh) {
      gather(kv, kvh, n_keys, D);
      for (int64_t t0 = 0; t0 < n_tokens; t0 += tile) {
        const int64_t T = std::min(tile, n_tokens - t0);
        const int64_t C = first_position + t0 + T;  // keys the tile's last token sees
        s_.resize(static_cast<size_t>(G * T * C));
        Matmuls& m = matmuls(G, T, C, D, Q);
        float* q_tile = const_cast<float*>(q) + t0 * Q + kvh * G * D;
        float* o_tile = out + t0 * Q + kvh * G * D;
        memory q_mem(m.q_md, engine_, q_tile), kt_mem(m.kt_md, engine_, k_.data()),
            s_mem(m.s_md, engine_, s_.data()), v_mem(m.v_md, engine_, v_.data()),
            o_mem(m.o_md, engine_, o_tile);
        m.scores.execute(
            stream_, {{DNNL_ARG_SRC, q_mem}, {DNNL_ARG_WEIGHTS, kt_mem}, {DNNL_ARG_DST, s_mem}});
        stream_.wait();
        // Masked softmax of each score row: token t0 + t sees keys 0 .. first_position + t0 + t.
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t t = 0; t < T; ++t) {
            float* row = s_.data() + (g * T + t) * C;
            const int64_t visible = first_position + t0 + t + 1;
            float max_s = -std::numeric_limits<float>::infinity();
            for (int64_t p = 0; p < visible; ++p) max_s = std::max(max_s, row[p] * scale);
            float sum = 0.0f;
            for (int64_t p = 0; p < visible; ++p) {
              row[p] = std::exp(row[p] * scale - max_s);
              sum += row[p];
            }
            const float inv = 1.0f / sum;
#pragma omp simd
            for (int64_t p = 0; p < visible; ++p) row[p] *= inv;
            std::fill(row + visible, row + C, 0.0f);
          }
        }
        m.mix.execute(stream_,
                      {{DNNL_ARG_SRC, s_mem}, {DNNL_ARG_WEIGHTS, v_mem}, {DNNL_ARG_DST, o_mem}});
        stream_.wait();
      }
    }
    return Status::ok();
  }

  int64_t max_tile_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>, Matmuls> cache_;
  std::vector<float> k_, v_, s_;
};

}  // namespace

StatusOr<std::unique_ptr<PrefillAttention>> PrefillAttention::create(int64_t max_tile_tokens) {
  if (max_tile_tokens <= 0) return Status::invalid_argument("attention tile must be positive");
  try {
    return std::unique_ptr<PrefillAttention>(new OneDnnPrefillAttention(max_tile_tokens));
  } catch (const dnnl::error& e) {
    return Status::device_error(std::string("oneDNN CPU engine could not be created: ") + e.what());
  }
}

}  // namespace strata::cpu
