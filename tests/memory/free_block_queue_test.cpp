#include "memory/free_block_queue.h"

#include <gtest/gtest.h>

#include <vector>

namespace strata {
namespace {

std::vector<int32_t> queued_ids(const FreeBlockQueue& queue) {
  std::vector<int32_t> ids;
  queue.for_each([&](const KvBlock& block) { ids.push_back(block.block_id); });
  return ids;
}

std::vector<KvBlock> make_blocks(int n) {
  std::vector<KvBlock> blocks(n);
  for (int i = 0; i < n; ++i) blocks[i].block_id = i;
  return blocks;
}

TEST(FreeBlockQueueTest, StartsEmpty) {
  FreeBlockQueue queue;
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.num_free_blocks(), 0);
  EXPECT_TRUE(queued_ids(queue).empty());
}

TEST(FreeBlockQueueTest, PopsBlocksInTheOrderTheyWerePushed) {
  std::vector<KvBlock> blocks = make_blocks(3);
  FreeBlockQueue queue;
  queue.push_back(&blocks[2]);
  queue.push_back(&blocks[0]);
  queue.push_back(&blocks[1]);
  EXPECT_EQ(queued_ids(queue), (std::vector<int32_t>{2, 0, 1}));
  EXPECT_EQ(queue.num_free_blocks(), 3);

  EXPECT_EQ(queue.pop_front()->block_id, 2);
  EXPECT_EQ(queue.pop_front()->block_id, 0);
  EXPECT_EQ(queue.num_free_blocks(), 1);
  EXPECT_EQ(queue.pop_front()->block_id, 1);
  EXPECT_TRUE(queue.empty());
}

TEST(FreeBlockQueueTest, PoppedBlockIsUnlinked) {
  std::vector<KvBlock> blocks = make_blocks(2);
  FreeBlockQueue queue;
  queue.push_back(&blocks[0]);
  queue.push_back(&blocks[1]);
  EXPECT_TRUE(FreeBlockQueue::is_queued(blocks[0]));

  KvBlock* popped = queue.pop_front();
  EXPECT_FALSE(FreeBlockQueue::is_queued(*popped));
  EXPECT_EQ(popped->prev_free, nullptr);
  EXPECT_EQ(popped->next_free, nullptr);
  EXPECT_TRUE(FreeBlockQueue::is_queued(blocks[1]));
}

TEST(FreeBlockQueueTest, RemoveFromTheMiddleKeepsTheOrderOfTheRest) {
  std::vector<KvBlock> blocks = make_blocks(4);
  FreeBlockQueue queue;
  for (KvBlock& block : blocks) queue.push_back(&block);

  queue.remove(&blocks[1]);
  EXPECT_EQ(queued_ids(queue), (std::vector<int32_t>{0, 2, 3}));
  queue.remove(&blocks[3]);  // the back
  EXPECT_EQ(queued_ids(queue), (std::vector<int32_t>{0, 2}));
  queue.remove(&blocks[0]);  // the front
  EXPECT_EQ(queued_ids(queue), (std::vector<int32_t>{2}));
  EXPECT_EQ(queue.num_free_blocks(), 1);

  queue.push_back(&blocks[1]);  // a removed block can come back
  EXPECT_EQ(queued_ids(queue), (std::vector<int32_t>{2, 1}));
}

}  // namespace
}  // namespace strata
