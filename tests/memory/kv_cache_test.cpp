#include "memory/kv_cache.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "tests/memory/recording_slab_allocator.h"

namespace strata {
namespace {

using testing::recording_allocator;
using testing::SlabRecord;

// 3 layers, rows of 8 elements, 4 tokens per block.
KvLayout small_layout(DType dtype = DType::kF32) {
  KvLayout layout;
  layout.n_layer = 3;
  layout.kv_dim = 8;
  layout.block_tokens = 4;
  layout.dtype = dtype;
  return layout;
}

std::unique_ptr<KvCache> make_cache(SlabRecord* record, int64_t max_blocks,
                                    DType dtype = DType::kF32) {
  KvCacheConfig config;
  config.layout = small_layout(dtype);
  config.max_blocks = max_blocks;
  auto cache = KvCache::create(config, recording_allocator(record));
  EXPECT_TRUE(cache.is_ok()) << cache.status().to_string();
  return std::move(cache).value();
}

// A value that names (sequence, layer, K or V, position, element), to find misplaced writes.
float stamp(SeqId seq, int64_t layer, bool is_v, int64_t position, int64_t elem) {
  return static_cast<float>(((seq * 16 + layer) * 2 + (is_v ? 1 : 0)) * 100000 + position * 8 +
                            elem);
}

void write_stamps(KvCache& cache, SeqId seq, int64_t first, int64_t last) {
  for (int64_t layer = 0; layer < cache.layout().n_layer; ++layer) {
    for (int64_t t = first; t < last; ++t) {
      const KvRowPtrs rows = cache.rows(seq, layer, t);
      for (int64_t e = 0; e < cache.layout().kv_dim; ++e) {
        static_cast<float*>(rows.k)[e] = stamp(seq, layer, false, t, e);
        static_cast<float*>(rows.v)[e] = stamp(seq, layer, true, t, e);
      }
    }
  }
}

// Reads every token of `seq` through the attention view; returns the first mismatch or "".
std::string check_stamps(const KvCache& cache, SeqId seq) {
  for (int64_t layer = 0; layer < cache.layout().n_layer; ++layer) {
    const KvLayerView view = cache.layer_view(seq, layer);
    for (int64_t t = 0; t < view.num_tokens; ++t) {
      const auto* k = static_cast<const float*>(kv_k_row(view, t));
      const auto* v = static_cast<const float*>(kv_v_row(view, t));
      for (int64_t e = 0; e < view.kv_dim; ++e) {
        if (k[e] != stamp(seq, layer, false, t, e) || v[e] != stamp(seq, layer, true, t, e)) {
          return "sequence " + std::to_string(seq) + " layer " + std::to_string(layer) + " token " +
                 std::to_string(t) + " element " + std::to_string(e);
        }
      }
    }
  }
  return "";
}

TEST(KvCacheTest, NewSequenceHoldsNoMemory) {
  SlabRecord record;
  auto cache = make_cache(&record, 100);
  ASSERT_TRUE(cache->add_sequence(7).is_ok());
  EXPECT_TRUE(cache->has_sequence(7));
  EXPECT_EQ(cache->num_tokens(7), 0);
  EXPECT_EQ(cache->stats().allocated_bytes, 0);
  EXPECT_EQ(record.num_allocate_calls, 0);
  const KvLayerView view = cache->layer_view(7, 0);
  EXPECT_EQ(view.num_blocks, 0);
  EXPECT_EQ(view.num_tokens, 0);
}

TEST(KvCacheTest, ReserveReturnsTheFirstNewPosition) {
  SlabRecord record;
  auto cache = make_cache(&record, 100);
  ASSERT_TRUE(cache->add_sequence(1).is_ok());
  auto first = cache->reserve_slots(1, 5);  // a prompt of 5 tokens
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(*first, 0);
  first = cache->reserve_slots(1, 1);  // the next decoded token
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(*first, 5);
  EXPECT_EQ(cache->num_tokens(1), 6);
}

TEST(KvCacheTest, MemoryGrowsOnlyWithTokensHeld) {
  SlabRecord record;
  auto cache = make_cache(&record, 1000);
  const KvLayout layout = small_layout();
  ASSERT_TRUE(cache->add_sequence(0).is_ok());
  for (int64_t n = 1; n <= 50; ++n) {
    ASSERT_TRUE(cache->reserve_slots(0, 1).is_ok());
    const KvCacheStats stats = cache->stats();
    EXPECT_EQ(stats.num_used_blocks, layout.blocks_for_tokens(n)) << n << " tokens";
    EXPECT_EQ(stats.allocated_bytes, layout.blocks_for_tokens(n) * layout.block_bytes())
        << n << " tokens";
    EXPECT_EQ(stats.num_tokens, n);
  }
  EXPECT_EQ(record.num_allocate_calls, layout.blocks_for_tokens(50));
}

TEST(KvCacheTest, RemovedSequenceBlocksAreReusedWithoutGrowth) {
  SlabRecord record;
  auto cache = make_cache(&record, 1000);
  ASSERT_TRUE(cache->add_sequence(1).is_ok());
  ASSERT_TRUE(cache->reserve_slots(1, 100).is_ok());
  const int64_t allocated = cache->stats().allocated_bytes;
  const int64_t calls = record.num_allocate_calls;

  ASSERT_TRUE(cache->remove_sequence(1).is_ok());
  EXPECT_FALSE(cache->has_sequence(1));
  EXPECT_EQ(cache->stats().used_bytes, 0);
  EXPECT_EQ(cache->stats().num_free_blocks, 25);
  EXPECT_EQ(cache->stats().allocated_bytes, allocated);

  for (SeqId seq = 2; seq < 12; ++seq) {  // ten more sequences of the same length, one at a time
    ASSERT_TRUE(cache->add_sequence(seq).is_ok());
    ASSERT_TRUE(cache->reserve_slots(seq, 100).is_ok());
    ASSERT_TRUE(cache->remove_sequence(seq).is_ok());
  }
  EXPECT_EQ(cache->stats().allocated_bytes, allocated);
  EXPECT_EQ(record.num_allocate_calls, calls);
}

TEST(KvCacheTest, ViewListsExactlyTheBlocksOfTheSequenceInTokenOrder) {
  SlabRecord record;
  auto cache = make_cache(&record, 100);
  ASSERT_TRUE(cache->add_sequence(1).is_ok());
  ASSERT_TRUE(cache->add_sequence(2).is_ok());
  for (int step = 0; step < 3; ++step) {  // interleaved, so each sequence's blocks are scattered
    ASSERT_TRUE(cache->reserve_slots(1, 4).is_ok());
    ASSERT_TRUE(cache->reserve_slots(2, 3).is_ok());
  }
  ASSERT_TRUE(cache->reserve_slots(1, 1).is_ok());  // 13 tokens: 4 blocks

  const KvLayout layout = small_layout();
  for (SeqId seq : {1, 2}) {
    const BlockTable& table = cache->block_table(seq);
    for (int64_t layer = 0; layer < layout.n_layer; ++layer) {
      const KvLayerView view = cache->layer_view(seq, layer);
      EXPECT_EQ(view.num_tokens, table.num_tokens());
      EXPECT_EQ(view.num_blocks, table.num_blocks());
      EXPECT_EQ(view.num_blocks, layout.blocks_for_tokens(view.num_tokens));
      EXPECT_EQ(view.block_tokens, 4);
      EXPECT_EQ(view.kv_dim, 8);
      EXPECT_EQ(view.dtype, DType::kF32);
      for (int64_t b = 0; b < view.num_blocks; ++b) {
        const KvBlock& block = cache->pool().block(table.block_ids()[b]);
        EXPECT_EQ(view.k_blocks[b], block.k_layer(layer)) << "seq " << seq << " block " << b;
        EXPECT_EQ(view.v_blocks[b], block.v_layer(layer)) << "seq " << seq << " block " << b;
      }
    }
  }
  EXPECT_EQ(cache->layer_view(1, 0).num_tokens, 13);
  EXPECT_EQ(cache->layer_view(2, 2).num_tokens, 9);
  EXPECT_EQ(cache->block_table(1).num_blocks(), 4);
  EXPECT_EQ(cache->block_table(2).num_blocks(), 3);
}

TEST(KvCacheTest, RowsOfTokenTAreRowTModBlockTokensOfBlockTOverBlockTokens) {
  SlabRecord record;
  auto cache = make_cache(&record, 100);
  const KvLayout layout = small_layout();
  ASSERT_TRUE(cache->add_sequence(3).is_ok());
  ASSERT_TRUE(cache->reserve_slots(3, 11).is_ok());
  const BlockTable& table = cache->block_table(3);
  for (int64_t layer = 0; layer < layout.n_layer; ++layer) {
    const KvLayerView view = cache->layer_view(3, layer);
    for (int64_t t = 0; t < 11; ++t) {
      const KvRowPtrs rows = cache->rows(3, layer, t);
      const KvBlock& block = cache->pool().block(table.block_ids()[t / 4]);
      EXPECT_EQ(rows.k, block.k_layer(layer) + (t % 4) * layout.row_bytes()) << "token " << t;
      EXPECT_EQ(rows.v, block.v_layer(layer) + (t % 4) * layout.row_bytes()) << "token " << t;
      EXPECT_EQ(rows.k, kv_k_row(view, t));
      EXPECT_EQ(rows.v, kv_v_row(view, t));
    }
  }
}

TEST(KvCacheTest, WhatIsWrittenThroughRowsIsReadBackThroughTheView) {
  SlabRecord record;
  auto cache = make_cache(&record, 100);
  for (SeqId seq : {10, 11, 12}) ASSERT_TRUE(cache->add_sequence(seq).is_ok());
  // Grow the three sequences in turns, writing each new token as the forward pass would.
  for (int64_t step = 0; step < 9; ++step) {
    for (SeqId seq : {10, 11, 12}) {
      const int64_t n = 1 + (seq + step) % 3;
      auto first = cache->reserve_slots(seq, n);
      ASSERT_TRUE(first.is_ok());
      write_stamps(*cache, seq, *first, *first + n);
    }
  }
  for (SeqId seq : {10, 11, 12}) EXPECT_EQ(check_stamps(*cache, seq), "") << "mismatch";
}

TEST(KvCacheTest, F16LayoutHasTwoByteRows) {
  SlabRecord record;
  auto cache = make_cache(&record, 100, DType::kF16);
  ASSERT_TRUE(cache->add_sequence(0).is_ok());
  ASSERT_TRUE(cache->reserve_slots(0, 6).is_ok());
  const KvLayerView view = cache->layer_view(0, 1);
  EXPECT_EQ(view.dtype, DType::kF16);
  EXPECT_EQ(static_cast<char*>(kv_k_row(view, 1)) - static_cast<char*>(kv_k_row(view, 0)), 8 * 2);
  EXPECT_EQ(cache->stats().block_bytes, small_layout(DType::kF32).block_bytes() / 2);
  EXPECT_EQ(cache->stats().allocated_bytes, 2 * cache->stats().block_bytes);
}

TEST(KvCacheTest, BudgetExhaustionNamesTheSequenceAndLeavesItUnchanged) {
  SlabRecord record;
  auto cache = make_cache(&record, /*max_blocks=*/3);
  ASSERT_TRUE(cache->add_sequence(5).is_ok());
  ASSERT_TRUE(cache->reserve_slots(5, 10).is_ok());  // 3 blocks

  auto result = cache->reserve_slots(5, 3);  // 13 tokens would need a 4th block
  ASSERT_FALSE(result.is_ok());
  const Status& status = result.status();
  EXPECT_EQ(status.code(), StatusCode::kOutOfMemory);
  EXPECT_NE(status.message().find("KV cache budget exhausted"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("sequence 5 growing from 10 to 13 tokens"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("raise the KV budget"), std::string::npos) << status.message();
  EXPECT_EQ(cache->num_tokens(5), 10);
  EXPECT_EQ(cache->layer_view(5, 0).num_blocks, 3);

  ASSERT_TRUE(cache->reserve_slots(5, 2).is_ok());  // 12 tokens still fit
}

TEST(KvCacheTest, UnknownOrDuplicateSequencesAreClearErrors) {
  SlabRecord record;
  auto cache = make_cache(&record, 10);
  EXPECT_EQ(cache->reserve_slots(4, 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(cache->remove_sequence(4).code(), StatusCode::kNotFound);

  ASSERT_TRUE(cache->add_sequence(4).is_ok());
  Status twice = cache->add_sequence(4);
  EXPECT_EQ(twice.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(twice.message().find("sequence 4 already exists"), std::string::npos);
  EXPECT_EQ(cache->reserve_slots(4, -1).status().code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE(cache->reserve_slots(4, 5).is_ok());
  ASSERT_TRUE(cache->remove_sequence(4).is_ok());
  Status removed_twice = cache->remove_sequence(4);  // no double free of its blocks
  EXPECT_EQ(removed_twice.code(), StatusCode::kNotFound);
  EXPECT_EQ(cache->pool().num_free_blocks(), 2);
  EXPECT_TRUE(cache->pool().check_invariants().is_ok());
}

TEST(KvCacheTest, StatsReportCurrentAndPeakBytes) {
  SlabRecord record;
  auto cache = make_cache(&record, 100);
  const int64_t block_bytes = small_layout().block_bytes();
  ASSERT_TRUE(cache->add_sequence(1).is_ok());
  ASSERT_TRUE(cache->add_sequence(2).is_ok());
  ASSERT_TRUE(cache->reserve_slots(1, 8).is_ok());
  ASSERT_TRUE(cache->reserve_slots(2, 5).is_ok());
  ASSERT_TRUE(cache->remove_sequence(1).is_ok());

  const KvCacheStats stats = cache->stats();
  EXPECT_EQ(stats.num_sequences, 1);
  EXPECT_EQ(stats.num_tokens, 5);
  EXPECT_EQ(stats.num_used_blocks, 2);
  EXPECT_EQ(stats.num_free_blocks, 2);
  EXPECT_EQ(stats.max_blocks, 100);
  EXPECT_EQ(stats.block_bytes, block_bytes);
  EXPECT_EQ(stats.used_bytes, 2 * block_bytes);
  EXPECT_EQ(stats.peak_used_bytes, 4 * block_bytes);
  EXPECT_EQ(stats.allocated_bytes, 4 * block_bytes);
  EXPECT_EQ(stats.budget_bytes, 100 * block_bytes);
}

TEST(KvCacheTest, MaxBlocksForBytesRoundsDown) {
  const KvLayout layout = small_layout();
  EXPECT_EQ(KvCacheConfig::max_blocks_for_bytes(layout, 10 * layout.block_bytes()), 10);
  EXPECT_EQ(KvCacheConfig::max_blocks_for_bytes(layout, 10 * layout.block_bytes() - 1), 9);
}

TEST(KvCacheTest, DestroyingTheCacheReleasesLiveSequencesAndSlabs) {
  SlabRecord record;
  {
    auto cache = make_cache(&record, 100);
    ASSERT_TRUE(cache->add_sequence(1).is_ok());
    ASSERT_TRUE(cache->reserve_slots(1, 30).is_ok());
  }
  EXPECT_EQ(record.outstanding_bytes, 0);
  EXPECT_EQ(record.num_release_calls, record.num_allocate_calls);
}

// Property: any interleaving of sequences that start, grow by random amounts and end leaks no
// block, never shares a row between live sequences, and never takes more memory than the peak of
// what was held. The seed is fresh each run and printed on failure.
TEST(KvCacheTest, NoLeakAfterManyInterleavedSequencesOfRandomLengths) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (rerun with this seed to reproduce)");
  std::mt19937 rng(seed);

  SlabRecord record;
  const int64_t max_blocks = 64;
  auto cache = make_cache(&record, max_blocks);
  const KvLayout layout = small_layout();
  std::map<SeqId, int64_t> live;  // sequence -> tokens the test expects it to hold
  SeqId next_seq = 0;
  int64_t num_out_of_memory = 0;

  for (int step = 0; step < 3000; ++step) {
    const int action = static_cast<int>(rng() % 10);
    if (action < 2 || live.empty()) {  // start a sequence
      ASSERT_TRUE(cache->add_sequence(next_seq).is_ok());
      live[next_seq++] = 0;
    } else if (action < 4) {  // end a random sequence
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      ASSERT_TRUE(cache->remove_sequence(it->first).is_ok());
      live.erase(it);
    } else {  // grow a random sequence by 1 token (decode) or up to 40 (prompt)
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      const int64_t n = (rng() % 2 == 0) ? 1 : 1 + static_cast<int64_t>(rng() % 40);
      auto first = cache->reserve_slots(it->first, n);
      if (first.is_ok()) {
        ASSERT_EQ(*first, it->second);
        write_stamps(*cache, it->first, *first, *first + n);
        it->second += n;
      } else {
        ASSERT_EQ(first.status().code(), StatusCode::kOutOfMemory) << first.status().to_string();
        ++num_out_of_memory;
      }
    }

    ASSERT_TRUE(cache->pool().check_invariants().is_ok())
        << cache->pool().check_invariants().to_string() << " at step " << step;
    int64_t expected_blocks = 0;
    for (const auto& [seq, tokens] : live) {
      ASSERT_EQ(cache->num_tokens(seq), tokens);
      expected_blocks += layout.blocks_for_tokens(tokens);
    }
    const KvCacheStats stats = cache->stats();
    ASSERT_EQ(stats.num_used_blocks, expected_blocks) << "step " << step;
    ASSERT_LE(stats.allocated_bytes, stats.peak_used_bytes) << "step " << step;
    ASSERT_LE(stats.allocated_bytes, stats.budget_bytes);
    if (step % 100 == 0) {
      for (const auto& [seq, tokens] : live) ASSERT_EQ(check_stamps(*cache, seq), "");
    }
  }
  for (const auto& [seq, tokens] : live) ASSERT_EQ(check_stamps(*cache, seq), "");
  for (const auto& [seq, tokens] : live) ASSERT_TRUE(cache->remove_sequence(seq).is_ok());

  const KvCacheStats stats = cache->stats();
  EXPECT_EQ(stats.num_used_blocks, 0);
  EXPECT_EQ(stats.used_bytes, 0);
  EXPECT_EQ(stats.num_free_blocks * stats.block_bytes, stats.allocated_bytes);
  EXPECT_EQ(record.outstanding_bytes, stats.allocated_bytes);
  EXPECT_TRUE(cache->pool().check_invariants().is_ok());
  RecordProperty("out_of_memory_refusals", static_cast<int>(num_out_of_memory));
}

}  // namespace
}  // namespace strata
