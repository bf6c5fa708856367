// Causal multi-head attention (with grouped KV heads) on the CPU over a paged KV cache.
// Query token t at position positions[t] attends to KV positions 0..positions[t] of one sequence,
// read through the plain KvLayerView (memory/kv_view.h; f32 or f16 rows). Scores, softmax (with
// the running max subtracted) and the weighted sum are float32.
#pragma once

#include <cstdint>

#include "memory/kv_view.h"

namespace strata::cpu {

struct AttentionShape {
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
};

// out [n_tokens][n_head * head_dim] from q [n_tokens][n_head * head_dim].
// REQUIRES: positions[t] < kv.num_tokens <= max_kv_tokens given to attention_scratch_floats;
// scratch holds attention_scratch_floats(max_kv_tokens) floats.
void attention(const float* q, int64_t n_tokens, const int32_t* positions, const KvLayerView& kv,
               const AttentionShape& shape, float* out, float* scratch);

// Scratch for attention over up to max_kv_tokens: one score row per thread.
int64_t attention_scratch_floats(int64_t max_kv_tokens, const AttentionShape& shape);

}  // namespace strata::cpu
