// Scalar integer GEMV kernels (gemv_q8.h): the arithmetic written out plainly, one weight row and
// one activation block of 32 at a time. Every integer dot of a (sub-)block is exact; each one is
// scaled by the float32 product of the weight's and the activation's scale and added in float32.
// The AVX-512 kernels compute the same terms, summed in another order.
#include <cstddef>
#include <cstring>

#include "cpu_backend/gemv_kernels.h"
#include "offload/core/dtype.h"
#include "offload/core/quant_blocks.h"

namespace strata::gemv_detail {
namespace {

constexpr int64_t kBlock = cpu::kActivationBlockQ8;

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// sum_i w[i] * q[i] over n values.
template <class W>
int32_t dot(const W* w, const int8_t* q, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<int32_t>(w[i]) * q[i];
  return s;
}

// One row against row m of x.
float row_q8_0(const uint8_t* row, const cpu::ActivationsQ8& x, int64_t m, int64_t cols) {
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / kQK8_0; ++b) {
    const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ8_0));
    const auto* qs = reinterpret_cast<const int8_t*>(blk + offsetof(BlockQ8_0, qs));
    const float scale = half_at(blk + offsetof(BlockQ8_0, d)) * x.d(m)[b];
    acc += scale * static_cast<float>(dot(qs, x.q(m) + b * kBlock, kQK8_0));
  }
  return acc;
}

float row_q4_0(const uint8_t* row, const cpu::ActivationsQ8& x, int64_t m, int64_t cols) {
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / kQK4_0; ++b) {
    const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ4_0));
    const uint8_t* qs = blk + offsetof(BlockQ4_0, qs);
    uint8_t n[kQK4_0];
    for (int i = 0; i < 16; ++i) {
      n[i] = qs[i] & 0xF;
      n[i + 16] = qs[i] >> 4;
    }
    // sum (n - 8) q = sum n q - 8 sum q
    const int32_t s = dot(n, x.q(m) + b * kBlock, kQK4_0) - 8 * x.sums(m)[b];
    acc += half_at(blk + offsetof(BlockQ4_0, d)) * x.d(m)[b] * static_cast<float>(s);
  }
  return acc;
}

float row_q4_k(const uint8_t* row, const cpu::ActivationsQ8& x, int64_t m, int64_t cols) {
  float acc = 0.0f, mins = 0.0f;
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ4_K));
    const float d = half_at(blk + offsetof(BlockQ4_K, d));
    const float dmin = half_at(blk + offsetof(BlockQ4_K, dmin));
    const uint8_t* qs = blk + offsetof(BlockQ4_K, qs);
    for (int j = 0; j < 8; ++j) {  // sub-block j: x block 8 b + j
      uint8_t sc, mn;
      q4k_scale_min(j, blk + offsetof(BlockQ4_K, scales), &sc, &mn);
      uint8_t n[32];
      for (int i = 0; i < 32; ++i)
        n[i] = (j % 2 == 0) ? qs[32 * (j / 2) + i] & 0xF : qs[32 * (j / 2) + i] >> 4;
      const int64_t xb = 8 * b + j;
      // (d sc n - dmin m) q d_x summed: d sc d_x sum n q - dmin m (d_x sum q)
      acc += d * static_cast<float>(sc) * x.d(m)[xb] *
             static_cast<float>(dot(n, x.q(m) + xb * kBlock, 32));
      mins += dmin * static_cast<float>(mn) * x.d_sums(m)[xb];
    }
  }
  return acc - mins;
}

float row_q6_k(const uint8_t* row, const cpu::ActivationsQ8& x, int64_t m, int64_t cols) {
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / kQK_K; ++b) {
    const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ6_K));
    const float d = half_at(blk + offsetof(BlockQ6_K, d));
    const uint8_t* ql = blk + offsetof(BlockQ6_K, ql);
    const uint8_t* qh = blk + offsetof(BlockQ6_K, qh);
    const auto* scales = reinterpret_cast<const int8_t*>(blk + offsetof(BlockQ6_K, scales));
    int8_t q[kQK_K];  // q - 32, in element order (dequantize.cpp's layout)
    for (int half = 0; half < 2; ++half) {
      const uint8_t* l = ql + 64 * half;
      const uint8_t* h = qh + 32 * half;
      int8_t* o = q + 128 * half;
      for (int i = 0; i < 32; ++i) {
        o[i] = static_cast<int8_t>(((l[i] & 0xF) | (((h[i] >> 0) & 3) << 4)) - 32);
        o[i + 32] = static_cast<int8_t>(((l[i + 32] & 0xF) | (((h[i] >> 2) & 3) << 4)) - 32);
        o[i + 64] = static_cast<int8_t>(((l[i] >> 4) | (((h[i] >> 4) & 3) << 4)) - 32);
        o[i + 96] = static_cast<int8_t>(((l[i + 32] >> 4) | (((h[i] >> 6) & 3) << 4)) - 32);
      }
    }
    for (int j = 0; j < 16; ++j) {  // sub-blocks of 16, two per x block
      const int64_t e = b * kQK_K + 16 * j;
      acc += d * static_cast<float>(scales[j]) * x.d(m)[e / kBlock] *
             static_cast<float>(dot(q + 16 * j, x.q(m) + e, 16));
    }
  }
  return acc;
}

template <float (*Row)(const uint8_t*, const cpu::ActivationsQ8&, int64_t, int64_t)>
void kernel(const GemvQ8Args& a, int64_t row_begin, int64_t row_end) {
  for (int64_t n = row_begin; n < row_end; ++n) {
    for (int m = 0; m < a.batch; ++m) {
      a.y[m * a.y_stride + n] = Row(a.w + n * a.w_row_bytes, *a.x, a.first_row + m, a.cols);
    }
  }
}

}  // namespace

Q8RowKernel scalar_q8_row_kernel(DType type) {
  switch (type) {
    case DType::kQ8_0:
      return &kernel<row_q8_0>;
    case DType::kQ4_0:
      return &kernel<row_q4_0>;
    case DType::kQ4_K:
      return &kernel<row_q4_k>;
    case DType::kQ6_K:
      return &kernel<row_q6_k>;
    default:
      return nullptr;
  }
}

}  // namespace strata::gemv_detail
