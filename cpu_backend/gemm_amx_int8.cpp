// AmxInt8Gemm (gemm_amx_int8.h): checks; for a few tokens x into B tiles and the groups of 32
// rows over the OpenMP threads; for many, the panels of weight rows over the threads and the
// groups of 16 tokens within each; and the plain C++ versions of both for CPUs without AMX. The
// tile kernels are in gemm_amx_int8_tiles.cpp and gemm_amx_int8_panel_tiles.cpp.
#include "cpu_backend/gemm_amx_int8.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cpu_backend/aligned_array.h"
#include "cpu_backend/gemm_amx_int8_group.h"
#include "cpu_backend/gemm_amx_int8_panel.h"
#include "cpu_backend/gemm_amx_unit.h"
#include "offload/core/dtype.h"

namespace strata::cpu {
namespace amx_detail {

namespace {

// One stored Q8_0 (q4 false) or Q4_0 block at src: its 32 quants as int8 into q (Q4_0: nibbles
// less 8, element j the low nibble of byte j, j + 16 the high), its scale returned.
float read_block(const uint8_t* src, bool q4, int8_t* q) {
  uint16_t h;
  std::memcpy(&h, src, 2);
  if (q4) {
    for (int j = 0; j < 16; ++j) {
      q[j] = static_cast<int8_t>((src[2 + j] & 15) - 8);
      q[j + 16] = static_cast<int8_t>((src[2 + j] >> 4) - 8);
    }
  } else {
    std::memcpy(q, src + 2, 32);
  }
  return f16_to_f32(h);
}

}  // namespace

void stage_block_rows(const Int8GroupArgs& g, int64_t block, int rows, int8_t* a, float* dw) {
  for (int r = 0; r < 32; ++r) {
    int8_t* dst = a + r * 32;
    if (r >= rows) {
      std::memset(dst, 0, 32);
      dw[r] = 0.0f;
      continue;
    }
    dw[r] = read_block(g.w + r * g.row_bytes + block * g.block_bytes, g.q4, dst);
  }
}

void stage_panel_tile(const uint8_t* w, int64_t row_bytes, int64_t blocks, bool q4, int rows,
                      const PanelTile& out) {
  const int64_t block_bytes = q4 ? 18 : 34;
  for (int64_t b = 0; b < blocks; ++b) {
    int8_t* tile = out.wt + b * kPanelTileBytes;
    for (int n = 0; n < 16; ++n) {
      int8_t q[32] = {};
      out.dw[b * 16 + n] = n < rows ? read_block(w + n * row_bytes + b * block_bytes, q4, q) : 0.0f;
      for (int k = 0; k < 32; ++k) tile[(k / 4) * 64 + n * 4 + k % 4] = q[k];
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

// The panel pass (gemm_amx_int8_panel_tiles.cpp) on plain arrays, bit for bit: exact int32
// sums, then s = d_w d_x and one fused multiply-add a block, in the same order.
void run_panel_pass_emulated(const amx_detail::PanelPass& p) {
  float acc[16][16] = {};
  for (int64_t b = 0; b < p.blocks; ++b) {
    const int8_t* wt = p.w.wt + b * amx_detail::kPanelTileBytes;
    for (int t = 0; t < 16; ++t) {
      const int8_t* xq = p.x.xq + b * amx_detail::kPanelTileBytes + t * 32;
      const float dx = p.x.dx[b * 16 + t];
      for (int n = 0; n < 16; ++n) {
        int32_t sum = 0;
        for (int k = 0; k < 32; ++k) sum += xq[k] * wt[(k / 4) * 64 + n * 4 + k % 4];
        const float s = p.w.dw[b * 16 + n] * dx;
        acc[t][n] = std::fma(static_cast<float>(sum), s, acc[t][n]);
      }
    }
  }
  for (int t = 0; t < p.x.tokens; ++t) {
    for (int n = 0; n < p.rows; ++n) p.y[t * p.ldy + n] = acc[t][n];
  }
}

}  // namespace

struct AmxInt8Gemm::Buffers {
  AlignedArray<int8_t> b;         // x's B tiles, [blocks][512]
  AlignedArray<float> dx;         // [blocks][16]
  AlignedArray<uint8_t> scratch;  // per thread: a, c, acc
  // The many-token path: per thread a panel's staged tiles and a C scratch; x's A tiles and
  // their scales.
  AlignedArray<uint8_t> panel;
  AlignedArray<int8_t> xa;
  AlignedArray<float> xd;
};

AmxInt8Gemm::AmxInt8Gemm(TileUnit unit) : unit_(unit), buffers_(std::make_unique<Buffers>()) {}
AmxInt8Gemm::~AmxInt8Gemm() = default;

Status AmxInt8Gemm::run(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens, float* y,
                        int64_t ldy) {
  if (!supports(w.type)) {
    return Status::invalid_argument(std::string("AmxInt8Gemm: weights of type ") +
                                    dtype_name_or_id(w.type) + " (Q8_0 or Q4_0 only)");
  }
  if (n_tokens < 1 || ldy < w.rows || w.data == nullptr || y == nullptr || x8.cols() != w.cols ||
      x8.rows() < n_tokens || w.cols % 32 != 0) {
    return Status::invalid_argument("AmxInt8Gemm: " + std::to_string(n_tokens) + " tokens, x of " +
                                    std::to_string(x8.rows()) + " x " + std::to_string(x8.cols()) +
                                    " for weights of " + std::to_string(w.cols) + " columns, ldy " +
                                    std::to_string(ldy));
  }
  if (unit_ == TileUnit::kAmx && !amx_int8_available()) {
    return Status::unsupported("AmxInt8Gemm: this CPU has no AMX-INT8 (or the OS refused it)");
  }
  if (n_tokens > kStreamingTokens) return run_panels(w, x8, n_tokens, y, ldy);
  return run_streaming(w, x8, n_tokens, y, ldy);
}

Status AmxInt8Gemm::run_streaming(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens,
                                  float* y, int64_t ldy) {
  const bool amx = unit_ == TileUnit::kAmx;
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

Status AmxInt8Gemm::run_panels(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens,
                               float* y, int64_t ldy) {
  using amx_detail::kPanelTileBytes;
  const bool amx = unit_ == TileUnit::kAmx;
  const bool q4 = w.type == DType::kQ4_0;
  const int64_t blocks = w.cols / 32;
  const int64_t row_bytes = w.row_stride_bytes();
  constexpr int64_t kTiles = kPanelRows / 16;
  const int64_t tile_bytes = blocks * (kPanelTileBytes + 16 * 4);  // quads, then scales
  const int64_t scratch_bytes = kTiles * tile_bytes + 2 * 256 * 4;
  const int64_t threads = omp_get_max_threads();
  uint8_t* scratch = buffers_->panel.reserve(threads * scratch_bytes);
  // x in the A tiles' order (gemm_amx_int8_panel.h, TokenGroup), zeros past the last token.
  const int64_t groups = (n_tokens + 15) / 16;
  int8_t* xa = buffers_->xa.reserve(groups * blocks * kPanelTileBytes);
  float* xd = buffers_->xd.reserve(groups * blocks * 16);
  if (scratch == nullptr || xa == nullptr || xd == nullptr) {
    return Status::out_of_memory("AmxInt8Gemm: panel scratch or x's tiles");
  }
#pragma omp parallel for schedule(static)
  for (int64_t gb = 0; gb < groups * blocks; ++gb) {
    const int64_t g = gb / blocks, b = gb % blocks;
    for (int64_t t = 0; t < 16; ++t) {
      const int64_t token = g * 16 + t;
      int8_t* dst = xa + gb * kPanelTileBytes + t * 32;
      if (token < n_tokens) {
        std::memcpy(dst, x8.q(token) + b * 32, 32);
        xd[gb * 16 + t] = x8.d(token)[b];
      } else {
        std::memset(dst, 0, 32);
        xd[gb * 16 + t] = 0.0f;
      }
    }
  }
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;

#pragma omp parallel
  {
    uint8_t* mine = scratch + omp_get_thread_num() * scratch_bytes;
    amx_detail::PanelTile tiles[kTiles];
    for (int64_t j = 0; j < kTiles; ++j) {
      tiles[j].wt = reinterpret_cast<int8_t*>(mine + j * tile_bytes);
      tiles[j].dw = reinterpret_cast<float*>(mine + j * tile_bytes + blocks * kPanelTileBytes);
    }
    amx_detail::PanelPass pass;
    pass.blocks = blocks;
    pass.c = reinterpret_cast<int32_t*>(mine + kTiles * tile_bytes);
    pass.ldy = ldy;
    if (amx) amx_detail::configure_amx_int8_tiles();
#pragma omp for schedule(static)
    for (int64_t panel = 0; panel < panels; ++panel) {
      const int64_t r0 = panel * kPanelRows;
      const int64_t rows = std::min(kPanelRows, w.rows - r0);
      const int64_t n_tiles = (rows + 15) / 16;
      for (int64_t j = 0; j < n_tiles; ++j) {
        const uint8_t* src = w.data + (r0 + 16 * j) * row_bytes;
        const int tile_rows = static_cast<int>(std::min<int64_t>(16, rows - 16 * j));
        if (amx) {
          amx_detail::stage_panel_tile_amx(src, row_bytes, blocks, q4, tile_rows, tiles[j]);
        } else {
          amx_detail::stage_panel_tile(src, row_bytes, blocks, q4, tile_rows, tiles[j]);
        }
      }
      for (int64_t g = 0; g < groups; ++g) {
        pass.x = amx_detail::TokenGroup{xa + g * blocks * kPanelTileBytes, xd + g * blocks * 16,
                                        static_cast<int>(std::min<int64_t>(16, n_tokens - g * 16))};
        for (int64_t j = 0; j < n_tiles; ++j) {
          pass.w = tiles[j];
          pass.rows = static_cast<int>(std::min<int64_t>(16, rows - 16 * j));
          pass.y = y + g * 16 * ldy + r0 + 16 * j;
          if (amx) {
            amx_detail::run_panel_pass_amx(pass);
          } else {
            run_panel_pass_emulated(pass);
          }
        }
      }
    }
    if (amx) amx_detail::release_amx_tiles();
  }
  return Status::ok();
}

}  // namespace strata::cpu
