// KV slabs in VRAM, carved from the device arena (see kv_slab_allocator.h).
#include <map>

#include "memory/device_arena.h"
#include "memory/kv_slab_allocator.h"

namespace strata {
namespace {

class DeviceKvSlabAllocator final : public KvSlabAllocator {
 public:
  explicit DeviceKvSlabAllocator(DeviceArena& arena) : arena_(arena) {}
  ~DeviceKvSlabAllocator() override { slabs_.clear(); }  // back to the arena

  KvTier tier() const override { return KvTier::kDevice; }

  StatusOr<std::byte*> allocate(int64_t size_bytes) override {
    StatusOr<DeviceBuffer> buffer = arena_.allocate(size_bytes, DeviceMemoryTag::kKv);
    if (!buffer.is_ok()) {
      return Status(buffer.status().code(), "KV cache: " + buffer.status().message());
    }
    auto* data = static_cast<std::byte*>(buffer->data());
    slabs_.emplace(data, std::move(buffer).value());
    return data;
  }

  void release(std::byte* data, int64_t /*size_bytes*/) override { slabs_.erase(data); }

 private:
  DeviceArena& arena_;
  std::map<std::byte*, DeviceBuffer> slabs_;  // the arena ranges behind the slabs handed out
};

}  // namespace

std::unique_ptr<KvSlabAllocator> make_device_kv_slab_allocator(DeviceArena& arena) {
  return std::make_unique<DeviceKvSlabAllocator>(arena);
}

}  // namespace strata
