#include "memory/free_block_queue.h"

#include <cassert>

namespace strata {

FreeBlockQueue::FreeBlockQueue() {
  head_.next_free = &tail_;
  tail_.prev_free = &head_;
}

KvBlock* FreeBlockQueue::pop_front() {
  assert(!empty());
  KvBlock* block = head_.next_free;
  remove(block);
  return block;
}

void FreeBlockQueue::push_back(KvBlock* block) {
  assert(!is_queued(*block) && block->next_free == nullptr && "block is already in a free queue");
  KvBlock* last = tail_.prev_free;
  last->next_free = block;
  block->prev_free = last;
  block->next_free = &tail_;
  tail_.prev_free = block;
  ++num_free_blocks_;
}

void FreeBlockQueue::remove(KvBlock* block) {
  assert(is_queued(*block) && block->next_free != nullptr && "block is not in a free queue");
  block->prev_free->next_free = block->next_free;
  block->next_free->prev_free = block->prev_free;
  block->prev_free = nullptr;
  block->next_free = nullptr;
  --num_free_blocks_;
}

}  // namespace strata
