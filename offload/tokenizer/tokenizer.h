// Tokenizer: text <-> token ids for a model, built from the `tokenizer.ggml.*` metadata of its
// GGUF file, giving the same ids as llama.cpp (checked against llama.cpp's test vectors).
// SentencePiece vocabularies (model "llama") and byte-level BPE (model "gpt2", pre-tokenizers
// default / gpt-2 / llama-bpe / qwen2 families) are supported.
//
// Immutable once built; every method is const and thread-safe. Copies are cheap and share the
// tables (the vocabulary and merge ranks are built once, in from_gguf()).
//
// Example:
//   STRATA_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open("model.gguf"));
//   STRATA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_gguf(file));
//   std::vector<int32_t> ids = tok.encode("Hello", /*add_special=*/true, /*parse_special=*/true);
//   std::string text = tok.decode(ids);
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "offload/core/status.h"
#include "offload/formats/gguf_file.h"
#include "offload/tokenizer/fragment_encoder.h"
#include "offload/tokenizer/tokenizer_metadata.h"
#include "offload/tokenizer/vocab.h"

namespace strata {

struct DecodeOptions {
  // Drop a leading BOS and trailing EOS when the tokenizer adds them. Default: false.
  bool remove_special = false;
  // Write control and unknown tokens as their text ("<|im_end|>"); otherwise they vanish.
  // Default: true.
  bool render_special = true;
};

class Tokenizer {
 public:
  // Errors name the file and the key at fault (see Vocab::build, BpeEncoder::create).
  static StatusOr<Tokenizer> from_gguf(const GgufFile& file);
  static StatusOr<Tokenizer> from_metadata(TokenizerMetadata metadata);

  // add_special: put BOS in front / EOS at the end when the vocabulary says to
  // (tokenizer.ggml.add_bos_token / add_eos_token). parse_special: map the text of control
  // tokens such as "<|im_start|>" to their ids; otherwise it is encoded as plain text
  // (user-defined tokens are always mapped, as llama.cpp does).
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

  // The bytes one token stands for: SentencePiece U+2581 becomes ' ', a <0xXX> token its
  // byte, a byte-level BPE token its bytes. May be part of a UTF-8 character. Out-of-range
  // ids and (unless render_special) control/unknown tokens give "".
  std::string token_to_piece(int32_t id, bool render_special = true) const;

  // The text of `ids`, as llama.cpp's detokenize: pieces joined, the space SentencePiece puts
  // in front of the first word dropped, and for BPE families that ask for it the spaces before
  // ?!., and some contractions removed. Out-of-range ids are skipped (see check_ids()).
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& options = {}) const;

  // OK when every id is in [0, n_vocab); otherwise an error naming the first bad one.
  Status check_ids(std::span<const int32_t> ids) const;

  int64_t n_vocab() const { return vocab_->size(); }
  int32_t bos_id() const { return vocab_->bos_id(); }  // kNoToken (-1) when there is none
  int32_t eos_id() const { return vocab_->eos_id(); }
  int32_t eot_id() const { return vocab_->eot_id(); }
  bool is_end_of_generation(int32_t id) const { return vocab_->is_end_of_generation(id); }
  const Vocab& vocab() const { return *vocab_; }

 private:
  Tokenizer(std::shared_ptr<const Vocab> vocab, std::shared_ptr<const FragmentEncoder> encoder,
            std::shared_ptr<const std::vector<std::string>> pieces)
      : vocab_(std::move(vocab)), encoder_(std::move(encoder)), pieces_(std::move(pieces)) {}

  std::shared_ptr<const Vocab> vocab_;
  std::shared_ptr<const FragmentEncoder> encoder_;
  std::shared_ptr<const std::vector<std::string>> pieces_;  // token_to_piece(id, true) per id
};

}  // namespace strata
