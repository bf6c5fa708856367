// prefetch_l2 (see l2_prefetch.h).
#include <algorithm>
#include <cstdint>
#include <string>

#include "gpu_backend/dependent_launch.cuh"
#include "gpu_backend/l2_prefetch.h"

namespace strata::gpu {
namespace {

// Bytes one lane asks for with one instruction (sm_90: one bulk prefetch; before: 32 lines).
constexpr int64_t kChunkBytes = 4096;

struct Ranges {
  const char* data[kMaxPrefetchRanges];
  int64_t chunk_end[kMaxPrefetchRanges];  // chunks of ranges 0..i, a running sum
  int64_t bytes[kMaxPrefetchRanges];
  int count = 0;
};

__global__ void prefetch_l2_kernel(Ranges r) {
  // The next kernel may be scheduled now; it waits for this one, which waits for the one before.
  allow_dependent_launch();
  const int64_t chunks = r.count > 0 ? r.chunk_end[r.count - 1] : 0;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int i = 0;
    while (c >= r.chunk_end[i]) ++i;
    const int64_t first = i == 0 ? 0 : r.chunk_end[i - 1];
    const int64_t offset = (c - first) * kChunkBytes;
    const char* p = r.data[i] + offset;
    const int64_t n = min(kChunkBytes, r.bytes[i] - offset);  // a multiple of 16
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p),
                 "r"(static_cast<uint32_t>(n))
                 : "memory");
#else
    for (int64_t b = 0; b < n; b += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(p + b));
#endif
  }
  // Ends after the kernel before it, so that the kernel after this one (which waits only for
  // this one) still sees everything that kernel wrote.
  grid_dependency_wait();
}

}  // namespace

Status prefetch_l2(std::span<const DeviceRange> ranges, int64_t budget_bytes, int sm_count,
                   const cuda::Stream& stream) {
  if (ranges.size() > static_cast<size_t>(kMaxPrefetchRanges) || budget_bytes < 0 || sm_count < 1) {
    return Status::invalid_argument("prefetch_l2: " + std::to_string(ranges.size()) +
                                    " ranges (at most " + std::to_string(kMaxPrefetchRanges) +
                                    "), budget " + std::to_string(budget_bytes) + ", " +
                                    std::to_string(sm_count) + " SMs");
  }
  Ranges r;
  int64_t left = budget_bytes, chunks = 0;
  for (const DeviceRange& range : ranges) {
    if (range.bytes < 0) return Status::invalid_argument("prefetch_l2: a negative size");
    // Inward to 16-byte boundaries: never a byte outside the range.
    const auto begin = (reinterpret_cast<uintptr_t>(range.data) + 15) & ~uintptr_t{15};
    const auto end = (reinterpret_cast<uintptr_t>(range.data) + range.bytes) & ~uintptr_t{15};
    if (range.data == nullptr || end <= begin || left < 16) continue;
    const int64_t bytes = std::min<int64_t>(static_cast<int64_t>(end - begin), left & ~int64_t{15});
    left -= bytes;
    chunks += (bytes + kChunkBytes - 1) / kChunkBytes;
    r.data[r.count] = reinterpret_cast<const char*>(begin);
    r.bytes[r.count] = bytes;
    r.chunk_end[r.count] = chunks;
    ++r.count;
  }
  if (r.count == 0) return Status::ok();
  const int64_t blocks = std::min<int64_t>(sm_count, (chunks + 31) / 32);
  launch_dependent(prefetch_l2_kernel, dim3(static_cast<unsigned>(blocks)), 32, stream.native(), r);
  return cuda::check_last_launch("prefetch_l2_kernel");
}

}  // namespace strata::gpu
