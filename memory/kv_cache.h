// KvCache: the paged KV cache of a session, one BlockPool per tier plus the BlockTable of every
// live sequence. It is the only thing the executor talks to about KV memory; kernels see it only
// through KvLayerView and KvRowPtrs (memory/kv_view.h).
//
// Tiers (issue 6): with a cold tier configured, blocks are taken from the hot pool (VRAM in a
// GPU run) and demote_cold() moves a sequence's blocks that left its hot window (the last
// hot_window_tokens tokens) to the cold pool (pinned host), except the first sink_blocks blocks
// and blocks other sequences share. A block's id says its tier (kColdBlockTag); the views hold
// the memory of each block wherever it is, and block_tier() says where. Moves copy through an
// injected KvBlockMover (a memcpy in tests, a device-to-host copy in a GPU run).
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

#include <algorithm>
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

// Copies block memory between tiers. A block's K (or V) is one run of layer_block_bytes per
// layer, `pitch` bytes apart, and the pitch depends on the slab the block lies in (a slab of N
// blocks strides layers by N blocks), so the two tiers' pitches differ: a copy is `rows` runs
// of `row_bytes`, run i from src + i * src_pitch to dst + i * dst_pitch. Copies may be queued
// (a DMA engine); wait() returns once every queued copy is done. demote_cold frees the source
// blocks only after wait().
class KvBlockMover {
 public:
  virtual ~KvBlockMover() = default;
  virtual Status copy(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch,
                      int64_t row_bytes, int64_t rows) = 0;
  virtual Status wait() { return Status::ok(); }
};

// A KvBlockMover for tiers that are both host memory (the CPU executor's): std::memcpy.
std::unique_ptr<KvBlockMover> make_memcpy_kv_block_mover();

// Which blocks of a sequence stay in the hot tier.
struct KvTiering {
  int64_t cold_max_blocks = 0;    // the cold tier's budget in blocks; 0: one tier only
  int64_t hot_window_tokens = 0;  // the most recent tokens whose blocks stay hot
  int64_t sink_blocks = 0;        // the first blocks of every sequence stay hot

  // True when block `index` of a sequence holding `num_tokens` tokens must stay hot: a sink, in
  // the hot window, or not full yet (the sequence still writes it).
  bool stays_hot(int64_t index, int64_t num_tokens, int64_t block_tokens) const {
    if (index < sink_blocks || (index + 1) * block_tokens > num_tokens) return true;
    const int64_t first_hot = std::max<int64_t>(0, num_tokens - hot_window_tokens);
    return (index + 1) * block_tokens > first_hot;
  }
};

// Block ids of the cold pool carry this bit.
inline constexpr int32_t kColdBlockTag = int32_t{1} << 30;

struct KvCacheConfig {
  KvLayout layout;
  KvTiering tiering;
  // The budget in blocks (required, > 0); max_blocks_for_bytes turns a byte budget into blocks.
  int64_t max_blocks = 0;
  // Blocks per allocation (see BlockPoolConfig); default 1: memory grows one block at a time.
  int64_t blocks_per_slab = 1;
  // The same for the cold tier. A GPU run's cold blocks are pinned, and pinning costs about a
  // millisecond per call: one 2 MiB block per call would add seconds to a 128k-token prefill.
  int64_t cold_blocks_per_slab = 1;

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
  // The cold tier (zero without one); the fields above are the hot tier's.
  int64_t cold_used_blocks = 0;
  int64_t cold_used_bytes = 0;
  int64_t cold_peak_used_bytes = 0;
  int64_t cold_allocated_bytes = 0;
};

class KvCache {
 public:
  // invalid_argument when the config is invalid (a cold tier needs its allocator and a mover).
  static StatusOr<std::unique_ptr<KvCache>> create(
      const KvCacheConfig& config,
      std::unique_ptr<KvSlabAllocator> allocator = make_host_kv_slab_allocator(),
      std::unique_ptr<KvSlabAllocator> cold_allocator = nullptr,
      std::unique_ptr<KvBlockMover> mover = nullptr);
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

  // Moves the blocks of `seq` that KvTiering no longer keeps hot to the cold tier; returns how
  // many moved. out_of_memory when the cold tier is full (the blocks moved so far stay moved).
  // Without a cold tier: nothing moves.
  StatusOr<int64_t> demote_cold(SeqId seq);
  // How many blocks of `seq` demote_cold has moved so far: a copy of the block table (the GPU
  // executor's, in VRAM) is stale when this changed since it was made.
  int64_t blocks_moved(SeqId seq) const { return sequence(seq).blocks_moved; }
  // Where block `index` of `seq` lives. REQUIRES: 0 <= index < block_table(seq).num_blocks()
  KvTier block_tier(SeqId seq, int64_t index) const;
  const KvTiering& tiering() const { return tiering_; }

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
    int64_t blocks_moved = 0;                  // by demote_cold
  };

  KvCache(std::unique_ptr<BlockPool> pool, std::unique_ptr<BlockPool> cold,
          std::unique_ptr<KvBlockMover> mover, const KvTiering& tiering)
      : pool_(std::move(pool)),
        cold_(std::move(cold)),
        mover_(std::move(mover)),
        tiering_(tiering) {}
  const Sequence& sequence(SeqId seq) const;
  // The pool a (tagged) block id belongs to, and the block.
  BlockPool& pool_of(int32_t id) const { return (id & kColdBlockTag) ? *cold_ : *pool_; }
  const KvBlock& block_of(int32_t id) const { return pool_of(id).block(id & ~kColdBlockTag); }
  // Takes one more reference to each block, in its own pool.
  Status share(std::span<const int32_t> ids);
  // Gives the sequence's blocks back, last first, each to its pool; forgets the freed ones as
  // prefixes.
  Status release(Sequence& sequence);

  // Adds the memory of table blocks [first, num_blocks) to the per-layer views.
  void push_block_views(Sequence& sequence, int64_t first);

  std::unique_ptr<BlockPool> pool_;  // the hot tier
  std::unique_ptr<BlockPool> cold_;  // null without a cold tier
  std::unique_ptr<KvBlockMover> mover_;
  KvTiering tiering_;
  std::unordered_map<SeqId, Sequence> sequences_;
  PrefixCache prefixes_;
};

}  // namespace strata
