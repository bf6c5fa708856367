// dequantize_row against blocks built by hand from the format description (ggml's block layouts,
// as documented in quant_blocks.h): every expected value below is written out or derived from
// the layout rules, never from running the dequantizer.
#include "offload/core/dequantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "offload/core/quant_blocks.h"
#include "tests/core/quant_test_util.h"

namespace strata {
namespace {

using testing::float_bits;

// IEEE half constants, spelled as bits (sign | 5-bit exponent, bias 15 | 10-bit mantissa).
constexpr uint16_t kHalfOne = 0x3C00;        // 1.0
constexpr uint16_t kHalfHalf = 0x3800;       // 0.5
constexpr uint16_t kHalfTwo = 0x4000;        // 2.0
constexpr uint16_t kHalfMinusTwo = 0xC000;   // -2.0
constexpr uint16_t kHalfQuarter = 0x3400;    // 0.25
constexpr uint16_t kHalfMinusZero = 0x8000;  // -0.0
constexpr uint16_t kHalfTenth = 0x2E66;      // 2^-4 * (1 + 614/1024) = 0.0999755859375
constexpr uint16_t kHalfThird = 0x3555;      // 2^-2 * (1 + 341/1024) = 0.333251953125
constexpr float kTenth = 0.0999755859375f;
constexpr float kThird = 0.333251953125f;

std::vector<float> dequantize_or_die(DType type, const void* src, int64_t n_elems) {
  std::vector<float> out(static_cast<size_t>(n_elems), std::numeric_limits<float>::quiet_NaN());
  const Status status = dequantize_row(type, src, out.data(), n_elems);
  EXPECT_TRUE(status.is_ok()) << status.to_string();
  return out;
}

TEST(DequantizeRow, F32CopiesBitsUnchanged) {
  const std::vector<float> src = {1.5f, -0.0f, 3.0e-41f /* subnormal */,
                                  std::numeric_limits<float>::infinity(), -7.25f};
  const std::vector<float> out = dequantize_or_die(DType::kF32, src.data(), 5);
  for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(float_bits(out[i]), float_bits(src[i])) << i;
}

TEST(DequantizeRow, F16DecodesNormalsSubnormalsZerosAndInfinities) {
  const uint16_t src[] = {kHalfOne, kHalfMinusTwo,  0x7BFF, 0x0400, 0x0001,
                          0x03FF,   kHalfMinusZero, 0x7C00, 0xFC00, kHalfTenth};
  const float expected[] = {1.0f,
                            -2.0f,
                            65504.0f,
                            std::ldexp(1.0f, -14),     // smallest normal
                            std::ldexp(1.0f, -24),     // smallest subnormal
                            std::ldexp(1023.0f, -24),  // largest subnormal
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            kTenth};
  const std::vector<float> out = dequantize_or_die(DType::kF16, src, 10);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(float_bits(out[i]), float_bits(expected[i])) << i;
}

TEST(DequantizeRow, F16KeepsNaNs) {
  const uint16_t src[] = {0x7E00, 0xFE01};
  const std::vector<float> out = dequantize_or_die(DType::kF16, src, 2);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_TRUE(std::isnan(out[1]));
}

TEST(DequantizeRow, F16RowAgreesWithScalarConversionForEveryHalf) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  const std::vector<float> out = dequantize_or_die(DType::kF16, all.data(), 65536);
  int mismatches = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    if (float_bits(out[h]) != float_bits(f16_to_f32(all[h]))) ++mismatches;
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(DequantizeRow, BF16WidensTheTopSixteenBits) {
  const uint16_t src[] = {0x3F80, 0xC0A0, 0x0001, 0x7F80, 0x8000, 0x3DCD};
  const float expected[] = {1.0f,
                            -5.0f,
                            std::ldexp(1.0f, -133),
                            std::numeric_limits<float>::infinity(),
                            -0.0f,
                            std::ldexp(static_cast<float>(0x4D | 0x80), -11)};  // 0x3DCD0000
  const std::vector<float> out = dequantize_or_die(DType::kBF16, src, 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(float_bits(out[i]), float_bits(expected[i])) << i;
}

TEST(DequantizeRow, Q8_0MultipliesEachInt8ByItsBlockScale) {
  BlockQ8_0 blocks[2];
  blocks[0].d = kHalfHalf;
  blocks[1].d = kHalfMinusTwo;
  for (int i = 0; i < 32; ++i) {
    blocks[0].qs[i] = static_cast<int8_t>(i * 8 - 128);  // -128 .. 120
    blocks[1].qs[i] = static_cast<int8_t>(127 - i);
  }
  const std::vector<float> out = dequantize_or_die(DType::kQ8_0, blocks, 64);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(out[i], static_cast<float>(4 * i - 64)) << i;
    EXPECT_EQ(out[32 + i], static_cast<float>(-2 * (127 - i))) << i;
  }
}

TEST(DequantizeRow, Q8_0WithInexactScaleRoundsEachProductOnce) {
  BlockQ8_0 block;
  block.d = kHalfTenth;
  for (int i = 0; i < 32; ++i) block.qs[i] = static_cast<int8_t>(i * 7 - 100);
  const std::vector<float> out = dequantize_or_die(DType::kQ8_0, &block, 32);
  for (int i = 0; i < 32; ++i) {
    const float expected = static_cast<float>(i * 7 - 100) * kTenth;
    EXPECT_EQ(float_bits(out[i]), float_bits(expected)) << i;
  }
}

TEST(DequantizeRow, Q4_0PutsLowNibblesFirstAndHighNibblesInTheSecondHalf) {
  BlockQ4_0 blocks[2];
  blocks[0].d = kHalfTwo;
  for (int i = 0; i < 16; ++i) blocks[0].qs[i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  blocks[1].d = kHalfQuarter;
  for (int i = 0; i < 16; ++i) blocks[1].qs[i] = 0x8F;  // low 15 -> 7 * 0.25, high 8 -> 0
  const std::vector<float> out = dequantize_or_die(DType::kQ4_0, blocks, 64);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], static_cast<float>((i - 8) * 2)) << i;
    EXPECT_EQ(out[16 + i], static_cast<float>((7 - i) * 2)) << i;
    EXPECT_EQ(out[32 + i], 1.75f) << i;
    EXPECT_EQ(float_bits(out[48 + i]), float_bits(0.0f)) << i;
  }
}

TEST(DequantizeRow, Q4_0ZeroCodeTakesTheSignOfTheScale) {
  // ggml computes (q - 8) * d in float: 0 * -0.0 is -0.0.
  BlockQ4_0 block;
  block.d = kHalfMinusZero;
  std::memset(block.qs, 0x88, sizeof(block.qs));
  const std::vector<float> out = dequantize_or_die(DType::kQ4_0, &block, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(float_bits(out[i]), float_bits(-0.0f)) << i;
}

// Q4_K scales/mins chosen so every sub-block 4..7 uses its high bits.
constexpr uint8_t kQ4KScale[8] = {3, 10, 20, 63, 37, 14, 52, 1};
constexpr uint8_t kQ4KMin[8] = {0, 5, 63, 17, 9, 48, 2, 60};
// Packed by hand: bytes 0-3 = sc0..3 | (sc4..7 >> 4) << 6; bytes 4-7 = m0..3 | (m4..7 >> 4) << 6;
// bytes 8-11 = (sc4..7 & 15) | (m4..7 & 15) << 4.
//   sc4 = 37 = 0b10'0101, sc5 = 14 = 0b00'1110, sc6 = 52 = 0b11'0100, sc7 = 1
//   m4 = 9 = 0b00'1001, m5 = 48 = 0b11'0000, m6 = 2, m7 = 60 = 0b11'1100
constexpr uint8_t kQ4KPackedScales[12] = {
    3 | (2 << 6), 10 | (0 << 6), 20 | (3 << 6), 63 | (0 << 6),  // 0x83 0x0A 0xD4 0x3F
    0 | (0 << 6), 5 | (3 << 6),  63 | (0 << 6), 17 | (3 << 6),  // 0x00 0xC5 0x3F 0xD1
    0x95,         0x0E,          0x24,          0xC1};

// Where element e (0..255) of a Q4_K block lives: 32-byte group e / 64, byte e % 32 in it, the
// low nibble for even sub-blocks (e / 32) and the high nibble for odd ones.
void set_q4k_level(BlockQ4_K& block, int e, int level) {
  const int byte = (e / 64) * 32 + e % 32;
  const bool high = (e / 32) % 2 == 1;
  block.qs[byte] = high ? static_cast<uint8_t>((block.qs[byte] & 0x0F) | (level << 4))
                        : static_cast<uint8_t>((block.qs[byte] & 0xF0) | level);
}

TEST(DequantizeRow, Q4_KUnpacksSixBitScalesAndMinsIncludingHighBits) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc = 0;
    uint8_t m = 0;
    q4k_scale_min(j, kQ4KPackedScales, &sc, &m);
    EXPECT_EQ(sc, kQ4KScale[j]) << "sub-block " << j;
    EXPECT_EQ(m, kQ4KMin[j]) << "sub-block " << j;
  }
}

TEST(DequantizeRow, Q4_KDecodesEachSubBlockWithItsScaleAndMin) {
  BlockQ4_K blocks[2];
  std::memset(blocks, 0, sizeof(blocks));
  blocks[0].d = kHalfOne;
  blocks[0].dmin = kHalfOne;
  std::memcpy(blocks[0].scales, kQ4KPackedScales, 12);
  for (int e = 0; e < 256; ++e) set_q4k_level(blocks[0], e, (e * 7 + 3) % 16);
  // Second block: same levels, d = 2, dmin = 0.5: checks the block stride and both scales.
  blocks[1] = blocks[0];
  blocks[1].d = kHalfTwo;
  blocks[1].dmin = kHalfHalf;
  const std::vector<float> out = dequantize_or_die(DType::kQ4_K, blocks, 512);
  for (int e = 0; e < 256; ++e) {
    const int level = (e * 7 + 3) % 16;
    const int sub = e / 32;
    EXPECT_EQ(out[e], static_cast<float>(kQ4KScale[sub] * level - kQ4KMin[sub])) << e;
    EXPECT_EQ(out[256 + e], 2.0f * kQ4KScale[sub] * level - 0.5f * kQ4KMin[sub]) << e;
  }
}

TEST(DequantizeRow, Q4_KWithInexactScalesComputesScaleTimesQMinusMin) {
  BlockQ4_K block;
  std::memset(&block, 0, sizeof(block));
  block.d = kHalfTenth;
  block.dmin = kHalfThird;
  std::memcpy(block.scales, kQ4KPackedScales, 12);
  for (int e = 0; e < 256; ++e) set_q4k_level(block, e, (e * 5 + 1) % 16);
  const std::vector<float> out = dequantize_or_die(DType::kQ4_K, &block, 256);
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 32;
    const float scale = kTenth * static_cast<float>(kQ4KScale[sub]);
    const float min = kThird * static_cast<float>(kQ4KMin[sub]);
    const float expected = scale * static_cast<float>((e * 5 + 1) % 16) - min;
    EXPECT_EQ(float_bits(out[e]), float_bits(expected)) << e;
  }
}

// Where element e of a Q6_K block lives: half h = e / 128 uses ql[64h..], qh[32h..]; within the
// half, r = e % 128, quarter k = r / 32, i = r % 32: low 4 bits in ql[i + 32 * (k % 2)], the low
// nibble for k < 2 and the high one for k >= 2; high 2 bits at bit 2k of qh[i]. Scale e / 16.
void set_q6k_level(BlockQ6_K& block, int e, int level) {
  const int half = e / 128;
  const int quarter = (e % 128) / 32;
  const int i = e % 32;
  uint8_t& ql = block.ql[half * 64 + i + 32 * (quarter % 2)];
  uint8_t& qh = block.qh[half * 32 + i];
  if (quarter < 2) {
    ql = static_cast<uint8_t>((ql & 0xF0) | (level & 0xF));
  } else {
    ql = static_cast<uint8_t>((ql & 0x0F) | ((level & 0xF) << 4));
  }
  const int shift = 2 * quarter;
  qh = static_cast<uint8_t>((qh & ~(3 << shift)) | ((level >> 4) << shift));
}

TEST(DequantizeRow, Q6_KSpotValuesFromHandPackedBits) {
  BlockQ6_K block;
  std::memset(&block, 0, sizeof(block));  // every q = 0, i.e. -32
  block.d = kHalfHalf;
  for (int s = 0; s < 16; ++s) block.scales[s] = 2;
  block.scales[2] = 3;
  block.scales[4] = -1;
  block.scales[6] = 4;
  block.ql[0] = 0x5A;   // element 0: low nibble 0xA; element 64: high nibble 0x5
  block.ql[32] = 0xC3;  // element 32: low nibble 0x3; element 96: high nibble 0xC
  block.qh[0] = 0xE4;   // 0b11'10'01'00: high bits 0 (e0), 1 (e32), 2 (e64), 3 (e96)
  block.ql[64] = 0x0F;  // element 128 (second half): low nibble 0xF
  block.qh[32] = 0x03;  // element 128: high bits 3 -> q = 63
  const std::vector<float> out = dequantize_or_die(DType::kQ6_K, &block, 256);
  EXPECT_EQ(out[0], 0.5f * 2 * (10 - 32));        // q = 0x0A        -> -22
  EXPECT_EQ(out[32], 0.5f * 3 * (3 + 16 - 32));   // q = 0x03 | 1<<4 -> -19.5
  EXPECT_EQ(out[64], 0.5f * -1 * (5 + 32 - 32));  // q = 0x05 | 2<<4 -> -2.5
  EXPECT_EQ(out[96], 0.5f * 4 * (12 + 48 - 32));  // q = 0x0C | 3<<4 -> 56
  EXPECT_EQ(out[128], 0.5f * 2 * (63 - 32));      // second half, scale 8 -> 31
  EXPECT_EQ(out[1], -32.0f);
  EXPECT_EQ(out[255], -32.0f);
  EXPECT_EQ(out[16], 0.5f * 2 * -32);  // scale 1
}

TEST(DequantizeRow, Q6_KDecodesEveryElementFromItsQlQhBitsAndScale) {
  BlockQ6_K blocks[2];
  std::memset(blocks, 0, sizeof(blocks));
  for (int b = 0; b < 2; ++b) {
    blocks[b].d = b == 0 ? kHalfOne : kHalfTenth;
    for (int s = 0; s < 16; ++s) {
      blocks[b].scales[s] = static_cast<int8_t>((s % 2 ? -1 : 1) * (s * 8 + 1 + b));
    }
    for (int e = 0; e < 256; ++e) set_q6k_level(blocks[b], e, (e * 13 + 5 + b) % 64);
  }
  const std::vector<float> out = dequantize_or_die(DType::kQ6_K, blocks, 512);
  for (int b = 0; b < 2; ++b) {
    const float d = b == 0 ? 1.0f : kTenth;
    for (int e = 0; e < 256; ++e) {
      const float scale = static_cast<float>(blocks[b].scales[e / 16]);
      const float q = static_cast<float>((e * 13 + 5 + b) % 64 - 32);
      const float expected = d * scale * q;
      EXPECT_EQ(float_bits(out[b * 256 + e]), float_bits(expected)) << "block " << b << " e " << e;
    }
  }
}

TEST(DequantizeRow, UnsupportedTypesAreRefusedByName) {
  const uint8_t bytes[512] = {};
  float out[256];
  for (DType type : {DType::kQ4_1, DType::kQ5_K, DType::kQ8_K, DType::kI32}) {
    const Status status = dequantize_row(type, bytes, out, traits(type).block_elems);
    EXPECT_EQ(status.code(), StatusCode::kUnsupported) << dtype_name(type);
    EXPECT_NE(status.message().find(dtype_name(type)), std::string::npos) << status.message();
  }
}

TEST(DequantizeRow, PartialBlocksAreInvalidArguments) {
  const uint8_t bytes[512] = {};
  float out[256];
  EXPECT_EQ(dequantize_row(DType::kQ8_0, bytes, out, 31).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dequantize_row(DType::kQ4_K, bytes, out, 128).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dequantize_row(DType::kF32, bytes, out, -1).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(dequantize_row(DType::kQ6_K, bytes, out, 0).is_ok());
}

}  // namespace
}  // namespace strata
