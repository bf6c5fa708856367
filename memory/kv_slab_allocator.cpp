#include "memory/kv_slab_allocator.h"

#include <mimalloc.h>

#include <string>

namespace strata {
namespace {

class HostKvSlabAllocator final : public KvSlabAllocator {
 public:
  KvTier tier() const override { return KvTier::kHost; }

  StatusOr<std::byte*> allocate(int64_t size_bytes) override {
    void* data = mi_malloc_aligned(static_cast<size_t>(size_bytes), kKvSlabAlignmentBytes);
    if (data == nullptr) {
      return Status::out_of_memory("KV cache: host allocation of " + std::to_string(size_bytes) +
                                   " bytes for a slab of KV blocks failed");
    }
    return static_cast<std::byte*>(data);
  }

  void release(std::byte* data, int64_t /*size_bytes*/) override { mi_free(data); }
};

}  // namespace

std::unique_ptr<KvSlabAllocator> make_host_kv_slab_allocator() {
  return std::make_unique<HostKvSlabAllocator>();
}

}  // namespace strata
