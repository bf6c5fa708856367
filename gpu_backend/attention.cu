// GpuAttention's kernels and the implementation behind GpuAttention::create (see attention.h).
//
// Decode path (n_tokens < gemm_min_tokens), flash-decoding:
//   decode_piece_kernel, grid (pieces, n_head / kHeads, n_tokens), 128 threads. A block takes one
//   query token, kHeads query heads of one KV group (4 for Llama-3's group of 4: each K/V row is
//   read once for all of them) and one piece of split_tokens KV positions. Lanes split a row into
//   8-element chunks (one 16-byte load for f16, two for f32, a scale and four 2-byte loads for a
//   q8_0 cache, whose 34-byte blocks are only 2-byte aligned); the hd/8 lanes of one key (rounded
//   up to a power of two: `lanes_per_key`) read consecutive bytes of the row, and a warp reads
//   32 / lanes_per_key rows at once, kUnroll rows per lane in flight. Scores go to shared memory,
//   then max, exp and sum per head, then the weighted V sum, reduced across the block.
//   With one piece the block writes `out` itself; otherwise it writes its partial (m, l,
//   acc[head_dim], acc unnormalised) and decode_merge_kernel, grid (n_head, n_tokens), combines
//   the pieces exactly: out = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p.
//   A piece past a query's causal limit holds no key of it: its block returns at once without
//   writing, and the merge reads only the ceil(n_ctx / split_tokens) pieces that hold keys, so no
//   -inf or 0/0 ever enters the arithmetic.
//   Workspace: n_dec * n_head * max_pieces * (head_dim + 2) floats, n_dec = min(max_tokens,
//   gemm_min_tokens - 1), max_pieces = ceil(max_context / split_tokens) (none for one piece).
//
// Flash path (n_tokens >= gemm_min_tokens, GemmPrecision::kF16, flash_attention_supported: an f16
// cache, head_dim 64 or 128): flash_attention_prefill (flash_attention.cu), no workspace. A q8_0
// cache with such heads takes it too, over a dense f16 copy: gather_kv_kernel widens rows
// 0..T-1 of the layer into the GEMM path's K and V arrays, which flash_attention_prefill reads
// as a one-block, one-layer cache through a two-entry table (dense_table) made at creation. The
// GEMM path instead writes n_head x T scores per query to memory and back: a 32k prefill with a
// q8_0 cache ran at 1.8k tok/s on it against 9.4k for f16 through flash attention (H200,
// c9e3482).
//
// GEMM path (n_tokens >= gemm_min_tokens, every other case):
//   gather_kv_kernel copies K and V rows 0..T-1 of the layer into contiguous [T][kv_dim] arrays
//   (f32 or f16 per precision); kF16 also rounds q to f16. Per query tile of Tq tokens (the last
//   key of the tile is C - 1 = pos0 + t0 + Tq - 1), for each position ig in the KV group one
//   cuBLAS strided-batched call over the n_head_kv groups computes S = scale * K Q^T into
//   S [n_head][Tq][lds] (lds = C rounded up to 8), causal_softmax_kernel (one block per row)
//   turns each row into probabilities P (in place for kF32, into an f16 copy for kF16; masked
//   keys exactly 0), and a second batched call per ig computes O = V P straight into `out`.
//   Workspace: 2 * max_context * kv_dim elements (K, V), max_tokens * n_head * head_dim halves
//   (q, kF16 only), and the score tile: n_head * tile * round8(max_context) floats (plus as many
//   halves for kF16), where the tile shrinks below query_tile_tokens so that the scores stay
//   under kMaxScoreFloats (128 MiB) at long contexts, as the CPU's PrefillAttention does.
//   The two paths never run in one call, so they share one buffer (its size is the larger need).
//
// REQUIRES (not checkable on the host): the KV block pointers in the device block table are
// 16-byte aligned for f32 and f16 caches, 2-byte aligned for q8_0 (arena buffers are 256-byte
// aligned; a block is a whole number of rows).
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gpu_backend/attention.h"
#include "gpu_backend/dependent_launch.cuh"
#include "gpu_backend/flash_attention.h"
#include "gpu_backend/kv_q8_0.cuh"

namespace strata::gpu {
namespace {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * 32;
constexpr int kChunk = 8;   // row elements per lane and load
constexpr int kUnroll = 4;  // rows per lane in flight
constexpr int kSoftmaxThreads = 256;
constexpr int kMaxHeadDim = 256;           // lanes_per_key <= 32
constexpr int64_t kMaxSplitTokens = 1024;  // keeps the decode block's shared memory < 48 KiB
constexpr int64_t kMaxGridYZ = 65535;      // CUDA's limit on gridDim.y and gridDim.z
constexpr int64_t kMaxScoreFloats = int64_t{32} << 20;  // 128 MiB of float32 scores
constexpr int64_t kMaxSharedBytes = 48 * 1024;          // without cudaFuncSetAttribute opt-in
constexpr unsigned kFullMask = 0xffffffffu;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline int64_t align_bytes(int64_t bytes) { return round_up(bytes, kDeviceArenaAlignmentBytes); }

// ---- Chunk loads and stores: 8 consecutive row elements as float32.

__device__ __forceinline__ void load_chunk(const float* __restrict__ p, float (&v)[kChunk]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ float2 half2_bits_to_float2(uint32_t bits) {
  __half2 h;
  static_assert(sizeof(h) == sizeof(bits), "half2 is 4 bytes");
  memcpy(&h, &bits, sizeof(bits));
  return __half22float2(h);  // .x is the lower address (element 2i), .y element 2i + 1
}

__device__ __forceinline__ void load_chunk(const __half* __restrict__ p, float (&v)[kChunk]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const float2 f0 = half2_bits_to_float2(u.x), f1 = half2_bits_to_float2(u.y);
  const float2 f2 = half2_bits_to_float2(u.z), f3 = half2_bits_to_float2(u.w);
  v[0] = f0.x, v[1] = f0.y, v[2] = f1.x, v[3] = f1.y;
  v[4] = f2.x, v[5] = f2.y, v[6] = f3.x, v[7] = f3.y;
}

// ---- KV cache element types. The kernels take the cache's type as a template parameter T: float
// (kF32), __half (kF16) or Q8Kv (kQ8_0, kv_q8_0.cuh), and address a row through byte pointers:
// kv_offset<T>(e) is the byte offset of element e (a multiple of 32 for Q8Kv: a block start), and
// load_kv<T>(row, e) reads elements e .. e + 7 (e a multiple of 8) as float32.

struct Q8Kv {};

template <typename T>
__device__ __forceinline__ int64_t kv_offset(int64_t e) {
  return e * static_cast<int64_t>(sizeof(T));
}
template <>
__device__ __forceinline__ int64_t kv_offset<Q8Kv>(int64_t e) {
  return q8_0_block_offset(e);
}

template <typename T>
__device__ __forceinline__ void load_kv(const unsigned char* __restrict__ row, int64_t e,
                                        float (&v)[kChunk]) {
  load_chunk(reinterpret_cast<const T*>(row) + e, v);
}
template <>
__device__ __forceinline__ void load_kv<Q8Kv>(const unsigned char* __restrict__ row, int64_t e,
                                              float (&v)[kChunk]) {
  load_q8_0_chunk(row, e, v);
}

__device__ __forceinline__ void store_chunk(float* __restrict__ p, const float (&v)[kChunk]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ uint32_t float2_to_half2_bits(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // round to nearest even, like f32_to_f16
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

__device__ __forceinline__ void store_chunk(__half* __restrict__ p, const float (&v)[kChunk]) {
  uint4 u;
  u.x = float2_to_half2_bits(v[0], v[1]);
  u.y = float2_to_half2_bits(v[2], v[3]);
  u.z = float2_to_half2_bits(v[4], v[5]);
  u.w = float2_to_half2_bits(v[6], v[7]);
  *reinterpret_cast<uint4*>(p) = u;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, off));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(kFullMask, x, off);
  return x;
}

// ---- Decode: one piece of KV positions for kHeads query heads of one token.

struct DecodeParams {
  const float* q;            // [n_tokens][n_head * head_dim]
  void* const* block_table;  // GpuKvView::block_table
  int n_layer;
  int layer;
  int block_tokens;
  int kv_dim;
  int n_head;
  int group;  // query heads per KV head
  int head_dim;
  int lanes_per_key;  // power of two >= head_dim / kChunk, <= 32
  int pos0;
  const int32_t* positions;  // device, or null: overrides pos0 + token (gpu_kv_view.h)
  int split_tokens;
  int pieces;                // ceil(kv.num_tokens / split_tokens)
  int max_blocks_per_piece;  // KV blocks one piece can touch (its pointers sit in shared memory)
  float scale;
  float* out;       // pieces == 1: [n_tokens][n_head * head_dim]
  float* part_acc;  // pieces > 1: [n_tokens][n_head][pieces][head_dim]
  float* part_ml;   // pieces > 1: [n_tokens][n_head][pieces][2] = (max, sum of exp)
  float* lse;       // or null: [n_tokens][n_head] log-sum-exp of the scores (pieces == 1)
};

// Shared memory of decode_piece_kernel: K and V block pointers, per-head max and sum, and one
// region used first for the scores [kHeads][split_tokens], then for the cross-warp reduction of
// the weighted V sums [kDecodeWarps][kHeads][head_dim].
inline int64_t decode_shared_bytes(int heads, int64_t split_tokens, int64_t head_dim,
                                   int64_t max_blocks_per_piece) {
  const int64_t region_floats =
      std::max<int64_t>(heads * split_tokens, int64_t{kDecodeWarps} * heads * head_dim);
  return 2 * max_blocks_per_piece * static_cast<int64_t>(sizeof(void*)) +
         (2 * heads + region_floats) * static_cast<int64_t>(sizeof(float));
}

template <typename T, int kHeads>
__global__ void __launch_bounds__(kDecodeThreads) decode_piece_kernel(const DecodeParams p) {
  allow_dependent_launch();  // the output projection's GEMV may load its weights meanwhile
  extern __shared__ __align__(16) unsigned char shared[];
  const int piece = blockIdx.x;
  const int head0 = blockIdx.y * kHeads;  // first of this block's query heads
  const int token = blockIdx.z;
  // Keys 0 .. n_ctx - 1 are visible to this query.
  const int n_ctx = (p.positions != nullptr ? p.positions[token] : p.pos0 + token) + 1;
  const int key0 = piece * p.split_tokens;
  // Uniform across the block, so the early return cannot strand a __syncthreads.
  if (key0 >= n_ctx) return;
  const int n_keys = min(p.split_tokens, n_ctx - key0);
  const int kv_head = head0 / p.group;  // kHeads divides group: one KV head for all
  const int hd = p.head_dim;

  const unsigned char** k_blocks = reinterpret_cast<const unsigned char**>(shared);
  const unsigned char** v_blocks = k_blocks + p.max_blocks_per_piece;
  float* head_max = reinterpret_cast<float*>(v_blocks + p.max_blocks_per_piece);  // [kHeads]
  float* head_sum = head_max + kHeads;                                            // [kHeads]
  float* region = head_sum + kHeads;

  const int first_block = key0 / p.block_tokens;
  const int n_blocks = (key0 + n_keys - 1) / p.block_tokens - first_block + 1;
  for (int i = threadIdx.x; i < n_blocks; i += blockDim.x) {
    const int64_t entry = (static_cast<int64_t>(first_block + i) * p.n_layer + p.layer) * 2;
    // Offset to this KV head once, so a row's chunk is element row * kv_dim + dim0 from there. A
    // null entry is a block attended elsewhere (run_decode_partial): its keys are masked.
    const auto* k = static_cast<const unsigned char*>(p.block_table[entry]);
    const auto* v = static_cast<const unsigned char*>(p.block_table[entry + 1]);
    const int64_t head_offset = kv_offset<T>(static_cast<int64_t>(kv_head) * hd);
    k_blocks[i] = k != nullptr ? k + head_offset : nullptr;
    v_blocks[i] = v != nullptr ? v + head_offset : nullptr;
  }

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int lpk = p.lanes_per_key;
  const int chunk = lane & (lpk - 1);
  const int slots_per_warp = 32 / lpk;
  const int slot = warp * slots_per_warp + lane / lpk;  // which key of a step this lane reads
  const int n_slots = kDecodeWarps * slots_per_warp;
  const int dim0 = chunk * kChunk;
  const bool has_chunk = dim0 < hd;  // false for the padding lanes when hd / 8 is no power of 2

  float qv[kHeads][kChunk];
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    const float* qh = p.q + (static_cast<int64_t>(token) * p.n_head + head0 + h) * hd + dim0;
#pragma unroll
    for (int e = 0; e < kChunk; ++e) qv[h][e] = has_chunk ? qh[e] : 0.0f;
  }
  __syncthreads();  // block pointers are in shared memory

  // Element offset of key j's chunk within its block, and which of the piece's blocks.
  auto locate = [&](int j, int& block) -> int64_t {
    const int key = key0 + j;
    const int b = key / p.block_tokens;
    block = b - first_block;
    return static_cast<int64_t>(key - b * p.block_tokens) * p.kv_dim + dim0;
  };

  // Scores. The loop bound is uniform across the block so that every lane takes part in the
  // shuffles; lanes past the piece's end compute a dummy zero.
  float* scores = region;  // [kHeads][split_tokens]
  const int step = n_slots * kUnroll;
  for (int base = 0; base < n_keys; base += step) {
    float kc[kUnroll][kChunk];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = base + u * n_slots + slot;
      int b = 0;
      const int64_t off = has_chunk && j < n_keys ? locate(j, b) : 0;
      if (has_chunk && j < n_keys && k_blocks[b] != nullptr) {
        load_kv<T>(k_blocks[b], off, kc[u]);
      } else {
#pragma unroll
        for (int e = 0; e < kChunk; ++e) kc[u][e] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = base + u * n_slots + slot;
      float dot[kHeads];
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < kChunk; ++e) s = fmaf(qv[h][e], kc[u][e], s);
        dot[h] = s;
      }
      // Sum over the lanes of this key (aligned groups of lpk lanes: xor stays inside).
      for (int off = lpk >> 1; off > 0; off >>= 1) {
#pragma unroll
        for (int h = 0; h < kHeads; ++h) dot[h] += __shfl_xor_sync(kFullMask, dot[h], off);
      }
      if (chunk == 0 && j < n_keys) {
        int b;
        locate(j, b);
        const bool masked = k_blocks[b] == nullptr;
#pragma unroll
        for (int h = 0; h < kHeads; ++h)
          scores[h * p.split_tokens + j] = masked ? -INFINITY : dot[h] * p.scale;
      }
    }
  }
  __syncthreads();

  // Softmax numerators of the piece, one warp per head: e^(s - m) in place, m and their sum kept.
  for (int h = warp; h < kHeads; h += kDecodeWarps) {
    float* row = scores + h * p.split_tokens;
    float m = -INFINITY;
    for (int j = lane; j < n_keys; j += 32) m = fmaxf(m, row[j]);
    m = warp_max(m);  // finite unless every key of the piece is masked
    float l = 0.0f;
    for (int j = lane; j < n_keys; j += 32) {
      const float e = m == -INFINITY ? 0.0f : expf(row[j] - m);
      row[j] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) {
      head_max[h] = m;
      head_sum[h] = l;
    }
  }
  __syncthreads();

  // Weighted V sum over this lane's keys.
  float acc[kHeads][kChunk];
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
#pragma unroll
    for (int e = 0; e < kChunk; ++e) acc[h][e] = 0.0f;
  }
  for (int base = 0; base < n_keys; base += step) {
    float vc[kUnroll][kChunk];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = base + u * n_slots + slot;
      if (has_chunk && j < n_keys) {
        int b;
        const int64_t off = locate(j, b);
        if (v_blocks[b] != nullptr) {
          load_kv<T>(v_blocks[b], off, vc[u]);
        } else {
#pragma unroll
          for (int e = 0; e < kChunk; ++e) vc[u][e] = 0.0f;  // weight 0: masked
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = base + u * n_slots + slot;
      if (has_chunk && j < n_keys) {
#pragma unroll
        for (int h = 0; h < kHeads; ++h) {
          const float w = scores[h * p.split_tokens + j];
#pragma unroll
          for (int e = 0; e < kChunk; ++e) acc[h][e] = fmaf(w, vc[u][e], acc[h][e]);
        }
      }
    }
  }
  // Sum over the key slots of the warp (lanes with the same chunk are lpk apart).
  for (int off = 16; off >= lpk; off >>= 1) {
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
#pragma unroll
      for (int e = 0; e < kChunk; ++e) acc[h][e] += __shfl_xor_sync(kFullMask, acc[h][e], off);
    }
  }
  __syncthreads();  // every lane is done with the scores: the region now holds warp partials
  float* warp_acc = region;  // [kDecodeWarps][kHeads][head_dim]
  if (lane < lpk && has_chunk) {
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
#pragma unroll
      for (int e = 0; e < kChunk; ++e) warp_acc[(warp * kHeads + h) * hd + dim0 + e] = acc[h][e];
    }
  }
  __syncthreads();

  for (int i = threadIdx.x; i < kHeads * hd; i += blockDim.x) {
    const int h = i / hd;
    const int d = i - h * hd;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) sum += warp_acc[(w * kHeads + h) * hd + d];
    const int64_t row = static_cast<int64_t>(token) * p.n_head + head0 + h;
    if (p.pieces == 1) {
      p.out[row * hd + d] = head_sum[h] > 0.0f ? sum / head_sum[h] : 0.0f;  // 0: all masked
    } else {
      p.part_acc[(row * p.pieces + piece) * hd + d] = sum;
    }
  }
  if (p.pieces == 1 && p.lse != nullptr && threadIdx.x < kHeads) {
    const int h = threadIdx.x;
    const int64_t row = static_cast<int64_t>(token) * p.n_head + head0 + h;
    p.lse[row] = head_sum[h] > 0.0f ? head_max[h] + logf(head_sum[h]) : -INFINITY;
  }
  if (p.pieces > 1 && threadIdx.x < kHeads) {
    const int h = threadIdx.x;
    const int64_t row = static_cast<int64_t>(token) * p.n_head + head0 + h;
    p.part_ml[(row * p.pieces + piece) * 2 + 0] = head_max[h];
    p.part_ml[(row * p.pieces + piece) * 2 + 1] = head_sum[h];
  }
}

template <int kHeads>
void launch_decode_piece(DType cache, dim3 grid, size_t shared_bytes, cudaStream_t stream,
                         const DecodeParams& p) {
  if (cache == DType::kF16) {
    decode_piece_kernel<__half, kHeads><<<grid, kDecodeThreads, shared_bytes, stream>>>(p);
  } else if (cache == DType::kQ8_0) {
    decode_piece_kernel<Q8Kv, kHeads><<<grid, kDecodeThreads, shared_bytes, stream>>>(p);
  } else {
    decode_piece_kernel<float, kHeads><<<grid, kDecodeThreads, shared_bytes, stream>>>(p);
  }
}

// Grid (n_head, n_tokens): merges the pieces that hold keys of the query through their
// log-sum-exp.
__global__ void decode_merge_kernel(const float* __restrict__ part_acc,
                                    const float* __restrict__ part_ml, int n_head, int head_dim,
                                    int pieces, int split_tokens, int pos0,
                                    const int32_t* __restrict__ positions, float* __restrict__ out,
                                    float* __restrict__ lse) {
  allow_dependent_launch();
  const int head = blockIdx.x;
  const int token = blockIdx.y;
  const int n_ctx = (positions != nullptr ? positions[token] : pos0 + token) + 1;
  const int used = (n_ctx + split_tokens - 1) / split_tokens;  // <= pieces; the rest hold no key
  const int64_t row = static_cast<int64_t>(token) * n_head + head;
  const float* ml = part_ml + row * pieces * 2;
  const float* acc = part_acc + row * pieces * head_dim;
  float m = -INFINITY;
  for (int i = 0; i < used; ++i) m = fmaxf(m, ml[2 * i]);
  if (m == -INFINITY) {  // every key masked (run_decode_partial): an empty part
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) out[row * head_dim + d] = 0.0f;
    if (lse != nullptr && threadIdx.x == 0) lse[row] = -INFINITY;
    return;
  }
  float l = 0.0f;
  for (int i = 0; i < used; ++i) l += expf(ml[2 * i] - m) * ml[2 * i + 1];
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.0f;
    for (int i = 0; i < used; ++i)
      o += expf(ml[2 * i] - m) * acc[static_cast<int64_t>(i) * head_dim + d];
    out[row * head_dim + d] = o / l;
  }
  if (lse != nullptr && threadIdx.x == 0) lse[row] = m + logf(l);
}

// Grid (rows): out/lse = the exact merge of (out, lse) and (other_out, other_lse), as
// cpu::merge_attention. other_* may be pinned host memory under its device address.
__global__ void merge_parts_kernel(float* __restrict__ out, float* __restrict__ lse,
                                   const float* __restrict__ other_out,
                                   const float* __restrict__ other_lse, int head_dim) {
  const int64_t row = blockIdx.x;
  const float la = lse[row], lb = other_lse[row];
  const float m = fmaxf(la, lb);
  if (m == -INFINITY) return;  // both empty: out stays 0, lse -inf
  const float wa = expf(la - m), wb = expf(lb - m);
  const float inv = 1.0f / (wa + wb);
  __syncthreads();  // every thread has read lse[row] before thread 0 rewrites it
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const int64_t i = row * head_dim + d;
    out[i] = (wa * out[i] + wb * other_out[i]) * inv;
  }
  if (threadIdx.x == 0) lse[row] = m + logf(wa + wb);
}

// ---- GEMM path.

// K and V rows 0 .. n_rows - 1 of `layer` into dense [n_rows][kv_dim] arrays of TOut.
template <typename TIn, typename TOut>
__global__ void gather_kv_kernel(void* const* __restrict__ block_table, int n_layer, int layer,
                                 int block_tokens, int kv_dim, int n_rows, TOut* __restrict__ k_out,
                                 TOut* __restrict__ v_out) {
  const int chunks_per_row = kv_dim / kChunk;
  const int64_t total = static_cast<int64_t>(n_rows) * chunks_per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int row = static_cast<int>(i / chunks_per_row);
    const int c = static_cast<int>(i - static_cast<int64_t>(row) * chunks_per_row);
    const int b = row / block_tokens;
    const int64_t entry = (static_cast<int64_t>(b) * n_layer + layer) * 2;
    const int64_t src = static_cast<int64_t>(row - b * block_tokens) * kv_dim + c * kChunk;
    const int64_t dst = static_cast<int64_t>(row) * kv_dim + c * kChunk;
    float v[kChunk];
    load_kv<TIn>(static_cast<const unsigned char*>(block_table[entry]), src, v);
    store_chunk(k_out + dst, v);
    load_kv<TIn>(static_cast<const unsigned char*>(block_table[entry + 1]), src, v);
    store_chunk(v_out + dst, v);
  }
}

int grid_for(int64_t work_items, int threads) {
  return static_cast<int>(std::clamp<int64_t>(ceil_div(work_items, threads), 1, int64_t{1} << 16));
}

// All kv.num_tokens rows of `layer`, converted from the cache's type to TOut.
template <typename TOut>
void launch_gather(const GpuKvView& kv, int64_t layer, TOut* k_out, TOut* v_out,
                   cudaStream_t stream) {
  const int blocks = grid_for(kv.num_tokens * kv.kv_dim / kChunk, 256);
  const int n_layer = static_cast<int>(kv.n_layer), ly = static_cast<int>(layer);
  const int bt = static_cast<int>(kv.block_tokens), kv_dim = static_cast<int>(kv.kv_dim);
  const int rows = static_cast<int>(kv.num_tokens);
  if (kv.dtype == DType::kF16) {
    gather_kv_kernel<__half, TOut>
        <<<blocks, 256, 0, stream>>>(kv.block_table, n_layer, ly, bt, kv_dim, rows, k_out, v_out);
  } else if (kv.dtype == DType::kQ8_0) {
    gather_kv_kernel<Q8Kv, TOut>
        <<<blocks, 256, 0, stream>>>(kv.block_table, n_layer, ly, bt, kv_dim, rows, k_out, v_out);
  } else {
    gather_kv_kernel<float, TOut>
        <<<blocks, 256, 0, stream>>>(kv.block_table, n_layer, ly, bt, kv_dim, rows, k_out, v_out);
  }
}

__global__ void f32_to_f16_kernel(const float* __restrict__ x, int64_t n, __half* __restrict__ y) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = __float2half_rn(x[i]);
  }
}

__device__ __forceinline__ void store_prob(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_prob(__half* p, float v) { *p = __float2half_rn(v); }

__device__ float block_reduce(float x, bool is_max, float* scratch /* [32] */) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  x = is_max ? warp_max(x) : warp_sum(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  const int n_warps = blockDim.x >> 5;
  float y = lane < n_warps ? scratch[lane] : (is_max ? -INFINITY : 0.0f);
  y = is_max ? warp_max(y) : warp_sum(y);
  __syncthreads();  // scratch may be reused by the next call
  return y;
}

// One block per score row r = h * tile_tokens + t of S [n_head][tile_tokens][ld] (already scaled):
// query t0 + t sees keys 0 .. first_visible + t - 1; P[r][j] = softmax over those, 0 for the
// rest of the tile's n_cols keys. TP = float may alias S (each element is read, then written, by
// the same thread).
template <typename TP>
__global__ void __launch_bounds__(kSoftmaxThreads)
    causal_softmax_kernel(const float* scores, TP* probs, int64_t ld, int tile_tokens,
                          int first_visible, int n_cols) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int t = static_cast<int>(r % tile_tokens);
  const int visible = first_visible + t;  // >= 1, <= n_cols
  const float* s = scores + r * ld;
  TP* pr = probs + r * ld;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, s[j]);
  m = block_reduce(m, true, scratch);
  float l = 0.0f;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) l += expf(s[j] - m);
  l = block_reduce(l, false, scratch);
  const float inv = 1.0f / l;
  for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
    store_prob(pr + j, j < visible ? expf(s[j] - m) * inv : 0.0f);
  }
}

// ---- The implementation.

struct Layout {
  int heads_per_block = 1;    // decode: query heads per CUDA block (divides the group)
  int lanes_per_key = 1;      // decode
  int64_t max_pieces = 1;     // decode
  int64_t decode_tokens = 0;  // most query tokens the decode path sees
  // Byte offsets into the one workspace buffer. Decode:
  int64_t part_acc = 0, part_ml = 0;
  // GEMM (and the flash path over widened q8_0 rows, which uses k, v and dense_table):
  int64_t k = 0, v = 0, q16 = 0, scores = 0, probs16 = 0, dense_table = 0;
  int64_t score_floats = 0;  // capacity of the score tile
  int64_t bytes = 0;
};

class CudaAttention final : public GpuAttention {
 public:
  CudaAttention(Cublas& blas, const GpuAttentionOptions& options, const Layout& layout,
                DeviceBuffer workspace)
      : blas_(blas), options_(options), layout_(layout), workspace_(std::move(workspace)) {}

  Status run(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv, int64_t layer,
             float* out, const cuda::Stream& stream) override {
    STRATA_RETURN_IF_ERROR(check(q, n_tokens, pos0, kv, layer, out));
    if (n_tokens == 0) return Status::ok();
    if (n_tokens >= options_.gemm_min_tokens) {
      // Flash attention (flash_attention.h) takes the f16-math prefill where it supports the
      // shape and the cache: its scores never leave the chip. kF32 (the exact tier the golden
      // tests use), f32 caches and other head dims keep the GEMM path.
      if (options_.precision == GemmPrecision::kF16 &&
          flash_attention_supported(options_.shape, kv.dtype))
        return flash_attention_prefill(q, n_tokens, pos0, kv, layer, options_.shape, out, stream);
      if (options_.precision == GemmPrecision::kF16 && kv.dtype == DType::kQ8_0 &&
          flash_attention_supported(options_.shape, DType::kF16))
        return run_flash_widened(q, n_tokens, pos0, kv, layer, out, stream);
      return run_gemm(q, n_tokens, pos0, kv, layer, out, stream);
    }
    return run_decode(q, n_tokens, pos0, kv, layer, out, nullptr, stream);
  }

  Status run_decode_partial(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                            int64_t layer, float* out, float* lse,
                            const cuda::Stream& stream) override {
    STRATA_RETURN_IF_ERROR(check(q, n_tokens, pos0, kv, layer, out));
    if (lse == nullptr) return Status::invalid_argument("run_decode_partial: null lse");
    if (n_tokens == 0) return Status::ok();
    return run_decode(q, n_tokens, pos0, kv, layer, out, lse, stream);
  }

  int64_t workspace_bytes() const override { return workspace_.size_bytes(); }

 private:
  Status check(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv, int64_t layer,
               const float* out) const {
    const AttentionShape& s = options_.shape;
    const std::string where = "GpuAttention::run: ";
    if (n_tokens < 0 || pos0 < 0)
      return Status::invalid_argument(where + "negative n_tokens or pos0");
    if (n_tokens > options_.max_tokens)
      return Status::invalid_argument(where + std::to_string(n_tokens) +
                                      " query tokens, more than max_tokens " +
                                      std::to_string(options_.max_tokens));
    if (kv.num_tokens > options_.max_context)
      return Status::invalid_argument(
          where + "the sequence holds " + std::to_string(kv.num_tokens) +
          " KV tokens, more than max_context " + std::to_string(options_.max_context));
    if (pos0 + n_tokens != kv.num_tokens)
      return Status::invalid_argument(where + "pos0 " + std::to_string(pos0) + " + n_tokens " +
                                      std::to_string(n_tokens) + " != KV tokens " +
                                      std::to_string(kv.num_tokens));
    if (kv.kv_dim != s.n_head_kv * s.head_dim)
      return Status::invalid_argument(where + "KV row of " + std::to_string(kv.kv_dim) +
                                      " elements, the shape needs " +
                                      std::to_string(s.n_head_kv * s.head_dim));
    if (kv.dtype != DType::kF32 && kv.dtype != DType::kF16 && kv.dtype != DType::kQ8_0)
      return Status::invalid_argument(where + "KV cache of type " + dtype_name_or_id(kv.dtype) +
                                      " (F32, F16 or Q8_0)");
    if (kv.dtype == DType::kQ8_0 && s.head_dim % kQ8Block != 0)
      return Status::invalid_argument(where + "a Q8_0 cache needs head_dim a multiple of 32, got " +
                                      std::to_string(s.head_dim));
    if (layer < 0 || layer >= kv.n_layer)
      return Status::invalid_argument(where + "layer " + std::to_string(layer) + " of " +
                                      std::to_string(kv.n_layer));
    if (n_tokens > 0 &&
        (kv.block_tokens <= 0 || kv.block_table == nullptr || q == nullptr || out == nullptr))
      return Status::invalid_argument(where + "empty KV view, q or out");
    return Status::ok();
  }

  char* ws(int64_t offset) const { return static_cast<char*>(workspace_.data()) + offset; }

  Status run_decode(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                    int64_t layer, float* out, float* lse, const cuda::Stream& stream) {
    const AttentionShape& s = options_.shape;
    const int64_t split = options_.split_tokens;
    const int heads = layout_.heads_per_block;
    DecodeParams p;
    p.q = q;
    p.block_table = kv.block_table;
    p.n_layer = static_cast<int>(kv.n_layer);
    p.layer = static_cast<int>(layer);
    p.block_tokens = static_cast<int>(kv.block_tokens);
    p.kv_dim = static_cast<int>(kv.kv_dim);
    p.n_head = static_cast<int>(s.n_head);
    p.group = static_cast<int>(s.n_head / s.n_head_kv);
    p.head_dim = static_cast<int>(s.head_dim);
    p.lanes_per_key = layout_.lanes_per_key;
    p.pos0 = static_cast<int>(pos0);
    p.positions = kv.positions;
    p.split_tokens = static_cast<int>(split);
    p.pieces = static_cast<int>(ceil_div(kv.num_tokens, split));
    // A piece of `split` keys starting anywhere spans at most this many blocks.
    p.max_blocks_per_piece = static_cast<int>(ceil_div(split, kv.block_tokens) + 1);
    p.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    p.out = out;
    p.part_acc = reinterpret_cast<float*>(ws(layout_.part_acc));
    p.part_ml = reinterpret_cast<float*>(ws(layout_.part_ml));
    p.lse = lse;
    if (p.pieces > layout_.max_pieces)
      return Status::internal("GpuAttention: more pieces than the workspace holds");

    const int64_t shared_bytes =
        decode_shared_bytes(heads, split, s.head_dim, p.max_blocks_per_piece);
    if (shared_bytes > kMaxSharedBytes)
      return Status::internal("GpuAttention: decode block needs " + std::to_string(shared_bytes) +
                              " bytes of shared memory");
    const dim3 grid(static_cast<unsigned>(p.pieces), static_cast<unsigned>(s.n_head / heads),
                    static_cast<unsigned>(n_tokens));
    const size_t smem = static_cast<size_t>(shared_bytes);
    cudaStream_t st = stream.native();
    switch (heads) {
      case 4:
        launch_decode_piece<4>(kv.dtype, grid, smem, st, p);
        break;
      case 2:
        launch_decode_piece<2>(kv.dtype, grid, smem, st, p);
        break;
      default:
        launch_decode_piece<1>(kv.dtype, grid, smem, st, p);
        break;
    }
    STRATA_RETURN_IF_ERROR(cuda::check_last_launch("decode_piece_kernel"));
    if (p.pieces == 1) return Status::ok();

    const int threads = static_cast<int>(std::min<int64_t>(256, round_up(s.head_dim, 32)));
    decode_merge_kernel<<<dim3(static_cast<unsigned>(s.n_head), static_cast<unsigned>(n_tokens)),
                          threads, 0, st>>>(p.part_acc, p.part_ml, p.n_head, p.head_dim, p.pieces,
                                            p.split_tokens, p.pos0, p.positions, out, lse);
    return cuda::check_last_launch("decode_merge_kernel");
  }

  // Flash attention over the layer's q8_0 rows widened to f16 (see the top of this file).
  Status run_flash_widened(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                           int64_t layer, float* out, const cuda::Stream& stream) {
    launch_gather(kv, layer, reinterpret_cast<__half*>(ws(layout_.k)),
                  reinterpret_cast<__half*>(ws(layout_.v)), stream.native());
    STRATA_RETURN_IF_ERROR(cuda::check_last_launch("gather_kv_kernel"));
    GpuKvView dense;
    dense.block_table = reinterpret_cast<void* const*>(ws(layout_.dense_table));
    dense.n_layer = 1;
    dense.num_tokens = kv.num_tokens;
    dense.block_tokens = kv.num_tokens;  // one block: rows 0 .. T-1 of K and of V
    dense.kv_dim = kv.kv_dim;
    dense.dtype = DType::kF16;
    return flash_attention_prefill(q, n_tokens, pos0, dense, 0, options_.shape, out, stream);
  }

  Status run_gemm(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                  int64_t layer, float* out, const cuda::Stream& stream) {
    // cuBLAS queues on its handle's stream; the kernels here on `stream`. Were they different,
    // the GEMMs would race the softmax.
    if (stream.native() != blas_.stream().native())
      return Status::invalid_argument(
          "GpuAttention::run: the prefill path needs the stream of its Cublas handle");
    const AttentionShape& s = options_.shape;
    const bool f16_math = options_.precision == GemmPrecision::kF16;
    const DType ab_type = f16_math ? DType::kF16 : DType::kF32;
    const int64_t T = kv.num_tokens;
    const int64_t hd = s.head_dim;
    const int64_t group = s.n_head / s.n_head_kv;
    const int64_t ldq = s.n_head * hd;
    cudaStream_t st = stream.native();

    // Contiguous K and V of the whole sequence.
    if (f16_math) {
      launch_gather(kv, layer, reinterpret_cast<__half*>(ws(layout_.k)),
                    reinterpret_cast<__half*>(ws(layout_.v)), st);
    } else {
      launch_gather(kv, layer, reinterpret_cast<float*>(ws(layout_.k)),
                    reinterpret_cast<float*>(ws(layout_.v)), st);
    }
    STRATA_RETURN_IF_ERROR(cuda::check_last_launch("gather_kv_kernel"));
    const void* q_ab = q;
    if (f16_math) {
      auto* q16 = reinterpret_cast<__half*>(ws(layout_.q16));
      const int64_t n = n_tokens * ldq;
      f32_to_f16_kernel<<<grid_for(n, 256), 256, 0, st>>>(q, n, q16);
      STRATA_RETURN_IF_ERROR(cuda::check_last_launch("f32_to_f16_kernel (attention q)"));
      q_ab = q16;
    }
    const int64_t ab_bytes = f16_math ? 2 : 4;
    auto* scores = reinterpret_cast<float*>(ws(layout_.scores));
    void* probs = f16_math ? static_cast<void*>(ws(layout_.probs16)) : static_cast<void*>(scores);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

    // Queries per tile: as many as the score buffer holds at this sequence's longest row.
    const int64_t tile = std::min<int64_t>(options_.query_tile_tokens,
                                           layout_.score_floats / (s.n_head * round_up(T, 8)));
    if (tile < 1) return Status::internal("GpuAttention: score buffer smaller than one row");

    for (int64_t t0 = 0; t0 < n_tokens; t0 += tile) {
      const int64_t tq = std::min(tile, n_tokens - t0);
      const int64_t n_cols = pos0 + t0 + tq;  // keys the tile's last query sees
      const int64_t lds = round_up(n_cols, 8);
      const int64_t head_stride = tq * lds;  // S and P: [n_head][tq][lds]
      for (int64_t ig = 0; ig < group; ++ig) {
        // Column-major: S_h (n_cols x tq, ld lds) = K_g^T (n_cols x hd) * Q_h (hd x tq), where
        // K_g is the row-major [T][kv_dim] array seen as kv_dim x T from head g's column, and
        // Q_h likewise from q. Batch over KV heads g; h = g * group + ig.
        Cublas::Batched g;
        g.trans_a = true;
        g.trans_b = false;
        g.m = n_cols;
        g.n = tq;
        g.k = hd;
        g.ab_type = ab_type;
        g.a = ws(layout_.k);
        g.lda = kv.kv_dim;
        g.stride_a = hd;
        g.b = static_cast<const char*>(q_ab) + (t0 * ldq + ig * hd) * ab_bytes;
        g.ldb = ldq;
        g.stride_b = group * hd;
        g.c_type = DType::kF32;
        g.c = scores + ig * head_stride;
        g.ldc = lds;
        g.stride_c = group * head_stride;
        g.batch = s.n_head_kv;
        g.alpha = scale;
        g.beta = 0.0f;
        STRATA_RETURN_IF_ERROR(blas_.gemm_strided_batched(g));
      }
      const unsigned rows = static_cast<unsigned>(s.n_head * tq);
      const int first_visible = static_cast<int>(pos0 + t0 + 1);
      if (f16_math) {
        causal_softmax_kernel<__half><<<rows, kSoftmaxThreads, 0, st>>>(
            scores, static_cast<__half*>(probs), lds, static_cast<int>(tq), first_visible,
            static_cast<int>(n_cols));
      } else {
        causal_softmax_kernel<float><<<rows, kSoftmaxThreads, 0, st>>>(
            scores, static_cast<float*>(probs), lds, static_cast<int>(tq), first_visible,
            static_cast<int>(n_cols));
      }
      STRATA_RETURN_IF_ERROR(cuda::check_last_launch("causal_softmax_kernel"));
      for (int64_t ig = 0; ig < group; ++ig) {
        // Column-major: O_h (hd x tq, ld = q row) = V_g (hd x n_cols) * P_h (n_cols x tq).
        Cublas::Batched g;
        g.trans_a = false;
        g.trans_b = false;
        g.m = hd;
        g.n = tq;
        g.k = n_cols;
        g.ab_type = ab_type;
        g.a = ws(layout_.v);
        g.lda = kv.kv_dim;
        g.stride_a = hd;
        g.b = static_cast<const char*>(probs) + ig * head_stride * ab_bytes;
        g.ldb = lds;
        g.stride_b = group * head_stride;
        g.c_type = DType::kF32;
        g.c = out + t0 * ldq + ig * hd;
        g.ldc = ldq;
        g.stride_c = group * hd;
        g.batch = s.n_head_kv;
        g.alpha = 1.0f;
        g.beta = 0.0f;
        STRATA_RETURN_IF_ERROR(blas_.gemm_strided_batched(g));
      }
    }
    return Status::ok();
  }

  Cublas& blas_;
  const GpuAttentionOptions options_;
  const Layout layout_;
  DeviceBuffer workspace_;
};

Status check_options(const GpuAttentionOptions& o) {
  const AttentionShape& s = o.shape;
  const std::string where = "GpuAttention: ";
  if (s.n_head <= 0 || s.n_head_kv <= 0 || s.n_head % s.n_head_kv != 0)
    return Status::invalid_argument(where + "n_head " + std::to_string(s.n_head) +
                                    " must be a positive multiple of n_head_kv " +
                                    std::to_string(s.n_head_kv));
  if (s.head_dim < kChunk || s.head_dim > kMaxHeadDim || s.head_dim % kChunk != 0)
    return Status::invalid_argument(where + "head_dim " + std::to_string(s.head_dim) +
                                    " must be a multiple of 8 in [8, 256]");
  // Positions and row counts are 32-bit in the kernels.
  if (o.max_context <= 0 || o.max_context > (int64_t{1} << 30))
    return Status::invalid_argument(where + "max_context " + std::to_string(o.max_context) +
                                    " must be in [1, 2^30]");
  if (o.max_tokens <= 0) return Status::invalid_argument(where + "max_tokens must be positive");
  if (o.gemm_min_tokens <= 0)
    return Status::invalid_argument(where + "gemm_min_tokens must be positive");
  if (o.query_tile_tokens <= 0)
    return Status::invalid_argument(where + "query_tile_tokens must be positive");
  if (o.split_tokens <= 0 || o.split_tokens > kMaxSplitTokens)
    return Status::invalid_argument(where + "split_tokens " + std::to_string(o.split_tokens) +
                                    " must be in [1, " + std::to_string(kMaxSplitTokens) + "]");
  if (std::min(o.max_tokens, o.gemm_min_tokens - 1) > kMaxGridYZ)
    return Status::invalid_argument(where + "the decode path takes at most " +
                                    std::to_string(kMaxGridYZ) + " query tokens");
  if (s.n_head * s.n_head_kv * s.head_dim > (int64_t{1} << 24))
    return Status::invalid_argument(where + "attention shape too large");
  if (o.precision != GemmPrecision::kF32 && o.precision != GemmPrecision::kF16)
    return Status::invalid_argument(where + "unknown GEMM precision");
  return Status::ok();
}

Layout plan_layout(const GpuAttentionOptions& o) {
  const AttentionShape& s = o.shape;
  const int64_t group = s.n_head / s.n_head_kv;
  Layout l;
  l.heads_per_block = group % 4 == 0 ? 4 : group % 2 == 0 ? 2 : 1;
  l.lanes_per_key = 1;
  while (l.lanes_per_key * kChunk < s.head_dim) l.lanes_per_key *= 2;

  // Decode partials (only when a sequence can span several pieces).
  int64_t decode_bytes = 0;
  l.decode_tokens = std::min(o.max_tokens, o.gemm_min_tokens - 1);
  l.max_pieces = ceil_div(o.max_context, o.split_tokens);
  if (l.decode_tokens > 0 && l.max_pieces > 1) {
    const int64_t rows = l.decode_tokens * s.n_head * l.max_pieces;
    l.part_acc = 0;
    l.part_ml = align_bytes(rows * s.head_dim * 4);
    decode_bytes = l.part_ml + align_bytes(rows * 2 * 4);
  }

  // GEMM path.
  int64_t gemm_bytes = 0;
  if (o.max_tokens >= o.gemm_min_tokens) {
    const bool f16 = o.precision == GemmPrecision::kF16;
    const int64_t elem = f16 ? 2 : 4;
    const int64_t kv_dim = s.n_head_kv * s.head_dim;
    const int64_t row_floats = s.n_head * round_up(o.max_context, 8);  // one query, all heads
    const int64_t tile = std::min(o.query_tile_tokens, o.max_tokens);
    // At least one query row per head; written so that no product can overflow.
    l.score_floats =
        row_floats * std::max<int64_t>(1, std::min(tile, kMaxScoreFloats / row_floats));
    l.k = 0;
    l.v = align_bytes(o.max_context * kv_dim * elem);
    l.q16 = l.v + align_bytes(o.max_context * kv_dim * elem);
    l.scores = l.q16 + (f16 ? align_bytes(o.max_tokens * s.n_head * s.head_dim * 2) : 0);
    l.probs16 = l.scores + align_bytes(l.score_floats * 4);
    l.dense_table = l.probs16 + (f16 ? align_bytes(l.score_floats * 2) : 0);
    gemm_bytes = l.dense_table + align_bytes(2 * sizeof(void*));
  }
  l.bytes = std::max<int64_t>({decode_bytes, gemm_bytes, kDeviceArenaAlignmentBytes});
  return l;
}

}  // namespace

StatusOr<std::unique_ptr<GpuAttention>> GpuAttention::create(DeviceArena& arena, Cublas& blas,
                                                             const GpuAttentionOptions& options) {
  STRATA_RETURN_IF_ERROR(check_options(options));
  const Layout layout = plan_layout(options);
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer workspace,
                          arena.allocate(layout.bytes, DeviceMemoryTag::kWorkspace));
  if (options.max_tokens >= options.gemm_min_tokens) {
    // The flash path's table over the dense K and V arrays (run_flash_widened).
    char* base = static_cast<char*>(workspace.data());
    void* const table[2] = {base + layout.k, base + layout.v};
    STRATA_RETURN_IF_ERROR(cuda::memcpy_async(base + layout.dense_table, table, sizeof(table),
                                              cuda::CopyKind::kHostToDevice, blas.stream()));
    STRATA_RETURN_IF_ERROR(blas.stream().synchronize());  // `table` is on this stack
  }
  return std::unique_ptr<GpuAttention>(
      new CudaAttention(blas, options, layout, std::move(workspace)));
}

Status merge_attention_parts(float* out, float* lse, const float* other_out, const float* other_lse,
                             int64_t rows, int64_t head_dim, const cuda::Stream& stream) {
  if (rows < 0 || head_dim <= 0) return Status::invalid_argument("merge_attention_parts: bad size");
  if (rows == 0) return Status::ok();
  const int threads = static_cast<int>(std::min<int64_t>(256, round_up(head_dim, 32)));
  merge_parts_kernel<<<static_cast<unsigned>(rows), threads, 0, stream.native()>>>(
      out, lse, other_out, other_lse, static_cast<int>(head_dim));
  return cuda::check_last_launch("merge_parts_kernel");
}

}  // namespace strata::gpu
