// Causal multi-head attention (with grouped KV heads) on the CPU over a paged KV cache.
// Query token t at position positions[t] attends to KV positions 0..positions[t] of one sequence,
// read through the plain KvLayerView (memory/kv_view.h; f32 or f16 rows). Scores, softmax (with
// the running max subtracted) and the weighted sum are float32.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

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

// Attention over the KV positions [kv_begin, kv_end) only (still causal: at most positions[t]),
// for splitting one attention between tiers (issue 6: cold blocks on the CPU, hot ones on the
// GPU). out is the softmax-weighted sum over that range alone and lse [n_tokens][n_head] its
// log-sum-exp of scaled scores (-inf, with out = 0, where the range holds no key for a token);
// merge_attention combines two such parts into exactly the attention over both ranges.
// REQUIRES: as attention(); 0 <= kv_begin <= kv_end <= kv.num_tokens.
void attention_range(const float* q, int64_t n_tokens, const int32_t* positions,
                     const KvLayerView& kv, const AttentionShape& shape, int64_t kv_begin,
                     int64_t kv_end, float* out, float* lse, float* scratch);

// [begin, end) of KV positions.
using KeyRange = std::pair<int64_t, int64_t>;

// attention_range over the union of disjoint ranges, in one parallel region: the cpu cold
// attention's share comes dealt in groups of blocks (GpuExecutorOptions::cold_deal_blocks), up
// to ~120 ranges per layer at 128k, and a region and a merge per range made the threads wait at
// every range's end. REQUIRES: as attention_range for each range.
void attention_ranges(const float* q, int64_t n_tokens, const int32_t* positions,
                      const KvLayerView& kv, const AttentionShape& shape,
                      std::span<const KeyRange> ranges, float* out, float* lse, float* scratch);

// Two attention parts over disjoint key ranges, each [rows][head_dim] with lse [rows] (rows =
// n_tokens * n_head), into out/lse over the union: out = (e^(la-m) oa + e^(lb-m) ob) /
// (e^(la-m) + e^(lb-m)), lse = m + log(e^(la-m) + e^(lb-m)), m = max(la, lb). out/lse may alias
// a's. A part with lse = -inf contributes nothing.
void merge_attention(const float* out_a, const float* lse_a, const float* out_b, const float* lse_b,
                     int64_t rows, int64_t head_dim, float* out, float* lse);

// Scratch for attention over up to max_kv_tokens: per thread the scores of one 64-key chunk per
// head (online softmax), plus the key-split pieces' parts. It no longer grows with the context;
// max_kv_tokens stays in the signature for the callers that size it by their context.
int64_t attention_scratch_floats(int64_t max_kv_tokens, const AttentionShape& shape);

}  // namespace strata::cpu
