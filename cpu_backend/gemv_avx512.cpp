// AVX-512 GEMV row kernels. Each weight type has a `Row` decoder that walks one stored row,
// turns every 16 weights into a __m512 of floats exactly as dequantize_row would (same formula,
// same rounding; the build uses -ffp-contract=off so nothing is fused behind our back), and hands
// each vector to Accumulators::fma, which multiplies it into every x row of the batch. The weights
// are therefore loaded and decoded once per batch, never written anywhere.
//
// Decoding tricks, per type:
//   Q4_0, Q4_K: a 4-bit quant has 16 possible values, so each (sub-)block builds a 16-entry float
//     table (d * (q - 8), or d1 * q - m1) and vpermps looks the weights up: the index is the byte
//     zero-extended to 32 bits (vpermps reads only its low 4 bits), or that byte shifted right by 4.
//   Q6_K: the 6-bit quants of a 128-element half are assembled in bytes (low nibbles from ql, two
//     bits from qh) for 64 elements per register, then widened 16 at a time.
#include "cpu_backend/gemv_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)

#include <immintrin.h>

#include <cstddef>
#include <cstring>

#include "cpu_backend/gemv.h"
#include "offload/core/quant_blocks.h"

// GCC 12's intrinsics pass _mm512_undefined_* as the unused merge source of unmasked conversions
// (vcvtph2ps, vcvtdq2ps); -Wmaybe-uninitialized then warns inside avx512fintrin.h. False positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define STRATA_ALWAYS_INLINE inline __attribute__((always_inline))

namespace strata::gemv_detail {
namespace {

STRATA_ALWAYS_INLINE float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// The running sums of one weight row against M rows of x. At batch 1 four independent sums hide
// the FMA latency; larger batches have M independent chains already.
template <int M>
struct Accumulators {
  static constexpr int kPerRow = M == 1 ? 4 : (M == 2 ? 2 : 1);
  __m512 acc[M][kPerRow];
  const float* x[M];

  STRATA_ALWAYS_INLINE explicit Accumulators(const GemvArgs& a) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      x[m] = a.x + m * a.x_stride;
#pragma GCC unroll 4
      for (int s = 0; s < kPerRow; ++s) acc[m][s] = _mm512_setzero_ps();
    }
  }

  // acc[m][S] += w * x[m][k .. k+15] for every m.
  template <int S>
  STRATA_ALWAYS_INLINE void fma(__m512 w, int64_t k) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      acc[m][S % kPerRow] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x[m] + k), acc[m][S % kPerRow]);
    }
  }

  // The same for the first popcount(mask) lanes; w must be zero in the others.
  template <int S>
  STRATA_ALWAYS_INLINE void fma_masked(__m512 w, int64_t k, __mmask16 mask) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      acc[m][S % kPerRow] =
          _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mask, x[m] + k), acc[m][S % kPerRow]);
    }
  }

  STRATA_ALWAYS_INLINE void store(float* y, int64_t y_stride, int64_t n) const {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      __m512 sum = acc[m][0];
#pragma GCC unroll 4
      for (int s = 1; s < kPerRow; ++s) sum = _mm512_add_ps(sum, acc[m][s]);
      y[m * y_stride + n] = _mm512_reduce_add_ps(sum);
    }
  }
};

STRATA_ALWAYS_INLINE __mmask16 tail_mask(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

struct F32Row {
  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const float* w = reinterpret_cast<const float*>(row);
    int64_t k = 0;
    for (; k + 64 <= cols; k += 64) {
      acc.template fma<0>(_mm512_loadu_ps(w + k), k);
      acc.template fma<1>(_mm512_loadu_ps(w + k + 16), k + 16);
      acc.template fma<2>(_mm512_loadu_ps(w + k + 32), k + 32);
      acc.template fma<3>(_mm512_loadu_ps(w + k + 48), k + 48);
    }
    for (; k + 16 <= cols; k += 16) acc.template fma<0>(_mm512_loadu_ps(w + k), k);
    if (k < cols) {
      const __mmask16 mask = tail_mask(cols - k);
      acc.template fma_masked<1>(_mm512_maskz_loadu_ps(mask, w + k), k, mask);
    }
  }
};

STRATA_ALWAYS_INLINE __m512 f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
STRATA_ALWAYS_INLINE __m512 bf16x16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

template <bool kBf16>
struct HalfRow {
  STRATA_ALWAYS_INLINE static __m512 load(const uint16_t* p) { return kBf16 ? bf16x16(p) : f16x16(p); }
  STRATA_ALWAYS_INLINE static __m512 load_masked(const uint16_t* p, __mmask16 mask) {
    const __m256i h = _mm256_maskz_loadu_epi16(mask, p);
    if constexpr (kBf16) {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
      return _mm512_cvtph_ps(h);
    }
  }

  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const uint16_t* w = reinterpret_cast<const uint16_t*>(row);
    int64_t k = 0;
    for (; k + 64 <= cols; k += 64) {
      acc.template fma<0>(load(w + k), k);
      acc.template fma<1>(load(w + k + 16), k + 16);
      acc.template fma<2>(load(w + k + 32), k + 32);
      acc.template fma<3>(load(w + k + 48), k + 48);
    }
    for (; k + 16 <= cols; k += 16) acc.template fma<0>(load(w + k), k);
    if (k < cols) {
      const __mmask16 mask = tail_mask(cols - k);
      acc.template fma_masked<1>(load_masked(w + k, mask), k, mask);
    }
  }
};

struct Q8_0Row {
  // Block b: weights d * q for its 32 int8 quants, into slots S and S+1.
  template <int S, class Acc>
  STRATA_ALWAYS_INLINE static void block(const uint8_t* row, int64_t b, Acc& acc) {
    const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ8_0));
    const __m512 d = _mm512_set1_ps(load_half(blk));
    const __m128i* qs = reinterpret_cast<const __m128i*>(blk + 2);
    const __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs)));
    const __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs + 1)));
    const int64_t k = b * kQK8_0;
    acc.template fma<S>(_mm512_mul_ps(q0, d), k);
    acc.template fma<S + 1>(_mm512_mul_ps(q1, d), k + 16);
  }

  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const int64_t blocks = cols / kQK8_0;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      block<0>(row, b, acc);
      block<2>(row, b + 1, acc);
    }
    if (b < blocks) block<0>(row, b, acc);
  }
};

struct Q4_0Row {
  template <int S, class Acc>
  STRATA_ALWAYS_INLINE static void block(const uint8_t* row, int64_t b, const __m512 q_minus_8,
                                         Acc& acc) {
    const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ4_0));
    // table[q] = (q - 8) * d, the value dequantize_row gives a nibble q.
    const __m512 table = _mm512_mul_ps(q_minus_8, _mm512_set1_ps(load_half(blk)));
    const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    const int64_t k = b * kQK4_0;
    acc.template fma<S>(_mm512_permutexvar_ps(bytes, table), k);                       // low nibbles
    acc.template fma<S + 1>(_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table), k + 16);
  }

  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const __m512 q_minus_8 = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    const int64_t blocks = cols / kQK4_0;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      block<0>(row, b, q_minus_8, acc);
      block<2>(row, b + 1, q_minus_8, acc);
    }
    if (b < blocks) block<0>(row, b, q_minus_8, acc);
  }
};

struct Q4_KRow {
  // 64 elements: sub-blocks 2c (low nibbles of 32 bytes) and 2c+1 (high nibbles).
  template <int C, class Acc>
  STRATA_ALWAYS_INLINE static void chunk(const uint8_t* qs, const float* d1, const float* m1,
                                         const __m512 iota, int64_t k, Acc& acc) {
    // table[q] = d1 * q - m1, rounded twice as dequantize_row rounds it.
    const __m512 lo_table = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(d1[2 * C]), iota),
                                          _mm512_set1_ps(m1[2 * C]));
    const __m512 hi_table = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(d1[2 * C + 1]), iota),
                                          _mm512_set1_ps(m1[2 * C + 1]));
    const __m128i* q = reinterpret_cast<const __m128i*>(qs + 32 * C);
    const __m512i b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(q));
    const __m512i b1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(q + 1));
    const int64_t k0 = k + 64 * C;
    acc.template fma<0>(_mm512_permutexvar_ps(b0, lo_table), k0);
    acc.template fma<1>(_mm512_permutexvar_ps(b1, lo_table), k0 + 16);
    acc.template fma<2>(_mm512_permutexvar_ps(_mm512_srli_epi32(b0, 4), hi_table), k0 + 32);
    acc.template fma<3>(_mm512_permutexvar_ps(_mm512_srli_epi32(b1, 4), hi_table), k0 + 48);
  }

  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const int64_t blocks = cols / kQK_K;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ4_K));
      const float d = load_half(blk + offsetof(BlockQ4_K, d));
      const float dmin = load_half(blk + offsetof(BlockQ4_K, dmin));
      const uint8_t* scales = blk + offsetof(BlockQ4_K, scales);
      alignas(32) float d1[8], m1[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        q4k_scale_min(j, scales, &sc, &m);
        d1[j] = d * static_cast<float>(sc);
        m1[j] = dmin * static_cast<float>(m);
      }
      const uint8_t* qs = blk + offsetof(BlockQ4_K, qs);
      const int64_t k = b * kQK_K;
      chunk<0>(qs, d1, m1, iota, k, acc);
      chunk<1>(qs, d1, m1, iota, k, acc);
      chunk<2>(qs, d1, m1, iota, k, acc);
      chunk<3>(qs, d1, m1, iota, k, acc);
    }
  }
};

struct Q6_KRow {
  // 16 weights: scale * q for the int8 quants in 128-bit lane G of `q`.
  template <int G>
  STRATA_ALWAYS_INLINE static __m512 widen(__m512i q, float scale) {
    const __m512 qf = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(q, G)));
    return _mm512_mul_ps(_mm512_set1_ps(scale), qf);
  }

  // One half of a block: 128 elements from 64 bytes of ql, 32 of qh and 8 scales.
  template <class Acc>
  STRATA_ALWAYS_INLINE static void half(const uint8_t* ql, const uint8_t* qh, const float* scale,
                                        int64_t k, Acc& acc) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i bits45 = _mm512_set1_epi8(0x30);
    const __m512i bias = _mm512_set1_epi8(32);
    const __m512i l = _mm512_loadu_si512(ql);
    const __m256i h256 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
    const __m512i h = _mm512_inserti64x4(_mm512_castsi256_si512(h256), h256, 1);
    // Bytes 0..31 take qh bits 0-1 (elements 0..31), bytes 32..63 bits 2-3 (elements 32..63),
    // moved to bits 4-5; 16-bit shifts spill across bytes only into bits the mask drops.
    const __m512i h_a = _mm512_and_si512(
        _mm512_mask_blend_epi64(0xF0, _mm512_slli_epi16(h, 4), _mm512_slli_epi16(h, 2)), bits45);
    // Bits 4-5 (elements 64..95) and 6-7 (elements 96..127).
    const __m512i h_b =
        _mm512_and_si512(_mm512_mask_blend_epi64(0xF0, h, _mm512_srli_epi16(h, 2)), bits45);
    const __m512i q_a = _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(l, low4), h_a), bias);
    const __m512i q_b = _mm512_sub_epi8(
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4), h_b), bias);
    acc.template fma<0>(widen<0>(q_a, scale[0]), k);
    acc.template fma<1>(widen<1>(q_a, scale[1]), k + 16);
    acc.template fma<2>(widen<2>(q_a, scale[2]), k + 32);
    acc.template fma<3>(widen<3>(q_a, scale[3]), k + 48);
    acc.template fma<0>(widen<0>(q_b, scale[4]), k + 64);
    acc.template fma<1>(widen<1>(q_b, scale[5]), k + 80);
    acc.template fma<2>(widen<2>(q_b, scale[6]), k + 96);
    acc.template fma<3>(widen<3>(q_b, scale[7]), k + 112);
  }

  template <class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* row, int64_t cols, Acc& acc) {
    const int64_t blocks = cols / kQK_K;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * static_cast<int64_t>(sizeof(BlockQ6_K));
      // scale[j] = d * scales[j], as dequantize_row rounds it before multiplying by q.
      const __m512 d = _mm512_set1_ps(load_half(blk + offsetof(BlockQ6_K, d)));
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + offsetof(BlockQ6_K, scales)));
      alignas(64) float scale[16];
      _mm512_store_ps(scale, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8))));
      const uint8_t* ql = blk + offsetof(BlockQ6_K, ql);
      const uint8_t* qh = blk + offsetof(BlockQ6_K, qh);
      const int64_t k = b * kQK_K;
      half(ql, qh, scale, k, acc);
      half(ql + 64, qh + 32, scale + 8, k + 128, acc);
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
    case 1: return rows_for_batch<Row, 1>(a, row_begin, row_end);
    case 2: return rows_for_batch<Row, 2>(a, row_begin, row_end);
    case 3: return rows_for_batch<Row, 3>(a, row_begin, row_end);
    case 4: return rows_for_batch<Row, 4>(a, row_begin, row_end);
    case 5: return rows_for_batch<Row, 5>(a, row_begin, row_end);
    case 6: return rows_for_batch<Row, 6>(a, row_begin, row_end);
    case 7: return rows_for_batch<Row, 7>(a, row_begin, row_end);
    default: return rows_for_batch<Row, 8>(a, row_begin, row_end);
  }
}

}  // namespace

RowKernel avx512_row_kernel(DType type) {
  switch (type) {
    case DType::kF32: return &row_kernel<F32Row>;
    case DType::kF16: return &row_kernel<HalfRow<false>>;
    case DType::kBF16: return &row_kernel<HalfRow<true>>;
    case DType::kQ8_0: return &row_kernel<Q8_0Row>;
    case DType::kQ4_0: return &row_kernel<Q4_0Row>;
    case DType::kQ4_K: return &row_kernel<Q4_KRow>;
    case DType::kQ6_K: return &row_kernel<Q6_KRow>;
    default: return nullptr;
  }
}

}  // namespace strata::gemv_detail

#else  // no AVX-512 in this build

namespace strata::gemv_detail {
RowKernel avx512_row_kernel(DType) { return nullptr; }
}  // namespace strata::gemv_detail

#endif
