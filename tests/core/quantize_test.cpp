// quantize_row: ggml's reference semantics for Q8_0 / Q4_0 (hand-worked bytes, exact round trips
// of representable data, idempotence), error bounds for every type on fresh random data, and
// the K-quant quantizers' validity on awkward inputs.
#include "offload/core/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "offload/core/dequantize.h"
#include "offload/core/quant_blocks.h"
#include "tests/core/quant_test_util.h"

namespace strata {
namespace {

using testing::count_bit_mismatches;
using testing::float_bits;
using testing::fresh_seed;
using testing::gaussian;
using testing::rel_rms_error;
using testing::seed_trace;

std::vector<uint8_t> quantize_or_die(DType type, const std::vector<float>& src) {
  std::vector<uint8_t> out(static_cast<size_t>(row_bytes(type, static_cast<int64_t>(src.size()))));
  const Status status =
      quantize_row(type, src.data(), out.data(), static_cast<int64_t>(src.size()));
  EXPECT_TRUE(status.is_ok()) << status.to_string();
  return out;
}

std::vector<float> dequantize_or_die(DType type, const std::vector<uint8_t>& bytes, size_t n) {
  std::vector<float> out(n, std::numeric_limits<float>::quiet_NaN());
  const Status status = dequantize_row(type, bytes.data(), out.data(), static_cast<int64_t>(n));
  EXPECT_TRUE(status.is_ok()) << status.to_string();
  return out;
}

std::vector<float> round_trip(DType type, const std::vector<float>& src) {
  return dequantize_or_die(type, quantize_or_die(type, src), src.size());
}

// ---- ggml reference semantics, worked by hand -------------------------------------------------

TEST(QuantizeRow, Q8_0ScalesByAbsMaxOver127AndRoundsHalvesAwayFromZero) {
  // amax 127 -> d = 1 exactly (f16 0x3C00), so each q is round(x) with ties away from zero.
  std::vector<float> x(32, 0.0f);
  x[0] = -127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.49f;
  x[4] = 126.6f;
  x[5] = -0.5f;
  x[6] = 3.5f;
  const std::vector<uint8_t> bytes = quantize_or_die(DType::kQ8_0, x);
  BlockQ8_0 block;
  std::memcpy(&block, bytes.data(), sizeof(block));
  EXPECT_EQ(block.d, 0x3C00);
  const int expected[7] = {-127, 3, -3, 0, 127, -1, 4};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(block.qs[i], expected[i]) << i;
  for (int i = 7; i < 32; ++i) EXPECT_EQ(block.qs[i], 0) << i;
}

TEST(QuantizeRow, Q4_0MapsTheLargestMagnitudeToMinusEightTimesTheScale) {
  // Largest magnitude -16 -> d = -16 / -8 = 2 (0x4000); q = trunc(x / 2 + 8.5), capped at 15.
  std::vector<float> x(32, 0.0f);
  x[0] = 3.0f;    // 1.5 + 8.5 = 10
  x[1] = -16.0f;  // -8 + 8.5 = 0.5 -> 0
  x[2] = 14.0f;   // 7 + 8.5 = 15.5 -> 15
  x[3] = 1.0f;    // 0.5 + 8.5 = 9 -> 9: a half step rounds up
  x[4] = -1.0f;   // -0.5 + 8.5 = 8 -> 8
  x[16] = 15.9f;  // 7.95 + 8.5 = 16.45 -> 16 -> capped to 15
  x[17] = -3.2f;  // -1.6 + 8.5 = 6.9 -> 6
  const std::vector<uint8_t> bytes = quantize_or_die(DType::kQ4_0, x);
  BlockQ4_0 block;
  std::memcpy(&block, bytes.data(), sizeof(block));
  EXPECT_EQ(block.d, 0x4000);
  EXPECT_EQ(block.qs[0], 10 | (15 << 4));
  EXPECT_EQ(block.qs[1], 0 | (6 << 4));
  EXPECT_EQ(block.qs[2], 15 | (8 << 4));
  EXPECT_EQ(block.qs[3], 9 | (8 << 4));
  EXPECT_EQ(block.qs[4], 8 | (8 << 4));
  for (int i = 5; i < 16; ++i) EXPECT_EQ(block.qs[i], 0x88) << i;
}

TEST(QuantizeRow, Q4_0KeepsTheSignOfTheFirstLargestAndClipsTheOtherExtreme) {
  // x[0] = +16 comes first: d = 16 / -8 = -2 (0xC000); -16 then maps to 8 + 8.5 -> 16 -> 15,
  // i.e. -14 after dequantization, as ggml's reference does.
  std::vector<float> x(32, 0.0f);
  x[0] = 16.0f;
  x[1] = -16.0f;
  const std::vector<uint8_t> bytes = quantize_or_die(DType::kQ4_0, x);
  BlockQ4_0 block;
  std::memcpy(&block, bytes.data(), sizeof(block));
  EXPECT_EQ(block.d, 0xC000);
  EXPECT_EQ(block.qs[0] & 0xF, 0);
  EXPECT_EQ(block.qs[1] & 0xF, 15);
  const std::vector<float> back = dequantize_or_die(DType::kQ4_0, bytes, 32);
  EXPECT_EQ(back[0], 16.0f);
  EXPECT_EQ(back[1], -14.0f);
}

TEST(QuantizeRow, AllZeroBlocksGiveZerosForEveryType) {
  const std::vector<float> zeros(512, 0.0f);
  for (DType type : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0,
                     DType::kQ4_K, DType::kQ6_K}) {
    const std::vector<float> back = round_trip(type, zeros);
    for (size_t i = 0; i < back.size(); ++i) {
      ASSERT_EQ(back[i], 0.0f) << dtype_name(type) << " element " << i;  // NaN fails here too
    }
  }
  // ggml's own encodings of a zero block: Q8_0 d = +0; Q4_0 d = 0 / -8 = -0.0 and q = 8.
  const std::vector<uint8_t> q8 = quantize_or_die(DType::kQ8_0, std::vector<float>(32, 0.0f));
  EXPECT_EQ(q8, std::vector<uint8_t>(34, 0));
  const std::vector<uint8_t> q4 = quantize_or_die(DType::kQ4_0, std::vector<float>(32, 0.0f));
  std::vector<uint8_t> expected_q4(18, 0x88);
  expected_q4[0] = 0x00;
  expected_q4[1] = 0x80;  // little-endian 0x8000
  EXPECT_EQ(q4, expected_q4);
}

// ---- exact and idempotent round trips ----------------------------------------------------------

// A random normal f16 scale between 2^-10 and 2^6, either sign.
uint16_t random_half_scale(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> exponent(5, 21);
  std::uniform_int_distribution<int> mantissa(0, 1023);
  std::uniform_int_distribution<int> sign(0, 1);
  return static_cast<uint16_t>((sign(rng) << 15) | (exponent(rng) << 10) | mantissa(rng));
}

TEST(QuantizeRow, Q8_0RepresentableDataComesBackExactly) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> level(-127, 127);
  std::uniform_int_distribution<int> position(0, 31);
  constexpr int kBlocks = 2000;
  std::vector<float> x(kBlocks * 32);
  for (int b = 0; b < kBlocks; ++b) {
    const float d = f16_to_f32(random_half_scale(rng));
    int q[32];
    for (int& v : q) v = level(rng);
    q[position(rng)] = (b % 2) ? 127 : -127;  // the absmax element defines d
    // The stored scale is amax / 127 = |d| > 0, so a zero comes back as +0.0 whatever d's sign.
    for (int i = 0; i < 32; ++i) x[b * 32 + i] = q[i] == 0 ? 0.0f : static_cast<float>(q[i]) * d;
  }
  const std::vector<float> back = round_trip(DType::kQ8_0, x);
  EXPECT_EQ(count_bit_mismatches(back.data(), x.data(), x.size()), 0u);
}

TEST(QuantizeRow, Q4_0RepresentableDataComesBackExactly) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> level(0, 15);
  std::uniform_int_distribution<int> position(0, 31);
  constexpr int kBlocks = 2000;
  std::vector<float> x(kBlocks * 32);
  for (int b = 0; b < kBlocks; ++b) {
    const float d = f16_to_f32(random_half_scale(rng));
    int q[32];
    for (int& v : q) v = level(rng);
    q[position(rng)] = 0;  // (0 - 8) * d: the largest magnitude, which defines d
    for (int i = 0; i < 32; ++i) x[b * 32 + i] = static_cast<float>(q[i] - 8) * d;
  }
  const std::vector<float> back = round_trip(DType::kQ4_0, x);
  EXPECT_EQ(count_bit_mismatches(back.data(), x.data(), x.size()), 0u);
}

TEST(QuantizeRow, Q8_0AndQ4_0AreIdempotentOnTheirOwnOutput) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    for (float sigma : {1.0f, 1e-3f, 300.0f}) {
      const std::vector<float> x = gaussian(rng, 32 * 4096, sigma);
      const std::vector<uint8_t> first = quantize_or_die(type, x);
      const std::vector<float> back = dequantize_or_die(type, first, x.size());
      EXPECT_EQ(quantize_or_die(type, back), first) << dtype_name(type) << " sigma " << sigma;
    }
  }
}

// ---- error bounds on Gaussian data -----------------------------------------------------------

TEST(QuantizeRow, PlainTypesRoundEachElementToNearest) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> x = gaussian(rng, 1 << 16);
  EXPECT_EQ(count_bit_mismatches(round_trip(DType::kF32, x).data(), x.data(), x.size()), 0u);
  const std::vector<float> f16 = round_trip(DType::kF16, x);
  const std::vector<float> bf16 = round_trip(DType::kBF16, x);
  size_t f16_bad = 0;
  size_t bf16_bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    // Half an ulp relative for normal halves (|x| >= 2^-14), half the subnormal step below.
    const float f16_bound = std::max(std::fabs(x[i]) * 0x1p-11f, 0x1p-25f);
    if (!(std::fabs(f16[i] - x[i]) <= f16_bound)) ++f16_bad;
    if (!(std::fabs(bf16[i] - x[i]) <= std::fabs(x[i]) * 0x1p-8f)) ++bf16_bad;
  }
  EXPECT_EQ(f16_bad, 0u);
  EXPECT_EQ(bf16_bad, 0u);
}

struct ErrorBound {
  DType type;
  double max_rel_rms;
};

TEST(QuantizeRow, RoundTripErrorOnGaussianDataStaysWithinBounds) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> x = gaussian(rng, 256 * 4096);
  // Typical values (printed below): Q8_0 ~0.0045, Q4_0 ~0.09, Q4_K ~0.07, Q6_K ~0.016.
  for (const ErrorBound& bound : {ErrorBound{DType::kQ8_0, 0.006}, ErrorBound{DType::kQ4_0, 0.11},
                                  ErrorBound{DType::kQ4_K, 0.09}, ErrorBound{DType::kQ6_K, 0.02}}) {
    const double err = rel_rms_error(round_trip(bound.type, x), x);
    std::printf("[ measure  ] %s rel RMS error on N(0,1): %.5f\n", dtype_name(bound.type), err);
    EXPECT_LT(err, bound.max_rel_rms) << dtype_name(bound.type);
  }
}

TEST(QuantizeRow, BlockQuantErrorIsAtMostHalfAStepPerElement) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> x = gaussian(rng, 32 * 4096);
  const std::vector<uint8_t> q8 = quantize_or_die(DType::kQ8_0, x);
  const std::vector<float> back = dequantize_or_die(DType::kQ8_0, q8, x.size());
  size_t bad = 0;
  for (size_t b = 0; b < x.size() / 32; ++b) {
    BlockQ8_0 block;
    std::memcpy(&block, q8.data() + b * sizeof(block), sizeof(block));
    // Half a step plus the slack of the f16-rounded scale (2^-11 relative, up to 127 steps).
    const float step = std::fabs(f16_to_f32(block.d));
    for (int i = 0; i < 32; ++i) {
      const float err = std::fabs(back[b * 32 + i] - x[b * 32 + i]);
      if (!(err <= step * (0.5f + 127.0f * 0x1p-11f))) ++bad;
    }
  }
  EXPECT_EQ(bad, 0u);
}

TEST(QuantizeRow, KQuantsHandleScalesThatVaryAcrossSubBlocks) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  // Sub-blocks of 16 elements whose scale grows by 2x each: the small ones lose resolution to
  // the block-wide scale, but the block as a whole stays accurate and finite.
  std::vector<float> x = gaussian(rng, 256 * 256);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] *= std::ldexp(1.0f, static_cast<int>(i % 256) / 16 - 8);
  for (const ErrorBound& bound : {ErrorBound{DType::kQ4_K, 0.09}, ErrorBound{DType::kQ6_K, 0.02}}) {
    const double err = rel_rms_error(round_trip(bound.type, x), x);
    std::printf("[ measure  ] %s rel RMS error, sub-block scales 2^-8..2^7: %.5f\n",
                dtype_name(bound.type), err);
    EXPECT_LT(err, bound.max_rel_rms) << dtype_name(bound.type);
  }
}

TEST(QuantizeRow, Q4_KUsesItsMinForOneSidedAndConstantData) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(2.0f, 3.0f);
  std::vector<float> x(256 * 64);
  for (float& v : x) v = -uniform(rng);        // all in [-3, -2]: needs the min, not the scale
  for (int i = 0; i < 256; ++i) x[i] = -2.5f;  // one block of a single negative constant
  const std::vector<float> back = round_trip(DType::kQ4_K, x);
  const double err = rel_rms_error(back, x);
  std::printf("[ measure  ] Q4_K rel RMS error on U(-3, -2): %.5f\n", err);
  EXPECT_LT(err, 0.02);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(back[i], -2.5f, 0.05f) << i;
}

TEST(QuantizeRow, Q6_KSignedSubBlockScalesReproduceSignsAndExtremes) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> x = gaussian(rng, 256 * 64);
  for (size_t i = 0; i < x.size(); ++i) {
    if ((i / 16) % 3 == 0) x[i] = std::fabs(x[i]);   // all-positive sub-blocks
    if ((i / 16) % 3 == 1) x[i] = -std::fabs(x[i]);  // all-negative ones
  }
  const std::vector<float> back = round_trip(DType::kQ6_K, x);
  size_t sign_flips = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (back[i] * x[i] < 0.0f || std::isnan(back[i])) ++sign_flips;
  }
  EXPECT_EQ(sign_flips, 0u);
  const double err = rel_rms_error(back, x);
  EXPECT_LT(err, 0.02);
}

// ---- API behaviour ---------------------------------------------------------------------------

TEST(QuantizeRow, ConcurrentCallsGiveTheSameBytesAsOneThread) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<float> x = gaussian(rng, 256 * 512);
  for (DType type : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    const std::vector<uint8_t> expected = quantize_or_die(type, x);
    constexpr int kThreads = 4;
    std::vector<std::vector<uint8_t>> results(kThreads, std::vector<uint8_t>(expected.size()));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        (void)quantize_row(type, x.data(), results[t].data(), static_cast<int64_t>(x.size()));
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int t = 0; t < kThreads; ++t) EXPECT_EQ(results[t], expected) << dtype_name(type);
  }
}

TEST(QuantizeRow, UnsupportedTypesAndPartialBlocksAreRefused) {
  const std::vector<float> x(512, 1.0f);
  std::vector<uint8_t> out(4096);
  for (DType type : {DType::kQ4_1, DType::kQ5_K, DType::kI8}) {
    const Status status = quantize_row(type, x.data(), out.data(), traits(type).block_elems);
    EXPECT_EQ(status.code(), StatusCode::kUnsupported) << dtype_name(type);
    EXPECT_NE(status.message().find(dtype_name(type)), std::string::npos) << status.message();
  }
  EXPECT_EQ(quantize_row(DType::kQ6_K, x.data(), out.data(), 255).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(quantize_row(DType::kQ4_0, x.data(), out.data(), 48).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata
