// The integer GEMV (gemv_q8.h) and its activation quantizer (activation_q8.h): the quantizer
// against the rounding written out plainly (bit for bit), and every kernel against a float64 dot
// of the dequantized weights with the dequantized activations (q d), on fresh random inputs with
// NaN-poisoned outputs, for every type, instruction set, batch and odd block count.
#include "cpu_backend/gemv_q8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu_backend/activation_q8.h"
#include "tests/cpu_backend/random_weights.h"

namespace strata {
namespace {

using testing_weights::fresh_seed;
using testing_weights::seed_note;
using testing_weights::TestMatrix;

constexpr DType kTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};
constexpr GemvIsa kIsas[] = {GemvIsa::kScalar, GemvIsa::kAvx512};
constexpr double kRelTol = 1e-6;  // float32 scaling and accumulation, as gemv_test
constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

// Rows of x with blocks of every kind: ordinary, all zero, tiny, huge, one value far above the
// rest, exact halves after scaling.
std::vector<float> random_activations(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (int64_t b = 0; b < rows * cols / 32; ++b) {
    float* blk = x.data() + 32 * b;
    const int kind = static_cast<int>(rng() % 6);
    const float scale = kind == 2 ? 1e-30f : kind == 3 ? 1e30f : 1.0f;
    for (int i = 0; i < 32; ++i) blk[i] = kind == 1 ? 0.0f : uni(rng) * scale;
    if (kind == 4) blk[rng() % 32] = 50.0f;
    if (kind == 5) {  // d = 1 exactly: x = n + 0.5 rounds away from zero
      for (int i = 0; i < 32; ++i)
        blk[i] = static_cast<float>(static_cast<int>(rng() % 200) - 100) + 0.5f;
      blk[0] = 127.0f;
    }
  }
  return x;
}

TEST(ActivationsQ8, QuantizesAsTheRoundingWrittenOut) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  cpu::ActivationsQ8 a;
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 4);
    const int64_t cols = 32 * (1 + static_cast<int64_t>(rng() % 70));
    const int64_t stride = cols + 8 * static_cast<int64_t>(rng() % 3);
    std::vector<float> x = random_activations(rows, stride, rng);
    ASSERT_TRUE(a.quantize(x.data(), rows, cols, stride).is_ok());
    ASSERT_EQ(a.rows(), rows);
    ASSERT_EQ(a.cols(), cols);
    for (int64_t m = 0; m < rows; ++m) {
      ASSERT_EQ(reinterpret_cast<uintptr_t>(a.q(m)) % 64, 0u);
      for (int64_t b = 0; b < cols / 32; ++b) {
        const float* v = x.data() + m * stride + 32 * b;
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(v[i]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        ASSERT_EQ(a.d(m)[b], d) << "row " << m << " block " << b;
        int32_t sum = 0;
        for (int l = 0; l < 8; ++l) {
          int32_t lane = 0;
          for (int i = 4 * l; i < 4 * l + 4; ++i) {
            const int q = static_cast<int>(std::roundf(v[i] * id));
            ASSERT_EQ(a.q(m)[32 * b + i], q)
                << "row " << m << " value " << 32 * b + i << " = " << v[i];
            lane += q;
          }
          ASSERT_EQ(a.lane_sums(m)[8 * b + l], lane);
          ASSERT_EQ(a.lane_d(m)[8 * b + l], d);
          sum += lane;
        }
        ASSERT_EQ(a.sums(m)[b], sum);
        ASSERT_EQ(a.d_sums(m)[b], d * static_cast<float>(sum));
      }
    }
  }
}

TEST(ActivationsQ8, RejectsPartialBlocksAndShortStrides) {
  cpu::ActivationsQ8 a;
  std::vector<float> x(128, 1.0f);
  EXPECT_EQ(a.quantize(x.data(), 1, 48).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.quantize(x.data(), 2, 64, 32).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.quantize(x.data(), 1, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.quantize(nullptr, 1, 64).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(a.quantize(x.data(), 2, 64).is_ok());
}

// The float64 dot of each dequantized weight row with each dequantized activation row, and its
// magnitude sum |w x|.
struct Reference {
  std::vector<double> dot, magnitude;  // [batch][rows]
};
Reference reference(const TestMatrix& w, const cpu::ActivationsQ8& x, int64_t batch) {
  Reference r{std::vector<double>(batch * w.rows), std::vector<double>(batch * w.rows)};
  for (int64_t m = 0; m < batch; ++m) {
    for (int64_t n = 0; n < w.rows; ++n) {
      double dot = 0.0, magnitude = 0.0;
      for (int64_t k = 0; k < w.cols; ++k) {
        const double xv = static_cast<double>(x.q(m)[k]) * x.d(m)[k / 32];
        const double p = static_cast<double>(w.dequantized[n * w.cols + k]) * xv;
        dot += p;
        magnitude += std::fabs(p);
      }
      r.dot[m * w.rows + n] = dot;
      r.magnitude[m * w.rows + n] = magnitude;
    }
  }
  return r;
}

TEST(GemvQ8, MatchesFloat64ReferenceForEveryTypeIsaAndBatch) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  int checked = 0;
  double worst = 0.0;
  cpu::ActivationsQ8 x;
  for (GemvIsa isa : kIsas) {
    if (!gemv_q8_isa_available(isa)) {
      std::printf("no %s integer kernels in this build\n",
                  isa == GemvIsa::kAvx512 ? "avx512 VNNI" : "scalar");
      continue;
    }
    for (DType type : kTypes) {
      for (int trial = 0; trial < 8; ++trial) {
        const int64_t block = traits(type).block_elems;
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 67);
        // Odd block counts too: the last block of Q4_0 / Q8_0 alone in a 64-element step.
        const int64_t cols = block * (1 + static_cast<int64_t>(rng() % (block == 32 ? 45 : 6)));
        const int64_t batch = trial == 0 ? 10 : 1 + static_cast<int64_t>(rng() % 5);
        const TestMatrix w(type, rows, cols, rng);
        const std::vector<float> xf = random_activations(batch, cols, rng);
        ASSERT_TRUE(x.quantize(xf.data(), batch, cols).is_ok());
        const int64_t y_stride = rows + static_cast<int64_t>(rng() % 3);
        std::vector<float> y(batch * y_stride, kPoison);
        const std::string what = std::string(dtype_name(type)) +
                                 (isa == GemvIsa::kScalar ? "/scalar" : "/avx512") + " " +
                                 std::to_string(rows) + "x" + std::to_string(cols) + " batch " +
                                 std::to_string(batch);
        const Status s = gemv_q8_batched(w.view(), x, batch, y.data(), y_stride, isa);
        ASSERT_TRUE(s.is_ok()) << what << ": " << s.to_string();
        const Reference ref = reference(w, x, batch);
        int reported = 0;
        for (int64_t m = 0; m < batch; ++m) {
          for (int64_t n = 0; n < rows; ++n) {
            const double got = y[m * y_stride + n];
            const double err = std::fabs(got - ref.dot[m * rows + n]);
            const double mag = ref.magnitude[m * rows + n];
            // NaN fails: the comparison is false.
            if (!(err <= kRelTol * mag + 1e-30) && reported++ < 5) {
              ADD_FAILURE() << what << ": y[" << m << "][" << n << "] = " << got << ", want "
                            << ref.dot[m * rows + n] << " (bound " << kRelTol * mag << ")";
            }
            if (mag > 0) worst = std::max(worst, err / mag);
          }
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
  std::printf("%d shapes checked; worst |err| / sum|w x| = %.3g (bound %.0e)\n", checked, worst,
              kRelTol);
}

TEST(GemvQ8, RejectsOtherTypesAndMismatchedShapes) {
  std::mt19937_64 rng(fresh_seed());
  const TestMatrix q4(DType::kQ4_0, 4, 64, rng);
  const TestMatrix f16(DType::kF16, 4, 64, rng);
  cpu::ActivationsQ8 x;
  const std::vector<float> xf(2 * 96, 0.5f);
  ASSERT_TRUE(x.quantize(xf.data(), 2, 64).is_ok());
  std::vector<float> y(8, kPoison);
  EXPECT_EQ(gemv_q8_batched(f16.view(), x, 1, y.data()).code(), StatusCode::kUnsupported);
  EXPECT_EQ(gemv_q8_batched(q4.view(), x, 3, y.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(gemv_q8_batched(q4.view(), x, 0, y.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(gemv_q8_batched(q4.view(), x, 1, y.data(), 2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(gemv_q8_batched(q4.view(), x, 1, y.data(), 0, GemvIsa::kAvx2).code(),
            StatusCode::kUnsupported);
  for (float v : y) EXPECT_TRUE(std::isnan(v)) << "y written on a rejected call";
  ASSERT_TRUE(x.quantize(xf.data(), 2, 96).is_ok());
  EXPECT_EQ(gemv_q8_batched(q4.view(), x, 1, y.data()).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata
