// flash_prefill_kernel and flash_attention_prefill (see flash_attention.h).
//
// Grid (n_head, q_tiles), kThreads = 128 (4 warps). A CTA takes kQueryRows = 64 consecutive
// query tokens of one head; warp w owns rows 16w .. 16w + 15 of them, the m = 16 of mma.sync
// m16n8k16. q tiles run in reverse (blockIdx.y = 0 is the last tile, the one that sees the most
// keys), so the longest CTAs start first and the short ones fill the tail of the causal grid.
// The query heads of one KV group are neighbours in blockIdx.x and run at the same time, so a
// K/V tile comes from HBM about once per group and from L2 for the others.
//
// Per warp, in registers (fragment layouts of m16n8k16: lane = 4 g + t holds rows g and g + 8):
//   qf [head_dim / 16][4] f16x2  the A operand of S = Q K^T, from global f32 once per CTA
//   o  [head_dim / 8][4]  f32    the O accumulator
//   s  [8][4]             f32    the S tile of 64 keys; after the softmax it is packed in
//                                place of its C layout into pf [4][4] f16x2, the A operand of
//                                O += P V (the C layout of two n-tiles is the A layout of one
//                                k-step, so no shuffle is needed)
//   m, l [2]              f32    running max (unscaled score) and sum of this lane's two rows
// Shared (static, < 48 KiB): one K and one V tile [kKeyRows][head_dim + 8] f16 (34 KiB for
// head_dim 128). The 8 halves of padding put consecutive rows 16 bytes apart modulo 128, so
// the 8 row addresses of an ldmatrix phase fall in 8 different bank groups. Plus row_src
// [2][K, V][kKeyRows]: where each key row of a tile starts in the paged cache (null past the
// sequence), resolved once per tile by one thread per row (one division by block_tokens and one
// block-table read per thread) and double-buffered by tile parity.
//
// Pipeline per key tile j, FlashAttention-2's single-buffer schedule (each copy overlaps one
// phase of math, and K plus V of one tile fit the smem of several CTAs per SM):
//   wait K_j; sync A; copy V_j (cp.async); resolve rows of tile j+1; S = Q K_j^T (ldmatrix B
//   fragments); causal mask; online softmax; wait V_j; sync B; copy K_{j+1}; O += P V_j
//   (ldmatrix.trans B fragments).
// Sync A makes K_j visible and guarantees every warp is done reading V_{j-1}; sync B makes V_j
// visible and guarantees every warp is done reading K_j. row_src[j & 1] is written between A_{j-1}
// and B_{j-1} and read after B_{j-1} (K_j) and after A_j (V_j); its previous readers (tile j - 2)
// finished before B_{j-2}.
//
// Masking and the tail: a CTA reads key tiles 0 .. (its last row's last key) / 64. Query i sees
// keys 0 .. min(pos0 + i, n_ctx - 1) (the min only matters for the padding rows i >= n_tokens of
// the last tile, which are computed on zero q and never stored). Key rows past the sequence are
// zero-filled in shared memory rather than read: the cache may hold anything there (the tests
// put NaN), and 0 * NaN in P V would poison the row even with P = 0. A tile gets the
// per-element mask only if it reaches past the warp's first row's limit; a warp skips the math
// of a tile wholly past its last row's limit (it still joins the syncs and the copies). Tile 0
// holds key 0, which every row sees, so each row's running max is finite from the first tile on
// and the rescale factor exp2(m_old - m_new) never sees -inf - (-inf).
//
// Softmax in base 2: p = exp2(s * scale_log2 - m * scale_log2) with scale_log2 = log2(e) /
// sqrt(head_dim), one FFMA and one MUFU.EX2 per score. l sums the float32 p; P V uses p rounded
// to f16 (as the GEMM path's kF16 tier rounds its normalised P).
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "gpu_backend/flash_attention.h"
#include "gpu_backend/mma_sm80.cuh"

namespace strata::gpu {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kWarpRows = 16;                      // query rows per warp: the m of m16n8k16
constexpr int kQueryRows = kWarps * kWarpRows;     // query rows per CTA
constexpr int kKeyRows = 64;                       // keys per tile
constexpr int64_t kMaxGridY = 65535;               // CUDA's limit on gridDim.y
constexpr int64_t kMaxContext = int64_t{1} << 30;  // positions stay far from int32 overflow
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kThreads == 2 * kKeyRows, "one thread per (K or V, key row) resolves row_src");

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// 2^x in one MUFU.EX2 (exp2f without fast math adds range fix-ups); exp2(-inf) = 0.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

struct FlashParams {
  const float* q;            // [n_tokens][n_head * head_dim]
  void* const* block_table;  // GpuKvView::block_table (f16 rows)
  float* out;                // [n_tokens][n_head * head_dim]
  int n_tokens;
  int pos0;
  int n_ctx;  // pos0 + n_tokens: KV rows of the sequence
  int n_layer;
  int layer;
  int block_tokens;
  int kv_dim;
  int n_head;
  int group;    // query heads per KV head
  int q_tiles;  // ceil(n_tokens / kQueryRows) = gridDim.y
  float scale_log2;
};

template <int kHeadDim>
__global__ void __launch_bounds__(kThreads) flash_prefill_kernel(const FlashParams p) {
  constexpr int kStride = kHeadDim + 8;             // halves per shared row (see the top)
  constexpr int kChunks = kHeadDim / 8;             // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kChunks;  // rows one copy pass covers
  constexpr int kPasses = kKeyRows / kRowsPerPass;
  constexpr int kDimSteps = kHeadDim / 16;  // k-steps of S = Q K^T
  constexpr int kDimTiles = kHeadDim / 8;   // n-tiles of O
  constexpr int kKeyTiles = kKeyRows / 8;   // n-tiles of S
  constexpr int kKeySteps = kKeyRows / 16;  // k-steps of O += P V
  static_assert(kThreads % kChunks == 0 && kKeyRows % kRowsPerPass == 0, "copy passes");
  static_assert(kDimTiles % 2 == 0 && kKeyTiles % 2 == 0, "ldmatrix.x4 covers two n-tiles");

  __shared__ __align__(16) __half k_tile[kKeyRows * kStride];
  __shared__ __align__(16) __half v_tile[kKeyRows * kStride];
  __shared__ const __half* row_src[2][2][kKeyRows];  // [tile parity][K, V][row of the tile]

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;  // fragment row (A, C) and column (B) of this lane
  const int t = lane & 3;   // fragment column pair (A, C) and row pair (B)
  const int head = blockIdx.x;
  const int kv_head = head / p.group;
  const int q0 = (p.q_tiles - 1 - static_cast<int>(blockIdx.y)) * kQueryRows;
  const int cta_last_key = min(p.pos0 + q0 + kQueryRows - 1, p.n_ctx - 1);
  const int n_tiles = cta_last_key / kKeyRows + 1;

  const int warp_row0 = q0 + warp * kWarpRows;
  const bool warp_has_rows = warp_row0 < p.n_tokens;  // else: all padding, nothing to compute
  const int warp_first_limit = min(p.pos0 + warp_row0, p.n_ctx - 1);
  const int warp_last_limit = min(p.pos0 + warp_row0 + kWarpRows - 1, p.n_ctx - 1);
  int limit[2];  // last key visible to this lane's rows g and g + 8
#pragma unroll
  for (int r = 0; r < 2; ++r) limit[r] = min(p.pos0 + warp_row0 + g + 8 * r, p.n_ctx - 1);

  // Where row `src_row` of a tile starts (K or V per src_kv, this CTA's KV head).
  const int src_row = tid % kKeyRows;
  const int src_kv = tid / kKeyRows;
  auto resolve_row = [&](int tile) -> const __half* {
    const int key = tile * kKeyRows + src_row;
    if (key >= p.n_ctx) return nullptr;
    const int block = key / p.block_tokens;
    const int row = key - block * p.block_tokens;
    const int64_t entry = (static_cast<int64_t>(block) * p.n_layer + p.layer) * 2 + src_kv;
    return static_cast<const __half*>(p.block_table[entry]) + static_cast<int64_t>(row) * p.kv_dim +
           kv_head * kHeadDim;
  };
  // One tile of K or V rows into shared memory; rows past the sequence become zeros.
  auto copy_tile = [&](__half* tile, const __half* const* src) {
    const int chunk = tid % kChunks;
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      const int r = tid / kChunks + pass * kRowsPerPass;
      __half* dst = tile + r * kStride + chunk * 8;
      const __half* row = src[r];
      if (row != nullptr) {
        cp_async_16(dst, row + chunk * 8);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      }
    }
    cp_async_commit();
  };

  row_src[0][src_kv][src_row] = resolve_row(0);
  __syncthreads();
  copy_tile(k_tile, row_src[0][0]);

  // Q fragments while K_0 is in flight. Register 0 / 1: rows g / g + 8, columns 2t, 2t + 1 of
  // the k-step; 2 / 3: the same rows, columns 8 + 2t, 9 + 2t. Padding rows are zero.
  uint32_t qf[kDimSteps][4];
  {
    const int64_t ldq = static_cast<int64_t>(p.n_head) * kHeadDim;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + g + 8 * r;
      const bool valid = row < p.n_tokens;
      const float* qrow = p.q + (valid ? row : 0) * ldq + head * kHeadDim + 2 * t;
#pragma unroll
      for (int ks = 0; ks < kDimSteps; ++ks) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float2 v = make_float2(0.0f, 0.0f);
          if (valid) v = __ldg(reinterpret_cast<const float2*>(qrow + ks * 16 + half * 8));
          qf[ks][r + 2 * half] = pack_half2(v.x, v.y);
        }
      }
    }
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
  }
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};  // this lane's part of the row sums (its 16 of each 64 keys)

  for (int j = 0; j < n_tiles; ++j) {
    const int k0 = j * kKeyRows;
    const int slot = j & 1;
    const bool has_next = j + 1 < n_tiles;
    cp_async_wait_all();  // K_j (the only group in flight)
    __syncthreads();      // A: K_j visible; every warp is done with V_{j-1}
    copy_tile(v_tile, row_src[slot][1]);
    const __half* next_row = has_next ? resolve_row(j + 1) : nullptr;

    const bool active = warp_has_rows && k0 <= warp_last_limit;  // warp-uniform
    uint32_t pf[kKeySteps][4];
    if (active) {
      float s[kKeyTiles][4];
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
      }
      // S = Q K^T. K rows are keys: a row-major K tile is the col-major B operand. Matrices of
      // the x4: keys of n-tile 2np / dims 0-7 of the k-step, the same keys / dims 8-15, then
      // n-tile 2np + 1 likewise: registers (0, 1) and (2, 3) are the B pairs of the two n-tiles.
#pragma unroll
      for (int ks = 0; ks < kDimSteps; ++ks) {
#pragma unroll
        for (int np = 0; np < kKeyTiles / 2; ++np) {
          const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
          const int dim = ks * 16 + (((lane >> 3) & 1) << 3);
          uint32_t b[4];
          ldmatrix_x4(b, k_tile + key * kStride + dim);
          mma_16816(s[2 * np], qf[ks], b[0], b[1]);
          mma_16816(s[2 * np + 1], qf[ks], b[2], b[3]);
        }
      }
      // Causal mask (and keys past the sequence). Element e of n-tile nt: row g + 8 (e >> 1),
      // key k0 + 8 nt + 2t + (e & 1).
      if (k0 + kKeyRows - 1 > warp_first_limit) {
#pragma unroll
        for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = k0 + nt * 8 + 2 * t + (e & 1);
            if (key > limit[e >> 1]) s[nt][e] = -INFINITY;
          }
        }
      }
      // Online softmax. The four lanes of a quad hold one row's 64 scores.
      float tile_max[2] = {m[0], m[1]};
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[nt][e]);
      }
      float max_scaled[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 2));
        // Finite from tile 0 on (see the top); the guard keeps a broken invariant from
        // turning into NaN here.
        max_scaled[r] = tile_max[r] == -INFINITY ? 0.0f : tile_max[r] * p.scale_log2;
        const float alpha = exp2_approx(m[r] * p.scale_log2 - max_scaled[r]);  // 0 on tile 0
        m[r] = tile_max[r];
        l[r] *= alpha;
#pragma unroll
        for (int dt = 0; dt < kDimTiles; ++dt) {
          o[dt][2 * r] *= alpha;
          o[dt][2 * r + 1] *= alpha;
        }
      }
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float pe = exp2_approx(fmaf(s[nt][e], p.scale_log2, -max_scaled[e >> 1]));
          s[nt][e] = pe;
          l[e >> 1] += pe;
        }
      }
      // C layout of n-tiles 2kk and 2kk + 1 = A layout of k-step kk.
#pragma unroll
      for (int kk = 0; kk < kKeySteps; ++kk) {
        pf[kk][0] = pack_half2(s[2 * kk][0], s[2 * kk][1]);
        pf[kk][1] = pack_half2(s[2 * kk][2], s[2 * kk][3]);
        pf[kk][2] = pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pf[kk][3] = pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      }
    }
    if (has_next) row_src[slot ^ 1][src_kv][src_row] = next_row;
    cp_async_wait_all();  // V_j
    __syncthreads();      // B: V_j and row_src of tile j + 1 visible; every warp is done with K_j
    if (has_next) copy_tile(k_tile, row_src[slot ^ 1][0]);

    if (active) {
      // O += P V. V rows are keys (the k of this product): a row-major V tile is the row-major
      // B operand, hence .trans. Matrices of the x4: keys 0-7 / dims of n-tile 2dp, keys 8-15 /
      // the same dims, then n-tile 2dp + 1 likewise.
#pragma unroll
      for (int kk = 0; kk < kKeySteps; ++kk) {
#pragma unroll
        for (int dp = 0; dp < kDimTiles / 2; ++dp) {
          const int key = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
          const int dim = dp * 16 + ((lane >> 4) << 3);
          uint32_t b[4];
          ldmatrix_x4_trans(b, v_tile + key * kStride + dim);
          mma_16816(o[2 * dp], pf[kk], b[0], b[1]);
          mma_16816(o[2 * dp + 1], pf[kk], b[2], b[3]);
        }
      }
    }
  }
  // No cp.async is in flight here: the last tile issued none after its wait.

  if (!warp_has_rows) return;
  const int64_t ldo = static_cast<int64_t>(p.n_head) * kHeadDim;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    const int row = warp_row0 + g + 8 * r;
    if (row >= p.n_tokens) continue;
    const float inv = 1.0f / l[r];  // l >= 1: the row's max contributes exp2(0)
    float* orow = p.out + row * ldo + head * kHeadDim + 2 * t;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      *reinterpret_cast<float2*>(orow + dt * 8) =
          make_float2(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    }
  }
}

}  // namespace

bool flash_attention_supported(const AttentionShape& shape, DType kv_dtype) {
  return (shape.head_dim == 64 || shape.head_dim == 128) && shape.n_head_kv > 0 &&
         shape.n_head > 0 && shape.n_head % shape.n_head_kv == 0 && kv_dtype == DType::kF16;
}

Status flash_attention_prefill(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                               int64_t layer, const AttentionShape& shape, float* out,
                               const cuda::Stream& stream) {
  const std::string where = "flash_attention_prefill: ";
  if (!flash_attention_supported(shape, kv.dtype))
    return Status::invalid_argument(
        where + "unsupported shape or KV type (n_head " + std::to_string(shape.n_head) +
        ", n_head_kv " + std::to_string(shape.n_head_kv) + ", head_dim " +
        std::to_string(shape.head_dim) + ", KV " + dtype_name_or_id(kv.dtype) +
        "; needs head_dim 64 or 128 and an F16 cache)");
  if (n_tokens < 0 || pos0 < 0)
    return Status::invalid_argument(where + "negative n_tokens or pos0");
  if (pos0 + n_tokens != kv.num_tokens)
    return Status::invalid_argument(where + "pos0 " + std::to_string(pos0) + " + n_tokens " +
                                    std::to_string(n_tokens) + " != KV tokens " +
                                    std::to_string(kv.num_tokens));
  if (kv.num_tokens > kMaxContext)
    return Status::invalid_argument(where + std::to_string(kv.num_tokens) +
                                    " KV tokens, more than 2^30");
  if (kv.kv_dim != shape.n_head_kv * shape.head_dim)
    return Status::invalid_argument(where + "KV row of " + std::to_string(kv.kv_dim) +
                                    " elements, the shape needs " +
                                    std::to_string(shape.n_head_kv * shape.head_dim));
  if (layer < 0 || layer >= kv.n_layer)
    return Status::invalid_argument(where + "layer " + std::to_string(layer) + " of " +
                                    std::to_string(kv.n_layer));
  if (shape.n_head * shape.head_dim > (int64_t{1} << 24) || kv.n_layer > (int64_t{1} << 20))
    return Status::invalid_argument(where + "attention shape or layer count too large");
  if (n_tokens == 0) return Status::ok();
  if (kv.block_tokens <= 0 || kv.block_table == nullptr || q == nullptr || out == nullptr)
    return Status::invalid_argument(where + "empty KV view, q or out");
  const int64_t q_tiles = ceil_div(n_tokens, kQueryRows);
  if (q_tiles > kMaxGridY)
    return Status::invalid_argument(where + std::to_string(n_tokens) +
                                    " query tokens, more than one launch takes (" +
                                    std::to_string(kMaxGridY * kQueryRows) + ")");

  FlashParams p;
  p.q = q;
  p.block_table = kv.block_table;
  p.out = out;
  p.n_tokens = static_cast<int>(n_tokens);
  p.pos0 = static_cast<int>(pos0);
  p.n_ctx = static_cast<int>(kv.num_tokens);
  p.n_layer = static_cast<int>(kv.n_layer);
  p.layer = static_cast<int>(layer);
  p.block_tokens = static_cast<int>(std::min<int64_t>(kv.block_tokens, kMaxContext));
  p.kv_dim = static_cast<int>(kv.kv_dim);
  p.n_head = static_cast<int>(shape.n_head);
  p.group = static_cast<int>(shape.n_head / shape.n_head_kv);
  p.q_tiles = static_cast<int>(q_tiles);
  // log2(e) / sqrt(head_dim): scores are scaled into base 2 inside the exponent's FFMA.
  p.scale_log2 =
      static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(shape.head_dim)));

  const dim3 grid(static_cast<unsigned>(shape.n_head), static_cast<unsigned>(q_tiles));
  cudaStream_t st = stream.native();
  if (shape.head_dim == 128) {
    flash_prefill_kernel<128><<<grid, kThreads, 0, st>>>(p);
  } else {
    flash_prefill_kernel<64><<<grid, kThreads, 0, st>>>(p);
  }
  return cuda::check_last_launch("flash_prefill_kernel");
}

}  // namespace strata::gpu
