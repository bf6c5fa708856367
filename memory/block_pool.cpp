#include "memory/block_pool.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <string>

namespace strata {
namespace {

std::string format_bytes(int64_t bytes) {
  char text[32];
  const double mib = static_cast<double>(bytes) / (1024.0 * 1024.0);
  if (mib >= 1024.0) {
    std::snprintf(text, sizeof(text), "%.2f GiB", mib / 1024.0);
  } else {
    std::snprintf(text, sizeof(text), "%.2f MiB", mib);
  }
  return text;
}

}  // namespace

Status BlockPoolConfig::validate() const {
  STRATA_RETURN_IF_ERROR(layout.validate());
  if (max_blocks <= 0 || max_blocks > std::numeric_limits<int32_t>::max()) {
    return Status::invalid_argument(
        "KV cache: the budget must be between 1 and 2^31-1 blocks, got " +
        std::to_string(max_blocks) + " blocks");
  }
  if (blocks_per_slab <= 0) {
    return Status::invalid_argument("KV cache: blocks_per_slab must be > 0, got " +
                                    std::to_string(blocks_per_slab));
  }
  const int64_t max_slab_bytes = std::numeric_limits<int64_t>::max() / 4;
  if (layout.block_bytes() <= 0 || layout.block_bytes() > max_slab_bytes / blocks_per_slab) {
    return Status::invalid_argument("KV cache: a slab of " + std::to_string(blocks_per_slab) +
                                    " blocks of this layout is too large to address");
  }
  return Status::ok();
}

StatusOr<std::unique_ptr<BlockPool>> BlockPool::create(const BlockPoolConfig& config,
                                                       std::unique_ptr<KvSlabAllocator> allocator) {
  STRATA_RETURN_IF_ERROR(config.validate());
  if (allocator == nullptr) return Status::invalid_argument("KV cache: no slab allocator given");
  return std::unique_ptr<BlockPool>(new BlockPool(config, std::move(allocator)));
}

BlockPool::BlockPool(const BlockPoolConfig& config, std::unique_ptr<KvSlabAllocator> allocator)
    : config_(config), allocator_(std::move(allocator)) {}

BlockPool::~BlockPool() {
  for (const Slab& slab : slabs_) allocator_->release(slab.data, slab.size_bytes);
}

std::string BlockPool::describe_budget() const {
  return std::to_string(num_used_blocks()) + " of the " + std::to_string(max_blocks()) +
         "-block budget (" + format_bytes(max_blocks() * block_bytes()) + " on " +
         kv_tier_name(tier()) + ", " + std::to_string(layout().block_tokens) +
         " tokens per block) are in use";
}

Status BlockPool::grow() {
  const int64_t slab_blocks =
      std::min(config_.blocks_per_slab, max_blocks() - num_allocated_blocks());
  assert(slab_blocks > 0);
  const int64_t layer_block_bytes = layout().layer_block_bytes();
  const int64_t size_bytes = slab_blocks * layout().block_bytes();
  STRATA_ASSIGN_OR_RETURN(std::byte * data, allocator_->allocate(size_bytes));
  slabs_.push_back(Slab{data, size_bytes});
  allocated_bytes_ += size_bytes;

  // Slab layout: K region [layer][slab block][block_tokens][kv_dim], then the V region alike, so a
  // layer's K (or V) for consecutive blocks of the slab is one contiguous run.
  const int64_t layer_stride_bytes = slab_blocks * layer_block_bytes;
  std::byte* v_region = data + layout().n_layer * layer_stride_bytes;
  for (int64_t i = 0; i < slab_blocks; ++i) {
    KvBlock& block = blocks_.emplace_back();
    block.block_id = static_cast<int32_t>(blocks_.size() - 1);
    block.tier = tier();
    block.k_data = data + i * layer_block_bytes;
    block.v_data = v_region + i * layer_block_bytes;
    block.layer_stride_bytes = layer_stride_bytes;
    free_queue_.push_back(&block);
  }
  return Status::ok();
}

Status BlockPool::allocate_blocks(int64_t num_blocks, std::vector<int32_t>* block_ids) {
  assert(num_blocks >= 0);
  if (num_blocks > num_available_blocks()) {
    return Status::out_of_memory(
        "KV cache budget exhausted: " + std::to_string(num_blocks) +
        " more blocks needed, but only " + std::to_string(num_available_blocks()) +
        " are left: " + describe_budget() + "; raise the KV budget or shorten the context");
  }
  // Back the missing blocks with memory first, so that a failing slab allocation changes nothing
  // that a caller sees (new blocks sit in the free queue, ready for the next request).
  while (num_free_blocks() < num_blocks) STRATA_RETURN_IF_ERROR(grow());

  block_ids->reserve(block_ids->size() + static_cast<size_t>(num_blocks));
  for (int64_t i = 0; i < num_blocks; ++i) {
    KvBlock* block = free_queue_.pop_front();
    assert(block->ref_count == 0);
    block->ref_count = 1;
    block_ids->push_back(block->block_id);
  }
  peak_used_blocks_ = std::max(peak_used_blocks_, num_used_blocks());
  return Status::ok();
}

Status BlockPool::share_blocks(std::span<const int32_t> block_ids) {
  for (int32_t id : block_ids) {
    if (id < 0 || id >= num_allocated_blocks() || blocks_[id].ref_count == 0) {
      return Status::internal("KV cache: cannot share block " + std::to_string(id) +
                              ": it is not in use");
    }
  }
  for (int32_t id : block_ids) ++blocks_[id].ref_count;
  return Status::ok();
}

Status BlockPool::free_blocks(std::span<const int32_t> block_ids) {
  for (int32_t id : block_ids) {
    if (id < 0 || id >= num_allocated_blocks()) {
      return Status::internal("KV cache: cannot free block " + std::to_string(id) +
                              ": no such block (the pool has " +
                              std::to_string(num_allocated_blocks()) + ")");
    }
    KvBlock& block = blocks_[id];
    if (block.ref_count == 0) {
      return Status::internal("KV cache: block " + std::to_string(id) +
                              " freed twice: it is already free");
    }
    if (--block.ref_count == 0) free_queue_.push_back(&block);
  }
  return Status::ok();
}

Status BlockPool::check_invariants() const {
  int64_t num_zero_ref = 0;
  for (const KvBlock& block : blocks_) {
    if (block.ref_count < 0) {
      return Status::internal("block " + std::to_string(block.block_id) +
                              " has a negative ref count");
    }
    if ((block.ref_count == 0) != FreeBlockQueue::is_queued(block)) {
      return Status::internal("block " + std::to_string(block.block_id) + " has ref count " +
                              std::to_string(block.ref_count) +
                              (FreeBlockQueue::is_queued(block) ? " but is" : " but is not") +
                              " in the free queue");
    }
    if (block.ref_count == 0) ++num_zero_ref;
  }
  int64_t num_queued = 0;
  free_queue_.for_each([&](const KvBlock&) { ++num_queued; });
  if (num_queued != num_free_blocks() || num_queued != num_zero_ref) {
    return Status::internal("free queue holds " + std::to_string(num_queued) + " blocks, counts " +
                            std::to_string(num_free_blocks()) + ", and " +
                            std::to_string(num_zero_ref) + " blocks have ref count 0");
  }
  if (num_allocated_blocks() > max_blocks()) {
    return Status::internal("more blocks allocated than the budget allows");
  }
  int64_t slab_bytes = 0;
  for (const Slab& slab : slabs_) slab_bytes += slab.size_bytes;
  if (slab_bytes != allocated_bytes_ ||
      allocated_bytes_ != num_allocated_blocks() * block_bytes()) {
    return Status::internal("allocated bytes " + std::to_string(allocated_bytes_) +
                            " disagree with the slabs (" + std::to_string(slab_bytes) +
                            ") or blocks");
  }
  return Status::ok();
}

}  // namespace strata
