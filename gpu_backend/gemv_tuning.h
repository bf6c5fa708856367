// The decode GEMV's tuning space, for bench/gpu_gemv_bench --tune, which measures it on the GPU
// machine so that the per-type defaults in gemv.cu (config_of) are chosen from numbers, not
// guesses. Not for the forward pass.
#pragma once

#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_weight.h"
#include "offload/core/status.h"

namespace strata::gpu {

struct GemvShape {
  int rows_per_warp = 4;       // 2, 4 or 8: rows sharing each x load
  int units_in_flight = 1;     // 1 or 2: 16-byte loads per row a lane issues before computing
  int min_units_per_lane = 2;  // a row is split over more warps while each lane keeps this many
};

// y [w.rows] = W x for one token with `shape`. Types F16, Q8_0 and Q4_0 only;
// invalid_argument otherwise.
Status gemv_with_shape(const GpuWeight& w, const float* x, float* y, const GemvShape& shape,
                       const cuda::Stream& stream);

// The shape gemv() uses for `type`.
GemvShape gemv_default_shape(DType type);

}  // namespace strata::gpu
