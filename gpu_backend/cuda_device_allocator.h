// The real DeviceAllocator: chunks of VRAM from cudaMalloc on one device, for memory/'s
// DeviceArena. It lives here, not in memory/, so that memory/ never sees CUDA (data flows one way:
// memory/ owns the budget, gpu_backend/ supplies the device bytes). Nothing else calls
// cuda::device_malloc.
//
// Example usage:
//   STRATA_ASSIGN_OR_RETURN(auto arena,
//       DeviceArena::create({.budget_bytes = budget},
//       make_cuda_device_allocator(probe.caps.device)));
#pragma once

#include <memory>

#include "memory/device_arena.h"

namespace strata {

// REQUIRES: `device` is a usable CUDA device (probe_gpu(device).usable). In a build without CUDA
// every allocate() answers unsupported.
std::unique_ptr<DeviceAllocator> make_cuda_device_allocator(int device);

}  // namespace strata
