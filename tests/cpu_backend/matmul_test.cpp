// CpuMatmul (prefill path: dequantized tiles through oneDNN, and the GEMV path for few tokens)
// against a float64 reference over the exactly dequantized weights, for every type, on fresh
// random inputs each run, outputs poisoned with NaN first.
#include "cpu_backend/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "offload/core/dequantize.h"
#include "offload/core/quantize.h"

namespace strata::cpu {
namespace {

struct Case {
  DType type;
  int64_t rows, cols, tokens;
};

// rel L2 of y against the float64 reference.
double run_case(const Case& c, MatmulPrecision precision, uint32_t seed,
                bool int8_prefill = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> w_f32(c.rows * c.cols), x(c.tokens * c.cols);
  for (auto& v : w_f32) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  const int64_t stride = row_bytes(c.type, c.cols);
  std::vector<uint8_t> w(c.rows * stride);
  for (int64_t r = 0; r < c.rows; ++r) {
    EXPECT_TRUE(
        quantize_row(c.type, w_f32.data() + r * c.cols, w.data() + r * stride, c.cols).is_ok());
  }
  std::vector<float> deq(c.cols);
  std::vector<double> ref(c.tokens * c.rows, 0.0);
  for (int64_t r = 0; r < c.rows; ++r) {
    EXPECT_TRUE(dequantize_row(c.type, w.data() + r * stride, deq.data(), c.cols).is_ok());
    for (int64_t t = 0; t < c.tokens; ++t) {
      double acc = 0;
      for (int64_t i = 0; i < c.cols; ++i) acc += static_cast<double>(deq[i]) * x[t * c.cols + i];
      ref[t * c.rows + r] = acc;
    }
  }
  MatmulOptions opts;
  opts.precision = precision;
  opts.tile_bytes = 64 * 1024;  // several tiles even for small matrices
  opts.amx_int8_prefill = int8_prefill;
  auto mm = CpuMatmul::create(opts);
  EXPECT_TRUE(mm.is_ok());
  std::vector<float> y(c.tokens * c.rows, std::numeric_limits<float>::quiet_NaN());
  const Status s =
      (*mm)->run(WeightMatrix{c.type, c.rows, c.cols, w.data()}, x.data(), c.tokens, y.data());
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  double d2 = 0, r2 = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) return std::numeric_limits<double>::infinity();  // NaN never passes
    d2 += (y[i] - ref[i]) * (y[i] - ref[i]);
    r2 += ref[i] * ref[i];
  }
  return std::sqrt(d2 / r2);
}

class CpuMatmulTest : public ::testing::TestWithParam<DType> {};

TEST_P(CpuMatmulTest, F32PrefillMatchesFloat64Reference) {
  const uint32_t seed = std::random_device{}();
  for (int64_t tokens : {3, 40}) {  // GEMV path and oneDNN path
    const double rel = run_case({GetParam(), 200, 512, tokens}, MatmulPrecision::kF32, seed);
    EXPECT_LE(rel, 1e-5) << dtype_name(GetParam()) << " tokens " << tokens << " seed " << seed;
  }
}

TEST_P(CpuMatmulTest, Bf16PrefillIsWithinBf16Rounding) {
  const uint32_t seed = std::random_device{}();
  // bf16 keeps 8 significant bits: inputs round by <= 2^-9 relative, so a sum of random-sign
  // products lands near 2^-9 relative; 1e-2 is the bound, far below a wrong layout's ~1.4.
  const double rel = run_case({GetParam(), 200, 512, 40}, MatmulPrecision::kBF16, seed);
  EXPECT_LE(rel, 1e-2) << dtype_name(GetParam()) << " seed " << seed;
  EXPECT_GT(rel, 0.0) << "bf16 rounding should be visible";
}

// MatmulOptions::amx_int8_prefill: Q8_0 / Q4_0 prefill on the int8 tiles (x quantized per 32,
// llama.cpp's arithmetic). AmxInt8Gemm's own tests hold it to its emulation bit for bit; this
// one checks CpuMatmul's routing against the float64 reference of the exact weights and x.
TEST(CpuMatmulInt8Tiles, PrefillIsWithinInt8ActivationRounding) {
  if (!amx_int8_available() || !amx_bf16_available()) {
    GTEST_SKIP() << "this CPU or kernel has no AMX-INT8 / AMX-BF16 tiles";
  }
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    const uint32_t seed = std::random_device{}();
    // x rounded to 8 bits per block of 32 (<= 1/254 of the block's max): ~3e-3 relative here.
    const double rel = run_case({type, 200, 512, 40}, MatmulPrecision::kBF16, seed, true);
    EXPECT_LE(rel, 2e-2) << dtype_name(type) << " seed " << seed;
    EXPECT_GT(rel, 0.0) << "int8 rounding of x should be visible";
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CpuMatmulTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0,
                                           DType::kQ4_0, DType::kQ4_K, DType::kQ6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace strata::cpu
