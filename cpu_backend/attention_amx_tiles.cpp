// The AMX half of the AMX prefill attention (attention_amx.h): the unit loop nest of
// attention_amx_unit.h on the tile registers with AVX-512 row work (bf16 queries, the online
// softmax, the final scaling) and the packing of K and V rows into B tiles. Built with the AMX /
// AVX-512 flags like gemm_amx_tiles.cpp, and under the same rule: intrinsics and internal-linkage
// helpers only, no library headers.
#include <immintrin.h>

// GCC 12's AVX-512 headers build some intrinsics on a self-initialised "undefined" vector and
// warn about it at every use; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu_backend/amx_tiles.h"
#include "cpu_backend/attention_amx_unit.h"
#include "cpu_backend/avx512_exp.h"
#include "cpu_backend/gemm_amx_unit.h"

namespace strata::cpu::amx_detail {
namespace {

inline __m512 bf16_to_ps(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

struct AvxRows {
  void load_queries(const float* q, int64_t ldq, int64_t rows, int64_t D, uint16_t* qb) {
    for (int64_t r = 0; r < 32; ++r) {
      for (int64_t d = 0; d < D; d += 32) {
        __m512i h = _mm512_setzero_si512();
        if (r < rows) {
          const float* src = q + r * ldq + d;
          h = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
        }
        _mm512_storeu_si512(qb + r * D + d, h);
      }
    }
  }

  void start(float* m, float* l, float* o, int64_t D) {
    for (int64_t r = 0; r < 32; r += 16) {
      _mm512_storeu_ps(m + r, _mm512_set1_ps(-__builtin_inff()));
      _mm512_storeu_ps(l + r, _mm512_setzero_ps());
    }
    for (int64_t i = 0; i < 32 * D; i += 16) _mm512_storeu_ps(o + i, _mm512_setzero_ps());
  }

  void softmax_chunk(const float* s, int64_t ld, int64_t width, int64_t rows, int64_t visible0,
                     float scale, float* m, float* l, float* o, int64_t D, uint16_t* p) {
    const __m512 sc = _mm512_set1_ps(scale);
    for (int64_t r = 0; r < 32; ++r) {
      const float* sr = s + r * ld;
      uint16_t* pr = p + r * ld;
      int64_t n = r < rows ? visible0 + r : 0;
      n = n < 0 ? 0 : (n > width ? width : n);
      if (n == 0) {
        for (int64_t j = 0; j < width; j += 32) _mm512_storeu_si512(pr + j, _mm512_setzero_si512());
        continue;
      }
      __m512 mv = _mm512_set1_ps(m[r]);
      for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = first_lanes(n - j);
        mv = _mm512_mask_max_ps(mv, k, mv, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, sr + j), sc));
      }
      const float m_new = _mm512_reduce_max_ps(mv);
      // The running sums shrink by e^(m_old - m_new) (0 on the first chunk a row sees).
      const float alpha = m[r] == -__builtin_inff()
                              ? 0.0f
                              : _mm512_cvtss_f32(exp_nonpositive(_mm512_set1_ps(m[r] - m_new)));
      if (alpha != 1.0f) {
        const __m512 av = _mm512_set1_ps(alpha);
        float* orow = o + r * D;
        for (int64_t d = 0; d < D; d += 16)
          _mm512_storeu_ps(orow + d, _mm512_mul_ps(_mm512_loadu_ps(orow + d), av));
      }
      const __m512 mb = _mm512_set1_ps(m_new);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t j = 0; j < width; j += 16) {
        const __mmask16 k = j < n ? first_lanes(n - j) : static_cast<__mmask16>(0);
        const __m512 x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, sr + j), sc, mb);
        const __m512 e = _mm512_maskz_mov_ps(k, exp_nonpositive(x));
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(e);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pr + j), h);
        sum = _mm512_add_ps(sum, bf16_to_ps(h));  // the weights O is summed with
      }
      l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
      m[r] = m_new;
    }
  }

  void finish(const float* o, const float* l, int64_t rows, int64_t D, float* out, int64_t ldo) {
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 inv = _mm512_set1_ps(1.0f / l[r]);
      for (int64_t d = 0; d < D; d += 16)
        _mm512_storeu_ps(out + r * ldo + d, _mm512_mul_ps(_mm512_loadu_ps(o + r * D + d), inv));
    }
  }
};

}  // namespace

void run_attention_unit_amx(const AttentionUnitArgs& a) {
  AmxTiles tiles;
  AvxRows rows;
  run_attention_unit(tiles, rows, a);
}

void pack_keys_values_avx512(const float* k_rows, const float* v_rows, int64_t rows, int64_t D,
                             uint16_t* k_tiles, uint16_t* v, int64_t key_steps, int64_t ks) {
  pack_tokens_avx512(k_rows, D, rows, D, D / 32, 0, 2, k_tiles);
  // Lanes of cvtne2ps_pbh(b, a): a's 16 values, then b's; interleaved into (a_i, b_i) pairs.
  alignas(64) static constexpr uint16_t kPairs[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                                      21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                                      11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i pairs = _mm512_load_si512(kPairs);
  for (int64_t dt = 0; dt < D / 16; ++dt) {
    uint16_t* tile = v + (dt * key_steps + ks) * kTileElems;
    for (int64_t pp = 0; pp < 16; ++pp) {
      const int64_t r0 = 2 * pp, r1 = 2 * pp + 1;
      const __m512 a = r0 < rows ? _mm512_loadu_ps(v_rows + r0 * D + dt * 16) : _mm512_setzero_ps();
      const __m512 b = r1 < rows ? _mm512_loadu_ps(v_rows + r1 * D + dt * 16) : _mm512_setzero_ps();
      const __m512i ab = (__m512i)_mm512_cvtne2ps_pbh(b, a);
      _mm512_store_si512(tile + pp * 32, _mm512_permutexvar_epi16(pairs, ab));
    }
  }
}

}  // namespace strata::cpu::amx_detail
