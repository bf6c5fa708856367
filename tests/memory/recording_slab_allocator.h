// A KvSlabAllocator for tests that records what the pool asked for (LevelDB-style recording fake):
// every allocate and release, the bytes outstanding, and, on request, refuses allocations.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "memory/kv_slab_allocator.h"

namespace strata::testing {

struct SlabRecord {
  int64_t num_allocate_calls = 0;
  int64_t num_release_calls = 0;
  int64_t outstanding_bytes = 0;
  std::vector<int64_t> allocated_sizes;  // in call order
  int64_t fail_after_allocations = -1;   // refuse once this many allocations succeeded (-1: never)
};

class RecordingSlabAllocator final : public KvSlabAllocator {
 public:
  // `record` must outlive the allocator (the pool owns the allocator, the test owns the record).
  // `tier` is what the pool reports; the memory is host memory either way.
  explicit RecordingSlabAllocator(SlabRecord* record, KvTier tier = KvTier::kHost)
      : record_(record), tier_(tier) {}

  KvTier tier() const override { return tier_; }

  StatusOr<std::byte*> allocate(int64_t size_bytes) override {
    if (record_->fail_after_allocations >= 0 &&
        record_->num_allocate_calls >= record_->fail_after_allocations) {
      return Status::out_of_memory("recording allocator: refused as the test asked");
    }
    ++record_->num_allocate_calls;
    record_->outstanding_bytes += size_bytes;
    record_->allocated_sizes.push_back(size_bytes);
    const auto rounded = static_cast<size_t>((size_bytes + kKvSlabAlignmentBytes - 1) /
                                             kKvSlabAlignmentBytes * kKvSlabAlignmentBytes);
    return static_cast<std::byte*>(std::aligned_alloc(kKvSlabAlignmentBytes, rounded));
  }

  void release(std::byte* data, int64_t size_bytes) override {
    ++record_->num_release_calls;
    record_->outstanding_bytes -= size_bytes;
    std::free(data);
  }

 private:
  SlabRecord* record_;
  KvTier tier_;
};

inline std::unique_ptr<KvSlabAllocator> recording_allocator(SlabRecord* record,
                                                            KvTier tier = KvTier::kHost) {
  return std::make_unique<RecordingSlabAllocator>(record, tier);
}

}  // namespace strata::testing
