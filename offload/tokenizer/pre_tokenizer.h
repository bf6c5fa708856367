// PreTokenizer: the regex split that byte-level BPE vocabularies apply before merging, one
// pattern set per `tokenizer.ggml.pre` family (the same patterns llama.cpp uses). Text is cut
// into pieces; BPE merges never cross a piece boundary.
//
// Each pattern of the set is applied in turn inside every piece the previous one left, and
// both the matches and the text between matches become pieces, so the pieces always cover the
// whole input in order. Matching is done by PCRE2 (UTF + UCP: \p{L}, \p{N} are Unicode
// letters and numbers); \s is widened by U+0085, which llama.cpp counts as whitespace.
//
// Immutable after create(); split() is const and thread-safe. Copies share the compiled code.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "offload/core/status.h"

namespace strata {

enum class PreTokenizerKind {
  kDefault,  // `default` (and a missing key): llama.cpp's generic BPE split
  kGpt2,     // `gpt-2` and friends
  kLlama3,   // `llama-bpe`, `llama3`, ...: digits in runs of up to 3
  kQwen2,    // `qwen2`, `deepseek-r1-qwen`, ...: single digits
};
const char* pre_tokenizer_kind_name(PreTokenizerKind kind);

class PreTokenizer {
 public:
  static StatusOr<PreTokenizer> create(PreTokenizerKind kind);

  PreTokenizerKind kind() const { return kind_; }

  // Replaces *pieces with the pieces of `text` (views into `text`, none empty). `text` should
  // be well-formed UTF-8 (see sanitize_utf8); malformed bytes never match and end up in pieces
  // of their own.
  void split(std::string_view text, std::vector<std::string_view>* pieces) const;

  struct CompiledPattern;  // PCRE2 code; defined in the .cpp

 private:
  PreTokenizer(PreTokenizerKind kind, std::vector<std::shared_ptr<const CompiledPattern>> patterns)
      : kind_(kind), patterns_(std::move(patterns)) {}

  PreTokenizerKind kind_;
  std::vector<std::shared_ptr<const CompiledPattern>> patterns_;  // applied in order
};

}  // namespace strata
