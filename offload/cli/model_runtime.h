// ModelRuntime: what `run`, `eval` and `perplexity` share: the flags that choose the model and
// how it runs, and the loading of model + tokenizer + executor from them. Every knob here is a
// flag with its default documented in `strata <command> --help`.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "offload/cli/policy_flags.h"
#include "offload/core/status.h"
#include "offload/exec/engine.h"
#include "offload/exec/executor.h"
#include "offload/model/model_loader.h"
#include "offload/tokenizer/tokenizer.h"

namespace strata::cli {

struct RuntimeFlags {
  std::string model_path;
  std::string device = "auto";  // auto | cpu | gpu
  int threads = 0;              // 0: one per physical core
  int64_t ctx = 0;              // 0: the model's trained context
  int64_t batch = 512;          // tokens per forward chunk
  std::string kv_type = "f32";  // f32 | f16 | q8_0
  KvTierFlags kv_tiers;         // unset: the file's values, else the policy defaults
  // auto: f32 on the CPU (exact), f16 on the GPU (tensor cores); f32 | bf16 | f16.
  std::string prefill_precision = "auto";
  std::string decode_activations = "f32";
  std::string vram_budget;  // --vram-budget; empty: free VRAM minus 1 GiB
  // The offload policy (policies/policy.h): a TOML file and the flags over it. The plan budgets
  // KV for --ctx tokens (the file's `context` when --ctx is not given), prefill chunks of -b
  // tokens and the --kv-type of this run.
  std::string config;
  std::string policy;  // auto | gpu-first | stream | cpu; empty: the file's, else auto
  int64_t prefetch_depth = 0;
  std::string caps;  // a Caps file; empty: strata calibrate's cache, else the reference rates

  void add_to(CLI::App* cmd);
};

struct ModelRuntime {
  std::unique_ptr<LoadedModel> model;
  std::optional<Tokenizer> tokenizer;  // GGUF models only
  std::unique_ptr<Engine> exec;
  int threads = 0;
  std::string device;  // what runs: "cpu" or "gpu"

  static StatusOr<ModelRuntime> load(const RuntimeFlags& flags);

  // Ids from comma/space separated text, checked against the vocabulary.
  StatusOr<std::vector<int32_t>> parse_ids(const std::string& text) const;
  // The prompt as ids: tokenized with BOS and special tokens (GGUF models).
  StatusOr<std::vector<int32_t>> tokenize_prompt(const std::string& text) const;
  // What --ids and -p give: parse_ids(ids_text) when it is not empty, else
  // tokenize_prompt(prompt_text).
  StatusOr<std::vector<int32_t>> ids_or_prompt(const std::string& ids_text,
                                               const std::string& prompt_text) const;
};

}  // namespace strata::cli
