#include "offload/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>
#include <utility>

namespace strata {

// The patterns. `\s` is written as [\s\x{85}] and `\S` as [^\s\x{85}] because llama.cpp's
// whitespace set (Unicode White_Space) includes U+0085, which PCRE2's \s leaves out.
namespace {

// "(?i:'s|'t|'re|'ve|'m|'ll|'d)" spelled without the inline flag, as llama.cpp does.
#define STRATA_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define STRATA_GPT2_PATTERN                                                  \
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\x{85}\\p{L}\\p{N}]+" \
  "|[\\s\\x{85}]+(?![^\\s\\x{85}])"

constexpr const char* kLlama3Pattern = STRATA_CONTRACTIONS
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\x{85}\\p{L}\\p{N}]+[\\r\\n]*"
    "|[\\s\\x{85}]*[\\r\\n]+|[\\s\\x{85}]+(?![^\\s\\x{85}])|[\\s\\x{85}]+";

constexpr const char* kQwen2Pattern = STRATA_CONTRACTIONS
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\x{85}\\p{L}\\p{N}]+[\\r\\n]*"
    "|[\\s\\x{85}]*[\\r\\n]+|[\\s\\x{85}]+(?![^\\s\\x{85}])|[\\s\\x{85}]+";

constexpr const char* kGpt2Pattern = STRATA_GPT2_PATTERN;

std::vector<const char*> patterns_for(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::kLlama3:
      return {kLlama3Pattern};
    case PreTokenizerKind::kQwen2:
      return {kQwen2Pattern};
    case PreTokenizerKind::kGpt2:
      return {kGpt2Pattern};
    case PreTokenizerKind::kDefault:
      return {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2Pattern, "\\p{N}+", "[0-9][0-9][0-9]"};
  }
  return {};
}

#undef STRATA_GPT2_PATTERN
#undef STRATA_CONTRACTIONS

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

}  // namespace

struct PreTokenizer::CompiledPattern {
  pcre2_code* code = nullptr;
  CompiledPattern() = default;
  CompiledPattern(const CompiledPattern&) = delete;
  CompiledPattern& operator=(const CompiledPattern&) = delete;
  ~CompiledPattern() { pcre2_code_free(code); }
};

const char* pre_tokenizer_kind_name(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::kDefault:
      return "default";
    case PreTokenizerKind::kGpt2:
      return "gpt-2";
    case PreTokenizerKind::kLlama3:
      return "llama3";
    case PreTokenizerKind::kQwen2:
      return "qwen2";
  }
  return "?";
}

StatusOr<PreTokenizer> PreTokenizer::create(PreTokenizerKind kind) {
  std::vector<std::shared_ptr<const CompiledPattern>> compiled;
  for (const char* pattern : patterns_for(kind)) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    auto entry = std::make_shared<CompiledPattern>();
    entry->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                                &error_offset, nullptr);
    if (entry->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return Status::internal(std::string("pre-tokenizer '") + pre_tokenizer_kind_name(kind) +
                              "': PCRE2 rejected its pattern at offset " +
                              std::to_string(error_offset) + ": " +
                              reinterpret_cast<const char*>(message));
    }
    // JIT is an optimisation only: when it is unavailable pcre2_match interprets.
    (void)pcre2_jit_compile(entry->code, PCRE2_JIT_COMPLETE);
    compiled.push_back(std::move(entry));
  }
  return PreTokenizer(kind, std::move(compiled));
}

namespace {

// Appends the pieces of `piece` under one pattern: matches and the gaps between them.
void split_piece(const pcre2_code* code, pcre2_match_data* match_data, std::string_view piece,
                 std::vector<std::string_view>* out) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t emitted_to = 0;  // bytes of `piece` already handed out
  size_t search_from = 0;
  while (search_from < piece.size()) {
    int rc = pcre2_match(code, subject, piece.size(), search_from, 0, match_data, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // e.g. a JIT stack limit on a pathological input: retry without JIT.
      rc = pcre2_match(code, subject, piece.size(), search_from, PCRE2_NO_JIT, match_data, nullptr);
    }
    if (rc < 0) break;  // no further match (or an error): the rest is one gap
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end <= begin) {  // an empty match: step over one byte and look again
      search_from = begin + 1;
      continue;
    }
    if (begin > emitted_to) out->push_back(piece.substr(emitted_to, begin - emitted_to));
    out->push_back(piece.substr(begin, end - begin));
    emitted_to = end;
    search_from = end;
  }
  if (emitted_to < piece.size()) out->push_back(piece.substr(emitted_to));
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>* pieces) const {
  pieces->clear();
  if (text.empty()) return;
  pieces->push_back(text);
  MatchData match_data(pcre2_match_data_create(1, nullptr));
  if (match_data == nullptr) return;  // out of memory: the whole text stays one piece
  std::vector<std::string_view> next;
  for (const auto& pattern : patterns_) {
    next.clear();
    next.reserve(pieces->size() * 2);
    for (std::string_view piece : *pieces)
      split_piece(pattern->code, match_data.get(), piece, &next);
    pieces->swap(next);
  }
}

}  // namespace strata
