#include "cpu_backend/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace strata::cpu {

int64_t attention_scratch_floats(int64_t max_kv_tokens) {
  return static_cast<int64_t>(omp_get_max_threads()) * max_kv_tokens;
}

namespace {

// Dot of q with a K row, and acc += w * V row, for f32 or f16 rows.
inline float dot_row(const float* q, const void* row, int64_t n, bool f16) {
  float dot = 0.0f;
  if (f16) {
    const auto* r = static_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) dot += q[i] * f16_to_f32(r[i]);
  } else {
    const auto* r = static_cast<const float*>(row);
    for (int64_t i = 0; i < n; ++i) dot += q[i] * r[i];
  }
  return dot;
}
inline void axpy_row(float w, const void* row, float* acc, int64_t n, bool f16) {
  if (f16) {
    const auto* r = static_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) acc[i] += w * f16_to_f32(r[i]);
  } else {
    const auto* r = static_cast<const float*>(row);
    for (int64_t i = 0; i < n; ++i) acc[i] += w * r[i];
  }
}

}  // namespace

void attention(const float* q, int64_t n_tokens, const int32_t* positions, const KvLayerView& kv,
               const AttentionShape& shape, float* out, float* scratch) {
  const bool f16 = kv.dtype == DType::kF16;
  const int64_t elem_bytes = kv_elem_bytes(kv.dtype);
  const int64_t hd = shape.head_dim;
  const int64_t group = shape.n_head / shape.n_head_kv;  // query heads per KV head
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < shape.n_head; ++h) {
      float* scores = scratch + static_cast<int64_t>(omp_get_thread_num()) * kv.num_tokens;
      const float* qh = q + (t * shape.n_head + h) * hd;
      const int64_t kvh = h / group;
      const int64_t n_ctx = static_cast<int64_t>(positions[t]) + 1;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t p = 0; p < n_ctx; ++p) {
        const char* k = static_cast<const char*>(kv_k_row(kv, p)) + kvh * hd * elem_bytes;
        scores[p] = dot_row(qh, k, hd, f16) * scale;
        max_score = std::max(max_score, scores[p]);
      }
      float sum = 0.0f;
      for (int64_t p = 0; p < n_ctx; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        sum += scores[p];
      }
      const float inv_sum = 1.0f / sum;
      float* oh = out + (t * shape.n_head + h) * hd;
      std::fill(oh, oh + hd, 0.0f);
      for (int64_t p = 0; p < n_ctx; ++p) {
        const char* v = static_cast<const char*>(kv_v_row(kv, p)) + kvh * hd * elem_bytes;
        axpy_row(scores[p] * inv_sum, v, oh, hd, f16);
      }
    }
  }
}

}  // namespace strata::cpu
