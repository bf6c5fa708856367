// strata eval: run token ids (or a prompt) through the model and write the logits of every
// position as raw little-endian float32, [n_tokens][n_vocab] (llama_get_logits_ith's layout).
// The file is written to FILE.tmp and renamed, so a failure never leaves a partial file.
#include <cstdio>
#include <filesystem>

#include "offload/cli/command.h"
#include "offload/cli/model_runtime.h"

namespace strata::cli {
namespace {

struct EvalFlags {
  RuntimeFlags runtime;
  std::string ids;
  std::string prompt;
  std::string dump_logits;
};

Status write_floats(const std::string& path, const std::vector<float>& values) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return Status::io_error(path + ": cannot open for writing");
  const size_t written = std::fwrite(values.data(), sizeof(float), values.size(), f);
  const bool ok = written == values.size() && std::fclose(f) == 0;
  if (!ok) {
    std::remove(tmp.c_str());
    return Status::io_error(path + ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::io_error(path + ": rename failed: " + ec.message());
  return Status::ok();
}

Status eval(const EvalFlags& flags) {
  if (flags.ids.empty() == flags.prompt.empty()) {
    return Status::invalid_argument("give exactly one of --ids and -p");
  }
  STRATA_ASSIGN_OR_RETURN(ModelRuntime rt, ModelRuntime::load(flags.runtime));
  STRATA_ASSIGN_OR_RETURN(const std::vector<int32_t> ids,
                          rt.ids_or_prompt(flags.ids, flags.prompt));
  STRATA_RETURN_IF_ERROR(rt.exec->add_sequence(0));
  std::vector<float> logits;
  STRATA_RETURN_IF_ERROR(rt.exec->forward(0, ids, /*all_logits=*/true, &logits));
  if (!flags.dump_logits.empty()) STRATA_RETURN_IF_ERROR(write_floats(flags.dump_logits, logits));
  const int64_t n_vocab = rt.model->spec.hp.n_vocab;
  for (size_t i = 0; i < ids.size(); ++i) {
    const float* row = logits.data() + i * n_vocab;
    const int64_t best = std::max_element(row, row + n_vocab) - row;
    std::printf("%zu\t%d\t-> %lld (%.4f)\n", i, ids[i], static_cast<long long>(best), row[best]);
  }
  return Status::ok();
}

}  // namespace

void add_eval_command(CLI::App& app, int* exit_code) {
  auto* cmd =
      app.add_subcommand("eval", "Run token ids through the model; dump every position's logits");
  auto flags = std::make_shared<EvalFlags>();
  flags->runtime.add_to(cmd);
  cmd->add_option("--ids", flags->ids, "Comma-separated token ids");
  cmd->add_option("-p,--prompt", flags->prompt, "Prompt text (tokenized with BOS)");
  cmd->add_option("--dump-logits", flags->dump_logits,
                  "Write float32 logits [n_tokens][n_vocab] to this file");
  cmd->callback([flags, exit_code] {
    Status s = eval(*flags);
    *exit_code = s.is_ok() ? 0 : report_error(s.message());
  });
}

}  // namespace strata::cli
