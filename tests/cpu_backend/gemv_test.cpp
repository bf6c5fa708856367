// GEMV kernels against dequantize_row + a float64 dot, for every type and every instruction set
// compiled into this build. Inputs are fresh random data on every run (the seed is printed on
// failure); outputs are poisoned with NaN before each call, so an unwritten row or a NaN fails.
#include "cpu_backend/gemv.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "offload/core/dequantize.h"
#include "offload/core/dtype.h"
#include "offload/core/quant_blocks.h"
#include "tests/cpu_backend/random_weights.h"

namespace strata {
namespace {

using testing_weights::fresh_seed;
using testing_weights::random_vector;
using testing_weights::seed_note;
using testing_weights::TestMatrix;

constexpr DType kTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                            DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};
constexpr GemvIsa kIsas[] = {GemvIsa::kScalar, GemvIsa::kAvx2, GemvIsa::kAvx512};

// |y - ref| <= kRelTol * sum_k |w_nk x_k|: float32 accumulation of a few hundred terms per lane.
constexpr double kRelTol = 1e-6;
constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

// The float64 dot of each dequantized row with x, and sum_k |w_nk x_k| (the scale of its
// rounding error).
struct Reference {
  std::vector<double> dot, magnitude;
};
Reference reference(const TestMatrix& w, const float* x) {
  Reference r{std::vector<double>(w.rows), std::vector<double>(w.rows)};
  for (int64_t n = 0; n < w.rows; ++n) {
    double dot = 0.0, magnitude = 0.0;
    for (int64_t k = 0; k < w.cols; ++k) {
      const double p = static_cast<double>(w.dequantized[n * w.cols + k]) * x[k];
      dot += p;
      magnitude += std::fabs(p);
    }
    r.dot[n] = dot;
    r.magnitude[n] = magnitude;
  }
  return r;
}

// Checks y[n] (n < rows) against the reference; returns the worst |err| / sum|w x| seen.
double expect_matches_reference(const TestMatrix& w, const float* x, const float* y,
                                const std::string& what) {
  const Reference ref = reference(w, x);
  int reported = 0;
  double worst = 0.0;
  for (int64_t n = 0; n < w.rows; ++n) {
    const double err = std::fabs(static_cast<double>(y[n]) - ref.dot[n]);
    // Written so that a NaN in y fails: NaN <= bound is false.
    const bool ok = err <= kRelTol * ref.magnitude[n] + 1e-30;
    if (ref.magnitude[n] > 0) worst = std::max(worst, err / ref.magnitude[n]);
    if (!ok && reported++ < 5) {
      ADD_FAILURE() << what << ": row " << n << " of " << w.rows << " x " << w.cols << ": got "
                    << y[n] << ", want " << ref.dot[n] << " (|err| " << err << ", bound "
                    << kRelTol * ref.magnitude[n] << ")";
    }
  }
  return worst;
}

int64_t random_cols(DType type, std::mt19937_64& rng) {
  const int64_t block = traits(type).block_elems;
  if (block == 1) return 1 + static_cast<int64_t>(rng() % 3000);  // any length, tails too
  return block *
         (1 + static_cast<int64_t>(rng() % (block == 32 ? 90 : 12)));  // odd block counts too
}

std::string label(DType type, GemvIsa isa) {
  return std::string(dtype_name(type)) + "/" + gemv_isa_name(isa);
}

TEST(Gemv, MatchesFloat64ReferenceForEveryTypeAndIsa) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  int checked = 0;
  double worst = 0.0;
  for (GemvIsa isa : kIsas) {
    if (!gemv_isa_available(isa)) continue;
    for (DType type : kTypes) {
      for (int trial = 0; trial < 6; ++trial) {
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 133);  // not a multiple of any chunk
        const int64_t cols = random_cols(type, rng);
        const TestMatrix w(type, rows, cols, rng);
        const std::vector<float> x = random_vector(cols, rng);
        std::vector<float> y(rows, kPoison);
        const Status s = gemv(w.view(), x.data(), y.data(), isa);
        ASSERT_TRUE(s.is_ok()) << label(type, isa) << ": " << s.to_string();
        worst = std::max(worst, expect_matches_reference(w, x.data(), y.data(), label(type, isa)));
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
  std::printf("%d shapes checked; worst |err| / sum|w x| = %.3g (bound %.0e)\n", checked, worst,
              kRelTol);
}

// Q4_K weight k of a row with d1 * q - m1 fused (one rounding): the AVX-512 kernel's value.
float q4k_fused_weight(const uint8_t* row, int64_t k) {
  BlockQ4_K b;
  std::memcpy(&b, row + (k / kQK_K) * sizeof(BlockQ4_K), sizeof(b));
  const int64_t i = k % kQK_K;
  const int sub = static_cast<int>(i / 32);  // sub-block: 2c from low nibbles, 2c+1 from high
  const uint8_t byte = b.qs[(i / 64) * 32 + i % 32];
  const int q = sub % 2 == 0 ? (byte & 0xF) : (byte >> 4);
  uint8_t sc, m;
  q4k_scale_min(sub, b.scales, &sc, &m);
  const float d1 = f16_to_f32(b.d) * sc, m1 = f16_to_f32(b.dmin) * m;
  return std::fma(d1, static_cast<float>(q), -m1);
}

// A one-hot x reads out one weight: y[n] = 0 + ... + w[n][k] * 1 must equal dequantize_row's
// value exactly, which shows the kernels decode every position bit-exactly (batch of 8 one-hots).
// Q4_K may instead give the fused value (AVX-512 kernel), one rounding closer to exact.
TEST(Gemv, DecodesEveryWeightBitExactly) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  for (GemvIsa isa : kIsas) {
    if (!gemv_isa_available(isa)) continue;
    for (DType type : kTypes) {
      const int64_t block = traits(type).block_elems;
      const int64_t cols = block == 1 ? 100 : 2 * block;
      const int64_t rows = 5;
      const TestMatrix w(type, rows, cols, rng);
      int mismatches = 0;
      for (int64_t k0 = 0; k0 < cols; k0 += kGemvMaxBatch) {
        const int64_t batch = std::min<int64_t>(kGemvMaxBatch, cols - k0);
        std::vector<float> x(batch * cols, 0.0f);
        for (int64_t m = 0; m < batch; ++m) x[m * cols + k0 + m] = 1.0f;
        std::vector<float> y(batch * rows, kPoison);
        ASSERT_TRUE(gemv_batched(w.view(), x.data(), batch, y.data(), 0, 0, isa).is_ok());
        for (int64_t m = 0; m < batch; ++m) {
          for (int64_t n = 0; n < rows; ++n) {
            const float want = w.dequantized[n * cols + k0 + m];
            const float got = y[m * rows + n];
            const bool fused_ok =
                type == DType::kQ4_K &&
                got == q4k_fused_weight(w.stored.data() + n * row_bytes(type, cols), k0 + m);
            if (!(got == want) && !fused_ok && mismatches++ < 5) {
              ADD_FAILURE() << label(type, isa) << ": weight [" << n << "][" << k0 + m
                            << "] decoded as " << got << ", dequantize_row gives " << want;
            }
          }
        }
      }
    }
  }
}

// The batched call agrees with `batch` single calls, with strided x and y, across batch sizes
// below, at and above kGemvMaxBatch.
TEST(Gemv, BatchedMatchesSingleCalls) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  for (GemvIsa isa : kIsas) {
    if (!gemv_isa_available(isa)) continue;
    for (DType type : kTypes) {
      for (int64_t batch : {1, 2, 3, 4, 7, 8, 11}) {
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 70);
        const int64_t cols = random_cols(type, rng);
        const TestMatrix w(type, rows, cols, rng);
        const int64_t x_stride = cols + 3, y_stride = rows + 5;
        const std::vector<float> x = random_vector(batch * x_stride, rng);
        std::vector<float> y(batch * y_stride, kPoison);
        ASSERT_TRUE(
            gemv_batched(w.view(), x.data(), batch, y.data(), x_stride, y_stride, isa).is_ok());
        for (int64_t m = 0; m < batch; ++m) {
          std::vector<float> single(rows, kPoison);
          ASSERT_TRUE(gemv(w.view(), x.data() + m * x_stride, single.data(), isa).is_ok());
          const std::string what =
              label(type, isa) + " batch " + std::to_string(batch) + " row " + std::to_string(m);
          const float* xm = x.data() + m * x_stride;
          const float* ym = y.data() + m * y_stride;
          expect_matches_reference(w, xm, ym, what);
          expect_matches_reference(w, xm, single.data(), what + " (single)");
          // Batched and single sums may differ only by accumulation order.
          const Reference ref = reference(w, xm);
          for (int64_t n = 0; n < rows; ++n) {
            ASSERT_LE(std::fabs(double{ym[n]} - single[n]), 2 * kRelTol * ref.magnitude[n])
                << what << " output " << n;
          }
        }
        // Padding between the strided rows of y is never written.
        for (int64_t m = 0; m < batch; ++m) {
          for (int64_t n = rows; n < y_stride; ++n) ASSERT_TRUE(std::isnan(y[m * y_stride + n]));
        }
      }
    }
  }
}

// Rows are split over threads without changing any row's arithmetic: results are bit-identical
// for 1, 2 and 3 threads (the last splits 4096+7 rows unevenly).
TEST(Gemv, ThreadCountDoesNotChangeResults) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  const int saved_threads = omp_get_max_threads();
  for (DType type : kTypes) {
    const TestMatrix w(type, 4096 + 7, traits(type).block_elems == 1 ? 96 : 256, rng);
    const std::vector<float> x = random_vector(w.cols, rng);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> y(w.rows, kPoison);
      ASSERT_TRUE(gemv(w.view(), x.data(), y.data()).is_ok());
      if (first.empty()) {
        first = y;
        expect_matches_reference(w, x.data(), y.data(), dtype_name(type));
      } else {
        ASSERT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * sizeof(float)))
            << dtype_name(type) << " with " << threads << " threads";
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

TEST(Gemv, NaNInInputReachesOutput) {
  std::mt19937_64 rng(fresh_seed());
  for (GemvIsa isa : kIsas) {
    if (!gemv_isa_available(isa)) continue;
    for (DType type : kTypes) {
      const TestMatrix w(type, 3, traits(type).block_elems == 1 ? 40 : 256, rng);
      std::vector<float> x = random_vector(w.cols, rng);
      x[w.cols - 1] = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> y(w.rows, 0.0f);
      ASSERT_TRUE(gemv(w.view(), x.data(), y.data(), isa).is_ok());
      for (float v : y) EXPECT_TRUE(std::isnan(v)) << label(type, isa);
    }
  }
}

TEST(Gemv, UnsupportedTypeIsAnErrorAndLeavesOutputAlone) {
  std::vector<uint8_t> data(4096, 0);
  std::vector<float> x(256, 1.0f), y(4, 42.0f);
  for (DType type : {DType::kQ5_K, DType::kQ4_1, DType::kI32, static_cast<DType>(99)}) {
    const WeightMatrix w{type, 4, 256, data.data()};
    const Status s = gemv(w, x.data(), y.data());
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
    EXPECT_FALSE(s.message().empty());
    for (float v : y) EXPECT_EQ(v, 42.0f);
  }
  EXPECT_FALSE(gemv_supports(DType::kQ5_K));
  EXPECT_TRUE(gemv_supports(DType::kQ6_K));
}

TEST(Gemv, BadShapesAndPointersAreInvalidArguments) {
  std::vector<uint8_t> data(1 << 16, 0);
  std::vector<float> x(1024, 1.0f), y(64, 42.0f);
  const auto code = [&](const WeightMatrix& w, const float* xp, int64_t batch, float* yp,
                        int64_t xs = 0,
                        int64_t ys = 0) { return gemv_batched(w, xp, batch, yp, xs, ys).code(); };
  EXPECT_EQ(code({DType::kQ4_K, 4, 300, data.data()}, x.data(), 1, y.data()),
            StatusCode::kInvalidArgument);  // 300 is not a multiple of 256
  EXPECT_EQ(code({DType::kQ8_0, 4, 48, data.data()}, x.data(), 1, y.data()),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({DType::kF16, -1, 16, data.data()}, x.data(), 1, y.data()),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({DType::kF16, 4, 16, data.data()}, x.data(), 0, y.data()),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({DType::kF16, 4, 16, nullptr}, x.data(), 1, y.data()),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({DType::kF16, 4, 16, data.data()}, nullptr, 1, y.data()),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({DType::kF16, 4, 16, data.data()}, x.data(), 1, nullptr),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code({DType::kF16, 4, 16, data.data()}, x.data(), 2, y.data(), 8, 0),
            StatusCode::kInvalidArgument);  // x stride shorter than a row
  for (float v : y) EXPECT_EQ(v, 42.0f);
  // No rows: nothing to do, not an error.
  EXPECT_TRUE(gemv({DType::kF16, 0, 16, nullptr}, x.data(), nullptr).is_ok());
}

TEST(Gemv, MissingIsaIsReportedNotRun) {
  for (GemvIsa isa : kIsas) {
    if (gemv_isa_available(isa)) continue;
    std::vector<uint8_t> data(64, 0);
    std::vector<float> x(16, 1.0f), y(2, 42.0f);
    const Status s = gemv({DType::kF16, 2, 16, data.data()}, x.data(), y.data(), isa);
    EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  }
  EXPECT_TRUE(gemv_isa_available(GemvIsa::kScalar));
}

}  // namespace
}  // namespace strata
