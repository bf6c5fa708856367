#include "offload/model/synth_shapes.h"

#include <cmath>
#include <numbers>

namespace strata {
namespace {

// One row per shape. Numbers are copied from each model's Hugging Face config.json (the repo in
// `source`): num_hidden_layers, hidden_size, intermediate_size, num_attention_heads,
// num_key_value_heads, head_dim (or hidden_size / heads), vocab_size, max_position_embeddings,
// rope_theta, rms_norm_eps, tie_word_embeddings, bos/eos_token_id, rope_scaling. Qwen2 has q/k/v
// biases (HF Qwen2Attention) and NEOX rope; Llama neither.
struct Row {
  const char* name;
  const char* source;
  Arch arch;
  int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx;
  double rope_theta, rms_eps;
  bool tied;
  int64_t bos, eos;
  double llama3_rope_factor;  // rope_scaling {rope_type: llama3, factor}; 0 = none
};

// clang-format off
constexpr Row kRows[] = {
  // name            source                               arch         layers embd   ff     heads kv  head vocab   ctx     theta     eps   tied   bos     eos     llama3 rope
  {"tiny",          "(synthetic, for tests: K-quant-sized rows)", Arch::kLlama, 2, 256,  512,  4,  2,  64,  512,    512,    10000.0,   1e-5, false, 256,    257,    0},
  {"tiny-qwen2",    "(synthetic, for tests: qwen2 layout)",       Arch::kQwen2, 2, 256,  512,  4,  2,  64,  512,    512,    1000000.0, 1e-6, true,  256,    256,    0},
  {"tiny-llama3",   "(synthetic, for tests: llama-3.2 layout)",   Arch::kLlama, 2, 64,   256,  4,  2,  16,  128256, 8192,   500000.0,  1e-5, true,  128000, 128001, 32.0},
  {"llama3.2-1b",   "meta-llama/Llama-3.2-1B",           Arch::kLlama, 16, 2048,  8192,  32, 8, 64,  128256, 131072, 500000.0,  1e-5, true,  128000, 128001, 32.0},
  {"qwen2.5-0.5b",  "Qwen/Qwen2.5-0.5B",                 Arch::kQwen2, 24, 896,   4864,  14, 2, 64,  151936, 32768,  1000000.0, 1e-6, true,  151643, 151643, 0},
  {"qwen2.5-7b",    "Qwen/Qwen2.5-7B",                   Arch::kQwen2, 28, 3584,  18944, 28, 4, 128, 152064, 131072, 1000000.0, 1e-6, false, 151643, 151643, 0},
  {"llama3-8b",     "meta-llama/Meta-Llama-3-8B",        Arch::kLlama, 32, 4096,  14336, 32, 8, 128, 128256, 8192,   500000.0,  1e-5, false, 128000, 128001, 0},
  {"llama3.1-8b",   "meta-llama/Llama-3.1-8B",           Arch::kLlama, 32, 4096,  14336, 32, 8, 128, 128256, 131072, 500000.0,  1e-5, false, 128000, 128001, 8.0},
  {"llama2-13b",    "meta-llama/Llama-2-13b-hf",         Arch::kLlama, 40, 5120,  13824, 40, 40, 128, 32000, 4096,   10000.0,   1e-5, false, 1,      2,      0},
  {"qwen2.5-14b",   "Qwen/Qwen2.5-14B",                  Arch::kQwen2, 48, 5120,  13824, 40, 8, 128, 152064, 131072, 1000000.0, 1e-5, false, 151643, 151643, 0},
  {"qwen2.5-32b",   "Qwen/Qwen2.5-32B",                  Arch::kQwen2, 64, 5120,  27648, 40, 8, 128, 152064, 131072, 1000000.0, 1e-5, false, 151643, 151643, 0},
  {"llama3-70b",    "meta-llama/Meta-Llama-3-70B",       Arch::kLlama, 80, 8192,  28672, 64, 8, 128, 128256, 8192,   500000.0,  1e-5, false, 128000, 128001, 0},
};
// clang-format on

SynthShape shape_from_row(const Row& r) {
  SynthShape s;
  s.name = r.name;
  s.source = r.source;
  s.arch = r.arch;
  HyperParams& hp = s.hp;
  hp.n_vocab = r.n_vocab;
  hp.n_embd = r.n_embd;
  hp.n_layer = r.n_layer;
  hp.n_head = r.n_head;
  hp.n_head_kv = r.n_head_kv;
  hp.head_dim = r.head_dim;
  hp.n_ff = r.n_ff;
  hp.n_ctx_train = r.n_ctx;
  hp.rope_dims = r.head_dim;
  hp.rope_theta = r.rope_theta;
  hp.rms_eps = r.rms_eps;
  hp.rope_style = r.arch == Arch::kLlama ? RopeStyle::kAdjacentPairs : RopeStyle::kNeoxHalves;
  hp.tied_embeddings = r.tied;
  hp.qkv_bias = r.arch == Arch::kQwen2;
  s.bos_id = r.bos;
  s.eos_id = r.eos;
  s.rope_scaling.factor = r.llama3_rope_factor;
  return s;
}

}  // namespace

int64_t SynthShape::num_params() const {
  int64_t n = 0;
  for (const auto& [name, ne] : expected_tensors(arch, hp)) {
    int64_t e = 1;
    for (int64_t d : ne) e *= d;
    n += e;
  }
  return n;
}

const std::vector<SynthShape>& synth_shapes() {
  static const std::vector<SynthShape> shapes = [] {
    std::vector<SynthShape> v;
    for (const Row& r : kRows) v.push_back(shape_from_row(r));
    return v;
  }();
  return shapes;
}

const SynthShape* find_synth_shape(std::string_view name) {
  for (const SynthShape& s : synth_shapes()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

std::vector<float> llama3_rope_freqs(const SynthShape& shape) {
  const Llama3RopeScaling& rs = shape.rope_scaling;
  if (!(rs.factor > 0)) return {};
  const int64_t dim = shape.hp.head_dim;
  const float factor = static_cast<float>(rs.factor);
  const float low = static_cast<float>(rs.low_freq_factor);
  const float high = static_cast<float>(rs.high_freq_factor);
  const float old_ctx = static_cast<float>(rs.original_context);
  const float low_freq_wavelen = old_ctx / low;
  const float high_freq_wavelen = old_ctx / high;
  std::vector<float> out;
  for (int64_t i = 0; i < dim; i += 2) {
    const float freq = 1.0f / std::pow(static_cast<float>(shape.hp.rope_theta),
                                       static_cast<float>(i) / static_cast<float>(dim));
    const float wavelen = 2.0f * std::numbers::pi_v<float> / freq;
    if (wavelen < high_freq_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_freq_wavelen) {
      out.push_back(factor);
    } else {
      const float smooth = (old_ctx / wavelen - low) / (high - low);
      out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return out;
}

}  // namespace strata
