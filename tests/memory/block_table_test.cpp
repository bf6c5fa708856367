#include "memory/block_table.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/memory/recording_slab_allocator.h"

namespace strata {
namespace {

using testing::recording_allocator;
using testing::SlabRecord;

constexpr int64_t kBlockTokens = 4;

std::unique_ptr<BlockPool> make_pool(SlabRecord* record, int64_t max_blocks) {
  BlockPoolConfig config;
  config.layout.n_layer = 2;
  config.layout.kv_dim = 4;
  config.layout.block_tokens = kBlockTokens;
  config.max_blocks = max_blocks;
  auto pool = BlockPool::create(config, recording_allocator(record));
  EXPECT_TRUE(pool.is_ok()) << pool.status().to_string();
  return std::move(pool).value();
}

std::vector<int32_t> ids_of(const BlockTable& table) {
  return {table.block_ids().begin(), table.block_ids().end()};
}

TEST(BlockTableTest, NewTableHoldsNothing) {
  BlockTable table(kBlockTokens);
  EXPECT_EQ(table.num_tokens(), 0);
  EXPECT_EQ(table.num_blocks(), 0);
  EXPECT_EQ(table.block_tokens(), kBlockTokens);
}

TEST(BlockTableTest, BlocksAreTakenOnlyAsTokensArrive) {
  SlabRecord record;
  auto pool = make_pool(&record, 100);
  BlockTable table(kBlockTokens);

  ASSERT_TRUE(table.append_tokens(1, *pool).is_ok());  // token 0: first block
  EXPECT_EQ(table.num_tokens(), 1);
  EXPECT_EQ(ids_of(table), (std::vector<int32_t>{0}));

  ASSERT_TRUE(table.append_tokens(3, *pool).is_ok());  // tokens 1..3 fill it
  EXPECT_EQ(table.num_tokens(), 4);
  EXPECT_EQ(table.num_blocks(), 1);
  EXPECT_EQ(pool->num_used_blocks(), 1);
  EXPECT_EQ(record.num_allocate_calls, 1);

  ASSERT_TRUE(table.append_tokens(1, *pool).is_ok());  // token 4 needs a second block
  EXPECT_EQ(ids_of(table), (std::vector<int32_t>{0, 1}));

  ASSERT_TRUE(table.append_tokens(0, *pool).is_ok());  // nothing arrives, nothing is taken
  EXPECT_EQ(table.num_blocks(), 2);

  ASSERT_TRUE(table.append_tokens(9, *pool).is_ok());  // 14 tokens: 4 blocks
  EXPECT_EQ(table.num_tokens(), 14);
  EXPECT_EQ(ids_of(table), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(pool->num_used_blocks(), 4);
  EXPECT_TRUE(table.release(*pool).is_ok());
}

TEST(BlockTableTest, TokenMapsToBlockTokenOverBlockTokensAtRowTokenModBlockTokens) {
  SlabRecord record;
  auto pool = make_pool(&record, 100);
  BlockTable other(kBlockTokens);
  BlockTable table(kBlockTokens);
  // Interleave two tables so that this table's blocks are not consecutive ids.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(other.append_tokens(kBlockTokens, *pool).is_ok());
    ASSERT_TRUE(table.append_tokens(kBlockTokens, *pool).is_ok());
  }
  ASSERT_TRUE(table.append_tokens(2, *pool).is_ok());
  EXPECT_EQ(ids_of(table), (std::vector<int32_t>{1, 3, 5, 6}));

  for (int64_t t = 0; t < table.num_tokens(); ++t) {
    const KvSlot slot = table.slot(t);
    EXPECT_EQ(slot.block_id, table.block_ids()[t / kBlockTokens]) << "token " << t;
    EXPECT_EQ(slot.row, t % kBlockTokens) << "token " << t;
  }
  EXPECT_EQ(table.slot(0), (KvSlot{1, 0}));
  EXPECT_EQ(table.slot(5), (KvSlot{3, 1}));
  EXPECT_EQ(table.slot(13), (KvSlot{6, 1}));
  EXPECT_TRUE(table.release(*pool).is_ok());
  EXPECT_TRUE(other.release(*pool).is_ok());
}

TEST(BlockTableTest, ReleaseGivesEveryBlockBackLastBlockFirst) {
  SlabRecord record;
  auto pool = make_pool(&record, 100);
  BlockTable table(kBlockTokens);
  ASSERT_TRUE(table.append_tokens(10, *pool).is_ok());  // blocks 0 1 2

  ASSERT_TRUE(table.release(*pool).is_ok());
  EXPECT_EQ(table.num_tokens(), 0);
  EXPECT_EQ(table.num_blocks(), 0);
  EXPECT_EQ(pool->num_used_blocks(), 0);
  std::vector<int32_t> queued;
  pool->free_queue().for_each([&](const KvBlock& b) { queued.push_back(b.block_id); });
  EXPECT_EQ(queued, (std::vector<int32_t>{2, 1, 0}));

  // The table can grow again and reuses the freed blocks.
  ASSERT_TRUE(table.append_tokens(5, *pool).is_ok());
  EXPECT_EQ(ids_of(table), (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(record.num_allocate_calls, 3);
  EXPECT_TRUE(table.release(*pool).is_ok());
}

TEST(BlockTableTest, AppendPastTheBudgetLeavesTheTableUnchanged) {
  SlabRecord record;
  auto pool = make_pool(&record, /*max_blocks=*/2);
  BlockTable table(kBlockTokens);
  ASSERT_TRUE(table.append_tokens(6, *pool).is_ok());

  Status status = table.append_tokens(3, *pool);  // 9 tokens would need 3 blocks
  EXPECT_EQ(status.code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(table.num_tokens(), 6);
  EXPECT_EQ(table.num_blocks(), 2);

  ASSERT_TRUE(table.append_tokens(2, *pool).is_ok());  // 8 tokens still fit
  EXPECT_EQ(table.num_tokens(), 8);
  EXPECT_TRUE(table.release(*pool).is_ok());
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

}  // namespace
}  // namespace strata
