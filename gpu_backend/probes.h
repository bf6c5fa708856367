// Probes of the GPU's limits, for calibration and for the benchmarks' rooflines (BENCHMARKS.md:
// H = HBM read bandwidth, G = GEMM rate), and a random fill so that nothing is timed on zeros.
#pragma once

#include <cstdint>
#include <memory>

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

enum class CopyDirection { kHostToDevice, kDeviceToHost };

// Copies `chunk_bytes` (>= 64 MiB for P) between a host buffer (pinned with cudaMallocHost, or
// pageable) and VRAM (from `arena`) `chunks` times back to back after one warm-up copy, timed with
// CUDA events; bytes per second over the whole batch.
StatusOr<double> measure_copy_bandwidth(DeviceArena& arena, int64_t chunk_bytes, int chunks,
                                        CopyDirection direction, bool pinned,
                                        const cuda::Stream& stream);

// Queues `chunks` pinned host-to-device copies of `chunk_bytes` on `stream` and returns without
// waiting, so that the caller can load the host side (the CPU read probe) meanwhile;
// CopyBatch::finish() waits and returns the copies' bytes per second.
class CopyBatch {
 public:
  static StatusOr<std::unique_ptr<CopyBatch>> start(DeviceArena& arena, int64_t chunk_bytes,
                                                    int chunks, const cuda::Stream& stream);
  StatusOr<double> finish();

 private:
  CopyBatch() = default;
  cuda::PinnedHostBuffer host_;
  DeviceBuffer device_;
  cuda::Event start_, end_;
  int64_t bytes_ = 0;
};

// FLOP/s of the cuBLAS product y[n][m] = x[n][k] W[m][k]^T in `type` on random data (median of 10
// after 3 warm-ups): G for the planner and the benchmarks' prefill rooflines.
StatusOr<double> measure_gemm_flop_per_s(DeviceArena& arena, const cuda::Stream& stream, DType type,
                                         int64_t m, int64_t n, int64_t k);

}  // namespace strata::gpu
