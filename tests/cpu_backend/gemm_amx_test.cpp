// AmxGemm (cpu_backend/gemm_amx.h) against a float64 product of the bf16-rounded inputs, on fresh
// random weights of every stored type and random activations each run, outputs poisoned with NaN.
// The emulated tile unit runs everywhere (it checks the slabs, units, K chunks, padding and the
// transposed stores); the AMX unit runs where the CPU has AMX-BF16 (the GPU machine's host) and
// is skipped elsewhere, saying so.
#include "cpu_backend/gemm_amx.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "offload/core/dtype.h"
#include "tests/cpu_backend/random_weights.h"

namespace strata::cpu {
namespace {

using testing_weights::fresh_seed;
using testing_weights::random_vector;
using testing_weights::seed_note;
using testing_weights::TestMatrix;

float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

struct Shape {
  int64_t rows, cols, tokens, ldy;
};

// Runs one product and returns rel L2 against the reference (infinity on any non-finite value);
// columns of y past w.rows (ldy padding) must keep their sentinel.
double run_case(DType type, const Shape& s, const AmxGemmConfig& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const TestMatrix w(type, s.rows, s.cols, rng);
  const std::vector<float> x = random_vector(s.tokens * s.cols, rng);
  std::vector<double> ref(s.tokens * s.rows, 0.0);
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int64_t r = 0; r < s.rows; ++r) {
      double acc = 0;
      for (int64_t k = 0; k < s.cols; ++k) {
        acc += static_cast<double>(bf16_round(w.dequantized[r * s.cols + k])) *
               bf16_round(x[t * s.cols + k]);
      }
      ref[t * s.rows + r] = acc;
    }
  }
  constexpr float kSentinel = 12345.f;
  std::vector<float> y(s.tokens * s.ldy, kSentinel);
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int64_t r = 0; r < s.rows; ++r) y[t * s.ldy + r] = std::numeric_limits<float>::quiet_NaN();
  }
  AmxGemm gemm(config);
  const Status st = gemm.run(w.view(), x.data(), s.tokens, y.data(), s.ldy);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  double d2 = 0, r2 = 0;
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int64_t r = 0; r < s.ldy; ++r) {
      const float v = y[t * s.ldy + r];
      if (r >= s.rows) {
        EXPECT_EQ(v, kSentinel) << "wrote past the rows at token " << t << " column " << r;
        continue;
      }
      if (!std::isfinite(v)) return std::numeric_limits<double>::infinity();  // NaN never passes
      const double e = ref[t * s.rows + r];
      d2 += (v - e) * (v - e);
      r2 += e * e;
    }
  }
  return std::sqrt(d2 / r2);
}

// Small units, chunks and slabs so that a small product crosses every boundary: several slabs
// (the last one short), units with a partial 32-row block, K in several chunks plus a short one,
// tokens not a multiple of 16.
AmxGemmConfig small_config(TileUnit unit) {
  AmxGemmConfig c;
  c.unit = unit;
  c.tile_bytes = 96 * 512 * 2;  // 96 rows of 512 bf16 columns
  c.unit_rows = 64;
  c.unit_tokens = 32;
  c.k_chunk = 96;
  c.skinny_max_tokens = 0;  // the slab path at every token count
  return c;
}

// The streaming path for few tokens (a batched decode step), chunks of 256 columns.
AmxGemmConfig skinny_config(TileUnit unit) {
  AmxGemmConfig c;
  c.unit = unit;
  c.skinny_k_chunk = 256;
  return c;
}

// f32 accumulation of bf16 products over <= 512 terms: rel L2 ~1e-7; a wrong tile or a lost
// chunk is O(1).
constexpr double kTolerance = 1e-5;

class AmxGemmTest : public ::testing::TestWithParam<DType> {};

void check_every_shape(DType type, TileUnit unit) {
  const uint64_t seed = fresh_seed();
  const Shape shapes[] = {
      {200, 512, 40, 200},  // partial slab, partial row block, tokens 32 + 8
      {96, 256, 17, 101},   // one slab exactly; ldy past the rows
      {33, 512, 1, 33},     // a single token, one row past a block
  };
  for (const Shape& s : shapes) {
    const double rel = run_case(type, s, small_config(unit), seed);
    EXPECT_LT(rel, kTolerance) << dtype_name(type) << " " << s.rows << "x" << s.cols << " x "
                               << s.tokens << " tokens, " << seed_note(seed);
  }
  // The default config (one slab, one chunk for these columns).
  AmxGemmConfig d;
  d.unit = unit;
  const double rel = run_case(type, {160, 512, 70, 160}, d, seed + 1);
  EXPECT_LT(rel, kTolerance) << dtype_name(type) << " default config, " << seed_note(seed + 1);
}

// Few tokens: one or two token tiles, a partial last block of 32 rows, K in several chunks plus
// a short last one (1280 = 5 x 256; 1152 = 4.5 x 256 for the 32-column types), ldy past the rows.
void check_skinny_shapes(DType type, TileUnit unit) {
  const uint64_t seed = fresh_seed();
  const bool k_quant = type == DType::kQ4_K || type == DType::kQ6_K;
  const int64_t cols = k_quant ? 1280 : 1152;
  const Shape shapes[] = {
      {200, cols, 1, 200}, {70, cols, 2, 75},  {96, cols, 16, 96},
      {33, cols, 17, 40},  {64, cols, 32, 64},
  };
  for (const Shape& s : shapes) {
    const double rel = run_case(type, s, skinny_config(unit), seed);
    EXPECT_LT(rel, kTolerance) << dtype_name(type) << " " << s.rows << "x" << s.cols << " x "
                               << s.tokens << " tokens (skinny), " << seed_note(seed);
  }
}

TEST_P(AmxGemmTest, FewTokensOnEmulatedTilesMatchTheReference) {
  check_skinny_shapes(GetParam(), TileUnit::kEmulated);
}

TEST_P(AmxGemmTest, FewTokensOnAmxTilesMatchTheReference) {
  if (!amx_bf16_available()) GTEST_SKIP() << "this CPU or kernel has no AMX-BF16 tiles";
  check_skinny_shapes(GetParam(), TileUnit::kAmx);
}

TEST_P(AmxGemmTest, EmulatedTilesMatchTheReference) {
  check_every_shape(GetParam(), TileUnit::kEmulated);
}

TEST_P(AmxGemmTest, AmxTilesMatchTheReference) {
  if (!amx_bf16_available()) GTEST_SKIP() << "this CPU or kernel has no AMX-BF16 tiles";
  check_every_shape(GetParam(), TileUnit::kAmx);
}

INSTANTIATE_TEST_SUITE_P(Types, AmxGemmTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0,
                                           DType::kQ4_0, DType::kQ4_K, DType::kQ6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(AmxGemm, ColumnsNotAMultipleOf32ArePadded) {
  const uint64_t seed = fresh_seed();
  const double rel =
      run_case(DType::kF32, {50, 70, 35, 50}, small_config(TileUnit::kEmulated), seed);
  EXPECT_LT(rel, kTolerance) << seed_note(seed);
  EXPECT_LT(run_case(DType::kF32, {50, 70, 9, 50}, skinny_config(TileUnit::kEmulated), seed),
            kTolerance)
      << "skinny, " << seed_note(seed);
  if (amx_bf16_available()) {
    EXPECT_LT(run_case(DType::kF16, {50, 70, 9, 50}, skinny_config(TileUnit::kAmx), seed),
              kTolerance)
        << "skinny, " << seed_note(seed);
    EXPECT_LT(run_case(DType::kF16, {50, 70, 35, 50}, small_config(TileUnit::kAmx), seed),
              kTolerance)
        << seed_note(seed);
  }
}

TEST(AmxGemm, BadArgumentsAreClearErrors) {
  std::mt19937_64 rng(1);
  const TestMatrix w(DType::kF32, 8, 32, rng);
  std::vector<float> x(4 * 32, 1.f), y(4 * 8);
  AmxGemmConfig bad = small_config(TileUnit::kEmulated);
  bad.k_chunk = 40;
  Status s = AmxGemm(bad).run(w.view(), x.data(), 4, y.data(), 8);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("multiples of 32"), std::string::npos) << s.message();

  AmxGemmConfig bad_chunk = skinny_config(TileUnit::kEmulated);
  bad_chunk.skinny_k_chunk = 96;
  s = AmxGemm(bad_chunk).run(w.view(), x.data(), 4, y.data(), 8);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("skinny_k_chunk"), std::string::npos) << s.message();

  AmxGemm ok(small_config(TileUnit::kEmulated));
  s = ok.run(w.view(), x.data(), 4, y.data(), 7);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  s = ok.run(w.view(), nullptr, 4, y.data(), 8);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_TRUE(ok.run(w.view(), x.data(), 0, y.data(), 8).is_ok());

  if (!amx_bf16_available()) {
    s = AmxGemm(AmxGemmConfig{}).run(w.view(), x.data(), 4, y.data(), 8);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
    EXPECT_NE(s.message().find("AMX"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace strata::cpu
