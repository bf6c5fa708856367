// The GPU decode GEMV (gpu_backend/gemv.h) against a float64 reference over the exactly
// dequantized weights, for every weight type the GPU reads, on fresh random matrices every run:
// the GPU result must be float32 arithmetic over those weights (rel L2 well under 1e-5).
// Also the weight repacking (gpu_weight.h), which needs no GPU and runs in CI.
#include "gpu_backend/gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gpu_backend/gpu_weight.h"
#include "offload/core/dequantize.h"
#include "offload/core/quantize.h"
#include "tests/gpu_backend/gpu_test_fixture.h"

namespace strata {
namespace {

const DType kTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                        DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};

// A random [rows][cols] matrix stored as `type` (GGUF layout) and its exact float values.
struct HostMatrix {
  DType type;
  int64_t rows, cols;
  std::vector<uint8_t> stored;
  std::vector<float> values;
};

HostMatrix random_matrix(DType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  HostMatrix m{type, rows, cols, {}, {}};
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> src(static_cast<size_t>(cols));
  const int64_t rb = row_bytes(type, cols);
  m.stored.resize(static_cast<size_t>(rows * rb));
  m.values.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : src) v = normal(rng);
    EXPECT_TRUE(quantize_row(type, src.data(), m.stored.data() + r * rb, cols).is_ok());
    EXPECT_TRUE(
        dequantize_row(type, m.stored.data() + r * rb, m.values.data() + r * cols, cols).is_ok());
  }
  return m;
}

TEST(GpuWeightLayout, RepackRoundTripsEveryType) {
  std::mt19937_64 rng(std::random_device{}());
  for (DType type : kTypes) {
    SCOPED_TRACE(dtype_name(type));
    const HostMatrix m = random_matrix(type, 5, 512, rng);
    auto layout = gpu::gpu_weight_layout(type, m.rows, m.cols);
    ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
    std::vector<uint8_t> payload(static_cast<size_t>(layout->payload_bytes));
    std::vector<uint16_t> scales(static_cast<size_t>(m.rows * layout->scale_row_elems) + 1);
    gpu::repack_rows(type, m.cols, m.stored.data(), m.rows, payload.data(), scales.data());
    std::vector<uint8_t> back(m.stored.size(), 0xAB);
    gpu::unpack_rows(type, m.cols, payload.data(), scales.data(), m.rows, back.data());
    EXPECT_EQ(back, m.stored);
    EXPECT_EQ(layout->payload_row_bytes % 16, 0);
    EXPECT_EQ(layout->scale_offset_bytes % 256, 0);
    EXPECT_GE(layout->total_bytes,
              layout->scale_offset_bytes + m.rows * layout->scale_row_elems * 2);
  }
}

TEST(GpuWeightLayout, RejectsWhatTheKernelsCannotRead) {
  EXPECT_EQ(gpu::gpu_weight_layout(DType::kQ5_0, 4, 64).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::gpu_weight_layout(DType::kQ4_K, 4, 64).status().code(),
            StatusCode::kInvalidArgument);  // not whole 256-element super-blocks
  EXPECT_EQ(gpu::gpu_weight_layout(DType::kF16, 4, 12).status().code(),
            StatusCode::kInvalidArgument);  // not a multiple of 8
}

class GpuGemvTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    rng_.seed(std::random_device{}());
  }

  // Uploads `m` in the GPU layout; the buffer lives until the test ends.
  gpu::GpuWeight upload(const HostMatrix& m) {
    auto layout = gpu::gpu_weight_layout(m.type, m.rows, m.cols);
    EXPECT_TRUE(layout.is_ok()) << layout.status().to_string();
    std::vector<uint8_t> planes(static_cast<size_t>(layout->total_bytes), 0);
    gpu::repack_rows(m.type, m.cols, m.stored.data(), m.rows, planes.data(),
                     reinterpret_cast<uint16_t*>(planes.data() + layout->scale_offset_bytes));
    auto* dev = upload_bytes(planes);
    gpu::GpuWeight w;
    w.type = m.type;
    w.rows = m.rows;
    w.cols = m.cols;
    w.data = dev;
    w.scales = layout->scale_row_elems > 0
                   ? reinterpret_cast<const uint16_t*>(dev + layout->scale_offset_bytes)
                   : nullptr;
    return w;
  }
  uint8_t* upload_bytes(const std::vector<uint8_t>& v) { return upload(v); }
  using GpuTest::upload;

  // y_ref[t][r] = sum_c values[r][c] x[t][c] in float64.
  static std::vector<double> reference(const HostMatrix& m, const std::vector<float>& x,
                                       int64_t n_tokens) {
    std::vector<double> y(static_cast<size_t>(n_tokens * m.rows));
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t r = 0; r < m.rows; ++r) {
        double s = 0;
        for (int64_t c = 0; c < m.cols; ++c)
          s += static_cast<double>(m.values[r * m.cols + c]) * x[t * m.cols + c];
        y[t * m.rows + r] = s;
      }
    return y;
  }

  static double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) return INFINITY;
      num += (got[i] - want[i]) * (got[i] - want[i]);
      den += want[i] * want[i];
    }
    return std::sqrt(num / den);
  }
  // float32 rounding is relative to the sum of |w x|, not to the (possibly cancelling) result:
  // ||got - ref|| / ||sum_c |values[r][c] x[t][c]| ||, what a float32 dot product guarantees.
  static double backward_err(const HostMatrix& m, const std::vector<float>& x, int64_t n_tokens,
                             const std::vector<float>& got) {
    const std::vector<double> want = reference(m, x, n_tokens);
    double num = 0, den = 0;
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t r = 0; r < m.rows; ++r) {
        const size_t i = static_cast<size_t>(t * m.rows + r);
        if (!std::isfinite(got[i])) return INFINITY;
        double abs_sum = 0;
        for (int64_t c = 0; c < m.cols; ++c)
          abs_sum += std::abs(static_cast<double>(m.values[r * m.cols + c]) * x[t * m.cols + c]);
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += abs_sum * abs_sum;
      }
    return std::sqrt(num / den);
  }

  std::mt19937_64 rng_;
};

TEST_F(GpuGemvTest, MatchesFloat64OverExactWeightsForEveryTypeAndTokenCount) {
  struct Shape {
    int64_t rows, cols;
  };
  // Odd row counts leave partial row groups; 4096 and 14336 are llama3-8b's widths (the row is
  // split over several warps there).
  const Shape shapes[] = {{37, 256}, {64, 4096}, {24, 14336}, {1, 512}};
  for (DType type : kTypes) {
    for (const Shape& s : shapes) {
      const HostMatrix m = random_matrix(type, s.rows, s.cols, rng_);
      const gpu::GpuWeight w = upload(m);
      for (int64_t n : {1, 2, 3, 5, 8}) {
        SCOPED_TRACE(std::string(dtype_name(type)) + " " + std::to_string(s.rows) + "x" +
                     std::to_string(s.cols) + " tokens " + std::to_string(n));
        const std::vector<float> x = random_floats(n * s.cols);
        const float* dx = upload(x);
        float* dy = device_output(n * s.rows);
        const Status st = gpu::gemv(w, dx, n, dy, gpu::GemvOutput::kStore, stream());
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        const std::vector<float> y = download(dy, n * s.rows);
        EXPECT_LT(backward_err(m, x, n, y), 1e-6);
        if (s.rows * n >= 64) EXPECT_LT(rel_err(y, reference(m, x, n)), 5e-6);
      }
    }
  }
}

TEST_F(GpuGemvTest, AccumulatesIntoTheOutput) {
  const HostMatrix m = random_matrix(DType::kQ8_0, 40, 1024, rng_);
  const gpu::GpuWeight w = upload(m);
  const int64_t n = 2;
  const std::vector<float> x = random_floats(n * m.cols);
  const std::vector<float> y0 = random_floats(n * m.rows);
  float* dy = upload(y0);
  ASSERT_TRUE(gpu::gemv(w, upload(x), n, dy, gpu::GemvOutput::kAccumulate, stream()).is_ok());
  std::vector<double> want = reference(m, x, n);
  for (size_t i = 0; i < want.size(); ++i) want[i] += y0[i];
  EXPECT_LT(rel_err(download(dy, n * m.rows), want), 2e-6);
}

TEST_F(GpuGemvTest, MultiAndSwiGLUMatchSeparateProducts) {
  for (DType type : {DType::kF16, DType::kQ4_0, DType::kQ6_K}) {
    SCOPED_TRACE(dtype_name(type));
    const int64_t cols = 512, n = 3;
    const HostMatrix a = random_matrix(type, 48, cols, rng_);
    const HostMatrix b = random_matrix(type, 16, cols, rng_);
    const HostMatrix c = random_matrix(type, 20, cols, rng_);
    const gpu::GpuWeight ws[3] = {upload(a), upload(b), upload(c)};
    const std::vector<float> x = random_floats(n * cols);
    const float* dx = upload(x);
    float* ys[3] = {device_output(n * 48), device_output(n * 16), device_output(n * 20)};
    ASSERT_TRUE(gpu::gemv_multi(ws, dx, n, ys, stream()).is_ok());
    EXPECT_LT(rel_err(download(ys[0], n * 48), reference(a, x, n)), 2e-6);
    EXPECT_LT(rel_err(download(ys[1], n * 16), reference(b, x, n)), 2e-6);
    EXPECT_LT(rel_err(download(ys[2], n * 20), reference(c, x, n)), 2e-6);

    const HostMatrix up = random_matrix(type, 48, cols, rng_);
    float* h = device_output(n * 48);
    ASSERT_TRUE(gpu::gemv_swiglu(ws[0], upload(up), dx, n, h, stream()).is_ok());
    const std::vector<double> g = reference(a, x, n), u = reference(up, x, n);
    std::vector<double> want(g.size());
    for (size_t i = 0; i < g.size(); ++i) want[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    EXPECT_LT(rel_err(download(h, n * 48), want), 4e-6);
  }
}

TEST_F(GpuGemvTest, RejectsTooManyTokens) {
  const HostMatrix m = random_matrix(DType::kF16, 8, 64, rng_);
  const gpu::GpuWeight w = upload(m);
  const Status st = gpu::gemv(w, device_output(9 * 64), 9, device_output(9 * 8),
                              gpu::GemvOutput::kStore, stream());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata
