// BlockTable: the blocks of one sequence, in token order. Token t lives in block
// block_ids()[t / block_tokens] at row t % block_tokens; the table grows a block at a time as
// tokens arrive and gives all its blocks back when the sequence ends.
//
// The table does not own its blocks: the BlockPool does. The owner of the table (KvCache) must call
// release() before dropping it, or the blocks stay in use.
// Not thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "memory/block_pool.h"
#include "offload/core/status.h"

namespace strata {

// Where one token lives: a block and a row in it.
struct KvSlot {
  int32_t block_id = -1;
  int64_t row = 0;  // 0 .. block_tokens - 1

  friend bool operator==(const KvSlot&, const KvSlot&) = default;
};

class BlockTable {
 public:
  explicit BlockTable(int64_t block_tokens) : block_tokens_(block_tokens) {}

  // Makes room for `num_new_tokens` more tokens, taking the blocks this needs from `pool`.
  // All or nothing: on out_of_memory the table is unchanged. REQUIRES: num_new_tokens >= 0
  Status append_tokens(int64_t num_new_tokens, BlockPool& pool);

  // Appends blocks held by another sequence (a shared prefix: full blocks only); the caller has
  // taken a reference to each (BlockPool::share_blocks). internal error unless the table holds
  // whole blocks (num_tokens() % block_tokens() == 0).
  Status append_shared(std::span<const int32_t> block_ids);
  // Block `index` now lives at `block_id` (a move between tiers; the caller moved the memory and
  // the references). REQUIRES: 0 <= index < num_blocks()
  void replace_block(int64_t index, int32_t block_id) { block_ids_[index] = block_id; }
  // Forgets every block without freeing any (the caller frees them, e.g. into several pools).
  void clear() {
    block_ids_.clear();
    num_tokens_ = 0;
  }

  // Gives every block back to `pool`, last block first, and empties the table.
  Status release(BlockPool& pool);

  int64_t block_tokens() const { return block_tokens_; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_blocks() const { return static_cast<int64_t>(block_ids_.size()); }
  std::span<const int32_t> block_ids() const { return block_ids_; }

  // REQUIRES: 0 <= token < num_tokens()
  KvSlot slot(int64_t token) const {
    return KvSlot{block_ids_[token / block_tokens_], token % block_tokens_};
  }

 private:
  int64_t block_tokens_;
  int64_t num_tokens_ = 0;
  std::vector<int32_t> block_ids_;
};

}  // namespace strata
