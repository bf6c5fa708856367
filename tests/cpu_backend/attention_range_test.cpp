// CPU attention over a paged KV cache (cpu_backend/attention.h): the whole attention against a
// float64 reference, and attention split over key ranges (attention_range) merged through the
// log-sum-exp (merge_attention) against the whole, as issue 6 splits it between tiers. Fresh
// random inputs each run, blocks in a shuffled order, rows past the sequence NaN, outputs
// poisoned before the kernels run.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cpu_backend/attention.h"
#include "tests/cpu_backend/paged_kv.h"
#include "offload/core/dequantize.h"
#include "offload/core/dtype.h"
#include "offload/core/quantize.h"

namespace strata::cpu {
namespace {

using testing_kv::kv_at;
using testing_kv::make_paged;
using testing_kv::Paged;
using testing_kv::reference;

class AttentionRange : public ::testing::TestWithParam<DType> {};

TEST_P(AttentionRange, WholeAttentionMatchesFloat64AndSplitsMergeExactly) {
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // q8_0 rows are 32-element blocks: head sizes of 32, 64 and 128 there. f16 and q8_0 heads of
  // 64 and 128 take the AVX-512 loops (llama3's shape: 4 query heads per KV head).
  const std::vector<AttentionShape> shapes =
      GetParam() == DType::kQ8_0
          ? std::vector<AttentionShape>{{4, 2, 32}, {8, 1, 64}, {6, 6, 32}, {8, 2, 128}, {3, 3, 64}}
          : std::vector<AttentionShape>{{4, 2, 8}, {8, 1, 16}, {6, 6, 32}, {8, 2, 128}, {3, 3, 64}};
  for (const AttentionShape s : shapes) {
    const int64_t tokens = 40 + static_cast<int64_t>(rng() % 60), bt = 4 + rng() % 13;
    const Paged p = make_paged(rng, s, GetParam(), tokens, bt);
    const int64_t n = 3, qd = s.n_head * s.head_dim;
    std::vector<float> q(static_cast<size_t>(n * qd));
    for (float& x : q) x = normal(rng);
    // Decode-like queries at the end and one early (causality cuts its ranges).
    const std::vector<int32_t> pos = {static_cast<int32_t>(tokens - 1),
                                      static_cast<int32_t>(tokens - 2), 5};
    std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(tokens, s)));
    std::vector<float> whole(q.size(), NAN);
    attention(q.data(), n, pos.data(), p.view, s, whole.data(), scratch.data());
    for (int64_t t = 0; t < n; ++t) {
      const std::vector<double> ref = reference(q.data() + t * qd, pos[t], p.view, s, 0, tokens);
      for (int64_t i = 0; i < qd; ++i) {
        ASSERT_TRUE(std::isfinite(whole[t * qd + i]));
        EXPECT_NEAR(whole[t * qd + i], ref[i], 2e-5) << "token " << t << " elem " << i;
      }
    }
    // Three ranges, the middle one possibly empty, merged pairwise.
    const int64_t a = 1 + rng() % (tokens - 2);
    const int64_t b = a + rng() % (tokens - a);
    const int64_t cuts[4] = {0, a, b, tokens};
    std::vector<float> acc(q.size(), NAN), acc_lse(static_cast<size_t>(n * s.n_head), NAN);
    for (int r = 0; r < 3; ++r) {
      std::vector<float> part(q.size(), NAN), lse(acc_lse.size(), NAN);
      attention_range(q.data(), n, pos.data(), p.view, s, cuts[r], cuts[r + 1], part.data(),
                      lse.data(), scratch.data());
      for (int64_t t = 0; t < n; ++t) {  // each part alone is the attention over its range
        if (std::min<int64_t>(cuts[r + 1], pos[t] + 1) <= cuts[r]) {
          for (int64_t h = 0; h < s.n_head; ++h) EXPECT_EQ(lse[t * s.n_head + h], -INFINITY);
          continue;
        }
        const auto ref = reference(q.data() + t * qd, pos[t], p.view, s, cuts[r], cuts[r + 1]);
        for (int64_t i = 0; i < qd; ++i) EXPECT_NEAR(part[t * qd + i], ref[i], 2e-5);
      }
      if (r == 0) {
        acc = part;
        acc_lse = lse;
      } else {
        merge_attention(acc.data(), acc_lse.data(), part.data(), lse.data(), n * s.n_head,
                        s.head_dim, acc.data(), acc_lse.data());
      }
    }
    for (size_t i = 0; i < acc.size(); ++i) {
      ASSERT_TRUE(std::isfinite(acc[i]));
      EXPECT_NEAR(acc[i], whole[i], 1e-5 * (1 + std::abs(whole[i]))) << "merged elem " << i;
    }
  }
}

TEST_P(AttentionRange, LongKeyRangesSplitAcrossThreadsMatchFloat64) {
  // One token and one or two KV heads are fewer work items than threads: attention_range then
  // splits the keys into pieces (at least 256 keys each) and merges them. 8 threads on any
  // machine, so that 2-8 pieces are exercised; one query early enough that later pieces hold
  // no key of it.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(8);
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t hd = GetParam() == DType::kQ8_0 ? 32 : 16;
  // Then heads of 64 and 128 (f16 and q8_0 take the AVX-512 loops there), an even group of 8 and an
  // odd one of 3 (the pair loops' lone last head); several 64-key chunks per piece exercise the
  // running max and sum.
  for (const AttentionShape s :
       {AttentionShape{4, 1, hd}, AttentionShape{4, 2, hd}, AttentionShape{16, 2, 64},
        AttentionShape{12, 4, 128}, AttentionShape{8, 2, 128}}) {
    for (const int64_t tokens : {600, 2100}) {
      SCOPED_TRACE(std::to_string(s.n_head_kv) + " KV heads, " + std::to_string(tokens));
      const Paged p = make_paged(rng, s, GetParam(), tokens, 16);
      const int64_t qd = s.n_head * s.head_dim;
      for (const int32_t pos : {static_cast<int32_t>(tokens - 1), static_cast<int32_t>(300)}) {
        std::vector<float> q(static_cast<size_t>(qd));
        for (float& x : q) x = normal(rng);
        std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(tokens, s)));
        std::vector<float> out(q.size(), NAN), lse(static_cast<size_t>(s.n_head), NAN);
        // A range that starts after 0: the pieces cover [begin, end) only.
        const int64_t begin = 37;
        attention_range(q.data(), 1, &pos, p.view, s, begin, tokens, out.data(), lse.data(),
                        scratch.data());
        const std::vector<double> ref = reference(q.data(), pos, p.view, s, begin, tokens);
        for (int64_t i = 0; i < qd; ++i) {
          ASSERT_TRUE(std::isfinite(out[i])) << i;
          EXPECT_NEAR(out[i], ref[i], 2e-5) << "elem " << i << " pos " << pos;
        }
        for (float l : lse) EXPECT_TRUE(std::isfinite(l));
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST_P(AttentionRange, SeveralRangesInOneCallMatchTheirPartsMerged) {
  // attention_ranges over four disjoint ranges (some possibly empty) in one region against
  // attention_range per range merged through the log-sum-exps; one token (keys split into pieces
  // that cross ranges) and three (per KV head), one query early enough to cut later ranges.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(8);
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t hd = GetParam() == DType::kQ8_0 ? 32 : 16;
  for (const AttentionShape s : {AttentionShape{4, 1, hd}, AttentionShape{12, 4, 128}}) {
    const int64_t tokens = 2100;
    const Paged p = make_paged(rng, s, GetParam(), tokens, 16);
    std::vector<int64_t> cuts(8);
    for (int64_t& c : cuts) c = static_cast<int64_t>(rng() % (tokens + 1));
    std::sort(cuts.begin(), cuts.end());
    std::vector<KeyRange> ranges;
    for (size_t i = 0; i < cuts.size(); i += 2) ranges.emplace_back(cuts[i], cuts[i + 1]);
    for (const int64_t n : {1, 3}) {
      SCOPED_TRACE(std::to_string(s.n_head_kv) + " KV heads, " + std::to_string(n) + " tokens");
      const int64_t qd = s.n_head * s.head_dim, rows = n * s.n_head;
      const std::vector<int32_t> pos = {static_cast<int32_t>(tokens - 1), 900,
                                        static_cast<int32_t>(tokens - 2)};
      std::vector<float> q(static_cast<size_t>(n * qd));
      for (float& x : q) x = normal(rng);
      std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(tokens, s)));
      std::vector<float> out(q.size(), NAN), lse(static_cast<size_t>(rows), NAN);
      attention_ranges(q.data(), n, pos.data(), p.view, s, ranges, out.data(), lse.data(),
                       scratch.data());
      std::vector<float> acc(q.size(), 0.0f), acc_lse(lse.size(), -INFINITY);
      for (const auto& [b, e] : ranges) {
        std::vector<float> part(q.size(), NAN), part_lse(lse.size(), NAN);
        attention_range(q.data(), n, pos.data(), p.view, s, b, e, part.data(), part_lse.data(),
                        scratch.data());
        merge_attention(acc.data(), acc_lse.data(), part.data(), part_lse.data(), rows, s.head_dim,
                        acc.data(), acc_lse.data());
      }
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_FALSE(std::isnan(out[i])) << i;
        EXPECT_NEAR(out[i], acc[i], 1e-5 * (1 + std::abs(acc[i]))) << "elem " << i;
      }
      for (size_t r = 0; r < lse.size(); ++r) {
        if (acc_lse[r] == -INFINITY) {
          EXPECT_EQ(lse[r], -INFINITY);
        } else {
          EXPECT_NEAR(lse[r], acc_lse[r], 1e-5 * (1 + std::abs(acc_lse[r]))) << "row " << r;
        }
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST(MergeAttention, AnEmptyPartIsTheIdentity) {
  const std::vector<float> o = {1, 2, 3, 4}, zero = {0, 0, 0, 0};
  const std::vector<float> l = {0.5f, -1.0f}, none = {-INFINITY, -INFINITY};
  std::vector<float> out(4, NAN), lse(2, NAN);
  merge_attention(o.data(), l.data(), zero.data(), none.data(), 2, 2, out.data(), lse.data());
  EXPECT_EQ(out, o);
  EXPECT_EQ(lse, l);
  merge_attention(zero.data(), none.data(), zero.data(), none.data(), 2, 2, out.data(), lse.data());
  EXPECT_EQ(out, zero);
  EXPECT_EQ(lse[0], -INFINITY);
}

INSTANTIATE_TEST_SUITE_P(KvTypes, AttentionRange,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kQ8_0),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace strata::cpu
