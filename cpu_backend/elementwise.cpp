#include "cpu_backend/elementwise.h"

#include <cmath>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>

#include "cpu_backend/avx512_exp.h"
#endif
#include "offload/core/dtype.h"

namespace strata::cpu {

void rms_norm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t n,
              float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xr = x + t * n;
    float* yr = y + t * n;
    double sum_sq = 0.0;  // double: the mean of squares is the one long reduction here
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * scale) * weight[i];
  }
}

void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dims,
          const int32_t* positions, double theta, RopeStyle style) {
  const int64_t half = rope_dims / 2;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    // Angles in double, then rounded: within 1 ulp of HF's float32 cos/sin tables.
    float cos_table[512];
    float sin_table[512];
    std::vector<float> big_cos, big_sin;
    float* cs = cos_table;
    float* sn = sin_table;
    if (half > 512) {
      big_cos.resize(half);
      big_sin.resize(half);
      cs = big_cos.data();
      sn = big_sin.data();
    }
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / rope_dims);
      const double angle = static_cast<double>(positions[t]) * inv_freq;
      cs[i] = static_cast<float>(std::cos(angle));
      sn[i] = static_cast<float>(std::sin(angle));
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = style == RopeStyle::kAdjacentPairs ? 2 * i : i;
        const int64_t b = style == RopeStyle::kAdjacentPairs ? 2 * i + 1 : i + half;
        const float x0 = v[a];
        const float x1 = v[b];
        v[a] = x0 * cs[i] - x1 * sn[i];
        v[b] = x0 * sn[i] + x1 * cs[i];
      }
    }
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  int64_t done = 0;
#if defined(__AVX512F__)
  // silu(g) = g / (1 + e^-g) for g >= 0 and g e^g / (1 + e^g) for g < 0: one e^-|g| <= 1 serves
  // both, so nothing overflows.
  const int64_t blocks = n / 16;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const __m512 g = _mm512_loadu_ps(gate + 16 * b);
    const __m512 t = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g)));
    const __mmask16 negative = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 numerator = _mm512_mask_mul_ps(g, negative, g, t);
    const __m512 silu = _mm512_div_ps(numerator, _mm512_add_ps(_mm512_set1_ps(1.0f), t));
    _mm512_storeu_ps(out + 16 * b, _mm512_mul_ps(silu, _mm512_loadu_ps(up + 16 * b)));
  }
  done = blocks * 16;
#endif
  for (int64_t i = done; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void to_f16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m256i h =
        _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), h);
  }
#endif
  for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_bias(float* y, const float* bias, int64_t n_tokens, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t i = 0; i < n; ++i) y[t * n + i] += bias[i];
  }
}

}  // namespace strata::cpu
