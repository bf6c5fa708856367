#include "gpu_backend/device_probe.h"

#include <cstdio>
#include <utility>

#include "gpu_backend/cuda_api.h"

namespace strata {
namespace {

GpuProbe unusable(std::string reason) {
  GpuProbe probe;
  probe.reason = std::move(reason);
  return probe;
}

std::string gib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  return text;
}

}  // namespace

std::string GpuDeviceCaps::arch_name() const {
  return "sm_" + std::to_string(compute_major) + std::to_string(compute_minor);
}

GpuProbe probe_gpu(int device) {
  if (!cuda::built_with_cuda()) return unusable("this build has no CUDA support");

  StatusOr<int> count = cuda::device_count();
  if (!count.is_ok()) return unusable("no CUDA device: " + count.status().message());
  if (*count <= 0) return unusable("no CUDA device: cudaGetDeviceCount found none");
  if (device < 0 || device >= *count) {
    GpuProbe probe = unusable("no CUDA device " + std::to_string(device) + ": this machine has " +
                              std::to_string(*count));
    probe.device_count = *count;
    return probe;
  }

  StatusOr<cuda::DeviceProperties> props = cuda::device_properties(device);
  if (!props.is_ok()) return unusable(props.status().message());
  if (props->compute_major < kMinComputeMajor) {
    return unusable(props->name + " has compute capability " +
                    std::to_string(props->compute_major) + "." +
                    std::to_string(props->compute_minor) + "; this build needs " +
                    std::to_string(kMinComputeMajor) + ".0 or newer");
  }
  // Creates the context: the first call that fails on a broken driver or a busy/prohibited GPU.
  if (Status set = cuda::set_device(device); !set.is_ok()) return unusable(set.message());
  StatusOr<cuda::MemoryInfo> memory = cuda::memory_info();
  if (!memory.is_ok()) return unusable(memory.status().message());

  GpuProbe probe;
  probe.usable = true;
  probe.device_count = *count;
  probe.caps.device = device;
  probe.caps.name = props->name;
  probe.caps.compute_major = props->compute_major;
  probe.caps.compute_minor = props->compute_minor;
  probe.caps.sm_count = props->sm_count;
  probe.caps.total_bytes = memory->total_bytes;
  probe.caps.free_bytes = memory->free_bytes;
  probe.caps.l2_cache_bytes = props->l2_cache_bytes;
  return probe;
}

std::string describe(const GpuProbe& probe) {
  if (!probe.usable) return "no usable GPU: " + probe.reason;
  const GpuDeviceCaps& caps = probe.caps;
  return caps.name + " (" + caps.arch_name() + ", " + std::to_string(caps.sm_count) + " SMs, " +
         gib(caps.total_bytes) + ", " + gib(caps.free_bytes) + " free)";
}

}  // namespace strata
