// Quantization of float rows into ggml blocks.
//
// Q8_0 and Q4_0 repeat ggml's reference quantizers operation for operation (absmax scale, f16
// rounding of the scale, the reciprocal taken from the unrounded scale, roundf / +8.5 truncation),
// so their bytes equal llama-quantize's. The K-quants fit each sub-block by weighted least squares
// over a small grid of candidate scales (the approach of ggml's make_qkx2_quants for Q4_K and
// make_qx_quants for Q6_K), then round the sub-block scales to 6 / 8 bits and requantize with the
// rounded scales, so that what is stored is what the block really decodes to.
//
// Thread-safety: every function works on its arguments and the stack only; rows may be quantized
// from many threads at once.
//
// Range: scales are stored as f16, so (as in ggml) inputs must be finite and a block's largest
// magnitude below about 8e6 for Q8_0 and 5e5 for Q4_0 (the K-quants reach further); beyond that
// the stored scale overflows to infinity.
#include "offload/core/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "offload/core/quant_blocks.h"

namespace strata {
namespace {

// Round to nearest, ties to even. Inputs are clamped to +-4e6 first so that the 2^23 trick is
// valid (and infinities cannot overflow); callers clamp the result to their quant range.
inline int nearest_int(float value) {
  value = value < -4e6f ? -4e6f : (value > 4e6f ? 4e6f : value);
  const float shifted = value + 12582912.0f;  // 1.5 * 2^23: the integer lands in the mantissa
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

inline int clamp_int(int value, int lo, int hi) {
  return value < lo ? lo : (value > hi ? hi : value);
}

// float -> int truncating toward zero after clamping to [lo, hi] (NaN -> lo), so that inputs
// outside the range (infinities, NaN) cannot make the conversion undefined.
inline int truncate_clamped(float value, int lo, int hi) {
  if (!(value >= static_cast<float>(lo))) return lo;
  if (value > static_cast<float>(hi)) return hi;
  return static_cast<int>(value);
}

// ---- Q8_0 / Q4_0: ggml's reference quantizers -------------------------------------------------

void quantize_q8_0(const float* src, BlockQ8_0* blocks, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float* x = src + b * kQK8_0;
    float amax = 0.0f;
    for (int i = 0; i < kQK8_0; ++i) {
      const float ax = std::fabs(x[i]);
      amax = amax > ax ? amax : ax;  // ggml's MAX(amax, |x|)
    }
    const float d = amax / 127.0f;
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = f32_to_f16(d);
    for (int i = 0; i < kQK8_0; ++i) {
      // roundf: ties away from zero, as ggml; |x * inv_d| <= 127 up to rounding.
      blocks[b].qs[i] = static_cast<int8_t>(truncate_clamped(std::roundf(x[i] * inv_d), -128, 127));
    }
  }
}

void quantize_q4_0(const float* src, BlockQ4_0* blocks, int64_t n_blocks) {
  constexpr int kHalf = kQK4_0 / 2;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float* x = src + b * kQK4_0;
    // The element of largest magnitude (the first one on ties) keeps its sign: it maps to q = 0,
    // i.e. -8 * d, so the 16 levels reach one step further on its side.
    float amax = 0.0f;
    float signed_max = 0.0f;
    for (int i = 0; i < kQK4_0; ++i) {
      if (amax < std::fabs(x[i])) {
        amax = std::fabs(x[i]);
        signed_max = x[i];
      }
    }
    const float d = signed_max / -8.0f;  // -0.0 for an all-zero block, as in ggml
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = f32_to_f16(d);
    for (int i = 0; i < kHalf; ++i) {
      // x * inv_d lies in [-8, 8] up to rounding, so + 8.5 is positive and truncation floors.
      const int low = std::min(15, truncate_clamped(x[i] * inv_d + 8.5f, 0, 16));
      const int high = std::min(15, truncate_clamped(x[i + kHalf] * inv_d + 8.5f, 0, 16));
      blocks[b].qs[i] = static_cast<uint8_t>(low | (high << 4));
    }
  }
}

// ---- Q4_K ------------------------------------------------------------------------------------

constexpr int kQ4KSubBlock = 32;
constexpr int kQ4KSubBlocks = kQK_K / kQ4KSubBlock;
constexpr int kQ4KMaxQ = 15;

struct ScaleMin {
  float scale = 0.0f;  // x ~= scale * q - min
  float min = 0.0f;    // >= 0
};

// Fits x[i] ~= scale * q[i] - min, q in [0, 15], min >= 0, minimising sum w[i] * err[i]^2.
// Tries the plain range mapping and 21 slightly stretched ones; for each, the best (scale, min)
// for its q by weighted least squares. `q` receives the best quants.
ScaleMin fit_q4k_sub_block(const float* x, const float* w, uint8_t* q) {
  constexpr int n = kQ4KSubBlock;
  float lo = x[0];
  float hi = x[0];
  float sum_w = 0.0f;
  float sum_wx = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_wx += w[i] * x[i];
  }
  lo = std::min(lo, 0.0f);  // the offset only ever subtracts; a positive block starts at 0
  if (hi == lo) {
    std::fill(q, q + n, uint8_t{0});
    return {0.0f, -lo};
  }

  // Candidate 0: map [lo, hi] onto [0, 15].
  float best_scale = (hi - lo) / kQ4KMaxQ;
  float best_offset = lo;  // x ~= scale * q + offset, offset <= 0
  float best_err = 0.0f;
  {
    const float inv = kQ4KMaxQ / (hi - lo);
    for (int i = 0; i < n; ++i) {
      q[i] = static_cast<uint8_t>(clamp_int(nearest_int(inv * (x[i] - lo)), 0, kQ4KMaxQ));
      const float diff = best_scale * q[i] + best_offset - x[i];
      best_err += w[i] * diff * diff;
    }
  }

  constexpr int kSteps = 20;
  constexpr float kStretchFirst = -1.0f;
  constexpr float kStretchStep = 0.1f;
  uint8_t trial[n];
  for (int step = 0; step <= kSteps; ++step) {
    const float inv = (kQ4KMaxQ + kStretchFirst + kStretchStep * step) / (hi - lo);
    float sum_wq = 0.0f;
    float sum_wqq = 0.0f;
    float sum_wqx = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int level = clamp_int(nearest_int(inv * (x[i] - lo)), 0, kQ4KMaxQ);
      trial[i] = static_cast<uint8_t>(level);
      sum_wq += w[i] * level;
      sum_wqq += w[i] * level * level;
      sum_wqx += w[i] * level * x[i];
    }
    const float det = sum_w * sum_wqq - sum_wq * sum_wq;
    if (!(det > 0.0f)) continue;
    float scale = (sum_w * sum_wqx - sum_wx * sum_wq) / det;
    float offset = (sum_wqq * sum_wx - sum_wq * sum_wqx) / det;
    if (offset > 0.0f) {  // a positive offset cannot be stored: refit the scale alone
      offset = 0.0f;
      scale = sum_wqx / sum_wqq;
    }
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * trial[i] + offset - x[i];
      err += w[i] * diff * diff;
    }
    if (err < best_err) {
      best_err = err;
      best_scale = scale;
      best_offset = offset;
      std::copy(trial, trial + n, q);
    }
  }
  return {best_scale, -best_offset};
}

void quantize_q4_k(const float* src, BlockQ4_K* blocks, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float* x = src + b * kQK_K;
    BlockQ4_K& block = blocks[b];
    uint8_t levels[kQK_K];
    ScaleMin fits[kQ4KSubBlocks];
    float max_scale = 0.0f;
    float max_min = 0.0f;
    for (int sub = 0; sub < kQ4KSubBlocks; ++sub) {
      const float* xs = x + sub * kQ4KSubBlock;
      // Weight each element by the sub-block RMS plus its own magnitude (as ggml does): large
      // weights matter more in a matrix product than their share of the squared error says.
      float sum_sq = 0.0f;
      for (int i = 0; i < kQ4KSubBlock; ++i) sum_sq += xs[i] * xs[i];
      const float rms = std::sqrt(sum_sq / kQ4KSubBlock);
      float weights[kQ4KSubBlock];
      for (int i = 0; i < kQ4KSubBlock; ++i) weights[i] = rms + std::fabs(xs[i]);
      fits[sub] = fit_q4k_sub_block(xs, weights, levels + sub * kQ4KSubBlock);
      max_scale = std::max(max_scale, fits[sub].scale);
      max_min = std::max(max_min, fits[sub].min);
    }

    // 6-bit sub-block scales and mins relative to the block maxima; see q4k_scale_min for the
    // packing: sub-blocks 0-3 use the low 6 bits of bytes 0-7, sub-blocks 4-7 a nibble each in
    // bytes 8-11 plus the top 2 bits of bytes 0-7.
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    std::memset(block.scales, 0, sizeof(block.scales));
    for (int sub = 0; sub < kQ4KSubBlocks; ++sub) {
      const int sc = clamp_int(nearest_int(inv_scale * fits[sub].scale), 0, 63);
      const int m = clamp_int(nearest_int(inv_min * fits[sub].min), 0, 63);
      if (sub < 4) {
        block.scales[sub] |= static_cast<uint8_t>(sc);
        block.scales[sub + 4] |= static_cast<uint8_t>(m);
      } else {
        block.scales[sub + 4] = static_cast<uint8_t>((sc & 0xF) | ((m & 0xF) << 4));
        block.scales[sub - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
        block.scales[sub] |= static_cast<uint8_t>((m >> 4) << 6);
      }
    }
    block.d = f32_to_f16(max_scale / 63.0f);
    block.dmin = f32_to_f16(max_min / 63.0f);

    // Requantize with the scales as stored.
    const float d = f16_to_f32(block.d);
    const float dmin = f16_to_f32(block.dmin);
    for (int sub = 0; sub < kQ4KSubBlocks; ++sub) {
      uint8_t sc = 0;
      uint8_t m = 0;
      q4k_scale_min(sub, block.scales, &sc, &m);
      const float d_sub = d * sc;
      if (d_sub == 0.0f) continue;  // every q decodes to -dmin * m: keep the fit's levels
      const float m_sub = dmin * m;
      uint8_t* level = levels + sub * kQ4KSubBlock;
      const float* xs = x + sub * kQ4KSubBlock;
      for (int i = 0; i < kQ4KSubBlock; ++i) {
        level[i] = static_cast<uint8_t>(clamp_int(nearest_int((xs[i] + m_sub) / d_sub), 0, 15));
      }
    }
    // Each 32 bytes of qs: low nibbles sub-block 2k, high nibbles sub-block 2k + 1.
    for (int group = 0; group < kQK_K / 64; ++group) {
      const uint8_t* low = levels + group * 64;
      const uint8_t* high = low + 32;
      for (int i = 0; i < 32; ++i) {
        block.qs[group * 32 + i] = static_cast<uint8_t>(low[i] | (high[i] << 4));
      }
    }
  }
}

// ---- Q6_K ------------------------------------------------------------------------------------

constexpr int kQ6KSubBlock = 16;
constexpr int kQ6KSubBlocks = kQK_K / kQ6KSubBlock;
constexpr int kQ6KHalfRange = 32;          // q - 32 in [-32, 31]
constexpr float kQ6KZeroEpsilon = 1e-15f;  // sub-blocks below this are all zero

// Fits x[i] ~= scale * l[i], l in [-32, 31], minimising sum x[i]^2 * err[i]^2 over the plain
// absmax mapping (largest magnitude to -32) and 18 slightly stretched or shrunk ones. The scale
// carries the sign that sends the largest magnitude to -32, the end of the range with one more
// level. Returns 0 for an (almost) all-zero sub-block.
float fit_q6k_sub_block(const float* x) {
  constexpr int n = kQ6KSubBlock;
  float amax = 0.0f;
  float signed_max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      signed_max = x[i];
    }
  }
  if (amax < kQ6KZeroEpsilon) return 0.0f;

  // For fixed levels l the best scale is sum(w x l) / sum(w l^2) and the error falls by
  // sum(w x l)^2 / sum(w l^2): the candidate maximising that ratio wins.
  auto score = [&](float inv, float* sum_wxl, float* sum_wll) {
    float xl = 0.0f;
    float ll = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int level = clamp_int(nearest_int(inv * x[i]), -kQ6KHalfRange, kQ6KHalfRange - 1);
      const float w = x[i] * x[i];
      xl += w * x[i] * level;
      ll += w * level * level;
    }
    *sum_wxl = xl;
    *sum_wll = ll;
  };
  float sum_wxl = 0.0f;
  float sum_wll = 0.0f;
  score(-kQ6KHalfRange / signed_max, &sum_wxl, &sum_wll);
  float best_scale = sum_wll > 0.0f ? sum_wxl / sum_wll : 0.0f;
  float best_gain = best_scale * sum_wxl;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    score(-(kQ6KHalfRange + 0.1f * step) / signed_max, &sum_wxl, &sum_wll);
    if (sum_wll > 0.0f && sum_wxl * sum_wxl > best_gain * sum_wll) {
      best_scale = sum_wxl / sum_wll;
      best_gain = best_scale * sum_wxl;
    }
  }
  return best_scale;
}

void quantize_q6_k(const float* src, BlockQ6_K* blocks, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b) {
    const float* x = src + b * kQK_K;
    BlockQ6_K& block = blocks[b];
    float scales[kQ6KSubBlocks];
    float max_abs_scale = 0.0f;
    float signed_max_scale = 0.0f;
    for (int sub = 0; sub < kQ6KSubBlocks; ++sub) {
      scales[sub] = fit_q6k_sub_block(x + sub * kQ6KSubBlock);
      if (std::fabs(scales[sub]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[sub]);
        signed_max_scale = scales[sub];
      }
    }

    uint8_t levels[kQK_K];  // q in [0, 63], 32 meaning zero
    if (max_abs_scale < kQ6KZeroEpsilon) {
      block.d = 0;
      std::memset(block.scales, 0, sizeof(block.scales));
      std::fill(levels, levels + kQK_K, uint8_t{kQ6KHalfRange});
    } else {
      // int8 sub-block scales: the largest maps to -128, the end of the int8 range with one more
      // value, so the others keep the sign that sends their own largest element to q = 0.
      const float inv = -128.0f / signed_max_scale;
      block.d = f32_to_f16(1.0f / inv);
      for (int sub = 0; sub < kQ6KSubBlocks; ++sub) {
        block.scales[sub] =
            static_cast<int8_t>(clamp_int(nearest_int(inv * scales[sub]), -128, 127));
      }
      // Requantize with the scales as stored.
      const float d = f16_to_f32(block.d);
      for (int sub = 0; sub < kQ6KSubBlocks; ++sub) {
        const float d_sub = d * block.scales[sub];
        uint8_t* level = levels + sub * kQ6KSubBlock;
        const float* xs = x + sub * kQ6KSubBlock;
        for (int i = 0; i < kQ6KSubBlock; ++i) {
          const int l = d_sub == 0.0f ? 0
                                      : clamp_int(nearest_int(xs[i] / d_sub), -kQ6KHalfRange,
                                                  kQ6KHalfRange - 1);
          level[i] = static_cast<uint8_t>(l + kQ6KHalfRange);
        }
      }
    }

    // Per 128 elements: ql[i] holds elements i (low nibble) and i + 64 (high), ql[i + 32] holds
    // i + 32 and i + 96; qh[i] holds the top 2 bits of i, i + 32, i + 64, i + 96 from bit 0 up.
    for (int half = 0; half < 2; ++half) {
      const uint8_t* l = levels + half * 128;
      uint8_t* ql = block.ql + half * 64;
      uint8_t* qh = block.qh + half * 32;
      for (int i = 0; i < 32; ++i) {
        ql[i] = static_cast<uint8_t>((l[i] & 0xF) | ((l[i + 64] & 0xF) << 4));
        ql[i + 32] = static_cast<uint8_t>((l[i + 32] & 0xF) | ((l[i + 96] & 0xF) << 4));
        qh[i] = static_cast<uint8_t>((l[i] >> 4) | ((l[i + 32] >> 4) << 2) |
                                     ((l[i + 64] >> 4) << 4) | ((l[i + 96] >> 4) << 6));
      }
    }
  }
}

}  // namespace

Status quantize_row(DType type, const float* src, void* dst, int64_t n_elems) {
  STRATA_ASSIGN_OR_RETURN(const int64_t n_blocks, row_blocks("quantize_row", type, n_elems));
  switch (type) {
    case DType::kF32:
      if (n_elems > 0) std::memcpy(dst, src, static_cast<size_t>(n_elems) * sizeof(float));
      return Status::ok();
    case DType::kF16: {
      uint16_t* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n_elems; ++i) out[i] = f32_to_f16(src[i]);
      return Status::ok();
    }
    case DType::kBF16: {
      uint16_t* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n_elems; ++i) out[i] = f32_to_bf16(src[i]);
      return Status::ok();
    }
    case DType::kQ8_0:
      quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), n_blocks);
      return Status::ok();
    case DType::kQ4_0:
      quantize_q4_0(src, static_cast<BlockQ4_0*>(dst), n_blocks);
      return Status::ok();
    case DType::kQ4_K:
      quantize_q4_k(src, static_cast<BlockQ4_K*>(dst), n_blocks);
      return Status::ok();
    case DType::kQ6_K:
      quantize_q6_k(src, static_cast<BlockQ6_K*>(dst), n_blocks);
      return Status::ok();
    default:
      return Status::unsupported("quantize_row: cannot write tensor type " +
                                 dtype_name_or_id(type) +
                                 " (F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K can be written)");
  }
}

}  // namespace strata
