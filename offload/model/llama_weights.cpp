#include "offload/model/llama_weights.h"

namespace strata {

StatusOr<LlamaWeights> LlamaWeights::bind(const ModelSpec& spec) {
  LlamaWeights w;
  Status missing;
  auto get = [&](const std::string& name, bool required = true) -> const TensorSpec* {
    const TensorSpec* t = spec.find(name);
    if (t == nullptr && required && missing.is_ok()) {
      missing = Status::invalid_data(spec.path + ": missing tensor '" + name + "'");
    }
    return t;
  };
  w.token_embd = get("token_embd.weight");
  w.output_norm = get("output_norm.weight");
  w.output = spec.hp.tied_embeddings ? w.token_embd : get("output.weight");
  w.layers.resize(static_cast<size_t>(spec.hp.n_layer));
  for (int64_t l = 0; l < spec.hp.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    lw.attn_norm = get(p + "attn_norm.weight");
    lw.wq = get(p + "attn_q.weight");
    lw.wk = get(p + "attn_k.weight");
    lw.wv = get(p + "attn_v.weight");
    lw.bq = get(p + "attn_q.bias", spec.hp.qkv_bias);
    lw.bk = get(p + "attn_k.bias", spec.hp.qkv_bias);
    lw.bv = get(p + "attn_v.bias", spec.hp.qkv_bias);
    lw.wo = get(p + "attn_output.weight");
    lw.ffn_norm = get(p + "ffn_norm.weight");
    lw.w_gate = get(p + "ffn_gate.weight");
    lw.w_up = get(p + "ffn_up.weight");
    lw.w_down = get(p + "ffn_down.weight");
  }
  if (!missing.is_ok()) return missing;
  return w;
}

}  // namespace strata
