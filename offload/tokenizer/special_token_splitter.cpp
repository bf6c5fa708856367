#include "offload/tokenizer/special_token_splitter.h"

namespace strata {

std::vector<TextFragment> split_special_tokens(const Vocab& vocab, std::string_view text,
                                               bool parse_special) {
  std::vector<TextFragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back(TextFragment{kNoToken, 0, text.size()});

  std::vector<TextFragment> next;
  for (const int32_t id : vocab.special_tokens_longest_first()) {
    const TokenKind kind = vocab.kind(id);
    if (!parse_special && (kind == TokenKind::kControl || kind == TokenKind::kUnknown)) continue;
    const std::string_view token_text = vocab.text(id);
    // Cheap pre-check: most special tokens never occur in the input at all.
    if (text.find(token_text) == std::string_view::npos) continue;

    next.clear();
    for (const TextFragment& fragment : fragments) {
      if (fragment.is_token()) {
        next.push_back(fragment);
        continue;
      }
      const std::string_view raw = text.substr(fragment.offset, fragment.length);
      size_t start = 0;
      for (size_t match = raw.find(token_text); match != std::string_view::npos;
           match = raw.find(token_text, start)) {
        if (match > start) {
          next.push_back(TextFragment{kNoToken, fragment.offset + start, match - start});
        }
        next.push_back(TextFragment{id, fragment.offset + match, token_text.size()});
        start = match + token_text.size();
      }
      if (start < raw.size()) {
        next.push_back(TextFragment{kNoToken, fragment.offset + start, raw.size() - start});
      }
    }
    fragments.swap(next);
  }
  return fragments;
}

}  // namespace strata
