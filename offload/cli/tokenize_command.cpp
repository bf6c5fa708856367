// strata tokenize -m MODEL [--raw] [--file F] [TEXT]: the token ids of a text, comma-separated
// on one line ("1,15043,3186"), with the tokenizer stored in the model's GGUF file.
// By default BOS/EOS are added as the model asks and special-token texts such as
// "<|im_start|>" become their ids (what a chat prompt needs); --raw turns both off, which is
// what llama.cpp's tokenizer test vectors assume.
#include <cstdio>
#include <memory>
#include <string>

#include "offload/cli/command.h"
#include "offload/formats/gguf_file.h"
#include "offload/formats/mapped_file.h"
#include "offload/tokenizer/tokenizer.h"

namespace strata::cli {
namespace {

struct TokenizeArgs {
  std::string model_path;
  std::string text;
  std::string text_file;
  bool raw = false;
};

int run_tokenize(const TokenizeArgs& args, bool have_text) {
  if (have_text && !args.text_file.empty()) {
    return report_error("tokenize: give the text as an argument or with --file, not both");
  }
  if (!have_text && args.text_file.empty()) {
    return report_error("tokenize: no text: give it as an argument or with --file");
  }
  std::string text = args.text;
  if (!args.text_file.empty()) {
    StatusOr<std::string> bytes = read_text_file(args.text_file);
    if (!bytes.is_ok()) return report_error(bytes.status().message());
    text = std::move(bytes).value();
  }
  StatusOr<GgufFile> file = GgufFile::open(args.model_path);
  if (!file.is_ok()) return report_error(file.status().message());
  StatusOr<Tokenizer> tokenizer = Tokenizer::from_gguf(*file);
  if (!tokenizer.is_ok()) return report_error(tokenizer.status().message());

  const bool special = !args.raw;
  const std::vector<int32_t> ids = tokenizer->encode(text, special, special);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) line += ',';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text (comma-separated)");
  auto args = std::make_shared<TokenizeArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF file with tokenizer metadata")->required();
  cmd->add_flag("--raw", args->raw, "Add no BOS/EOS and encode special-token texts as plain text");
  cmd->add_option("--file", args->text_file, "Read the text from this file, byte for byte");
  auto* text_option = cmd->add_option("text", args->text, "The text to tokenize");
  cmd->callback([=] { *exit_code = run_tokenize(*args, text_option->count() > 0); });
}

}  // namespace strata::cli
