#include "offload/tokenizer/tokenizer.h"

#include "offload/tokenizer/bpe_encoder.h"
#include "offload/tokenizer/byte_level.h"
#include "offload/tokenizer/special_token_splitter.h"
#include "offload/tokenizer/spm_encoder.h"

namespace strata {
namespace {

std::string replace_space_markers(std::string_view text) {
  constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    if (text.substr(pos, kSpaceMarker.size()) == kSpaceMarker) {
      out.push_back(' ');
      pos += kSpaceMarker.size();
    } else {
      out.push_back(text[pos++]);
    }
  }
  return out;
}

int hex_digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// What llama.cpp's token_to_piece(special = true) gives for `id`.
std::string render_piece(const Vocab& vocab, int32_t id) {
  const std::string& text = vocab.text(id);
  switch (vocab.kind(id)) {
    case TokenKind::kControl:
    case TokenKind::kUnknown:
    case TokenKind::kUserDefined:
      return text;
    case TokenKind::kNormal:
      return vocab.type() == VocabType::kSentencePiece ? replace_space_markers(text)
                                                       : byte_level_decode(text);
    case TokenKind::kByte:
      // SentencePiece "<0xXX>"; byte-level BPE has no byte tokens of this kind.
      if (vocab.type() == VocabType::kSentencePiece && text.size() == 6 &&
          text.compare(0, 3, "<0x") == 0 && text[5] == '>') {
        const int high = hex_digit_value(text[3]);
        const int low = hex_digit_value(text[4]);
        if (high >= 0 && low >= 0) return std::string(1, static_cast<char>(high * 16 + low));
      }
      return "";
    case TokenKind::kUndefined:
    case TokenKind::kUnused:
      return "";
  }
  return "";
}

// llama.cpp's clean-up passes for BPE families with clean_spaces (in place, same order):
// " ?" " !" " ." " ," lose the space; " ' " becomes "'"; " 's" " 'm" " 're" " 've" lose it.
void clean_up_spaces(std::string* text) {
  std::string& t = *text;
  size_t total = t.size();

  size_t out = total ? 1 : 0;
  for (size_t i = 1; i < total; ++i) {
    const char x = t[i];
    if (t[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --out;
    t[out++] = x;
  }
  total = out;

  out = total ? 1 : 0;
  for (size_t i = 1; i < total; ++i) {
    const char x = t[i];
    if (x == '\'' && i + 1 < total && t[i - 1] == ' ' && t[i + 1] == ' ') {
      --out;          // drop the space before
      t[++i] = '\0';  // and the one after (llama.cpp marks it, then skips it)
    }
    t[out++] = x;
  }
  total = out;

  out = total ? 1 : 0;
  for (size_t i = 1; i < total; ++i) {
    const char x = t[i];
    if (t[i - 1] == ' ' && x == '\'' && i + 1 < total) {
      const char x1 = t[i + 1];
      if (x1 == 's' || x1 == 'm') {
        --out;
      } else if (i + 2 < total) {
        const char x2 = t[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --out;
      }
    }
    t[out++] = x;
  }
  t.resize(out);
}

}  // namespace

StatusOr<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  STRATA_ASSIGN_OR_RETURN(TokenizerMetadata metadata, read_tokenizer_metadata(file));
  StatusOr<Tokenizer> tokenizer = from_metadata(std::move(metadata));
  if (!tokenizer.is_ok()) {
    return Status(tokenizer.status().code(), file.path() + ": " + tokenizer.status().message());
  }
  return tokenizer;
}

StatusOr<Tokenizer> Tokenizer::from_metadata(TokenizerMetadata metadata) {
  const std::vector<std::string> merges = std::move(metadata.merges);
  STRATA_ASSIGN_OR_RETURN(Vocab built, Vocab::build(std::move(metadata)));
  auto vocab = std::make_shared<const Vocab>(std::move(built));

  std::shared_ptr<const FragmentEncoder> encoder;
  if (vocab->type() == VocabType::kSentencePiece) {
    encoder = std::make_shared<const SpmEncoder>(vocab);
  } else {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<BpeEncoder> bpe, BpeEncoder::create(vocab, merges));
    encoder = std::move(bpe);
  }

  auto pieces = std::make_shared<std::vector<std::string>>();
  pieces->reserve(vocab->size());
  for (int32_t id = 0; id < vocab->size(); ++id) pieces->push_back(render_piece(*vocab, id));
  return Tokenizer(std::move(vocab), std::move(encoder), std::move(pieces));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_special && vocab_->add_bos()) ids.push_back(vocab_->bos_id());

  // SentencePiece puts a space in front of the text and after every special token.
  const bool sentence_piece = vocab_->type() == VocabType::kSentencePiece;
  bool after_special = true;
  std::string prefixed;
  for (const TextFragment& fragment : split_special_tokens(*vocab_, text, parse_special)) {
    if (fragment.is_token()) {
      ids.push_back(fragment.token);
      after_special = true;
      continue;
    }
    std::string_view plain = text.substr(fragment.offset, fragment.length);
    if (sentence_piece && vocab_->add_space_prefix() && after_special) {
      prefixed.assign(1, ' ');
      prefixed.append(plain);
      plain = prefixed;
    }
    encoder_->encode(plain, &ids);
    after_special = false;
  }

  if (add_special && vocab_->add_eos()) ids.push_back(vocab_->eos_id());
  return ids;
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
  if (!vocab_->contains(id)) return "";
  if (!render_special) {
    const TokenKind kind = vocab_->kind(id);
    if (kind == TokenKind::kControl || kind == TokenKind::kUnknown) return "";
  }
  return (*pieces_)[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& options) const {
  bool strip_leading_space = vocab_->add_space_prefix();
  if (options.remove_special && vocab_->add_bos() && !ids.empty() &&
      ids.front() == vocab_->bos_id()) {
    strip_leading_space = false;
    ids = ids.subspan(1);
  }
  if (options.remove_special && vocab_->add_eos() && !ids.empty() &&
      ids.back() == vocab_->eos_id()) {
    ids = ids.first(ids.size() - 1);
  }

  std::string text;
  for (const int32_t id : ids) {
    const std::string piece = token_to_piece(id, options.render_special);
    // Only the first token loses its leading space, even when it rendered as nothing.
    const size_t skip = strip_leading_space && !piece.empty() && piece.front() == ' ' ? 1 : 0;
    strip_leading_space = false;
    text.append(piece, skip);
  }
  if (vocab_->clean_spaces()) clean_up_spaces(&text);
  return text;
}

Status Tokenizer::check_ids(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!vocab_->contains(ids[i])) {
      return Status::invalid_argument("token id " + std::to_string(ids[i]) + " (at position " +
                                      std::to_string(i) + ") is out of range: the vocabulary has " +
                                      std::to_string(vocab_->size()) + " tokens (0.." +
                                      std::to_string(vocab_->size() - 1) + ")");
    }
  }
  return Status::ok();
}

}  // namespace strata
