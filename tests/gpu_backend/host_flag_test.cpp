// wait_host_flag holds back the work queued after it until the host raises the counter: a copy
// into mapped pinned memory queued behind the wait must not have happened 50 ms later, and must
// have happened (with the values the host wrote before raising it) once the flag is up. A second
// wait for a value already reached returns at once.
#include "gpu_backend/host_flag.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "gpu_backend/elementwise.h"
#include "tests/gpu_backend/gpu_test_fixture.h"

namespace strata::gpu {
namespace {

class HostFlagTest : public strata::testing::GpuTest {};

TEST_F(HostFlagTest, WorkQueuedAfterTheWaitRunsOnlyOnceTheHostRaisesTheFlag) {
  constexpr int64_t kN = 256;
  auto flag = cuda::PinnedHostBuffer::allocate(8);
  auto in = cuda::PinnedHostBuffer::allocate(kN * 4);   // the "CPU result"
  auto out = cuda::PinnedHostBuffer::allocate(kN * 4);  // where the GPU copies it
  ASSERT_TRUE(flag.is_ok() && in.is_ok() && out.is_ok());
  auto* counter = static_cast<int64_t*>(flag->data());
  *counter = 0;
  auto* in_host = static_cast<float*>(in->data());
  auto* out_host = static_cast<float*>(out->data());
  for (int64_t i = 0; i < kN; ++i) in_host[i] = out_host[i] = NAN;  // poison
  auto flag_dev = cuda::device_pointer_of_host(flag->data());
  auto in_dev = cuda::device_pointer_of_host(in->data());
  auto out_dev = cuda::device_pointer_of_host(out->data());
  ASSERT_TRUE(flag_dev.is_ok() && in_dev.is_ok() && out_dev.is_ok());

  ASSERT_TRUE(wait_host_flag(static_cast<const int64_t*>(*flag_dev), 1, stream()).is_ok());
  ASSERT_TRUE(
      copy_floats(static_cast<float*>(*out_dev), static_cast<const float*>(*in_dev), kN, stream())
          .is_ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (int64_t i = 0; i < kN; ++i) ASSERT_TRUE(std::isnan(out_host[i])) << "copied too early";

  const std::vector<float> values = random_floats(kN);
  std::memcpy(in_host, values.data(), kN * 4);  // before the release: the copy must see it
  release_host_flag(counter, 1);
  ASSERT_TRUE(stream().synchronize().is_ok());
  EXPECT_EQ(0, std::memcmp(out_host, values.data(), kN * 4));

  // Already reached: returns at once.
  ASSERT_TRUE(wait_host_flag(static_cast<const int64_t*>(*flag_dev), 1, stream()).is_ok());
  EXPECT_TRUE(stream().synchronize().is_ok());
}

TEST_F(HostFlagTest, RejectsAMisalignedFlag) {
  alignas(8) static int64_t storage[2];
  const auto* odd = reinterpret_cast<const int64_t*>(reinterpret_cast<const char*>(storage) + 4);
  EXPECT_EQ(wait_host_flag(odd, 1, stream()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wait_host_flag(nullptr, 1, stream()).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::gpu
