// KvSlabAllocator: where a BlockPool gets the memory for its blocks, one slab of one or more blocks
// at a time, in one tier: host memory (mimalloc) for the CPU path, or slabs carved from the VRAM
// arena for the GPU path, so that KV blocks count against --vram-budget.
//
// A slab is requested only when a block is first needed and is released only when the pool is
// destroyed: freed blocks are reused, never returned, so a steady workload allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "memory/kv_block.h"
#include "offload/core/status.h"

namespace strata {

// Slabs are aligned for the widest vector loads of the CPU kernels (AVX-512: 64 bytes).
inline constexpr int64_t kKvSlabAlignmentBytes = 64;

class KvSlabAllocator {
 public:
  virtual ~KvSlabAllocator() = default;

  virtual KvTier tier() const = 0;
  // `size_bytes` of uninitialised memory aligned to kKvSlabAlignmentBytes, or out_of_memory.
  virtual StatusOr<std::byte*> allocate(int64_t size_bytes) = 0;
  // REQUIRES: data came from allocate(size_bytes) of this allocator and was not released yet.
  virtual void release(std::byte* data, int64_t size_bytes) = 0;
};

// Host memory through mimalloc.
std::unique_ptr<KvSlabAllocator> make_host_kv_slab_allocator();

class PinnedHostPool;
// Page-locked host memory from `pool`, the cold tier of a GPU run: the GPU's attention reads its
// blocks in place (their host addresses are device addresses under unified addressing) and
// demotion copies into them by DMA. A slab the pool could only give as pageable memory is an
// error (out_of_memory naming the cold tier), never a silent fallback: the GPU cannot read it.
// REQUIRES: the pool outlives the allocator.
std::unique_ptr<KvSlabAllocator> make_pinned_host_kv_slab_allocator(PinnedHostPool& pool);

class DeviceArena;
// VRAM from `arena` (tag kKv), so KV blocks count against --vram-budget. The memory is device
// memory: only GPU kernels may touch it. REQUIRES: the arena outlives the allocator.
std::unique_ptr<KvSlabAllocator> make_device_kv_slab_allocator(DeviceArena& arena);

}  // namespace strata
