#include "memory/prefix_cache.h"

#include <algorithm>

namespace strata {

uint64_t PrefixCache::chain(uint64_t parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent key and the token ids, then a final mix; 0 is kept for "no parent".
  uint64_t h = 1469598103934665603ull ^ parent;
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(parent);
  for (int32_t t : tokens) mix(static_cast<uint32_t>(t));
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h == 0 ? 1 : h;
}

void PrefixCache::insert(uint64_t key, uint64_t parent, std::span<const int32_t> tokens,
                         int32_t block_id) {
  if (entries_.count(key) != 0 || key_of_block_.count(block_id) != 0) return;
  entries_[key] = Entry{block_id, parent, std::vector<int32_t>(tokens.begin(), tokens.end())};
  key_of_block_[block_id] = key;
}

int32_t PrefixCache::find(uint64_t key, uint64_t parent, std::span<const int32_t> tokens) const {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.parent != parent ||
      !std::equal(tokens.begin(), tokens.end(), it->second.tokens.begin(),
                  it->second.tokens.end())) {
    return -1;
  }
  return it->second.block_id;
}

void PrefixCache::erase_block(int32_t block_id) {
  auto it = key_of_block_.find(block_id);
  if (it == key_of_block_.end()) return;
  entries_.erase(it->second);
  key_of_block_.erase(it);
}

void PrefixCache::rename_block(int32_t old_id, int32_t new_id) {
  auto it = key_of_block_.find(old_id);
  if (it == key_of_block_.end()) return;
  const uint64_t key = it->second;
  key_of_block_.erase(it);
  key_of_block_[new_id] = key;
  entries_[key].block_id = new_id;
}

}  // namespace strata
