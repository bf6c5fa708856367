// The real HostPinner for memory/'s PinnedHostPool: page-locked memory from cudaMallocHost (it
// lives here, not in memory/, so that memory/ never sees CUDA). In a build without CUDA, or on a
// machine without a driver, every allocate() fails and the pool falls back to pageable memory.
#pragma once

#include <memory>

#include "memory/pinned_host_pool.h"

namespace strata {

// huge_pages: 2 MiB pages registered with CUDA (cuda::HostPages::kHuge) instead of cudaMallocHost.
std::unique_ptr<HostPinner> make_cuda_host_pinner(bool huge_pages = false);

}  // namespace strata
