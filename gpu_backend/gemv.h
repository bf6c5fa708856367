// Decode GEMV on the GPU: y[t] = W x[t] for a few tokens (batch-1 decode, a few sequences), over
// the weights as they sit in VRAM in their stored type (GpuWeight). Each weight is dequantized in
// registers and used once per token; activations and accumulation are float32, so the result is
// float32 arithmetic over the exactly dequantized weights (the golden `exact` tier) in another
// summation order. (A tensor-core kernel for Q8_0 and Q4_0 at one token, gemv_mma.h, exists
// beside this one; gemv.cu's kTensorCoreDecode says whether it is used.)
//
// This is the bandwidth-bound kernel of the GPU decode step: one pass over each weight byte per
// call, 16-byte loads, several loads in flight per lane, split over the row when a row is long so
// that every SM has enough warps to cover HBM latency. Fused forms save launches and activation
// round trips: several matrices over the same x in one launch (Q, K, V), the SwiGLU gate and up
// products combined in the epilogue, and an accumulating store for the residual adds.
//
// Example usage (one layer's FFN at decode):
//   STRATA_RETURN_IF_ERROR(gpu::gemv_swiglu(gate, up, xb, 1, hidden, stream));   // hidden [F]
//   STRATA_RETURN_IF_ERROR(gpu::gemv(down, hidden, 1, x, GemvOutput::kAccumulate, stream));  // x
//   += W h
#pragma once

#include <cstdint>
#include <span>

#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_weight.h"
#include "offload/core/status.h"

namespace strata::gpu {

// Tokens one GEMV call reads each weight for; more tokens go to the GEMM path (cuBLAS).
inline constexpr int64_t kGpuGemvMaxTokens = 8;

enum class GemvOutput {
  kStore,       // y = W x
  kAccumulate,  // y += W x (the residual add)
};

// y [n_tokens][w.rows] (=|+=) x [n_tokens][w.cols] W^T. REQUIRES: 1 <= n_tokens <=
// kGpuGemvMaxTokens; x and y are device arrays that do not overlap, 16-byte aligned.
Status gemv(const GpuWeight& w, const float* x, int64_t n_tokens, float* y, GemvOutput output,
            const cuda::Stream& stream);

// Up to 3 matrices with the same cols over the same x in one launch: ys[i] [n_tokens][ws[i].rows]
// = x ws[i]^T (the Q, K and V projections).
Status gemv_multi(std::span<const GpuWeight> ws, const float* x, int64_t n_tokens,
                  std::span<float* const> ys, const cuda::Stream& stream);

// y [n_tokens][gate.rows] = silu(x gate^T) * (x up^T). REQUIRES: gate and up have the same shape
// and type.
Status gemv_swiglu(const GpuWeight& gate, const GpuWeight& up, const float* x, int64_t n_tokens,
                   float* y, const cuda::Stream& stream);

}  // namespace strata::gpu
