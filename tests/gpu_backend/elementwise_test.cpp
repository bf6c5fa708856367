// The GPU elementwise kernels against their cpu_backend twins on fresh random inputs: rms_norm,
// rope and swiglu to rel. L2 1e-6 (they call libm-class functions or sum in another order),
// add_inplace, add_bias and convert_f32 bit for bit (one IEEE operation per element). Outputs
// start as NaN (the fixture's poison), so an element a kernel skips fails.
#include "cpu_backend/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gpu_backend/elementwise.h"
#include "offload/core/dtype.h"
#include "tests/gpu_backend/gpu_test_fixture.h"
#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

constexpr double kRelTol = 1e-6;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Index of the first element whose bits differ, or -1.
int64_t first_bit_difference(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (bits_of(got[i]) != bits_of(want[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

class ElementwiseTest : public strata::testing::GpuTest {};

TEST_F(ElementwiseTest, RmsNormMatchesCpu) {
  struct Shape {
    int64_t n_tokens;
    int64_t n;
    float eps;
  };
  const Shape shapes[] = {{1, 4096, 1e-5f}, {7, 4096, 1e-6f}, {3, 896, 1e-6f},   {5, 5120, 1e-5f},
                          {2, 100, 1e-5f},  {1, 8192, 1e-5f}, {33, 2048, 1e-5f}, {4, 1, 1e-5f}};
  for (const Shape& shape : shapes) {
    SCOPED_TRACE("n_tokens=" + std::to_string(shape.n_tokens) + " n=" + std::to_string(shape.n));
    const std::vector<float> x = random_floats(shape.n_tokens * shape.n, 2.0f);
    const std::vector<float> weight = random_floats(shape.n, 1.0f);
    std::vector<float> want(x.size());
    cpu::rms_norm(x.data(), weight.data(), want.data(), shape.n_tokens, shape.n, shape.eps);

    const float* x_dev = upload(x);
    const float* weight_dev = upload(weight);
    float* y_dev = device_output(shape.n_tokens * shape.n);
    const Status s =
        gpu::rms_norm(x_dev, weight_dev, y_dev, shape.n_tokens, shape.n, shape.eps, stream());
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    EXPECT_LE(rel_l2(download(y_dev, shape.n_tokens * shape.n), want), kRelTol);
  }
}

TEST_F(ElementwiseTest, RmsNormInPlaceMatchesCpu) {
  const int64_t n_tokens = 6;
  const int64_t n = 4096;
  const std::vector<float> x = random_floats(n_tokens * n, 3.0f);
  const std::vector<float> weight = random_floats(n, 1.0f);
  std::vector<float> want(x.size());
  cpu::rms_norm(x.data(), weight.data(), want.data(), n_tokens, n, 1e-5f);
  float* x_dev = upload(x);
  ASSERT_TRUE(gpu::rms_norm(x_dev, upload(weight), x_dev, n_tokens, n, 1e-5f, stream()).is_ok());
  EXPECT_LE(rel_l2(download(x_dev, n_tokens * n), want), kRelTol);
}

TEST_F(ElementwiseTest, RopeMatchesCpuForBothStyles) {
  struct Shape {
    int64_t n_tokens;
    int64_t n_heads;
    int64_t head_dim;
    int64_t rope_dims;
    double theta;
  };
  const Shape shapes[] = {
      {1, 32, 128, 128, 500000.0}, {7, 8, 64, 64, 10000.0}, {64, 4, 128, 128, 1000000.0},
      {5, 3, 128, 64, 10000.0},    {3, 2, 80, 32, 10000.0}, {2, 14, 64, 64, 1000000.0},
      {9, 5, 96, 96, 10000.0},
  };
  std::mt19937 rng{std::random_device{}()};
  for (RopeStyle style : {RopeStyle::kAdjacentPairs, RopeStyle::kNeoxHalves}) {
    for (const Shape& shape : shapes) {
      SCOPED_TRACE(std::string(style == RopeStyle::kNeoxHalves ? "neox" : "adjacent") +
                   " n_tokens=" + std::to_string(shape.n_tokens) + " n_heads=" +
                   std::to_string(shape.n_heads) + " head_dim=" + std::to_string(shape.head_dim) +
                   " rope_dims=" + std::to_string(shape.rope_dims));
      // Positions anywhere in a 100k context, the two ends included.
      std::uniform_int_distribution<int32_t> position(0, 100000);
      std::vector<int32_t> positions(static_cast<size_t>(shape.n_tokens));
      for (int32_t& p : positions) p = position(rng);
      positions.back() = 100000;
      if (shape.n_tokens > 1) positions.front() = 0;

      const int64_t count = shape.n_tokens * shape.n_heads * shape.head_dim;
      const std::vector<float> x = random_floats(count, 1.5f);
      std::vector<float> want = x;
      cpu::rope(want.data(), shape.n_tokens, shape.n_heads, shape.head_dim, shape.rope_dims,
                positions.data(), shape.theta, style);

      float* x_dev = upload(x);
      const Status s = gpu::rope(x_dev, shape.n_tokens, shape.n_heads, shape.head_dim,
                                 shape.rope_dims, upload(positions), shape.theta, style, stream());
      ASSERT_TRUE(s.is_ok()) << s.to_string();
      const std::vector<float> got = download(x_dev, count);
      EXPECT_LE(rel_l2(got, want), kRelTol);
      // The dims past rope_dims are not touched.
      for (int64_t i = 0; i < count; ++i) {
        if (i % shape.head_dim < shape.rope_dims) continue;
        ASSERT_EQ(bits_of(got[i]), bits_of(x[i])) << "element " << i;
      }
    }
  }
}

TEST_F(ElementwiseTest, SwigluMatchesCpu) {
  const int64_t n = 3 * 14336 + 5;
  std::vector<float> gate = random_floats(n, 4.0f);
  // Saturated gates: exp(-g) overflows to inf (silu -> -0) or underflows to 0 (silu -> g).
  gate[0] = -100.0f;
  gate[1] = 100.0f;
  gate[2] = -88.0f;
  gate[3] = 0.0f;
  const std::vector<float> up = random_floats(n, 1.0f);
  std::vector<float> want(n);
  cpu::swiglu(gate.data(), up.data(), want.data(), n);

  float* gate_dev = upload(gate);
  const float* up_dev = upload(up);
  float* out_dev = device_output(n);
  ASSERT_TRUE(gpu::swiglu(gate_dev, up_dev, out_dev, n, stream()).is_ok());
  EXPECT_LE(rel_l2(download(out_dev, n), want), kRelTol);
  // out may alias gate.
  ASSERT_TRUE(gpu::swiglu(gate_dev, up_dev, gate_dev, n, stream()).is_ok());
  EXPECT_LE(rel_l2(download(gate_dev, n), want), kRelTol);
}

TEST_F(ElementwiseTest, AddInplaceIsExact) {
  const int64_t n = 3 * 4096 + 7;
  const std::vector<float> x = random_floats(n, 1.0f);
  const std::vector<float> y = random_floats(n, 3.0f);
  std::vector<float> want = y;
  cpu::add_inplace(want.data(), x.data(), n);
  float* y_dev = upload(y);
  ASSERT_TRUE(gpu::add_inplace(y_dev, upload(x), n, stream()).is_ok());
  EXPECT_EQ(first_bit_difference(download(y_dev, n), want), -1);
}

TEST_F(ElementwiseTest, CopyFloatsReadsPinnedHostMemoryUnderItsDeviceAddress) {
  // The zero-copy upload of CPU-run outputs (GpuExecutor::matmuls): the kernel reads page-locked
  // host memory itself, and add_inplace does too.
  const int64_t n = 5 * 4096 + 3;
  const std::vector<float> x = random_floats(n, 2.0f);
  auto pinned = cuda::PinnedHostBuffer::allocate(n * 4);
  ASSERT_TRUE(pinned.is_ok()) << pinned.status().to_string();
  std::memcpy(pinned->data(), x.data(), static_cast<size_t>(n) * 4);
  auto mapped = cuda::device_pointer_of_host(pinned->data());
  ASSERT_TRUE(mapped.is_ok()) << mapped.status().to_string();
  const auto* src = static_cast<const float*>(*mapped);
  float* y_dev = device_output(n);
  ASSERT_TRUE(gpu::copy_floats(y_dev, src, n, stream()).is_ok());
  EXPECT_EQ(first_bit_difference(download(y_dev, n), x), -1);

  const std::vector<float> y = random_floats(n, 3.0f);
  std::vector<float> want = y;
  cpu::add_inplace(want.data(), x.data(), n);
  float* acc = upload(y);
  ASSERT_TRUE(gpu::add_inplace(acc, src, n, stream()).is_ok());
  EXPECT_EQ(first_bit_difference(download(acc, n), want), -1);
}

TEST_F(ElementwiseTest, HostMemoryCudaDidNotPinHasNoDeviceAddress) {
  std::vector<float> pageable(1024);
  auto mapped = cuda::device_pointer_of_host(pageable.data());
  EXPECT_FALSE(mapped.is_ok());
}

TEST_F(ElementwiseTest, AddBiasIsExactOnEveryRow) {
  const int64_t n_tokens = 9;
  const int64_t n = 899;
  const std::vector<float> bias = random_floats(n, 0.5f);
  const std::vector<float> y = random_floats(n_tokens * n, 2.0f);
  std::vector<float> want = y;
  cpu::add_bias(want.data(), bias.data(), n_tokens, n);
  float* y_dev = upload(y);
  ASSERT_TRUE(gpu::add_bias(y_dev, upload(bias), n_tokens, n, stream()).is_ok());
  EXPECT_EQ(first_bit_difference(download(y_dev, n_tokens * n), want), -1);
}

// Every exponent (random finite bit patterns), normals at several scales, and the edges of the
// half range: overflow, the largest half, subnormals, the halfway point below the smallest one,
// infinities and NaNs with payloads.
TEST_F(ElementwiseTest, ConvertF32RoundsAsTheCpuDoes) {
  std::mt19937 rng{std::random_device{}()};
  std::vector<float> x;
  for (int i = 0; i < (1 << 16); ++i) {
    uint32_t u = 0;
    do {
      u = static_cast<uint32_t>(rng());
    } while (((u >> 23) & 0xff) == 0xff);
    x.push_back(float_of(u));
  }
  for (float scale : {1e-6f, 1e-3f, 1.0f, 1e4f, 7e4f}) {
    for (float v : random_floats(4096, scale)) x.push_back(v);
  }
  const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                               0xffc00001u, 0x7f800001u, 0x7fa01234u, 0x477fe000u, 0x477ff000u,
                               0x477fefffu, 0xc77ff000u, 0x33000000u, 0x33000001u, 0x33800000u,
                               0x387fc000u, 0x38800000u, 0x00000001u, 0x807fffffu, 0x3f808000u,
                               0x3f818000u, 0x3f800fffu, 0x3f801000u, 0x3f803000u};
  for (uint32_t u : specials) x.push_back(float_of(u));
  const auto n = static_cast<int64_t>(x.size());
  const float* x_dev = upload(x);

  for (DType to : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(to));
    auto* out = static_cast<uint16_t*>(device_alloc(n * 2));
    ASSERT_TRUE(gpu::convert_f32(x_dev, n, to, out, stream()).is_ok());
    const std::vector<uint16_t> got = download(out, n);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = to == DType::kF16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
      ASSERT_EQ(got[i], want) << "element " << i << " = " << x[i] << " (0x" << std::hex
                              << bits_of(x[i]) << ")";
    }
  }
}

TEST_F(ElementwiseTest, RejectsBadArgumentsAndDoesNothingForEmptyInputs) {
  float* x = device_output(64);
  const int32_t* positions = upload(std::vector<int32_t>{0});
  Status s = gpu::rope(x, 1, 1, 64, 63, positions, 10000.0, RopeStyle::kAdjacentPairs, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "rope_dims 63");
  s = gpu::rope(x, 1, 1, 64, 128, positions, 10000.0, RopeStyle::kAdjacentPairs, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = gpu::convert_f32(x, 64, DType::kQ8_0, x, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "Q8_0");
  EXPECT_EQ(gpu::swiglu(x, x, x, -1, stream()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::rms_norm(x, x, x, -1, 64, 1e-5f, stream()).code(), StatusCode::kInvalidArgument);

  EXPECT_TRUE(gpu::rms_norm(nullptr, nullptr, nullptr, 0, 4096, 1e-5f, stream()).is_ok());
  EXPECT_TRUE(
      gpu::rope(nullptr, 0, 32, 128, 128, nullptr, 1e4, RopeStyle::kNeoxHalves, stream()).is_ok());
  EXPECT_TRUE(gpu::swiglu(nullptr, nullptr, nullptr, 0, stream()).is_ok());
  EXPECT_TRUE(gpu::add_inplace(nullptr, nullptr, 0, stream()).is_ok());
  EXPECT_TRUE(gpu::add_bias(nullptr, nullptr, 0, 896, stream()).is_ok());
  EXPECT_TRUE(gpu::convert_f32(nullptr, 0, DType::kBF16, nullptr, stream()).is_ok());
  EXPECT_TRUE(stream().synchronize().is_ok());
}

}  // namespace
}  // namespace strata
