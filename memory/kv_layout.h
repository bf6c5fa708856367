// KvLayout: the shape of one KV block, the unit the paged KV cache allocates, frees and (later)
// moves between tiers. A block holds `block_tokens` token slots in every layer; for each layer it
// has one K array and one V array of [block_tokens][kv_dim] elements of `dtype`.
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata {

struct HyperParams;

struct KvLayout {
  int64_t n_layer = 0;
  int64_t kv_dim = 0;         // n_head_kv * head_dim
  int64_t block_tokens = 16;  // token slots per block; vLLM and most kernels use 16 or 32
  // kF32 (what the exact golden tests need), kF16, or kQ8_0 (32-element blocks with an f16
  // scale: 1.06 bytes per element, a quarter of kF32)
  DType dtype = DType::kF32;

  // The layout for a model: one row of kv_dim = n_head_kv * head_dim per token and layer.
  static KvLayout for_model(const HyperParams& hp, int64_t block_tokens = 16,
                            DType dtype = DType::kF32);

  // invalid_argument naming the field when a value is out of range, dtype is not F32/F16/Q8_0,
  // or Q8_0 with kv_dim not a multiple of 32.
  Status validate() const;

  int64_t row_bytes() const;  // one token's K (or V) row in one layer
  // Bytes of the K (or the V) array of one block in one layer.
  int64_t layer_block_bytes() const { return block_tokens * row_bytes(); }
  // Bytes of one whole block: K and V, every layer.
  int64_t block_bytes() const { return 2 * n_layer * layer_block_bytes(); }
  // Blocks that hold `num_tokens` tokens.
  int64_t blocks_for_tokens(int64_t num_tokens) const {
    return (num_tokens + block_tokens - 1) / block_tokens;
  }
};

}  // namespace strata
