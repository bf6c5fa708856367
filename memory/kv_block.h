// KvBlock: the metadata of one block of the paged KV cache (the memory itself lives in a slab of
// a tier). Like vLLM's KVCacheBlock it carries its id, a reference count and the links of the free
// queue, so that freeing and reusing a block moves no memory and allocates nothing.
//
// Invariants (kept by BlockPool):
//   ref_count == 0  <=>  the block is in the pool's free queue (prev_free/next_free are set)
//   block_id is the block's index in its pool and is the same for every layer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace strata {

// Where a block's memory lives: the tier of the pool it came from (KvSlabAllocator::tier()). A
// KvCache with a cold tier keeps its hot pool in VRAM and moves old blocks to a host pool
// (KvCache::demote_cold); a moved block gets a new id in the other pool.
enum class KvTier : uint8_t {
  kHost,    // host memory (mimalloc today; pinned for DMA once the device tier exists)
  kDevice,  // VRAM, from the device arena
};

inline const char* kv_tier_name(KvTier tier) { return tier == KvTier::kHost ? "host" : "device"; }

struct KvBlock {
  int32_t block_id = -1;
  int32_t ref_count = 0;  // sequences holding the block (> 1 once prefixes are shared)
  KvTier tier = KvTier::kHost;

  // K of layer l is k_data + l * layer_stride_bytes: [block_tokens][kv_dim]; V likewise.
  std::byte* k_data = nullptr;
  std::byte* v_data = nullptr;
  int64_t layer_stride_bytes = 0;

  // Links of the FreeBlockQueue; both null while the block is in use.
  KvBlock* prev_free = nullptr;
  KvBlock* next_free = nullptr;

  std::byte* k_layer(int64_t layer) const { return k_data + layer * layer_stride_bytes; }
  std::byte* v_layer(int64_t layer) const { return v_data + layer * layer_stride_bytes; }
};

}  // namespace strata
