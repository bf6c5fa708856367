// TokenizerMetadata: the `tokenizer.ggml.*` keys of a GGUF file as plain values, before any
// checking of how they fit together (Vocab::build does that). Reading only checks that each
// key present has the right GGUF type. Tests build one by hand to try bad combinations.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "offload/core/status.h"
#include "offload/formats/gguf_file.h"

namespace strata {

struct TokenizerMetadata {
  std::string model;                 // tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2"
  std::optional<std::string> pre;    // tokenizer.ggml.pre; absent in older files
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens: text of each id
  std::vector<float> scores;         // tokenizer.ggml.scores; empty when absent (all 0)
  std::vector<int64_t> token_types;  // tokenizer.ggml.token_type; empty when absent (normal)
  std::vector<std::string> merges;   // tokenizer.ggml.merges ("left right", by rank)

  // Special ids; absent keys leave the model's default (e.g. BOS 1 for "llama").
  std::optional<int64_t> bos_id;        // tokenizer.ggml.bos_token_id
  std::optional<int64_t> eos_id;        // tokenizer.ggml.eos_token_id
  std::optional<int64_t> eot_id;        // tokenizer.ggml.eot_token_id
  std::optional<int64_t> eom_id;        // tokenizer.ggml.eom_token_id
  std::optional<int64_t> unknown_id;    // tokenizer.ggml.unknown_token_id
  std::optional<int64_t> separator_id;  // tokenizer.ggml.seperator_token_id (sic, as in GGUF)
  std::optional<int64_t> padding_id;    // tokenizer.ggml.padding_token_id
  std::optional<int64_t> mask_id;       // tokenizer.ggml.mask_token_id

  std::optional<bool> add_bos;           // tokenizer.ggml.add_bos_token
  std::optional<bool> add_eos;           // tokenizer.ggml.add_eos_token
  std::optional<bool> add_space_prefix;  // tokenizer.ggml.add_space_prefix
};

// Reads the keys above. Errors (naming the file and key): no tokenizer.ggml.model or
// tokenizer.ggml.tokens, or a key with the wrong type (e.g. tokens that are not strings).
StatusOr<TokenizerMetadata> read_tokenizer_metadata(const GgufFile& file);

}  // namespace strata
