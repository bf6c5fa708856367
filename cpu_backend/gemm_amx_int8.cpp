// AmxInt8Gemm (gemm_amx_int8.h): checks, x into B tiles, the groups of 32 rows over the OpenMP
// threads, and the plain C++ group for CPUs without AMX. The tile kernel is in
// gemm_amx_int8_tiles.cpp.
#include "cpu_backend/gemm_amx_int8.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cpu_backend/aligned_array.h"
#include "cpu_backend/gemm_amx_int8_group.h"
#include "cpu_backend/gemm_amx_unit.h"
#include "offload/core/dtype.h"

namespace strata::cpu {
namespace amx_detail {

void stage_block_rows(const Int8GroupArgs& g, int64_t block, int rows, int8_t* a, float* dw) {
  for (int r = 0; r < 32; ++r) {
    int8_t* dst = a + r * 32;
    if (r >= rows) {
      std::memset(dst, 0, 32);
      dw[r] = 0.0f;
      continue;
    }
    const uint8_t* src = g.w + r * g.row_bytes + block * g.block_bytes;
    uint16_t h;
    std::memcpy(&h, src, 2);
    dw[r] = f16_to_f32(h);
    if (g.q4) {
      for (int j = 0; j < 16; ++j) {
        dst[j] = static_cast<int8_t>((src[2 + j] & 15) - 8);
        dst[j + 16] = static_cast<int8_t>((src[2 + j] >> 4) - 8);
      }
    } else {
      std::memcpy(dst, src + 2, 32);
    }
  }
}

}  // namespace amx_detail

namespace {

using amx_detail::Int8GroupArgs;
using amx_detail::kInt8BlockBytes;

// The tile kernel's arithmetic on plain arrays: exact int32 sums, then the same float
// operations in the same order (s = d_w d_x rounded, then one fused multiply-add).
void run_int8_group_emulated(const Int8GroupArgs& g) {
  alignas(64) int8_t a[32 * 32];
  float dw[32];
  float acc[32][16] = {};
  for (int64_t b = 0; b < g.blocks; ++b) {
    amx_detail::stage_block_rows(g, b, g.rows_valid, a, dw);
    const int8_t* bt = g.b + b * kInt8BlockBytes;
    for (int r = 0; r < 32; ++r) {
      for (int t = 0; t < 16; ++t) {
        int32_t sum = 0;
        for (int k = 0; k < 32; ++k) {
          sum += static_cast<int32_t>(a[r * 32 + k]) * bt[(k / 4) * 64 + t * 4 + k % 4];
        }
        const float s = dw[r] * g.dx[b * 16 + t];
        acc[r][t] = std::fma(static_cast<float>(sum), s, acc[r][t]);
      }
    }
  }
  for (int t = 0; t < g.tokens; ++t) {
    for (int r = 0; r < g.rows_valid; ++r) g.y[t * g.ldy + r] = acc[r][t];
  }
}

}  // namespace

struct AmxInt8Gemm::Buffers {
  AlignedArray<int8_t> b;         // x's B tiles, [blocks][512]
  AlignedArray<float> dx;         // [blocks][16]
  AlignedArray<uint8_t> scratch;  // per thread: a, c, acc
};

AmxInt8Gemm::AmxInt8Gemm(TileUnit unit) : unit_(unit), buffers_(std::make_unique<Buffers>()) {}
AmxInt8Gemm::~AmxInt8Gemm() = default;

Status AmxInt8Gemm::run(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens, float* y,
                        int64_t ldy) {
  if (!supports(w.type)) {
    return Status::invalid_argument(std::string("AmxInt8Gemm: weights of type ") +
                                    dtype_name_or_id(w.type) + " (Q8_0 or Q4_0 only)");
  }
  if (n_tokens < 1 || n_tokens > kMaxTokens || ldy < w.rows || w.data == nullptr || y == nullptr ||
      x8.cols() != w.cols || x8.rows() < n_tokens || w.cols % 32 != 0) {
    return Status::invalid_argument(
        "AmxInt8Gemm: " + std::to_string(n_tokens) + " tokens (1.." + std::to_string(kMaxTokens) +
        "), x of " + std::to_string(x8.rows()) + " x " + std::to_string(x8.cols()) +
        " for weights of " + std::to_string(w.cols) + " columns, ldy " + std::to_string(ldy));
  }
  const bool amx = unit_ == TileUnit::kAmx;
  if (amx && !amx_int8_available()) {
    return Status::unsupported("AmxInt8Gemm: this CPU has no AMX-INT8 (or the OS refused it)");
  }
  const int64_t blocks = w.cols / 32;
  int8_t* bt = buffers_->b.reserve(blocks * kInt8BlockBytes);
  float* dx = buffers_->dx.reserve(blocks * 16);
  constexpr int64_t kScratch = 2048 + 4096 + 2048;  // a, c, acc (gemm_amx_int8_group.h)
  const int64_t threads = omp_get_max_threads();
  uint8_t* scratch = buffers_->scratch.reserve(threads * kScratch);
  if (bt == nullptr || dx == nullptr || scratch == nullptr) {
    return Status::out_of_memory("AmxInt8Gemm: token tiles or scratch");
  }
  const int64_t row_bytes = w.row_stride_bytes();
  const int64_t block_bytes = w.type == DType::kQ8_0 ? 34 : 18;
  const int64_t groups = (w.rows + 31) / 32;

#pragma omp parallel
  {
    // x's block b as B tile rows of quads: row kk holds token t's values 4 kk .. 4 kk + 3.
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      int8_t* tile = bt + b * kInt8BlockBytes;
      for (int64_t t = 0; t < 16; ++t) {
        const bool live = t < n_tokens;
        dx[b * 16 + t] = live ? x8.d(t)[b] : 0.0f;
        for (int64_t kk = 0; kk < 8; ++kk) {
          int8_t* quad = tile + kk * 64 + t * 4;
          if (live) {
            std::memcpy(quad, x8.q(t) + b * 32 + kk * 4, 4);
          } else {
            std::memset(quad, 0, 4);
          }
        }
      }
    }  // implicit barrier: the B tiles are complete

    uint8_t* mine = scratch + omp_get_thread_num() * kScratch;
    Int8GroupArgs g;
    g.row_bytes = row_bytes;
    g.blocks = blocks;
    g.block_bytes = block_bytes;
    g.q4 = w.type == DType::kQ4_0;
    g.b = bt;
    g.dx = dx;
    g.a = reinterpret_cast<int8_t*>(mine);
    g.c = reinterpret_cast<int32_t*>(mine + 2048);
    g.acc = reinterpret_cast<float*>(mine + 6144);
    g.ldy = ldy;
    g.tokens = static_cast<int>(n_tokens);
    if (amx) amx_detail::configure_amx_int8_tiles();
#pragma omp for schedule(static)
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t r0 = group * 32;
      g.w = w.data + r0 * row_bytes;
      g.rows_valid = static_cast<int>(std::min<int64_t>(32, w.rows - r0));
      // schedule(static): this thread's groups are consecutive, so the next one is group + 1.
      const int64_t next_r0 = r0 + 32;
      g.next = next_r0 < w.rows ? w.data + next_r0 * row_bytes : nullptr;
      g.next_bytes = g.next != nullptr ? std::min<int64_t>(32, w.rows - next_r0) * row_bytes : 0;
      g.y = y + r0;
      if (amx) {
        amx_detail::run_int8_group_amx(g);
      } else {
        run_int8_group_emulated(g);
      }
    }
    if (amx) amx_detail::release_amx_tiles();
  }
  return Status::ok();
}

}  // namespace strata::cpu
