// strata perplexity: perplexity of a text file as llama.cpp's perplexity tool computes it. The
// text is tokenized (with BOS), cut into chunks of --ctx tokens, each chunk starts with BOS and
// runs in a fresh sequence, and only the second half of each chunk is scored (each scored token
// has at least ctx/2 tokens of context). Prints the running estimate per chunk and the final
// PPL with its standard error.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "offload/cli/command.h"
#include "offload/cli/model_runtime.h"
#include "offload/formats/mapped_file.h"

namespace strata::cli {
namespace {

struct PerplexityFlags {
  RuntimeFlags runtime;
  std::string file;
  int64_t max_chunks = -1;
};

Status perplexity(PerplexityFlags flags) {
  if (flags.runtime.ctx == 0) flags.runtime.ctx = 512;  // llama.cpp's perplexity default
  STRATA_ASSIGN_OR_RETURN(std::string text, read_text_file(flags.file));
  STRATA_ASSIGN_OR_RETURN(ModelRuntime rt, ModelRuntime::load(flags.runtime));
  if (!rt.tokenizer)
    return Status::invalid_argument(flags.runtime.model_path + ": no GGUF tokenizer");
  const Tokenizer& tok = *rt.tokenizer;
  const std::vector<int32_t> tokens =
      tok.encode(text, /*add_special=*/true, /*parse_special=*/false);
  const int64_t n_ctx = flags.runtime.ctx;
  if (static_cast<int64_t>(tokens.size()) < 2 * n_ctx) {
    return Status::invalid_argument(flags.file + ": " + std::to_string(tokens.size()) +
                                    " tokens; perplexity with --ctx " + std::to_string(n_ctx) +
                                    " needs at least " + std::to_string(2 * n_ctx));
  }
  int64_t n_chunks = static_cast<int64_t>(tokens.size()) / n_ctx;
  if (flags.max_chunks > 0) n_chunks = std::min(n_chunks, flags.max_chunks);
  const int64_t n_vocab = rt.model->spec.hp.n_vocab;
  const int64_t first = n_ctx / 2;
  const bool add_bos = tok.bos_id() >= 0;
  std::fprintf(stderr, "perplexity: %zu tokens, %lld chunks of %lld, scoring the second half\n",
               tokens.size(), static_cast<long long>(n_chunks), static_cast<long long>(n_ctx));

  double nll_sum = 0, nll2_sum = 0;
  int64_t count = 0;
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (add_bos) chunk[0] = tok.bos_id();
    STRATA_RETURN_IF_ERROR(rt.exec->add_sequence(c));
    STRATA_RETURN_IF_ERROR(rt.exec->forward(c, chunk, /*all_logits=*/true, &logits));
    STRATA_RETURN_IF_ERROR(rt.exec->remove_sequence(c));
    for (int64_t j = first; j < n_ctx - 1; ++j) {
      const float* row = logits.data() + j * n_vocab;
      const float max_logit = *std::max_element(row, row + n_vocab);
      double sum = 0;
      for (int64_t v = 0; v < n_vocab; ++v)
        sum += std::exp(static_cast<double>(row[v]) - max_logit);
      // The target is the original token, not the BOS that replaced the chunk's first.
      const int32_t target = tokens[c * n_ctx + j + 1];
      const double nll = std::log(sum) - (static_cast<double>(row[target]) - max_logit);
      nll_sum += nll;
      nll2_sum += nll * nll;
      ++count;
    }
    std::printf("[%lld]%.4f,", static_cast<long long>(c + 1), std::exp(nll_sum / count));
    std::fflush(stdout);
  }
  const double mean = nll_sum / count;
  const double var = std::max(0.0, nll2_sum / count - mean * mean);
  const double ppl = std::exp(mean);
  const double ppl_err = count > 1 ? ppl * std::sqrt(var / (count - 1)) : 0.0;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, ppl_err);
  std::fprintf(stderr, "%.2f s, %.1f tokens/s\n", secs, n_chunks * n_ctx / secs);
  return Status::ok();
}

}  // namespace

void add_perplexity_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("perplexity", "Perplexity of a text file (llama.cpp's method)");
  auto flags = std::make_shared<PerplexityFlags>();
  flags->runtime.add_to(cmd);
  cmd->add_option("-f,--file", flags->file, "Text file")->required();
  cmd->add_option("--chunks", flags->max_chunks, "Score at most this many chunks (default: all)");
  cmd->callback([flags, exit_code] {
    Status s = perplexity(*flags);
    *exit_code = s.is_ok() ? 0 : report_error(s.message());
  });
}

}  // namespace strata::cli
