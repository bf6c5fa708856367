// The q8_0 KV cache on the GPU: how a row of 32-element GGUF Q8_0 blocks (f16 scale, then 32 int8;
// 34 bytes, memory/kv_view.h) is written and read by the store and attention kernels. Only .cu
// files include this.
//
// Writing: one warp quantizes one block, lane i holding element i, with the operations of the
// CPU's quantize_q8_0 (offload/core/quantize.cpp) in the same order and IEEE rounding (nvcc
// compiles without fast math: `/` is correctly rounded, roundf rounds ties away from zero), so a
// row stored by the GPU has the bytes the CPU executor stores for the same floats.
//
// Reading: 8 consecutive elements starting at a multiple of 8 lie in one block; they decode as
// d * q in float32, which is exact (an 11-bit scale times an 8-bit integer), as the CPU's
// dequantize_row does. A block is only 2-byte aligned (34 bytes), so the quants come in four
// 2-byte loads.
#pragma once

#include <cstdint>

#include "gpu_backend/half_bits.cuh"

namespace strata::gpu {

constexpr int kQ8Block = 32;       // elements per block
constexpr int kQ8BlockBytes = 34;  // f16 scale + 32 int8

// Byte offset of element `e` (a multiple of 32) of a q8_0 row: the start of its block.
__host__ __device__ __forceinline__ int64_t q8_0_block_offset(int64_t e) {
  return e / kQ8Block * kQ8BlockBytes;
}

// Called by all 32 lanes of a warp: quantizes the warp's 32 values (lane i holds element i) into
// the block at `block`.
__device__ __forceinline__ void warp_store_q8_0(float x, unsigned char* block) {
  const int lane = threadIdx.x & 31;
  float amax = fabsf(x);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  const float d = amax / 127.0f;
  const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
  const float r = roundf(__fmul_rn(x, inv_d));
  // Clamped as the CPU's truncate_clamped (NaN -> -128) so the conversion is always defined.
  const int q = !(r >= -128.0f) ? -128 : (r > 127.0f ? 127 : static_cast<int>(r));
  if (lane == 0) *reinterpret_cast<uint16_t*>(block) = f32_to_f16_bits(d);
  block[2 + lane] = static_cast<unsigned char>(static_cast<int8_t>(q));
}

// Elements e .. e + 7 of a q8_0 row starting at `row` (e a multiple of 8), as float32.
__device__ __forceinline__ void load_q8_0_chunk(const unsigned char* __restrict__ row, int64_t e,
                                                float (&v)[8]) {
  const unsigned char* block = row + q8_0_block_offset(e);
  const float d = f16_bits_to_f32(__ldg(reinterpret_cast<const unsigned short*>(block)));
  const auto* qs = reinterpret_cast<const unsigned short*>(block + 2 + (e & (kQ8Block - 1)));
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const unsigned short pair = __ldg(qs + i);
    v[2 * i] = d * static_cast<float>(static_cast<int8_t>(pair & 0xff));
    v[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(pair >> 8));
  }
}

}  // namespace strata::gpu
