// DeviceProbe: does this machine have a usable CUDA device, and what is it? Asked once at start-up
// by whoever decides between GPU and CPU-fallback mode; the answer is plain data, kept and passed
// on (no global cache). The probe never crashes: no GPU, no driver, a driver older than the runtime
// or any failing CUDA call gives usable = false and one sentence in `reason`.
//
// Example usage:
//   const GpuProbe probe = probe_gpu(/*device=*/0);
//   if (!probe.usable) { log("running on the CPU: " + probe.reason); ... }
//   else plan_with(probe.caps.free_bytes, probe.caps.sm_count, ...);
#pragma once

#include <cstdint>
#include <string>

namespace strata {

// What the planner and the kernels need to know about one CUDA device.
struct GpuDeviceCaps {
  int device = 0;         // CUDA ordinal
  std::string name;       // "NVIDIA H100 80GB HBM3"
  int compute_major = 0;  // compute capability, 9.0 for H100
  int compute_minor = 0;
  int sm_count = 0;         // streaming multiprocessors
  int64_t total_bytes = 0;  // device memory
  int64_t free_bytes = 0;   // free when probed (cudaMemGetInfo): other processes count
  int64_t l2_cache_bytes = 0;

  // "sm_90"
  std::string arch_name() const;
};

struct GpuProbe {
  bool usable = false;
  // Why not, when !usable: "this build has no CUDA support", "no CUDA device: cudaGetDeviceCount:
  // no CUDA-capable device is detected", ... Empty when usable.
  std::string reason;
  int device_count = 0;
  GpuDeviceCaps caps;  // meaningful only when usable
};

// Oldest compute capability the kernels are built for (CMAKE_CUDA_ARCHITECTURES starts at 80).
inline constexpr int kMinComputeMajor = 8;

// Probes CUDA device `device` (and makes it current on the calling thread when usable).
GpuProbe probe_gpu(int device = 0);

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB, 78.6 GiB free)" or "no usable GPU: <reason>".
std::string describe(const GpuProbe& probe);

}  // namespace strata
