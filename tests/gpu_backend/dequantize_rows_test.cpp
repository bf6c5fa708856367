// embed_rows and dequantize_rows on the GPU against dequantize_row, bit for bit, for every type
// the GPU reads. The weights are fresh random rows on every run (the seed is in the failure
// message): half of them random bits with finite random scales, which reach every quant, sign
// and 6-bit scale pattern (and subnormal f16 scales), half quantize_row of random normals, the
// blocks a real model holds. They reach the GPU through repack_rows, as a model's do.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_backend/elementwise.h"
#include "gpu_backend/gpu_weight.h"
#include "offload/core/dequantize.h"
#include "offload/core/dtype.h"
#include "offload/core/quant_blocks.h"
#include "offload/core/quantize.h"
#include "tests/gpu_backend/gpu_test_fixture.h"
#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

constexpr DType kTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                            DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};

uint64_t fresh_seed() {
  return (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
}

// Row lengths to try: the smallest row, an odd number of blocks, and a 14336-wide FFN row.
std::vector<int64_t> cols_for(DType type) {
  switch (traits(type).block_elems) {
    case 1:
      return {8, 200, 4096};
    case 32:
      return {32, 96 * 32 + 32, 14336};
    default:
      return {256, 5 * 256, 14336};
  }
}

uint16_t random_finite_f16(std::mt19937_64& rng) {
  uint16_t h = 0;
  do {
    h = static_cast<uint16_t>(rng());
  } while (((h >> 10) & 0x1f) == 0x1f);
  return h;
}

uint16_t random_finite_bf16(std::mt19937_64& rng) {
  uint16_t b = 0;
  do {
    b = static_cast<uint16_t>(rng());
  } while (((b >> 7) & 0xff) == 0xff);
  return b;
}

uint32_t random_finite_f32_bits(std::mt19937_64& rng) {
  uint32_t u = 0;
  do {
    u = static_cast<uint32_t>(rng());
  } while (((u >> 23) & 0xff) == 0xff);
  return u;
}

// One GGUF-layout row of random bits; every f16 scale field is a finite random f16.
void fill_random_bits(DType type, int64_t cols, std::mt19937_64& rng, uint8_t* out) {
  const int64_t bytes = row_bytes(type, cols);
  for (int64_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(rng());
  const int64_t nb = cols / traits(type).block_elems;
  auto put = [&](int64_t offset, uint16_t value) { std::memcpy(out + offset, &value, 2); };
  switch (type) {
    case DType::kF32:
      for (int64_t i = 0; i < cols; ++i) {
        const uint32_t u = random_finite_f32_bits(rng);
        std::memcpy(out + 4 * i, &u, 4);
      }
      break;
    case DType::kF16:
      for (int64_t i = 0; i < cols; ++i) put(2 * i, random_finite_f16(rng));
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < cols; ++i) put(2 * i, random_finite_bf16(rng));
      break;
    case DType::kQ8_0:
      for (int64_t b = 0; b < nb; ++b) {
        put(b * sizeof(BlockQ8_0) + offsetof(BlockQ8_0, d), random_finite_f16(rng));
      }
      break;
    case DType::kQ4_0:
      for (int64_t b = 0; b < nb; ++b) {
        put(b * sizeof(BlockQ4_0) + offsetof(BlockQ4_0, d), random_finite_f16(rng));
      }
      break;
    case DType::kQ4_K:
      for (int64_t b = 0; b < nb; ++b) {
        put(b * sizeof(BlockQ4_K) + offsetof(BlockQ4_K, d), random_finite_f16(rng));
        put(b * sizeof(BlockQ4_K) + offsetof(BlockQ4_K, dmin), random_finite_f16(rng));
      }
      break;
    case DType::kQ6_K:
      for (int64_t b = 0; b < nb; ++b) {
        put(b * sizeof(BlockQ6_K) + offsetof(BlockQ6_K, d), random_finite_f16(rng));
      }
      break;
    default:
      ADD_FAILURE() << "no generator for " << dtype_name(type);
  }
}

// A [rows][cols] matrix in its GGUF layout, and its dequantize_row values.
struct HostMatrix {
  DType type;
  int64_t rows;
  int64_t cols;
  std::vector<uint8_t> gguf;
  std::vector<float> exact;  // [rows][cols]
};

HostMatrix random_matrix(DType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  HostMatrix m{type, rows, cols, std::vector<uint8_t>(rows * row_bytes(type, cols)),
               std::vector<float>(rows * cols)};
  const int64_t stride = row_bytes(type, cols);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> source(cols);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = m.gguf.data() + r * stride;
    if (r % 2 == 0) {
      fill_random_bits(type, cols, rng, row);
    } else {
      for (float& x : source) x = normal(rng);
      const Status q = quantize_row(type, source.data(), row, cols);
      EXPECT_TRUE(q.is_ok()) << q.to_string();
    }
    const Status s = dequantize_row(type, row, m.exact.data() + r * cols, cols);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
  }
  return m;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// "" when equal bit for bit, else where and how they first differ.
std::string first_difference(const std::vector<float>& got, const std::vector<float>& want,
                             int64_t cols) {
  if (got.size() != want.size()) return "sizes differ";
  for (size_t i = 0; i < got.size(); ++i) {
    if (bits_of(got[i]) != bits_of(want[i])) {
      std::ostringstream out;
      out << "element [" << i / cols << "][" << i % cols << "]: got " << got[i] << " (0x"
          << std::hex << bits_of(got[i]) << "), want " << std::dec << want[i] << " (0x" << std::hex
          << bits_of(want[i]) << ")";
      return out.str();
    }
  }
  return "";
}

std::string first_difference(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want,
                             int64_t cols) {
  if (got.size() != want.size()) return "sizes differ";
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      std::ostringstream out;
      out << "element [" << i / cols << "][" << i % cols << "]: got 0x" << std::hex << got[i]
          << ", want 0x" << want[i];
      return out.str();
    }
  }
  return "";
}

class DequantizeRowsTest : public strata::testing::GpuTest {
 protected:
  // The matrix in the GPU layout (repack_rows), in one buffer as the weight store keeps it.
  gpu::GpuWeight upload_weight(const HostMatrix& m) {
    StatusOr<gpu::GpuWeightLayout> layout = gpu::gpu_weight_layout(m.type, m.rows, m.cols);
    EXPECT_TRUE(layout.is_ok()) << layout.status().to_string();
    if (!layout.is_ok()) return {};
    std::vector<uint8_t> planes(static_cast<size_t>(layout->total_bytes));
    gpu::repack_rows(m.type, m.cols, m.gguf.data(), m.rows, planes.data(),
                     reinterpret_cast<uint16_t*>(planes.data() + layout->scale_offset_bytes));
    auto* device = static_cast<uint8_t*>(device_alloc(layout->total_bytes));
    EXPECT_TRUE(cuda::memcpy_async(device, planes.data(), layout->total_bytes,
                                   cuda::CopyKind::kHostToDevice, stream())
                    .is_ok());
    EXPECT_TRUE(stream().synchronize().is_ok());
    gpu::GpuWeight w;
    w.type = m.type;
    w.rows = m.rows;
    w.cols = m.cols;
    w.data = device;
    w.scales = layout->scale_row_elems > 0
                   ? reinterpret_cast<const uint16_t*>(device + layout->scale_offset_bytes)
                   : nullptr;
    return w;
  }

  // dequantize_rows of rows [row0, row0 + n_rows) into a poisoned buffer of `to`, downloaded.
  template <typename T>
  std::vector<T> dequantize(const gpu::GpuWeight& w, int64_t row0, int64_t n_rows, DType to) {
    const int64_t count = n_rows * w.cols;
    void* out = device_alloc(count * static_cast<int64_t>(sizeof(T)));
    const Status s = gpu::dequantize_rows(w, row0, n_rows, to, out, stream());
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    return download(static_cast<const T*>(out), count);
  }
};

TEST_F(DequantizeRowsTest, ToF32IsBitExactForEveryType) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType type : kTypes) {
    for (int64_t cols : cols_for(type)) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " cols=" + std::to_string(cols));
      const int64_t rows = 11;
      const HostMatrix m = random_matrix(type, rows, cols, rng);
      const gpu::GpuWeight w = upload_weight(m);
      // All rows, then a slice that starts inside the matrix (row0 moves the source, not the
      // output).
      EXPECT_EQ(first_difference(dequantize<float>(w, 0, rows, DType::kF32), m.exact, cols), "");
      const int64_t row0 = 3;
      const int64_t n_rows = 5;
      const std::vector<float> want(m.exact.begin() + row0 * cols,
                                    m.exact.begin() + (row0 + n_rows) * cols);
      EXPECT_EQ(first_difference(dequantize<float>(w, row0, n_rows, DType::kF32), want, cols), "");
    }
  }
}

TEST_F(DequantizeRowsTest, ToF16AndBF16RoundEachExactValueOnce) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType type : kTypes) {
    for (int64_t cols : cols_for(type)) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " cols=" + std::to_string(cols));
      const int64_t rows = 6;
      const HostMatrix m = random_matrix(type, rows, cols, rng);
      const gpu::GpuWeight w = upload_weight(m);
      std::vector<uint16_t> want_f16(m.exact.size());
      std::vector<uint16_t> want_bf16(m.exact.size());
      for (size_t i = 0; i < m.exact.size(); ++i) {
        want_f16[i] = f32_to_f16(m.exact[i]);
        want_bf16[i] = f32_to_bf16(m.exact[i]);
      }
      EXPECT_EQ(first_difference(dequantize<uint16_t>(w, 0, rows, DType::kF16), want_f16, cols), "")
          << "F16";
      EXPECT_EQ(first_difference(dequantize<uint16_t>(w, 0, rows, DType::kBF16), want_bf16, cols),
                "")
          << "BF16";
    }
  }
}

TEST_F(DequantizeRowsTest, EmbedRowsIsBitExactForEveryType) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType type : kTypes) {
    for (int64_t cols : cols_for(type)) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " cols=" + std::to_string(cols));
      const int64_t rows = 17;
      const HostMatrix m = random_matrix(type, rows, cols, rng);
      const gpu::GpuWeight w = upload_weight(m);
      // Ids in any order, with repeats, the first and the last row among them.
      std::vector<int32_t> ids = {0, static_cast<int32_t>(rows - 1)};
      std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(rows - 1));
      for (int i = 0; i < 10; ++i) ids.push_back(id(rng));
      ids.push_back(ids[2]);
      const auto n_tokens = static_cast<int64_t>(ids.size());
      std::vector<float> want(n_tokens * cols);
      for (int64_t t = 0; t < n_tokens; ++t) {
        std::memcpy(want.data() + t * cols, m.exact.data() + ids[t] * cols, cols * sizeof(float));
      }
      const int32_t* device_ids = upload(ids);
      float* out = device_output(n_tokens * cols);
      const Status s = gpu::embed_rows(w, device_ids, n_tokens, out, stream());
      ASSERT_TRUE(s.is_ok()) << s.to_string();
      EXPECT_EQ(first_difference(download(out, n_tokens * cols), want, cols), "");
    }
  }
}

// More rows (and tokens) than a grid's y dimension holds (65535): the kernels loop over them.
TEST_F(DequantizeRowsTest, RowsPastTheGridLimitAreWritten) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 70000 + 17;
  const HostMatrix m = random_matrix(DType::kQ4_0, rows, 64, rng);
  const gpu::GpuWeight w = upload_weight(m);
  EXPECT_EQ(first_difference(dequantize<float>(w, 0, rows, DType::kF32), m.exact, m.cols), "");

  std::vector<int32_t> ids(rows);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(rows - 1));
  for (int32_t& i : ids) i = id(rng);
  std::vector<float> want(rows * m.cols);
  for (int64_t t = 0; t < rows; ++t) {
    std::memcpy(want.data() + t * m.cols, m.exact.data() + ids[t] * m.cols, m.cols * sizeof(float));
  }
  float* out = device_output(rows * m.cols);
  ASSERT_TRUE(gpu::embed_rows(w, upload(ids), rows, out, stream()).is_ok());
  EXPECT_EQ(first_difference(download(out, rows * m.cols), want, m.cols), "");
}

// A token id outside the table reads nothing past the weight; its row is NaN so that it shows.
TEST_F(DequantizeRowsTest, EmbedOfAnIdOutsideTheTableIsNaN) {
  std::mt19937_64 rng(fresh_seed());
  const HostMatrix m = random_matrix(DType::kQ8_0, 4, 64, rng);
  const gpu::GpuWeight w = upload_weight(m);
  const std::vector<int32_t> ids = {1, 4, -1, 2};
  float* out = device_output(4 * m.cols);
  ASSERT_TRUE(gpu::embed_rows(w, upload(ids), 4, out, stream()).is_ok());
  const std::vector<float> got = download(out, 4 * m.cols);
  for (int64_t i = 0; i < m.cols; ++i) {
    EXPECT_EQ(bits_of(got[i]), bits_of(m.exact[1 * m.cols + i]));
    EXPECT_TRUE(std::isnan(got[1 * m.cols + i]));
    EXPECT_TRUE(std::isnan(got[2 * m.cols + i]));
    EXPECT_EQ(bits_of(got[3 * m.cols + i]), bits_of(m.exact[2 * m.cols + i]));
  }
}

TEST_F(DequantizeRowsTest, RejectsBadArguments) {
  std::mt19937_64 rng(fresh_seed());
  const HostMatrix m = random_matrix(DType::kQ4_K, 4, 256, rng);
  const gpu::GpuWeight w = upload_weight(m);
  void* out = device_alloc(4 * 256 * 4);

  Status s = gpu::dequantize_rows(w, 0, 4, DType::kQ8_0, out, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "Q8_0");
  s = gpu::dequantize_rows(w, 2, 3, DType::kF32, out, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "rows [2, 5)");
  s = gpu::dequantize_rows(w, 0, 4, DType::kF32, static_cast<uint8_t*>(out) + 4, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "aligned");

  gpu::GpuWeight unsupported = w;
  unsupported.type = DType::kQ5_K;
  s = gpu::dequantize_rows(unsupported, 0, 4, DType::kF32, out, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "Q5_K");

  // Nothing to do is not an error, and launches nothing.
  EXPECT_TRUE(gpu::dequantize_rows(w, 4, 0, DType::kF16, out, stream()).is_ok());
  EXPECT_TRUE(gpu::embed_rows(w, nullptr, 0, nullptr, stream()).is_ok());
  EXPECT_TRUE(stream().synchronize().is_ok());
}

}  // namespace
}  // namespace strata
