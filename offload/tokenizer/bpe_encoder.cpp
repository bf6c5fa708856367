#include "offload/tokenizer/bpe_encoder.h"

#include <cstring>
#include <queue>

#include "offload/tokenizer/byte_level.h"
#include "offload/tokenizer/utf8.h"

namespace strata {
namespace {

void make_merge_key(std::string_view left, std::string_view right, std::string* key) {
  const auto left_size = static_cast<uint32_t>(left.size());
  key->resize(sizeof(left_size));
  std::memcpy(key->data(), &left_size, sizeof(left_size));
  key->append(left);
  key->append(right);
}

// One piece of the word being merged; pieces form a linked list in word order. A piece that
// was merged into its left neighbour keeps length_bytes == 0.
struct Symbol {
  size_t begin = 0;
  size_t length_bytes = 0;
  int prev = -1;
  int next = -1;
};

struct Bigram {
  int32_t rank;
  int left;
  int right;
  size_t length_bytes;  // of the merged text; a mismatch later means the bigram is stale
};

// Lowest rank first; on equal ranks the leftmost pair.
struct LowerPriority {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

}  // namespace

StatusOr<std::unique_ptr<BpeEncoder>> BpeEncoder::create(std::shared_ptr<const Vocab> vocab,
                                                         const std::vector<std::string>& merges) {
  if (merges.empty()) {
    return Status::invalid_data(
        "tokenizer.ggml.merges is missing or empty; a byte-level BPE tokenizer ('gpt2') needs it");
  }
  STRATA_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::create(vocab->pre_tokenizer()));
  std::unique_ptr<BpeEncoder> encoder(new BpeEncoder(std::move(vocab), std::move(pre)));
  encoder->merge_ranks_.reserve(merges.size());
  std::string key;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& merge = merges[rank];
    const size_t space = merge.find(' ', 1);
    if (space == std::string::npos) {
      return Status::invalid_data("tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" +
                                  merge + "' is not two texts separated by a space");
    }
    make_merge_key(std::string_view(merge).substr(0, space),
                   std::string_view(merge).substr(space + 1), &key);
    encoder->merge_ranks_.emplace(key, static_cast<int32_t>(rank));  // first one wins
  }
  return encoder;
}

int32_t BpeEncoder::merge_rank(std::string_view left, std::string_view right,
                               std::string* scratch) const {
  make_merge_key(left, right, scratch);
  auto it = merge_ranks_.find(std::string_view(*scratch));
  return it == merge_ranks_.end() ? -1 : it->second;
}

void BpeEncoder::encode(std::string_view text, std::vector<int32_t>* ids) const {
  const std::string clean = sanitize_utf8(text);
  std::vector<std::string_view> pieces;
  pre_tokenizer_.split(clean, &pieces);
  std::string word;
  std::string scratch;
  for (std::string_view piece : pieces) {
    word.clear();
    byte_level_encode(piece, &word);
    encode_word(word, &scratch, ids);
  }
}

void BpeEncoder::encode_word(std::string_view word, std::string* scratch,
                             std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (vocab_->ignore_merges()) {
    if (const int32_t id = vocab_->find(word); id != kNoToken) {
      ids->push_back(id);
      return;
    }
  }

  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t pos = 0; pos < word.size();) {
    Symbol s;
    s.begin = pos;
    s.length_bytes = std::min(utf8_sequence_length(static_cast<uint8_t>(word[pos])),
                              word.size() - pos);
    pos += s.length_bytes;
    s.prev = static_cast<int>(symbols.size()) - 1;
    s.next = pos == word.size() ? -1 : static_cast<int>(symbols.size()) + 1;
    symbols.push_back(s);
  }
  const auto text_of = [&](const Symbol& s) { return word.substr(s.begin, s.length_bytes); };

  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  const auto add_bigram = [&](int left, int right) {
    if (left == -1 || right == -1) return;
    const int32_t rank = merge_rank(text_of(symbols[left]), text_of(symbols[right]), scratch);
    if (rank < 0) return;
    queue.push(Bigram{rank, left, right,
                      symbols[left].length_bytes + symbols[right].length_bytes});
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

  for (int i = 0; i != -1; i = symbols[i].next) {
    const std::string_view piece = text_of(symbols[i]);
    const int32_t id = vocab_->find(piece);
    if (id != kNoToken) {
      ids->push_back(id);
      continue;
    }
    for (char c : piece) {
      const int32_t byte_id = vocab_->find(std::string_view(&c, 1));
      if (byte_id != kNoToken) ids->push_back(byte_id);
    }
  }
}

}  // namespace strata
