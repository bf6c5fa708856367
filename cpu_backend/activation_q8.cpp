// ActivationsQ8::quantize: one block of 32 values at a time, AVX-512 where the build has it (a
// decode step quantizes ~40k values a layer; at a few ns a value in scalar code that would be
// several percent of a Q4_0 layer's GEMV time), the same arithmetic in scalar code otherwise.
#include "cpu_backend/activation_q8.h"

#include <cmath>
#include <cstring>
#include <string>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define STRATA_Q8_AVX512 1
// GCC 12's false positive inside avx512fintrin.h (see gemv_avx512.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace strata::cpu {
namespace {

constexpr int64_t kLanes = 4;  // values per int32 lane of a VNNI dot

int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// d of a block with max |x| = amax, and the factor that maps x to q.
struct BlockScale {
  float d, inverse;
};
BlockScale scale_of(float amax) {
  const float d = amax / 127.0f;
  return {d, d != 0.0f ? 1.0f / d : 0.0f};
}

struct BlockOut {
  int8_t* q;           // [32]
  int32_t* lane_sums;  // [8]
  float* lane_d;       // [8]
  float* d;
  int32_t* sum;
  float* d_sum;
};

void finish_block(const BlockScale& s, int32_t sum, const BlockOut& out) {
  *out.d = s.d;
  *out.sum = sum;
  *out.d_sum = s.d * static_cast<float>(sum);
}

#if STRATA_Q8_AVX512
// roundf (half away from zero) of values below 2^23 in magnitude: the truncation plus the sign
// where the dropped fraction is at least one half; every step is exact.
__m512 round_half_away(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_sub_ps(v, t);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(frac), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one_signed = _mm512_or_ps(
      _mm512_and_ps(v, _mm512_castsi512_ps(_mm512_set1_epi32(INT32_MIN))), _mm512_set1_ps(1.0f));
  return _mm512_mask_add_ps(t, up, t, one_signed);
}

void quantize_block(const float* x, const BlockOut& out) {
  const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
  const BlockScale s =
      scale_of(_mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))));
  const __m512 inv = _mm512_set1_ps(s.inverse);
  const __m512i q0 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v0, inv)));
  const __m512i q1 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v1, inv)));
  _mm_store_si128(reinterpret_cast<__m128i*>(out.q), _mm512_cvtsepi32_epi8(q0));
  _mm_store_si128(reinterpret_cast<__m128i*>(out.q + 16), _mm512_cvtsepi32_epi8(q1));
  // Sums of 4: adjacent pairs of int32 lanes added, then the low half of each 64-bit lane.
  const __m512i pairs = _mm512_permutex2var_epi32(
      q0, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), q1);
  const __m512i odds = _mm512_permutex2var_epi32(
      q0, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), q1);
  const __m512i two = _mm512_add_epi32(pairs, odds);  // sums of values 2i, 2i + 1
  const __m512i four = _mm512_add_epi32(two, _mm512_srli_epi64(two, 32));
  const __m256i lanes = _mm512_cvtepi64_epi32(four);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.lane_sums), lanes);
  _mm256_storeu_ps(out.lane_d, _mm256_set1_ps(s.d));
  finish_block(s, _mm512_reduce_add_epi32(two), out);
}
#else
void quantize_block(const float* x, const BlockOut& out) {
  float amax = 0.0f;
  for (int i = 0; i < kActivationBlockQ8; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const BlockScale s = scale_of(amax);
  int32_t sum = 0;
  for (int l = 0; l < kActivationBlockQ8 / kLanes; ++l) {
    int32_t lane = 0;
    for (int i = 0; i < kLanes; ++i) {
      const int q = static_cast<int>(std::roundf(x[l * kLanes + i] * s.inverse));
      out.q[l * kLanes + i] = static_cast<int8_t>(q);
      lane += q;
    }
    out.lane_sums[l] = lane;
    out.lane_d[l] = s.d;
    sum += lane;
  }
  finish_block(s, sum, out);
}
#endif

}  // namespace

void ActivationsQ8::reserve(int64_t rows, int64_t cols) {
  q_stride_ = round_up(cols, 64);
  block_stride_ = round_up(cols / kActivationBlockQ8, 16);
  lane_stride_ = round_up(cols / kLanes, 16);
  // q, then d, sums, d_sums (block_stride each), then lane_d, lane_sums: all 4-byte elements
  // after q, every array starting on a 64-byte boundary.
  const int64_t bytes = rows * (q_stride_ + 4 * (3 * block_stride_ + 2 * lane_stride_)) + 64;
  if (bytes > capacity_bytes_) {
    storage_ = std::make_unique<uint8_t[]>(static_cast<size_t>(bytes));
    capacity_bytes_ = bytes;
  }
  auto addr = reinterpret_cast<uintptr_t>(storage_.get());
  uint8_t* p = storage_.get() + (64 - addr % 64) % 64;
  q_ = reinterpret_cast<int8_t*>(p);
  p += rows * q_stride_;
  auto take = [&](int64_t elems) {
    uint8_t* at = p;
    p += 4 * rows * elems;
    return at;
  };
  d_ = reinterpret_cast<float*>(take(block_stride_));
  sums_ = reinterpret_cast<int32_t*>(take(block_stride_));
  d_sums_ = reinterpret_cast<float*>(take(block_stride_));
  lane_d_ = reinterpret_cast<float*>(take(lane_stride_));
  lane_sums_ = reinterpret_cast<int32_t*>(take(lane_stride_));
}

Status ActivationsQ8::quantize(const float* x, int64_t rows, int64_t cols, int64_t x_stride) {
  if (x_stride == 0) x_stride = cols;
  if (rows < 0 || cols <= 0 || cols % kActivationBlockQ8 != 0 || x_stride < cols ||
      (rows > 0 && x == nullptr)) {
    return Status::invalid_argument("ActivationsQ8::quantize: " + std::to_string(rows) +
                                    " rows of " + std::to_string(cols) + " values (stride " +
                                    std::to_string(x_stride) +
                                    "): needs whole blocks of 32 and a non-null x");
  }
  reserve(rows, cols);
  rows_ = rows;
  cols_ = cols;
  const int64_t lanes_per_block = kActivationBlockQ8 / kLanes;
  // A prefill quantizes thousands of rows (2048 x 14336 values: ~7 ms on one core).
#pragma omp parallel for schedule(static) if (rows >= 64)
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t b = 0; b < cols / kActivationBlockQ8; ++b) {
      const BlockOut out{q_ + m * q_stride_ + b * kActivationBlockQ8,
                         lane_sums_ + m * lane_stride_ + b * lanes_per_block,
                         lane_d_ + m * lane_stride_ + b * lanes_per_block,
                         d_ + m * block_stride_ + b,
                         sums_ + m * block_stride_ + b,
                         d_sums_ + m * block_stride_ + b};
      quantize_block(x + m * x_stride + b * kActivationBlockQ8, out);
    }
  }
  return Status::ok();
}

}  // namespace strata::cpu
