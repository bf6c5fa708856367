// The decode GEMV's tuning space, for bench/gpu_gemv_bench --tune, which measures it on the GPU
// machine so that the per-type defaults in gemv.cu (config_of) are chosen from numbers, not
// guesses. Not for the forward pass.
#pragma once

#include "gpu_backend/activation_q8.h"
#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_weight.h"
#include "offload/core/status.h"

namespace strata::gpu {

struct GemvShape {
  int rows_per_warp = 4;       // 2, 4 or 8: rows sharing each x load
  int units_in_flight = 1;     // 1 or 2: 16-byte loads per row a lane issues before computing
  int min_units_per_lane = 2;  // a row is split over more warps while each lane keeps this many
};

// y [w.rows] = W x for one token with the SIMT kernel of `shape`. Types F16, Q8_0 and Q4_0 only;
// invalid_argument otherwise. x8 (Q8_0, Q4_0): the integer path over x quantized (gemv.h).
Status gemv_with_shape(const GpuWeight& w, const float* x, float* y, const GemvShape& shape,
                       const cuda::Stream& stream, const ActivationsQ8* x8 = nullptr);

// y [w.rows] = W x for one token with the tensor-core kernel (gemv_mma.h) of `tiles` m16 tiles
// per CTA and `stages` cp.async stages per warp. Q8_0 and Q4_0 only; invalid_argument for
// another type or a shape not built.
Status gemv_mma_with_shape(const GpuWeight& w, const float* x, float* y, int tiles, int stages,
                           const cuda::Stream& stream);

// The SIMT shape gemv() uses for `type` (Q8_0 and Q4_0 at one token take the tensor-core kernel).
GemvShape gemv_default_shape(DType type, bool int8_activations = false);

}  // namespace strata::gpu
