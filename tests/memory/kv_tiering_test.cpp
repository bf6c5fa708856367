// KV tiers (KvCache with a cold tier, KvTiering): blocks that leave a sequence's hot window move
// to the cold pool with their contents, sinks and shared blocks stay, the views follow the
// moves, and over many interleaved sequences of random lengths both pools keep their invariants,
// free everything at the end, and hold no more blocks than the tokens need.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "memory/kv_cache.h"
#include "tests/memory/recording_slab_allocator.h"

namespace strata {
namespace {

using testing::recording_allocator;
using testing::SlabRecord;

// The library's memcpy mover, counting the bytes it moves.
class MemcpyMover final : public KvBlockMover {
 public:
  explicit MemcpyMover(int64_t* bytes) : bytes_(bytes) {}
  Status copy(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t row_bytes,
              int64_t rows) override {
    *bytes_ += rows * row_bytes;
    return inner_->copy(dst, dst_pitch, src, src_pitch, row_bytes, rows);
  }

 private:
  std::unique_ptr<KvBlockMover> inner_ = make_memcpy_kv_block_mover();
  int64_t* bytes_;
};

struct Tiered {
  SlabRecord hot, cold;
  int64_t moved_bytes = 0;
  std::unique_ptr<KvCache> cache;
};

std::unique_ptr<Tiered> make(int64_t window, int64_t sinks, int64_t cold_blocks = 4096,
                             int64_t cold_blocks_per_slab = 1) {
  auto t = std::make_unique<Tiered>();
  KvCacheConfig c;
  c.layout.n_layer = 2;
  c.layout.kv_dim = 4;
  c.layout.block_tokens = 4;
  c.layout.dtype = DType::kF32;
  c.max_blocks = 4096;
  c.tiering.cold_max_blocks = cold_blocks;
  c.tiering.hot_window_tokens = window;
  c.tiering.sink_blocks = sinks;
  c.cold_blocks_per_slab = cold_blocks_per_slab;
  auto cache = KvCache::create(c, recording_allocator(&t->hot, KvTier::kDevice),
                               recording_allocator(&t->cold, KvTier::kHost),
                               std::make_unique<MemcpyMover>(&t->moved_bytes));
  EXPECT_TRUE(cache.is_ok()) << cache.status().to_string();
  t->cache = std::move(cache).value();
  return t;
}

// K and V of (seq, layer, position, element), distinct everywhere.
float stamp(SeqId s, int64_t l, bool v, int64_t p, int64_t e) {
  return static_cast<float>(((s * 4 + l) * 2 + v) * 100000 + p * 8 + e);
}

void grow(KvCache& cache, SeqId seq, int64_t n) {
  auto pos0 = cache.reserve_slots(seq, n);
  ASSERT_TRUE(pos0.is_ok()) << pos0.status().to_string();
  for (int64_t l = 0; l < 2; ++l) {
    for (int64_t p = *pos0; p < *pos0 + n; ++p) {
      const KvRowPtrs r = cache.rows(seq, l, p);
      for (int64_t e = 0; e < 4; ++e) {
        static_cast<float*>(r.k)[e] = stamp(seq, l, false, p, e);
        static_cast<float*>(r.v)[e] = stamp(seq, l, true, p, e);
      }
    }
  }
}

void expect_contents(const KvCache& cache, SeqId seq) {
  for (int64_t l = 0; l < 2; ++l) {
    const KvLayerView v = cache.layer_view(seq, l);
    for (int64_t p = 0; p < v.num_tokens; ++p) {
      for (int64_t e = 0; e < 4; ++e) {
        ASSERT_EQ(static_cast<const float*>(kv_k_row(v, p))[e], stamp(seq, l, false, p, e))
            << "seq " << seq << " layer " << l << " position " << p;
        ASSERT_EQ(static_cast<const float*>(kv_v_row(v, p))[e], stamp(seq, l, true, p, e));
      }
    }
  }
}

TEST(KvTiering, OldBlocksMoveColdWithTheirContentsSinksAndTheWindowStay) {
  auto t = make(/*window=*/8, /*sinks=*/1);
  KvCache& c = *t->cache;
  ASSERT_TRUE(c.add_sequence(7).is_ok());
  grow(c, 7, 30);  // blocks 0..7, the last holds 2 tokens
  auto moved = c.demote_cold(7);
  ASSERT_TRUE(moved.is_ok()) << moved.status().to_string();
  // Hot: the sink (0), the window's blocks (tokens 22..29: blocks 5, 6, 7). Cold: 1..4.
  EXPECT_EQ(*moved, 4);
  for (int64_t b = 0; b < 8; ++b) {
    const bool cold = b >= 1 && b <= 4;
    EXPECT_EQ(c.block_tier(7, b), cold ? KvTier::kHost : KvTier::kDevice) << "block " << b;
  }
  EXPECT_EQ(c.stats().num_used_blocks, 4);
  EXPECT_EQ(c.stats().cold_used_blocks, 4);
  EXPECT_EQ(t->moved_bytes, 4 * c.layout().block_bytes());
  expect_contents(c, 7);
  // Growing on moves the window: one more block goes cold, and nothing moves twice.
  grow(c, 7, 4);
  EXPECT_EQ(*c.demote_cold(7), 1);
  EXPECT_EQ(*c.demote_cold(7), 0);
  expect_contents(c, 7);
  ASSERT_TRUE(c.check_invariants().is_ok()) << c.check_invariants().to_string();
  ASSERT_TRUE(c.remove_sequence(7).is_ok());
  EXPECT_EQ(c.stats().num_used_blocks, 0);
  EXPECT_EQ(c.stats().cold_used_blocks, 0);
}

TEST(KvTiering, TheColdTierGrowsInSlabsOfItsOwnSize) {
  // 8 blocks per cold slab (a GPU run pins 64 MiB at a time), the hot tier one block per slab.
  auto t = make(/*window=*/4, /*sinks=*/0, /*cold_blocks=*/20, /*cold_blocks_per_slab=*/8);
  KvCache& c = *t->cache;
  ASSERT_TRUE(c.add_sequence(1).is_ok());
  grow(c, 1, 4 * 12);  // 12 blocks; all but the last move
  auto moved = c.demote_cold(1);
  ASSERT_TRUE(moved.is_ok()) << moved.status().to_string();
  ASSERT_EQ(*moved, 11);
  const int64_t block = c.layout().block_bytes();
  EXPECT_EQ(t->cold.allocated_sizes, (std::vector<int64_t>{8 * block, 8 * block}));
  for (int64_t size : t->hot.allocated_sizes) EXPECT_EQ(size, block);
  // A slab of 8 strides layers by 8 blocks, the hot tier's by one: every value still arrives.
  expect_contents(c, 1);
  grow(c, 1, 4 * 9);  // 9 more cold blocks: 20 in all, the last slab cut at the budget
  moved = c.demote_cold(1);
  ASSERT_TRUE(moved.is_ok()) << moved.status().to_string();
  ASSERT_EQ(*moved, 9);
  EXPECT_EQ(t->cold.allocated_sizes, (std::vector<int64_t>{8 * block, 8 * block, 4 * block}));
  expect_contents(c, 1);
  EXPECT_EQ(t->moved_bytes, 20 * block);
  EXPECT_TRUE(c.check_invariants().is_ok());
}

TEST(KvTiering, SharedBlocksStayHotAndAColdPrefixIsStillShared) {
  auto t = make(/*window=*/4, /*sinks=*/0);
  KvCache& c = *t->cache;
  std::vector<int32_t> prompt(17);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(i);
  ASSERT_TRUE(c.add_sequence(1).is_ok());
  grow(c, 1, 17);
  ASSERT_TRUE(c.commit_tokens(1, 0, prompt).is_ok());
  ASSERT_TRUE(c.add_sequence(2).is_ok());
  EXPECT_EQ(*c.attach_prefix(2, prompt), 16);  // blocks 0..3 shared
  EXPECT_EQ(*c.demote_cold(1), 0);             // all four are shared: they stay
  ASSERT_TRUE(c.remove_sequence(2).is_ok());
  EXPECT_EQ(*c.demote_cold(1), 3);  // now only the window's block (3) and the partial one stay
  ASSERT_TRUE(c.add_sequence(3).is_ok());
  EXPECT_EQ(*c.attach_prefix(3, prompt), 16);  // cold blocks are shared from the cold tier
  for (int64_t l = 0; l < 2; ++l) {
    const KvLayerView a = c.layer_view(1, l), b = c.layer_view(3, l);
    for (int64_t p = 0; p < 16; ++p) {
      EXPECT_EQ(std::memcmp(kv_k_row(a, p), kv_k_row(b, p), 16), 0) << "position " << p;
    }
  }
  ASSERT_TRUE(c.check_invariants().is_ok()) << c.check_invariants().to_string();
}

TEST(KvTiering, AFullColdTierIsAClearError) {
  auto t = make(/*window=*/4, /*sinks=*/0, /*cold_blocks=*/2);
  KvCache& c = *t->cache;
  ASSERT_TRUE(c.add_sequence(1).is_ok());
  grow(c, 1, 40);
  auto moved = c.demote_cold(1);
  ASSERT_FALSE(moved.is_ok());
  EXPECT_EQ(moved.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(moved.status().message().find("cold tier is full"), std::string::npos);
  expect_contents(c, 1);  // what moved and what did not are both intact
  ASSERT_TRUE(c.check_invariants().is_ok());
}

TEST(KvTiering, WithoutAColdTierNothingMovesAndABadConfigIsRefused) {
  KvCacheConfig cfg;
  cfg.layout.n_layer = 1;
  cfg.layout.kv_dim = 4;
  cfg.layout.block_tokens = 4;
  cfg.max_blocks = 8;
  cfg.tiering.cold_max_blocks = 4;  // but no allocator or mover
  EXPECT_EQ(KvCache::create(cfg).status().code(), StatusCode::kInvalidArgument);
  cfg.tiering.cold_max_blocks = 0;
  auto cache = KvCache::create(cfg);
  ASSERT_TRUE(cache.is_ok());
  ASSERT_TRUE((*cache)->add_sequence(1).is_ok());
  ASSERT_TRUE((*cache)->reserve_slots(1, 30).is_ok());
  EXPECT_EQ(*(*cache)->demote_cold(1), 0);
}

TEST(KvTiering, ManySequencesOfRandomLengthsInterleaved) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 10; ++trial) {
    const int64_t window = 1 + rng() % 12, sinks = rng() % 3;
    auto t = make(window, sinks);
    KvCache& c = *t->cache;
    std::map<SeqId, int64_t> live;
    SeqId next = 0;
    int64_t most_cold = 0;
    for (int step = 0; step < 400; ++step) {
      const int op = static_cast<int>(rng() % 5);
      if (op == 0 || live.empty()) {
        ASSERT_TRUE(c.add_sequence(next).is_ok());
        live[next++] = 0;
      } else if (op == 1 && live.size() > 1) {
        auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
        ASSERT_TRUE(c.remove_sequence(it->first).is_ok());
        live.erase(it);
      } else {
        auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
        const int64_t n = 1 + static_cast<int64_t>(rng() % 9);
        grow(c, it->first, n);
        it->second += n;
        if (rng() % 2) {
          ASSERT_TRUE(c.demote_cold(it->first).is_ok());
        }
      }
      const Status ok = c.check_invariants();
      ASSERT_TRUE(ok.is_ok()) << ok.to_string() << " (trial " << trial << ", step " << step << ")";
      int64_t need = 0;
      for (const auto& [s, n] : live) need += (n + 3) / 4;
      ASSERT_EQ(c.stats().num_used_blocks + c.stats().cold_used_blocks, need);
      most_cold = std::max(most_cold, c.stats().cold_used_blocks);
    }
    for (const auto& [s, n] : live) {
      expect_contents(c, s);
      ASSERT_TRUE(c.remove_sequence(s).is_ok());
    }
    EXPECT_EQ(c.stats().num_used_blocks, 0);
    EXPECT_EQ(c.stats().cold_used_blocks, 0);
    EXPECT_GT(most_cold, 0) << "trial " << trial << " never used the cold tier";
  }
}

}  // namespace
}  // namespace strata
