// KV slabs in page-locked host memory, the cold tier of a GPU run (see kv_slab_allocator.h).
#include <map>

#include "memory/kv_slab_allocator.h"
#include "memory/pinned_host_pool.h"

namespace strata {
namespace {

class PinnedHostKvSlabAllocator final : public KvSlabAllocator {
 public:
  explicit PinnedHostKvSlabAllocator(PinnedHostPool& pool) : pool_(pool) {}
  ~PinnedHostKvSlabAllocator() override { slabs_.clear(); }  // back to the pool

  KvTier tier() const override { return KvTier::kHost; }

  StatusOr<std::byte*> allocate(int64_t size_bytes) override {
    StatusOr<HostBuffer> buffer = pool_.allocate(size_bytes);
    if (!buffer.is_ok()) {
      return Status(buffer.status().code(), "cold KV tier: " + buffer.status().message());
    }
    if (!buffer->pinned()) {
      return Status::out_of_memory(
          "cold KV tier: pinning " + std::to_string(size_bytes) +
          " bytes was refused, and the GPU cannot read pageable KV blocks; lower the context or "
          "raise the locked-memory limit");
    }
    auto* data = static_cast<std::byte*>(buffer->data());
    slabs_.emplace(data, std::move(buffer).value());
    return data;
  }

  void release(std::byte* data, int64_t /*size_bytes*/) override { slabs_.erase(data); }

 private:
  PinnedHostPool& pool_;
  std::map<std::byte*, HostBuffer> slabs_;
};

}  // namespace

std::unique_ptr<KvSlabAllocator> make_pinned_host_kv_slab_allocator(PinnedHostPool& pool) {
  return std::make_unique<PinnedHostKvSlabAllocator>(pool);
}

}  // namespace strata
