// Weights fetched into the GPU's L2 cache ahead of the kernel that reads them.
//
// A decode step is a chain of short kernels. While attention runs at a short context (a few
// microseconds a layer, latency-bound, a few KB of KV), HBM is idle, and the output projection's
// GEMV after it then starts from cold: a DRAM latency and a ramp before its loads stream. Issued
// just before attention, prefetch_l2 lets HBM fill L2 with the next matrices meanwhile, so the
// GEMVs after it read part of their weights from L2. The prefetch only moves data earlier: the
// bytes read per step stay the same, and no result changes.
//
// Example usage (one layer of a decode step):
//   gpu::gemv_qkv_rope_store(...);
//   const gpu::DeviceRange next[] = {{wo.data, wo_bytes}, {wo.scales, wo_scale_bytes}};
//   STRATA_RETURN_IF_ERROR(gpu::prefetch_l2(next, l2_budget, stream));
//   attention(...);  // HBM fetches wo into L2 meanwhile
//   gpu::gemv(wo, ...);
#pragma once

#include <cstdint>
#include <span>

#include "gpu_backend/cuda_api.h"
#include "offload/core/status.h"

namespace strata::gpu {

struct DeviceRange {
  const void* data = nullptr;  // device memory
  int64_t bytes = 0;
};

// The most ranges one call takes.
inline constexpr int kMaxPrefetchRanges = 8;

// Asks L2 to fetch the first `budget_bytes` of `ranges` (taken in order; each trimmed inward to
// 16-byte boundaries) and returns without waiting for the data. The kernel starts while the kernel
// before it in the stream still runs (programmatic dependent launch), issues the prefetches at
// once, and ends only after that kernel has (so the kernel after it still sees its writes).
// `sm_count` spreads the requests over that many blocks (one per SM: the copy engines of many
// SMs). On GPUs before sm_90 the lines are requested one 128-byte line at a time.
// REQUIRES: ranges.size() <= kMaxPrefetchRanges; budget_bytes >= 0; sm_count >= 1.
Status prefetch_l2(std::span<const DeviceRange> ranges, int64_t budget_bytes, int sm_count,
                   const cuda::Stream& stream);

}  // namespace strata::gpu
