// Decode GEMV kernels (see gemv.h). One kernel template per (weight type T, token count NT, rows
// per warp R, units in flight U); config_of<T>() picks R and U (measured, see bench/NOTES.md):
//
//   block = 8 warps. The warps of a block split into row groups of R rows; the `ksplit` warps of
//   one group cut each row's 16-byte units between them (interleaved, so the 8 warps of a block
//   read neighbouring 512-byte runs), every lane loads U units of each of its R rows before it
//   computes, so R x U 16-byte loads are in flight per lane. Partial sums are reduced by warp
//   shuffles, then across the ksplit warps through shared memory, and the first warp of the group
//   writes the epilogue (store, add, or SwiGLU of gate and up).
//   Launches use programmatic dependent launch (dependent_launch.cuh): the weight loads of the
//   first pass are issued before the kernel waits for the kernel that wrote x.
//
// A "unit" is what one lane decodes from one 16-byte load (Q6_K: three 4-byte loads):
//   F32 4 elements, F16/BF16 8, Q8_0 16 (half a block), Q4_0 16 (the low or high nibbles of a
//   block), Q4_K 16 (one nibble half of a 16-byte run of quants), Q6_K 16 (4 positions of 4
//   sub-blocks). Lanes that share a 16-byte run load it in the same instruction.
// Integers become floats through the magic-number trick: the byte b placed in the low mantissa
// of 2^23 is the float 2^23 + b exactly, and one subtraction gives b (minus the type's offset)
// exactly, on the FP32 pipe instead of the slow integer-to-float converter.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "gpu_backend/activation_q8.cuh"
#include "gpu_backend/dependent_launch.cuh"
#include "gpu_backend/gemv.h"
#include "gpu_backend/gemv_mma.h"
#include "gpu_backend/gemv_tuning.h"
#include "gpu_backend/half_bits.cuh"
#include "offload/core/quant_blocks.h"

namespace strata::gpu {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxJobs = 3;

enum class Mode : int { kStore, kAccumulate, kSwiGLU };

struct Job {
  const uint8_t* payload = nullptr;
  const uint16_t* scales = nullptr;
  float* y = nullptr;
  int64_t rows = 0;
};

struct Params {
  Job jobs[kMaxJobs];
  int num_jobs = 0;
  const float* x = nullptr;
  // The integer path (activation_q8.h, Q8_0 and Q4_0 only): x quantized, read instead of x.
  const int8_t* xq = nullptr;
  const ActivationBlockQ8* xblocks = nullptr;
  // GemvInt8::out8: the values left for the next GEMV, quantized here.
  int8_t* out8_q = nullptr;
  ActivationBlockQ8* out8_blocks = nullptr;
  unsigned* out8_counters = nullptr;
  int64_t cols = 0;
  int64_t units_per_row = 0;
  int64_t payload_row_bytes = 0;
  int64_t scale_row_elems = 0;
  int n_tokens = 0;
  int ksplit = 1;
  Mode mode = Mode::kStore;
  GemvNorm norm;  // gemv.h: the folded RMSNorm's scale in, or the next one's inputs out
  // gemv_qkv_rope_store: jobs q, k, v; q rotated into its y, k rotated and v into the cache.
  bool rope_store = false;
  const float2* rope_table = nullptr;  // [n_tokens][rope_half] (cos, sin)
  int rope_half = 0;
  int head_dim = 0;
  GpuKvView kv;
  int64_t layer = 0;
};

// Where row `row` (element of the K or V row) of token t goes in the paged cache.
__device__ __forceinline__ void store_kv(const Params& p, int t, int64_t row, bool is_v,
                                         float value) {
  const int64_t pos = p.kv.positions[t];
  const int64_t block = pos / p.kv.block_tokens;
  void* rows = p.kv.block_table[(block * p.kv.n_layer + p.layer) * 2 + (is_v ? 1 : 0)];
  const int64_t index = (pos - block * p.kv.block_tokens) * p.kv.kv_dim + row;
  if (p.kv.dtype == DType::kF16) {
    static_cast<uint16_t*>(rows)[index] = f32_to_f16_bits(value);
  } else {
    static_cast<float*>(rows)[index] = value;
  }
}

__device__ __forceinline__ float magic_byte(uint32_t word, int k) {
  // 0x4B0000bb: byte k of `word` in the low mantissa byte of 2^23.
  return __int_as_float(static_cast<int>(__byte_perm(word, 0x4B000000u, 0x7540u | k)));
}

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

template <DType T>
struct Unit;

template <>
struct Unit<DType::kF32> {
  static constexpr int kElems = 4;
  static __device__ __forceinline__ int64_t elem0(int64_t u) { return u * 4; }
  static __device__ __forceinline__ void load(const uint8_t* row, const uint16_t*, int64_t u,
                                              uint4* w, float*) {
    *w = __ldcs(reinterpret_cast<const uint4*>(row) + u);
  }
  static __device__ __forceinline__ float dot(const uint4& w, float, const float* x) {
    return __uint_as_float(w.x) * x[0] + __uint_as_float(w.y) * x[1] + __uint_as_float(w.z) * x[2] +
           __uint_as_float(w.w) * x[3];
  }
};

template <>
struct Unit<DType::kF16> {
  static constexpr int kElems = 8;
  static __device__ __forceinline__ int64_t elem0(int64_t u) { return u * 8; }
  static __device__ __forceinline__ void load(const uint8_t* row, const uint16_t*, int64_t u,
                                              uint4* w, float*) {
    *w = __ldcs(reinterpret_cast<const uint4*>(row) + u);
  }
  static __device__ __forceinline__ float dot(const uint4& w, float, const float* x) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
      s = fmaf(f.x, x[2 * i], s);
      s = fmaf(f.y, x[2 * i + 1], s);
    }
    return s;
  }
};

template <>
struct Unit<DType::kBF16> {
  static constexpr int kElems = 8;
  static __device__ __forceinline__ int64_t elem0(int64_t u) { return u * 8; }
  static __device__ __forceinline__ void load(const uint8_t* row, const uint16_t*, int64_t u,
                                              uint4* w, float*) {
    *w = __ldcs(reinterpret_cast<const uint4*>(row) + u);
  }
  static __device__ __forceinline__ float dot(const uint4& w, float, const float* x) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s = fmaf(__uint_as_float(words[i] << 16), x[2 * i], s);
      s = fmaf(__uint_as_float(words[i] & 0xFFFF0000u), x[2 * i + 1], s);
    }
    return s;
  }
};

template <>
struct Unit<DType::kQ8_0> {
  static constexpr int kElems = 16;
  static __device__ __forceinline__ int64_t elem0(int64_t u) { return u * 16; }
  static __device__ __forceinline__ void load(const uint8_t* row, const uint16_t* scales, int64_t u,
                                              uint4* w, float* d) {
    *w = __ldcs(reinterpret_cast<const uint4*>(row) + u);
    *d = h2f(__ldcs(scales + u / 2));
  }
  static __device__ __forceinline__ float dot(const uint4& w, float d, const float* x) {
    const uint32_t words[4] = {w.x ^ 0x80808080u, w.y ^ 0x80808080u, w.z ^ 0x80808080u,
                               w.w ^ 0x80808080u};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        // (b ^ 0x80) = q + 128 for the int8 q; 2^23 + 128 + q - (2^23 + 128) = q exactly.
        s = fmaf(magic_byte(words[i], k) - 8388736.0f, x[4 * i + k], s);
      }
    }
    return d * s;
  }
};

// Q4_0: unit u = half u % 2 of block u / 2: the low nibbles of its 16 bytes (elements 0..15 of
// the block) or the high ones (16..31). The two lanes of a block issue the same 16-byte load in
// one instruction (one transaction); each keeps only 16 x values live, which is what lets the
// kernel stay under its register cap.
template <>
struct Unit<DType::kQ4_0> {
  static constexpr int kElems = 16;
  static __device__ __forceinline__ int64_t elem0(int64_t u) { return (u / 2) * 32 + (u % 2) * 16; }
  static __device__ __forceinline__ void load(const uint8_t* row, const uint16_t* scales, int64_t u,
                                              uint4* w, float* d) {
    *w = __ldcs(reinterpret_cast<const uint4*>(row) + u / 2);
    *d = h2f(__ldcs(scales + u / 2));
  }
  static __device__ __forceinline__ float dot_half(const uint4& w, float d, int half,
                                                   const float* x) {
    const int shift = 4 * half;
    const uint32_t words[4] = {(w.x >> shift) & 0x0F0F0F0Fu, (w.y >> shift) & 0x0F0F0F0Fu,
                               (w.z >> shift) & 0x0F0F0F0Fu, (w.w >> shift) & 0x0F0F0F0Fu};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int k = 0; k < 4; ++k) s = fmaf(magic_byte(words[i], k) - 8388616.0f, x[4 * i + k], s);
    return d * s;  // q - 8: 2^23 + q - (2^23 + 8)
  }
};

// Q4_K: unit u = nibble half h = u % 2 of 16-byte run c = (u / 2) % 8 of super-block u / 16's
// quants. Run c holds byte l = 16*(c%2) + i of the 32-byte group g = c / 2: its low nibble is
// element 64g + l (sub-block 2g), its high nibble element 64g + 32 + l (sub-block 2g + 1).
template <>
struct Unit<DType::kQ4_K> {
  static constexpr int kElems = 16;
  static __device__ __forceinline__ int64_t elem0(int64_t u) {
    const int64_t c = (u / 2) % 8;
    return (u / 16) * 256 + (c / 2) * 64 + (u % 2) * 32 + (c % 2) * 16;
  }
};

// Q6_K: unit u = positions l0 .. l0+3 (l0 = 4 * (j % 8)) of half n = j / 8 (j = u % 16) of super-
// block u / 16; it holds elements 128n + l0 + {0, 32, 64, 96} + (0..3). x is [16] in that order.
template <>
struct Unit<DType::kQ6_K> {
  static constexpr int kElems = 16;
  static __device__ __forceinline__ int64_t elem0(int64_t u) {
    const int64_t j = u % 16;
    return (u / 16) * 256 + (j / 8) * 128 + 4 * (j % 8);
  }
};

// Loads the x values of unit u (token row xt) into xr, in the order the unit's dot expects.
template <DType T>
__device__ __forceinline__ void load_x(const float* xt, int64_t u, float* xr) {
  if constexpr (T == DType::kQ6_K) {
    const float* p = xt + Unit<T>::elem0(u);
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(p + 32 * g));
      xr[4 * g] = a.x, xr[4 * g + 1] = a.y, xr[4 * g + 2] = a.z, xr[4 * g + 3] = a.w;
    }
  } else {
    const float4* p = reinterpret_cast<const float4*>(xt + Unit<T>::elem0(u));
#pragma unroll
    for (int i = 0; i < Unit<T>::kElems / 4; ++i) {
      const float4 a = __ldg(p + i);
      xr[4 * i] = a.x, xr[4 * i + 1] = a.y, xr[4 * i + 2] = a.z, xr[4 * i + 3] = a.w;
    }
  }
}

// What one lane loads of one unit of one row: the 16 payload bytes and what scales them.
struct Loaded {
  uint4 w;
  float d;         // Q8_0, Q4_0: block scale; Q6_K: super-block d
  uint4 head;      // Q4_K: the super-block's first 16 bytes (d, dmin, scales); Q6_K: unused
  uint32_t q6[4];  // Q6_K: ql word, ql word + 32, qh word, the 4 sub-block scales
};

template <DType T, bool Q8X>
__device__ __forceinline__ void load_unit(const uint8_t* row, const uint16_t* scales, int64_t u,
                                          Loaded* l) {
  if constexpr (Q8X && T == DType::kQ4_0) {  // a whole block: 32 weights in 16 bytes
    l->w = __ldcs(reinterpret_cast<const uint4*>(row) + u);
    l->d = h2f(__ldcs(scales + u));
  } else if constexpr (T == DType::kQ4_K) {
    const uint8_t* sb = row + (u / 16) * sizeof(BlockQ4_K);
    l->head = __ldcs(reinterpret_cast<const uint4*>(sb));
    l->w = __ldcs(reinterpret_cast<const uint4*>(sb + 16) + (u / 2) % 8);
  } else if constexpr (T == DType::kQ6_K) {
    constexpr int kPayload = sizeof(BlockQ6_K) - 2;  // 208: ql[128], qh[64], scales[16]
    const int64_t j = u % 16;
    const int n = static_cast<int>(j / 8);
    const int l0 = 4 * static_cast<int>(j % 8);
    const uint8_t* sb = row + (u / 16) * kPayload;
    l->q6[0] = __ldg(reinterpret_cast<const uint32_t*>(sb + 64 * n + l0));
    l->q6[1] = __ldg(reinterpret_cast<const uint32_t*>(sb + 64 * n + 32 + l0));
    l->q6[2] = __ldg(reinterpret_cast<const uint32_t*>(sb + 128 + 32 * n + l0));
    // Scales 8n + l0/16 + {0, 2, 4, 6}: bytes at 192 + 8n + is + 2k. Two aligned words hold them.
    const int is = l0 / 16;
    const uint32_t s0 = __ldg(reinterpret_cast<const uint32_t*>(sb + 192 + 8 * n));
    const uint32_t s1 = __ldg(reinterpret_cast<const uint32_t*>(sb + 192 + 8 * n + 4));
    // bytes is, is+2 from s0; is+4, is+6 from s1 (is is 0 or 1).
    l->q6[3] = __byte_perm(s0, s1, is == 0 ? 0x6420u : 0x7531u);
    l->d = h2f(__ldcs(scales + u / 16));
  } else {
    Unit<T>::load(row, scales, u, &l->w, &l->d);
  }
}

// Byte i (0..11) of a Q4_K block's `scales`, held in three registers (bytes 4..15 of the block).
__device__ __forceinline__ uint32_t scale_byte(const uint4& head, int i) {
  const uint32_t word = i < 4 ? head.y : (i < 8 ? head.z : head.w);
  return (word >> (8 * (i & 3))) & 0xFFu;
}

// q4k_scale_min of quant_blocks.h, from registers (a byte array here would go to local memory).
__device__ __forceinline__ void q4k_scale_min_dev(int j, const uint4& head, float* sc, float* m) {
  if (j < 4) {
    *sc = static_cast<float>(scale_byte(head, j) & 63);
    *m = static_cast<float>(scale_byte(head, j + 4) & 63);
  } else {
    *sc =
        static_cast<float>((scale_byte(head, j + 4) & 0xF) | ((scale_byte(head, j - 4) >> 6) << 4));
    *m = static_cast<float>((scale_byte(head, j + 4) >> 4) | ((scale_byte(head, j) >> 6) << 4));
  }
}

template <DType T>
__device__ __forceinline__ float dot_unit(const Loaded& l, int64_t u, const float* xr) {
  if constexpr (T == DType::kQ4_K) {
    const float d = h2f(static_cast<uint16_t>(l.head.x & 0xFFFF));
    const float dmin = h2f(static_cast<uint16_t>(l.head.x >> 16));
    const int half = static_cast<int>(u % 2);
    const int sub = 2 * static_cast<int>(((u / 2) % 8) / 2) + half;  // sub-block 0..7
    float sc, m;
    q4k_scale_min_dev(sub, l.head, &sc, &m);
    const int shift = 4 * half;
    const uint32_t words[4] = {(l.w.x >> shift) & 0x0F0F0F0Fu, (l.w.y >> shift) & 0x0F0F0F0Fu,
                               (l.w.z >> shift) & 0x0F0F0F0Fu, (l.w.w >> shift) & 0x0F0F0F0Fu};
    float s_q = 0.0f, s_x = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        s_q = fmaf(magic_byte(words[i], k) - 8388608.0f, xr[4 * i + k], s_q);
        s_x += xr[4 * i + k];
      }
    // x = d*sc*q - dmin*m per element: sum = d*sc*sum(q x) - dmin*m*sum(x).
    return (d * sc) * s_q - (dmin * m) * s_x;
  } else if constexpr (T == DType::kQ6_K) {
    const uint32_t ql0 = l.q6[0], ql1 = l.q6[1], qh = l.q6[2];
    const uint32_t q[4] = {
        (ql0 & 0x0F0F0F0Fu) | ((qh & 0x03030303u) << 4),
        (ql1 & 0x0F0F0F0Fu) | (((qh >> 2) & 0x03030303u) << 4),
        ((ql0 >> 4) & 0x0F0F0F0Fu) | (((qh >> 4) & 0x03030303u) << 4),
        ((ql1 >> 4) & 0x0F0F0F0Fu) | (((qh >> 6) & 0x03030303u) << 4),
    };
    float total = 0.0f;
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int k = 0; k < 4; ++k) s = fmaf(magic_byte(q[g], k) - 8388640.0f, xr[4 * g + k], s);
      const float sc = static_cast<float>(static_cast<int8_t>((l.q6[3] >> (8 * g)) & 0xFF));
      total = fmaf(l.d * sc, s, total);
    }
    return total;
  } else if constexpr (T == DType::kQ4_0) {
    return Unit<T>::dot_half(l.w, l.d, static_cast<int>(u % 2), xr);
  } else {
    return Unit<T>::dot(l.w, l.d, xr);
  }
}

// ---- The integer path: weights times activations quantized to 8 bits (activation_q8.h). A Q8_0
// unit stays half a block (16 weights, 4 dp4a); a Q4_0 unit is a whole block (32 weights: the low
// nibbles against the block's first 16 activations, the high ones against the last 16).

// The activations of unit u of token t: 16 (Q8_0) or 32 (Q4_0) int8 values and their block.
struct XQ8 {
  uint4 lo, hi;
  float d;
  int sum;
};

template <DType T>
__device__ __forceinline__ void load_xq(const Params& p, int t, int64_t u, XQ8* x) {
  const uint4* row = reinterpret_cast<const uint4*>(p.xq + t * p.cols);
  const int2* blocks = reinterpret_cast<const int2*>(p.xblocks + t * (p.cols / kActivationBlock));
  if constexpr (T == DType::kQ8_0) {
    x->lo = __ldg(row + u);
    x->d = __int_as_float(__ldg(blocks + u / 2).x);
  } else {
    x->lo = __ldg(row + 2 * u);
    x->hi = __ldg(row + 2 * u + 1);
    const int2 b = __ldg(blocks + u);
    x->d = __int_as_float(b.x);
    x->sum = b.y;
  }
}

// Four products of unsigned bytes a and signed bytes b, added to c: PTX's mixed-sign dp4a (the
// CUDA intrinsic has only both signed or both unsigned).
__device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

template <DType T>
__device__ __forceinline__ float dot_q8x(const Loaded& l, const XQ8& x) {
  const uint32_t w[4] = {l.w.x, l.w.y, l.w.z, l.w.w};
  const uint32_t lo[4] = {x.lo.x, x.lo.y, x.lo.z, x.lo.w};
  if constexpr (T == DType::kQ8_0) {
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) s = __dp4a(static_cast<int>(w[i]), static_cast<int>(lo[i]), s);
    return l.d * x.d * static_cast<float>(s);
  } else {
    // High nibbles masked in place are 16 n: their sum is exactly 16 times the one wanted.
    const uint32_t hi[4] = {x.hi.x, x.hi.y, x.hi.z, x.hi.w};
    int s_lo = 0, s_hi = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s_lo = dp4a_us(w[i] & 0x0F0F0F0Fu, lo[i], s_lo);
      s_hi = dp4a_us(w[i] & 0xF0F0F0F0u, hi[i], s_hi);
    }
    return l.d * x.d * static_cast<float>(s_lo + (s_hi >> 4) - 8 * x.sum);
  }
}

// The folded RMSNorm's scale from the blocks' sums of squares (GemvNorm): every block writes its
// sum per token, and the last block to finish adds them all up, in block order whichever block
// that is (the result does not depend on the schedule), writes the scales and resets the counter
// for the next call.
template <int R, int NT>
__device__ void norm_scale_tail(const Params& p, const double (&squares)[kWarps][R][NT],
                                int groups_per_block) {
  __shared__ bool last;
  __shared__ double warp_sums[kWarps];
  __syncthreads();  // squares complete
  const int ksplit = p.ksplit;
  double* partials = p.norm.scratch.partials;
  if (threadIdx.x < kGpuGemvMaxTokens) {
    const int t = static_cast<int>(threadIdx.x);
    double sum = 0.0;
    if (t < p.n_tokens) {
      for (int g = 0; g < groups_per_block; ++g)
        for (int r = 0; r < R; ++r) sum += squares[g * ksplit][r][t < NT ? t : 0];
    }
    partials[static_cast<int64_t>(blockIdx.x) * kGpuGemvMaxTokens + t] = sum;
    __threadfence();  // the sums are visible before the count says so
  }
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(p.norm.scratch.counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  for (int t = 0; t < p.n_tokens; ++t) {
    double sum = 0.0;
    for (int64_t b = threadIdx.x; b < gridDim.x; b += kThreads)
      sum += __ldcg(partials + b * kGpuGemvMaxTokens + t);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, off);
    if (lane == 0) warp_sums[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
      const double rows = static_cast<double>(p.jobs[0].rows);
      p.norm.out_scale[t] =
          static_cast<float>(1.0 / sqrt(total / rows + static_cast<double>(p.norm.out_eps)));
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *p.norm.scratch.counter = 0u;
}

// GemvInt8::out8: the block's values quantized in blocks of 32 rows. A CUDA block of 32 rows or
// more quantizes its own; smaller ones count per group of 32 rows, and the one that finishes the
// group quantizes it (its values read from L2, after the fences that make the others' visible).
__device__ void quantize_out_tail(const Params& p, const Job& job, int64_t block_row0,
                                  int rows_per_block) {
  __shared__ bool last;
  const float* src = p.norm.out_weight != nullptr ? p.norm.out_xg : job.y;
  const int64_t rows = job.rows;
  __threadfence();  // this thread's values, before the count says they are there
  __syncthreads();
  int64_t g0 = block_row0 / 32, g1 = min(block_row0 + rows_per_block, rows) / 32;
  if (rows_per_block < 32) {
    if (threadIdx.x == 0) {
      const unsigned blocks_per_group = 32u / static_cast<unsigned>(rows_per_block);
      last = atomicAdd(p.out8_counters + g0, 1u) == blocks_per_group - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (threadIdx.x == 0) p.out8_counters[g0] = 0u;  // for the next call
    g1 = g0 + 1;
  }
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t groups = rows / 32;
  for (int64_t i = warp; i < (g1 - g0) * p.n_tokens; i += kWarps) {
    const int64_t g = g0 + i / p.n_tokens;
    const int64_t t = i % p.n_tokens;
    const int64_t e = t * rows + g * 32 + lane;
    quantize_block_q8(__ldcg(src + e), lane, p.out8_q + e, p.out8_blocks + t * groups + g);
  }
}

// R rows per warp share each x load; every lane loads U units of each row before it computes.
// Q8X: the integer path (x read as p.xq; Q8_0 and Q4_0 only).
template <DType T, bool Q8X, int NT, int R, int U>
__global__ void __launch_bounds__(kThreads) gemv_kernel(Params p) {
  constexpr int kUnroll = U;
  constexpr int E = Unit<T>::kElems;
  __shared__ float partial[kWarps][2][R][NT];

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int ksplit = p.ksplit;
  const int group = warp / ksplit;
  const int slice = warp % ksplit;
  const int groups_per_block = kWarps / ksplit;
  const int num_passes = p.mode == Mode::kSwiGLU ? 2 : 1;
  const int job_index = p.mode == Mode::kSwiGLU ? 0 : static_cast<int>(blockIdx.y);
  const Job& job = p.jobs[job_index];
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * groups_per_block + group) * R;
  allow_dependent_launch();
  if (static_cast<int64_t>(blockIdx.x) * groups_per_block * R >= job.rows) return;  // whole block

  for (int pass = 0; pass < num_passes; ++pass) {
    const Job& jb = p.jobs[job_index + pass];
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;

    const uint8_t* rows[R];
    const uint16_t* srows[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      // Rows past the end re-read the last row (in bounds) and are not stored.
      const int64_t row = min(row0 + r, jb.rows - 1);
      rows[r] = jb.payload + row * p.payload_row_bytes;
      srows[r] = jb.scales + row * p.scale_row_elems;
    }

    const int64_t step = static_cast<int64_t>(32) * ksplit;
    for (int64_t base = static_cast<int64_t>(slice) * 32 + lane; base < p.units_per_row;
         base += step * kUnroll) {
      Loaded loaded[kUnroll][R];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t u = base + k * step;
        if (u < p.units_per_row) {
#pragma unroll
          for (int r = 0; r < R; ++r) load_unit<T, Q8X>(rows[r], srows[r], u, &loaded[k][r]);
        }
      }
      // x is written by the kernel before this one; the weights above were not (see
      // dependent_launch.cuh). Waiting again later returns at once.
      grid_dependency_wait();
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t u = base + k * step;
        if (u >= p.units_per_row) break;
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          if (t >= p.n_tokens) break;
          if constexpr (Q8X) {
            XQ8 xr;
            load_xq<T>(p, t, u, &xr);
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r][t] += dot_q8x<T>(loaded[k][r], xr);
          } else {
            float xr[E];
            load_x<T>(p.x + t * p.cols, u, xr);
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r][t] += dot_unit<T>(loaded[k][r], u, xr);
          }
        }
      }
    }

#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        float v = acc[r][t];
#pragma unroll
        for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
        if (lane == 0) partial[warp][pass][r][t] = v;
      }
  }
  grid_dependency_wait();  // lanes without units; and y is read and written below
  __syncthreads();

  // The first warp of each group: lane (r, t) sums the ksplit slices and writes the epilogue.
  // With norm.out_weight (kAccumulate, one job) it also leaves xg and each (r, t)'s square of the
  // updated y, and the block's sum goes into the folded RMSNorm's scale below.
  const bool norm_out = p.norm.out_weight != nullptr;
  __shared__ double squares[kWarps][R][NT];
  static_assert(R * NT <= 32, "one epilogue lane per (row, token)");
  if (slice == 0) {
    {
      const int idx = lane;
      const int r = idx / NT;
      const int t = idx % NT;
      const int64_t row = row0 + r;
      const bool live = idx < R * NT && t < p.n_tokens && row < job.rows;
      double square = 0.0;
      float v0 = 0.0f, v1 = 0.0f;
      if (live) {
        for (int s = 0; s < ksplit; ++s) {
          v0 += partial[warp + s][0][r][t];
          if (num_passes == 2) v1 += partial[warp + s][1][r][t];
        }
        if (p.norm.in_scale != nullptr) {
          const float scale = p.norm.in_scale[t];
          v0 *= scale;
          v1 *= scale;
        }
      }
      if (p.rope_store) {
        // Adjacent pairs: rows 2i and 2i + 1 of a head are rows r and r ^ 1 of this group (R is
        // even and row0 a multiple of R), i.e. lane idx ^ NT. Rotated as rope_store_kv does.
        const float other = __shfl_xor_sync(0xFFFFFFFFu, v0, NT);
        if (live) {  // job_index: 0 q, 1 k, 2 v
          float value = v0;
          const int d = static_cast<int>(row % p.head_dim);
          if (job_index < 2 && d < 2 * p.rope_half) {
            const float2 cs = p.rope_table[t * p.rope_half + d / 2];
            const bool even = (d & 1) == 0;
            const float x0 = even ? v0 : other, x1 = even ? other : v0;
            value = even ? __fsub_rn(__fmul_rn(x0, cs.x), __fmul_rn(x1, cs.y))
                         : __fadd_rn(__fmul_rn(x0, cs.y), __fmul_rn(x1, cs.x));
          }
          if (job_index == 0) {
            job.y[t * job.rows + row] = value;
          } else {
            store_kv(p, t, row, job_index == 2, value);
          }
        }
        return;
      }
      if (live) {
        float* y = job.y + t * job.rows + row;
        switch (p.mode) {
          case Mode::kStore:
            *y = v0;
            break;
          case Mode::kAccumulate: {
            const float updated = *y + v0;
            *y = updated;
            if (norm_out) {
              p.norm.out_xg[t * job.rows + row] = __fmul_rn(updated, p.norm.out_weight[row]);
              square = __dmul_rn(static_cast<double>(updated), static_cast<double>(updated));
            }
            break;
          }
          case Mode::kSwiGLU:
            *y = v0 / (1.0f + expf(-v0)) * v1;
            break;
        }
      }
      if (norm_out && idx < R * NT) squares[warp][r][t] = square;
    }
  }
  if (norm_out) norm_scale_tail<R, NT>(p, squares, groups_per_block);
  if (p.out8_q != nullptr) {
    quantize_out_tail(p, job, static_cast<int64_t>(blockIdx.x) * groups_per_block * R,
                      groups_per_block * R);
  }
}

// Calls f.template operator()<T>() for the weight type T the GPU reads; false for any other.
template <typename F>
bool for_type(DType type, F&& f) {
  switch (type) {
    case DType::kF32:
      f.template operator()<DType::kF32>();
      return true;
    case DType::kF16:
      f.template operator()<DType::kF16>();
      return true;
    case DType::kBF16:
      f.template operator()<DType::kBF16>();
      return true;
    case DType::kQ8_0:
      f.template operator()<DType::kQ8_0>();
      return true;
    case DType::kQ4_0:
      f.template operator()<DType::kQ4_0>();
      return true;
    case DType::kQ4_K:
      f.template operator()<DType::kQ4_K>();
      return true;
    case DType::kQ6_K:
      f.template operator()<DType::kQ6_K>();
      return true;
    default:
      return false;
  }
}

// Whether a call of `type` takes the integer path: x quantized given, and a type with one.
bool reads_q8x(DType type, const Params& p) {
  return p.xq != nullptr && (type == DType::kQ8_0 || type == DType::kQ4_0);
}

int64_t units_per_row(DType type, int64_t cols, bool q8x) {
  if (q8x && type == DType::kQ4_0) return cols / 32;  // a whole block per unit
  switch (type) {
    case DType::kF32:
      return cols / 4;
    case DType::kF16:
    case DType::kBF16:
      return cols / 8;
    case DType::kQ8_0:
      return cols / 16;
    case DType::kQ4_0:
      return cols / 16;
    case DType::kQ4_K:
      return cols / 256 * 16;
    case DType::kQ6_K:
      return cols / 256 * 16;
    default:
      return 0;
  }
}

// The shape of the work per type, chosen by bench/gpu_gemv_bench --tune on the H200 (see
// bench/NOTES.md): rows per warp R, units in flight per lane U, and the fewest units per lane
// before a row is split over more warps.
struct Config {
  int rows;
  int unroll;
  int min_units_per_lane;
};

template <DType T, bool Q8X = false>
constexpr Config config_of() {
  // Sweep of 2026-12-01 (R in 1,2,4; U in 1,2,4): R4 U1 M2 was best for F16, Q8_0 and Q4_0.
  if constexpr (T == DType::kF32 || T == DType::kF16 || T == DType::kBF16) return {4, 1, 2};
  if constexpr (T == DType::kQ8_0) return {4, 1, 2};
  // Integer path, sweep of 2026-12-03 (H200, 13640cf, separate one-token GEMVs): Q4_0 R4 U1 M1
  // 0.602 of H, R4 U2 M2 0.569; Q8_0 R4 U1 M2 0.744. Decode end to end, Q4_0 with R4 U2 M2
  // gave 409.8 tok/s, with R4 U1 M1 401.2 (another call, same build otherwise): U2 M2 kept.
  if constexpr (T == DType::kQ4_0 && Q8X) return {4, 2, 2};
  if constexpr (T == DType::kQ8_0 && Q8X) return {4, 1, 2};
  if constexpr (T == DType::kQ4_0) return {4, 1, 2};
  return {4, 1, 2};  // Q4_K, Q6_K
}

// Launches with programmatic stream serialization (dependent_launch.cuh): the kernel may start
// before its predecessor in the stream ends and waits for it where it reads x.
template <DType T, bool Q8X, int R, int U>
void launch_shape(const Params& p, dim3 grid, cudaStream_t s) {
  if (p.n_tokens == 1) {
    launch_dependent(gemv_kernel<T, Q8X, 1, R, U>, grid, kThreads, s, p);
  } else if (p.n_tokens == 2) {
    launch_dependent(gemv_kernel<T, Q8X, 2, R, U>, grid, kThreads, s, p);
  } else if (p.n_tokens <= 4) {
    launch_dependent(gemv_kernel<T, Q8X, 4, R, U>, grid, kThreads, s, p);
  } else {
    launch_dependent(gemv_kernel<T, Q8X, 8, R, U>, grid, kThreads, s, p);
  }
}

// Fills in the row split and the grid for `rows` rows per warp.
dim3 plan(DType type, int rows, int min_units_per_lane, Params* p) {
  p->units_per_row = units_per_row(type, p->cols, reads_q8x(type, *p));
  // Split a row over up to 8 warps while every lane still gets min_units_per_lane units.
  p->ksplit = 1;
  while (p->ksplit < kWarps &&
         p->units_per_row >= int64_t{32} * p->ksplit * 2 * min_units_per_lane) {
    p->ksplit *= 2;
  }
  int64_t max_rows = 0;
  const int jobs = p->mode == Mode::kSwiGLU ? 1 : p->num_jobs;
  for (int j = 0; j < p->num_jobs; ++j) max_rows = std::max(max_rows, p->jobs[j].rows);
  const int64_t rows_per_block = static_cast<int64_t>(kWarps / p->ksplit) * rows;
  return dim3(static_cast<unsigned>((max_rows + rows_per_block - 1) / rows_per_block),
              static_cast<unsigned>(jobs));
}

// The folded norm's output needs one partial per block and a single job.
bool norm_fits(const Params& p, const dim3& grid) {
  if (p.norm.out_weight == nullptr) return true;
  return p.mode == Mode::kAccumulate && p.num_jobs == 1 && p.norm.out_xg != nullptr &&
         p.norm.out_scale != nullptr && p.norm.scratch.partials != nullptr &&
         p.norm.scratch.counter != nullptr && grid.x <= p.norm.scratch.max_blocks;
}

template <DType T, bool Q8X>
bool launch_path(Params p, cudaStream_t s) {
  constexpr Config c = config_of<T, Q8X>();
  static_assert(c.rows % 2 == 0, "gemv_qkv_rope_store: a RoPE pair in one row group");
  const dim3 grid = plan(T, c.rows, c.min_units_per_lane, &p);
  if (!norm_fits(p, grid)) return false;
  launch_shape<T, Q8X, c.rows, c.unroll>(p, grid, s);
  return true;
}

template <DType T>
bool launch_type(Params p, cudaStream_t s) {
  if constexpr (T == DType::kQ8_0 || T == DType::kQ4_0) {
    if (reads_q8x(T, p)) return launch_path<T, true>(p, s);
  }
  p.xq = nullptr;  // the float path of every other type
  return launch_path<T, false>(p, s);
}

Status check_tokens(const Params& p) {
  if (p.n_tokens < 1 || p.n_tokens > kGpuGemvMaxTokens) {
    return Status::invalid_argument("GPU GEMV of " + std::to_string(p.n_tokens) + " tokens (1.." +
                                    std::to_string(kGpuGemvMaxTokens) + ")");
  }
  return Status::ok();
}

// Whether one-token Q8_0 / Q4_0 GEMVs take the tensor-core kernel (gemv_mma.h). Off: on the H200
// it has not yet beaten the SIMT kernel (bench/NOTES.md, "Eighth session": 0.38 / 0.24 of HBM
// against 0.64 / 0.37). gpu_gemv_bench measures both in one run; gemv_mma_with_shape reaches it.
constexpr bool kTensorCoreDecode = false;

mma_gemv::Call mma_call(const Params& p) {
  mma_gemv::Call c;
  for (int j = 0; j < p.num_jobs; ++j) {
    c.jobs[j] = {p.jobs[j].payload, p.jobs[j].scales, p.jobs[j].y, p.jobs[j].rows};
  }
  c.num_jobs = p.num_jobs;
  c.x = p.x;
  c.cols = p.cols;
  c.scale_row_elems = p.scale_row_elems;
  c.epilogue = p.mode == Mode::kStore        ? mma_gemv::Epilogue::kStore
               : p.mode == Mode::kAccumulate ? mma_gemv::Epilogue::kAccumulate
                                             : mma_gemv::Epilogue::kSwiGLU;
  return c;
}

Status launch(DType type, Params p, const cuda::Stream& stream) {
  STRATA_RETURN_IF_ERROR(check_tokens(p));
  cudaStream_t s = stream.native();
  const bool folded = p.norm.in_scale != nullptr || p.norm.out_weight != nullptr || p.rope_store ||
                      p.out8_q != nullptr;
  if (kTensorCoreDecode && !folded && p.xq == nullptr && p.n_tokens == 1 && mma_gemv::reads(type)) {
    // One token of Q8_0 / Q4_0: the tensor-core kernel (gemv_mma.cu says why).
    const mma_gemv::Call c = mma_call(p);
    return mma_gemv::launch(type, c, mma_gemv::default_shape(type, c.epilogue), s);
  }
  bool fits = true;
  if (!for_type(type, [&]<DType T>() { fits = launch_type<T>(p, s); })) {
    return Status::invalid_argument(std::string("GPU GEMV of ") + dtype_name_or_id(type));
  }
  if (!fits) {
    return Status::invalid_argument(
        "GPU GEMV: a folded RMSNorm output needs an accumulating single-matrix call, its "
        "buffers, and scratch for every block");
  }
  return cuda::check_last_launch(std::string("gemv<") + dtype_name(type) + ">");
}

// The tuning space for one token: R in {2, 4, 8}, U in {1, 2}.
template <DType T, bool Q8X>
bool launch_tuning(Params p, int rows, int unroll, int min_units, cudaStream_t s) {
  const dim3 grid = plan(T, rows, min_units, &p);
#define STRATA_GEMV_TUNE(R, U)                                            \
  if (rows == R && unroll == U) {                                         \
    launch_dependent(gemv_kernel<T, Q8X, 1, R, U>, grid, kThreads, s, p); \
    return true;                                                          \
  }
  // clang-format off (it cannot tell that each macro use is a statement)
  STRATA_GEMV_TUNE(2, 1)
  STRATA_GEMV_TUNE(2, 2)
  STRATA_GEMV_TUNE(4, 1)
  STRATA_GEMV_TUNE(4, 2)
  STRATA_GEMV_TUNE(8, 1)
  STRATA_GEMV_TUNE(8, 2)
  return false;
  // clang-format on
#undef STRATA_GEMV_TUNE
}

Status fill_layout(const GpuWeight& w, Params* p) {
  STRATA_ASSIGN_OR_RETURN(const GpuWeightLayout layout, gpu_weight_layout(w.type, w.rows, w.cols));
  p->cols = w.cols;
  p->payload_row_bytes = layout.payload_row_bytes;
  p->scale_row_elems = layout.scale_row_elems;
  return Status::ok();
}

Job job_of(const GpuWeight& w, float* y) {
  return Job{static_cast<const uint8_t*>(w.data), w.scales, y, w.rows};
}

// The Params of the jobs ws[i] -> ys[i] over the same x, which all the entry points build;
// `caller` names the entry point in the error for matrices of different types or widths.
StatusOr<Params> params_of(std::span<const GpuWeight> ws, std::span<float* const> ys,
                           const float* x, int64_t n_tokens, Mode mode, const char* caller,
                           const GemvInt8& int8 = {}) {
  const ActivationsQ8* x8 = int8.x8;
  Params p;
  STRATA_RETURN_IF_ERROR(fill_layout(ws[0], &p));
  for (size_t i = 0; i < ws.size(); ++i) {
    if (ws[i].type != ws[0].type || ws[i].cols != ws[0].cols) {
      return Status::invalid_argument(std::string(caller) +
                                      ": matrices of different types or widths");
    }
    p.jobs[i] = job_of(ws[i], ys[i]);
  }
  p.num_jobs = static_cast<int>(ws.size());
  p.x = x;
  p.n_tokens = static_cast<int>(n_tokens);
  p.mode = mode;
  if (x8 != nullptr && (ws[0].type == DType::kQ8_0 || ws[0].type == DType::kQ4_0)) {
    if (x8->q == nullptr || x8->blocks == nullptr || x8->cols != ws[0].cols ||
        x8->n_tokens < n_tokens) {
      return Status::invalid_argument(
          std::string(caller) + ": quantized x of " + std::to_string(x8->n_tokens) + " x " +
          std::to_string(x8->cols) + " for " + std::to_string(n_tokens) + " x " +
          std::to_string(ws[0].cols));
    }
    p.xq = x8->q;
    p.xblocks = x8->blocks;
  }
  if (const ActivationsQ8& o = int8.out8; o.q != nullptr) {
    const int64_t rows = ws[0].rows;
    if ((ws.size() != 1 && mode != Mode::kSwiGLU) || rows % 32 != 0 || o.cols != rows ||
        o.n_tokens < n_tokens || o.blocks == nullptr || int8.out8_counters == nullptr ||
        (x8 != nullptr && o.q == x8->q)) {
      return Status::invalid_argument(std::string(caller) +
                                      ": a quantized output needs one matrix of whole blocks of "
                                      "32 rows, a view of them apart from x8, and counters");
    }
    p.out8_q = o.q;
    p.out8_blocks = o.blocks;
    p.out8_counters = int8.out8_counters;
  }
  return p;
}

// The Params of y = W x for one token (the tuning entry points).
StatusOr<Params> one_token_store(const GpuWeight& w, const float* x, float* y,
                                 const ActivationsQ8* x8 = nullptr) {
  return params_of(std::span(&w, 1), std::span(&y, 1), x, 1, Mode::kStore, "gemv", {x8});
}

}  // namespace

int64_t gemv_out8_counter_bytes(int64_t rows) {
  return std::max<int64_t>(1, rows / 32) * static_cast<int64_t>(sizeof(unsigned));
}

int64_t gemv_norm_scratch_bytes(int64_t rows) {
  // The most blocks: 4 rows a block (R = 4, a row split over all 8 warps); the counter after.
  const int64_t blocks = (rows + 3) / 4;
  return blocks * kGpuGemvMaxTokens * static_cast<int64_t>(sizeof(double)) + 16;
}

GemvNormScratch gemv_norm_scratch_at(void* device_bytes, int64_t rows) {
  GemvNormScratch s;
  s.max_blocks = (rows + 3) / 4;
  s.partials = static_cast<double*>(device_bytes);
  s.counter = reinterpret_cast<unsigned*>(s.partials + s.max_blocks * kGpuGemvMaxTokens);
  return s;
}

Status gemv(const GpuWeight& w, const float* x, int64_t n_tokens, float* y, GemvOutput output,
            const cuda::Stream& stream, const GemvNorm& norm, const GemvInt8& int8) {
  const Mode mode = output == GemvOutput::kStore ? Mode::kStore : Mode::kAccumulate;
  STRATA_ASSIGN_OR_RETURN(
      Params p, params_of(std::span(&w, 1), std::span(&y, 1), x, n_tokens, mode, "gemv", int8));
  p.norm = norm;
  return launch(w.type, p, stream);
}

Status gemv_multi(std::span<const GpuWeight> ws, const float* x, int64_t n_tokens,
                  std::span<float* const> ys, const cuda::Stream& stream, const GemvNorm& norm,
                  const GemvInt8& int8) {
  if (ws.empty() || ws.size() > kMaxJobs || ws.size() != ys.size()) {
    return Status::invalid_argument("gemv_multi takes 1 to 3 matrices, one output each");
  }
  // An output norm needs an accumulating call.
  if (norm.out_weight != nullptr) return Status::invalid_argument("gemv_multi: a norm output");
  STRATA_ASSIGN_OR_RETURN(Params p,
                          params_of(ws, ys, x, n_tokens, Mode::kStore, "gemv_multi", int8));
  p.norm.in_scale = norm.in_scale;
  return launch(ws[0].type, p, stream);
}

Status gemv_qkv_rope_store(const GpuWeight& wq, const GpuWeight& wk, const GpuWeight& wv,
                           const float* x, int64_t n_tokens, float* q, const float* rope_table,
                           int64_t rope_dims, int64_t head_dim, const GpuKvView& kv, int64_t layer,
                           const cuda::Stream& stream, const GemvNorm& norm, const GemvInt8& int8) {
  const char* where = "gemv_qkv_rope_store: ";
  if (kv.dtype != DType::kF32 && kv.dtype != DType::kF16) {
    return Status::invalid_argument(std::string(where) + "an F32 or F16 cache only");
  }
  if (kv.positions == nullptr || kv.block_table == nullptr || layer < 0 || layer >= kv.n_layer) {
    return Status::invalid_argument(std::string(where) + "no positions, block table or layer");
  }
  if (head_dim <= 0 || head_dim % 2 != 0 || rope_dims % 2 != 0 || rope_dims > head_dim ||
      wk.rows != kv.kv_dim || wv.rows != kv.kv_dim || wq.rows % head_dim != 0 ||
      kv.kv_dim % head_dim != 0) {
    return Status::invalid_argument(std::string(where) + "shapes do not match the cache");
  }
  if (norm.out_weight != nullptr || int8.out8.q != nullptr) {
    return Status::invalid_argument(std::string(where) + "a norm or quantized output");
  }
  const GpuWeight ws[3] = {wq, wk, wv};
  float* const ys[3] = {q, nullptr, nullptr};  // k and v go to the cache
  STRATA_ASSIGN_OR_RETURN(
      Params p, params_of(ws, ys, x, n_tokens, Mode::kStore, "gemv_qkv_rope_store", int8));
  p.norm.in_scale = norm.in_scale;
  p.rope_store = true;
  p.rope_table = reinterpret_cast<const float2*>(rope_table);
  p.rope_half = static_cast<int>(rope_dims / 2);
  p.head_dim = static_cast<int>(head_dim);
  p.kv = kv;
  p.layer = layer;
  return launch(wq.type, p, stream);
}

Status gemv_swiglu(const GpuWeight& gate, const GpuWeight& up, const float* x, int64_t n_tokens,
                   float* y, const cuda::Stream& stream, const GemvNorm& norm,
                   const GemvInt8& int8) {
  if (gate.type != up.type || gate.rows != up.rows || gate.cols != up.cols) {
    return Status::invalid_argument("gemv_swiglu: gate and up differ in type or shape");
  }
  if (norm.out_weight != nullptr) return Status::invalid_argument("gemv_swiglu: a norm output");
  const GpuWeight ws[2] = {gate, up};
  float* const ys[2] = {y, y};  // the epilogue writes jobs[0].y
  STRATA_ASSIGN_OR_RETURN(Params p,
                          params_of(ws, ys, x, n_tokens, Mode::kSwiGLU, "gemv_swiglu", int8));
  p.norm.in_scale = norm.in_scale;
  return launch(gate.type, p, stream);
}

Status gemv_with_shape(const GpuWeight& w, const float* x, float* y, const GemvShape& shape,
                       const cuda::Stream& stream, const ActivationsQ8* x8) {
  STRATA_ASSIGN_OR_RETURN(const Params p, one_token_store(w, x, y, x8));
  const bool q8x = reads_q8x(w.type, p);
  bool launched = false;
  const int r = shape.rows_per_warp, u = shape.units_in_flight, m = shape.min_units_per_lane;
  switch (w.type) {
    case DType::kF16:
      launched = launch_tuning<DType::kF16, false>(p, r, u, m, stream.native());
      break;
    case DType::kQ8_0:
      launched = q8x ? launch_tuning<DType::kQ8_0, true>(p, r, u, m, stream.native())
                     : launch_tuning<DType::kQ8_0, false>(p, r, u, m, stream.native());
      break;
    case DType::kQ4_0:
      launched = q8x ? launch_tuning<DType::kQ4_0, true>(p, r, u, m, stream.native())
                     : launch_tuning<DType::kQ4_0, false>(p, r, u, m, stream.native());
      break;
    default:
      break;
  }
  if (!launched) return Status::invalid_argument("gemv_with_shape: no such type or shape");
  return cuda::check_last_launch("gemv_with_shape");
}

Status gemv_mma_with_shape(const GpuWeight& w, const float* x, float* y, int tiles, int stages,
                           const cuda::Stream& stream) {
  STRATA_ASSIGN_OR_RETURN(const Params p, one_token_store(w, x, y));
  return mma_gemv::launch(w.type, mma_call(p), mma_gemv::Shape{tiles, stages}, stream.native());
}

GemvShape gemv_default_shape(DType type, bool int8_activations) {
  Config c = config_of<DType::kF32>();
  for_type(type, [&]<DType T>() { c = config_of<T>(); });
  if (int8_activations && type == DType::kQ8_0) c = config_of<DType::kQ8_0, true>();
  if (int8_activations && type == DType::kQ4_0) c = config_of<DType::kQ4_0, true>();
  return GemvShape{c.rows, c.unroll, c.min_units_per_lane};
}

}  // namespace strata::gpu
