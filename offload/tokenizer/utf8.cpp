#include "offload/tokenizer/utf8.h"

namespace strata {
namespace {

constexpr uint32_t kReplacementCharacter = 0xFFFD;

bool is_continuation(uint8_t byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

void append_utf8(uint32_t code_point, std::string* out) {
  if (code_point > 0x10FFFF) code_point = kReplacementCharacter;
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const auto lead = static_cast<uint8_t>(text[pos]);
    if (lead < 0x80) {
      out.push_back(static_cast<char>(lead));
      ++pos;
      continue;
    }
    // llama.cpp's decoder: 10xxxxxx and 11111xxx never start a character; the others need
    // 1..3 continuation bytes. It does not reject overlong forms or surrogates.
    size_t length = 0;
    if ((lead & 0xE0) == 0xC0)
      length = 2;
    else if ((lead & 0xF0) == 0xE0)
      length = 3;
    else if ((lead & 0xF8) == 0xF0)
      length = 4;
    bool complete = length != 0 && pos + length <= text.size();
    for (size_t k = 1; complete && k < length; ++k) {
      complete = is_continuation(static_cast<uint8_t>(text[pos + k]));
    }
    if (!complete) {
      append_utf8(kReplacementCharacter, &out);
      ++pos;
      continue;
    }
    uint32_t code_point = lead & (0x7F >> length);
    for (size_t k = 1; k < length; ++k) {
      code_point = (code_point << 6) | (static_cast<uint8_t>(text[pos + k]) & 0x3F);
    }
    append_utf8(code_point, &out);
    pos += length;
  }
  return out;
}

size_t incomplete_utf8_suffix_length(std::string_view bytes) {
  // Walk back over at most three continuation bytes to the byte that should lead them.
  size_t continuation_count = 0;
  while (continuation_count < bytes.size() && continuation_count < 3 &&
         is_continuation(static_cast<uint8_t>(bytes[bytes.size() - 1 - continuation_count]))) {
    ++continuation_count;
  }
  if (continuation_count == bytes.size()) return 0;  // only continuation bytes: malformed
  const auto lead = static_cast<uint8_t>(bytes[bytes.size() - 1 - continuation_count]);
  size_t length = 0;
  if (lead >= 0xC2 && lead <= 0xDF)
    length = 2;
  else if (lead >= 0xE0 && lead <= 0xEF)
    length = 3;
  else if (lead >= 0xF0 && lead <= 0xF4)
    length = 4;
  if (length == 0) return 0;  // ASCII or an invalid lead: nothing to wait for
  const size_t have = continuation_count + 1;
  return have < length ? have : 0;
}

}  // namespace strata
