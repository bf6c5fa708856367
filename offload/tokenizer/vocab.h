// Vocab: the checked, immutable token table a Tokenizer works from: the text, score and kind of
// every id, a text -> id index, the special ids, and the flags that steer encoding and decoding
// (add BOS/EOS, space prefix, clean-up of spaces on decode). Built from TokenizerMetadata with
// llama.cpp's defaults for whatever the file leaves out.
//
// Every inconsistency in the metadata is one clear Status (never a crash): array lengths that
// disagree, ids out of range, unknown token types, an unknown tokenizer.ggml.model or .pre.
// As in llama.cpp, tokenizer.ggml.pre is only read for "gpt2" (missing means "default"); a
// special id of -1 (or 0xFFFFFFFF) means "no such token".
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "offload/core/status.h"
#include "offload/tokenizer/pre_tokenizer.h"
#include "offload/tokenizer/tokenizer_metadata.h"

namespace strata {

enum class VocabType {
  kSentencePiece,  // tokenizer.ggml.model = "llama": scores, byte fallback <0xXX>, U+2581 spaces
  kByteLevelBpe,   // tokenizer.ggml.model = "gpt2": byte-level alphabet, merges by rank
};

// What a token is, from tokenizer.ggml.token_type (1 normal, 2 unknown, 3 control,
// 4 user-defined, 5 unused, 6 byte; 0 undefined).
enum class TokenKind : uint8_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

inline constexpr int32_t kNoToken = -1;

// Hash that lets unordered maps keyed by std::string be probed with a string_view.
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class Vocab {
 public:
  // Checks `metadata` and fills in defaults. Errors name the key that is wrong.
  static StatusOr<Vocab> build(TokenizerMetadata metadata);

  VocabType type() const { return type_; }
  PreTokenizerKind pre_tokenizer() const { return pre_tokenizer_; }  // byte-level BPE only
  int64_t size() const { return static_cast<int64_t>(texts_.size()); }
  bool contains(int64_t id) const { return id >= 0 && id < size(); }

  // REQUIRES: contains(id)
  const std::string& text(int32_t id) const { return texts_[id]; }
  float score(int32_t id) const { return scores_[id]; }
  TokenKind kind(int32_t id) const { return kinds_[id]; }

  // The id whose text is exactly `text`, or kNoToken. Duplicated texts map to the last id.
  int32_t find(std::string_view text) const {
    auto it = ids_by_text_.find(text);
    return it == ids_by_text_.end() ? kNoToken : it->second;
  }

  // Special ids; kNoToken when the vocabulary has none.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t eot_id() const { return eot_id_; }  // end of turn, e.g. <|eot_id|>, <|im_end|>
  int32_t eom_id() const { return eom_id_; }  // end of message, e.g. <|eom_id|>
  int32_t unknown_id() const { return unknown_id_; }
  int32_t padding_id() const { return padding_id_; }
  // True for EOS, EOT, EOM and the other tokens that end a generation (llama.cpp's list).
  bool is_end_of_generation(int32_t id) const;

  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }  // SentencePiece: " " before text
  bool clean_spaces() const { return clean_spaces_; }          // decode drops " " before ?!., etc.
  bool ignore_merges() const { return ignore_merges_; }  // BPE: a word that is a token stays whole

  // Control, user-defined and unknown tokens, longest text first: the texts that
  // encode(parse_special) cuts out of the input.
  const std::vector<int32_t>& special_tokens_longest_first() const { return special_tokens_; }

 private:
  Vocab() = default;

  VocabType type_ = VocabType::kSentencePiece;
  PreTokenizerKind pre_tokenizer_ = PreTokenizerKind::kDefault;
  std::vector<std::string> texts_;
  std::vector<float> scores_;
  std::vector<TokenKind> kinds_;
  std::unordered_map<std::string, int32_t, StringViewHash, std::equal_to<>> ids_by_text_;

  int32_t bos_id_ = kNoToken;
  int32_t eos_id_ = kNoToken;
  int32_t eot_id_ = kNoToken;
  int32_t eom_id_ = kNoToken;
  int32_t unknown_id_ = kNoToken;
  int32_t separator_id_ = kNoToken;
  int32_t padding_id_ = kNoToken;
  int32_t mask_id_ = kNoToken;
  std::vector<int32_t> end_of_generation_ids_;  // sorted

  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  bool clean_spaces_ = false;
  bool ignore_merges_ = false;
  std::vector<int32_t> special_tokens_;

  friend class VocabBuilder;
};

}  // namespace strata
