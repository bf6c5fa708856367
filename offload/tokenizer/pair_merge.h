// The merge loop that BPE and SentencePiece share: split a text into UTF-8 characters, then
// merge the best adjacent pair again and again until no pair may merge. Only the pair priority
// differs (BPE: lowest merge rank; SPM: highest token score), so callers pass it in; what the
// final pieces become (token ids, byte fallback) is also the caller's business.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <queue>
#include <string_view>
#include <type_traits>
#include <vector>

#include "offload/tokenizer/utf8.h"

namespace strata {

// Merges the characters of `text` pairwise, the pair with the highest priority first and, on
// equal priorities, the leftmost pair; then calls `on_piece(piece)` for each final piece in text
// order. `pair_priority(left, right, merged)` returns std::optional<P> (P compared with < and ==):
// nullopt
// when the pair may not merge; `merged` is the text of `left` followed by `right`.
template <class PairPriority, class OnPiece>
void merge_pairs(std::string_view text, PairPriority pair_priority, OnPiece on_piece) {
  if (text.empty()) return;
  using Priority = typename std::invoke_result_t<PairPriority, std::string_view, std::string_view,
                                                 std::string_view>::value_type;

  // One piece of the text; pieces form a linked list in text order. A piece that was merged
  // into its left neighbour keeps length_bytes == 0.
  struct Symbol {
    size_t begin = 0;
    size_t length_bytes = 0;
    int prev = -1;
    int next = -1;
  };
  struct Bigram {
    Priority priority;
    int left;
    int right;
    size_t length_bytes;  // of the merged text; a mismatch later means the bigram is stale
  };
  // Highest priority first; on equal priorities the leftmost pair.
  struct LowerPriority {
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
    }
  };

  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    Symbol s;
    s.begin = pos;
    s.length_bytes =
        std::min(utf8_sequence_length(static_cast<uint8_t>(text[pos])), text.size() - pos);
    pos += s.length_bytes;
    s.prev = static_cast<int>(symbols.size()) - 1;
    s.next = pos == text.size() ? -1 : static_cast<int>(symbols.size()) + 1;
    symbols.push_back(s);
  }
  const auto text_of = [&](const Symbol& s) { return text.substr(s.begin, s.length_bytes); };

  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  const auto add_bigram = [&](int left, int right) {
    if (left == -1 || right == -1) return;
    const size_t length = symbols[left].length_bytes + symbols[right].length_bytes;
    const std::optional<Priority> priority = pair_priority(
        text_of(symbols[left]), text_of(symbols[right]), text.substr(symbols[left].begin, length));
    if (!priority) return;
    queue.push(Bigram{*priority, left, right, length});
  };
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) add_bigram(i - 1, i);

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    // Both sides only ever grow, and `right` starts where `left` ends while both live, so equal
    // lengths mean the pair still spells the text it was queued with.
    if (left.length_bytes == 0 || right.length_bytes == 0 ||
        left.length_bytes + right.length_bytes != bigram.length_bytes) {
      continue;
    }
    left.length_bytes += right.length_bytes;
    right.length_bytes = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    add_bigram(left.prev, bigram.left);
    add_bigram(bigram.left, left.next);
  }

  for (int i = 0; i != -1; i = symbols[i].next) on_piece(text_of(symbols[i]));
}

}  // namespace strata
