// SpmEncoder: SentencePiece-style encoding over a scored vocabulary (tokenizer.ggml.model =
// "llama"), as llama.cpp does it. Spaces become U+2581; the text is split into UTF-8
// characters; then, repeatedly, the adjacent pair whose concatenation is the highest-scoring
// token (leftmost on ties) is merged. A final piece that is not a token falls back to one
// <0xXX> byte token per byte.
//
// The leading space that SentencePiece adds is the caller's business (Tokenizer::encode).
#pragma once

#include <array>
#include <memory>

#include "offload/tokenizer/fragment_encoder.h"
#include "offload/tokenizer/vocab.h"

namespace strata {

class SpmEncoder final : public FragmentEncoder {
 public:
  explicit SpmEncoder(std::shared_ptr<const Vocab> vocab);

  void encode(std::string_view text, std::vector<int32_t>* ids) const override;

 private:
  std::shared_ptr<const Vocab> vocab_;
  // The token for each byte: <0xXX>, else the one-byte text, else <unk>, else kNoToken.
  std::array<int32_t, 256> byte_token_ids_;
};

}  // namespace strata
