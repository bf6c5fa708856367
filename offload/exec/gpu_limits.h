// measure_gpu_limits: the GPU half of the machine's Caps (policies/caps.h), each figure measured
// the way ../shared/BENCHMARKS.md defines it: H (HBM read), P (pinned and pageable host-to-device
// copies), device-to-host copies, S (pinned copies and the CPU read probe at the same time,
// summed), G (the cuBLAS f16 GEMM rate on `gemm`) and the free VRAM. `strata calibrate` caches
// them; the offload benchmark measures them in its own run.
#pragma once

#include <cstdint>

#include "cpu_backend/read_bandwidth.h"
#include "gpu_backend/device_probe.h"
#include "offload/core/status.h"
#include "policies/caps.h"

namespace strata {

// y[n][m] = x[n][k] W[m][k]^T; the default is llama3-8b's FFN over a 2048-token chunk.
struct GemmShape {
  int64_t m = 14336;
  int64_t n = 2048;
  int64_t k = 4096;
};

// Writes the fields above into *caps (the rest untouched). REQUIRES: probe.usable, cpu_probe.ok().
// Takes a few seconds and `read_gib` + 2 GiB of VRAM, all of it given back before returning.
Status measure_gpu_limits(const GpuProbe& probe, double read_gib, cpu::CpuReadProbe& cpu_probe,
                          const GemmShape& gemm, Caps* caps);

}  // namespace strata
