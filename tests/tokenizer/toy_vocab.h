// Small hand-made vocabularies for tokenizer unit tests, so that behaviour (which pair merges
// first, when bytes are used, where spaces go) can be checked with a handful of tokens.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "offload/tokenizer/byte_level.h"
#include "offload/tokenizer/tokenizer_metadata.h"

namespace strata::testing {

inline void add_token(TokenizerMetadata* m, std::string text, float score, int64_t type) {
  m->tokens.push_back(std::move(text));
  m->scores.push_back(score);
  m->token_types.push_back(type);
}

// SentencePiece: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then `normal` from id 259.
inline constexpr int32_t kToyFirstNormalId = 259;
inline int32_t toy_byte_id(uint8_t byte) { return 3 + byte; }

inline TokenizerMetadata toy_spm(const std::vector<std::pair<std::string, float>>& normal) {
  TokenizerMetadata m;
  m.model = "llama";
  m.pre = "default";
  add_token(&m, "<unk>", 0, 2);
  add_token(&m, "<s>", 0, 3);
  add_token(&m, "</s>", 0, 3);
  for (int byte = 0; byte < 256; ++byte) {
    char text[8];
    std::snprintf(text, sizeof(text), "<0x%02X>", byte);
    add_token(&m, text, 0, 6);
  }
  for (const auto& [text, score] : normal) add_token(&m, text, score, 1);
  return m;
}

// Byte-level BPE: ids 0..255 are the single bytes (id == byte value), then `extra` from 256,
// then <|endoftext|> (control; BOS and EOS).
inline TokenizerMetadata toy_bpe(const std::string& pre, const std::vector<std::string>& extra,
                                 std::vector<std::string> merges) {
  TokenizerMetadata m;
  m.model = "gpt2";
  m.pre = pre;
  for (int byte = 0; byte < 256; ++byte) {
    std::string text;
    byte_level_encode(std::string(1, static_cast<char>(byte)), &text);
    m.tokens.push_back(text);
    m.token_types.push_back(1);
  }
  for (const std::string& text : extra) {
    m.tokens.push_back(text);
    m.token_types.push_back(1);
  }
  m.tokens.push_back("<|endoftext|>");
  m.token_types.push_back(3);
  m.bos_id = m.eos_id = static_cast<int64_t>(m.tokens.size()) - 1;
  m.merges = std::move(merges);
  return m;
}

}  // namespace strata::testing
