// Reference dequantization: one plain loop per type, written so that every float operation is the
// one ggml's dequantize_row_* performs, in the same order. Keep expressions such as `d1 * q - m1`
// unfused: a fused multiply-add rounds once instead of twice and would change the last bit.
#include "offload/core/dequantize.h"

#include <cstring>
#include <string>

#include "offload/core/quant_blocks.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF  // GCC in ISO C++ mode never contracts; clang must be told
#endif

namespace strata {
namespace {

// f16 -> f32 for a whole row; normal numbers and zeros inline (exact: only exponent rebias and
// mantissa shift), subnormals, infinities and NaNs through the shared conversion.
inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t exp = (h >> 10) & 0x1fu;
  if (exp == 0 || exp == 0x1f) return f16_to_f32(h);
  const uint32_t bits = (static_cast<uint32_t>(h & 0x8000u) << 16) | ((exp + 112) << 23) |
                        (static_cast<uint32_t>(h & 0x3ffu) << 13);
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

void dequantize_f16(const uint16_t* src, float* dst, int64_t n_elems) {
  for (int64_t i = 0; i < n_elems; ++i) dst[i] = f16_bits_to_f32(src[i]);
}

void dequantize_bf16(const uint16_t* src, float* dst, int64_t n_elems) {
  for (int64_t i = 0; i < n_elems; ++i) dst[i] = bf16_to_f32(src[i]);
}

// x = d * q
void dequantize_q8_0(const BlockQ8_0* blocks, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float d = f16_to_f32(blocks[b].d);
    float* out = dst + b * kQK8_0;
    for (int i = 0; i < kQK8_0; ++i) out[i] = blocks[b].qs[i] * d;
  }
}

// x = (q - 8) * d; element i in the low nibble of qs[i], element i + 16 in its high nibble.
void dequantize_q4_0(const BlockQ4_0* blocks, float* dst, int64_t n_blocks) {
  constexpr int kHalf = kQK4_0 / 2;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float d = f16_to_f32(blocks[b].d);
    float* out = dst + b * kQK4_0;
    for (int i = 0; i < kHalf; ++i) {
      const int low = (blocks[b].qs[i] & 0x0F) - 8;
      const int high = (blocks[b].qs[i] >> 4) - 8;
      out[i] = low * d;
      out[i + kHalf] = high * d;
    }
  }
}

// Per 64 elements (32 bytes of qs): sub-block 2k from the low nibbles, 2k+1 from the high ones;
// x = (d * sc) * q - (dmin * m).
void dequantize_q4_k(const BlockQ4_K* blocks, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockQ4_K& block = blocks[b];
    const float d = f16_to_f32(block.d);
    const float dmin = f16_to_f32(block.dmin);
    float* out = dst + b * kQK_K;
    const uint8_t* qs = block.qs;
    for (int sub = 0; sub < 8; sub += 2) {
      uint8_t sc = 0;
      uint8_t m = 0;
      q4k_scale_min(sub, block.scales, &sc, &m);
      const float d_low = d * sc;
      const float m_low = dmin * m;
      q4k_scale_min(sub + 1, block.scales, &sc, &m);
      const float d_high = d * sc;
      const float m_high = dmin * m;
      for (int i = 0; i < 32; ++i) out[i] = d_low * (qs[i] & 0xF) - m_low;
      for (int i = 0; i < 32; ++i) out[32 + i] = d_high * (qs[i] >> 4) - m_high;
      out += 64;
      qs += 32;
    }
  }
}

// Per 128 elements (64 bytes of ql, 32 of qh, 8 scales), for i in 0..31:
//   element i      : low nibble of ql[i],      qh[i] bits 0-1, scale i/16
//   element i + 32 : low nibble of ql[i + 32], qh[i] bits 2-3, scale i/16 + 2
//   element i + 64 : high nibble of ql[i],     qh[i] bits 4-5, scale i/16 + 4
//   element i + 96 : high nibble of ql[i + 32],qh[i] bits 6-7, scale i/16 + 6
// x = d * scale * (q - 32), multiplied left to right.
void dequantize_q6_k(const BlockQ6_K* blocks, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockQ6_K& block = blocks[b];
    const float d = f16_to_f32(block.d);
    float* out = dst + b * kQK_K;
    const uint8_t* ql = block.ql;
    const uint8_t* qh = block.qh;
    const int8_t* sc = block.scales;
    for (int half = 0; half < 2; ++half) {
      for (int i = 0; i < 32; ++i) {
        const int s = i / 16;
        const int q0 = ((ql[i] & 0xF) | (((qh[i] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) - 32;
        out[i] = d * sc[s + 0] * q0;
        out[i + 32] = d * sc[s + 2] * q1;
        out[i + 64] = d * sc[s + 4] * q2;
        out[i + 96] = d * sc[s + 6] * q3;
      }
      out += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

}  // namespace

Status dequantize_row(DType type, const void* src, float* dst, int64_t n_elems) {
  STRATA_ASSIGN_OR_RETURN(const int64_t n_blocks, row_blocks("dequantize_row", type, n_elems));
  switch (type) {
    case DType::kF32:
      if (n_elems > 0) std::memcpy(dst, src, static_cast<size_t>(n_elems) * sizeof(float));
      return Status::ok();
    case DType::kF16:
      dequantize_f16(static_cast<const uint16_t*>(src), dst, n_elems);
      return Status::ok();
    case DType::kBF16:
      dequantize_bf16(static_cast<const uint16_t*>(src), dst, n_elems);
      return Status::ok();
    case DType::kQ8_0:
      dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, n_blocks);
      return Status::ok();
    case DType::kQ4_0:
      dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, n_blocks);
      return Status::ok();
    case DType::kQ4_K:
      dequantize_q4_k(static_cast<const BlockQ4_K*>(src), dst, n_blocks);
      return Status::ok();
    case DType::kQ6_K:
      dequantize_q6_k(static_cast<const BlockQ6_K*>(src), dst, n_blocks);
      return Status::ok();
    default:
      return Status::unsupported("dequantize_row: tensor type " + dtype_name_or_id(type) +
                                 " is not one Strata reads (F32, F16, BF16, Q8_0, Q4_0, Q4_K, "
                                 "Q6_K)");
  }
}

}  // namespace strata
