#include "cpu_backend/compute_rates.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_backend/gemv.h"
#include "cpu_backend/matmul.h"
#include "offload/core/quantize.h"

namespace strata::cpu {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

StatusOr<double> measure_gemv_bytes_per_s(DType type, int64_t working_set_bytes) {
  const int64_t rows = 4096, cols = 4096;
  const int64_t matrix_bytes = row_bytes(type, cols) * rows;
  const int64_t copies = std::max<int64_t>(2, working_set_bytes / matrix_bytes);
  std::vector<uint8_t> data(static_cast<size_t>(matrix_bytes * copies));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(rng);
    STRATA_RETURN_IF_ERROR(
        quantize_row(type, row.data(), data.data() + r * row_bytes(type, cols), cols));
  }
  for (int64_t c = 1; c < copies; ++c) {
    std::memcpy(data.data() + c * matrix_bytes, data.data(), static_cast<size_t>(matrix_bytes));
  }
  std::vector<WeightMatrix> matrices;
  for (int64_t c = 0; c < copies; ++c) {
    matrices.push_back(WeightMatrix{type, rows, cols, data.data() + c * matrix_bytes});
  }
  return measure_gemv_bytes_per_s(matrices);
}

StatusOr<double> measure_gemv_bytes_per_s(std::span<const WeightMatrix> matrices) {
  if (matrices.empty()) return Status::invalid_argument("measure_gemv_bytes_per_s: no matrices");
  int64_t max_rows = 0, max_cols = 0, bytes = 0;
  for (const WeightMatrix& w : matrices) {
    max_rows = std::max(max_rows, w.rows);
    max_cols = std::max(max_cols, w.cols);
    bytes += row_bytes(w.type, w.cols) * w.rows;
  }
  std::vector<float> x(static_cast<size_t>(max_cols), 0.5f), y(static_cast<size_t>(max_rows));
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const WeightMatrix& w : matrices) STRATA_RETURN_IF_ERROR(gemv(w, x.data(), y.data()));
    best = std::max(best, static_cast<double>(bytes) / seconds_since(t0));
  }
  return best;
}

StatusOr<double> measure_prefill_gemm_flop_per_s() {
  MatmulOptions o;
  o.precision = MatmulPrecision::kBF16;
  STRATA_ASSIGN_OR_RETURN(auto mm, CpuMatmul::create(o));
  const int64_t rows = 4096, cols = 4096, n = 512;
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_f16(0.01f * static_cast<float>(i % 97));
  std::vector<float> x(static_cast<size_t>(n * cols), 0.25f), y(static_cast<size_t>(n * rows));
  const WeightMatrix m{DType::kF16, rows, cols, reinterpret_cast<const uint8_t*>(w.data())};
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {  // the first includes the primitive's creation
    const auto t0 = std::chrono::steady_clock::now();
    STRATA_RETURN_IF_ERROR(mm->run(m, x.data(), n, y.data()));
    best = std::max(best, 2.0 * rows * cols * n / seconds_since(t0));
  }
  return best;
}

}  // namespace strata::cpu
