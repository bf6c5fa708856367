// AVX-512 GEMV row kernels. Each weight type has a `Row` decoder that walks one stored row,
// turns every 16 weights into a __m512 of floats as dequantize_row would, and hands each vector to
// Accumulators::fma, which multiplies it into every x row of the batch. The weights are therefore
// loaded and decoded once per batch, never written anywhere. Decoded weights are bit-identical to
// dequantize_row's except Q4_K's, where d1 * q - m1 is one fused rounding instead of two.
//
// What limits these kernels is the two vector ports (0 and 5) of the core, not the loads: every
// trick below removes a port-5 shuffle or a vector op per 16 weights (bench/NOTES.md):
//   Q4_0, Q4_K: a 4-bit quant has 16 possible values, so each (sub-)block builds a 16-entry float
//     table (d * (q - 8), or d1 * q - m1) and vpermps looks the weights up: the index is the byte
//     zero-extended to 32 bits (vpermps reads only its low 4 bits), or that byte shifted right
//     by 4.
//   Scales: f16 block scales come from a 65536-entry table as broadcast loads (no shuffle); per
//     sub-block scales are stored once per super-block and broadcast from memory.
//   Q6_K: the 6-bit quants of a 128-element half are assembled in bytes (low nibbles from ql, two
//     bits from qh, one vpternlogd) for 64 elements per register, then widened 16 at a time; the
//     -32 offset folds into the scale multiply as an exact fmsub.
#include "cpu_backend/gemv_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)

#include <immintrin.h>

#include <cstddef>
#include <cstring>

#include "cpu_backend/avx512_blocks.h"
#include "cpu_backend/gemv.h"
#include "offload/core/quant_blocks.h"

// GCC 12's intrinsics pass _mm512_undefined_* as the unused merge source of unmasked conversions
// (vcvtph2ps, vcvtdq2ps); -Wmaybe-uninitialized then warns inside avx512fintrin.h. False positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace strata::gemv_detail {
namespace {

// The running sums of R weight rows against M rows of x. Each x vector is loaded once and used
// for all R weight rows: at batch 1 that halves the x traffic from L2 when x outgrows L1 (K =
// 14336 is 56 KiB). Each (row, x row) pair gets several independent sums so that no chain takes
// more than one FMA per block of weights (an FMA has 4 cycles of latency).
template <int R, int M>
struct Accumulators {
  static constexpr int kPerRow = R * M <= 2 ? 4 : 2;
  __m512 acc[R][M][kPerRow];
  const float* x[M];

  STRATA_ALWAYS_INLINE explicit Accumulators(const GemvArgs& a) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      x[m] = a.x + m * a.x_stride;
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int s = 0; s < kPerRow; ++s) acc[r][m][s] = _mm512_setzero_ps();
      }
    }
  }

  // acc[r][m][S] += w[r] * x[m][k .. k+15] for every r and m.
  template <int S>
  STRATA_ALWAYS_INLINE void fma(const __m512 (&w)[R], int64_t k) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_loadu_ps(x[m] + k);
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        acc[r][m][S % kPerRow] = _mm512_fmadd_ps(w[r], xv, acc[r][m][S % kPerRow]);
      }
    }
  }

  // The same for the first popcount(mask) lanes; w must be zero in the others.
  template <int S>
  STRATA_ALWAYS_INLINE void fma_masked(const __m512 (&w)[R], int64_t k, __mmask16 mask) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x[m] + k);
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        acc[r][m][S % kPerRow] = _mm512_fmadd_ps(w[r], xv, acc[r][m][S % kPerRow]);
      }
    }
  }

  // y[m][n + r] = the sum for weight row r and x row m.
  STRATA_ALWAYS_INLINE void store(float* y, int64_t y_stride, int64_t n) const {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        __m512 sum = acc[r][m][0];
#pragma GCC unroll 4
        for (int s = 1; s < kPerRow; ++s) sum = _mm512_add_ps(sum, acc[r][m][s]);
        y[m * y_stride + n + r] = _mm512_reduce_add_ps(sum);
      }
    }
  }
};

STRATA_ALWAYS_INLINE __mmask16 tail_mask(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

// Each decoder's run(rows, cols, acc) walks R rows (rows[r] is the first byte of row r) in step.

struct F32Row {
  template <int R, class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, Acc& acc) {
    const auto at = [&](int r, int64_t k) { return reinterpret_cast<const float*>(rows[r]) + k; };
    int64_t k = 0;
    for (; k + 64 <= cols; k += 64) {
      __m512 w[4][R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        prefetch_ahead<R>(rows[r], 4 * k, 256, 4 * cols);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) w[v][r] = _mm512_loadu_ps(at(r, k + 16 * v));
      }
      acc.template fma<0>(w[0], k);
      acc.template fma<1>(w[1], k + 16);
      acc.template fma<2>(w[2], k + 32);
      acc.template fma<3>(w[3], k + 48);
    }
    for (; k + 16 <= cols; k += 16) {
      __m512 w[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) w[r] = _mm512_loadu_ps(at(r, k));
      acc.template fma<0>(w, k);
    }
    if (k < cols) {
      const __mmask16 mask = tail_mask(cols - k);
      __m512 w[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) w[r] = _mm512_maskz_loadu_ps(mask, at(r, k));
      acc.template fma_masked<1>(w, k, mask);
    }
  }
};

template <bool kBf16>
struct HalfRow {
  STRATA_ALWAYS_INLINE static __m512 widen(__m256i h) {
    if constexpr (kBf16) {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
      return _mm512_cvtph_ps(h);
    }
  }
  STRATA_ALWAYS_INLINE static __m512 load(const uint8_t* row, int64_t k) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k)));
  }

  template <int R, class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, Acc& acc) {
    int64_t k = 0;
    for (; k + 64 <= cols; k += 64) {
      __m512 w[4][R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        prefetch_ahead<R>(rows[r], 2 * k, 128, 2 * cols);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) w[v][r] = load(rows[r], k + 16 * v);
      }
      acc.template fma<0>(w[0], k);
      acc.template fma<1>(w[1], k + 16);
      acc.template fma<2>(w[2], k + 32);
      acc.template fma<3>(w[3], k + 48);
    }
    for (; k + 16 <= cols; k += 16) {
      __m512 w[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) w[r] = load(rows[r], k);
      acc.template fma<0>(w, k);
    }
    if (k < cols) {
      const __mmask16 mask = tail_mask(cols - k);
      __m512 w[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) w[r] = widen(_mm256_maskz_loadu_epi16(mask, rows[r] + 2 * k));
      acc.template fma_masked<1>(w, k, mask);
    }
  }
};

struct Q8_0Row {
  // Block b of every row: weights q * d for its 32 int8 quants, into slots S and S+1.
  template <int S, int R, class Acc>
  STRATA_ALWAYS_INLINE static void block(const uint8_t* const (&rows)[R], int64_t b,
                                         const float* f16_table, Acc& acc) {
    __m512 w0[R], w1[R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = rows[r] + b * static_cast<int64_t>(sizeof(BlockQ8_0));
      const __m512 d = broadcast_half(f16_table, blk + offsetof(BlockQ8_0, d));
      const __m128i* qs = reinterpret_cast<const __m128i*>(blk + offsetof(BlockQ8_0, qs));
      w0[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs))), d);
      w1[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs + 1))), d);
    }
    const int64_t k = b * kQK8_0;
    acc.template fma<S>(w0, k);
    acc.template fma<S + 1>(w1, k + 16);
  }

  template <int R, class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, Acc& acc) {
    constexpr int64_t kBlockBytes = sizeof(BlockQ8_0);
    const float* f16_table = f16_to_f32_table();
    const int64_t blocks = cols / kQK8_0;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        prefetch_ahead<R>(rows[r], b * kBlockBytes, 2 * kBlockBytes, blocks * kBlockBytes);
      }
      block<0>(rows, b, f16_table, acc);
      block<2>(rows, b + 1, f16_table, acc);
    }
    if (b < blocks) block<0>(rows, b, f16_table, acc);
  }
};

struct Q4_0Row {
  template <int S, int R, class Acc>
  STRATA_ALWAYS_INLINE static void block(const uint8_t* const (&rows)[R], int64_t b,
                                         const __m512 q_minus_8, const float* f16_table, Acc& acc) {
    __m512 lo[R], hi[R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = rows[r] + b * static_cast<int64_t>(sizeof(BlockQ4_0));
      // table[q] = (q - 8) * d, the value dequantize_row gives a nibble q.
      const __m512 table =
          _mm512_mul_ps(q_minus_8, broadcast_half(f16_table, blk + offsetof(BlockQ4_0, d)));
      const __m512i bytes = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + offsetof(BlockQ4_0, qs))));
      lo[r] = _mm512_permutexvar_ps(bytes, table);                        // low nibbles
      hi[r] = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table);  // high nibbles
    }
    const int64_t k = b * kQK4_0;
    acc.template fma<S>(lo, k);
    acc.template fma<S + 1>(hi, k + 16);
  }

  template <int R, class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, Acc& acc) {
    const float* f16_table = f16_to_f32_table();
    constexpr int64_t kBlockBytes = sizeof(BlockQ4_0);
    const __m512 q_minus_8 = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    const int64_t blocks = cols / kQK4_0;
    int64_t b = 0;
    for (; b + 4 <= blocks; b += 4) {  // 72 bytes per row: two prefetches per four blocks
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        prefetch_ahead<R>(rows[r], b * kBlockBytes, 4 * kBlockBytes, blocks * kBlockBytes);
      }
      block<0>(rows, b, q_minus_8, f16_table, acc);
      block<2>(rows, b + 1, q_minus_8, f16_table, acc);
      block<0>(rows, b + 2, q_minus_8, f16_table, acc);
      block<2>(rows, b + 3, q_minus_8, f16_table, acc);
    }
    for (; b < blocks; ++b) block<0>(rows, b, q_minus_8, f16_table, acc);
  }
};

struct Q4_KRow {
  // 64 elements of every row: sub-blocks 2c (low nibbles of 32 bytes) and 2c+1 (high nibbles).
  template <int C, int R, class Acc>
  STRATA_ALWAYS_INLINE static void chunk(const uint8_t* const (&qs)[R], const float (&dm)[R][16],
                                         const __m512 iota, int64_t k, Acc& acc) {
    __m512 w[4][R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      // table[q] = d1 * q - m1, fused: rounded once where dequantize_row rounds twice (the one
      // place where these kernels differ from it, by at most one rounding of d1 * q).
      const __m512 lo_table =
          _mm512_fmsub_ps(_mm512_set1_ps(dm[r][2 * C]), iota, _mm512_set1_ps(dm[r][8 + 2 * C]));
      const __m512 hi_table = _mm512_fmsub_ps(_mm512_set1_ps(dm[r][2 * C + 1]), iota,
                                              _mm512_set1_ps(dm[r][8 + 2 * C + 1]));
      const __m128i* q = reinterpret_cast<const __m128i*>(qs[r] + 32 * C);
      const __m512i b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(q));
      const __m512i b1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(q + 1));
      w[0][r] = _mm512_permutexvar_ps(b0, lo_table);
      w[1][r] = _mm512_permutexvar_ps(b1, lo_table);
      w[2][r] = _mm512_permutexvar_ps(_mm512_srli_epi32(b0, 4), hi_table);
      w[3][r] = _mm512_permutexvar_ps(_mm512_srli_epi32(b1, 4), hi_table);
    }
    const int64_t k0 = k + 64 * C;
    acc.template fma<0>(w[0], k0);
    acc.template fma<1>(w[1], k0 + 16);
    acc.template fma<2>(w[2], k0 + 32);
    acc.template fma<3>(w[3], k0 + 48);
  }

  template <int R, class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, Acc& acc) {
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    constexpr int64_t kBlockBytes = sizeof(BlockQ4_K);
    const float* f16_table = f16_to_f32_table();
    const int64_t blocks = cols / kQK_K;
    for (int64_t b = 0; b < blocks; ++b) {
      alignas(64) float dm[R][16];
      const uint8_t* qs[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = rows[r] + b * kBlockBytes;
        prefetch_ahead<R>(rows[r], b * kBlockBytes, kBlockBytes, blocks * kBlockBytes);
        q4k_scales(blk, f16_table, dm[r]);
        qs[r] = blk + offsetof(BlockQ4_K, qs);
      }
      force_reload(dm);
      const int64_t k = b * kQK_K;
      chunk<0>(qs, dm, iota, k, acc);
      chunk<1>(qs, dm, iota, k, acc);
      chunk<2>(qs, dm, iota, k, acc);
      chunk<3>(qs, dm, iota, k, acc);
    }
  }
};

struct Q6_KRow {
  // 16 weights: scale * (q - 32) for 16 unsigned 6-bit quants in memory, as
  // fmsub(scale, q, 32 * scale): 32 * scale is exact, so the fused result is the single rounding
  // of scale * (q - 32), bit-identical to dequantize_row's product of scale and the integer q - 32.
  STRATA_ALWAYS_INLINE static __m512 widen(const uint8_t* q, float scale, float scale32) {
    const __m512 qf = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(q))));
    return _mm512_fmsub_ps(_mm512_set1_ps(scale), qf, _mm512_set1_ps(scale32));
  }

  template <int R, class Acc>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, Acc& acc) {
    constexpr int64_t kBlockBytes = sizeof(BlockQ6_K);
    const float* f16_table = f16_to_f32_table();
    const int64_t blocks = cols / kQK_K;
    for (int64_t b = 0; b < blocks; ++b) {
      alignas(64) float scale[R][16];
      alignas(64) float scale32[R][16];
      // Through the stack: vpmovzxbd from memory costs one shuffle per 16 quants, extracting
      // 128-bit lanes first would cost two.
      alignas(64) uint8_t q[R][2][128];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = rows[r] + b * kBlockBytes;
        prefetch_ahead<R>(rows[r], b * kBlockBytes, kBlockBytes, blocks * kBlockBytes);
        // scale[j] = d * scales[j], as dequantize_row rounds it before multiplying by q - 32.
        const __m512 d = broadcast_half(f16_table, blk + offsetof(BlockQ6_K, d));
        const __m128i sc8 =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + offsetof(BlockQ6_K, scales)));
        const __m512 s = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8)));
        _mm512_store_ps(scale[r], s);
        _mm512_store_ps(scale32[r], _mm512_mul_ps(s, _mm512_set1_ps(32.0f)));
        const uint8_t* ql = blk + offsetof(BlockQ6_K, ql);
        const uint8_t* qh = blk + offsetof(BlockQ6_K, qh);
#pragma GCC unroll 2
        for (int half = 0; half < 2; ++half) {
          __m512i lo, hi;
          q6k_unpack(ql + 64 * half, qh + 32 * half, &lo, &hi);
          _mm512_store_si512(q[r][half], lo);
          _mm512_store_si512(q[r][half] + 64, hi);
        }
      }
      force_reload(scale);
      force_reload(scale32);
      const int64_t k = b * kQK_K;
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g) {
          __m512 w[R];
#pragma GCC unroll 2
          for (int r = 0; r < R; ++r) {
            w[r] = widen(q[r][half] + 16 * g, scale[r][8 * half + g], scale32[r][8 * half + g]);
          }
          const int64_t kg = k + 128 * half + 16 * g;
          switch (g % 4) {  // a compile-time slot once unrolled
            case 0:
              acc.template fma<0>(w, kg);
              break;
            case 1:
              acc.template fma<1>(w, kg);
              break;
            case 2:
              acc.template fma<2>(w, kg);
              break;
            default:
              acc.template fma<3>(w, kg);
              break;
          }
        }
      }
    }
  }
};

}  // namespace

RowKernel avx512_row_kernel(DType type) {
  switch (type) {
    case DType::kF32:
      return &row_kernel<Accumulators, F32Row>;
    case DType::kF16:
      return &row_kernel<Accumulators, HalfRow<false>>;
    case DType::kBF16:
      return &row_kernel<Accumulators, HalfRow<true>>;
    case DType::kQ8_0:
      return &row_kernel<Accumulators, Q8_0Row>;
    case DType::kQ4_0:
      return &row_kernel<Accumulators, Q4_0Row>;
    case DType::kQ4_K:
      return &row_kernel<Accumulators, Q4_KRow>;
    case DType::kQ6_K:
      return &row_kernel<Accumulators, Q6_KRow>;
    default:
      return nullptr;
  }
}

}  // namespace strata::gemv_detail

#else  // no AVX-512 in this build

namespace strata::gemv_detail {
RowKernel avx512_row_kernel(DType) { return nullptr; }
}  // namespace strata::gemv_detail

#endif
