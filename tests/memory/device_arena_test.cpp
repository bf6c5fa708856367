// DeviceArena over a host-only fake device: every behaviour of the budget, best-fit reuse,
// coalescing and per-tag accounting is checked here without a GPU.
#include "memory/device_arena.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <new>
#include <random>
#include <vector>

#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

constexpr int64_t kKiB = 1024;
constexpr int64_t kMiB = 1024 * 1024;

// What the fake device saw, kept outside it so a test can read it after the arena owns the fake.
struct FakeDeviceRecord {
  int64_t num_allocations = 0;
  int64_t num_frees = 0;
  int64_t live_bytes = 0;
  std::vector<int64_t> allocation_sizes;
  // The device refuses (out_of_memory, like cudaMalloc) an allocation that would take it past this.
  int64_t capacity_bytes = INT64_MAX;
};

// Plain host memory standing in for VRAM, aligned like cudaMalloc's.
class FakeDevice final : public DeviceAllocator {
 public:
  explicit FakeDevice(FakeDeviceRecord* record) : record_(record) {}
  ~FakeDevice() override { EXPECT_EQ(record_->live_bytes, 0) << "the arena leaked a chunk"; }

  StatusOr<void*> allocate(int64_t size_bytes) override {
    if (record_->live_bytes + size_bytes > record_->capacity_bytes) {
      return Status::out_of_memory("cudaMalloc(" + std::to_string(size_bytes) +
                                   " bytes): out of memory");
    }
    void* data = ::operator new (static_cast<size_t>(size_bytes),
                                 std::align_val_t{kDeviceArenaAlignmentBytes});
    sizes_.emplace_back(data, size_bytes);
    ++record_->num_allocations;
    record_->live_bytes += size_bytes;
    record_->allocation_sizes.push_back(size_bytes);
    return data;
  }

  void free(void* data) override {
    auto it = std::find_if(sizes_.begin(), sizes_.end(), [&](auto& p) { return p.first == data; });
    ASSERT_NE(it, sizes_.end()) << "free of a pointer the fake never gave out";
    record_->live_bytes -= it->second;
    ++record_->num_frees;
    sizes_.erase(it);
    ::operator delete (data, std::align_val_t{kDeviceArenaAlignmentBytes});
  }

 private:
  FakeDeviceRecord* record_;
  std::vector<std::pair<void*, int64_t>> sizes_;
};

std::unique_ptr<DeviceArena> make_arena(FakeDeviceRecord* record, int64_t budget_bytes,
                                        int64_t chunk_bytes) {
  DeviceArenaOptions options;
  options.budget_bytes = budget_bytes;
  options.chunk_bytes = chunk_bytes;
  auto arena = DeviceArena::create(options, std::make_unique<FakeDevice>(record));
  EXPECT_TRUE(arena.is_ok()) << arena.status().to_string();
  return std::move(arena).value();
}

DeviceBuffer must_allocate(DeviceArena& arena, int64_t size_bytes,
                           DeviceMemoryTag tag = DeviceMemoryTag::kWeights) {
  auto buffer = arena.allocate(size_bytes, tag);
  EXPECT_TRUE(buffer.is_ok()) << buffer.status().to_string();
  return buffer.is_ok() ? std::move(buffer).value() : DeviceBuffer();
}

std::byte* bytes(const DeviceBuffer& buffer) { return static_cast<std::byte*>(buffer.data()); }

TEST(DeviceArenaTest, RejectsInvalidOptions) {
  FakeDeviceRecord record;
  DeviceArenaOptions options;  // budget 0
  auto arena = DeviceArena::create(options, std::make_unique<FakeDevice>(&record));
  ASSERT_FALSE(arena.is_ok());
  EXPECT_EQ(arena.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(arena.status().message(), "budget");

  options.budget_bytes = kMiB;
  options.chunk_bytes = 1000;  // not a multiple of 256
  arena = DeviceArena::create(options, std::make_unique<FakeDevice>(&record));
  ASSERT_FALSE(arena.is_ok());
  EXPECT_CONTAINS(arena.status().message(), "chunk_bytes");
}

TEST(DeviceArenaTest, ReservesNothingUntilFirstAllocation) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 4 * kMiB, kMiB);
  EXPECT_EQ(record.num_allocations, 0);
  EXPECT_EQ(arena->stats().reserved_bytes, 0);
}

TEST(DeviceArenaTest, AlignsEveryBufferAndRoundsItsSize) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 4 * kMiB, kMiB);
  DeviceBuffer a = must_allocate(*arena, 1);
  DeviceBuffer b = must_allocate(*arena, 300);
  DeviceBuffer c = must_allocate(*arena, 256);
  for (const DeviceBuffer* buffer : {&a, &b, &c}) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer->data()) % kDeviceArenaAlignmentBytes, 0u);
  }
  EXPECT_EQ(a.size_bytes(), 1);
  EXPECT_EQ(a.reserved_bytes(), 256);
  EXPECT_EQ(b.reserved_bytes(), 512);
  EXPECT_EQ(c.reserved_bytes(), 256);
  EXPECT_EQ(arena->stats().used_bytes, 1024);
  EXPECT_EQ(record.num_allocations, 1) << "all three fit in the first chunk";
}

TEST(DeviceArenaTest, NeverExceedsBudget) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 3 * kMiB, kMiB);
  std::vector<DeviceBuffer> held;
  for (int i = 0; i < 6; ++i) held.push_back(must_allocate(*arena, kMiB / 2));
  EXPECT_EQ(arena->stats().used_bytes, 3 * kMiB);
  EXPECT_EQ(record.live_bytes, 3 * kMiB);

  auto refused = arena->allocate(256, DeviceMemoryTag::kKv);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(record.live_bytes, 3 * kMiB) << "a refusal must not reserve anything";
  EXPECT_LE(arena->stats().reserved_bytes, arena->budget_bytes());
}

TEST(DeviceArenaTest, ClipsTheLastChunkToTheBudget) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, kMiB + 512 * kKiB, kMiB);
  DeviceBuffer a = must_allocate(*arena, kMiB);
  DeviceBuffer b = must_allocate(*arena, 256 * kKiB);
  ASSERT_EQ(record.allocation_sizes.size(), 2u);
  EXPECT_EQ(record.allocation_sizes[1], 512 * kKiB) << "a full chunk would break the budget";
  EXPECT_EQ(arena->stats().reserved_bytes, arena->budget_bytes());
}

TEST(DeviceArenaTest, GivesLargeRequestsAChunkOfTheirOwn) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 64 * kMiB, kMiB);
  DeviceBuffer big = must_allocate(*arena, 5 * kMiB + 1);
  ASSERT_EQ(record.allocation_sizes.size(), 1u);
  EXPECT_EQ(record.allocation_sizes[0], 5 * kMiB + 256);
}

TEST(DeviceArenaTest, ReusesFreedRanges) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 4 * kMiB, kMiB);
  DeviceBuffer a = must_allocate(*arena, 64 * kKiB);
  DeviceBuffer b = must_allocate(*arena, 64 * kKiB);
  void* a_address = a.data();
  a.reset();
  EXPECT_TRUE(a.empty());
  DeviceBuffer c = must_allocate(*arena, 64 * kKiB);
  EXPECT_EQ(c.data(), a_address) << "the freed range is the best fit";
  EXPECT_EQ(record.num_allocations, 1);
  EXPECT_EQ(record.num_frees, 0) << "freed ranges stay reserved";
}

TEST(DeviceArenaTest, PicksTheBestFittingFreeRange) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 4 * kMiB, kMiB);
  DeviceBuffer big_hole = must_allocate(*arena, 64 * kKiB);
  DeviceBuffer keep1 = must_allocate(*arena, 256);
  DeviceBuffer small_hole = must_allocate(*arena, 8 * kKiB);
  DeviceBuffer keep2 = must_allocate(*arena, 256);
  void* small_address = small_hole.data();
  big_hole.reset();
  small_hole.reset();
  DeviceBuffer fitted = must_allocate(*arena, 4 * kKiB);
  EXPECT_EQ(fitted.data(), small_address);
}

TEST(DeviceArenaTest, CoalescesNeighbours) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, kMiB, kMiB);
  DeviceBuffer a = must_allocate(*arena, 256 * kKiB);
  DeviceBuffer b = must_allocate(*arena, 256 * kKiB);
  DeviceBuffer c = must_allocate(*arena, 256 * kKiB);
  DeviceBuffer d = must_allocate(*arena, 256 * kKiB);
  EXPECT_EQ(arena->stats().num_free_ranges, 0);
  void* base = a.data();

  a.reset();
  c.reset();
  EXPECT_EQ(arena->stats().num_free_ranges, 2) << "a and c are not neighbours";
  b.reset();  // joins a (before) and c (after)
  EXPECT_EQ(arena->stats().num_free_ranges, 1);
  EXPECT_EQ(arena->stats().largest_free_range_bytes, 768 * kKiB);

  // The merged range holds what none of the three could alone, in the same chunk.
  DeviceBuffer joined = must_allocate(*arena, 768 * kKiB);
  EXPECT_EQ(joined.data(), base);
  EXPECT_EQ(record.num_allocations, 1);
  joined.reset();
  d.reset();
  EXPECT_EQ(arena->stats().num_free_ranges, 1);
  EXPECT_EQ(arena->stats().largest_free_range_bytes, kMiB);
}

TEST(DeviceArenaTest, PeakTracksHighWaterMark) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 8 * kMiB, kMiB);
  {
    DeviceBuffer w = must_allocate(*arena, 2 * kMiB, DeviceMemoryTag::kWeights);
    DeviceBuffer k = must_allocate(*arena, kMiB, DeviceMemoryTag::kKv);
    DeviceBuffer s = must_allocate(*arena, 512 * kKiB, DeviceMemoryTag::kStaging);
    const DeviceArenaStats stats = arena->stats();
    EXPECT_EQ(stats.used(DeviceMemoryTag::kWeights), 2 * kMiB);
    EXPECT_EQ(stats.used(DeviceMemoryTag::kKv), kMiB);
    EXPECT_EQ(stats.used(DeviceMemoryTag::kStaging), 512 * kKiB);
    EXPECT_EQ(stats.used(DeviceMemoryTag::kActivations), 0);
    EXPECT_EQ(stats.used_bytes, 3 * kMiB + 512 * kKiB);
    EXPECT_EQ(stats.num_buffers, 3);
  }
  DeviceBuffer a = must_allocate(*arena, kMiB, DeviceMemoryTag::kActivations);
  const DeviceArenaStats stats = arena->stats();
  EXPECT_EQ(stats.used_bytes, kMiB);
  EXPECT_EQ(stats.peak_used_bytes, 3 * kMiB + 512 * kKiB);
  EXPECT_EQ(stats.used(DeviceMemoryTag::kWeights), 0);
  EXPECT_EQ(stats.peak(DeviceMemoryTag::kWeights), 2 * kMiB);
  EXPECT_EQ(stats.peak(DeviceMemoryTag::kKv), kMiB);
  EXPECT_EQ(stats.peak(DeviceMemoryTag::kActivations), kMiB);
  EXPECT_EQ(stats.peak(DeviceMemoryTag::kWorkspace), 0);
  EXPECT_GE(stats.peak_reserved_bytes, stats.peak_used_bytes);
}

TEST(DeviceArenaTest, RefusesWithClearMessage) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 2 * kMiB, kMiB);
  DeviceBuffer w = must_allocate(*arena, kMiB + 512 * kKiB, DeviceMemoryTag::kWeights);
  auto refused = arena->allocate(kMiB, DeviceMemoryTag::kKv);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kOutOfMemory);
  const std::string& message = refused.status().message();
  EXPECT_CONTAINS(message, "1048576 bytes");        // the request
  EXPECT_CONTAINS(message, "for kv");               // its tag
  EXPECT_CONTAINS(message, "VRAM budget 2.0 MiB");  // the budget
  EXPECT_CONTAINS(message, "used 1.5 MiB");         // what is in use
  EXPECT_CONTAINS(message, "weights 1.5 MiB");      // and by whom
  std::cout << "refusal: " << refused.status().to_string() << "\n";

  auto absurd = arena->allocate(int64_t{1} << 60, DeviceMemoryTag::kWorkspace);
  ASSERT_FALSE(absurd.is_ok());
  EXPECT_CONTAINS(absurd.status().message(), "larger than the whole budget");
  EXPECT_CONTAINS(absurd.status().message(), "for workspace");

  auto zero = arena->allocate(0, DeviceMemoryTag::kKv);
  ASSERT_FALSE(zero.is_ok());
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
}

TEST(DeviceArenaTest, SaysWhenFragmentationNotTheBudgetRefuses) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 2 * kMiB, kMiB);
  std::vector<DeviceBuffer> held;
  for (int i = 0; i < 8; ++i) held.push_back(must_allocate(*arena, 256 * kKiB));
  held[1].reset();
  held[5].reset();  // 512 KiB free, in two ranges in different chunks
  auto refused = arena->allocate(512 * kKiB, DeviceMemoryTag::kActivations);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_CONTAINS(refused.status().message(), "fragmented");
  EXPECT_CONTAINS(refused.status().message(), "largest free range 256.0 KiB");
}

TEST(DeviceArenaTest, TrimsEmptyChunksToMakeRoomForALargerOne) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, 2 * kMiB, kMiB);
  {
    DeviceBuffer a = must_allocate(*arena, kMiB);
    DeviceBuffer b = must_allocate(*arena, kMiB);
  }
  EXPECT_EQ(arena->stats().reserved_bytes, 2 * kMiB) << "freed chunks stay reserved";
  DeviceBuffer whole =
      must_allocate(*arena, 2 * kMiB);  // fits in neither chunk: trim, then take all
  EXPECT_EQ(record.num_frees, 2);
  EXPECT_EQ(arena->stats().num_chunks, 1);
  whole.reset();
  EXPECT_EQ(arena->trim(), 2 * kMiB);
  EXPECT_EQ(record.live_bytes, 0);
}

TEST(DeviceArenaTest, PassesOnTheDevicesRefusal) {
  FakeDeviceRecord record;
  record.capacity_bytes = kMiB + 512 * kKiB;  // the device holds less than the budget
  auto arena = make_arena(&record, 8 * kMiB, kMiB);
  DeviceBuffer a = must_allocate(*arena, kMiB);
  DeviceBuffer b = must_allocate(*arena, 256 * kKiB);  // a full chunk fails; the exact size fits
  EXPECT_EQ(record.allocation_sizes.back(), 256 * kKiB);
  auto refused = arena->allocate(kMiB, DeviceMemoryTag::kKv);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kOutOfMemory);
  EXPECT_CONTAINS(refused.status().message(), "the device refused: cudaMalloc(1048576 bytes)");
  EXPECT_CONTAINS(refused.status().message(), "for kv");
}

TEST(DeviceArenaTest, MovedBufferReleasesOnce) {
  FakeDeviceRecord record;
  auto arena = make_arena(&record, kMiB, kMiB);
  DeviceBuffer a = must_allocate(*arena, 4 * kKiB);
  DeviceBuffer b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_EQ(arena->stats().num_buffers, 1);
  DeviceBuffer c = must_allocate(*arena, 4 * kKiB);
  c = std::move(b);  // c's old range returns
  EXPECT_EQ(arena->stats().num_buffers, 1);
  EXPECT_EQ(arena->stats().used_bytes, 4 * kKiB);
}

// Random allocations and frees of random sizes and tags; after every step the live buffers must
// not overlap, hold their own bytes, and add up to the arena's accounting within the budget.
TEST(DeviceArenaTest, RandomAllocFreeKeepsInvariants) {
  const uint32_t seed = std::random_device{}();
  std::cout << "RandomAllocFreeKeepsInvariants seed: " << seed << "\n";
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);

  FakeDeviceRecord record;
  const int64_t budget = 6 * kMiB + 768 * kKiB;
  auto arena = make_arena(&record, budget, kMiB);
  struct Live {
    DeviceBuffer buffer;
    uint8_t fill;
  };
  std::vector<Live> live;
  std::array<int64_t, kNumDeviceMemoryTags> peak_by_tag{};

  for (int step = 0; step < 4000; ++step) {
    const bool do_alloc = live.empty() || rng() % 100 < 55;
    if (do_alloc) {
      // Mostly small, sometimes chunk-sized or larger.
      const int64_t size = rng() % 10 == 0 ? 1 + rng() % (2 * kMiB) : 1 + rng() % (64 * kKiB);
      const auto tag = static_cast<DeviceMemoryTag>(rng() % kNumDeviceMemoryTags);
      auto buffer = arena->allocate(size, tag);
      if (!buffer.is_ok()) {
        ASSERT_EQ(buffer.status().code(), StatusCode::kOutOfMemory) << buffer.status().to_string();
        continue;
      }
      const uint8_t fill = static_cast<uint8_t>(rng());
      std::memset(buffer->data(), fill, static_cast<size_t>(size));
      live.push_back({std::move(buffer).value(), fill});
    } else {
      const size_t victim = rng() % live.size();
      const Live& l = live[victim];
      for (int64_t i = 0; i < l.buffer.size_bytes(); i += 97) {
        ASSERT_EQ(static_cast<uint8_t>(bytes(l.buffer)[i]), l.fill) << "step " << step;
      }
      live.erase(live.begin() + static_cast<ptrdiff_t>(victim));
    }

    const DeviceArenaStats stats = arena->stats();
    std::array<int64_t, kNumDeviceMemoryTags> used_by_tag{};
    int64_t used = 0;
    std::vector<std::pair<uintptr_t, int64_t>> ranges;
    for (const Live& l : live) {
      ASSERT_EQ(reinterpret_cast<uintptr_t>(l.buffer.data()) % kDeviceArenaAlignmentBytes, 0u);
      used += l.buffer.reserved_bytes();
      used_by_tag[static_cast<int>(l.buffer.tag())] += l.buffer.reserved_bytes();
      ranges.emplace_back(reinterpret_cast<uintptr_t>(l.buffer.data()), l.buffer.reserved_bytes());
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      ASSERT_LE(ranges[i - 1].first + ranges[i - 1].second, ranges[i].first) << "step " << step;
    }
    ASSERT_EQ(stats.used_bytes, used) << "step " << step;
    ASSERT_EQ(stats.num_buffers, static_cast<int64_t>(live.size()));
    for (int t = 0; t < kNumDeviceMemoryTags; ++t) {
      ASSERT_EQ(stats.used_bytes_by_tag[t], used_by_tag[t]);
      peak_by_tag[t] = std::max(peak_by_tag[t], used_by_tag[t]);
      ASSERT_EQ(stats.peak_bytes_by_tag[t], peak_by_tag[t]);
    }
    ASSERT_LE(stats.used_bytes, stats.reserved_bytes);
    ASSERT_LE(stats.reserved_bytes, budget);
    ASSERT_EQ(record.live_bytes, stats.reserved_bytes);
  }

  live.clear();
  const DeviceArenaStats stats = arena->stats();
  EXPECT_EQ(stats.used_bytes, 0);
  EXPECT_EQ(stats.num_free_ranges, stats.num_chunks) << "every chunk coalesced back to one range";
  arena->trim();
  EXPECT_EQ(record.live_bytes, 0);
}

}  // namespace
}  // namespace strata
