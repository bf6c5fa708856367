#include "offload/tokenizer/spm_encoder.h"

#include <cstdio>
#include <queue>
#include <string>

#include "offload/tokenizer/utf8.h"

namespace strata {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// One piece of the text being merged; pieces form a linked list in text order. A piece that
// was merged into its left neighbour keeps length_bytes == 0.
struct Symbol {
  size_t begin = 0;
  size_t length_bytes = 0;
  int prev = -1;
  int next = -1;
};

struct Bigram {
  float score;
  int left;
  int right;
  size_t length_bytes;  // of the merged text; a mismatch later means the bigram is stale
};

// Highest score first; on equal scores the leftmost pair.
struct LowerPriority {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

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
    if (c == ' ') text.append(kSpaceMarker);
    else text.push_back(c);
  }
  if (text.empty()) return;

  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    Symbol s;
    s.begin = pos;
    s.length_bytes = std::min(utf8_sequence_length(static_cast<uint8_t>(text[pos])),
                              text.size() - pos);
    pos += s.length_bytes;
    s.prev = static_cast<int>(symbols.size()) - 1;
    s.next = pos == text.size() ? -1 : static_cast<int>(symbols.size()) + 1;
    symbols.push_back(s);
  }

  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  const auto try_add_bigram = [&](int left, int right) {
    if (left == -1 || right == -1) return;
    const size_t length = symbols[left].length_bytes + symbols[right].length_bytes;
    const int32_t id = vocab_->find(std::string_view(text).substr(symbols[left].begin, length));
    if (id == kNoToken) return;
    queue.push(Bigram{vocab_->score(id), left, right, length});
  };
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) try_add_bigram(i - 1, i);

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.length_bytes == 0 || right.length_bytes == 0 ||
        left.length_bytes + right.length_bytes != bigram.length_bytes) {
      continue;  // one side has changed since this pair was queued
    }
    left.length_bytes += right.length_bytes;
    right.length_bytes = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add_bigram(left.prev, bigram.left);
    try_add_bigram(bigram.left, left.next);
  }

  // Every merged piece is a token (pairs are only queued when they are); single characters
  // that are not fall back to their bytes.
  for (int i = 0; i != -1; i = symbols[i].next) {
    const std::string_view piece = std::string_view(text).substr(symbols[i].begin,
                                                                 symbols[i].length_bytes);
    const int32_t id = vocab_->find(piece);
    if (id != kNoToken) {
      ids->push_back(id);
      continue;
    }
    for (char c : piece) {
      const int32_t byte_id = byte_token_ids_[static_cast<uint8_t>(c)];
      if (byte_id != kNoToken) ids->push_back(byte_id);
    }
  }
}

}  // namespace strata
