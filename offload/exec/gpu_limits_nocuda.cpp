// measure_gpu_limits in a build without CUDA: no GPU is ever usable there (the probe says so), so
// callers never reach this; it answers like the rest of the CPU-only build.
#include "offload/exec/gpu_limits.h"

namespace strata {

Status measure_gpu_limits(const GpuProbe&, double, cpu::CpuReadProbe&, const GemmShape&, Caps*) {
  return Status::unsupported("GPU limits: this build has no CUDA support");
}

}  // namespace strata
