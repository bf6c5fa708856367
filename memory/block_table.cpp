#include "memory/block_table.h"

#include <algorithm>

namespace strata {

Status BlockTable::append_tokens(int64_t num_new_tokens, BlockPool& pool) {
  assert(num_new_tokens >= 0);
  const int64_t total_tokens = num_tokens_ + num_new_tokens;
  const int64_t blocks_needed = (total_tokens + block_tokens_ - 1) / block_tokens_ - num_blocks();
  if (blocks_needed > 0) STRATA_RETURN_IF_ERROR(pool.allocate_blocks(blocks_needed, &block_ids_));
  num_tokens_ = total_tokens;
  return Status::ok();
}

Status BlockTable::append_shared(std::span<const int32_t> block_ids) {
  if (num_tokens_ % block_tokens_ != 0) {
    return Status::internal("BlockTable: shared blocks after a partial block");
  }
  block_ids_.insert(block_ids_.end(), block_ids.begin(), block_ids.end());
  num_tokens_ += static_cast<int64_t>(block_ids.size()) * block_tokens_;
  return Status::ok();
}

Status BlockTable::release(BlockPool& pool) {
  // Last block first, as vLLM does: the tail of a sequence is the part least likely to be shared
  // with another sequence, so it should be the first to be reused.
  std::reverse(block_ids_.begin(), block_ids_.end());
  Status status = pool.free_blocks(block_ids_);
  block_ids_.clear();
  num_tokens_ = 0;
  return status;
}

}  // namespace strata
