// StreamingDecoder: turns generated ids, one at a time, into text that is safe to print. A
// token may end in the middle of a UTF-8 character (a <0xE2> byte token, or a byte-level BPE
// token holding half of an emoji); those bytes are held back until the character is complete.
//
// The concatenation of everything push() and flush() return equals the concatenation of
// token_to_piece() over the ids: no leading-space removal and no clean-up of spaces, as when
// llama.cpp prints tokens as they are generated. Malformed bytes are passed through once it is
// clear that no continuation can make them whole.
//
// Not thread-safe (it holds state); keep one per stream. It keeps its own (cheap, shared)
// copy of the Tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "offload/tokenizer/tokenizer.h"

namespace strata {

class StreamingDecoder {
 public:
  // render_special: as in DecodeOptions (default true: control tokens appear as their text).
  explicit StreamingDecoder(Tokenizer tokenizer, bool render_special = true)
      : tokenizer_(std::move(tokenizer)), render_special_(render_special) {}

  // Adds one token; returns the text that is now complete (possibly empty).
  std::string push(int32_t id);

  // Returns whatever is still held back (an incomplete character at the end of the stream)
  // and starts afresh.
  std::string flush();

  // Bytes held back right now (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  Tokenizer tokenizer_;
  bool render_special_;
  std::string pending_;  // the start of a character whose remaining bytes have not come yet
};

}  // namespace strata
