// The byte-level alphabet of GPT-2 style BPE vocabularies: every byte 0..255 is given a
// printable code point, so that any byte string is a string of "characters" and the vocabulary
// never needs raw control bytes or spaces. Printable ASCII and Latin-1 bytes map to themselves
// ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF); the other 68 bytes map, in byte order, to
// U+0100, U+0101, ... (so ' ' is U+0120 'Ġ' and '\n' is U+010A 'Ċ').
#pragma once

#include <string>
#include <string_view>

namespace strata {

// Appends the byte-level spelling of `bytes` to `out`.
void byte_level_encode(std::string_view bytes, std::string* out);

// Turns a byte-level token text back into bytes. A code point outside the alphabet (only found
// in hand-made vocabularies) is copied through as its own UTF-8.
std::string byte_level_decode(std::string_view text);

}  // namespace strata
