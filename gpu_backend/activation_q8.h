// Activations quantized to 8 bits, for the integer decode GEMV of Q8_0 and Q4_0 weights
// (gemv.h): every block of 32 values of a token's row becomes int8 q_i = round(x_i / d) with
// d = max |x_i| / 127, kept with d and the sum of its q_i. This is llama.cpp's Q8_1 for
// activations, and the arithmetic of its quantized GEMVs; the rounding of x makes the result meet
// the golden `like_llama_cpp` tier, not `exact`. What it buys: a weight block times an activation
// block is one integer dot product of 32 byte pairs (dp4a, 4 pairs an instruction) and one float
// multiply, instead of a float conversion and an FMA per weight:
//   Q8_0:  sum_i (d_w w_i)(d q_i)       = d_w d  sum_i w_i q_i
//   Q4_0:  sum_i (d_w (n_i - 8))(d q_i) = d_w d (sum_i n_i q_i - 8 sum_i q_i)
// (integer sums: exact), which lets the GEMV of those types run at the memory's pace.
//
// Example usage (the decode FFN, int8 activations):
//   const ActivationsQ8 xq = activations_q8_at(buffer, n, hidden_cols);
//   STRATA_RETURN_IF_ERROR(gpu::quantize_activations_q8(hidden, n, xq, stream));
//   STRATA_RETURN_IF_ERROR(gpu::gemv(down, hidden, n, x, GemvOutput::kAccumulate, stream, {},
//   &xq));
#pragma once

#include <cstdint>

#include "gpu_backend/cuda_api.h"
#include "offload/core/status.h"

namespace strata::gpu {

inline constexpr int64_t kActivationBlock = 32;

struct ActivationBlockQ8 {
  float d = 0.0f;   // max |x| / 127 of the block (0 for a block of zeros)
  int32_t sum = 0;  // sum of the block's q
};

// A view of device memory holding n_tokens rows of `cols` quantized values.
struct ActivationsQ8 {
  int8_t* q = nullptr;                  // [n_tokens][cols]
  ActivationBlockQ8* blocks = nullptr;  // [n_tokens][cols / 32]
  int64_t n_tokens = 0;
  int64_t cols = 0;
};

// Device bytes of ActivationsQ8 for n_tokens rows of `cols` values, and the view of them.
// REQUIRES: cols % 32 == 0; device_bytes 16-byte aligned.
int64_t activations_q8_bytes(int64_t n_tokens, int64_t cols);
ActivationsQ8 activations_q8_at(void* device_bytes, int64_t n_tokens, int64_t cols);

// out = x [n_tokens][out.cols] quantized (x a device array). One kernel, launched with
// programmatic dependent launch: it writes `out` only after the kernel before it in the stream
// has finished, so a GEMV that still reads the previous contents of `out` may precede it.
// invalid_argument when n_tokens exceeds out.n_tokens or cols is not whole blocks.
Status quantize_activations_q8(const float* x, int64_t n_tokens, const ActivationsQ8& out,
                               const cuda::Stream& stream);

}  // namespace strata::gpu
