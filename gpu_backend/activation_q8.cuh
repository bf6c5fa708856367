// The device side of activation_q8.h: one warp quantizes one block of 32 values, a value per
// lane, as llama.cpp's quantize_q8_1 rounds (d = amax / 127, q = roundf(x * (1 / d))). Shared by
// the quantize kernel and the GEMV epilogue that quantizes its own output (gemv.cu).
#pragma once

#include <cstdint>

#include "gpu_backend/activation_q8.h"

namespace strata::gpu {

// Lane `lane` holds value v of the block; writes its q to *q and (lane 0) the block to *block.
__device__ __forceinline__ void quantize_block_q8(float v, int lane, int8_t* q,
                                                  ActivationBlockQ8* block) {
  float amax = fabsf(v);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const int qi = static_cast<int>(roundf(v * id));
  *q = static_cast<int8_t>(qi);
  int sum = qi;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, off);
  if (lane == 0) *block = ActivationBlockQ8{d, sum};
}

}  // namespace strata::gpu
