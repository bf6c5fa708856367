#include "memory/block_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "offload/model/model_spec.h"
#include "tests/memory/recording_slab_allocator.h"

namespace strata {
namespace {

using testing::recording_allocator;
using testing::SlabRecord;

// 3 layers, rows of 8 floats, 4 tokens per block: 128 bytes per layer array, 768 per block.
KvLayout small_layout() {
  KvLayout layout;
  layout.n_layer = 3;
  layout.kv_dim = 8;
  layout.block_tokens = 4;
  layout.dtype = DType::kF32;
  return layout;
}

std::unique_ptr<BlockPool> make_pool(SlabRecord* record, int64_t max_blocks,
                                     int64_t blocks_per_slab = 1) {
  BlockPoolConfig config;
  config.layout = small_layout();
  config.max_blocks = max_blocks;
  config.blocks_per_slab = blocks_per_slab;
  auto pool = BlockPool::create(config, recording_allocator(record));
  EXPECT_TRUE(pool.is_ok()) << pool.status().to_string();
  return std::move(pool).value();
}

std::vector<int32_t> queued_ids(const BlockPool& pool) {
  std::vector<int32_t> ids;
  pool.free_queue().for_each([&](const KvBlock& block) { ids.push_back(block.block_id); });
  return ids;
}

TEST(KvLayoutTest, BytesFollowTheShape) {
  const KvLayout layout = small_layout();
  EXPECT_EQ(layout.row_bytes(), 8 * 4);
  EXPECT_EQ(layout.layer_block_bytes(), 4 * 8 * 4);
  EXPECT_EQ(layout.block_bytes(), 2 * 3 * 4 * 8 * 4);
  EXPECT_EQ(layout.blocks_for_tokens(0), 0);
  EXPECT_EQ(layout.blocks_for_tokens(1), 1);
  EXPECT_EQ(layout.blocks_for_tokens(4), 1);
  EXPECT_EQ(layout.blocks_for_tokens(5), 2);

  KvLayout half = layout;
  half.dtype = DType::kF16;
  EXPECT_EQ(half.block_bytes() * 2, layout.block_bytes());
}

TEST(KvLayoutTest, ForModelTakesKvDimFromTheHeads) {
  HyperParams hp;
  hp.n_layer = 24;
  hp.n_head_kv = 2;
  hp.head_dim = 64;
  const KvLayout layout = KvLayout::for_model(hp, 32, DType::kF16);
  EXPECT_EQ(layout.n_layer, 24);
  EXPECT_EQ(layout.kv_dim, 128);
  EXPECT_EQ(layout.block_tokens, 32);
  EXPECT_EQ(layout.dtype, DType::kF16);
}

TEST(BlockPoolTest, InvalidConfigIsRejectedNamingTheValue) {
  SlabRecord record;
  BlockPoolConfig config;
  config.layout = small_layout();

  config.max_blocks = 0;
  auto pool = BlockPool::create(config, recording_allocator(&record));
  ASSERT_FALSE(pool.is_ok());
  EXPECT_EQ(pool.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(pool.status().message().find("got 0 blocks"), std::string::npos);

  config.max_blocks = 8;
  config.layout.dtype = DType::kQ4_0;
  pool = BlockPool::create(config, recording_allocator(&record));
  ASSERT_FALSE(pool.is_ok());
  EXPECT_NE(pool.status().message().find("f32, f16 or q8_0, got Q4_0"), std::string::npos)
      << pool.status().to_string();

  config.layout.dtype = DType::kQ8_0;  // whole 32-element blocks only
  config.layout.kv_dim = 48;
  pool = BlockPool::create(config, recording_allocator(&record));
  ASSERT_FALSE(pool.is_ok());
  EXPECT_NE(pool.status().message().find("multiple of 32, got 48"), std::string::npos)
      << pool.status().to_string();

  config.layout = small_layout();
  config.layout.block_tokens = 0;
  pool = BlockPool::create(config, recording_allocator(&record));
  ASSERT_FALSE(pool.is_ok());
  EXPECT_NE(pool.status().message().find("--kv-block-tokens"), std::string::npos);

  config.layout = small_layout();
  config.blocks_per_slab = 0;
  pool = BlockPool::create(config, recording_allocator(&record));
  ASSERT_FALSE(pool.is_ok());
  EXPECT_NE(pool.status().message().find("blocks_per_slab"), std::string::npos);
  EXPECT_EQ(record.num_allocate_calls, 0);
}

TEST(BlockPoolTest, StartsWithNoMemory) {
  SlabRecord record;
  auto pool = make_pool(&record, /*max_blocks=*/1000);
  EXPECT_EQ(record.num_allocate_calls, 0);
  EXPECT_EQ(pool->allocated_bytes(), 0);
  EXPECT_EQ(pool->num_allocated_blocks(), 0);
  EXPECT_EQ(pool->num_used_blocks(), 0);
  EXPECT_EQ(pool->num_free_blocks(), 0);
  EXPECT_EQ(pool->num_available_blocks(), 1000);
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, AllocatesMemoryOnlyWhenABlockIsFirstNeeded) {
  SlabRecord record;
  auto pool = make_pool(&record, 1000);
  const int64_t block_bytes = small_layout().block_bytes();
  std::vector<int32_t> ids;

  ASSERT_TRUE(pool->allocate_blocks(1, &ids).is_ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{0}));
  EXPECT_EQ(record.num_allocate_calls, 1);
  EXPECT_EQ(record.allocated_sizes.back(), block_bytes);
  EXPECT_EQ(pool->allocated_bytes(), block_bytes);
  EXPECT_EQ(pool->num_used_blocks(), 1);
  EXPECT_EQ(pool->num_free_blocks(), 0);

  ASSERT_TRUE(pool->allocate_blocks(2, &ids).is_ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(record.num_allocate_calls, 3);
  EXPECT_EQ(pool->allocated_bytes(), 3 * block_bytes);
  EXPECT_EQ(pool->used_bytes(), 3 * block_bytes);
  EXPECT_EQ(pool->num_available_blocks(), 997);
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, AllocatingZeroBlocksTakesNothing) {
  SlabRecord record;
  auto pool = make_pool(&record, 4);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(0, &ids).is_ok());
  EXPECT_TRUE(ids.empty());
  EXPECT_EQ(record.num_allocate_calls, 0);
}

TEST(BlockPoolTest, FreedBlocksAreReusedWithoutNewMemory) {
  SlabRecord record;
  auto pool = make_pool(&record, 1000);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(3, &ids).is_ok());
  const int64_t bytes_after_first = pool->allocated_bytes();

  ASSERT_TRUE(pool->free_blocks(ids).is_ok());
  EXPECT_EQ(pool->num_used_blocks(), 0);
  EXPECT_EQ(pool->num_free_blocks(), 3);
  EXPECT_EQ(pool->used_bytes(), 0);
  EXPECT_EQ(pool->allocated_bytes(), bytes_after_first);  // kept for reuse

  std::vector<int32_t> again;
  ASSERT_TRUE(pool->allocate_blocks(3, &again).is_ok());
  EXPECT_EQ(std::set<int32_t>(again.begin(), again.end()), std::set<int32_t>({0, 1, 2}));
  EXPECT_EQ(record.num_allocate_calls, 3);  // no new slab
  EXPECT_EQ(pool->allocated_bytes(), bytes_after_first);
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, FreeBlocksAreReusedOldestFreedFirst) {
  SlabRecord record;
  auto pool = make_pool(&record, 1000);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(4, &ids).is_ok());  // 0 1 2 3

  ASSERT_TRUE(pool->free_blocks(std::vector<int32_t>{2}).is_ok());
  ASSERT_TRUE(pool->free_blocks(std::vector<int32_t>{0, 3}).is_ok());
  EXPECT_EQ(queued_ids(*pool), (std::vector<int32_t>{2, 0, 3}));

  std::vector<int32_t> reused;
  ASSERT_TRUE(pool->allocate_blocks(2, &reused).is_ok());
  EXPECT_EQ(reused, (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(queued_ids(*pool), (std::vector<int32_t>{3}));

  // One free block and one new block: the free one comes first.
  std::vector<int32_t> mixed;
  ASSERT_TRUE(pool->allocate_blocks(2, &mixed).is_ok());
  EXPECT_EQ(mixed, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(record.num_allocate_calls, 5);
}

TEST(BlockPoolTest, AllocatedBlocksHaveRefCountOneAndFreeOnesZero) {
  SlabRecord record;
  auto pool = make_pool(&record, 8);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(2, &ids).is_ok());
  EXPECT_EQ(pool->block(0).ref_count, 1);
  EXPECT_EQ(pool->block(1).ref_count, 1);
  ASSERT_TRUE(pool->free_blocks(std::vector<int32_t>{1}).is_ok());
  EXPECT_EQ(pool->block(1).ref_count, 0);
  EXPECT_TRUE(FreeBlockQueue::is_queued(pool->block(1)));
  EXPECT_FALSE(FreeBlockQueue::is_queued(pool->block(0)));
}

TEST(BlockPoolTest, BlockMemoryIsOneArrayPerLayerForKAndV) {
  SlabRecord record;
  auto pool = make_pool(&record, 8);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(2, &ids).is_ok());
  const KvLayout layout = small_layout();

  // Every (block, layer, K|V) array is layer_block_bytes long, aligned, and none overlap.
  std::vector<std::pair<const std::byte*, const std::byte*>> ranges;
  for (int32_t id : ids) {
    const KvBlock& block = pool->block(id);
    EXPECT_EQ(block.block_id, id);
    EXPECT_EQ(block.tier, KvTier::kHost);
    for (int64_t layer = 0; layer < layout.n_layer; ++layer) {
      for (const std::byte* begin : {block.k_layer(layer), block.v_layer(layer)}) {
        EXPECT_EQ(reinterpret_cast<uintptr_t>(begin) % 4, 0u);
        ranges.emplace_back(begin, begin + layout.layer_block_bytes());
      }
    }
    EXPECT_EQ(reinterpret_cast<uintptr_t>(block.k_data) % kKvSlabAlignmentBytes, 0u);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].second, ranges[i].first) << "arrays " << i - 1 << " and " << i;
  }
}

TEST(BlockPoolTest, SlabOfSeveralBlocksIsCarvedIntoContiguousLayerRuns) {
  SlabRecord record;
  auto pool = make_pool(&record, 100, /*blocks_per_slab=*/4);
  const KvLayout layout = small_layout();
  std::vector<int32_t> ids;

  ASSERT_TRUE(pool->allocate_blocks(1, &ids).is_ok());
  EXPECT_EQ(record.num_allocate_calls, 1);
  EXPECT_EQ(record.allocated_sizes.back(), 4 * layout.block_bytes());
  EXPECT_EQ(pool->num_allocated_blocks(), 4);
  EXPECT_EQ(pool->num_used_blocks(), 1);
  EXPECT_EQ(pool->num_free_blocks(), 3);

  ASSERT_TRUE(pool->allocate_blocks(3, &ids).is_ok());
  EXPECT_EQ(record.num_allocate_calls, 1);  // the rest of the slab
  // Layer l's K arrays of the slab's blocks follow each other: [layer][block][token][kv_dim].
  for (int64_t layer = 0; layer < layout.n_layer; ++layer) {
    for (int32_t id = 1; id < 4; ++id) {
      EXPECT_EQ(pool->block(id).k_layer(layer),
                pool->block(id - 1).k_layer(layer) + layout.layer_block_bytes());
      EXPECT_EQ(pool->block(id).v_layer(layer),
                pool->block(id - 1).v_layer(layer) + layout.layer_block_bytes());
    }
  }
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, LastSlabStopsAtTheBudget) {
  SlabRecord record;
  auto pool = make_pool(&record, /*max_blocks=*/6, /*blocks_per_slab=*/4);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(6, &ids).is_ok());
  const int64_t block_bytes = small_layout().block_bytes();
  EXPECT_EQ(record.allocated_sizes, (std::vector<int64_t>{4 * block_bytes, 2 * block_bytes}));
  EXPECT_EQ(pool->num_allocated_blocks(), 6);
  EXPECT_EQ(pool->num_available_blocks(), 0);
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, BudgetExhaustionIsOutOfMemoryWithAClearMessageAndChangesNothing) {
  SlabRecord record;
  auto pool = make_pool(&record, /*max_blocks=*/4);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(3, &ids).is_ok());

  Status status = pool->allocate_blocks(2, &ids);
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), StatusCode::kOutOfMemory);
  EXPECT_NE(status.message().find("KV cache budget exhausted"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("2 more blocks needed, but only 1 are left"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("3 of the 4-block budget"), std::string::npos)
      << status.message();
  EXPECT_EQ(ids.size(), 3u);  // all or nothing
  EXPECT_EQ(pool->num_used_blocks(), 3);
  EXPECT_EQ(record.num_allocate_calls, 3);

  ASSERT_TRUE(pool->allocate_blocks(1, &ids).is_ok());  // exactly the budget is fine
  EXPECT_EQ(pool->allocate_blocks(1, &ids).code(), StatusCode::kOutOfMemory);
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, RefusedSlabAllocationIsOutOfMemoryAndHandsOutNothing) {
  SlabRecord record;
  record.fail_after_allocations = 2;
  auto pool = make_pool(&record, 100);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(1, &ids).is_ok());

  Status status = pool->allocate_blocks(3, &ids);  // the second new slab is refused
  EXPECT_EQ(status.code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(ids.size(), 1u);
  EXPECT_EQ(pool->num_used_blocks(), 1);
  EXPECT_TRUE(pool->check_invariants().is_ok());

  record.fail_after_allocations = -1;
  ASSERT_TRUE(pool->allocate_blocks(3, &ids).is_ok());  // the slab that did arrive is used
  EXPECT_EQ(pool->num_used_blocks(), 4);
  EXPECT_EQ(record.num_allocate_calls, 4);
}

TEST(BlockPoolTest, FreeingAFreeBlockIsReportedAsADoubleFree) {
  SlabRecord record;
  auto pool = make_pool(&record, 8);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(2, &ids).is_ok());
  ASSERT_TRUE(pool->free_blocks(std::vector<int32_t>{1}).is_ok());

  Status status = pool->free_blocks(std::vector<int32_t>{1});
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), StatusCode::kInternal);
  EXPECT_NE(status.message().find("block 1 freed twice"), std::string::npos) << status.message();
  EXPECT_EQ(pool->num_free_blocks(), 1);  // not queued twice
  EXPECT_TRUE(pool->check_invariants().is_ok());

  // The same block twice in one call is a double free as well.
  status = pool->free_blocks(std::vector<int32_t>{0, 0});
  EXPECT_NE(status.message().find("block 0 freed twice"), std::string::npos) << status.message();
  EXPECT_EQ(pool->num_free_blocks(), 2);
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, FreeingAnUnknownBlockIsAnError) {
  SlabRecord record;
  auto pool = make_pool(&record, 8);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(1, &ids).is_ok());
  for (int32_t bad : {-1, 1, 7}) {
    Status status = pool->free_blocks(std::vector<int32_t>{bad});
    EXPECT_EQ(status.code(), StatusCode::kInternal);
    EXPECT_NE(status.message().find("no such block"), std::string::npos) << status.message();
  }
  EXPECT_EQ(pool->num_used_blocks(), 1);
}

TEST(BlockPoolTest, SharedBlockIsFreedOnlyWhenItsLastHolderFreesIt) {
  SlabRecord record;
  auto pool = make_pool(&record, 8);
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(1, &ids).is_ok());
  ASSERT_TRUE(pool->share_blocks(ids).is_ok());
  EXPECT_EQ(pool->block(0).ref_count, 2);

  ASSERT_TRUE(pool->free_blocks(ids).is_ok());
  EXPECT_EQ(pool->block(0).ref_count, 1);
  EXPECT_EQ(pool->num_used_blocks(), 1);
  EXPECT_EQ(pool->num_free_blocks(), 0);

  ASSERT_TRUE(pool->free_blocks(ids).is_ok());
  EXPECT_EQ(pool->num_used_blocks(), 0);
  EXPECT_EQ(pool->num_free_blocks(), 1);

  EXPECT_EQ(pool->share_blocks(ids).code(), StatusCode::kInternal);  // a free block is not shared
  EXPECT_TRUE(pool->check_invariants().is_ok());
}

TEST(BlockPoolTest, PeakUsedBytesRemembersTheHighWaterMark) {
  SlabRecord record;
  auto pool = make_pool(&record, 8);
  const int64_t block_bytes = small_layout().block_bytes();
  std::vector<int32_t> ids;
  ASSERT_TRUE(pool->allocate_blocks(5, &ids).is_ok());
  ASSERT_TRUE(pool->free_blocks(ids).is_ok());
  ids.clear();
  ASSERT_TRUE(pool->allocate_blocks(2, &ids).is_ok());
  EXPECT_EQ(pool->used_bytes(), 2 * block_bytes);
  EXPECT_EQ(pool->peak_used_bytes(), 5 * block_bytes);
  EXPECT_EQ(pool->peak_used_blocks(), 5);
  EXPECT_EQ(pool->allocated_bytes(), 5 * block_bytes);
}

TEST(BlockPoolTest, DestroyingThePoolReleasesEverySlab) {
  SlabRecord record;
  {
    auto pool = make_pool(&record, 100, /*blocks_per_slab=*/3);
    std::vector<int32_t> ids;
    ASSERT_TRUE(pool->allocate_blocks(7, &ids).is_ok());
    EXPECT_EQ(record.num_allocate_calls, 3);
    EXPECT_GT(record.outstanding_bytes, 0);
  }
  EXPECT_EQ(record.num_release_calls, 3);
  EXPECT_EQ(record.outstanding_bytes, 0);
}

TEST(BlockPoolTest, HostAllocatorGivesAlignedWritableMemory) {
  BlockPoolConfig config;
  config.layout = small_layout();
  config.max_blocks = 4;
  auto pool = BlockPool::create(config, make_host_kv_slab_allocator());
  ASSERT_TRUE(pool.is_ok());
  std::vector<int32_t> ids;
  ASSERT_TRUE((*pool)->allocate_blocks(4, &ids).is_ok());
  for (int32_t id : ids) {
    const KvBlock& block = (*pool)->block(id);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(block.k_data) % kKvSlabAlignmentBytes, 0u);
    for (int64_t layer = 0; layer < config.layout.n_layer; ++layer) {
      std::fill_n(reinterpret_cast<float*>(block.k_layer(layer)), 4 * 8, 1.0f);
      std::fill_n(reinterpret_cast<float*>(block.v_layer(layer)), 4 * 8, 2.0f);
    }
  }
  EXPECT_EQ((*pool)->tier(), KvTier::kHost);
}

}  // namespace
}  // namespace strata
