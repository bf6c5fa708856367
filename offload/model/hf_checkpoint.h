// HF checkpoint folder -> ModelSpec: `config.json` plus `model.safetensors` (or the shards
// that `model.safetensors.index.json` lists), read the way HF transformers reads them.
//
// Architectures: LlamaForCausalLM (model_type "llama"; "mistral" is the same graph) and
// Qwen2ForCausalLM ("qwen2": q/k/v biases). Tensor names become llama.cpp's
// (`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`, `lm_head.weight` ->
// `output.weight`, ...). An HF weight `[out, in]` in row-major order has the bytes of a ggml
// tensor with ne = [in, out], so every TensorSpec is a span into the shard's mapping: nothing is
// copied and nothing is permuted. HF stores Q/K unpermuted (rotate-half layout), so the spec
// records RopeStyle::kNeoxHalves for both architectures (GGUF llama files are permuted and use
// kAdjacentPairs instead; the two are the same model).
//
// config.json fields (transformers 4 and 5 spellings):
//   required: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size
//   num_key_value_heads   default num_attention_heads
//   head_dim              default hidden_size / num_attention_heads
//   rms_norm_eps          default 1e-6 (transformers' default for all three)
//   rope theta            rope_parameters.rope_theta (transformers 5), else rope_theta, else 1e4;
//                         a rope_type / rope_scaling other than "default" is unsupported
//   max_position_embeddings  default 2048 (llama), 131072 (mistral), 32768 (qwen2); a sliding
//                         window smaller than it caps the usable context (n_ctx_train), since
//                         within the window sliding and full attention agree
//   tie_word_embeddings   default false; when true lm_head.weight must be absent or identical to
//                         model.embed_tokens.weight (it is then dropped)
//   attention_bias, mlp_bias  must be false for llama/mistral (o_proj / MLP biases are not
//                         modelled); qwen2 always has q/k/v biases and nothing else
//   hidden_act            must be "silu"; quantization_config (GPTQ, AWQ, fp8, ...) must be absent
// Every problem is one Status naming the file (config.json, the index, or the shard) and what
// was wrong; the finished spec also passes validate_model_spec.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "offload/core/status.h"
#include "offload/model/model_spec.h"

namespace strata {

// Reads the checkpoint in folder `dir`.
StatusOr<ModelSpec> model_spec_from_hf_folder(const std::string& dir);

// llama.cpp's name for an HF tensor name, or nullopt when the name is not one of the
// LlamaForCausalLM / Qwen2ForCausalLM weights. Pure name mapping: the layer index is not
// checked against the config.
std::optional<std::string> hf_to_gguf_tensor_name(std::string_view hf_name);

}  // namespace strata
