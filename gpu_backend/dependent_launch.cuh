// Programmatic dependent launch (Hopper, sm_90): a kernel launched with the
// programmatic-stream-serialization attribute may start while the kernel before it in the stream
// is still running; it must call grid_dependency_wait() before it touches anything that kernel
// writes. The decode GEMV uses the head start to load its weights (which nothing writes) while
// the producer of its input finishes, hiding the launch gap and the ramp-up that dominate the
// small matrices of a decode step. Kernels call allow_dependent_launch() early to let the next
// kernel be scheduled. On older GPUs both are no-ops and launches are ordered as usual.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace strata::gpu {

// Launches kernel<<<grid, threads, 0, s>>>(args...) with programmatic stream serialization. An
// error is left in the runtime's last-error slot for cuda::check_last_launch.
template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, int threads, cudaStream_t s,
                      Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.stream = s;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  (void)cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

}  // namespace strata::gpu
