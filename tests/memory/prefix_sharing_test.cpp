// Prefix sharing in the KV cache (memory/prefix_cache.h, KvCache::commit_tokens/attach_prefix):
// a sequence whose prompt starts like a live sequence's shares its full blocks, never a block
// either of them still writes; the K/V it reads are the holder's; blocks are freed when the last
// holder ends; and over random interleavings of many sequences the pool never leaks, never
// double-frees, and holds no more blocks than the tokens need.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "memory/kv_cache.h"
#include "tests/memory/recording_slab_allocator.h"

namespace strata {
namespace {

using testing::recording_allocator;
using testing::SlabRecord;

std::unique_ptr<KvCache> make_cache(SlabRecord* record, int64_t max_blocks) {
  KvCacheConfig config;
  config.layout.n_layer = 2;
  config.layout.kv_dim = 4;
  config.layout.block_tokens = 4;
  config.layout.dtype = DType::kF32;
  config.max_blocks = max_blocks;
  auto cache = KvCache::create(config, recording_allocator(record));
  EXPECT_TRUE(cache.is_ok()) << cache.status().to_string();
  return std::move(cache).value();
}

// Reserves and commits `ids` for `seq`, writing K = token id into every element.
void append(KvCache& cache, SeqId seq, std::span<const int32_t> ids) {
  auto pos0 = cache.reserve_slots(seq, static_cast<int64_t>(ids.size()));
  ASSERT_TRUE(pos0.is_ok()) << pos0.status().to_string();
  for (int64_t l = 0; l < cache.layout().n_layer; ++l) {
    for (size_t i = 0; i < ids.size(); ++i) {
      const KvRowPtrs row = cache.rows(seq, l, *pos0 + static_cast<int64_t>(i));
      for (int64_t e = 0; e < cache.layout().kv_dim; ++e) {
        static_cast<float*>(row.k)[e] = static_cast<float>(ids[i]);
      }
    }
  }
  ASSERT_TRUE(cache.commit_tokens(seq, *pos0, ids).is_ok());
}

// The K of every position of `seq`, as stored.
std::vector<int32_t> read_back(const KvCache& cache, SeqId seq) {
  std::vector<int32_t> out;
  const KvLayerView v = cache.layer_view(seq, 1);
  for (int64_t t = 0; t < v.num_tokens; ++t) {
    const auto* k =
        static_cast<const float*>(v.k_blocks[t / v.block_tokens]) + (t % v.block_tokens) * v.kv_dim;
    out.push_back(static_cast<int32_t>(k[0]));
  }
  return out;
}

TEST(PrefixSharing, ASecondPromptSharesTheFullBlocksOfTheFirst) {
  SlabRecord record;
  auto cache = make_cache(&record, 64);
  const std::vector<int32_t> system = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};  // 2.5 blocks
  ASSERT_TRUE(cache->add_sequence(1).is_ok());
  append(*cache, 1, system);
  EXPECT_EQ(cache->stats().num_prefix_blocks, 2);  // the partial third block is not shareable

  std::vector<int32_t> prompt = system;
  prompt.insert(prompt.end(), {40, 41, 42});
  ASSERT_TRUE(cache->add_sequence(2).is_ok());
  auto shared = cache->attach_prefix(2, prompt);
  ASSERT_TRUE(shared.is_ok()) << shared.status().to_string();
  EXPECT_EQ(*shared, 8);
  EXPECT_EQ(cache->stats().num_shared_blocks, 2);
  append(*cache, 2, std::span(prompt).subspan(8));
  EXPECT_EQ(read_back(*cache, 2), prompt);
  EXPECT_EQ(read_back(*cache, 1), system);  // the holder's own tail was not touched
  // 3 blocks for the first, 2 shared + 2 new for the second.
  EXPECT_EQ(cache->stats().num_used_blocks, 5);
  ASSERT_TRUE(cache->check_invariants().is_ok()) << cache->check_invariants().to_string();

  // The first ends; the second still holds the shared blocks, and a third may share them.
  ASSERT_TRUE(cache->remove_sequence(1).is_ok());
  ASSERT_TRUE(cache->add_sequence(3).is_ok());
  EXPECT_EQ(*cache->attach_prefix(3, prompt), 12);  // now also the second's third block
  ASSERT_TRUE(cache->remove_sequence(2).is_ok());
  ASSERT_TRUE(cache->remove_sequence(3).is_ok());
  EXPECT_EQ(cache->stats().num_used_blocks, 0);
  EXPECT_EQ(cache->stats().num_prefix_blocks, 0);  // nobody holds them: nothing to share
  ASSERT_TRUE(cache->add_sequence(4).is_ok());
  EXPECT_EQ(*cache->attach_prefix(4, prompt), 0);
}

TEST(PrefixSharing, DifferentTokensOrAPartialMatchShareNothingPastTheDifference) {
  SlabRecord record;
  auto cache = make_cache(&record, 64);
  ASSERT_TRUE(cache->add_sequence(1).is_ok());
  append(*cache, 1, std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  ASSERT_TRUE(cache->add_sequence(2).is_ok());
  const std::vector<int32_t> other = {1, 2, 3, 4, 5, 6, 0, 8, 9, 10};
  EXPECT_EQ(*cache->attach_prefix(2, other), 4);  // the second block differs at token 6
  ASSERT_TRUE(cache->add_sequence(3).is_ok());
  const std::vector<int32_t> exact = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(*cache->attach_prefix(3, exact), 4);  // the last token always runs
  // Only an empty sequence attaches; commits go in order.
  EXPECT_EQ(cache->attach_prefix(1, exact).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->commit_tokens(3, 0, exact).code(), StatusCode::kInvalidArgument);
}

TEST(PrefixSharing, RandomSequencesNeverLeakOrWriteASharedBlock) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 20; ++trial) {
    SlabRecord record;
    auto cache = make_cache(&record, 4096);
    // Prompts from three system prompts and random tails, so that many starts coincide.
    std::vector<std::vector<int32_t>> systems(3);
    for (auto& s : systems) {
      s.resize(3 + rng() % 14);
      for (int32_t& t : s) t = static_cast<int32_t>(rng() % 5);
    }
    std::map<SeqId, std::vector<int32_t>> live;  // what each sequence should read back
    SeqId next = 0;
    int64_t most_shared = 0;
    for (int step = 0; step < 300; ++step) {
      const int op = static_cast<int>(rng() % 4);
      if (op == 0 || live.empty()) {  // a new sequence with a prompt
        std::vector<int32_t> prompt = systems[rng() % systems.size()];
        for (int i = 0, n = static_cast<int>(rng() % 6); i < n; ++i) {
          prompt.push_back(static_cast<int32_t>(rng() % 5));
        }
        const SeqId s = next++;
        ASSERT_TRUE(cache->add_sequence(s).is_ok());
        auto shared = cache->attach_prefix(s, prompt);
        ASSERT_TRUE(shared.is_ok());
        append(*cache, s, std::span(prompt).subspan(static_cast<size_t>(*shared)));
        live[s] = prompt;
      } else if (op == 1) {  // a sequence ends
        auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
        ASSERT_TRUE(cache->remove_sequence(it->first).is_ok());
        live.erase(it);
      } else {  // decode a few tokens of one sequence
        auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
        std::vector<int32_t> more(1 + rng() % 5);
        for (int32_t& t : more) t = static_cast<int32_t>(rng() % 5);
        append(*cache, it->first, more);
        it->second.insert(it->second.end(), more.begin(), more.end());
      }
      const Status ok = cache->check_invariants();
      ASSERT_TRUE(ok.is_ok()) << ok.to_string() << " (trial " << trial << ", step " << step << ")";
      int64_t need = 0;
      for (const auto& [s, tokens] : live) {
        ASSERT_EQ(read_back(*cache, s), tokens) << "sequence " << s;
        need += (static_cast<int64_t>(tokens.size()) + 3) / 4;
      }
      // Memory follows the tokens held: never more blocks than the sequences need unshared.
      ASSERT_LE(cache->stats().num_used_blocks, need);
      most_shared = std::max(most_shared, cache->stats().num_shared_blocks);
    }
    EXPECT_GT(most_shared, 0) << "trial " << trial << " never shared a block";
    for (const auto& [s, tokens] : live) ASSERT_TRUE(cache->remove_sequence(s).is_ok());
    EXPECT_EQ(cache->stats().num_used_blocks, 0);
    ASSERT_TRUE(cache->check_invariants().is_ok());
  }
}

}  // namespace
}  // namespace strata
