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
  DType dtype = DType::kF32;  // kF32 (what the exact golden tests need) or kF16

  // The layout for a model: one row of kv_dim = n_head_kv * head_dim per token and layer.
  static KvLayout for_model(const HyperParams& hp, int64_t block_tokens = 16,
                            DType dtype = DType::kF32);

  // invalid_argument naming the field when a value is out of range or dtype is not F32/F16.
  Status validate() const;

  int64_t elem_bytes() const { return dtype == DType::kF16 ? 2 : 4; }
  int64_t row_bytes() const { return kv_dim * elem_bytes(); }
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
