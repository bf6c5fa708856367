#include "offload/cli/model_runtime.h"

#include <algorithm>
#include <sstream>

#include "cpu_backend/thread_placement.h"
#include "gpu_backend/device_probe.h"
#include "offload/cli/caps_file.h"
#include "offload/cli/format_units.h"
#include "offload/cli/policy_flags.h"
#include "offload/exec/gpu_executor.h"
#include "policies/planner.h"

namespace strata::cli {

void RuntimeFlags::add_to(CLI::App* cmd) {
  cmd->add_option("-m,--model", model_path, "GGUF file or HF checkpoint folder")->required();
  cmd->add_option("--device", device, "Where to run: auto, cpu or gpu (default auto)")
      ->check(CLI::IsMember({"auto", "cpu", "gpu"}));
  cmd->add_option("-t,--threads", threads, "CPU threads (default: one per physical core)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-c,--ctx", ctx,
                  "Context length in tokens (default: the model's trained context)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-b,--batch", batch, "Tokens per forward chunk (default 512)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--kv-type", kv_type,
                  "KV cache element type: f32, f16 or q8_0 (a scale per 32; CPU only for now) "
                  "(default f32)")
      ->check(CLI::IsMember({"f32", "f16", "q8_0"}));
  cmd->add_option("--hot-window", kv_tiers.hot_window,
                  "Tokens of each sequence's latest KV kept in the hot tier (VRAM); older blocks "
                  "move to pinned host memory. 0 = all hot (default: the config's, else 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--sink-blocks", kv_tiers.sink_blocks,
                  "First KV blocks of each sequence kept hot (default: the config's, else 1)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--block-tokens", kv_tiers.block_tokens,
                  "Tokens per KV block (default: the config's, else 16)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--cold-attention", kv_tiers.cold_attention,
                  "How KV outside VRAM is attended: auto, prefetch or cpu (default: the config's, "
                  "else auto)")
      ->check(CLI::IsMember({"auto", "prefetch", "cpu"}));
  cmd->add_option("--prefill-precision", prefill_precision,
                  "Prefill matmul inputs: f32 (exact), bf16 (CPU AMX) or f16 (GPU tensor cores); "
                  "auto = f32 on the CPU, f16 on the GPU (default auto)")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "f16"}));
  cmd->add_option("--decode-activations", decode_activations,
                  "Decode GEMV inputs: f32 (exact) or int8 (8 bits per 32 values: llama.cpp's "
                  "arithmetic, faster; GPU: Q8_0/Q4_0 by dp4a, CPU: Q8_0/Q4_0/Q4_K/Q6_K by "
                  "VNNI) (default f32)")
      ->check(CLI::IsMember({"f32", "int8"}));
  cmd->add_option("--vram-budget", vram_budget,
                  "Hard cap on the VRAM Strata uses, e.g. 8GiB (default: free VRAM minus 1 GiB)");
  cmd->add_option("--config", config, "Offload policy file (TOML; policies/examples/)");
  cmd->add_option("--policy", policy,
                  "Weight placement: auto, gpu-first, stream or cpu (default: the file's, else "
                  "auto)")
      ->check(CLI::IsMember({"auto", "gpu-first", "stream", "cpu"}));
  cmd->add_option("--prefetch-depth", prefetch_depth,
                  "Layers streamed ahead of the one computing (default: the file's, else 2)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--caps", caps,
                  "Machine rates file (default: strata calibrate's cache, else reference rates)");
}

namespace {

// The policy of this run: the file, the flags over it, and the executor's own shape.
StatusOr<Policy> run_policy(const RuntimeFlags& flags, int64_t vram_budget) {
  STRATA_ASSIGN_OR_RETURN(Policy p, policy_from_file_and_flags(flags.config, flags.policy,
                                                               vram_budget, flags.prefetch_depth));
  if (flags.ctx > 0) p.context_tokens = flags.ctx;
  p.prefill_tokens = flags.batch;
  STRATA_ASSIGN_OR_RETURN(p.kv_type, parse_kv_type(flags.kv_type));
  STRATA_RETURN_IF_ERROR(apply_kv_tier_flags(flags.kv_tiers, &p));
  p.batch = 1;
  STRATA_RETURN_IF_ERROR(p.validate());
  return p;
}

// "plan auto: 29 layers in VRAM, 2 streamed, 1 on the CPU in decode; predicted 12.1 tok/s"
std::string plan_summary(const Plan& plan, int64_t n_layer) {
  int64_t counts[3] = {0, 0, 0};
  std::vector<int> layer_where(static_cast<size_t>(n_layer), -1);
  for (const TensorPlacement& t : plan.tensors) {
    if (t.layer < 0 || t.name.find("norm") != std::string::npos) continue;
    layer_where[static_cast<size_t>(t.layer)] =
        std::max(layer_where[static_cast<size_t>(t.layer)], static_cast<int>(t.decode));
  }
  for (int w : layer_where) {
    if (w >= 0) ++counts[w];
  }
  char line[256];
  std::snprintf(line, sizeof(line),
                "plan %s: %lld layers in VRAM, %lld streamed, %lld on the CPU (decode); "
                "predicted decode %.1f tok/s, prefill %.0f tok/s",
                plan.policy.c_str(), static_cast<long long>(counts[0]),
                static_cast<long long>(counts[1]), static_cast<long long>(counts[2]),
                plan.decode.tokens_per_s, plan.prefill.tokens_per_s);
  return line;
}

}  // namespace

StatusOr<ModelRuntime> ModelRuntime::load(const RuntimeFlags& flags) {
  ModelRuntime rt;
  int64_t vram_budget = 0;
  if (!flags.vram_budget.empty()) {
    STRATA_ASSIGN_OR_RETURN(vram_budget, parse_byte_size("--vram-budget", flags.vram_budget));
  }
  // The policy is checked on every machine: a bad file is an error even where it goes unused.
  STRATA_ASSIGN_OR_RETURN(const Policy policy, run_policy(flags, vram_budget));
  if (flags.device == "gpu" && policy.kind == PolicyKind::kCpu) {
    return Status::invalid_argument("--device gpu with policy cpu: the cpu policy uses no GPU");
  }
  // auto: the GPU when one is usable, else the CPU (saying why once); gpu: the GPU or an error.
  // The cpu policy is the CPU-fallback mode by choice.
  bool use_gpu = false;
  if (flags.device != "cpu" && policy.kind != PolicyKind::kCpu) {
    const GpuProbe probe = probe_gpu(0);
    if (probe.usable) {
      use_gpu = true;
    } else if (flags.device == "gpu") {
      return Status::unsupported("--device gpu: " + probe.reason);
    } else {
      std::fprintf(stderr, "strata: running on the CPU (%s)\n", probe.reason.c_str());
    }
  }
  rt.device = use_gpu ? "gpu" : "cpu";
  const ThreadPlacement placement =
      apply_thread_placement(flags.threads > 0 ? flags.threads : default_thread_count());
  rt.threads = placement.num_threads;
  if (!placement.warning.empty()) std::fprintf(stderr, "strata: %s\n", placement.warning.c_str());

  STRATA_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(flags.model_path));
  rt.model = std::make_unique<LoadedModel>(std::move(loaded));
  if (rt.model->gguf) {
    STRATA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_gguf(*rt.model->gguf));
    rt.tokenizer.emplace(std::move(tok));
  }
  ExecutorOptions opts;
  opts.max_context = flags.ctx;
  opts.max_batch_tokens = flags.batch;
  opts.kv_type = policy.kv_type;
  opts.kv_block_tokens = policy.block_tokens;
  opts.kv_hot_window_tokens = policy.hot_window_tokens;
  opts.kv_sink_blocks = policy.sink_blocks;
  std::optional<Plan> plan;
  int64_t prefetch_depth = 0;
  bool cold_on_cpu = false;
  double cold_cpu_fraction = 1.0;
  int64_t cold_stage_blocks = 0;
  if (use_gpu) {
    // Where every weight goes (policies/planner.h), from the measured or reference rates and the
    // VRAM free now; the cpu policy means no GPU at all.
    prefetch_depth = policy.prefetch_depth;
    STRATA_ASSIGN_OR_RETURN(Caps caps, load_caps(flags.caps));
    caps = policy.apply_caps(caps);
    const GpuProbe probe = probe_gpu(0);
    caps.vram_free_bytes = probe.caps.free_bytes;
    // Cold KV on a GPU: prefetch stages each layer's cold blocks in VRAM (the plan keeps two
    // layers of it, fixed_vram); cpu also attends a share of them on the CPU in decode steps,
    // the share balanced per step on the measured rates (ColdSplit); auto is what the cost
    // model predicts faster (the split wherever the CPU adds to PCIe's rate).
    plan = make_plan(rt.model->spec, policy, caps);
    cold_on_cpu =
        policy.hot_window_tokens > 0 &&
        (policy.cold_attention == ColdAttention::kCpu ||
         (policy.cold_attention == ColdAttention::kAuto && plan->decode.cold_attention == "cpu"));
    cold_cpu_fraction = caps.cpu_share_of_host_reads();
    cold_stage_blocks = policy.hot_window_tokens > 0 ? policy.cold_kv_blocks() : 0;
    if (!plan->fits) {
      return Status::out_of_memory(
          "the VRAM budget " + format_bytes(plan->vram_budget_bytes) + " is below what policy " +
          plan->policy + " needs for this model (at least " +
          format_bytes(plan->min_vram_budget_bytes) +
          " for KV, workspace and staging): raise --vram-budget, or lower --ctx / -b");
    }
    std::fprintf(stderr, "strata: %s\n", plan_summary(*plan, rt.model->spec.hp.n_layer).c_str());
  }
  if (use_gpu) {
    GpuExecutorOptions gpu;
    gpu.cold_attention_on_cpu = cold_on_cpu;
    gpu.cold_cpu_fraction = cold_cpu_fraction;
    gpu.balance_cold_split = cold_on_cpu;
    gpu.cold_stage_blocks = cold_stage_blocks;
    gpu.base = opts;
    gpu.vram_budget_bytes = plan->vram_budget_bytes;
    gpu.placements = plan->tensors;
    gpu.prefetch_depth = static_cast<int>(prefetch_depth);
    gpu.gemm_precision =
        flags.prefill_precision == "f32" ? gpu::GemmPrecision::kF32 : gpu::GemmPrecision::kF16;
    gpu.int8_activations = flags.decode_activations == "int8";
    gpu.show_progress = true;
    STRATA_ASSIGN_OR_RETURN(rt.exec, GpuExecutor::create(rt.model->spec, gpu));
    return rt;
  }
  opts.int8_activations = flags.decode_activations == "int8";
  opts.prefill_precision = flags.prefill_precision == "bf16" || flags.prefill_precision == "f16"
                               ? cpu::MatmulPrecision::kBF16
                               : cpu::MatmulPrecision::kF32;
  STRATA_ASSIGN_OR_RETURN(rt.exec, Executor::create(rt.model->spec, opts));
  return rt;
}

StatusOr<std::vector<int32_t>> ModelRuntime::parse_ids(const std::string& text) const {
  std::vector<int32_t> ids;
  std::string item;
  std::string normalized = text;
  for (char& c : normalized) {
    if (c == ',') c = ' ';
  }
  std::istringstream in(normalized);
  while (in >> item) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (end == item.c_str() || *end != '\0') {
      return Status::invalid_argument("--ids: '" + item + "' is not a token id");
    }
    if (v < 0 || v >= model->spec.hp.n_vocab) {
      return Status::invalid_argument("--ids: token id " + item +
                                      " is outside the vocabulary (0.." +
                                      std::to_string(model->spec.hp.n_vocab - 1) + ")");
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return Status::invalid_argument("--ids: no token ids given");
  return ids;
}

StatusOr<std::vector<int32_t>> ModelRuntime::tokenize_prompt(const std::string& text) const {
  if (!tokenizer) {
    return Status::invalid_argument(
        model->spec.path + ": this model has no GGUF tokenizer; give token ids with --ids");
  }
  std::vector<int32_t> ids = tokenizer->encode(text, /*add_special=*/true, /*parse_special=*/true);
  return ids;
}

StatusOr<std::vector<int32_t>> ModelRuntime::ids_or_prompt(const std::string& ids_text,
                                                           const std::string& prompt_text) const {
  if (!ids_text.empty()) return parse_ids(ids_text);
  return tokenize_prompt(prompt_text);
}

}  // namespace strata::cli
