// A stream that waits for the host: wait_host_flag queues a one-thread kernel that returns once a
// counter in pinned host memory reaches a value, so that the host can queue work that must not
// start before some CPU result (the CPU's share of a layer's attention) ahead of that result,
// and release it with one store instead of queuing the work after it.
//
// Example usage (the GPU executor's cold_attention = cpu split):
//   // pinned: a cuda::PinnedHostBuffer of 8 bytes, counter its int64 (0 at first);
//   // flag_device: cuda::device_pointer_of_host(pinned.data())
//   STRATA_RETURN_IF_ERROR(gpu::wait_host_flag(flag_device, ++expected, stream));
//   STRATA_RETURN_IF_ERROR(launch_work_that_reads_the_cpu_result(stream));
//   ... on the CPU: compute the result, then
//   gpu::release_host_flag(counter, expected);
//
// The store is a release and the kernel's load an acquire at system scope, so the kernels queued
// after the wait see every host write made before the store. A wait whose counter is never
// raised blocks its stream forever: whoever queues one must raise it on every path, errors too.
#pragma once

#include <atomic>
#include <cstdint>

#include "gpu_backend/cuda_api.h"
#include "offload/core/status.h"

namespace strata::gpu {

// Queues on `stream` a wait until *flag >= value. flag: the device address of an int64 in
// pinned host memory (cuda::device_pointer_of_host), 8-byte aligned.
Status wait_host_flag(const int64_t* flag, int64_t value, const cuda::Stream& stream);

// The host side: *counter = value with release order (the GPU's acquire load pairs with it).
inline void release_host_flag(int64_t* counter, int64_t value) {
  std::atomic_ref<int64_t>(*counter).store(value, std::memory_order_release);
}

}  // namespace strata::gpu
