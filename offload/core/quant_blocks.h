// Block layouts of the quantized ggml types Strata reads, byte for byte as ggml stores them in
// GGUF (little-endian; scales are IEEE half floats stored as uint16). These structs are the one
// definition that the dequantizer, the quantizer and every CPU/GPU kernel share.
//
// Value of element i of a block:
//   Q8_0: d * qs[i]
//   Q4_0: d * ((i < 16 ? qs[i] & 0xF : qs[i-16] >> 4) - 8)
//   Q4_K: 8 sub-blocks of 32; sub-block j has 6-bit scale sc[j] and min m[j] packed in `scales`;
//         x = d * sc[j] * q - dmin * m[j], q the 4-bit value (low nibbles of a 32-byte group
//         hold sub-block 2k, high nibbles sub-block 2k+1)
//   Q6_K: 16 sub-blocks of 16 with int8 scales; q = 6 bits from ql (low 4) and qh (high 2),
//         x = d * scales[j] * (q - 32)
#pragma once

#include <cstdint>

namespace strata {

inline constexpr int kQK8_0 = 32;
inline constexpr int kQK4_0 = 32;
inline constexpr int kQK_K = 256;  // super-block size of the K-quants
inline constexpr int kKScaleBytes = 12;

struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 {
  uint16_t d;              // f16 scale
  uint8_t qs[kQK4_0 / 2];  // element i in the low nibble of qs[i], element i+16 in the high one
};
static_assert(sizeof(BlockQ4_0) == 18);

struct BlockQ4_K {
  uint16_t d;                    // f16 super-block scale of the sub-block scales
  uint16_t dmin;                 // f16 super-block scale of the sub-block mins
  uint8_t scales[kKScaleBytes];  // 8 scales and 8 mins, 6 bits each
  uint8_t qs[kQK_K / 2];         // 4-bit quants
};
static_assert(sizeof(BlockQ4_K) == 144);

struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];      // low 4 bits of the quants
  uint8_t qh[kQK_K / 4];      // high 2 bits
  int8_t scales[kQK_K / 16];  // 8-bit sub-block scales
  uint16_t d;                 // f16 super-block scale
};
static_assert(sizeof(BlockQ6_K) == 210);

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K block, as ggml does.
inline void q4k_scale_min(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
    *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

}  // namespace strata
