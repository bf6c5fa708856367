// GpuMatmul (gpu_backend/matmul.h), the prefill path: quantized weights dequantized tile by tile
// into scratch, then cuBLAS. Tile sizes that split a matrix into equal 128-row tiles, into tiles
// of a height that is not a multiple of 128, and into one tile must all give the product of the
// whole matrix: float64 reference over the exact weights, fresh random inputs, poisoned outputs.
#include "gpu_backend/matmul.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu_backend/cublas.h"
#include "tests/gpu_backend/gpu_weight_fixture.h"

namespace strata {
namespace {

using testing::HostMatrix;
using testing::random_matrix;

class GpuMatmulTest : public testing::GpuWeightTest {
 protected:
  std::unique_ptr<gpu::GpuMatmul> make(gpu::GemmPrecision precision, int64_t tile_bytes,
                                       gpu::Cublas& blas, int64_t cols, int64_t max_tokens) {
    gpu::GpuMatmulOptions o;
    o.precision = precision;
    o.max_tokens = max_tokens;
    o.max_cols = cols;
    o.tile_bytes = tile_bytes;
    auto mm = gpu::GpuMatmul::create(arena(), blas, o);
    EXPECT_TRUE(mm.is_ok()) << mm.status().to_string();
    return mm.is_ok() ? std::move(mm).value() : nullptr;
  }
};

TEST_F(GpuMatmulTest, TiledProductEqualsTheWholeMatrixForEveryTilingAndPrecision) {
  auto blas = gpu::Cublas::create(arena(), stream());
  ASSERT_TRUE(blas.is_ok()) << blas.status().to_string();
  const int64_t rows = 300, cols = 256, n = 24;
  // Rows per tile at f32: 64 (no 128-row alignment possible: 5 tiles of 60), 200 (aligned: 128,
  // 128, 44), all 300 in one; f16 tiles hold twice as many rows.
  const int64_t tile_rows_f32[] = {64, 200, 1024};
  for (DType type : {DType::kQ4_0, DType::kQ8_0, DType::kQ6_K, DType::kF16}) {
    const HostMatrix m = random_matrix(type, rows, cols, rng_);
    const gpu::GpuWeight w = upload(m);
    const std::vector<float> x = random_floats(n * cols);
    const float* dx = upload(x);
    for (gpu::GemmPrecision precision : {gpu::GemmPrecision::kF32, gpu::GemmPrecision::kF16}) {
      for (int64_t tile_rows : tile_rows_f32) {
        const bool f32 = precision == gpu::GemmPrecision::kF32;
        SCOPED_TRACE(std::string(dtype_name(type)) + (f32 ? " f32" : " f16") + " tile of " +
                     std::to_string(tile_rows) + " f32 rows");
        auto mm = make(precision, tile_rows * cols * 4, **blas, cols, n);
        ASSERT_NE(mm, nullptr);
        float* dy = device_output(n * rows);
        const Status st = mm->run(w, dx, n, dy, gpu::GemvOutput::kStore);
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        const std::vector<float> y = download(dy, n * rows);
        if (f32) {
          EXPECT_LT(backward_err(m, x, n, y), 1e-6);
        } else {  // x and the tiles rounded to f16, float32 accumulation
          EXPECT_LT(rel_err(y, reference(m, x, n)), 2e-3);
        }
      }
    }
  }
}

TEST_F(GpuMatmulTest, AccumulatesAcrossTiles) {
  auto blas = gpu::Cublas::create(arena(), stream());
  ASSERT_TRUE(blas.is_ok()) << blas.status().to_string();
  const int64_t rows = 300, cols = 256, n = 16;
  const HostMatrix m = random_matrix(DType::kQ4_0, rows, cols, rng_);
  auto mm = make(gpu::GemmPrecision::kF32, 200 * cols * 4, **blas, cols, n);
  ASSERT_NE(mm, nullptr);
  const std::vector<float> x = random_floats(n * cols);
  const std::vector<float> y0 = random_floats(n * rows);
  float* dy = upload(y0);
  ASSERT_TRUE(mm->run(upload(m), upload(x), n, dy, gpu::GemvOutput::kAccumulate).is_ok());
  std::vector<double> want = reference(m, x, n);
  for (size_t i = 0; i < want.size(); ++i) want[i] += y0[i];
  EXPECT_LT(rel_err(download(dy, n * rows), want), 2e-6);
}

TEST_F(GpuMatmulTest, RejectsMoreTokensThanItsScratch) {
  auto blas = gpu::Cublas::create(arena(), stream());
  ASSERT_TRUE(blas.is_ok()) << blas.status().to_string();
  const HostMatrix m = random_matrix(DType::kQ8_0, 32, 256, rng_);
  auto mm = make(gpu::GemmPrecision::kF32, 256 * 4 * 64, **blas, 256, 16);
  ASSERT_NE(mm, nullptr);
  const float* dx = upload(random_floats(32 * 256));
  const Status st = mm->run(upload(m), dx, 32, device_output(32 * 32), gpu::GemvOutput::kStore);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("larger than the scratch"), std::string::npos) << st.to_string();
}

}  // namespace
}  // namespace strata
