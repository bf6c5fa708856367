// Random weight matrices in every stored type for the GEMV tests (gemv_test.cpp,
// gemv_q8_test.cpp): every bit pattern of the quants allowed, finite f16 scales, and the exact
// float32 dequantization beside the stored bytes.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu_backend/gemv.h"
#include "offload/core/dequantize.h"
#include "offload/core/dtype.h"
#include "offload/core/quant_blocks.h"

namespace strata::testing_weights {

inline uint64_t fresh_seed() {
  return (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
}

inline std::string seed_note(uint64_t seed) { return "seed=" + std::to_string(seed); }

inline uint16_t random_scale(std::mt19937_64& rng, bool allow_negative) {
  std::uniform_real_distribution<float> mag(1e-3f, 5e-2f);
  float v = mag(rng);
  if (allow_negative && (rng() & 1)) v = -v;
  return f32_to_f16(v);
}

// A row of `cols` random elements of `type`, every bit pattern of the quants allowed; scales are
// finite f16 values so that no weight is Inf or NaN.
inline void fill_row(DType type, int64_t cols, std::mt19937_64& rng, uint8_t* out) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const int64_t bytes = row_bytes(type, cols);
  for (int64_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(rng());
  switch (type) {
    case DType::kF32:
      for (int64_t i = 0; i < cols; ++i) {
        const float v = uni(rng);
        std::memcpy(out + 4 * i, &v, 4);
      }
      break;
    case DType::kF16:
    case DType::kBF16:
      for (int64_t i = 0; i < cols; ++i) {
        const uint16_t h = type == DType::kF16 ? f32_to_f16(uni(rng)) : f32_to_bf16(uni(rng));
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    case DType::kQ8_0:
      for (int64_t b = 0; b < cols / kQK8_0; ++b) {
        const uint16_t d = random_scale(rng, true);
        std::memcpy(out + b * sizeof(BlockQ8_0) + offsetof(BlockQ8_0, d), &d, 2);
      }
      break;
    case DType::kQ4_0:
      for (int64_t b = 0; b < cols / kQK4_0; ++b) {
        const uint16_t d = random_scale(rng, true);
        std::memcpy(out + b * sizeof(BlockQ4_0) + offsetof(BlockQ4_0, d), &d, 2);
      }
      break;
    case DType::kQ4_K:
      for (int64_t b = 0; b < cols / kQK_K; ++b) {
        const uint16_t d = random_scale(rng, false), dmin = random_scale(rng, false);
        std::memcpy(out + b * sizeof(BlockQ4_K) + offsetof(BlockQ4_K, d), &d, 2);
        std::memcpy(out + b * sizeof(BlockQ4_K) + offsetof(BlockQ4_K, dmin), &dmin, 2);
      }
      break;
    case DType::kQ6_K:
      for (int64_t b = 0; b < cols / kQK_K; ++b) {
        const uint16_t d = random_scale(rng, true);
        std::memcpy(out + b * sizeof(BlockQ6_K) + offsetof(BlockQ6_K, d), &d, 2);
      }
      break;
    default:
      FAIL() << "no generator for " << dtype_name(type);
  }
}

// A random matrix in its stored type plus its exact float32 dequantization.
struct TestMatrix {
  DType type;
  int64_t rows, cols;
  std::vector<uint8_t> stored;
  std::vector<float> dequantized;  // [rows][cols]

  WeightMatrix view() const { return {type, rows, cols, stored.data()}; }

  TestMatrix(DType t, int64_t r, int64_t c, std::mt19937_64& rng)
      : type(t), rows(r), cols(c), stored(r * row_bytes(t, c)), dequantized(r * c) {
    const int64_t stride = row_bytes(t, c);
    for (int64_t n = 0; n < rows; ++n) {
      fill_row(t, c, rng, stored.data() + n * stride);
      const Status s = dequantize_row(t, stored.data() + n * stride, dequantized.data() + n * c, c);
      EXPECT_TRUE(s.is_ok()) << s.to_string();
    }
  }
};

inline std::vector<float> random_vector(int64_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& e : v) e = uni(rng);
  return v;
}

}  // namespace strata::testing_weights
