// SynthShape: the hyper-parameters of real models (and a few tiny ones for tests), so that
// `strata synth` can write random-weight GGUF files with exactly the tensor table, sizes and
// metadata of the real thing. One table in synth_shapes.cpp, each row with its source.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "offload/model/model_spec.h"

namespace strata {

// Llama-3.1/3.2 "llama3" RoPE scaling. llama.cpp's converter turns it into a `rope_freqs.weight`
// tensor of per-frequency divisors (and writes no rope.scaling keys); factor 0 means none.
struct Llama3RopeScaling {
  double factor = 0.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_context = 8192;
};

struct SynthShape {
  const char* name;    // what --shape takes: "llama3-8b"
  const char* source;  // where the numbers come from (HF repo of the config.json)
  Arch arch = Arch::kLlama;
  HyperParams hp;      // complete: rope_style, tied_embeddings and qkv_bias set
  int64_t bos_id = 0;  // the model's special ids (used by the synthetic vocab when >= 256)
  int64_t eos_id = 0;
  Llama3RopeScaling rope_scaling;

  // Parameters (elements) of the weights, as HF counts them (rope_freqs is derived, not counted).
  int64_t num_params() const;
};

// Every shape, in the order `strata synth --list` prints them.
const std::vector<SynthShape>& synth_shapes();
// nullptr when there is no shape of that name (exact match).
const SynthShape* find_synth_shape(std::string_view name);

// llama.cpp's rope_freqs values for a shape with llama3 scaling: head_dim/2 divisors of the
// rope frequencies (1 for high frequencies, `factor` for low ones, smooth in between), as
// convert_hf_to_gguf.py's LlamaModel computes them in float32. Empty without scaling.
std::vector<float> llama3_rope_freqs(const SynthShape& shape);

}  // namespace strata
