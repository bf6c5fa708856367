// AVX2 + FMA GEMV row kernels, for x86 builds without AVX-512 (STRATA_CPU_ARCH=x86-64-v3).
// Same structure as gemv_avx512.cpp at 8 lanes: a per-type `Row` decoder turns every 8 stored
// weights into a __m256 of floats exactly as dequantize_row would, and Accumulators::fma
// multiplies it into every x row of the batch. The 4-bit types decode arithmetically here
// (AVX2 has no 16-entry float permute).
#include "cpu_backend/gemv_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#include <cstddef>
#include <cstring>

#include "cpu_backend/gemv.h"
#include "offload/core/quant_blocks.h"

#define STRATA_ALWAYS_INLINE inline __attribute__((always_inline))

namespace strata::gemv_detail {
namespace {

STRATA_ALWAYS_INLINE float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// 8 bytes at p, zero- or sign-extended to 8 int32 lanes.
STRATA_ALWAYS_INLINE __m256i u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
STRATA_ALWAYS_INLINE __m256i i8x8(const void* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Independent sums per x row, as in gemv_avx512.cpp, within AVX2's 16 vector registers.
template <int M>
struct Accumulators {
  static constexpr int kPerRow = M == 1 ? 4 : (M <= 4 ? 2 : 1);
  __m256 acc[M][kPerRow];
  const float* x[M];

  STRATA_ALWAYS_INLINE explicit Accumulators(const GemvArgs& a) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      x[m] = a.x + m * a.x_stride;
#pragma GCC unroll 4
      for (int s = 0; s < kPerRow; ++s) acc[m][s] = _mm256_setzero_ps();
    }
  }

  // acc[m][S] += w * x[m][k .. k+7] for every m.
  template <int S>
  STRATA_ALWAYS_INLINE void fma(__m256 w, int64_t k) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      acc[m][S % kPerRow] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x[m] + k), acc[m][S % kPerRow]);
    }
  }

  // The first `n` (< 8) lanes only; w must be zero in the others.
  template <int S>
  STRATA_ALWAYS_INLINE void fma_partial(__m256 w, int64_t k, __m256i mask) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      acc[m][S % kPerRow] =
          _mm256_fmadd_ps(w, _mm256_maskload_ps(x[m] + k, mask), acc[m][S % kPerRow]);
    }
  }

  STRATA_ALWAYS_INLINE void store(float* y, int64_t y_stride, int64_t n) const {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      __m256 sum = acc[m][0];
#pragma GCC unroll 4
      for (int s = 1; s < kPerRow; ++s) sum = _mm256_add_ps(sum, acc[m][s]);
      __m128 r = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
      r = _mm_add_ps(r, _mm_movehl_ps(r, r));
      r = _mm_add_ss(r, _mm_movehdup_ps(r));
      y[m * y_stride + n] = _mm_cvtss_f32(r);
    }
  }
};

// Lanes 0..n-1 set, for maskload.
STRATA_ALWAYS_INLINE __m256i tail_mask(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
}

// Plain types: F32, F16 and BF16 decode 8 elements at a time.
template <DType T>
struct PlainRow {
  STRATA_ALWAYS_INLINE static __m256 load(const uint8_t* row, int64_t k) {
    if constexpr (T == DType::kF32) {
      return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
    } else {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
      if constexpr (T == DType::kF16) {
        return _mm256_cvtph_ps(h);
      } else {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      }
    }
  }

  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    int64_t k = 0;
    for (; k + 32 <= cols; k += 32) {
      acc.template fma<0>(load(row, k), k);
      acc.template fma<1>(load(row, k + 8), k + 8);
      acc.template fma<2>(load(row, k + 16), k + 16);
      acc.template fma<3>(load(row, k + 24), k + 24);
    }
    for (; k + 8 <= cols; k += 8) acc.template fma<0>(load(row, k), k);
    if (k < cols) {  // decode the tail from a zero-padded copy so no byte past the row is read
      const int64_t n = cols - k;
      const int64_t elem_bytes = T == DType::kF32 ? 4 : 2;
      alignas(32) uint8_t padded[32] = {};
      std::memcpy(padded, row + k * elem_bytes, n * elem_bytes);
      acc.template fma_partial<1>(load(padded, 0), k, tail_mask(n));
    }
  }
};

struct Q8_0Row {
  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const int64_t blocks = cols / kQK8_0;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ8_0));
      const __m256 d = _mm256_set1_ps(load_half(blk));
      const uint8_t* qs = blk + offsetof(BlockQ8_0, qs);
      const int64_t k = b * kQK8_0;
      acc.template fma<0>(_mm256_mul_ps(_mm256_cvtepi32_ps(i8x8(qs)), d), k);
      acc.template fma<1>(_mm256_mul_ps(_mm256_cvtepi32_ps(i8x8(qs + 8)), d), k + 8);
      acc.template fma<2>(_mm256_mul_ps(_mm256_cvtepi32_ps(i8x8(qs + 16)), d), k + 16);
      acc.template fma<3>(_mm256_mul_ps(_mm256_cvtepi32_ps(i8x8(qs + 24)), d), k + 24);
    }
  }
};

struct Q4_0Row {
  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const __m256i low4 = _mm256_set1_epi32(0xF);
    const __m256i eight = _mm256_set1_epi32(8);
    const int64_t blocks = cols / kQK4_0;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ4_0));
      const __m256 d = _mm256_set1_ps(load_half(blk));
      const uint8_t* qs = blk + offsetof(BlockQ4_0, qs);
      const __m256i b0 = u8x8(qs), b1 = u8x8(qs + 8);
      const auto weights = [&](__m256i q) {  // (q - 8) * d
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, eight)), d);
      };
      const int64_t k = b * kQK4_0;
      acc.template fma<0>(weights(_mm256_and_si256(b0, low4)), k);
      acc.template fma<1>(weights(_mm256_and_si256(b1, low4)), k + 8);
      acc.template fma<2>(weights(_mm256_srli_epi32(b0, 4)), k + 16);
      acc.template fma<3>(weights(_mm256_srli_epi32(b1, 4)), k + 24);
    }
  }
};

struct Q4_KRow {
  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const __m256i low4 = _mm256_set1_epi32(0xF);
    const int64_t blocks = cols / kQK_K;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ4_K));
      const float d = load_half(blk + offsetof(BlockQ4_K, d));
      const float dmin = load_half(blk + offsetof(BlockQ4_K, dmin));
      const uint8_t* scales = blk + offsetof(BlockQ4_K, scales);
      const uint8_t* qs = blk + offsetof(BlockQ4_K, qs);
      for (int c = 0; c < 4; ++c) {  // 64 elements: sub-blocks 2c (low nibbles), 2c+1 (high)
        uint8_t sc, m;
        q4k_scale_min(2 * c, scales, &sc, &m);
        const __m256 d1 = _mm256_set1_ps(d * static_cast<float>(sc));
        const __m256 m1 = _mm256_set1_ps(dmin * static_cast<float>(m));
        q4k_scale_min(2 * c + 1, scales, &sc, &m);
        const __m256 d2 = _mm256_set1_ps(d * static_cast<float>(sc));
        const __m256 m2 = _mm256_set1_ps(dmin * static_cast<float>(m));
        const int64_t k = b * kQK_K + 64 * c;
        const uint8_t* q = qs + 32 * c;
        const __m256i b0 = u8x8(q), b1 = u8x8(q + 8), b2 = u8x8(q + 16), b3 = u8x8(q + 24);
        // d1 * q - m1, rounded twice as dequantize_row rounds it.
        const auto lo = [&](__m256i v) {
          return _mm256_sub_ps(_mm256_mul_ps(d1, _mm256_cvtepi32_ps(_mm256_and_si256(v, low4))),
                               m1);
        };
        const auto hi = [&](__m256i v) {
          return _mm256_sub_ps(_mm256_mul_ps(d2, _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4))), m2);
        };
        acc.template fma<0>(lo(b0), k);
        acc.template fma<1>(lo(b1), k + 8);
        acc.template fma<2>(lo(b2), k + 16);
        acc.template fma<3>(lo(b3), k + 24);
        acc.template fma<0>(hi(b0), k + 32);
        acc.template fma<1>(hi(b1), k + 40);
        acc.template fma<2>(hi(b2), k + 48);
        acc.template fma<3>(hi(b3), k + 56);
      }
    }
  }
};

struct Q6_KRow {
  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const __m256i low4 = _mm256_set1_epi32(0xF);
    const __m256i two_bits = _mm256_set1_epi32(3);
    const __m256i bias = _mm256_set1_epi32(32);
    const int64_t blocks = cols / kQK_K;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ6_K));
      const float d = load_half(blk + offsetof(BlockQ6_K, d));
      const int8_t* sc = reinterpret_cast<const int8_t*>(blk + offsetof(BlockQ6_K, scales));
      const uint8_t* ql = blk + offsetof(BlockQ6_K, ql);
      const uint8_t* qh = blk + offsetof(BlockQ6_K, qh);
      for (int half = 0; half < 2; ++half) {
        const int64_t k = b * kQK_K + 128 * half;
        for (int l = 0; l < 32; l += 8) {  // elements l.., l+32.., l+64.., l+96..
          const __m256i lo_a = u8x8(ql + l), lo_b = u8x8(ql + l + 32), h = u8x8(qh + l);
          const auto weights = [&](__m256i low, int shift, int is) {
            const __m256i high = _mm256_and_si256(_mm256_srli_epi32(h, shift), two_bits);
            const __m256i q =
                _mm256_sub_epi32(_mm256_or_si256(low, _mm256_slli_epi32(high, 4)), bias);
            const __m256 scale = _mm256_set1_ps(d * static_cast<float>(sc[is]));
            return _mm256_mul_ps(scale, _mm256_cvtepi32_ps(q));
          };
          const int is = l / 16;
          acc.template fma<0>(weights(_mm256_and_si256(lo_a, low4), 0, is), k + l);
          acc.template fma<1>(weights(_mm256_and_si256(lo_b, low4), 2, is + 2), k + l + 32);
          acc.template fma<2>(weights(_mm256_srli_epi32(lo_a, 4), 4, is + 4), k + l + 64);
          acc.template fma<3>(weights(_mm256_srli_epi32(lo_b, 4), 6, is + 6), k + l + 96);
        }
        ql += 64;
        qh += 32;
        sc += 8;
      }
    }
  }
};

template <class Row, int M>
void rows_for_batch(const GemvArgs& a, int64_t row_begin, int64_t row_end) {
  for (int64_t n = row_begin; n < row_end; ++n) {
    Accumulators<M> acc(a);
    Row::run(a.w + n * a.w_row_bytes, a.cols, acc);
    acc.store(a.y, a.y_stride, n);
  }
}

template <class Row>
void row_kernel(const GemvArgs& a, int64_t row_begin, int64_t row_end) {
  static_assert(kGemvMaxBatch == 8, "one instantiation per batch size below");
  switch (a.batch) {
    case 1:
      return rows_for_batch<Row, 1>(a, row_begin, row_end);
    case 2:
      return rows_for_batch<Row, 2>(a, row_begin, row_end);
    case 3:
      return rows_for_batch<Row, 3>(a, row_begin, row_end);
    case 4:
      return rows_for_batch<Row, 4>(a, row_begin, row_end);
    case 5:
      return rows_for_batch<Row, 5>(a, row_begin, row_end);
    case 6:
      return rows_for_batch<Row, 6>(a, row_begin, row_end);
    case 7:
      return rows_for_batch<Row, 7>(a, row_begin, row_end);
    default:
      return rows_for_batch<Row, 8>(a, row_begin, row_end);
  }
}

}  // namespace

RowKernel avx2_row_kernel(DType type) {
  switch (type) {
    case DType::kF32:
      return &row_kernel<PlainRow<DType::kF32>>;
    case DType::kF16:
      return &row_kernel<PlainRow<DType::kF16>>;
    case DType::kBF16:
      return &row_kernel<PlainRow<DType::kBF16>>;
    case DType::kQ8_0:
      return &row_kernel<Q8_0Row>;
    case DType::kQ4_0:
      return &row_kernel<Q4_0Row>;
    case DType::kQ4_K:
      return &row_kernel<Q4_KRow>;
    case DType::kQ6_K:
      return &row_kernel<Q6_KRow>;
    default:
      return nullptr;
  }
}

}  // namespace strata::gemv_detail

#else  // no AVX2 + FMA in this build

namespace strata::gemv_detail {
RowKernel avx2_row_kernel(DType) { return nullptr; }
}  // namespace strata::gemv_detail

#endif
