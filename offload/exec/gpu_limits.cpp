#include "offload/exec/gpu_limits.h"

#include "gpu_backend/cuda_device_allocator.h"
#include "gpu_backend/probes.h"
#include "memory/device_arena.h"

namespace strata {

Status measure_gpu_limits(const GpuProbe& probe, double read_gib, cpu::CpuReadProbe& cpu_probe,
                          const GemmShape& gemm, Caps* caps) {
  caps->vram_free_bytes = probe.caps.free_bytes;
  STRATA_ASSIGN_OR_RETURN(cuda::Stream stream, cuda::Stream::create());
  DeviceArenaOptions o;
  o.budget_bytes = static_cast<int64_t>(read_gib * (1ll << 30)) + (int64_t{2} << 30);
  STRATA_ASSIGN_OR_RETURN(auto arena,
                          DeviceArena::create(o, make_cuda_device_allocator(probe.caps.device)));
  STRATA_ASSIGN_OR_RETURN(const gpu::HbmReadBandwidth hbm,
                          gpu::measure_hbm_read_bandwidth(
                              *arena, static_cast<int64_t>(read_gib * (1ll << 30)), 10, stream));
  caps->hbm_bytes_per_s = hbm.best_bytes_per_s;
  arena->trim();
  const int64_t chunk = int64_t{256} << 20;
  STRATA_ASSIGN_OR_RETURN(caps->h2d_pinned_bytes_per_s,
                          gpu::measure_copy_bandwidth(
                              *arena, chunk, 16, gpu::CopyDirection::kHostToDevice, true, stream));
  STRATA_ASSIGN_OR_RETURN(
      caps->h2d_pageable_bytes_per_s,
      gpu::measure_copy_bandwidth(*arena, int64_t{64} << 20, 8, gpu::CopyDirection::kHostToDevice,
                                  false, stream));
  STRATA_ASSIGN_OR_RETURN(caps->d2h_pinned_bytes_per_s,
                          gpu::measure_copy_bandwidth(
                              *arena, chunk, 16, gpu::CopyDirection::kDeviceToHost, true, stream));
  STRATA_ASSIGN_OR_RETURN(
      caps->d2h_pageable_bytes_per_s,
      gpu::measure_copy_bandwidth(*arena, int64_t{64} << 20, 8, gpu::CopyDirection::kDeviceToHost,
                                  false, stream));
  arena->trim();
  // S: about two seconds of pinned copies queued, the CPU read probe run meanwhile.
  const int chunks = std::max(8, static_cast<int>(2.0 * caps->h2d_pinned_bytes_per_s / chunk));
  STRATA_ASSIGN_OR_RETURN(auto batch, gpu::CopyBatch::start(*arena, chunk, chunks, stream));
  const cpu::ReadBandwidth concurrent = cpu_probe.measure(3);
  STRATA_ASSIGN_OR_RETURN(const double copies, batch->finish());
  batch.reset();
  caps->host_combined_bytes_per_s = copies + concurrent.best_bytes_per_s;
  arena->trim();
  STRATA_ASSIGN_OR_RETURN(
      caps->gpu_gemm_flop_per_s,
      gpu::measure_gemm_flop_per_s(*arena, stream, DType::kF16, gemm.m, gemm.n, gemm.k));
  return Status::ok();
}

}  // namespace strata
