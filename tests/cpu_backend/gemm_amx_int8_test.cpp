// AmxInt8Gemm (cpu_backend/gemm_amx_int8.h) against a float64 product of the quantized inputs
// (exact integer block sums, then the scales), on fresh random Q8_0 / Q4_0 weights and
// activations each run, outputs poisoned with NaN and padding columns with a sentinel. The
// emulated unit runs everywhere; the AMX unit where the CPU has AMX-INT8 (the GPU machine's host,
// the dev VM), where it must also equal the emulated result bit for bit. Skipped elsewhere,
// saying so.
#include "cpu_backend/gemm_amx_int8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "cpu_backend/gemv_q8.h"
#include "offload/core/dtype.h"
#include "tests/cpu_backend/random_weights.h"

namespace strata::cpu {
namespace {

using testing_weights::fresh_seed;
using testing_weights::random_vector;
using testing_weights::seed_note;
using testing_weights::TestMatrix;

struct Case {
  DType type;
  int64_t rows, cols, tokens, ldy;
};

constexpr float kSentinel = 12345.f;

struct Outcome {
  std::vector<float> y;
  double rel_l2 = std::numeric_limits<double>::infinity();
};

// y from `unit`, and its rel L2 against sum_b d_w d_x sum_k q_w q_x in float64.
Outcome run_case(const Case& c, TileUnit unit, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const TestMatrix w(c.type, c.rows, c.cols, rng);
  const std::vector<float> x = random_vector(c.tokens * c.cols, rng);
  ActivationsQ8 x8;
  EXPECT_TRUE(x8.quantize(x.data(), c.tokens, c.cols).is_ok());

  // The weights' integer quants and scales, read from the stored bytes.
  const int64_t blocks = c.cols / 32, rb = row_bytes(c.type, c.cols);
  const int64_t bb = c.type == DType::kQ8_0 ? 34 : 18;
  std::vector<double> ref(c.tokens * c.rows, 0.0);
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = w.stored.data() + r * rb + b * bb;
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const double dw = f16_to_f32(h);
      int qw[32];
      for (int j = 0; j < 32; ++j) {
        qw[j] = c.type == DType::kQ8_0 ? static_cast<int8_t>(blk[2 + j])
                : j < 16               ? (blk[2 + j] & 15) - 8
                                       : (blk[2 + j - 16] >> 4) - 8;
      }
      for (int64_t t = 0; t < c.tokens; ++t) {
        int64_t sum = 0;
        for (int j = 0; j < 32; ++j) sum += qw[j] * x8.q(t)[b * 32 + j];
        ref[t * c.rows + r] += dw * x8.d(t)[b] * static_cast<double>(sum);
      }
    }
  }

  Outcome out;
  out.y.assign(c.tokens * c.ldy, kSentinel);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t r = 0; r < c.rows; ++r) {
      out.y[t * c.ldy + r] = std::numeric_limits<float>::quiet_NaN();
    }
  }
  AmxInt8Gemm gemm(unit);
  const Status st = gemm.run(w.view(), x8, c.tokens, out.y.data(), c.ldy);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  double d2 = 0, r2 = 0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t r = 0; r < c.ldy; ++r) {
      const float v = out.y[t * c.ldy + r];
      if (r >= c.rows) {
        EXPECT_EQ(v, kSentinel) << "wrote past the rows at token " << t << " column " << r;
        continue;
      }
      if (!std::isfinite(v)) return out;  // NaN never passes
      const double e = ref[t * c.rows + r];
      d2 += (v - e) * (v - e);
      r2 += e * e;
    }
  }
  out.rel_l2 = std::sqrt(d2 / r2);
  return out;
}

// Rows past a group of 32 (a short last group), tokens from 1 to the streaming path's most, K
// from one block up; then the panel path (more than 16 tokens): a short last group of tokens,
// whole groups, a panel of 64 rows and a short one (rows not a multiple of 16), several panels.
const Case kCases[] = {
    {DType::kQ8_0, 100, 256, 16, 100},  {DType::kQ8_0, 32, 32, 1, 40},
    {DType::kQ8_0, 70, 4096, 5, 80},    {DType::kQ4_0, 100, 256, 16, 104},
    {DType::kQ4_0, 33, 64, 3, 33},      {DType::kQ4_0, 64, 4096, 12, 64},
    {DType::kQ8_0, 100, 256, 17, 104},  {DType::kQ8_0, 64, 32, 48, 64},
    {DType::kQ8_0, 200, 1024, 70, 208}, {DType::kQ4_0, 71, 512, 33, 72},
    {DType::kQ4_0, 256, 2048, 64, 256}, {DType::kQ4_0, 16, 96, 23, 20},
};

TEST(AmxInt8Gemm, EmulatedTilesMatchTheReference) {
  for (const Case& c : kCases) {
    const uint64_t seed = fresh_seed();
    const Outcome o = run_case(c, TileUnit::kEmulated, seed);
    // float32 sums of exact block products against float64: ~1e-7 per term.
    EXPECT_LT(o.rel_l2, 1e-5) << dtype_name(c.type) << " " << c.rows << "x" << c.cols << " "
                              << c.tokens << " tokens, " << seed_note(seed);
  }
}

TEST(AmxInt8Gemm, AmxTilesMatchTheEmulatedUnitBitForBit) {
  if (!amx_int8_available()) GTEST_SKIP() << "this CPU or kernel has no AMX-INT8 tiles";
  for (const Case& c : kCases) {
    const uint64_t seed = fresh_seed();
    const Outcome amx = run_case(c, TileUnit::kAmx, seed);
    const Outcome emulated = run_case(c, TileUnit::kEmulated, seed);
    EXPECT_LT(amx.rel_l2, 1e-5) << seed_note(seed);
    ASSERT_EQ(amx.y.size(), emulated.y.size());
    EXPECT_EQ(0, std::memcmp(amx.y.data(), emulated.y.data(), amx.y.size() * sizeof(float)))
        << dtype_name(c.type) << " " << c.rows << "x" << c.cols << " " << c.tokens << " tokens, "
        << seed_note(seed);
  }
}

// The integer GEMV (gemv_q8.h) computes the same sums in another order: both the
// like_llama_cpp arithmetic over the same quantized x.
TEST(AmxInt8Gemm, AgreesWithTheIntegerGemv) {
  const TileUnit unit = amx_int8_available() ? TileUnit::kAmx : TileUnit::kEmulated;
  for (const auto& [type, tokens] : {std::pair{DType::kQ8_0, int64_t{7}},
                                     {DType::kQ4_0, int64_t{7}},
                                     {DType::kQ8_0, int64_t{40}},
                                     {DType::kQ4_0, int64_t{40}}}) {
    const uint64_t seed = fresh_seed();
    std::mt19937_64 rng(seed);
    const int64_t rows = 96, cols = 1024;
    const TestMatrix w(type, rows, cols, rng);
    const std::vector<float> x = random_vector(tokens * cols, rng);
    ActivationsQ8 x8;
    ASSERT_TRUE(x8.quantize(x.data(), tokens, cols).is_ok());
    std::vector<float> tiles(tokens * rows, NAN), gemv(tokens * rows, NAN);
    AmxInt8Gemm gemm(unit);
    ASSERT_TRUE(gemm.run(w.view(), x8, tokens, tiles.data(), rows).is_ok());
    ASSERT_TRUE(gemv_q8_batched(w.view(), x8, tokens, gemv.data()).is_ok());
    double d2 = 0, r2 = 0;
    for (size_t i = 0; i < tiles.size(); ++i) {
      ASSERT_TRUE(std::isfinite(tiles[i]) && std::isfinite(gemv[i])) << i;
      d2 += (tiles[i] - gemv[i]) * (tiles[i] - gemv[i]);
      r2 += static_cast<double>(gemv[i]) * gemv[i];
    }
    EXPECT_LT(std::sqrt(d2 / r2), 1e-5)
        << dtype_name(type) << " " << tokens << " tokens, " << seed_note(seed);
  }
}

TEST(AmxInt8Gemm, BadArgumentsAreClearErrors) {
  std::mt19937_64 rng(fresh_seed());
  const TestMatrix q8(DType::kQ8_0, 32, 64, rng);
  const TestMatrix f16(DType::kF16, 32, 64, rng);
  const std::vector<float> x = random_vector(17 * 64, rng);
  ActivationsQ8 x8, x8_narrow;
  ASSERT_TRUE(x8.quantize(x.data(), 17, 64).is_ok());
  ASSERT_TRUE(x8_narrow.quantize(x.data(), 1, 32).is_ok());
  std::vector<float> y(17 * 64);
  AmxInt8Gemm gemm(TileUnit::kEmulated);
  Status s = gemm.run(f16.view(), x8, 1, y.data(), 32);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Q8_0 or Q4_0"), std::string::npos) << s.to_string();
  s = gemm.run(q8.view(), x8, 18, y.data(), 32);  // x8 holds 17 rows
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("18 tokens"), std::string::npos) << s.to_string();
  EXPECT_FALSE(gemm.run(q8.view(), x8, 0, y.data(), 32).is_ok());
  EXPECT_FALSE(gemm.run(q8.view(), x8, 1, y.data(), 31).is_ok());         // ldy < rows
  EXPECT_FALSE(gemm.run(q8.view(), x8_narrow, 1, y.data(), 32).is_ok());  // x of 32 columns
  EXPECT_FALSE(gemm.run(q8.view(), x8, 1, nullptr, 32).is_ok());
}

}  // namespace
}  // namespace strata::cpu
