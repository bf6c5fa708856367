#include "offload/tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "offload/tokenizer/utf8.h"

namespace strata {
namespace {

// The highest code point of the alphabet: 256 + 68 - 1.
constexpr uint32_t kMaxAlphabetCodePoint = 0x143;

constexpr bool maps_to_itself(uint32_t byte) {
  return (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
}

struct ByteLevelTables {
  std::array<uint16_t, 256> code_point_of_byte{};
  std::array<int16_t, kMaxAlphabetCodePoint + 1> byte_of_code_point{};
};

constexpr ByteLevelTables make_tables() {
  ByteLevelTables t{};
  for (auto& b : t.byte_of_code_point) b = -1;
  uint32_t next_extra = 256;
  for (uint32_t byte = 0; byte < 256; ++byte) {
    const uint32_t cp = maps_to_itself(byte) ? byte : next_extra++;
    t.code_point_of_byte[byte] = static_cast<uint16_t>(cp);
    t.byte_of_code_point[cp] = static_cast<int16_t>(byte);
  }
  return t;
}

constexpr ByteLevelTables kTables = make_tables();

}  // namespace

void byte_level_encode(std::string_view bytes, std::string* out) {
  for (char c : bytes) append_utf8(kTables.code_point_of_byte[static_cast<uint8_t>(c)], out);
}

std::string byte_level_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const auto lead = static_cast<uint8_t>(text[pos]);
    size_t length = utf8_sequence_length(lead);
    if (pos + length > text.size()) length = text.size() - pos;
    uint32_t cp = lead;
    if (length == 2) cp = ((lead & 0x1F) << 6) | (static_cast<uint8_t>(text[pos + 1]) & 0x3F);
    const bool in_alphabet = (length == 1 && lead < 0x80) ||
                             (length == 2 && (static_cast<uint8_t>(text[pos + 1]) & 0xC0) == 0x80);
    if (in_alphabet && cp <= kMaxAlphabetCodePoint && kTables.byte_of_code_point[cp] >= 0) {
      out.push_back(static_cast<char>(kTables.byte_of_code_point[cp]));
    } else {
      out.append(text.substr(pos, length));
    }
    pos += length;
  }
  return out;
}

}  // namespace strata
