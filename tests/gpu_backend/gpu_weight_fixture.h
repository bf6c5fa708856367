// GpuWeightTest: GpuTest plus random weight matrices in every stored type, their upload in the
// GPU layout (gpu_weight.h) and float64 references, for the tests of kernels that read weights
// (gemv_test.cpp, matmul_test.cpp).
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gpu_backend/gpu_weight.h"
#include "offload/core/dequantize.h"
#include "offload/core/quantize.h"
#include "tests/gpu_backend/gpu_test_fixture.h"

namespace strata::testing {

// A random [rows][cols] matrix stored as `type` (GGUF layout) and its exact float values.
struct HostMatrix {
  DType type;
  int64_t rows, cols;
  std::vector<uint8_t> stored;
  std::vector<float> values;
};

inline HostMatrix random_matrix(DType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
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

class GpuWeightTest : public GpuTest {
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

}  // namespace strata::testing
