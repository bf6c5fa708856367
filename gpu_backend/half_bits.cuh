// Device twins of offload/core/dtype.h's f16 and bf16 conversions, bit-exact with them for every
// input, NaNs included, so that weights and KV rows decode and round the same on GPU and CPU.
// Only .cu files include this (it needs nvcc for __device__ and cuda_fp16.h).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace strata::gpu {

// IEEE half bits -> float, exact. Written out rather than __half2float so that NaN payloads are
// kept exactly as offload/core/dtype.cpp keeps them (the widening is exact for every other input).
__device__ __forceinline__ float f16_bits_to_f32(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float (0x33800000 is 2^-24).
    return __uint_as_float(__float_as_uint(__uint2float_rn(mant) * __uint_as_float(0x33800000u)) |
                           sign);
  }
  if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
  return __uint_as_float(sign | ((exp + 112) << 23) | (mant << 13));
}

__device__ __forceinline__ float bf16_bits_to_f32(uint32_t b) { return __uint_as_float(b << 16); }

// float -> IEEE half bits, round to nearest even. The hardware conversion rounds every non-NaN
// exactly as f32_to_f16 does (overflow to inf, subnormals included); NaN takes the CPU's quiet
// NaN with the top payload bits instead of the hardware's canonical one.
__device__ __forceinline__ uint16_t f32_to_f16_bits(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) {
    return static_cast<uint16_t>(((x >> 16) & 0x8000u) | 0x7e00u | ((abs >> 13) & 0x3ffu));
  }
  return __half_as_ushort(__float2half_rn(f));
}

// float -> bfloat16 bits, round to nearest even: the integer formula of f32_to_bf16, which is
// what __float2bfloat16_rn computes for non-NaN inputs, with the CPU's quiet NaN.
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64u);
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

}  // namespace strata::gpu
