// LlamaWeights: the weights of a Llama-family decoder (llama, mistral, qwen2) bound by name from
// a ModelSpec. Pointers into the spec's tensor table; nothing is copied or owned. Shapes are in
// ggml order (ne[0] = input length of a projection).
#pragma once

#include <vector>

#include "offload/core/status.h"
#include "offload/model/model_spec.h"

namespace strata {

struct LayerWeights {
  const TensorSpec* attn_norm = nullptr;  // [n_embd]
  const TensorSpec* wq = nullptr;         // [n_embd, n_head * head_dim]
  const TensorSpec* wk = nullptr;         // [n_embd, n_head_kv * head_dim]
  const TensorSpec* wv = nullptr;         // [n_embd, n_head_kv * head_dim]
  const TensorSpec* bq = nullptr;         // [q_dim] or null (qwen2 only)
  const TensorSpec* bk = nullptr;         // [kv_dim] or null
  const TensorSpec* bv = nullptr;         // [kv_dim] or null
  const TensorSpec* wo = nullptr;         // [q_dim, n_embd]
  const TensorSpec* ffn_norm = nullptr;   // [n_embd]
  const TensorSpec* w_gate = nullptr;     // [n_embd, n_ff]
  const TensorSpec* w_up = nullptr;       // [n_embd, n_ff]
  const TensorSpec* w_down = nullptr;     // [n_ff, n_embd]
};

struct LlamaWeights {
  const TensorSpec* token_embd = nullptr;   // [n_embd, n_vocab]
  const TensorSpec* output_norm = nullptr;  // [n_embd]
  const TensorSpec* output = nullptr;       // [n_embd, n_vocab]; token_embd when tied
  std::vector<LayerWeights> layers;

  // REQUIRES: validate_model_spec(spec) passed (model_spec_from_* do that).
  static StatusOr<LlamaWeights> bind(const ModelSpec& spec);
};

}  // namespace strata
