#include "offload/tokenizer/vocab.h"

#include <algorithm>
#include <array>
#include <limits>

namespace strata {
namespace {

// How a byte-level BPE family is set up (llama.cpp's table, for the families we support).
struct PreTokenizerFamily {
  const char* name;
  PreTokenizerKind kind;
  bool ignore_merges = false;
  bool add_bos = false;  // default for tokenizer.ggml.add_bos_token
  bool clean_spaces = true;
};

constexpr PreTokenizerFamily kFamilies[] = {
    {"default", PreTokenizerKind::kDefault},
    {"llama3", PreTokenizerKind::kLlama3, true, true},
    {"llama-v3", PreTokenizerKind::kLlama3, true, true},
    {"llama-bpe", PreTokenizerKind::kLlama3, true, true},
    {"falcon3", PreTokenizerKind::kLlama3, true, true},
    {"falcon-h1", PreTokenizerKind::kLlama3, true, true},
    {"pixtral", PreTokenizerKind::kLlama3, true, true},
    {"midm-2.0", PreTokenizerKind::kLlama3, true, true},
    {"lfm2", PreTokenizerKind::kLlama3, true, true},
    {"dbrx", PreTokenizerKind::kLlama3},
    {"smaug-bpe", PreTokenizerKind::kLlama3},
    {"qwen2", PreTokenizerKind::kQwen2, false, false, false},
    {"deepseek-r1-qwen", PreTokenizerKind::kQwen2, false, false, false},
    {"kormo", PreTokenizerKind::kQwen2, false, false, false},
    {"megrez", PreTokenizerKind::kQwen2},
    {"stablelm2", PreTokenizerKind::kQwen2},
    {"gpt-2", PreTokenizerKind::kGpt2},
    {"phi-2", PreTokenizerKind::kGpt2},
    {"mpt", PreTokenizerKind::kGpt2},
    {"olmo", PreTokenizerKind::kGpt2},
    {"jais", PreTokenizerKind::kGpt2},
};

std::string supported_pre_names() {
  std::string names;
  for (const auto& f : kFamilies) names += (names.empty() ? "" : ", ") + std::string(f.name);
  return names;
}

// Texts that llama.cpp recognises as end-of-turn / end-of-generation tokens when the file
// does not name them. The first present one becomes the EOT id.
constexpr std::array<std::string_view, 10> kEndOfTurnTexts = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<\xEF\xBD\x9C"
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
    "<end_of_utterance>"};
constexpr std::array<std::string_view, 12> kEndOfGenerationTexts = {
    "<|eot_id|>", "<|im_end|>",    "<|end|>",         "<|return|>",
    "<|call|>",   "<end_of_turn>", "<|endoftext|>",   "<|eom_id|>",
    "<EOT>",      "_<EOT>",        "<|end_of_text|>", "<end_of_utterance>"};
// Fill-in-the-middle pad / repo / file-separator tokens also end a generation.
constexpr std::array<std::string_view, 10> kFimEndTexts = {
    "<|fim_pad|>",   "<fim-pad>",  "<fim_pad>", "<PAD>",      "<|fim_repo|>",
    "<|repo_name|>", "<fim-repo>", "<REPO>",    "<reponame>", "<|file_sep|>"};

}  // namespace

class VocabBuilder {
 public:
  explicit VocabBuilder(TokenizerMetadata m) : m_(std::move(m)) {}

  StatusOr<Vocab> build() {
    STRATA_RETURN_IF_ERROR(choose_model());
    STRATA_RETURN_IF_ERROR(read_tokens());
    STRATA_RETURN_IF_ERROR(read_special_ids());
    find_end_of_generation_tokens();
    STRATA_RETURN_IF_ERROR(check_flags());
    collect_special_tokens();
    return std::move(v_);
  }

 private:
  Status choose_model() {
    if (m_.model == "llama") {
      v_.type_ = VocabType::kSentencePiece;
      v_.bos_id_ = 1;
      v_.eos_id_ = 2;
      v_.unknown_id_ = 0;
      v_.add_space_prefix_ = true;
      v_.add_bos_ = true;
    } else if (m_.model == "gpt2") {
      v_.type_ = VocabType::kByteLevelBpe;
      v_.bos_id_ = 11;
      v_.eos_id_ = 11;
      v_.clean_spaces_ = true;
      const std::string pre = m_.pre.value_or("default");
      const PreTokenizerFamily* family = nullptr;
      for (const auto& f : kFamilies) {
        if (pre == f.name) family = &f;
      }
      if (family == nullptr) {
        return Status::unsupported(
            "tokenizer.ggml.pre '" + pre +
            "' is not a supported pre-tokenizer (supported: " + supported_pre_names() + ")");
      }
      v_.pre_tokenizer_ = family->kind;
      v_.ignore_merges_ = family->ignore_merges;
      v_.add_bos_ = family->add_bos;
      v_.clean_spaces_ = family->clean_spaces;
    } else {
      return Status::unsupported("tokenizer.ggml.model '" + m_.model +
                                 "' is not supported (supported: llama, gpt2)");
    }
    if (m_.add_space_prefix.has_value()) v_.add_space_prefix_ = *m_.add_space_prefix;
    if (m_.add_bos.has_value()) v_.add_bos_ = *m_.add_bos;
    if (m_.add_eos.has_value()) v_.add_eos_ = *m_.add_eos;
    return Status::ok();
  }

  Status read_tokens() {
    const size_t n = m_.tokens.size();
    if (n == 0) return Status::invalid_data("tokenizer.ggml.tokens is empty");
    if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return Status::invalid_data("tokenizer.ggml.tokens has " + std::to_string(n) +
                                  " entries, more than token ids (int32) can address");
    }
    const auto count_mismatch = [n](const char* key, size_t got) {
      return Status::invalid_data(std::string(key) + " has " + std::to_string(got) +
                                  " entries but tokenizer.ggml.tokens has " + std::to_string(n));
    };
    if (!m_.scores.empty() && m_.scores.size() != n) {
      return count_mismatch("tokenizer.ggml.scores", m_.scores.size());
    }
    if (!m_.token_types.empty() && m_.token_types.size() != n) {
      return count_mismatch("tokenizer.ggml.token_type", m_.token_types.size());
    }
    v_.texts_ = std::move(m_.tokens);
    v_.scores_ = m_.scores.empty() ? std::vector<float>(n, 0.0f) : std::move(m_.scores);
    v_.kinds_.assign(n, TokenKind::kNormal);
    v_.ids_by_text_.reserve(n);
    for (size_t id = 0; id < n; ++id) {
      if (!m_.token_types.empty()) {
        const int64_t type = m_.token_types[id];
        if (type < 0 || type > 6) {
          return Status::invalid_data("tokenizer.ggml.token_type[" + std::to_string(id) + "] = " +
                                      std::to_string(type) + " is not a token type (0..6)");
        }
        v_.kinds_[id] = static_cast<TokenKind>(type);
      }
      // As llama.cpp: an empty text would match everywhere, so it gets a placeholder.
      if (v_.texts_[id].empty()) v_.texts_[id] = "[EMPTY_" + std::to_string(id) + "]";
      v_.ids_by_text_[v_.texts_[id]] = static_cast<int32_t>(id);  // the last duplicate wins
    }
    return Status::ok();
  }

  // A special id from the file must name a token; -1 (or its uint32 spelling) means "none".
  Status read_id(const char* key, const std::optional<int64_t>& value, int32_t* id) {
    if (!value.has_value()) {
      if (!v_.contains(*id)) *id = kNoToken;  // a model default that this vocabulary lacks
      return Status::ok();
    }
    if (*value == -1 || *value == 0xFFFFFFFFLL) {
      *id = kNoToken;
      return Status::ok();
    }
    if (!v_.contains(*value)) {
      return Status::invalid_data(std::string(key) + " = " + std::to_string(*value) +
                                  " is out of range for a vocabulary of " +
                                  std::to_string(v_.size()) + " tokens");
    }
    *id = static_cast<int32_t>(*value);
    return Status::ok();
  }

  Status read_special_ids() {
    STRATA_RETURN_IF_ERROR(read_id("tokenizer.ggml.bos_token_id", m_.bos_id, &v_.bos_id_));
    STRATA_RETURN_IF_ERROR(read_id("tokenizer.ggml.eos_token_id", m_.eos_id, &v_.eos_id_));
    STRATA_RETURN_IF_ERROR(read_id("tokenizer.ggml.eot_token_id", m_.eot_id, &v_.eot_id_));
    STRATA_RETURN_IF_ERROR(read_id("tokenizer.ggml.eom_token_id", m_.eom_id, &v_.eom_id_));
    STRATA_RETURN_IF_ERROR(
        read_id("tokenizer.ggml.unknown_token_id", m_.unknown_id, &v_.unknown_id_));
    STRATA_RETURN_IF_ERROR(
        read_id("tokenizer.ggml.seperator_token_id", m_.separator_id, &v_.separator_id_));
    STRATA_RETURN_IF_ERROR(
        read_id("tokenizer.ggml.padding_token_id", m_.padding_id, &v_.padding_id_));
    STRATA_RETURN_IF_ERROR(read_id("tokenizer.ggml.mask_token_id", m_.mask_id, &v_.mask_id_));
    return Status::ok();
  }

  // Tokens found by text are made control tokens (as llama.cpp does), so that they are only
  // cut out of text when special tokens are parsed, and render only when asked to.
  int32_t mark_control(std::string_view text) {
    const int32_t id = v_.find(text);
    if (id != kNoToken) v_.kinds_[id] = TokenKind::kControl;
    return id;
  }

  void find_end_of_generation_tokens() {
    if (v_.eot_id_ == kNoToken) {
      for (std::string_view text : kEndOfTurnTexts) {
        if (v_.find(text) != kNoToken) {
          v_.eot_id_ = mark_control(text);
          break;
        }
      }
    }
    if (v_.eom_id_ == kNoToken) v_.eom_id_ = mark_control("<|eom_id|>");
    std::vector<int32_t>& eog = v_.end_of_generation_ids_;
    for (std::string_view text : kEndOfGenerationTexts) {
      if (int32_t id = mark_control(text); id != kNoToken) eog.push_back(id);
    }
    for (std::string_view text : kFimEndTexts) {
      if (int32_t id = mark_control(text); id != kNoToken) eog.push_back(id);
    }
    for (int32_t id : {v_.eos_id_, v_.eot_id_, v_.eom_id_}) {
      if (id != kNoToken) eog.push_back(id);
    }
    std::sort(eog.begin(), eog.end());
    eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
  }

  Status check_flags() const {
    if (v_.add_bos_ && v_.bos_id_ == kNoToken) {
      return Status::invalid_data(
          "the tokenizer adds a BOS token (tokenizer.ggml.add_bos_token) but has none "
          "(tokenizer.ggml.bos_token_id)");
    }
    if (v_.add_eos_ && v_.eos_id_ == kNoToken) {
      return Status::invalid_data(
          "the tokenizer adds an EOS token (tokenizer.ggml.add_eos_token) but has none "
          "(tokenizer.ggml.eos_token_id)");
    }
    return Status::ok();
  }

  void collect_special_tokens() {
    for (int32_t id = 0; id < static_cast<int32_t>(v_.size()); ++id) {
      const TokenKind k = v_.kinds_[id];
      if (k == TokenKind::kControl || k == TokenKind::kUserDefined || k == TokenKind::kUnknown) {
        v_.special_tokens_.push_back(id);
      }
    }
    std::stable_sort(
        v_.special_tokens_.begin(), v_.special_tokens_.end(),
        [this](int32_t a, int32_t b) { return v_.texts_[a].size() > v_.texts_[b].size(); });
  }

  TokenizerMetadata m_;
  Vocab v_;
};

StatusOr<Vocab> Vocab::build(TokenizerMetadata metadata) {
  return VocabBuilder(std::move(metadata)).build();
}

bool Vocab::is_end_of_generation(int32_t id) const {
  return id != kNoToken &&
         std::binary_search(end_of_generation_ids_.begin(), end_of_generation_ids_.end(), id);
}

}  // namespace strata
