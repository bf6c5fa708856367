// BlockPool: the KV blocks of one tier. It hands out blocks, takes them back and reuses them, and
// backs them with memory only when a block is first needed, never up front for the maximum context
// (reserving for the maximum context is what makes other runtimes run out of memory).
//
// Like vLLM's BlockPool (vllm/v1/core/block_pool.py): blocks carry ids and reference counts, and a
// FreeBlockQueue orders the free ones, oldest freed first. Unlike vLLM, the pool starts empty and
// grows slab by slab (KvSlabAllocator) up to `max_blocks`, the budget.
//
// Invariants:
//   num_allocated_blocks() = num_used_blocks() + num_free_blocks() <= max_blocks()
//   a block is in the free queue  <=>  its ref_count == 0
//   allocated_bytes() grows only when a block is needed and none is free; it never shrinks.
//
// Block ids are dense: 0 .. num_allocated_blocks() - 1, in order of first allocation.
// Not thread-safe: one scheduler owns the pool.
//
// Example usage:
//   BlockPoolConfig config{.layout = layout, .max_blocks = 1024};
//   STRATA_ASSIGN_OR_RETURN(std::unique_ptr<BlockPool> pool,
//                           BlockPool::create(config, make_host_kv_slab_allocator()));
//   std::vector<int32_t> ids;
//   STRATA_RETURN_IF_ERROR(pool->allocate_blocks(2, &ids));   // ids = {0, 1}
//   std::byte* k = pool->block(ids[0]).k_layer(layer);        // [block_tokens][kv_dim]
//   STRATA_RETURN_IF_ERROR(pool->free_blocks(ids));           // both back in the free queue
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "memory/free_block_queue.h"
#include "memory/kv_block.h"
#include "memory/kv_layout.h"
#include "memory/kv_slab_allocator.h"
#include "offload/core/status.h"

namespace strata {

struct BlockPoolConfig {
  KvLayout layout;
  // The budget in blocks: a request beyond it fails with out_of_memory. Required (> 0).
  int64_t max_blocks = 0;
  // Blocks per slab allocation. 1 (default) makes allocated bytes follow the tokens held exactly;
  // larger slabs make fewer, bigger allocations.
  int64_t blocks_per_slab = 1;

  Status validate() const;
};

class BlockPool {
 public:
  // invalid_argument when the config is invalid.
  static StatusOr<std::unique_ptr<BlockPool>> create(const BlockPoolConfig& config,
                                                     std::unique_ptr<KvSlabAllocator> allocator);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // Hands out `num_blocks` blocks with ref_count 1 and appends their ids to `block_ids`: blocks
  // from the free queue first, then new blocks from new slabs. All or nothing: on out_of_memory
  // (budget or tier exhausted) the pool and `block_ids` are unchanged.
  Status allocate_blocks(int64_t num_blocks, std::vector<int32_t>* block_ids);

  // One more holder for each block (a shared prefix). internal error if a block is not in use.
  Status share_blocks(std::span<const int32_t> block_ids);

  // Drops one reference to each block, in the order given; a block whose count reaches 0 goes to
  // the back of the free queue. internal error naming the block for an unknown id or a block that
  // is already free (a double free); the blocks before it in `block_ids` have been freed.
  Status free_blocks(std::span<const int32_t> block_ids);

  // REQUIRES: 0 <= block_id < num_allocated_blocks()
  const KvBlock& block(int32_t block_id) const { return blocks_[block_id]; }

  const KvLayout& layout() const { return config_.layout; }
  KvTier tier() const { return allocator_->tier(); }
  int64_t max_blocks() const { return config_.max_blocks; }
  int64_t block_bytes() const { return config_.layout.block_bytes(); }

  int64_t num_allocated_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t num_free_blocks() const { return free_queue_.num_free_blocks(); }
  int64_t num_used_blocks() const { return num_allocated_blocks() - num_free_blocks(); }
  // Blocks that allocate_blocks can still hand out: free ones plus the budget not yet allocated.
  int64_t num_available_blocks() const { return max_blocks() - num_used_blocks(); }
  int64_t peak_used_blocks() const { return peak_used_blocks_; }

  // Memory of all slabs. Never shrinks (freed blocks are kept for reuse), so it is also the peak.
  int64_t allocated_bytes() const { return allocated_bytes_; }
  int64_t used_bytes() const { return num_used_blocks() * block_bytes(); }
  int64_t peak_used_bytes() const { return peak_used_blocks_ * block_bytes(); }

  const FreeBlockQueue& free_queue() const { return free_queue_; }

  // internal error describing the first broken invariant (see the top of this file); for tests.
  Status check_invariants() const;

 private:
  struct Slab {
    std::byte* data;
    int64_t size_bytes;
  };

  BlockPool(const BlockPoolConfig& config, std::unique_ptr<KvSlabAllocator> allocator);
  // Allocates one slab of up to blocks_per_slab blocks (never past max_blocks) and queues its
  // blocks.
  Status grow();
  std::string describe_budget() const;

  BlockPoolConfig config_;
  std::unique_ptr<KvSlabAllocator> allocator_;
  std::deque<KvBlock> blocks_;  // index = block id; a deque so that free-queue links stay valid
  std::vector<Slab> slabs_;
  FreeBlockQueue free_queue_;
  int64_t allocated_bytes_ = 0;
  int64_t peak_used_blocks_ = 0;
};

}  // namespace strata
