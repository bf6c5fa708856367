// The GPU decode GEMV (gpu_backend/gemv.h) against a float64 reference over the exactly
// dequantized weights, for every weight type the GPU reads, on fresh random matrices every run:
// the GPU result must be float32 arithmetic over those weights (rel L2 well under 1e-5).
// Also the weight repacking (gpu_weight.h), which needs no GPU and runs in CI.
#include "gpu_backend/gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gpu_backend/gemv_tuning.h"
#include "gpu_backend/gpu_weight.h"
#include "tests/gpu_backend/gpu_weight_fixture.h"

namespace strata {
namespace {

using testing::HostMatrix;
using testing::random_matrix;

const DType kTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                        DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};

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

using GpuGemvTest = testing::GpuWeightTest;

TEST_F(GpuGemvTest, MatchesFloat64OverExactWeightsForEveryTypeAndTokenCount) {
  struct Shape {
    int64_t rows, cols;
  };
  // Odd row counts leave partial row groups; 4096 and 14336 are llama3-8b's widths (the row is
  // split over several warps there).
  // 96 and 8224 columns are odd block counts (the tensor-core kernel's last chunk is half a
  // chunk); 8224 and 14336 take more than one 4096-column segment of x there.
  const Shape shapes[] = {{37, 256}, {64, 4096}, {24, 14336}, {1, 512}, {19, 96}, {40, 8224}};
  for (DType type : kTypes) {
    for (const Shape& s : shapes) {
      if (s.cols % traits(type).block_elems != 0) continue;  // Q4_K, Q6_K: 256-element blocks
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
        if (s.rows * n >= 64) {
          EXPECT_LT(rel_err(y, reference(m, x, n)), 5e-6);
        }
      }
    }
  }
}

// The tensor-core kernel (gemv_mma.h) directly, in every shape it is built for: float32
// arithmetic over the exact weights, like the SIMT kernel.
TEST_F(GpuGemvTest, TensorCoreKernelMatchesFloat64) {
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{37, 256}, {64, 4096}, {24, 14336}, {1, 512}, {19, 96}, {40, 8224}};
  const std::pair<int, int> kernels[] = {{1, 4}, {1, 8}, {2, 3}, {2, 4},
                                         {2, 6}, {2, 8}, {4, 3}, {4, 4}};
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    for (const Shape& s : shapes) {
      const HostMatrix m = random_matrix(type, s.rows, s.cols, rng_);
      const gpu::GpuWeight w = upload(m);
      const std::vector<float> x = random_floats(s.cols);
      const float* dx = upload(x);
      for (const auto& [tiles, stages] : kernels) {
        SCOPED_TRACE(std::string(dtype_name(type)) + " " + std::to_string(s.rows) + "x" +
                     std::to_string(s.cols) + " tiles " + std::to_string(tiles) + " stages " +
                     std::to_string(stages));
        float* dy = device_output(s.rows);
        const Status st = gpu::gemv_mma_with_shape(w, dx, dy, tiles, stages, stream());
        if (st.code() == StatusCode::kInvalidArgument) continue;  // over this GPU's shared memory
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        EXPECT_LT(backward_err(m, x, 1, download(dy, s.rows)), 1e-6);
      }
    }
  }
}

// Blocks of x 2^-40 .. 2^40 apart (the tensor-core kernel scales x by a power of two before it
// splits it into f16 parts) must each keep float32 precision.
TEST_F(GpuGemvTest, KeepsPrecisionWhenBlocksOfXDifferInScale) {
  for (DType type : {DType::kQ8_0, DType::kQ4_0, DType::kF16}) {
    SCOPED_TRACE(dtype_name(type));
    const HostMatrix m = random_matrix(type, 48, 2048, rng_);
    const gpu::GpuWeight w = upload(m);
    std::vector<float> x = random_floats(m.cols);
    std::uniform_int_distribution<int> exponent(-40, 40);
    for (int64_t b = 0; b < m.cols / 32; ++b) {
      const float scale = std::ldexp(1.0f, exponent(rng_));
      for (int64_t i = 0; i < 32; ++i) x[b * 32 + i] *= scale;
    }
    const float* dx = upload(x);
    float* dy = device_output(m.rows);
    ASSERT_TRUE(gpu::gemv(w, dx, 1, dy, gpu::GemvOutput::kStore, stream()).is_ok());
    EXPECT_LT(backward_err(m, x, 1, download(dy, m.rows)), 1e-6);
    if (type != DType::kF16) {
      float* dz = device_output(m.rows);
      ASSERT_TRUE(gpu::gemv_mma_with_shape(w, dx, dz, 2, 4, stream()).is_ok());
      EXPECT_LT(backward_err(m, x, 1, download(dz, m.rows)), 1e-6) << "tensor cores";
    }
  }
}

// Decode steps replay as CUDA graphs and must equal direct launches bit for bit: the GEMV may
// not depend on timing (no atomics in its reductions).
TEST_F(GpuGemvTest, RepeatsBitForBit) {
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(dtype_name(type));
    const HostMatrix m = random_matrix(type, 4096, 4096, rng_);
    const gpu::GpuWeight w = upload(m);
    const float* dx = upload(random_floats(m.cols));
    float* a = device_output(m.rows);
    float* b = device_output(m.rows);
    ASSERT_TRUE(gpu::gemv(w, dx, 1, a, gpu::GemvOutput::kStore, stream()).is_ok());
    ASSERT_TRUE(gpu::gemv(w, dx, 1, b, gpu::GemvOutput::kStore, stream()).is_ok());
    EXPECT_EQ(download(a, m.rows), download(b, m.rows));
    ASSERT_TRUE(gpu::gemv_mma_with_shape(w, dx, a, 2, 4, stream()).is_ok());
    ASSERT_TRUE(gpu::gemv_mma_with_shape(w, dx, b, 2, 4, stream()).is_ok());
    EXPECT_EQ(download(a, m.rows), download(b, m.rows)) << "tensor cores";
  }
}

TEST_F(GpuGemvTest, AccumulatesIntoTheOutput) {
  for (int64_t n : {1, 2}) {
    const HostMatrix m = random_matrix(DType::kQ8_0, 40, 1024, rng_);
    const gpu::GpuWeight w = upload(m);
    const std::vector<float> x = random_floats(n * m.cols);
    const std::vector<float> y0 = random_floats(n * m.rows);
    float* dy = upload(y0);
    ASSERT_TRUE(gpu::gemv(w, upload(x), n, dy, gpu::GemvOutput::kAccumulate, stream()).is_ok());
    std::vector<double> want = reference(m, x, n);
    for (size_t i = 0; i < want.size(); ++i) want[i] += y0[i];
    EXPECT_LT(rel_err(download(dy, n * m.rows), want), 2e-6);
  }
}

TEST_F(GpuGemvTest, MultiAndSwiGLUMatchSeparateProducts) {
  for (DType type : {DType::kF16, DType::kQ4_0, DType::kQ8_0, DType::kQ6_K}) {
    for (int64_t n : {1, 3}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " tokens " + std::to_string(n));
      const int64_t cols = 512;
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
