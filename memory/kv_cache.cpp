#include "memory/kv_cache.h"

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

namespace strata {
namespace {

class MemcpyKvBlockMover final : public KvBlockMover {
 public:
  Status copy(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t row_bytes,
              int64_t rows) override {
    for (int64_t i = 0; i < rows; ++i) {
      std::memcpy(static_cast<std::byte*>(dst) + i * dst_pitch,
                  static_cast<const std::byte*>(src) + i * src_pitch,
                  static_cast<size_t>(row_bytes));
    }
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<KvBlockMover> make_memcpy_kv_block_mover() {
  return std::make_unique<MemcpyKvBlockMover>();
}

StatusOr<std::unique_ptr<KvCache>> KvCache::create(const KvCacheConfig& config,
                                                   std::unique_ptr<KvSlabAllocator> allocator,
                                                   std::unique_ptr<KvSlabAllocator> cold_allocator,
                                                   std::unique_ptr<KvBlockMover> mover) {
  BlockPoolConfig pool_config;
  pool_config.layout = config.layout;
  pool_config.max_blocks = config.max_blocks;
  pool_config.blocks_per_slab = config.blocks_per_slab;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<BlockPool> pool,
                          BlockPool::create(pool_config, std::move(allocator)));
  std::unique_ptr<BlockPool> cold;
  const KvTiering& t = config.tiering;
  if (t.cold_max_blocks < 0 || t.hot_window_tokens < 0 || t.sink_blocks < 0) {
    return Status::invalid_argument("KV cache: negative tiering value");
  }
  if (t.cold_max_blocks > 0) {
    if (cold_allocator == nullptr || mover == nullptr) {
      return Status::invalid_argument("KV cache: a cold tier needs its allocator and a mover");
    }
    if (config.max_blocks >= kColdBlockTag || t.cold_max_blocks >= kColdBlockTag) {
      return Status::invalid_argument("KV cache: too many blocks for tagged ids");
    }
    BlockPoolConfig cold_config = pool_config;
    cold_config.max_blocks = t.cold_max_blocks;
    cold_config.blocks_per_slab = config.cold_blocks_per_slab;
    STRATA_ASSIGN_OR_RETURN(cold, BlockPool::create(cold_config, std::move(cold_allocator)));
  }
  return std::unique_ptr<KvCache>(
      new KvCache(std::move(pool), std::move(cold), std::move(mover), config.tiering));
}

KvCache::~KvCache() {
  for (auto& [seq, sequence] : sequences_) {
    Status status = release(sequence);
    assert(status.is_ok() && "KV cache: releasing a sequence at shutdown failed");
    (void)status;
  }
}

Status KvCache::release(Sequence& sequence) {
  std::vector<int32_t> ids(sequence.table.block_ids().begin(), sequence.table.block_ids().end());
  sequence.table.clear();
  // Last block first, as vLLM does: the tail is the part least likely to be shared, so it should
  // be the first to be reused.
  Status status = Status::ok();
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    const int32_t raw = *it & ~kColdBlockTag;
    Status s = pool_of(*it).free_blocks(std::span(&raw, 1));
    if (!s.is_ok() && status.is_ok()) status = s;
    // A block no sequence holds any more is no longer a prefix anyone can share.
    if (s.is_ok() && block_of(*it).ref_count == 0) prefixes_.erase_block(*it);
  }
  return status;
}

Status KvCache::share(std::span<const int32_t> ids) {
  for (int32_t id : ids) {
    const int32_t raw = id & ~kColdBlockTag;
    STRATA_RETURN_IF_ERROR(pool_of(id).share_blocks(std::span(&raw, 1)));
  }
  return Status::ok();
}

const KvCache::Sequence& KvCache::sequence(SeqId seq) const {
  auto it = sequences_.find(seq);
  assert(it != sequences_.end() && "KV cache: unknown sequence");
  return it->second;
}

Status KvCache::add_sequence(SeqId seq) {
  if (has_sequence(seq)) {
    return Status::invalid_argument("KV cache: sequence " + std::to_string(seq) +
                                    " already exists");
  }
  sequences_.emplace(seq, Sequence(layout()));
  return Status::ok();
}

Status KvCache::remove_sequence(SeqId seq) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return Status::not_found("KV cache: cannot remove sequence " + std::to_string(seq) +
                             ": no such sequence");
  }
  Status status = release(it->second);
  sequences_.erase(it);
  return status;
}

StatusOr<int64_t> KvCache::reserve_slots(SeqId seq, int64_t num_new_tokens) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return Status::not_found("KV cache: cannot reserve slots for sequence " + std::to_string(seq) +
                             ": no such sequence");
  }
  if (num_new_tokens < 0) {
    return Status::invalid_argument("KV cache: cannot reserve " + std::to_string(num_new_tokens) +
                                    " slots for sequence " + std::to_string(seq));
  }
  Sequence& sequence = it->second;
  const int64_t first_position = sequence.table.num_tokens();
  const int64_t old_num_blocks = sequence.table.num_blocks();
  Status status = sequence.table.append_tokens(num_new_tokens, *pool_);
  if (!status.is_ok()) {
    return Status(status.code(), status.message() + " (sequence " + std::to_string(seq) +
                                     " growing from " + std::to_string(first_position) + " to " +
                                     std::to_string(first_position + num_new_tokens) + " tokens)");
  }
  push_block_views(sequence, old_num_blocks);
  return first_position;
}

void KvCache::push_block_views(Sequence& sequence, int64_t first) {
  const std::span<const int32_t> block_ids = sequence.table.block_ids();
  for (int64_t b = first; b < sequence.table.num_blocks(); ++b) {
    const KvBlock& block = block_of(block_ids[b]);
    for (int64_t layer = 0; layer < layout().n_layer; ++layer) {
      sequence.k_blocks[layer].push_back(block.k_layer(layer));
      sequence.v_blocks[layer].push_back(block.v_layer(layer));
    }
  }
}

Status KvCache::commit_tokens(SeqId seq, int64_t pos0, std::span<const int32_t> ids) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end())
    return Status::not_found("KV cache: no sequence " + std::to_string(seq));
  Sequence& s = it->second;
  const auto n = static_cast<int64_t>(ids.size());
  if (pos0 != static_cast<int64_t>(s.tokens.size()) || pos0 + n > s.table.num_tokens()) {
    return Status::invalid_argument("KV cache: tokens of sequence " + std::to_string(seq) +
                                    " committed out of order (at " + std::to_string(pos0) + ", " +
                                    std::to_string(s.tokens.size()) + " committed, " +
                                    std::to_string(s.table.num_tokens()) + " held)");
  }
  s.tokens.insert(s.tokens.end(), ids.begin(), ids.end());
  const int64_t bt = layout().block_tokens;
  for (auto b = static_cast<int64_t>(s.block_keys.size());
       (b + 1) * bt <= static_cast<int64_t>(s.tokens.size()); ++b) {
    const uint64_t parent = b == 0 ? 0 : s.block_keys[static_cast<size_t>(b - 1)];
    const std::span<const int32_t> block_tokens(s.tokens.data() + b * bt, static_cast<size_t>(bt));
    const uint64_t key = PrefixCache::chain(parent, block_tokens);
    s.block_keys.push_back(key);
    prefixes_.insert(key, parent, block_tokens, s.table.block_ids()[static_cast<size_t>(b)]);
  }
  return Status::ok();
}

StatusOr<int64_t> KvCache::attach_prefix(SeqId seq, std::span<const int32_t> prompt) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end())
    return Status::not_found("KV cache: no sequence " + std::to_string(seq));
  Sequence& s = it->second;
  if (s.table.num_tokens() != 0) {
    return Status::invalid_argument("KV cache: a prefix attaches only to an empty sequence");
  }
  const int64_t bt = layout().block_tokens;
  std::vector<int32_t> ids;
  std::vector<uint64_t> keys;
  uint64_t parent = 0;
  // Stop before the last token: the caller runs at least that one to get its logits.
  for (int64_t b = 0; (b + 1) * bt <= static_cast<int64_t>(prompt.size()) - 1; ++b) {
    const std::span<const int32_t> block_tokens =
        prompt.subspan(static_cast<size_t>(b * bt), static_cast<size_t>(bt));
    const uint64_t key = PrefixCache::chain(parent, block_tokens);
    const int32_t id = prefixes_.find(key, parent, block_tokens);
    if (id < 0) break;
    ids.push_back(id);
    keys.push_back(key);
    parent = key;
  }
  if (ids.empty()) return int64_t{0};
  STRATA_RETURN_IF_ERROR(share(ids));
  STRATA_RETURN_IF_ERROR(s.table.append_shared(ids));
  push_block_views(s, 0);
  const int64_t n = static_cast<int64_t>(ids.size()) * bt;
  s.tokens.assign(prompt.begin(), prompt.begin() + n);
  s.block_keys = std::move(keys);
  return n;
}

StatusOr<int64_t> KvCache::demote_cold(SeqId seq) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end())
    return Status::not_found("KV cache: no sequence " + std::to_string(seq));
  if (!cold_) return int64_t{0};
  Sequence& s = it->second;
  const int64_t bt = layout().block_tokens;
  const int64_t n_layer = layout().n_layer;
  const int64_t run = layout().layer_block_bytes();
  // First every copy is queued (one per block and K/V, layer-strided), then one wait, then the
  // tables change and the hot blocks go back: a DMA mover overlaps all of a step's copies.
  struct Move {
    int64_t index;
    int32_t hot_id, cold_id;
  };
  std::vector<Move> moves;
  Status status = Status::ok();
  for (int64_t b = 0; b < s.table.num_blocks(); ++b) {
    const int32_t id = s.table.block_ids()[static_cast<size_t>(b)];
    if ((id & kColdBlockTag) || tiering_.stays_hot(b, s.table.num_tokens(), bt)) continue;
    // A shared block stays where its other holders see it.
    if (pool_->block(id).ref_count > 1) continue;
    std::vector<int32_t> got;
    Status taken = cold_->allocate_blocks(1, &got);
    if (!taken.is_ok()) {
      status = Status(taken.code(), "KV cache: the cold tier is full (sequence " +
                                        std::to_string(seq) + "): " + taken.message());
      break;  // the blocks taken so far still move
    }
    const KvBlock& from = pool_->block(id);
    const KvBlock& to = cold_->block(got[0]);
    Status queued = mover_->copy(to.k_data, to.layer_stride_bytes, from.k_data,
                                 from.layer_stride_bytes, run, n_layer);
    if (queued.is_ok()) {
      queued = mover_->copy(to.v_data, to.layer_stride_bytes, from.v_data, from.layer_stride_bytes,
                            run, n_layer);
    }
    if (!queued.is_ok()) {
      (void)cold_->free_blocks(got);
      status = queued;
      break;
    }
    moves.push_back(Move{b, id, got[0]});
  }
  const Status waited = mover_->wait();
  if (!waited.is_ok()) {  // the copies may be incomplete: nothing moves, the cold blocks go back
    for (const Move& m : moves) (void)cold_->free_blocks(std::span(&m.cold_id, 1));
    return waited;
  }
  for (const Move& m : moves) {
    const int32_t cold_id = m.cold_id | kColdBlockTag;
    s.table.replace_block(m.index, cold_id);
    const KvBlock& to = cold_->block(m.cold_id);
    for (int64_t layer = 0; layer < n_layer; ++layer) {
      s.k_blocks[static_cast<size_t>(layer)][static_cast<size_t>(m.index)] = to.k_layer(layer);
      s.v_blocks[static_cast<size_t>(layer)][static_cast<size_t>(m.index)] = to.v_layer(layer);
    }
    prefixes_.rename_block(m.hot_id, cold_id);
    STRATA_RETURN_IF_ERROR(pool_->free_blocks(std::span(&m.hot_id, 1)));
    ++s.blocks_moved;
  }
  STRATA_RETURN_IF_ERROR(status);
  return static_cast<int64_t>(moves.size());
}

KvTier KvCache::block_tier(SeqId seq, int64_t index) const {
  const int32_t id = sequence(seq).table.block_ids()[static_cast<size_t>(index)];
  return block_of(id).tier;
}

Status KvCache::check_invariants() const {
  STRATA_RETURN_IF_ERROR(pool_->check_invariants());
  if (cold_) STRATA_RETURN_IF_ERROR(cold_->check_invariants());
  const int64_t bt = layout().block_tokens;
  std::unordered_map<int32_t, int32_t> holders;
  for (const auto& [seq, s] : sequences_) {
    const std::span<const int32_t> ids = s.table.block_ids();
    for (size_t b = 0; b < ids.size(); ++b) {
      ++holders[ids[b]];
      const bool full = static_cast<int64_t>(b + 1) * bt <= s.table.num_tokens();
      if (block_of(ids[b]).ref_count > 1 && !full) {
        return Status::internal("KV cache: block " + std::to_string(ids[b]) +
                                " is shared but sequence " + std::to_string(seq) +
                                " still writes into it");
      }
    }
    if (static_cast<int64_t>(s.tokens.size()) > s.table.num_tokens()) {
      return Status::internal("KV cache: sequence " + std::to_string(seq) +
                              " has more committed tokens than slots");
    }
  }
  for (const auto& [id, n] : holders) {
    if (block_of(id).ref_count != n) {
      return Status::internal("KV cache: block " + std::to_string(id) + " has ref_count " +
                              std::to_string(block_of(id).ref_count) + " but " + std::to_string(n) +
                              " holders");
    }
  }
  const int64_t in_use = pool_->num_used_blocks() + (cold_ ? cold_->num_used_blocks() : 0);
  if (static_cast<int64_t>(holders.size()) != in_use) {
    return Status::internal("KV cache: " + std::to_string(in_use) + " blocks in use but " +
                            std::to_string(holders.size()) + " held");
  }
  // Cold blocks are full and never sinks: a sequence writes only into hot blocks.
  for (const auto& [seq, s] : sequences_) {
    const std::span<const int32_t> ids = s.table.block_ids();
    for (size_t b = 0; b < ids.size(); ++b) {
      const auto index = static_cast<int64_t>(b);
      if ((ids[b] & kColdBlockTag) &&
          ((index + 1) * bt > s.table.num_tokens() || index < tiering_.sink_blocks)) {
        return Status::internal("KV cache: block " + std::to_string(index) + " of sequence " +
                                std::to_string(seq) + " is cold but must stay hot");
      }
    }
  }
  return Status::ok();
}

KvLayerView KvCache::layer_view(SeqId seq, int64_t layer) const {
  const Sequence& sequence = this->sequence(seq);
  assert(layer >= 0 && layer < layout().n_layer);
  KvLayerView view;
  view.k_blocks = sequence.k_blocks[layer].data();
  view.v_blocks = sequence.v_blocks[layer].data();
  view.num_blocks = sequence.table.num_blocks();
  view.num_tokens = sequence.table.num_tokens();
  view.block_tokens = layout().block_tokens;
  view.kv_dim = layout().kv_dim;
  view.dtype = layout().dtype;
  return view;
}

KvRowPtrs KvCache::rows(SeqId seq, int64_t layer, int64_t position) const {
  const Sequence& sequence = this->sequence(seq);
  assert(layer >= 0 && layer < layout().n_layer);
  assert(position >= 0 && position < sequence.table.num_tokens());
  const KvSlot slot = sequence.table.slot(position);
  const KvBlock& block = block_of(slot.block_id);
  const int64_t row_offset_bytes = slot.row * layout().row_bytes();
  return KvRowPtrs{block.k_layer(layer) + row_offset_bytes,
                   block.v_layer(layer) + row_offset_bytes};
}

KvCacheStats KvCache::stats() const {
  KvCacheStats stats;
  stats.num_sequences = num_sequences();
  for (const auto& [seq, sequence] : sequences_) stats.num_tokens += sequence.table.num_tokens();
  stats.num_used_blocks = pool_->num_used_blocks();
  stats.num_free_blocks = pool_->num_free_blocks();
  stats.max_blocks = pool_->max_blocks();
  stats.block_bytes = pool_->block_bytes();
  stats.used_bytes = pool_->used_bytes();
  stats.peak_used_bytes = pool_->peak_used_bytes();
  stats.allocated_bytes = pool_->allocated_bytes();
  stats.budget_bytes = pool_->max_blocks() * pool_->block_bytes();
  for (const BlockPool* p : {pool_.get(), cold_.get()}) {
    if (p == nullptr) continue;
    for (int64_t id = 0; id < p->num_allocated_blocks(); ++id) {
      stats.num_shared_blocks += p->block(static_cast<int32_t>(id)).ref_count > 1;
    }
  }
  stats.num_prefix_blocks = prefixes_.size();
  if (cold_) {
    stats.cold_used_blocks = cold_->num_used_blocks();
    stats.cold_used_bytes = cold_->used_bytes();
    stats.cold_peak_used_bytes = cold_->peak_used_bytes();
    stats.cold_allocated_bytes = cold_->allocated_bytes();
  }
  return stats;
}

}  // namespace strata
