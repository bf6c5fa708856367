// Probes of the GPU's limits, for calibration and for the benchmarks' rooflines (BENCHMARKS.md:
// H = HBM read bandwidth, G = GEMM rate), and a random fill so that nothing is timed on zeros.
#pragma once

#include <cstdint>

#include "gpu_backend/cuda_api.h"
#include "memory/device_arena.h"
#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata::gpu {

// Fills `count` elements of `type` (kF32, kF16, kBF16: normals of standard deviation `scale`;
// any other type: random bytes, count = bytes) from a counter-based hash of `seed`.
Status fill_random(void* data, int64_t count, DType type, uint64_t seed, float scale,
                   const cuda::Stream& stream);

struct HbmReadBandwidth {
  double best_bytes_per_s = 0;  // the fastest of the passes
  double median_bytes_per_s = 0;
  int64_t bytes = 0;  // read per pass
};

// Reads `bytes` (>= 4 GiB for the roofline; from `arena`, tag kWorkspace) with 16-byte loads,
// `passes` times after a warm-up, each timed with CUDA events.
StatusOr<HbmReadBandwidth> measure_hbm_read_bandwidth(DeviceArena& arena, int64_t bytes, int passes,
                                                      const cuda::Stream& stream);

}  // namespace strata::gpu
