#include "offload/tokenizer/bpe_encoder.h"

#include <cstring>
#include <optional>

#include "offload/tokenizer/byte_level.h"
#include "offload/tokenizer/pair_merge.h"
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

  // Lowest merge rank first.
  const auto pair_priority = [&](std::string_view left, std::string_view right,
                                 std::string_view /*merged*/) -> std::optional<int32_t> {
    const int32_t rank = merge_rank(left, right, scratch);
    if (rank < 0) return std::nullopt;
    return -rank;
  };
  merge_pairs(word, pair_priority, [&](std::string_view piece) {
    const int32_t id = vocab_->find(piece);
    if (id != kNoToken) {
      ids->push_back(id);
      return;
    }
    for (char c : piece) {
      const int32_t byte_id = vocab_->find(std::string_view(&c, 1));
      if (byte_id != kNoToken) ids->push_back(byte_id);
    }
  });
}

}  // namespace strata
