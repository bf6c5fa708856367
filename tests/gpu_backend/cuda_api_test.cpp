// cuda_api and the real allocator on a real GPU. Without one (no device, no driver, or a build
// without CUDA) every test here skips with the probe's reason; none may fail.
#include "gpu_backend/cuda_api.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <random>
#include <span>
#include <vector>

#include "gpu_backend/cuda_device_allocator.h"
#include "gpu_backend/device_probe.h"
#include "memory/device_arena.h"
#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

class CudaApiTest : public testing::Test {
 protected:
  // One probe for the suite: detecting the device (and creating its context) is slow.
  static void SetUpTestSuite() { probe_ = new GpuProbe(probe_gpu(0)); }
  static void TearDownTestSuite() {
    delete probe_;
    probe_ = nullptr;
  }
  void SetUp() override {
    if (!probe_->usable) GTEST_SKIP() << probe_->reason;
  }

  static const GpuDeviceCaps& caps() { return probe_->caps; }

  static std::unique_ptr<DeviceArena> make_arena(int64_t budget_bytes) {
    DeviceArenaOptions options;
    options.budget_bytes = budget_bytes;
    options.chunk_bytes = int64_t{64} << 20;
    auto arena = DeviceArena::create(options, make_cuda_device_allocator(caps().device));
    EXPECT_TRUE(arena.is_ok()) << arena.status().to_string();
    return std::move(arena).value();
  }

 private:
  static inline GpuProbe* probe_ = nullptr;
};

TEST_F(CudaApiTest, ReportsTheDevice) {
  std::cout << describe(probe_gpu(caps().device)) << "\n";
  StatusOr<cuda::MemoryInfo> memory = cuda::memory_info();
  ASSERT_TRUE(memory.is_ok()) << memory.status().to_string();
  EXPECT_GT(memory->free_bytes, 0);
  EXPECT_EQ(memory->total_bytes, caps().total_bytes);
}

TEST_F(CudaApiTest, AllocatesThroughTheArena) {
  auto arena = make_arena(int64_t{256} << 20);
  StatusOr<DeviceBuffer> buffer = arena->allocate(int64_t{10} << 20, DeviceMemoryTag::kWeights);
  ASSERT_TRUE(buffer.is_ok()) << buffer.status().to_string();
  EXPECT_NE(buffer->data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer->data()) % kDeviceArenaAlignmentBytes, 0u);
  EXPECT_EQ(arena->stats().used(DeviceMemoryTag::kWeights), int64_t{10} << 20);
}

TEST_F(CudaApiTest, MemcpyRoundTripKeepsRandomBytes) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  constexpr int64_t kBytes = (int64_t{8} << 20) + 123;  // not a multiple of anything nice
  auto arena = make_arena(int64_t{64} << 20);
  StatusOr<DeviceBuffer> a = arena->allocate(kBytes, DeviceMemoryTag::kStaging);
  StatusOr<DeviceBuffer> b = arena->allocate(kBytes, DeviceMemoryTag::kStaging);
  ASSERT_TRUE(a.is_ok() && b.is_ok()) << a.status().to_string() << b.status().to_string();

  StatusOr<cuda::PinnedHostBuffer> src = cuda::PinnedHostBuffer::allocate(kBytes);
  StatusOr<cuda::PinnedHostBuffer> dst = cuda::PinnedHostBuffer::allocate(kBytes);
  ASSERT_TRUE(src.is_ok() && dst.is_ok()) << src.status().to_string() << dst.status().to_string();
  std::mt19937 rng(seed);
  auto* src_bytes = static_cast<uint8_t*>(src->data());
  for (int64_t i = 0; i < kBytes; ++i) src_bytes[i] = static_cast<uint8_t>(rng());
  std::memset(dst->data(), 0, kBytes);

  StatusOr<cuda::Stream> stream = cuda::Stream::create();
  ASSERT_TRUE(stream.is_ok()) << stream.status().to_string();
  using cuda::CopyKind;
  ASSERT_TRUE(
      cuda::memcpy_async(a->data(), src->data(), kBytes, CopyKind::kHostToDevice, *stream).is_ok());
  ASSERT_TRUE(
      cuda::memcpy_async(b->data(), a->data(), kBytes, CopyKind::kDeviceToDevice, *stream).is_ok());
  ASSERT_TRUE(
      cuda::memcpy_async(dst->data(), b->data(), kBytes, CopyKind::kDeviceToHost, *stream).is_ok());
  Status synced = stream->synchronize();
  ASSERT_TRUE(synced.is_ok()) << synced.to_string();
  EXPECT_EQ(std::memcmp(src->data(), dst->data(), kBytes), 0);
}

TEST_F(CudaApiTest, HugePagePinnedMemoryCopiesAndMapsToItsOwnAddress) {
  // Registered 2 MiB pages (HostPages::kHuge, the cold KV tier's with host_huge_pages): DMA both
  // ways over random bytes, and the device sees them at their host address, as the executor's
  // in-place cold reads need.
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  constexpr int64_t kBytes = (int64_t{6} << 20) + 77;
  auto arena = make_arena(int64_t{64} << 20);
  StatusOr<DeviceBuffer> device = arena->allocate(kBytes, DeviceMemoryTag::kStaging);
  StatusOr<cuda::PinnedHostBuffer> src =
      cuda::PinnedHostBuffer::allocate(kBytes, cuda::HostPages::kHuge);
  StatusOr<cuda::PinnedHostBuffer> back =
      cuda::PinnedHostBuffer::allocate(kBytes, cuda::HostPages::kHuge);
  ASSERT_TRUE(device.is_ok() && src.is_ok() && back.is_ok())
      << src.status().to_string() << back.status().to_string();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(src->data()) % (uintptr_t{2} << 20), 0u);
  EXPECT_EQ(src->size_bytes(), kBytes);
  StatusOr<void*> mapped = cuda::device_pointer_of_host(src->data());
  ASSERT_TRUE(mapped.is_ok()) << mapped.status().to_string();
  EXPECT_EQ(*mapped, src->data());
  std::mt19937 rng(seed);
  auto* s = static_cast<uint8_t*>(src->data());
  for (int64_t i = 0; i < kBytes; ++i) s[i] = static_cast<uint8_t>(rng());
  std::memset(back->data(), 0, kBytes);
  StatusOr<cuda::Stream> stream = cuda::Stream::create();
  ASSERT_TRUE(stream.is_ok()) << stream.status().to_string();
  ASSERT_TRUE(cuda::memset_async(device->data(), 0xFF, kBytes, *stream).is_ok());
  ASSERT_TRUE(cuda::memcpy_async(device->data(), src->data(), kBytes, cuda::CopyKind::kHostToDevice,
                                 *stream)
                  .is_ok());
  ASSERT_TRUE(cuda::memcpy_async(back->data(), device->data(), kBytes,
                                 cuda::CopyKind::kDeviceToHost, *stream)
                  .is_ok());
  ASSERT_TRUE(stream->synchronize().is_ok());
  EXPECT_EQ(std::memcmp(src->data(), back->data(), kBytes), 0);
}

TEST_F(CudaApiTest, BatchedCopiesLandWhereEachSays) {
  // Random pieces of a pinned buffer to shuffled places of a poisoned device buffer, in one
  // batch (as queue_stage_copy stages cold KV runs); back in one plain copy, each piece checked.
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  constexpr int64_t kPieces = 300, kMax = 8192;
  std::vector<size_t> sizes(kPieces);
  int64_t total = 0;
  for (size_t& n : sizes) total += static_cast<int64_t>(n = 1 + rng() % kMax);
  auto arena = make_arena(int64_t{64} << 20);
  StatusOr<DeviceBuffer> device = arena->allocate(total, DeviceMemoryTag::kStaging);
  StatusOr<cuda::PinnedHostBuffer> src = cuda::PinnedHostBuffer::allocate(total);
  StatusOr<cuda::PinnedHostBuffer> back = cuda::PinnedHostBuffer::allocate(total);
  ASSERT_TRUE(device.is_ok() && src.is_ok() && back.is_ok());
  auto* s = static_cast<uint8_t*>(src->data());
  for (int64_t i = 0; i < total; ++i) s[i] = static_cast<uint8_t>(rng());
  // Piece i sits at src_off[i] in the source and at dst_off[order[i]] in the device buffer.
  std::vector<int64_t> order(kPieces);
  for (int64_t i = 0; i < kPieces; ++i) order[static_cast<size_t>(i)] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int64_t> src_off(kPieces), dst_off(kPieces);
  for (int64_t i = 0, at = 0; i < kPieces; ++i)
    src_off[static_cast<size_t>(i)] = at, at += static_cast<int64_t>(sizes[static_cast<size_t>(i)]);
  for (int64_t j = 0, at = 0; j < kPieces; ++j) {
    const auto i = static_cast<size_t>(order[static_cast<size_t>(j)]);
    dst_off[i] = at;
    at += static_cast<int64_t>(sizes[i]);
  }
  std::vector<void*> dsts;
  std::vector<const void*> srcs;
  for (size_t i = 0; i < sizes.size(); ++i) {
    dsts.push_back(static_cast<uint8_t*>(device->data()) + dst_off[i]);
    srcs.push_back(s + src_off[i]);
  }
  StatusOr<cuda::Stream> stream = cuda::Stream::create();
  ASSERT_TRUE(stream.is_ok()) << stream.status().to_string();
  ASSERT_TRUE(cuda::memset_async(device->data(), 0xFF, total, *stream).is_ok());
  const Status batched = cuda::memcpy_batch_to_device_async(dsts, srcs, sizes, *stream);
  ASSERT_TRUE(batched.is_ok()) << batched.to_string();
  ASSERT_TRUE(cuda::memcpy_async(back->data(), device->data(), total, cuda::CopyKind::kDeviceToHost,
                                 *stream)
                  .is_ok());
  ASSERT_TRUE(stream->synchronize().is_ok());
  const auto* b = static_cast<const uint8_t*>(back->data());
  for (size_t i = 0; i < sizes.size(); ++i)
    ASSERT_EQ(std::memcmp(b + dst_off[i], s + src_off[i], sizes[i]), 0) << "piece " << i;
  // Spans of different lengths are refused by name.
  const Status bad = cuda::memcpy_batch_to_device_async(
      dsts, std::span(srcs).first(srcs.size() - 1), sizes, *stream);
  EXPECT_FALSE(bad.is_ok());
  EXPECT_CONTAINS(bad.message(), "different lengths");
}

TEST_F(CudaApiTest, RegisteredHostMemoryCopiesBack) {
  std::vector<float> host(1 << 20, 1.5f), back(1 << 20, 0.0f);
  const int64_t bytes = static_cast<int64_t>(host.size() * sizeof(float));
  auto registration = cuda::HostRegistration::register_range(host.data(), bytes);
  ASSERT_TRUE(registration.is_ok()) << registration.status().to_string();
  auto arena = make_arena(int64_t{64} << 20);
  auto device = arena->allocate(bytes, DeviceMemoryTag::kActivations);
  ASSERT_TRUE(device.is_ok()) << device.status().to_string();
  auto stream = cuda::Stream::create();
  ASSERT_TRUE(stream.is_ok());
  ASSERT_TRUE(
      cuda::memcpy_async(device->data(), host.data(), bytes, cuda::CopyKind::kHostToDevice, *stream)
          .is_ok());
  ASSERT_TRUE(
      cuda::memcpy_async(back.data(), device->data(), bytes, cuda::CopyKind::kDeviceToHost, *stream)
          .is_ok());
  ASSERT_TRUE(stream->synchronize().is_ok());
  EXPECT_EQ(host, back);
}

TEST_F(CudaApiTest, EventsTimeAndOrderStreams) {
  constexpr int64_t kBytes = int64_t{64} << 20;
  auto arena = make_arena(int64_t{256} << 20);
  auto a = arena->allocate(kBytes, DeviceMemoryTag::kWorkspace);
  auto b = arena->allocate(kBytes, DeviceMemoryTag::kWorkspace);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  auto copy = cuda::Stream::create();
  auto compute = cuda::Stream::create();
  auto start = cuda::Event::create(cuda::EventTiming::kEnabled);
  auto stop = cuda::Event::create(cuda::EventTiming::kEnabled);
  auto done = cuda::Event::create(cuda::EventTiming::kDisabled);
  ASSERT_TRUE(copy.is_ok() && compute.is_ok() && start.is_ok() && stop.is_ok() && done.is_ok());

  ASSERT_TRUE(start->record(*copy).is_ok());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(
        cuda::memcpy_async(b->data(), a->data(), kBytes, cuda::CopyKind::kDeviceToDevice, *copy)
            .is_ok());
  }
  ASSERT_TRUE(stop->record(*copy).is_ok());
  ASSERT_TRUE(done->record(*copy).is_ok());
  ASSERT_TRUE(compute->wait(*done).is_ok());  // compute waits on the GPU for the copies
  ASSERT_TRUE(compute->synchronize().is_ok());
  StatusOr<bool> complete = done->is_complete();
  ASSERT_TRUE(complete.is_ok()) << complete.status().to_string();
  EXPECT_TRUE(*complete) << "compute waited for done, so done has completed";

  ASSERT_TRUE(stop->synchronize().is_ok());
  StatusOr<float> ms = cuda::elapsed_ms(*start, *stop);
  ASSERT_TRUE(ms.is_ok()) << ms.status().to_string();
  EXPECT_GT(*ms, 0.0f);
  std::cout << "4 x 64 MiB device copies: " << *ms << " ms ("
            << 4.0 * 2 * kBytes / (*ms * 1e-3) / 1e9 << " GB/s read+write)\n";

  // Timing needs both events created with timing on.
  StatusOr<float> untimed = cuda::elapsed_ms(*done, *stop);
  ASSERT_FALSE(untimed.is_ok());
  EXPECT_CONTAINS(untimed.status().message(), "cudaEventElapsedTime");
  EXPECT_TRUE(cuda::check_last_launch("nothing").is_ok()) << "errors are cleared once reported";
}

TEST_F(CudaApiTest, AbsurdAllocationGivesAClearStatus) {
  auto allocator = make_cuda_device_allocator(caps().device);
  constexpr int64_t kAbsurd = int64_t{1} << 50;  // 1 PiB
  StatusOr<void*> direct = allocator->allocate(kAbsurd);
  ASSERT_FALSE(direct.is_ok());
  EXPECT_EQ(direct.status().code(), StatusCode::kOutOfMemory);
  EXPECT_CONTAINS(direct.status().message(), "cudaMalloc(1125899906842624 bytes): out of memory");
  std::cout << direct.status().to_string() << "\n";

  // Through an arena whose budget allows it, the device's refusal comes back with the arena's view.
  auto arena = make_arena(kAbsurd * 2);
  auto buffer = arena->allocate(kAbsurd, DeviceMemoryTag::kWeights);
  ASSERT_FALSE(buffer.is_ok());
  EXPECT_EQ(buffer.status().code(), StatusCode::kOutOfMemory);
  EXPECT_CONTAINS(buffer.status().message(), "for weights: the device refused: cudaMalloc(");
  std::cout << buffer.status().to_string() << "\n";

  // A refused cudaMalloc is not a sticky error: the device keeps working.
  EXPECT_TRUE(cuda::check_last_launch("after a refused cudaMalloc").is_ok());
  auto small = arena->allocate(4096, DeviceMemoryTag::kWeights);
  EXPECT_TRUE(small.is_ok()) << small.status().to_string();
}

}  // namespace
}  // namespace strata
