// The real pinner (cudaMallocHost) behind a PinnedHostPool. With a GPU the memory is pinned;
// without a driver (CI) pinning is refused and the pool falls back to pageable memory with a
// warning: the "pinned allocation refused" fault of issue 5, on every machine without a GPU.
#include "gpu_backend/cuda_host_pinner.h"

#include <gtest/gtest.h>

#include <cstring>

#include "gpu_backend/device_probe.h"
#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

TEST(CudaHostPinner, PinsWithAGpuAndFallsBackWithoutOne) {
  auto pool = PinnedHostPool::create({}, make_cuda_host_pinner());
  ASSERT_TRUE(pool.is_ok());
  auto b = (*pool)->allocate(int64_t{8} << 20);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  std::memset(b->data(), 7, int64_t{8} << 20);
  if (probe_gpu(0).usable) {
    EXPECT_TRUE(b->pinned());
    EXPECT_TRUE((*pool)->warning().empty()) << (*pool)->warning();
  } else {
    EXPECT_FALSE(b->pinned());
    EXPECT_CONTAINS((*pool)->warning(), "cudaMallocHost");
  }
}

}  // namespace
}  // namespace strata
