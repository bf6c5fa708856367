// KvCache: the paged KV cache of a session, one BlockPool plus the BlockTable of every live
// sequence. It is the only thing the executor talks to about KV memory; kernels see it only
// through KvLayerView and KvRowPtrs (memory/kv_view.h).
//
// Memory follows the tokens held: a sequence takes a block when its first token that does not fit
// arrives, and gives its blocks back when it is removed; freed blocks are reused before any new
// memory is taken, and nothing is reserved for the maximum context.
//
// Example usage (one decode step of sequence `seq`):
//   STRATA_ASSIGN_OR_RETURN(int64_t pos, cache.reserve_slots(seq, 1));   // slot for the new token
//   for (int64_t layer = 0; layer < n_layer; ++layer) {
//     KvRowPtrs row = cache.rows(seq, layer, pos);        // store this token's K and V here
//     ...
//     KvLayerView kv = cache.layer_view(seq, layer);      // attend over tokens [0, pos]
//   }
//   ...
//   STRATA_RETURN_IF_ERROR(cache.remove_sequence(seq));   // the sequence is done
//
// Not thread-safe: one scheduler thread owns the cache; kernels may read views concurrently as long
// as no call changes the sequences they read.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "memory/block_pool.h"
#include "memory/block_table.h"
#include "memory/kv_layout.h"
#include "memory/kv_slab_allocator.h"
#include "memory/kv_view.h"
#include "memory/prefix_cache.h"
#include "offload/core/status.h"

namespace strata {

using SeqId = int64_t;

struct KvCacheConfig {
  KvLayout layout;
  // The budget in blocks (required, > 0); max_blocks_for_bytes turns a byte budget into blocks.
  int64_t max_blocks = 0;
  // Blocks per allocation (see BlockPoolConfig); default 1: memory grows one block at a time.
  int64_t blocks_per_slab = 1;

  // The most whole blocks of `layout` that fit in `budget_bytes`.
  static int64_t max_blocks_for_bytes(const KvLayout& layout, int64_t budget_bytes) {
    return budget_bytes / layout.block_bytes();
  }
};

// What `strata run` reports about KV memory.
struct KvCacheStats {
  int64_t num_sequences = 0;
  int64_t num_tokens = 0;         // held by all sequences together
  int64_t num_used_blocks = 0;    // held by a sequence
  int64_t num_free_blocks = 0;    // backed by memory and waiting for reuse
  int64_t max_blocks = 0;         // the budget
  int64_t block_bytes = 0;        // one block: K and V of every layer
  int64_t used_bytes = 0;         // num_used_blocks * block_bytes
  int64_t peak_used_bytes = 0;    // the most used_bytes since the cache was created
  int64_t allocated_bytes = 0;    // taken from the tier; never shrinks, so it is also the peak
  int64_t budget_bytes = 0;       // max_blocks * block_bytes
  int64_t num_shared_blocks = 0;  // held by more than one sequence (a shared prompt prefix)
  int64_t num_prefix_blocks = 0;  // full blocks other sequences may share (PrefixCache)
};

class KvCache {
 public:
  // invalid_argument when the config is invalid.
  static StatusOr<std::unique_ptr<KvCache>> create(
      const KvCacheConfig& config,
      std::unique_ptr<KvSlabAllocator> allocator = make_host_kv_slab_allocator());
  ~KvCache();  // gives back every sequence's blocks, then the pool frees its slabs
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // invalid_argument if `seq` is already there. A new sequence holds no tokens and no blocks.
  Status add_sequence(SeqId seq);
  // Gives the sequence's blocks back to the pool. not_found if `seq` is not there.
  Status remove_sequence(SeqId seq);
  bool has_sequence(SeqId seq) const { return sequences_.count(seq) != 0; }
  int64_t num_sequences() const { return static_cast<int64_t>(sequences_.size()); }

  // Slots for `num_new_tokens` more tokens of `seq`: positions [first, first + num_new_tokens),
  // where `first` (returned) is the sequence's length before the call. Takes blocks as needed.
  // All or nothing: on out_of_memory (the message names the sequence and the budget) the sequence
  // is unchanged. not_found for an unknown sequence, invalid_argument for a negative count.
  StatusOr<int64_t> reserve_slots(SeqId seq, int64_t num_new_tokens);

  // REQUIRES for the accessors below: has_sequence(seq), 0 <= layer < layout().n_layer.
  int64_t num_tokens(SeqId seq) const { return sequence(seq).table.num_tokens(); }
  const BlockTable& block_table(SeqId seq) const { return sequence(seq).table; }
  // The blocks of `seq` in `layer`, for attention; valid until `seq` changes.
  KvLayerView layer_view(SeqId seq, int64_t layer) const;
  // Where token `position` of `seq` stores its K and V in `layer`.
  // REQUIRES: 0 <= position < num_tokens(seq)
  KvRowPtrs rows(SeqId seq, int64_t layer, int64_t position) const;

  // Prefix sharing (prefix_cache.h). The caller records the token ids of positions whose K and V
  // it has stored, in order (pos0 = the tokens committed so far); every block they fill becomes
  // shareable. invalid_argument for positions out of order or past num_tokens(seq).
  Status commit_tokens(SeqId seq, int64_t pos0, std::span<const int32_t> ids);
  // For a sequence that holds no tokens yet: attaches the longest run of full blocks that other
  // live sequences hold for the start of `prompt`, stopping before its last token (whose logits
  // the caller computes). Returns the tokens attached; their K and V need not be computed again.
  StatusOr<int64_t> attach_prefix(SeqId seq, std::span<const int32_t> prompt);

  KvCacheStats stats() const;
  // internal error naming the first broken invariant: the pool's, and that a block shared by
  // several sequences is full in each of them (a sequence only ever writes its own blocks).
  Status check_invariants() const;
  const KvLayout& layout() const { return pool_->layout(); }
  const BlockPool& pool() const { return *pool_; }

 private:
  struct Sequence {
    explicit Sequence(const KvLayout& layout)
        : table(layout.block_tokens),
          k_blocks(static_cast<size_t>(layout.n_layer)),
          v_blocks(static_cast<size_t>(layout.n_layer)) {}

    BlockTable table;
    std::vector<int32_t> tokens;       // committed token ids, positions 0 ..
    std::vector<uint64_t> block_keys;  // PrefixCache keys of the full committed blocks
    // The memory of table's blocks per layer, in token order: what layer_view hands to kernels.
    std::vector<std::vector<void*>> k_blocks;  // [n_layer][num_blocks]
    std::vector<std::vector<void*>> v_blocks;  // [n_layer][num_blocks]
  };

  explicit KvCache(std::unique_ptr<BlockPool> pool) : pool_(std::move(pool)) {}
  const Sequence& sequence(SeqId seq) const;

  // Adds the memory of table blocks [first, num_blocks) to the per-layer views.
  void push_block_views(Sequence& sequence, int64_t first);

  std::unique_ptr<BlockPool> pool_;
  std::unordered_map<SeqId, Sequence> sequences_;
  PrefixCache prefixes_;
};

}  // namespace strata
