// strata detokenize -m MODEL IDS: the text of token ids given as "1,15043,3186", "1 15043 3186"
// or llama.cpp's "[1, 15043, 3186]", decoded as llama.cpp's detokenize does (special tokens
// written as their text). An id that is not a number or not in the vocabulary is an error.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "offload/cli/command.h"
#include "offload/formats/gguf_file.h"
#include "offload/tokenizer/tokenizer.h"

namespace strata::cli {
namespace {

struct DetokenizeArgs {
  std::string model_path;
  std::vector<std::string> id_words;  // the IDS argument(s), joined with spaces
};

// Parses ids separated by commas and/or whitespace; brackets are ignored.
StatusOr<std::vector<int32_t>> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  const auto is_separator = [](char c) {
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '[' || c == ']';
  };
  while (pos < text.size()) {
    if (is_separator(text[pos])) {
      ++pos;
      continue;
    }
    size_t end = pos;
    while (end < text.size() && !is_separator(text[end])) ++end;
    const std::string word = text.substr(pos, end - pos);
    char* parse_end = nullptr;
    errno = 0;
    const long long value = std::strtoll(word.c_str(), &parse_end, 10);
    if (parse_end != word.c_str() + word.size() || errno == ERANGE ||
        value < std::numeric_limits<int32_t>::min() ||
        value > std::numeric_limits<int32_t>::max()) {
      return Status::invalid_argument("detokenize: '" + word + "' is not a token id");
    }
    ids.push_back(static_cast<int32_t>(value));
    pos = end;
  }
  return ids;
}

int run_detokenize(const DetokenizeArgs& args) {
  std::string joined;
  for (const std::string& word : args.id_words) joined += word + " ";
  StatusOr<std::vector<int32_t>> ids = parse_ids(joined);
  if (!ids.is_ok()) return report_error(ids.status().message());

  StatusOr<GgufFile> file = GgufFile::open(args.model_path);
  if (!file.is_ok()) return report_error(file.status().message());
  StatusOr<Tokenizer> tokenizer = Tokenizer::from_gguf(*file);
  if (!tokenizer.is_ok()) return report_error(tokenizer.status().message());
  if (Status s = tokenizer->check_ids(*ids); !s.is_ok()) {
    return report_error("detokenize: " + s.message());
  }
  const std::string text = tokenizer->decode(*ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace

void add_detokenize_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("detokenize", "Print the text of token ids");
  auto args = std::make_shared<DetokenizeArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF file with tokenizer metadata")->required();
  cmd->add_option("ids", args->id_words, "Token ids, separated by commas or spaces")->required();
  cmd->callback([=] { *exit_code = run_detokenize(*args); });
}

}  // namespace strata::cli
