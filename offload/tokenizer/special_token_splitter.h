// Cutting special-token texts out of input before it is encoded, as llama.cpp does for chat
// templates: "<|im_start|>user\nhi<|im_end|>" becomes [<|im_start|>] "user\nhi" [<|im_end|>].
//
// Tokens are tried longest text first; each one cuts every plain-text fragment left by the
// ones before it, at every occurrence, left to right. User-defined tokens are always cut out;
// control and unknown tokens only when `parse_special` is set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "offload/tokenizer/vocab.h"

namespace strata {

// Either a special token (token != kNoToken) or a run of plain text: text.substr(offset, length).
struct TextFragment {
  int32_t token = kNoToken;
  size_t offset = 0;
  size_t length = 0;

  bool is_token() const { return token != kNoToken; }
};

// The fragments of `text` in order; empty text gives no fragments.
std::vector<TextFragment> split_special_tokens(const Vocab& vocab, std::string_view text,
                                               bool parse_special);

}  // namespace strata
