// FragmentEncoder: turns one run of plain text (no special tokens in it) into token ids; one
// implementation per vocabulary type (SentencePiece, byte-level BPE). The Tokenizer cuts
// special tokens out first and adds BOS/EOS; encoders know nothing of either.
// Implementations are immutable and thread-safe.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace strata {

class FragmentEncoder {
 public:
  virtual ~FragmentEncoder() = default;
  // Appends the ids of `text` to *ids.
  virtual void encode(std::string_view text, std::vector<int32_t>* ids) const = 0;
};

}  // namespace strata
