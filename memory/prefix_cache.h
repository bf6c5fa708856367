// PrefixCache: which KV blocks hold which prompt prefixes, so that sequences that start with the
// same tokens (a common system prompt) share those blocks instead of computing and storing them
// again (vLLM's prefix caching, by hashed full blocks).
//
// Only full blocks are shared: a full block is never written again, so sharing it needs no copy;
// the block a sequence writes next is always its own (KvCache::attach_prefix stops before the
// last, partial block). A block is keyed by a chain hash over its tokens and its parent's hash,
// and the tokens are compared on lookup, so a hash collision never hands out the wrong block.
// Entries live while some sequence holds the block; KvCache erases a block when it goes back to
// the pool.
// Not thread-safe: the KvCache that owns it is not.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace strata {

class PrefixCache {
 public:
  // The key of a full block with `tokens` after the block whose key is `parent` (0: the first).
  static uint64_t chain(uint64_t parent, std::span<const int32_t> tokens);

  // Records that `block_id` holds `tokens` after `parent`, unless another block holds them.
  void insert(uint64_t key, uint64_t parent, std::span<const int32_t> tokens, int32_t block_id);
  // The block holding `tokens` after `parent`, or -1.
  int32_t find(uint64_t key, uint64_t parent, std::span<const int32_t> tokens) const;
  // Forgets `block_id` if it is an entry.
  void erase_block(int32_t block_id);
  // The entry of `old_id` (if any) now names `new_id` (the block moved between tiers).
  void rename_block(int32_t old_id, int32_t new_id);

  int64_t size() const { return static_cast<int64_t>(entries_.size()); }

 private:
  struct Entry {
    int32_t block_id = -1;
    uint64_t parent = 0;
    std::vector<int32_t> tokens;
  };
  std::unordered_map<uint64_t, Entry> entries_;
  std::unordered_map<int32_t, uint64_t> key_of_block_;
};

}  // namespace strata
