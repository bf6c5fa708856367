#include "memory/kv_cache.h"

#include <string>

namespace strata {

StatusOr<std::unique_ptr<KvCache>> KvCache::create(const KvCacheConfig& config,
                                                   std::unique_ptr<KvSlabAllocator> allocator) {
  BlockPoolConfig pool_config;
  pool_config.layout = config.layout;
  pool_config.max_blocks = config.max_blocks;
  pool_config.blocks_per_slab = config.blocks_per_slab;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<BlockPool> pool,
                          BlockPool::create(pool_config, std::move(allocator)));
  return std::unique_ptr<KvCache>(new KvCache(std::move(pool)));
}

KvCache::~KvCache() {
  for (auto& [seq, sequence] : sequences_) {
    Status status = sequence.table.release(*pool_);
    assert(status.is_ok() && "KV cache: releasing a sequence at shutdown failed");
    (void)status;
  }
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
  Status status = it->second.table.release(*pool_);
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
  const std::span<const int32_t> block_ids = sequence.table.block_ids();
  for (int64_t b = old_num_blocks; b < sequence.table.num_blocks(); ++b) {
    const KvBlock& block = pool_->block(block_ids[b]);
    for (int64_t layer = 0; layer < layout().n_layer; ++layer) {
      sequence.k_blocks[layer].push_back(block.k_layer(layer));
      sequence.v_blocks[layer].push_back(block.v_layer(layer));
    }
  }
  return first_position;
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
  const KvBlock& block = pool_->block(slot.block_id);
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
  return stats;
}

}  // namespace strata
