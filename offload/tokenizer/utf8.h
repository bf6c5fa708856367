// UTF-8 helpers for the tokenizer: sequence lengths as llama.cpp counts them, the clean-up that
// llama.cpp's byte-level pre-tokenizer applies to malformed input, and the test a streaming
// decoder needs ("does this buffer end in the middle of a character?"). Pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace strata {

// Length of the sequence that starts with `lead`, judged from its high four bits only (so a
// stray continuation byte counts as 1 and 0xF8..0xFF as 4), exactly as llama.cpp splits text
// into symbols. Callers clamp it to the bytes that remain.
inline size_t utf8_sequence_length(uint8_t lead) {
  constexpr uint8_t kLengthByHighBits[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengthByHighBits[lead >> 4];
}

// Appends the UTF-8 encoding of `code_point` (<= 0x10FFFF; larger values become U+FFFD).
void append_utf8(uint32_t code_point, std::string* out);

// Decodes `text` with llama.cpp's lenient rules and encodes it again: a byte that does not
// start a complete sequence becomes U+FFFD (and decoding resumes at the next byte); overlong
// forms come out in their shortest form. Well-formed UTF-8 comes back unchanged.
std::string sanitize_utf8(std::string_view text);

// Number of bytes at the end of `bytes` that begin a well-formed multi-byte character whose
// remaining bytes have not arrived yet (0..3). Malformed endings count as complete (0), so a
// caller that holds back this many bytes never holds garbage forever.
size_t incomplete_utf8_suffix_length(std::string_view bytes);

}  // namespace strata
