#include "offload/tokenizer/spm_encoder.h"

#include <cstdio>
#include <optional>
#include <string>

#include "offload/tokenizer/pair_merge.h"

namespace strata {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

}  // namespace

SpmEncoder::SpmEncoder(std::shared_ptr<const Vocab> vocab) : vocab_(std::move(vocab)) {
  for (int byte = 0; byte < 256; ++byte) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", byte);
    int32_t id = vocab_->find(hex);
    if (id == kNoToken) id = vocab_->find(std::string(1, static_cast<char>(byte)));
    if (id == kNoToken) id = vocab_->unknown_id();
    byte_token_ids_[byte] = id;
  }
}

void SpmEncoder::encode(std::string_view raw_text, std::vector<int32_t>* ids) const {
  std::string text;
  text.reserve(raw_text.size() + raw_text.size() / 4);
  for (char c : raw_text) {
    if (c == ' ')
      text.append(kSpaceMarker);
    else
      text.push_back(c);
  }
  if (text.empty()) return;

  // Highest token score first; a pair may merge only when its text is a token.
  const auto pair_priority = [&](std::string_view /*left*/, std::string_view /*right*/,
                                 std::string_view merged) -> std::optional<float> {
    const int32_t id = vocab_->find(merged);
    if (id == kNoToken) return std::nullopt;
    return vocab_->score(id);
  };
  // Every merged piece is a token (pairs only merge when they are); single characters that are
  // not fall back to their bytes.
  merge_pairs(text, pair_priority, [&](std::string_view piece) {
    const int32_t id = vocab_->find(piece);
    if (id != kNoToken) {
      ids->push_back(id);
      return;
    }
    for (char c : piece) {
      const int32_t byte_id = byte_token_ids_[static_cast<uint8_t>(c)];
      if (byte_id != kNoToken) ids->push_back(byte_id);
    }
  });
}

}  // namespace strata
