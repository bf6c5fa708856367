// dequantize_row_bf16 (cpu_backend/dequantize_bf16.h) gives, bit for bit, dequantize_row's
// values rounded to nearest even, in the runs it owns and nowhere else, with zeros past the
// row: on fresh random rows of every stored type (the direct AVX-512 path where the CPU has it
// and the type is one it reads, dequantize_row otherwise), at tile and plain-row strides.
#include "cpu_backend/dequantize_bf16.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/cpu_backend/random_weights.h"

namespace strata::cpu {
namespace {

using testing_weights::fresh_seed;
using testing_weights::seed_note;
using testing_weights::TestMatrix;

TEST(DequantizeBf16, RowsAreDequantizeRowRoundedToNearestEven) {
  const uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  constexpr uint16_t kPoison = 0x7fc1;  // a NaN no rounding produces
  const DType types[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                         DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};
  for (const DType type : types) {
    const bool k_quant = type == DType::kQ4_K || type == DType::kQ6_K;
    std::vector<int64_t> widths = {256, 4096};
    if (!k_quant) widths.push_back(32);
    if (type == DType::kF32 || type == DType::kF16 || type == DType::kBF16) widths.push_back(70);
    for (const int64_t cols : widths) {
      for (const int64_t stride : {int64_t{32}, int64_t{512}}) {
        const TestMatrix w(type, 3, cols, rng);
        const int64_t runs = (cols + 31) / 32, offset = stride == 512 ? 5 * 32 : 0;
        std::vector<uint16_t> out(runs * stride + offset + 32, kPoison);
        std::vector<float> scratch(runs * 32);
        for (int64_t r = 0; r < w.rows; ++r) {
          std::fill(out.begin(), out.end(), kPoison);
          const Status s = dequantize_row_bf16(type, w.stored.data() + r * row_bytes(type, cols),
                                               cols, out.data() + offset, stride, scratch.data());
          ASSERT_TRUE(s.is_ok()) << s.to_string();
          int64_t wrong = 0, outside = 0;
          for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i) {
            const int64_t j = i - offset;
            const bool owned = j >= 0 && j % stride < 32 && j / stride < runs;
            if (!owned) {
              outside += out[i] != kPoison;
              continue;
            }
            const int64_t col = j / stride * 32 + j % stride;
            const uint16_t want = col < cols ? f32_to_bf16(w.dequantized[r * cols + col]) : 0;
            wrong += out[i] != want;
          }
          EXPECT_EQ(wrong, 0) << dtype_name(type) << " cols " << cols << " stride " << stride << " "
                              << seed_note(seed);
          EXPECT_EQ(outside, 0) << dtype_name(type) << " wrote outside its runs";
        }
      }
    }
  }
}

TEST(DequantizeBf16, AnUnknownTypeIsAClearError) {
  std::vector<uint8_t> row(64);
  std::vector<uint16_t> out(32);
  std::vector<float> scratch(32);
  const Status s =
      dequantize_row_bf16(static_cast<DType>(77), row.data(), 32, out.data(), 32, scratch.data());
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("not one Strata reads"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace strata::cpu
