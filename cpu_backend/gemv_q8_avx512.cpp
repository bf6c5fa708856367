// AVX-512 VNNI integer GEMV kernels (gemv_q8.h). Every 64 weights of a row become one register of
// 64 unsigned bytes, in the element order of x, plus a per-lane weight scale (an int32 lane of a
// VNNI dot covers 4 elements, all in one block); then for each x row one vpdpbusd against its 64
// int8 q, one conversion, and one FMA by weight scale x activation scale:
//   Q4_0: nibbles n (0..15) of two blocks, offset 8:   sum (n - 8) q = sum n q - 8 sum q
//   Q8_0: w + 128 (0..255) of two blocks, offset 128:  sum w q = sum (w + 128) q - 128 sum q
//   Q4_K: nibbles of two sub-blocks of 32, no offset; the mins are sum_j dmin m_j d_j sum_j q,
//         one 8-wide FMA per super-block against the quantizer's d * sum per block
//   Q6_K: the 6-bit q (0..63) of four sub-blocks of 16, offset 32
// The offset's part of each lane, -offset * (sum of that lane's 4 q), comes from the quantizer's
// lane sums and starts the dot's accumulator, so each lane's integer is exact before it is
// scaled. Against the float kernels (gemv_avx512.cpp) this removes the per-weight conversion,
// table lookup and FMA: ~8 vector instructions per 64 weights and row.
#include "cpu_backend/gemv_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)

#include <immintrin.h>

#include <cstddef>
#include <cstring>

#include "cpu_backend/avx512_blocks.h"
#include "cpu_backend/gemv.h"
#include "offload/core/quant_blocks.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // as in gemv_avx512.cpp

namespace strata::gemv_detail {
namespace {

// The sums of R weight rows against M activation rows.
template <int R, int M>
struct Sums {
  static constexpr int kM = M;
  __m512 acc[R][M];
  __m256 mins[R][M];  // Q4_K's min terms, subtracted at the end
  // Activation row m's arrays, looked up once: through the ActivationsQ8 accessors the loop
  // recomputed them (a multiply and member loads) for every 64 weights.
  const int8_t* q[M];
  const float* lane_d[M];
  const int32_t* lane_sums[M];
  const float* d_sums[M];

  STRATA_ALWAYS_INLINE explicit Sums(const GemvQ8Args& a) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      q[m] = a.x->q(a.first_row + m);
      lane_d[m] = a.x->lane_d(a.first_row + m);
      lane_sums[m] = a.x->lane_sums(a.first_row + m);
      d_sums[m] = a.x->d_sums(a.first_row + m);
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        acc[r][m] = _mm512_setzero_ps();
        mins[r][m] = _mm256_setzero_ps();
      }
    }
  }

  // acc[r][m] += scale[r] * d_x * (sum of w[r] * q_m - kOffset * sum of q_m), lane by lane, for
  // elements k .. k + 63 (kHalf: k .. k + 31; the other lanes add 0). kShift = log2(kOffset).
  template <int kShift, bool kHalf = false>
  STRATA_ALWAYS_INLINE void add(const __m512i (&w)[R], const __m512 (&scale)[R], int64_t k) {
    constexpr __mmask16 kLanes = kHalf ? 0x00FF : 0xFFFF;
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      const __m512i qm =
          kHalf ? _mm512_maskz_loadu_epi8(0xFFFFFFFFull, q[m] + k) : _mm512_load_si512(q[m] + k);
      const __m512 d = _mm512_maskz_loadu_ps(kLanes, lane_d[m] + k / 4);
      __m512i start = _mm512_setzero_si512();
      if constexpr (kShift >= 0) {
        const __m512i sums = _mm512_maskz_loadu_epi32(kLanes, lane_sums[m] + k / 4);
        start = _mm512_sub_epi32(start, _mm512_slli_epi32(sums, kShift));
      }
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_dpbusd_epi32(start, w[r], qm);
        acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale[r], d), acc[r][m]);
      }
    }
  }

  // y[m][n + r] = the sum for weight row r and activation row m.
  STRATA_ALWAYS_INLINE void store(float* y, int64_t y_stride, int64_t n) const {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        const __m128 lo = _mm256_castps256_ps128(mins[r][m]);
        const __m128 hi = _mm256_extractf128_ps(mins[r][m], 1);
        __m128 s = _mm_add_ps(lo, hi);
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[m * y_stride + n + r] = _mm512_reduce_add_ps(acc[r][m]) - _mm_cvtss_f32(s);
      }
    }
  }
};

constexpr int kNoOffset = -1;

// Two blocks' scales, lanes 0-7 and 8-15.
STRATA_ALWAYS_INLINE __m512 pair_scale(const float* f16_table, const uint8_t* d0,
                                       const uint8_t* d1) {
  return _mm512_mask_blend_ps(0xFF00, broadcast_half(f16_table, d0), broadcast_half(f16_table, d1));
}

struct Q4_0Row {
  static constexpr int64_t kBytes = sizeof(BlockQ4_0);

  // Blocks b, b + 1 (kHalf: b alone) of row `row`: lanes 0-3 of 128 bits hold block b's low
  // nibbles, its high nibbles, then block b + 1's.
  template <bool kHalf>
  STRATA_ALWAYS_INLINE static void pair(const uint8_t* row, int64_t b, const float* f16_table,
                                        __m512i* w, __m512* scale) {
    const uint8_t* blk = row + b * kBytes;
    const auto qs = [](const uint8_t* p) {
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + offsetof(BlockQ4_0, qs)));
    };
    __m512i v = _mm512_broadcast_i32x4(qs(blk));
    if constexpr (!kHalf) v = _mm512_mask_broadcast_i32x4(v, 0xFF00, qs(blk + kBytes));
    v = _mm512_mask_srli_epi16(v, 0xFF00FF00u, v, 4);  // 128-bit lanes 1 and 3: high nibbles
    *w = _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
    const uint8_t* d0 = blk + offsetof(BlockQ4_0, d);
    *scale = pair_scale(f16_table, d0, kHalf ? d0 : d0 + kBytes);
  }

  template <int R, class S>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, S& sums) {
    const float* f16_table = f16_to_f32_table();
    const int64_t blocks = cols / kQK4_0;
    int64_t b = 0;
    for (; b + 4 <= blocks; b += 4) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r)
        prefetch_ahead<R>(rows[r], b * kBytes, 4 * kBytes, blocks * kBytes);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m512i w[R];
        __m512 scale[R];
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) pair<false>(rows[r], b + 2 * h, f16_table, &w[r], &scale[r]);
        sums.template add<3>(w, scale, (b + 2 * h) * kQK4_0);
      }
    }
    for (; b + 2 <= blocks; b += 2) {
      __m512i w[R];
      __m512 scale[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) pair<false>(rows[r], b, f16_table, &w[r], &scale[r]);
      sums.template add<3>(w, scale, b * kQK4_0);
    }
    if (b < blocks) {
      __m512i w[R];
      __m512 scale[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) pair<true>(rows[r], b, f16_table, &w[r], &scale[r]);
      sums.template add<3, true>(w, scale, b * kQK4_0);
    }
  }
};

struct Q8_0Row {
  static constexpr int64_t kBytes = sizeof(BlockQ8_0);

  template <bool kHalf>
  STRATA_ALWAYS_INLINE static void pair(const uint8_t* row, int64_t b, const float* f16_table,
                                        __m512i* w, __m512* scale) {
    const uint8_t* blk = row + b * kBytes;
    const auto qs = [](const uint8_t* p) {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + offsetof(BlockQ8_0, qs)));
    };
    __m512i v = _mm512_castsi256_si512(qs(blk));
    if constexpr (!kHalf) v = _mm512_inserti64x4(v, qs(blk + kBytes), 1);
    *w = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));  // w + 128, unsigned
    const uint8_t* d0 = blk + offsetof(BlockQ8_0, d);
    *scale = pair_scale(f16_table, d0, kHalf ? d0 : d0 + kBytes);
  }

  template <int R, class S>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, S& sums) {
    const float* f16_table = f16_to_f32_table();
    const int64_t blocks = cols / kQK8_0;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r)
        prefetch_ahead<R>(rows[r], b * kBytes, 2 * kBytes, blocks * kBytes);
      __m512i w[R];
      __m512 scale[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) pair<false>(rows[r], b, f16_table, &w[r], &scale[r]);
      sums.template add<7>(w, scale, b * kQK8_0);
    }
    if (b < blocks) {
      __m512i w[R];
      __m512 scale[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) pair<true>(rows[r], b, f16_table, &w[r], &scale[r]);
      sums.template add<7, true>(w, scale, b * kQK8_0);
    }
  }
};

struct Q4_KRow {
  static constexpr int64_t kBytes = sizeof(BlockQ4_K);

  template <int R, class S>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, S& sums) {
    const float* f16_table = f16_to_f32_table();
    const int64_t blocks = cols / kQK_K;
    for (int64_t b = 0; b < blocks; ++b) {
      alignas(64) float dm[R][16];  // d sc[0..7], dmin m[0..7]
      const uint8_t* qs[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = rows[r] + b * kBytes;
        prefetch_ahead<R>(rows[r], b * kBytes, kBytes, blocks * kBytes);
        q4k_scales(blk, f16_table, dm[r]);
        qs[r] = blk + offsetof(BlockQ4_K, qs);
      }
      force_reload(dm);
#pragma GCC unroll 8
      for (int m = 0; m < S::kM; ++m) {
        const __m256 d_sums = _mm256_loadu_ps(sums.d_sums[m] + 8 * b);
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) {
          sums.mins[r][m] = _mm256_fmadd_ps(_mm256_load_ps(dm[r] + 8), d_sums, sums.mins[r][m]);
        }
      }
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {  // 64 elements: sub-blocks 2c (low nibbles), 2c + 1 (high)
        __m512i w[R];
        __m512 scale[R];
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) {
          __m512i v = _mm512_broadcast_i64x4(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs[r] + 32 * c)));
          v = _mm512_mask_srli_epi16(v, 0xFFFF0000u, v, 4);
          w[r] = _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
          scale[r] = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dm[r][2 * c]),
                                          _mm512_set1_ps(dm[r][2 * c + 1]));
        }
        sums.template add<kNoOffset>(w, scale, b * kQK_K + 64 * c);
      }
    }
  }
};

struct Q6_KRow {
  static constexpr int64_t kBytes = sizeof(BlockQ6_K);

  template <int R, class S>
  STRATA_ALWAYS_INLINE static void run(const uint8_t* const (&rows)[R], int64_t cols, S& sums) {
    const float* f16_table = f16_to_f32_table();
    const int64_t blocks = cols / kQK_K;
    // Lane l of the 64 elements of group g lies in sub-block 4 g + l / 4.
    const __m512i sub = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (int64_t b = 0; b < blocks; ++b) {
      __m512i q[R][4];
      __m512 sc[R];  // d * scales[j], j < 16
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = rows[r] + b * kBytes;
        prefetch_ahead<R>(rows[r], b * kBytes, kBytes, blocks * kBytes);
        const uint8_t* ql = blk + offsetof(BlockQ6_K, ql);
        const uint8_t* qh = blk + offsetof(BlockQ6_K, qh);
        q6k_unpack(ql, qh, &q[r][0], &q[r][1]);
        q6k_unpack(ql + 64, qh + 32, &q[r][2], &q[r][3]);
        const __m128i s8 =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + offsetof(BlockQ6_K, scales)));
        sc[r] = _mm512_mul_ps(broadcast_half(f16_table, blk + offsetof(BlockQ6_K, d)),
                              _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(s8)));
      }
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        __m512 scale[R];
        const __m512i idx = _mm512_add_epi32(sub, _mm512_set1_epi32(4 * g));
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) scale[r] = _mm512_permutexvar_ps(idx, sc[r]);
        __m512i w[R];
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) w[r] = q[r][g];
        sums.template add<5>(w, scale, b * kQK_K + 64 * g);
      }
    }
  }
};

}  // namespace

Q8RowKernel avx512_q8_row_kernel(DType type) {
  switch (type) {
    case DType::kQ8_0:
      return &row_kernel<Sums, Q8_0Row>;
    case DType::kQ4_0:
      return &row_kernel<Sums, Q4_0Row>;
    case DType::kQ4_K:
      return &row_kernel<Sums, Q4_KRow>;
    case DType::kQ6_K:
      return &row_kernel<Sums, Q6_KRow>;
    default:
      return nullptr;
  }
}

}  // namespace strata::gemv_detail

#else  // no AVX-512 VNNI in this build

namespace strata::gemv_detail {
Q8RowKernel avx512_q8_row_kernel(DType) { return nullptr; }
}  // namespace strata::gemv_detail

#endif
