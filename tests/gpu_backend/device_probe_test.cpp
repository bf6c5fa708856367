// The probe on any machine: it never crashes and always explains itself. On a machine without a
// GPU (or a build without CUDA) the GPU-only tests skip with the probe's reason.
#include "gpu_backend/device_probe.h"

#include <gtest/gtest.h>

#include <iostream>

#include "gpu_backend/cuda_api.h"

namespace strata {
namespace {

TEST(DeviceProbeTest, AnswersWithAReasonOrCaps) {
  const GpuProbe probe = probe_gpu(0);
  std::cout << describe(probe) << "\n";
  if (!probe.usable) {
    EXPECT_FALSE(probe.reason.empty());
    EXPECT_EQ(describe(probe), "no usable GPU: " + probe.reason);
    return;
  }
  EXPECT_TRUE(probe.reason.empty());
  EXPECT_GE(probe.device_count, 1);
  EXPECT_FALSE(probe.caps.name.empty());
  EXPECT_GE(probe.caps.compute_major, kMinComputeMajor);
  EXPECT_GT(probe.caps.sm_count, 0);
  EXPECT_GT(probe.caps.total_bytes, 0);
  EXPECT_GT(probe.caps.free_bytes, 0);
  EXPECT_LE(probe.caps.free_bytes, probe.caps.total_bytes);
}

TEST(DeviceProbeTest, BuildWithoutCudaSaysSo) {
  if (cuda::built_with_cuda()) GTEST_SKIP() << "this build has CUDA support";
  const GpuProbe probe = probe_gpu(0);
  EXPECT_FALSE(probe.usable);
  EXPECT_EQ(probe.reason, "this build has no CUDA support");
}

TEST(DeviceProbeTest, NamesAMissingDeviceOrdinal) {
  const GpuProbe probe = probe_gpu(4096);
  EXPECT_FALSE(probe.usable);
  EXPECT_FALSE(probe.reason.empty());
  if (probe.device_count > 0) {
    EXPECT_NE(probe.reason.find("no CUDA device 4096"), std::string::npos) << probe.reason;
  }
}

TEST(DeviceProbeTest, ArchNameFollowsComputeCapability) {
  GpuDeviceCaps caps;
  caps.compute_major = 9;
  caps.compute_minor = 0;
  EXPECT_EQ(caps.arch_name(), "sm_90");
  caps.compute_major = 12;
  EXPECT_EQ(caps.arch_name(), "sm_120");
}

}  // namespace
}  // namespace strata
