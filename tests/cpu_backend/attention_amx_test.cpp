// The AMX prefill attention (cpu_backend/attention_amx.h) against a float64 attention of the
// bf16-rounded Q, K and V, on fresh random inputs over a paged cache (blocks shuffled, rows past
// the sequence NaN, so a read past the keys cannot pass), outputs poisoned with NaN. Shapes cross
// the 32-token units, the key chunks, the KV-head groups and a chunk starting mid-sequence. The
// emulated tile unit runs everywhere; the AMX unit where the CPU has AMX-BF16 (skipped elsewhere,
// saying so).
#include "cpu_backend/attention_amx.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "offload/core/dtype.h"
#include "tests/cpu_backend/paged_kv.h"

namespace strata::cpu {
namespace {

using testing_kv::kv_at;
using testing_kv::make_paged;
using testing_kv::Paged;

double bf16_round(double v) { return bf16_to_f32(f32_to_bf16(static_cast<float>(v))); }

// out [n][n_head * D] in float64 for query tokens at positions pos0.., inputs rounded to bf16.
std::vector<double> reference(const std::vector<float>& q, int64_t n, int64_t pos0,
                              const KvLayerView& kv, const AttentionShape& s) {
  const int64_t D = s.head_dim, G = s.n_head / s.n_head_kv, ld = s.n_head * D;
  std::vector<double> out(static_cast<size_t>(n * ld), 0.0);
  // The cache's values once, rounded as the kernel rounds them (kv_at dequantizes a whole row).
  const int64_t keys_all = pos0 + n, kv_dim = kv.kv_dim;
  std::vector<double> kr(static_cast<size_t>(keys_all * kv_dim)), vr(kr.size());
  for (int64_t j = 0; j < keys_all; ++j) {
    for (int64_t i = 0; i < kv_dim; ++i) {
      kr[j * kv_dim + i] = bf16_round(kv_at(kv, false, j, i));
      vr[j * kv_dim + i] = bf16_round(kv_at(kv, true, j, i));
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < s.n_head; ++h) {
      const int64_t kvh = h / G, keys = pos0 + t + 1;
      std::vector<double> sc(static_cast<size_t>(keys));
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < keys; ++j) {
        double d = 0;
        for (int64_t i = 0; i < D; ++i) {
          d += bf16_round(q[t * ld + h * D + i]) * kr[j * kv_dim + kvh * D + i];
        }
        sc[j] = d / std::sqrt(static_cast<double>(D));
        m = std::max(m, sc[j]);
      }
      for (double& x : sc) sum += (x = std::exp(x - m));
      for (int64_t j = 0; j < keys; ++j) {
        for (int64_t i = 0; i < D; ++i) {
          out[t * ld + h * D + i] += sc[j] / sum * vr[j * kv_dim + kvh * D + i];
        }
      }
    }
  }
  return out;
}

struct Case {
  AttentionShape shape;
  int64_t n_tokens, pos0, block_tokens;
};

// The softmax weights are rounded to bf16 too (relative 2^-9 each, averaging out over the keys):
// rel L2 ~1e-3. A wrong mask, tile or chunk merge is O(0.1-1).
constexpr double kTolerance = 4e-3;

double run_case(const Case& c, DType kv_type, const AmxAttentionConfig& config, uint32_t seed) {
  std::mt19937 rng(seed);
  const Paged p = make_paged(rng, c.shape, kv_type, c.pos0 + c.n_tokens, c.block_tokens);
  const int64_t ld = c.shape.n_head * c.shape.head_dim;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(c.n_tokens * ld));
  for (float& x : q) x = 2.0f * normal(rng);  // sharper softmaxes than unit variance gives
  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
  auto attention = make_amx_prefill_attention(config);
  EXPECT_TRUE(attention.is_ok()) << attention.status().to_string();
  if (!attention.is_ok()) return INFINITY;
  const Status st = (*attention)->run(q.data(), c.n_tokens, c.pos0, p.view, c.shape, out.data());
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  const std::vector<double> ref = reference(q, c.n_tokens, c.pos0, p.view, c.shape);
  double d2 = 0, r2 = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;  // NaN never passes
    d2 += (out[i] - ref[i]) * (out[i] - ref[i]);
    r2 += ref[i] * ref[i];
  }
  return std::sqrt(d2 / r2);
}

void check_cases(TileUnit unit, DType kv_type) {
  const uint32_t seed = std::random_device{}();
  const Case cases[] = {
      {{8, 2, 128}, 70, 0, 16},   // llama3's head shape; 3 units, the last of 6 tokens
      {{4, 4, 64}, 33, 45, 7},    // a chunk mid-sequence, blocks of 7 tokens
      {{6, 2, 32}, 1, 100, 16},   // one token over 101 keys
      {{4, 1, 64}, 96, 130, 32},  // long enough for several key chunks in every unit
  };
  AmxAttentionConfig small;
  small.unit = unit;
  small.key_chunk = 64;
  small.max_packed_bytes = 1;  // one KV head per group
  AmxAttentionConfig defaults;
  defaults.unit = unit;
  for (const Case& c : cases) {
    for (const AmxAttentionConfig& config : {small, defaults}) {
      const double rel = run_case(c, kv_type, config, seed);
      EXPECT_LT(rel, kTolerance) << dtype_name(kv_type) << " heads " << c.shape.n_head << "/"
                                 << c.shape.n_head_kv << " D " << c.shape.head_dim << ", "
                                 << c.n_tokens << " tokens at " << c.pos0 << ", key chunk "
                                 << config.key_chunk << ", seed " << seed;
    }
  }
}

class AmxAttentionTest : public ::testing::TestWithParam<DType> {};

TEST_P(AmxAttentionTest, EmulatedTilesMatchTheReference) {
  check_cases(TileUnit::kEmulated, GetParam());
}

TEST_P(AmxAttentionTest, AmxTilesMatchTheReference) {
  if (!amx_bf16_available()) GTEST_SKIP() << "this CPU or kernel has no AMX-BF16 tiles";
  check_cases(TileUnit::kAmx, GetParam());
}

INSTANTIATE_TEST_SUITE_P(KvTypes, AmxAttentionTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kQ8_0),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(AmxAttention, BadArgumentsAreClearErrors) {
  AmxAttentionConfig bad;
  bad.unit = TileUnit::kEmulated;
  bad.key_chunk = 40;
  auto made = make_amx_prefill_attention(bad);
  ASSERT_FALSE(made.is_ok());
  EXPECT_EQ(made.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(made.status().message().find("multiple of 32"), std::string::npos);
  if (!amx_bf16_available()) {
    auto amx = make_amx_prefill_attention({});
    ASSERT_FALSE(amx.is_ok());
    EXPECT_EQ(amx.status().code(), StatusCode::kUnsupported);
  }

  AmxAttentionConfig emulated;
  emulated.unit = TileUnit::kEmulated;
  auto attention = make_amx_prefill_attention(emulated);
  ASSERT_TRUE(attention.is_ok());
  std::mt19937 rng(3);
  const AttentionShape odd{4, 2, 8};  // head dim 8: not a multiple of 32
  const Paged p8 = make_paged(rng, odd, DType::kF32, 10, 16);
  std::vector<float> q(10 * 32, 0.5f), out(q.size());
  Status s = (*attention)->run(q.data(), 10, 0, p8.view, odd, out.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("multiple of 32"), std::string::npos) << s.message();

  const AttentionShape shape{2, 1, 32};
  const Paged p = make_paged(rng, shape, DType::kF32, 10, 16);
  std::vector<float> q2(12 * 64, 0.5f), out2(q2.size());
  s = (*attention)->run(q2.data(), 12, 0, p.view, shape, out2.data());  // 12 tokens, 10 in the cache
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("too few tokens"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace strata::cpu
