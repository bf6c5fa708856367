// BpeEncoder: byte-level BPE (tokenizer.ggml.model = "gpt2"), as llama.cpp does it. The text is
// cleaned of malformed UTF-8, split by the family's PreTokenizer, and each piece is spelled in
// the byte-level alphabet and merged: repeatedly the adjacent pair with the lowest merge rank
// (leftmost on ties) becomes one symbol. Each final symbol is its token; a symbol that is not
// a token falls back to the tokens of its single bytes.
//
// The merge ranks are built once in create(); encode() is const and thread-safe.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "offload/tokenizer/fragment_encoder.h"
#include "offload/tokenizer/pre_tokenizer.h"
#include "offload/tokenizer/vocab.h"

namespace strata {

class BpeEncoder final : public FragmentEncoder {
 public:
  // `merges` is tokenizer.ggml.merges: "left right" per entry, rank = index (the first entry
  // wins when one pair repeats). Errors: no merges, or an entry without a separating space.
  static StatusOr<std::unique_ptr<BpeEncoder>> create(std::shared_ptr<const Vocab> vocab,
                                                      const std::vector<std::string>& merges);

  void encode(std::string_view text, std::vector<int32_t>* ids) const override;

  // The rank of merging `left` with `right`, or -1 when the pair is not a merge.
  int32_t merge_rank(std::string_view left, std::string_view right, std::string* scratch) const;

 private:
  BpeEncoder(std::shared_ptr<const Vocab> vocab, PreTokenizer pre_tokenizer)
      : vocab_(std::move(vocab)), pre_tokenizer_(std::move(pre_tokenizer)) {}

  // Appends the ids of one pre-tokenized piece, already in the byte-level alphabet.
  void encode_word(std::string_view word, std::string* scratch, std::vector<int32_t>* ids) const;

  std::shared_ptr<const Vocab> vocab_;
  PreTokenizer pre_tokenizer_;
  // Key: 4 bytes of len(left), then left, then right (unambiguous whatever the texts hold).
  std::unordered_map<std::string, int32_t, StringViewHash, std::equal_to<>> merge_ranks_;
};

}  // namespace strata
