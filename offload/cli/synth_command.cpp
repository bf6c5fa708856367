// `strata synth`: writes a random-weight GGUF with the exact shape of a real model (see
// offload/model/synthesize.h), or lists the shapes it knows.
//
//   strata synth --list
//   strata synth --shape llama3-8b --type Q4_K --out /tmp/llama3-8b-Q4_K.gguf [--seed 1]
//                [--vocab ggml-vocab-llama-bpe.gguf] [--layers 2] [--threads 16]
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include "offload/cli/command.h"
#include "offload/model/synthesize.h"

namespace strata::cli {
namespace {

struct SynthArgs {
  bool list = false;
  std::string shape;
  std::string type;
  std::string out;
  uint64_t seed = 0;
  std::string vocab;
  int64_t layers = 0;
  int threads = 0;
};

// Set by SIGINT while a file is being written; checked between chunks so that an interrupted
// synth removes its temp file instead of leaving it behind.
std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

void print_shapes() {
  std::printf("%-14s %-6s %6s %6s %6s %7s %5s %7s %7s %9s %9s  %s\n", "shape", "arch", "layers",
              "embd", "ff", "heads", "head", "vocab", "ctx", "params", "F16 GiB", "source");
  for (const SynthShape& s : synth_shapes()) {
    const HyperParams& hp = s.hp;
    const std::string heads = std::to_string(hp.n_head) + "/" + std::to_string(hp.n_head_kv);
    const double params = static_cast<double>(s.num_params());
    std::printf("%-14s %-6s %6lld %6lld %6lld %7s %5lld %7lld %7lld %8.2fB %9.2f  %s%s\n", s.name,
                arch_name(s.arch), static_cast<long long>(hp.n_layer),
                static_cast<long long>(hp.n_embd), static_cast<long long>(hp.n_ff), heads.c_str(),
                static_cast<long long>(hp.head_dim), static_cast<long long>(hp.n_vocab),
                static_cast<long long>(hp.n_ctx_train), params / 1e9, params * 2 / (1ull << 30),
                s.source, hp.tied_embeddings ? " (tied embeddings)" : "");
  }
}

int run_synth(const SynthArgs& args) {
  if (args.list) {
    print_shapes();
    return 0;
  }
  if (args.shape.empty())
    return report_error("synth: --shape is required (see `strata synth --list`)");
  if (args.type.empty())
    return report_error("synth: --type is required (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
  if (args.out.empty()) return report_error("synth: --out is required");
  StatusOr<DType> type = parse_synth_type(args.type);
  if (!type.is_ok()) return report_error("synth: " + type.status().message());

  SynthOptions opt;
  opt.shape = args.shape;
  opt.type = *type;
  opt.out_path = args.out;
  opt.seed = args.seed;
  opt.vocab_path = args.vocab;
  opt.n_layer = args.layers;
  opt.num_threads = args.threads;

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  double last_print_s = -1;
  bool printed = false;
  opt.on_progress = [&](const SynthProgress& p) {
    if (tty && (p.seconds - last_print_s >= 0.25 || p.data_bytes_written == p.data_bytes_total)) {
      last_print_s = p.seconds;
      printed = true;
      const double mib = static_cast<double>(p.data_bytes_written) / (1 << 20);
      const double total_mib = static_cast<double>(p.data_bytes_total) / (1 << 20);
      const double mb_s =
          p.seconds > 0 ? static_cast<double>(p.data_bytes_written) / 1e6 / p.seconds : 0;
      std::fprintf(stderr, "\rsynth: %.0f / %.0f MiB (%.0f%%), %.0f MB/s   ", mib, total_mib,
                   total_mib > 0 ? 100.0 * mib / total_mib : 100.0, mb_s);
      std::fflush(stderr);
    }
    return !g_interrupted.load();
  };

  g_interrupted.store(false);
  auto old_handler = std::signal(SIGINT, on_sigint);
  StatusOr<SynthResult> result = synthesize(opt);
  std::signal(SIGINT, old_handler);
  if (printed) std::fprintf(stderr, "\n");
  if (!result.is_ok()) return report_error("synth: " + result.status().message());

  const SynthResult& r = *result;
  std::printf(
      "wrote %s: shape %s, %s, %lld layers, %lld tensors, %.2fB params, %.3f GiB in %.1f s (%.0f "
      "MB/s)\n",
      args.out.c_str(), args.shape.c_str(), dtype_name(opt.type),
      static_cast<long long>(args.layers > 0 ? args.layers
                                             : find_synth_shape(args.shape)->hp.n_layer),
      static_cast<long long>(r.num_tensors), static_cast<double>(r.num_params) / 1e9,
      static_cast<double>(r.file_bytes) / (1ull << 30), r.seconds,
      r.seconds > 0 ? static_cast<double>(r.file_bytes) / 1e6 / r.seconds : 0.0);
  return 0;
}

}  // namespace

void add_synth_command(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<SynthArgs>();
  CLI::App* cmd = app.add_subcommand(
      "synth", "Write a random-weight GGUF file with the exact shape of a real model");
  cmd->add_flag("--list", args->list, "List the known shapes and exit");
  cmd->add_option("--shape", args->shape, "Model shape (see --list), e.g. llama3-8b");
  cmd->add_option("--type", args->type, "Weight type: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K");
  cmd->add_option("--out", args->out, "Output GGUF file (written via FILE.tmp, then renamed)");
  cmd->add_option("--seed", args->seed, "Random seed (same seed, same bytes)")->default_val(0);
  cmd->add_option(
      "--vocab", args->vocab,
      "GGUF file whose tokenizer.* keys to copy (default: a synthetic byte-level BPE vocab)");
  cmd->add_option("--layers", args->layers, "Override the layer count (for small test files)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  cmd->add_option("--threads", args->threads, "Generation threads (default: all cores)")
      ->check(CLI::Range(1, 1024));
  cmd->callback([args, exit_code] { *exit_code = run_synth(*args); });
}

}  // namespace strata::cli
