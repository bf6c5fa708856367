// `strata plan`: what a policy would do with a model on this machine, without loading weights:
// bytes per tier, the placement of every layer for decode and prefill, predicted tokens/s, and the
// smallest budget that works. The model is a file (only its tensor table is read) or a named
// shape (`--shape llama3-70b --type Q4_0`, as `strata synth` would write it).
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "offload/cli/caps_file.h"
#include "offload/cli/command.h"
#include "offload/cli/format_units.h"
#include "offload/cli/policy_flags.h"
#include "offload/model/model_loader.h"
#include "offload/model/synthesize.h"
#include "policies/planner.h"

namespace strata::cli {
namespace {

struct PlanFlags {
  std::string model_path, shape, type = "Q4_0", config, policy, vram_budget, kv_type, caps;
  int64_t prefetch_depth = 0, context = 0, batch = 0, prefill_tokens = 0;
  KvTierFlags kv_tiers;
  bool json = false;
};

// The config file's policy with every flag that was given on top (flags win).
StatusOr<Policy> policy_of(const PlanFlags& f) {
  int64_t budget = 0;
  if (!f.vram_budget.empty()) {
    STRATA_ASSIGN_OR_RETURN(budget, parse_byte_size("--vram-budget", f.vram_budget));
  }
  STRATA_ASSIGN_OR_RETURN(Policy p,
                          policy_from_file_and_flags(f.config, f.policy, budget, f.prefetch_depth));
  if (f.context > 0) p.context_tokens = f.context;
  if (f.batch > 0) p.batch = f.batch;
  if (f.prefill_tokens > 0) p.prefill_tokens = f.prefill_tokens;
  if (!f.kv_type.empty()) {
    STRATA_ASSIGN_OR_RETURN(p.kv_type, parse_kv_type(f.kv_type));
  }
  STRATA_RETURN_IF_ERROR(apply_kv_tier_flags(f.kv_tiers, &p));
  STRATA_RETURN_IF_ERROR(p.validate());
  return p;
}

std::string placements_of(const Plan& plan, int64_t layer, bool decode) {
  std::map<std::string, int> counts;
  for (const TensorPlacement& t : plan.tensors) {
    if (t.layer == layer) counts[placement_name(decode ? t.decode : t.prefill)]++;
  }
  if (counts.size() == 1) return counts.begin()->first;
  std::string s;
  for (const auto& [name, n] : counts) s += (s.empty() ? "" : "+") + std::to_string(n) + name;
  return s;
}

Status plan(const PlanFlags& f) {
  STRATA_ASSIGN_OR_RETURN(const Policy policy, policy_of(f));
  ModelSpec spec;
  std::unique_ptr<LoadedModel> loaded;
  if (!f.shape.empty()) {
    STRATA_ASSIGN_OR_RETURN(const DType type, parse_synth_type(f.type));
    STRATA_ASSIGN_OR_RETURN(spec, synth_spec(f.shape, type));
  } else if (!f.model_path.empty()) {
    STRATA_ASSIGN_OR_RETURN(LoadedModel m, load_model(f.model_path));
    loaded = std::make_unique<LoadedModel>(std::move(m));
    spec = loaded->spec;
  } else {
    return Status::invalid_argument("give a model with -m FILE or --shape NAME --type TYPE");
  }
  STRATA_ASSIGN_OR_RETURN(const Caps measured, load_caps(f.caps));
  const Caps caps = policy.apply_caps(measured);
  const Plan p = make_plan(spec, policy, caps);
  const TierBytes& b = p.bytes;

  if (f.json) {
    nlohmann::json j;
    j["model"] = spec.name.empty() ? spec.path : spec.name;
    j["policy"] = p.policy;
    j["vram_budget_bytes"] = p.vram_budget_bytes;
    j["min_vram_budget_bytes"] = p.min_vram_budget_bytes;
    j["fits"] = p.fits;
    j["bytes"] = {{"vram_weights", b.vram_weights},
                  {"vram_kv", b.vram_kv},
                  {"vram_staging", b.vram_staging},
                  {"vram_workspace", b.vram_workspace},
                  {"vram_total", b.vram_total()},
                  {"host_pinned_weights", b.host_pinned_weights},
                  {"host_kv", b.host_kv}};
    for (const auto& [name, pr] : {std::pair{"decode", &p.decode}, {"prefill", &p.prefill}}) {
      j["predicted"][name] = {
          {"tokens_per_s", pr->tokens_per_s}, {"seconds", pr->seconds},
          {"vram_bytes", pr->vram_bytes},     {"stream_bytes", pr->stream_bytes},
          {"cpu_bytes", pr->cpu_bytes},       {"bound", pr->bound}};
    }
    for (int64_t l = 0; l < spec.hp.n_layer; ++l) {
      j["layers"].push_back({{"layer", l},
                             {"decode", placements_of(p, l, true)},
                             {"prefill", placements_of(p, l, false)}});
    }
    for (const TensorPlacement& t : p.tensors) {
      if (t.layer < 0) {
        j["other"].push_back({{"tensor", t.name},
                              {"bytes", t.bytes},
                              {"decode", placement_name(t.decode)},
                              {"prefill", placement_name(t.prefill)}});
      }
    }
    j["caps"] = caps.source;
    std::printf("%s\n", j.dump(1).c_str());
    return Status::ok();
  }

  std::printf("model    %s (%s, %lld layers)\n", spec.name.c_str(), spec.path.c_str(),
              static_cast<long long>(spec.hp.n_layer));
  std::printf("policy   %s, VRAM budget %s, prefetch depth %lld, context %lld x batch %lld\n",
              p.policy.c_str(), format_bytes(p.vram_budget_bytes).c_str(),
              static_cast<long long>(policy.prefetch_depth),
              static_cast<long long>(policy.context_tokens), static_cast<long long>(policy.batch));
  std::printf("rates    %s\n\n", caps.source.c_str());
  std::printf("VRAM     weights %s + KV %s + staging %s + workspace %s = %s%s\n",
              format_bytes(b.vram_weights).c_str(), format_bytes(b.vram_kv).c_str(),
              format_bytes(b.vram_staging).c_str(), format_bytes(b.vram_workspace).c_str(),
              format_bytes(b.vram_total()).c_str(), p.fits ? "" : "  (OVER the budget)");
  std::printf("host     pinned weights %s + KV %s\n", format_bytes(b.host_pinned_weights).c_str(),
              format_bytes(b.host_kv).c_str());
  if (policy.hot_window_tokens > 0) {
    std::printf(
        "KV       %lld of %lld tokens per sequence in VRAM (%lld sink blocks + a %lld-token "
        "window, %lld-token blocks); cold KV attended by %s\n",
        static_cast<long long>(policy.hot_kv_tokens()),
        static_cast<long long>(policy.context_tokens), static_cast<long long>(policy.sink_blocks),
        static_cast<long long>(policy.hot_window_tokens),
        static_cast<long long>(policy.block_tokens),
        p.decode.cold_attention.empty() ? "nothing (all hot)" : p.decode.cold_attention.c_str());
  }
  std::printf("\n");
  std::printf("%-8s %-10s %-10s\n", "layer", "decode", "prefill");
  std::string last;
  int64_t run_start = 0;
  auto flush = [&](int64_t end) {
    if (last.empty()) return;
    const std::string range = run_start == end - 1
                                  ? std::to_string(run_start)
                                  : std::to_string(run_start) + "-" + std::to_string(end - 1);
    const auto sep = last.find('|');
    std::printf("%-8s %-10s %-10s\n", range.c_str(), last.substr(0, sep).c_str(),
                last.substr(sep + 1).c_str());
  };
  for (int64_t l = 0; l < spec.hp.n_layer; ++l) {
    const std::string row = placements_of(p, l, true) + "|" + placements_of(p, l, false);
    if (row != last) {
      flush(l);
      last = row;
      run_start = l;
    }
  }
  flush(spec.hp.n_layer);
  for (const TensorPlacement& t : p.tensors) {
    if (t.layer < 0 && t.bytes > (1 << 20)) {
      std::printf("%-8s %-10s %-10s (%s, %s)\n", "", placement_name(t.decode),
                  placement_name(t.prefill), t.name.c_str(), format_bytes(t.bytes).c_str());
    }
  }
  std::printf(
      "\npredicted decode   %8.1f tok/s (%s-bound: %s from VRAM, %s streamed, %s on the CPU per "
      "step)\n",
      p.decode.tokens_per_s, p.decode.bound.c_str(),
      format_bytes(static_cast<int64_t>(p.decode.vram_bytes)).c_str(),
      format_bytes(static_cast<int64_t>(p.decode.stream_bytes)).c_str(),
      format_bytes(static_cast<int64_t>(p.decode.cpu_bytes)).c_str());
  std::printf("predicted prefill  %8.1f tok/s (%s-bound, %lld-token chunks)\n",
              p.prefill.tokens_per_s, p.prefill.bound.c_str(),
              static_cast<long long>(policy.prefill_tokens));
  if (!p.fits) {
    std::printf("\nthe budget is too small: this policy needs at least %s of VRAM\n",
                format_bytes(p.min_vram_budget_bytes).c_str());
  }
  return Status::ok();
}

}  // namespace

void add_plan_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "plan", "Show where a policy puts a model's weights and what it predicts, loading nothing");
  auto f = std::make_shared<PlanFlags>();
  cmd->add_option("-m,--model", f->model_path, "GGUF file or HF checkpoint folder");
  cmd->add_option("--shape", f->shape, "A model shape instead of a file (strata synth --list)");
  cmd->add_option("--type", f->type, "Weight type with --shape (default Q4_0)");
  cmd->add_option("--config", f->config, "Policy file (TOML; policies/examples/)");
  cmd->add_option("--policy", f->policy, "auto, gpu-first, stream or cpu (default auto)")
      ->check(CLI::IsMember({"auto", "gpu-first", "stream", "cpu"}));
  cmd->add_option("--vram-budget", f->vram_budget, "e.g. 8GiB (default: free VRAM minus 1 GiB)");
  cmd->add_option("--prefetch-depth", f->prefetch_depth, "Layers streamed ahead (default 2)");
  cmd->add_option("--context", f->context, "KV tokens per sequence (default 4096)");
  cmd->add_option("--batch", f->batch, "Sequences decoded together (default 1)");
  cmd->add_option("--prefill-tokens", f->prefill_tokens, "Prefill chunk (default 2048)");
  cmd->add_option("--kv-type", f->kv_type, "f16, f32 or q8_0 (default f16)")
      ->check(CLI::IsMember({"f16", "f32", "q8_0"}));
  cmd->add_option("--hot-window", f->kv_tiers.hot_window,
                  "Tokens of recent KV per sequence kept in VRAM (default 0: all of it)");
  cmd->add_option("--sink-blocks", f->kv_tiers.sink_blocks,
                  "First KV blocks kept in VRAM (default 1)");
  cmd->add_option("--block-tokens", f->kv_tiers.block_tokens, "Tokens per KV block (default 16)");
  cmd->add_option("--cold-attention", f->kv_tiers.cold_attention,
                  "KV outside VRAM: auto, prefetch or cpu (default auto)")
      ->check(CLI::IsMember({"auto", "prefetch", "cpu"}));
  cmd->add_option("--caps", f->caps,
                  "Machine rates from strata calibrate (default: its cache file, else the "
                  "reference machine's)");
  cmd->add_flag("--json", f->json, "Print one JSON object");
  cmd->callback([f, exit_code] {
    const Status s = plan(*f);
    *exit_code = s.is_ok() ? 0 : report_error(s.message());
  });
}

}  // namespace strata::cli
