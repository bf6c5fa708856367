// The tensor-core decode GEMV for Q8_0 and Q4_0 at one token (gemv_mma.h).
//
// Why: the SIMT kernel (gemv.cu) spends ~3.4 instructions per quantized weight (a byte permute,
// a subtraction and an FMA on float32 activations) and needs ~100 registers, so it runs at a
// quarter occupancy with too few bytes in flight: Q4_0 reached 0.40 of HBM, Q8_0 0.70. Here each
// weight costs ~1 instruction (one LOP3 or PRMT makes two f16 integers, one HSUB2 removes the
// offset) and the multiply-adds go to the tensor cores, while cp.async keeps several kilobytes per
// warp in flight without holding them in registers.
//
// Exactness (the golden `exact` tier): x is scaled by a power of two s per 4096-column segment so
// that its largest |x| lies in [2^14, 2^15), then split into three f16 parts, x s = x1 + x2 + x3
// exactly (11 + 11 + 11 bits cover float32's 24) except for the third part of elements far below
// the segment's largest (see split_x). The weights' integers (Q4_0 n - 8, Q8_0 q) are exact in
// f16, so every product the tensor core forms is exact and it sums them in f32. Each block's sum
// times d goes into a float32 accumulator (as the SIMT kernel adds d * sum), times 1 / s at the
// segment's end.
//
// Work: rows go in groups of kRows (`tiles` m16 tiles; for SwiGLU half are gate rows, half the
// same up rows), each over all columns; a CTA of 8 warps takes every (2 x SMs)-th group
// (persistent CTAs: x is split once per CTA, and the copy pipeline runs on across groups). Columns
// go in chunks of 64 (two blocks); chunk c belongs to warp c % 8. Per chunk and tile a warp copies
// 16 rows x 32 payload bytes (Q8_0: twice) and the 16 x 2 f16 scales into its own ring of `stages`
// shared-memory stages (cp.async, zero-filled past the last row or block), then ldmatrix gives lane
// 4g + t bytes 4t .. 4t + 3 of rows g and g + 8 of each 16-byte half. Those bytes hold (Q4_0)
// elements 4t .. 4t + 3 in their low nibbles and 16 + 4t .. 16 + 4t + 3 in their high ones, or
// (Q8_0) elements 4t .. 4t + 3 of a half-block. The mma's k order is a permutation of the block's
// elements (the same for A and B), chosen so that the A fragment falls out of one mask per register
// pair:
//   Q4_0 k-step 0: k slots (2t, 2t+1, 2t+8, 2t+9) = elements (4t, 4t+2, 4t+1, 4t+3); k-step 1 the
//        same plus 16. (w & 0x000F000F) | 0x64006400 is the f16 pair 1024 + (nibble of byte 0,
//        nibble of byte 2); shifts by 4, 8, 12 give the others.
//   Q8_0 k-step 0: slots = elements (4t, 4t+1, 4t+2, 4t+3); k-step 1 the second half-block.
// x's parts sit in shared memory in B-fragment order (a segment of 4096 columns at a time, split
// once per CTA): per block, per t, per part n: the 8 halves lane (g = n, t) loads as its two
// k-steps' B registers. B's columns 0..2 are the three parts; 3..7 are zero.
//
// The epilogue reduces each row over the 4 lanes of its group (shuffles), then over the 8 warps
// in a fixed order through shared memory: the result is deterministic (no atomics), so a decode
// step replayed as a CUDA graph is bit-identical to direct launches.
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "gpu_backend/dependent_launch.cuh"
#include "gpu_backend/gemv_mma.h"
#include "gpu_backend/mma_sm80.cuh"

namespace strata::gpu::mma_gemv {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kSegChunks = 64;  // 64-column chunks of x split into shared memory at once
constexpr int kSegBlocks = 2 * kSegChunks;
constexpr int kBlockPartBytes = 4 * 3 * 16;  // one block of x parts: [t][part][8 halves]
constexpr int kTileScaleBytes = 16 * 4;      // one tile's scales: [16 rows][2 blocks] f16
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kSegChunks % kWarps == 0, "every warp meets each segment barrier");

struct Params {
  Job jobs[3];
  const float* x;
  int64_t cols;
  int64_t payload_row_bytes;
  int64_t scale_row_elems;
  int nb;       // blocks per row
  int nchunks;  // ceil(nb / 2)
  Epilogue epilogue;
};

// 512-byte units (16 rows x 32 bytes) per tile and chunk: Q4_0's 32 bytes are two blocks' nibbles,
// Q8_0 needs one unit per block.
template <DType T>
constexpr int kUnits = T == DType::kQ8_0 ? 2 : 1;

template <DType T>
constexpr int kTileBytes = kUnits<T> * 512 + kTileScaleBytes;

template <DType T, int kTiles, int kStages>
constexpr int smem_bytes() {
  return kWarps * kStages * kTiles * kTileBytes<T> + kSegBlocks * kBlockPartBytes + kWarps * 4 +
         kWarps * kTiles * 16 * 4;
}

__device__ __forceinline__ float h2f(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xFFFFu)));
}

__device__ __forceinline__ uint32_t hsub2_bits(uint32_t a, uint32_t b) {
  const __half2 r =
      __hsub2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// Q4_0: the low nibbles of bytes 0 and 2 of w as the f16 pair (n - 8) exactly: 1024 + n - 1032.
__device__ __forceinline__ uint32_t q4_lo(uint32_t w) {
  return hsub2_bits((w & 0x000F000Fu) | 0x64006400u, 0x64086408u);
}
// Their high nibbles, without a shift: 1024 + 16 n, times 1/16, minus 72 (one HFMA2).
__device__ __forceinline__ uint32_t q4_hi(uint32_t w) {
  const uint32_t v = (w & 0x00F000F0u) | 0x64006400u;
  const __half2 r = __hfma2(*reinterpret_cast<const __half2*>(&v),
                            __halves2half2(__ushort_as_half(0x2C00), __ushort_as_half(0x2C00)),
                            __halves2half2(__ushort_as_half(0xD480), __ushort_as_half(0xD480)));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// Q8_0: int8 bytes lo_sel (0x4140: bytes 0, 1; 0x4342: bytes 2, 3) of w as the f16 pair q.
__device__ __forceinline__ uint32_t q8_pair(uint32_t w, uint32_t sel) {
  // (b ^ 0x80) = q + 128 in the low mantissa byte of 1024: 1024 + q + 128 - 1152 = q exactly.
  return hsub2_bits(__byte_perm(w ^ 0x80808080u, 0x64646464u, sel), 0x64806480u);
}

// Splits x's segment `seg` (columns 4096 seg ..) into parts (block lb at parts + lb * 192) and
// returns 1 / s, the segment's scale. Columns past cols are zero. Each thread takes 4 groups of 4
// columns and loads them all before it computes: the split costs one L2 round trip, which the
// weight copies already in flight cover. One scale per segment (not per block) lets the block
// sums go into one accumulator unscaled; elements more than 2^-17 below the segment's largest
// lose low bits of their third part only (absolute error < 2^-39 of the largest), far below
// float32's rounding of the sum. `red` is kWarps floats of scratch.
template <DType T>
__device__ float split_x(const float* x, int64_t cols, int seg, uint8_t* parts, float* red) {
  constexpr int kPerThread = kSegBlocks * 8 / kThreads;
  static_assert(kSegBlocks * 8 % kThreads == 0, "whole passes");
  float4 v[kPerThread];
  float m = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int q = static_cast<int>(threadIdx.x) + k * kThreads;
    const int64_t e0 = (static_cast<int64_t>(seg) * kSegBlocks + (q >> 3)) * 32 + (q & 7) * 4;
    v[k] = e0 < cols ? __ldg(reinterpret_cast<const float4*>(x + e0))
                     : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    m = fmaxf(m, fmaxf(fmaxf(fabsf(v[k].x), fabsf(v[k].y)), fmaxf(fabsf(v[k].z), fabsf(v[k].w))));
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(kFullMask, m, off));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
  __syncthreads();
  m = red[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, red[w]);
  // m in [2^(eb-127), 2^(eb-126)): s = 2^(141 - eb) puts it in [2^14, 2^15). The clamp keeps s
  // and 1 / s normal floats (zero and tiny segments; inf and NaN propagate through the parts).
  const int eb = min(max((__float_as_int(m) >> 23) & 0xFF, 15), 254);
  const float s = __int_as_float((268 - eb) << 23);
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int q = static_cast<int>(threadIdx.x) + k * kThreads;
    const int lb = q >> 3, quad = q & 7;
    // The pairs in the order the fragments want them (see the top): Q4_0 (0, 2), (1, 3).
    float2 lo = T == DType::kQ4_0 ? make_float2(v[k].x * s, v[k].z * s)
                                  : make_float2(v[k].x * s, v[k].y * s);
    float2 hi = T == DType::kQ4_0 ? make_float2(v[k].y * s, v[k].w * s)
                                  : make_float2(v[k].z * s, v[k].w * s);
    uint8_t* dst = parts + lb * kBlockPartBytes + (quad & 3) * 48 + (quad >> 2) * 8;
#pragma unroll
    for (int n = 0; n < 3; ++n) {
      const __half2 plo = __float22half2_rn(lo), phi = __float22half2_rn(hi);
      const float2 flo = __half22float2(plo), fhi = __half22float2(phi);
      lo.x -= flo.x, lo.y -= flo.y, hi.x -= fhi.x, hi.y -= fhi.y;  // exact: f16 rounding errors
      uint2 packed;
      packed.x = *reinterpret_cast<const uint32_t*>(&plo);
      packed.y = *reinterpret_cast<const uint32_t*>(&phi);
      *reinterpret_cast<uint2*>(dst + n * 16) = packed;
    }
  }
  return __int_as_float((eb - 14) << 23);
}

// Where lane (r, h) copies from for each tile of one row group: row r of the tile, 16-byte half
// h. Set once per group, so that a chunk's copies are a few adds (the group changes rarely).
template <DType T, int kTiles, bool kPair>
struct CopySource {
  const uint8_t* payload[kTiles];  // the lane's row (row 0 when past the job's rows)
  const uint16_t* scales[kTiles];  // lanes 0..15: row `lane`'s scales
  bool payload_ok[kTiles];
  bool scales_ok[kTiles];

  __device__ void set(const Params& p, int job0, int64_t row0, int lane) {
    const int r = lane >> 1;
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
      const Job& jb = p.jobs[kPair ? (tile < kTiles / 2 ? 0 : 1) : job0];
      const int64_t base = row0 + 16 * (kPair ? tile % (kTiles / 2) : tile);
      payload_ok[tile] = base + r < jb.rows;
      payload[tile] = jb.payload + (payload_ok[tile] ? base + r : 0) * p.payload_row_bytes;
      scales_ok[tile] = lane < 16 && base + lane < jb.rows;
      scales[tile] = jb.scales + (scales_ok[tile] ? base + lane : 0) * p.scale_row_elems;
    }
  }
};

// Queues one chunk's copies (every tile's payload and scales) into a stage. Halves are swapped on
// rows 4..7 mod 8 so that an ldmatrix phase's 8 rows hit 8 different 16-byte bank groups. Past
// the last row or block the stage is zero-filled (the odd block's padding scale is zero).
template <DType T, int kTiles, bool kPair>
__device__ __forceinline__ void copy_chunk(const CopySource<T, kTiles, kPair>& src, int nb,
                                           int chunk, uint8_t* stage, int lane) {
  const int r = lane >> 1, h = lane & 1;
  const int dst_off = r * 32 + ((h ^ ((r >> 2) & 1)) << 4);
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    uint8_t* dst = stage + tile * kTileBytes<T>;
#pragma unroll
    for (int u = 0; u < kUnits<T>; ++u) {
      const int blk = 2 * chunk + (T == DType::kQ4_0 ? h : u);
      const bool ok = src.payload_ok[tile] && blk < nb;
      const int off = T == DType::kQ4_0 ? blk * 16 : blk * 32 + h * 16;
      cp_async_16_zfill(dst + u * 512 + dst_off, src.payload[tile] + (ok ? off : 0), ok ? 16 : 0);
    }
    if (lane < 16) {
      cp_async_4_zfill(dst + kUnits<T> * 512 + lane * 4, src.scales[tile] + 2 * chunk,
                       src.scales_ok[tile] ? 4 : 0);
    }
  }
}

// acc[tile] += this chunk's products; lb0 = the chunk's first block within the x segment.
template <DType T, int kTiles>
__device__ __forceinline__ void compute_chunk(const uint8_t* stage, const uint8_t* parts, int lb0,
                                              int lane, float (&acc)[kTiles][4]) {
  const int g = lane >> 2, t = lane & 3;
  const int mi = lane >> 3, lrow = (lane & 7) + 8 * (mi & 1), lhalf = mi >> 1;
  const int lm_off = lrow * 32 + ((lhalf ^ ((lrow >> 2) & 1)) << 4);
  uint32_t a[kTiles][kUnits<T>][4];
  uint32_t sc[kTiles][2];
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    const uint8_t* ts = stage + tile * kTileBytes<T>;
#pragma unroll
    for (int u = 0; u < kUnits<T>; ++u) ldmatrix_x4(a[tile][u], ts + u * 512 + lm_off);
    sc[tile][0] = *reinterpret_cast<const uint32_t*>(ts + kUnits<T> * 512 + g * 4);
    sc[tile][1] = *reinterpret_cast<const uint32_t*>(ts + kUnits<T> * 512 + (g + 8) * 4);
  }
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    uint4 b = make_uint4(0u, 0u, 0u, 0u);
    if (g < 3)
      b = *reinterpret_cast<const uint4*>(parts + (lb0 + j) * kBlockPartBytes + t * 48 + g * 16);
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
      uint32_t a0[4], a1[4];
      if constexpr (T == DType::kQ4_0) {
        // Bytes 0 / 2 give elements (4t, 4t + 2) and, high nibbles, (16 + 4t, 18 + 4t); bytes 1 / 3
        // (one shift) the odd ones.
        const uint32_t wg = a[tile][0][2 * j], wg8 = a[tile][0][2 * j + 1];
        const uint32_t wg_s = wg >> 8, wg8_s = wg8 >> 8;
        a0[0] = q4_lo(wg), a0[1] = q4_lo(wg8), a0[2] = q4_lo(wg_s), a0[3] = q4_lo(wg8_s);
        a1[0] = q4_hi(wg), a1[1] = q4_hi(wg8), a1[2] = q4_hi(wg_s), a1[3] = q4_hi(wg8_s);
      } else {
        const uint32_t(&m)[4] = a[tile][j];
        a0[0] = q8_pair(m[0], 0x4140u), a0[1] = q8_pair(m[1], 0x4140u);
        a0[2] = q8_pair(m[0], 0x4342u), a0[3] = q8_pair(m[1], 0x4342u);
        a1[0] = q8_pair(m[2], 0x4140u), a1[1] = q8_pair(m[3], 0x4140u);
        a1[2] = q8_pair(m[2], 0x4342u), a1[3] = q8_pair(m[3], 0x4342u);
      }
      float cb[4];
      mma_16816_from_zero(cb, a0, b.x, b.y);
      mma_16816(cb, a1, b.z, b.w);
      const float dg = h2f(sc[tile][0] >> (16 * j));
      const float dg8 = h2f(sc[tile][1] >> (16 * j));
      acc[tile][0] = fmaf(dg, cb[0], acc[tile][0]);
      acc[tile][1] = fmaf(dg, cb[1], acc[tile][1]);
      acc[tile][2] = fmaf(dg8, cb[2], acc[tile][2]);
      acc[tile][3] = fmaf(dg8, cb[3], acc[tile][3]);
    }
  }
}

// The CTA's row groups are blockIdx.x, + gridDim.x, ...; its warps walk (group, chunk) rounds in
// one pipeline, so copies for the next group are in flight while this one's epilogue runs, and x
// is split once per CTA when it fits one segment.
template <DType T, int kTiles, int kStages, bool kPair>
__global__ void __launch_bounds__(kThreads) gemv_mma_kernel(const Params p) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int kStageBytes = kTiles * kTileBytes<T>;
  constexpr int kRows = 16 * (kPair ? kTiles / 2 : kTiles);
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  uint8_t* ring = smem + warp * kStages * kStageBytes;
  uint8_t* parts = smem + kWarps * kStages * kStageBytes;
  float* red = reinterpret_cast<float*>(parts + kSegBlocks * kBlockPartBytes);  // [kWarps]
  float* partial = red + kWarps;  // [kWarps][kTiles * 16]
  const int job0 = kPair ? 0 : static_cast<int>(blockIdx.y);
  const Job& job = p.jobs[job0];
  const int64_t groups = (job.rows + kRows - 1) / kRows;
  allow_dependent_launch();
  if (static_cast<int64_t>(blockIdx.x) >= groups) return;  // a shorter job of gemv_multi

  const int rounds = (p.nchunks + kWarps - 1) / kWarps;
  const int64_t my_groups = (groups - blockIdx.x + gridDim.x - 1) / gridDim.x;
  const int64_t total = my_groups * rounds;
  const int64_t group_step = static_cast<int64_t>(gridDim.x) * kRows;
  // The copy side of the pipeline runs kStages - 1 rounds ahead of the compute side; each keeps
  // its round's chunk, group and stage as counters (no divisions in the loop).
  int64_t issued = 0, issue_row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  int issue_i = 0, issue_stage = 0;
  CopySource<T, kTiles, kPair> src;
  src.set(p, job0, issue_row0, lane);
  auto issue = [&]() {
    const int chunk = issue_i * kWarps + warp;
    if (issued < total && chunk < p.nchunks) {
      copy_chunk<T, kTiles, kPair>(src, p.nb, chunk, ring + issue_stage * kStageBytes, lane);
    }
    cp_async_commit();  // empty groups keep the wait count uniform
    ++issued;
    issue_stage = issue_stage + 1 == kStages ? 0 : issue_stage + 1;
    if (++issue_i == rounds) {
      issue_i = 0;
      issue_row0 += group_step;
      if (issued < total) src.set(p, job0, issue_row0, lane);
    }
  };
  // Weights first: nothing before us writes them, so they may load while the kernel that writes
  // x finishes (dependent_launch.cuh).
  for (int i = 0; i < kStages - 1; ++i) issue();
  grid_dependency_wait();

  const int g = lane >> 2, t = lane & 3;
  float acc[kTiles][4], sum[kTiles][4];  // acc: this segment's, in units of its scale
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[tile][c] = sum[tile][c] = 0.0f;
  auto fold = [&](float inv) {
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        sum[tile][c] = fmaf(acc[tile][c], inv, sum[tile][c]), acc[tile][c] = 0.0f;
  };
  int seg = -1, i = 0, stage = 0;
  float inv = 1.0f;
  int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  for (int64_t round = 0; round < total; ++round) {
    const int s = i * kWarps / kSegChunks;
    if (s != seg) {  // once per CTA when x is one segment; per segment and group otherwise
      if (seg >= 0) {
        fold(inv);
        __syncthreads();  // every warp is done with the previous segment
      }
      inv = split_x<T>(p.x, p.cols, s, parts, red);
      __syncthreads();
      seg = s;
    }
    cp_async_wait<kStages - 2>();  // this lane's copies of this round
    __syncwarp();                  // everyone's, and the previous round's stage is free
    issue();
    const int chunk = i * kWarps + warp;
    if (chunk < p.nchunks) {
      compute_chunk<T, kTiles>(ring + stage * kStageBytes, parts, 2 * (chunk - s * kSegChunks),
                               lane, acc);
    }
    stage = stage + 1 == kStages ? 0 : stage + 1;
    if (++i != rounds) continue;
    i = 0;
    fold(inv);

    // The group's epilogue: rows over the 4 lanes of a group (columns 0, 1 at t = 0 and 2 at
    // t = 1 are the parts; the rest are zero), then over the warps in a fixed order.
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
      float vg = sum[tile][0] + sum[tile][1], vg8 = sum[tile][2] + sum[tile][3];
      vg += __shfl_xor_sync(kFullMask, vg, 1);
      vg8 += __shfl_xor_sync(kFullMask, vg8, 1);
      vg += __shfl_xor_sync(kFullMask, vg, 2);
      vg8 += __shfl_xor_sync(kFullMask, vg8, 2);
      if (t == 0) {
        partial[(warp * kTiles + tile) * 16 + g] = vg;
        partial[(warp * kTiles + tile) * 16 + g + 8] = vg8;
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) sum[tile][c] = 0.0f;
    }
    __syncthreads();
    for (int idx = static_cast<int>(threadIdx.x); idx < kRows; idx += kThreads) {
      const int tile = idx / 16, r = idx % 16;
      float v0 = 0.0f, v1 = 0.0f;
      for (int w = 0; w < kWarps; ++w) {
        v0 += partial[(w * kTiles + tile) * 16 + r];
        if constexpr (kPair) v1 += partial[(w * kTiles + tile + kTiles / 2) * 16 + r];
      }
      const int64_t row = row0 + idx;
      if (row >= job.rows) continue;
      float* y = job.y + row;
      switch (p.epilogue) {
        case Epilogue::kStore:
          *y = v0;
          break;
        case Epilogue::kAccumulate:
          *y += v0;
          break;
        case Epilogue::kSwiGLU:
          *y = v0 / (1.0f + expf(-v0)) * v1;
          break;
      }
    }
    __syncthreads();  // partial is free for the next group
    row0 += group_step;
  }
  cp_async_wait<0>();
}

template <DType T, int kTiles, int kStages, bool kPair>
Status launch_kernel(const Params& p, int num_jobs, cudaStream_t stream) {
  constexpr int kRows = 16 * (kPair ? kTiles / 2 : kTiles);
  constexpr int kBytes = smem_bytes<T, kTiles, kStages>();
  auto* kernel = gemv_mma_kernel<T, kTiles, kStages, kPair>;
  const std::string name = std::string("gemv_mma<") + dtype_name(T) + ", tiles " +
                           std::to_string(kTiles) + ", stages " + std::to_string(kStages) + ">";
  const cudaError_t set =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
  if (set != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::invalid_argument(name + ": " + std::to_string(kBytes) +
                                    " bytes of shared memory: " + cudaGetErrorString(set));
  }
  int64_t max_rows = 0;
  for (int j = 0; j < num_jobs; ++j) max_rows = std::max(max_rows, p.jobs[j].rows);
  cudaLaunchConfig_t config{};
  // Persistent CTAs: two per SM (what the shared memory of the default shapes allows on sm_80 and
  // sm_90; sm_86 / sm_89 run them in two waves), each over several row groups.
  int device = 0, sms = 0;
  cudaError_t attr = cudaGetDevice(&device);
  if (attr == cudaSuccess) {
    attr = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (attr != cudaSuccess || sms <= 0) {
    (void)cudaGetLastError();
    return Status::device_error(
        name + ": cudaDeviceGetAttribute(multiprocessors): " + cudaGetErrorString(attr));
  }
  const int64_t groups = (max_rows + kRows - 1) / kRows;
  config.gridDim = dim3(static_cast<unsigned>(std::min<int64_t>(groups, 2 * sms)),
                        static_cast<unsigned>(kPair ? 1 : num_jobs));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = kBytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  (void)cudaLaunchKernelEx(&config, kernel, p);
  return cuda::check_last_launch(name);
}

// The shapes built: tiles x stages. Each is a kernel per (type, SwiGLU or not).
template <DType T, bool kPair>
Status launch_shape(const Params& p, int num_jobs, const Shape& shape, cudaStream_t stream) {
#define STRATA_GEMV_MMA_SHAPE(TILES, STAGES)                            \
  if (shape.tiles == TILES && shape.stages == STAGES) {                 \
    return launch_kernel<T, TILES, STAGES, kPair>(p, num_jobs, stream); \
  }
  // clang-format off
  if constexpr (!kPair) {  // SwiGLU tiles come in gate / up pairs
    STRATA_GEMV_MMA_SHAPE(1, 4)
    STRATA_GEMV_MMA_SHAPE(1, 8)
  }
  STRATA_GEMV_MMA_SHAPE(2, 3)
  STRATA_GEMV_MMA_SHAPE(2, 4)
  STRATA_GEMV_MMA_SHAPE(2, 6)
  STRATA_GEMV_MMA_SHAPE(2, 8)
  STRATA_GEMV_MMA_SHAPE(4, 3)
  STRATA_GEMV_MMA_SHAPE(4, 4)
  // clang-format on
#undef STRATA_GEMV_MMA_SHAPE
  return Status::invalid_argument("gemv_mma: no kernel built for tiles " +
                                  std::to_string(shape.tiles) + ", stages " +
                                  std::to_string(shape.stages));
}

}  // namespace

bool reads(DType type) { return type == DType::kQ8_0 || type == DType::kQ4_0; }

Shape default_shape(DType type, Epilogue epilogue) {
  (void)epilogue;
  // Shared memory per CTA stays under the 99 KiB that sm_86 / sm_89 allow one CTA.
  return type == DType::kQ8_0 ? Shape{2, 4} : Shape{2, 8};
}

Status launch(DType type, const Call& call, const Shape& shape, cudaStream_t stream) {
  if (!reads(type)) {
    return Status::invalid_argument(std::string("gemv_mma of ") + dtype_name_or_id(type));
  }
  const int block = 32;
  if (call.cols <= 0 || call.cols % block != 0 || call.num_jobs < 1 || call.num_jobs > 3 ||
      (call.epilogue == Epilogue::kSwiGLU && call.num_jobs != 2)) {
    return Status::invalid_argument("gemv_mma: bad call");
  }
  Params p{};
  for (int j = 0; j < call.num_jobs; ++j) p.jobs[j] = call.jobs[j];
  p.x = call.x;
  p.cols = call.cols;
  p.nb = static_cast<int>(call.cols / block);
  p.nchunks = (p.nb + 1) / 2;
  p.payload_row_bytes = p.nb * (type == DType::kQ8_0 ? 32 : 16);
  p.scale_row_elems = call.scale_row_elems;
  p.epilogue = call.epilogue;
  const bool pair = call.epilogue == Epilogue::kSwiGLU;
  if (type == DType::kQ8_0) {
    return pair ? launch_shape<DType::kQ8_0, true>(p, call.num_jobs, shape, stream)
                : launch_shape<DType::kQ8_0, false>(p, call.num_jobs, shape, stream);
  }
  return pair ? launch_shape<DType::kQ4_0, true>(p, call.num_jobs, shape, stream)
              : launch_shape<DType::kQ4_0, false>(p, call.num_jobs, shape, stream);
}

}  // namespace strata::gpu::mma_gemv
