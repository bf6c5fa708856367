// GpuTest: the fixture every GPU kernel test uses. It probes the device once per suite and skips
// each test with the probe's reason when there is no usable GPU (CI has none; skipped is not
// passed: these tests are run on the GPU machine, scripts/gpu-machine.sh). It owns an arena and a
// stream, and helpers that move vectors in and out and poison outputs with NaN (0xFF bytes) before
// a kernel runs, so an element the kernel did not write fails the comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gpu_backend/cuda_api.h"
#include "gpu_backend/cuda_device_allocator.h"
#include "gpu_backend/device_probe.h"
#include "memory/device_arena.h"

namespace strata::testing {

class GpuTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { probe_ = new GpuProbe(probe_gpu(0)); }
  static void TearDownTestSuite() {
    delete probe_;
    probe_ = nullptr;
  }
  void SetUp() override {
    if (!probe_->usable) GTEST_SKIP() << "no usable GPU: " << probe_->reason;
    DeviceArenaOptions options;
    options.budget_bytes = int64_t{8} << 30;
    auto arena = DeviceArena::create(options, make_cuda_device_allocator(probe_->caps.device));
    ASSERT_TRUE(arena.is_ok()) << arena.status().to_string();
    arena_ = std::move(arena).value();
    auto stream = cuda::Stream::create();
    ASSERT_TRUE(stream.is_ok()) << stream.status().to_string();
    stream_ = std::move(stream).value();
  }
  void TearDown() override {
    buffers_.clear();  // before the arena
    arena_.reset();
  }

  const cuda::Stream& stream() const { return stream_; }
  DeviceArena& arena() { return *arena_; }

  // A device buffer of `bytes`, poisoned with 0xFF (NaN as float), kept until the test ends.
  void* device_alloc(int64_t bytes) {
    auto buffer = arena_->allocate(bytes, DeviceMemoryTag::kActivations);
    EXPECT_TRUE(buffer.is_ok()) << buffer.status().to_string();
    if (!buffer.is_ok()) return nullptr;
    void* p = buffer->data();
    EXPECT_TRUE(cuda::memset_async(p, 0xFF, bytes, stream_).is_ok());
    buffers_.push_back(std::make_unique<DeviceBuffer>(std::move(buffer).value()));
    return p;
  }
  template <typename T>
  T* upload(const std::vector<T>& host) {
    auto* p = static_cast<T*>(device_alloc(static_cast<int64_t>(host.size() * sizeof(T))));
    EXPECT_TRUE(cuda::memcpy_async(p, host.data(), static_cast<int64_t>(host.size() * sizeof(T)),
                                   cuda::CopyKind::kHostToDevice, stream_)
                    .is_ok());
    EXPECT_TRUE(stream_.synchronize().is_ok());
    return p;
  }
  template <typename T>
  std::vector<T> download(const T* device, int64_t count) {
    std::vector<T> host(static_cast<size_t>(count));
    EXPECT_TRUE(cuda::memcpy_async(host.data(), device, count * static_cast<int64_t>(sizeof(T)),
                                   cuda::CopyKind::kDeviceToHost, stream_)
                    .is_ok());
    const Status synced = stream_.synchronize();
    EXPECT_TRUE(synced.is_ok()) << synced.to_string();
    return host;
  }
  // A poisoned float output buffer of `count` elements.
  float* device_output(int64_t count) {
    return static_cast<float*>(device_alloc(count * static_cast<int64_t>(sizeof(float))));
  }

  // Fresh random normals every run (seeded from the clock-independent random_device).
  static std::vector<float> random_floats(int64_t n, float scale = 1.0f) {
    static thread_local std::mt19937 rng{std::random_device{}()};
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(rng);
    return v;
  }

  // ||a - b|| / ||b||; infinity when any element of a is NaN or inf.
  static double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!std::isfinite(a[i])) return INFINITY;
      const double d = static_cast<double>(a[i]) - b[i];
      num += d * d;
      den += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1.0));
  }

 private:
  static inline GpuProbe* probe_ = nullptr;
  std::unique_ptr<DeviceArena> arena_;
  cuda::Stream stream_;
  std::vector<std::unique_ptr<DeviceBuffer>> buffers_;
};

}  // namespace strata::testing
