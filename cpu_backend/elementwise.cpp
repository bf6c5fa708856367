#include "cpu_backend/elementwise.h"

#include <cmath>
#include <vector>

namespace strata::cpu {

void rms_norm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t n,
              float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xr = x + t * n;
    float* yr = y + t * n;
    double sum_sq = 0.0;  // double: the mean of squares is the one long reduction here
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
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
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
