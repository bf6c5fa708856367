// FreeBlockQueue: the blocks of a pool that no sequence holds, oldest freed first. An intrusive
// doubly linked list through KvBlock::prev_free/next_free between two sentinel blocks, as in
// vLLM's FreeKVCacheBlockQueue: push, pop and removal from the middle (needed once a freed block
// that still caches a shared prefix is claimed again) are O(1) and allocate nothing.
//
// Not thread-safe. The queue does not own the blocks; it must not outlive them.
#pragma once

#include <cstdint>

#include "memory/kv_block.h"

namespace strata {

class FreeBlockQueue {
 public:
  FreeBlockQueue();
  FreeBlockQueue(const FreeBlockQueue&) = delete;
  FreeBlockQueue& operator=(const FreeBlockQueue&) = delete;

  int64_t num_free_blocks() const { return num_free_blocks_; }
  bool empty() const { return num_free_blocks_ == 0; }

  // The block freed longest ago, unlinked. REQUIRES: !empty()
  KvBlock* pop_front();
  // REQUIRES: block is not in the queue
  void push_back(KvBlock* block);
  // REQUIRES: block is in this queue
  void remove(KvBlock* block);

  static bool is_queued(const KvBlock& block) { return block.prev_free != nullptr; }

  // The queued blocks front to back, for tests and invariant checks. Fn: void(const KvBlock&).
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const KvBlock* b = head_.next_free; b != &tail_; b = b->next_free) fn(*b);
  }

 private:
  KvBlock head_;  // sentinels: head_.next_free is the front, tail_.prev_free the back
  KvBlock tail_;
  int64_t num_free_blocks_ = 0;
};

}  // namespace strata
