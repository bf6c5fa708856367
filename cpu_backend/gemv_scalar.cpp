// Portable GEMV row kernels: each block is dequantized into a small stack buffer with the same
// formulas as dequantize_row (quant_blocks.h), then dotted with every x row. Eight partial sums
// per x row keep the float32 accumulation error as low as the vector kernels'.
#include <cstring>

#include "cpu_backend/gemv.h"
#include "cpu_backend/gemv_kernels.h"
#include "offload/core/quant_blocks.h"

namespace strata::gemv_detail {
namespace {

constexpr int kLanes = 8;

// Dequantizes the block that starts at element `k` of a row into `out` (block_elems floats).
template <DType T>
struct BlockDecoder;

template <>
struct BlockDecoder<DType::kF32> {
  static constexpr int kElems = 8;
  static void decode(const uint8_t* row, int64_t block, float* out) {
    std::memcpy(out, row + block * kElems * 4, kElems * 4);
  }
};

template <>
struct BlockDecoder<DType::kF16> {
  static constexpr int kElems = 8;
  static void decode(const uint8_t* row, int64_t block, float* out) {
    const uint8_t* p = row + block * kElems * 2;
    for (int i = 0; i < kElems; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = half_to_float(h);
    }
  }
};

template <>
struct BlockDecoder<DType::kBF16> {
  static constexpr int kElems = 8;
  static void decode(const uint8_t* row, int64_t block, float* out) {
    const uint8_t* p = row + block * kElems * 2;
    for (int i = 0; i < kElems; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = bf16_to_f32(h);
    }
  }
};

template <>
struct BlockDecoder<DType::kQ8_0> {
  static constexpr int kElems = kQK8_0;
  static void decode(const uint8_t* row, int64_t block, float* out) {
    BlockQ8_0 b;
    std::memcpy(&b, row + block * sizeof(BlockQ8_0), sizeof(b));
    const float d = half_to_float(b.d);
    for (int i = 0; i < kQK8_0; ++i) out[i] = static_cast<float>(b.qs[i]) * d;
  }
};

template <>
struct BlockDecoder<DType::kQ4_0> {
  static constexpr int kElems = kQK4_0;
  static void decode(const uint8_t* row, int64_t block, float* out) {
    BlockQ4_0 b;
    std::memcpy(&b, row + block * sizeof(BlockQ4_0), sizeof(b));
    const float d = half_to_float(b.d);
    for (int i = 0; i < kQK4_0 / 2; ++i) {
      out[i] = static_cast<float>((b.qs[i] & 0xF) - 8) * d;
      out[i + kQK4_0 / 2] = static_cast<float>((b.qs[i] >> 4) - 8) * d;
    }
  }
};

template <>
struct BlockDecoder<DType::kQ4_K> {
  static constexpr int kElems = kQK_K;
  static void decode(const uint8_t* row, int64_t block, float* out) {
    BlockQ4_K b;  // a copy: rows need not be aligned for the uint16 fields
    std::memcpy(&b, row + block * sizeof(BlockQ4_K), sizeof(b));
    const float d = half_to_float(b.d);
    const float dmin = half_to_float(b.dmin);
    const uint8_t* q = b.qs;
    for (int chunk = 0; chunk < 4; ++chunk) {  // 64 elements: two sub-blocks of 32
      uint8_t sc, m;
      q4k_scale_min(2 * chunk, b.scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      q4k_scale_min(2 * chunk + 1, b.scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *out++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *out++ = d2 * static_cast<float>(q[l] >> 4) - m2;
      q += 32;
    }
  }
};

template <>
struct BlockDecoder<DType::kQ6_K> {
  static constexpr int kElems = kQK_K;
  static void decode(const uint8_t* row, int64_t block, float* out) {
    BlockQ6_K b;
    std::memcpy(&b, row + block * sizeof(BlockQ6_K), sizeof(b));
    const float d = half_to_float(b.d);
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
    const int8_t* sc = b.scales;
    for (int half = 0; half < 2; ++half) {  // 128 elements each
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        out[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        out[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        out[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        out[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
      out += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
};

template <DType T>
void row_kernel(const GemvArgs& a, int64_t row_begin, int64_t row_end) {
  using Decoder = BlockDecoder<T>;
  constexpr int kElems = Decoder::kElems;
  const int64_t full_blocks = a.cols / kElems;
  const int64_t tail = a.cols - full_blocks * kElems;  // only plain types have a tail
  float w[kElems];
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint8_t* row = a.w + n * a.w_row_bytes;
    float acc[kGemvMaxBatch][kLanes] = {};
    for (int64_t blk = 0; blk < full_blocks; ++blk) {
      Decoder::decode(row, blk, w);
      const int64_t k0 = blk * kElems;
      for (int m = 0; m < a.batch; ++m) {
        const float* x = a.x + m * a.x_stride + k0;
        for (int i = 0; i < kElems; ++i) acc[m][i % kLanes] += w[i] * x[i];
      }
    }
    if (tail > 0) {  // plain types: decode a partial block through a padded copy
      uint8_t padded[kElems * 4] = {};
      const int64_t elem_bytes = traits(T).block_bytes;
      std::memcpy(padded, row + full_blocks * kElems * elem_bytes, tail * elem_bytes);
      Decoder::decode(padded, 0, w);
      const int64_t k0 = full_blocks * kElems;
      for (int m = 0; m < a.batch; ++m) {
        const float* x = a.x + m * a.x_stride + k0;
        for (int i = 0; i < tail; ++i) acc[m][i % kLanes] += w[i] * x[i];
      }
    }
    for (int m = 0; m < a.batch; ++m) {
      float sum = 0.0f;
      for (int i = 0; i < kLanes; ++i) sum += acc[m][i];
      a.y[m * a.y_stride + n] = sum;
    }
  }
}

}  // namespace

RowKernel scalar_row_kernel(DType type) {
  switch (type) {
    case DType::kF32:
      return &row_kernel<DType::kF32>;
    case DType::kF16:
      return &row_kernel<DType::kF16>;
    case DType::kBF16:
      return &row_kernel<DType::kBF16>;
    case DType::kQ8_0:
      return &row_kernel<DType::kQ8_0>;
    case DType::kQ4_0:
      return &row_kernel<DType::kQ4_0>;
    case DType::kQ4_K:
      return &row_kernel<DType::kQ4_K>;
    case DType::kQ6_K:
      return &row_kernel<DType::kQ6_K>;
    default:
      return nullptr;
  }
}

}  // namespace strata::gemv_detail
