// synthesize: writes a random-weight GGUF file with the exact shape of a real model (a
// SynthShape), for benchmarks and tests that need a 1B..70B model without downloading one.
//
// What the file holds:
//   - Tensors: llama.cpp's names, ggml dims and order (rope_freqs.weight first for shapes with
//     llama3 rope scaling, qwen2 biases after their weights), as convert_hf_to_gguf writes them.
//   - Types as `llama-quantize --pure`: every 2-D weight (token_embd and output too) in the
//     requested type; 1-D tensors (norms, biases, rope_freqs) F32. A row length that is not a
//     multiple of the type's block falls back: Q4_K -> Q4_0 (llama.cpp would pick Q5_0, which
//     Strata does not read; Q4_0 is the closest size), Q6_K -> Q8_0 (as llama.cpp), then a row
//     that still does not fit -> F16. See synth_tensor_type().
//   - Metadata: standard keys only, so llama.cpp loads the file too: general.{architecture, type,
//     name, file_type (llama_ftype), quantization_version}, ARCH.{block_count, context_length,
//     embedding_length, feed_forward_length, attention.head_count, attention.head_count_kv,
//     rope.freq_base, attention.layer_norm_rms_epsilon} and, for llama (as the converter writes
//     them), attention.key_length/value_length, vocab_size, rope.dimension_count.
//   - Tokenizer: by default a synthetic byte-level BPE vocab (tokenizer.ggml.model "gpt2", pre
//     "llama-bpe" for llama shapes / "qwen2" for qwen2 shapes): ids 0..255 are the 256 bytes in
//     GPT-2's byte-to-unicode order; bos/eos sit at the shape's ids (`<|begin_of_text|>`,
//     `<|end_of_text|>`, or `<|endoftext|>` when they are one id; 256/257 when the shape's ids are
//     below 256); the next free ids hold 32 two-byte tokens ("Ġt", "he", ...) with their merges
//     (BPE tokenizers, Strata's included, refuse an empty merge list); every other id is a
//     control token (token_type 3) named `<|reserved_N|>`. With a vocab file, every
//     `tokenizer.*` key is copied from it with its value type; a vocab smaller than the shape's
//     n_vocab is padded as HF converters pad (`[PAD<id>]`, token_type 5 UNUSED, score -1000), a
//     larger one is refused.
//
// Weights: N(0, sigma) from a cheap approximately-normal generator (sum of four 16-bit uniforms,
// tails cut at 3.46 sigma), with sigma = 1/sqrt(fan_in) for attn_q/k/v, ffn_gate/up and output;
// additionally / sqrt(2 * n_layer) for attn_output and ffn_down (so the residual stream stays
// O(1) through all layers); 1/sqrt(n_embd) for token_embd (so tied logits are O(1) too); 0.02 for
// qwen2 biases; norms exactly 1. Activations stay finite through every layer in every type.
// Random rows are exchangeable, so llama's Q/K rows need no permutation (a real checkpoint's
// would, to turn HF's rotate-half layout into llama.cpp's adjacent pairs).
//
// Determinism: every row is generated from (seed, tensor name, row index) by a counter-based
// generator (splitmix64 finaliser), so the bytes depend on the seed alone, never on the thread
// count or the chunk size, and a tensor has the same values whatever --layers says.
//
// Speed: rows are generated and quantized in parallel (OpenMP) into one of two chunk buffers
// while the other is written by a second thread with large sequential writes.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "offload/core/dtype.h"
#include "offload/core/status.h"
#include "offload/formats/gguf_writer.h"
#include "offload/model/synth_shapes.h"

namespace strata {

struct SynthProgress {
  uint64_t data_bytes_written = 0;
  uint64_t data_bytes_total = 0;
  double seconds = 0;  // since the start
};

struct SynthOptions {
  std::string shape;         // a name from synth_shapes(); required
  DType type = DType::kF16;  // F32, F16, BF16, Q8_0, Q4_0, Q4_K or Q6_K
  std::string out_path;      // required; written through "<out_path>.tmp"
  uint64_t seed = 0;
  std::string vocab_path;  // a GGUF file to copy tokenizer.* from; "" = synthetic vocab
  int64_t n_layer = 0;     // > 0 overrides the shape's layer count
  int num_threads = 0;     // generation threads; 0 = OpenMP's default
  size_t chunk_bytes = size_t{64} << 20;  // bytes generated per step (two such buffers live)
  bool sync_before_rename = true;         // fdatasync the file before renaming it into place
  // Called after each chunk is written (on the calling thread). Returning false cancels: the
  // temp file is removed and synthesize() returns an error.
  std::function<bool(const SynthProgress&)> on_progress;
};

struct SynthResult {
  uint64_t file_bytes = 0;
  int64_t num_tensors = 0;
  int64_t num_params = 0;
  double seconds = 0;
};

StatusOr<SynthResult> synthesize(const SynthOptions& options);

// The spec of the file synthesize() would write for `shape` and `type`, without writing it: the
// tensor table (names, types, shapes, bytes; no data) and hyper-parameters. For `strata plan
// --shape`. invalid_argument for an unknown shape or type.
StatusOr<ModelSpec> synth_spec(std::string_view shape, DType type);

// The types synthesize() writes, by name (case-insensitive), or invalid_argument naming them.
StatusOr<DType> parse_synth_type(std::string_view name);

// The type a tensor of dims `ne` gets when `requested` is asked for (see the top comment).
DType synth_tensor_type(DType requested, const std::vector<int64_t>& ne);

// general.file_type (llama.cpp's llama_ftype) of a file whose weights are `type`: F32 0, F16 1,
// Q4_0 2, Q8_0 7, Q4_K 14 (Q4_K_S: Q4_K everywhere), Q6_K 18, BF16 32. nullopt for other types.
std::optional<uint32_t> llama_file_type(DType type);

// The synthetic tokenizer metadata described above, for `n_vocab` ids.
// REQUIRES: n_vocab >= 290 (bytes, bos/eos, merged tokens).
GgufMetadata synthetic_vocab(const SynthShape& shape, int64_t n_vocab);

// tokenizer.* metadata copied from the GGUF file at `vocab_path`, padded to `n_vocab`.
StatusOr<GgufMetadata> copy_vocab(const std::string& vocab_path, int64_t n_vocab,
                                  std::string_view shape_name);

}  // namespace strata
