#include "offload/tokenizer/streaming_decoder.h"

#include "offload/tokenizer/utf8.h"

namespace strata {

std::string StreamingDecoder::push(int32_t id) {
  std::string text = std::move(pending_);
  pending_.clear();
  text += tokenizer_.token_to_piece(id, render_special_);
  const size_t held = incomplete_utf8_suffix_length(text);
  pending_.assign(text, text.size() - held, held);
  text.resize(text.size() - held);
  return text;
}

std::string StreamingDecoder::flush() {
  std::string rest = std::move(pending_);
  pending_.clear();
  return rest;
}

}  // namespace strata
