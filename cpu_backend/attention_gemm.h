// PrefillAttention: causal attention for many query tokens at once (prefill), as two GEMMs per
// KV head on oneDNN: S = Q K^T over the keys the tile can see, a masked softmax in place, then
// O = S V. The decode kernel in attention.h reads each K/V row once per query token with dot
// products; for thousands of query tokens that is ~1 TFLOP of short reductions per 8B-model
// prefill, which GEMMs run an order of magnitude faster.
//
// Queries are processed in tiles of up to `max_tile_tokens`; a tile only multiplies against keys
// up to its last position, so the causal upper triangle is mostly skipped. Float32 throughout
// (the exact tier holds). Not thread-safe; one per executor.
#pragma once

#include <cstdint>
#include <memory>

#include "cpu_backend/attention.h"
#include "offload/core/status.h"

namespace strata::cpu {

class PrefillAttention {
 public:
  static StatusOr<std::unique_ptr<PrefillAttention>> create(int64_t max_tile_tokens = 512);
  virtual ~PrefillAttention() = default;

  // out [n_tokens][n_head * head_dim] from q [n_tokens][n_head * head_dim] for query tokens at
  // positions first_position .. first_position + n_tokens - 1, attending causally to the keys of
  // kv (which holds at least first_position + n_tokens tokens).
  virtual Status run(const float* q, int64_t n_tokens, int64_t first_position,
                     const KvLayerView& kv, const AttentionShape& shape, float* out) = 0;
};

}  // namespace strata::cpu
