// strata run: generate text from a prompt, streamed as it comes; then prompt and generation
// tokens/s and peak memory per tier (stderr, so stdout holds only the text). --json prints one
// JSON object instead.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "offload/cli/command.h"
#include "offload/cli/format_units.h"
#include "offload/cli/model_runtime.h"
#include "offload/exec/sampler.h"
#include "offload/tokenizer/streaming_decoder.h"

namespace strata::cli {
namespace {

struct RunFlags {
  RuntimeFlags runtime;
  std::string prompt;
  bool prompt_given = false;
  std::string ids;
  int64_t n_predict = 128;
  bool json = false;
  bool ignore_eos = false;
  int64_t stats_every = 0;  // --stats N: a memory line every N generated tokens (0: off)
  SamplerConfig sampling;
};

// "[stats] 544 tokens: KV 2.1 MiB in device (9 blocks, 0 shared), 0 B cold; VRAM 3.2 GiB"
void print_stats(const Engine& exec, int64_t tokens) {
  const KvCacheStats kv = exec.kv_stats();
  std::string vram;
  if (const std::optional<DeviceArenaStats> d = exec.device_stats()) {
    vram = "; VRAM " + format_bytes(d->used_bytes) + " of " + format_bytes(d->budget_bytes);
  }
  std::fprintf(stderr, "[stats] %lld tokens: KV %s in %s (%lld blocks, %lld shared), %s cold%s\n",
               static_cast<long long>(tokens), format_bytes(kv.used_bytes).c_str(), exec.kv_tier(),
               static_cast<long long>(kv.num_used_blocks),
               static_cast<long long>(kv.num_shared_blocks),
               format_bytes(kv.cold_used_bytes).c_str(), vram.c_str());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

Status run(const RunFlags& flags) {
  STRATA_RETURN_IF_ERROR(flags.sampling.validate());
  if (flags.n_predict < 0) return Status::invalid_argument("-n must be >= 0");
  if (flags.ids.empty() && (!flags.prompt_given || flags.prompt.empty())) {
    return Status::invalid_argument(
        "the prompt is empty: give text with -p or token ids with --ids");
  }
  STRATA_ASSIGN_OR_RETURN(ModelRuntime rt, ModelRuntime::load(flags.runtime));
  STRATA_ASSIGN_OR_RETURN(const std::vector<int32_t> prompt,
                          rt.ids_or_prompt(flags.ids, flags.prompt));
  const int64_t ctx = rt.exec->max_context();
  if (static_cast<int64_t>(prompt.size()) > ctx) {
    return Status::invalid_argument("the prompt has " + std::to_string(prompt.size()) +
                                    " tokens, more than the context of " + std::to_string(ctx) +
                                    " (--ctx)");
  }
  STRATA_ASSIGN_OR_RETURN(Sampler sampler, Sampler::create(flags.sampling));
  for (int32_t id : prompt) sampler.accept(id);
  STRATA_RETURN_IF_ERROR(rt.exec->add_sequence(0));

  std::optional<StreamingDecoder> stream;
  if (rt.tokenizer && !flags.json) stream.emplace(*rt.tokenizer);
  if (stream && rt.tokenizer) {
    // Echo the prompt as llama.cpp does, without the BOS marker.
    std::vector<int32_t> shown(prompt.begin(), prompt.end());
    if (!shown.empty() && shown.front() == rt.tokenizer->bos_id()) shown.erase(shown.begin());
    std::string text;
    for (int32_t id : shown) text += stream->push(id);
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
  }

  std::vector<float> logits;
  const auto t_prompt = std::chrono::steady_clock::now();
  STRATA_RETURN_IF_ERROR(rt.exec->forward(0, prompt, /*all_logits=*/false, &logits));
  const double prompt_s = seconds_since(t_prompt);

  std::vector<int32_t> generated;
  std::string generated_text;
  std::string stop_reason = "count";
  const auto t_gen = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < flags.n_predict; ++i) {
    STRATA_ASSIGN_OR_RETURN(const int32_t next, sampler.sample(logits));
    generated.push_back(next);
    if (rt.tokenizer && !flags.ignore_eos && rt.tokenizer->is_end_of_generation(next)) {
      stop_reason = "eos";
      break;
    }
    if (stream) {
      const std::string piece = stream->push(next);
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }
    if (flags.stats_every > 0 && (i + 1) % flags.stats_every == 0) {
      print_stats(*rt.exec, rt.exec->num_tokens(0));
    }
    if (i + 1 == flags.n_predict) break;  // the last token needs no forward pass
    if (rt.exec->num_tokens(0) + 1 > ctx) {
      stop_reason = "context";
      break;
    }
    STRATA_RETURN_IF_ERROR(rt.exec->forward(0, std::span(&next, 1), false, &logits));
  }
  const double gen_s = seconds_since(t_gen);
  if (stream) std::fputs((stream->flush() + "\n").c_str(), stdout);
  if (rt.tokenizer) generated_text = rt.tokenizer->decode(generated);

  const KvCacheStats kv = rt.exec->kv_stats();
  const std::optional<DeviceArenaStats> vram = rt.exec->device_stats();
  const int64_t weight_bytes = static_cast<int64_t>(rt.model->spec.total_weight_bytes());
  const double prompt_tps = prompt_s > 0 ? prompt.size() / prompt_s : 0.0;
  // The first generated token comes from the prompt's logits; the rest each took a forward pass.
  const int64_t gen_passes = generated.empty() ? 0 : static_cast<int64_t>(generated.size()) - 1;
  const double gen_tps = gen_s > 0 && gen_passes > 0 ? gen_passes / gen_s : 0.0;

  if (flags.json) {
    nlohmann::json j;
    j["prompt_ids"] = prompt;
    j["generated_ids"] = generated;
    j["text"] = generated_text;
    j["stop_reason"] = stop_reason;
    j["device"] = rt.device;
    j["threads"] = rt.threads;
    j["seed"] = sampler.seed();
    j["timings"] = {{"prompt_tokens", prompt.size()},    {"prompt_seconds", prompt_s},
                    {"prompt_tokens_per_s", prompt_tps}, {"generated_tokens", generated.size()},
                    {"generation_seconds", gen_s},       {"generation_tokens_per_s", gen_tps}};
    const bool kv_on_host = std::string(rt.exec->kv_tier()) == "host";
    j["memory"] = {
        {"vram_peak_bytes", vram ? vram->peak_used_bytes : 0},
        {"host_weights_mapped_bytes", weight_bytes},
        // The cold KV tier (--hot-window) is host memory in both kinds of run.
        {"host_kv_peak_bytes", (kv_on_host ? kv.peak_used_bytes : 0) + kv.cold_peak_used_bytes},
        {"host_kv_allocated_bytes",
         (kv_on_host ? kv.allocated_bytes : 0) + kv.cold_allocated_bytes},
        {"kv_hot_peak_bytes", kv.peak_used_bytes},
        {"kv_cold_peak_bytes", kv.cold_peak_used_bytes},
        {"host_activation_bytes", rt.exec->host_activation_bytes()},
        {"process_peak_rss_bytes", peak_rss_bytes()}};
    if (vram) {
      j["memory"]["vram_budget_bytes"] = vram->budget_bytes;
      for (int tag = 0; tag < kNumDeviceMemoryTags; ++tag) {
        j["memory"][std::string("vram_peak_") +
                    device_memory_tag_name(static_cast<DeviceMemoryTag>(tag)) + "_bytes"] =
            vram->peak_bytes_by_tag[static_cast<size_t>(tag)];
      }
    }
    std::printf("%s\n", j.dump().c_str());
    return Status::ok();
  }
  std::fprintf(stderr, "\nprompt      %5zu tokens  %8.2f tok/s\n", prompt.size(), prompt_tps);
  std::fprintf(stderr, "generation  %5zu tokens  %8.2f tok/s  (stopped: %s)\n", generated.size(),
               gen_tps, stop_reason.c_str());
  if (vram) {
    std::fprintf(stderr,
                 "memory peak  vram %s of %s budget (weights %s, KV %s, activations %s, "
                 "workspace %s) | host: weights %s (mapped) | process RSS %s\n",
                 format_bytes(vram->peak_used_bytes).c_str(),
                 format_bytes(vram->budget_bytes).c_str(),
                 format_bytes(vram->peak(DeviceMemoryTag::kWeights)).c_str(),
                 format_bytes(vram->peak(DeviceMemoryTag::kKv)).c_str(),
                 format_bytes(vram->peak(DeviceMemoryTag::kActivations)).c_str(),
                 format_bytes(vram->peak(DeviceMemoryTag::kWorkspace)).c_str(),
                 format_bytes(weight_bytes).c_str(), format_bytes(peak_rss_bytes()).c_str());
  } else {
    std::fprintf(stderr,
                 "memory peak  vram 0 B | host: weights %s (mapped), KV %s, activations %s | "
                 "process RSS %s\n",
                 format_bytes(weight_bytes).c_str(), format_bytes(kv.peak_used_bytes).c_str(),
                 format_bytes(rt.exec->host_activation_bytes()).c_str(),
                 format_bytes(peak_rss_bytes()).c_str());
  }
  if (kv.cold_peak_used_bytes > 0) {
    std::fprintf(stderr, "KV tiers     hot %s peak, cold (host) %s peak, %lld cold blocks now\n",
                 format_bytes(kv.peak_used_bytes).c_str(),
                 format_bytes(kv.cold_peak_used_bytes).c_str(),
                 static_cast<long long>(kv.cold_used_blocks));
  }
  std::fprintf(stderr, "device %s, %d threads, seed %u\n", rt.exec->device_description().c_str(),
               rt.threads, sampler.seed());
  return Status::ok();
}

}  // namespace

void add_sampling_flags(CLI::App* cmd, SamplerConfig* s) {
  cmd->add_option("--temp", s->temperature, "Temperature; 0 = greedy (default 0.8)");
  cmd->add_option("--top-k", s->top_k, "Keep the k most likely tokens; 0 = off (default 40)");
  cmd->add_option("--top-p", s->top_p, "Nucleus sampling threshold; 1 = off (default 0.95)");
  cmd->add_option("--min-p", s->min_p,
                  "Drop tokens below min-p x the top probability (default 0.05)");
  cmd->add_option("--repeat-penalty", s->repeat_penalty, "Repetition penalty; 1 = off (default 1)");
  cmd->add_option("--repeat-last-n", s->repeat_last_n,
                  "Tokens the penalty looks back over (default 64)");
  cmd->add_option("-s,--seed", s->seed, "Random seed (default: random)");
}

void add_run_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt");
  auto flags = std::make_shared<RunFlags>();
  flags->runtime.add_to(cmd);
  cmd->add_option("-p,--prompt", flags->prompt, "Prompt text")->each([flags](const std::string&) {
    flags->prompt_given = true;
  });
  cmd->add_option("--ids", flags->ids, "Prompt as comma-separated token ids instead of text");
  cmd->add_option("-n,--n-predict", flags->n_predict, "Tokens to generate (default 128)");
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of streamed text");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Do not stop at end-of-generation tokens");
  cmd->add_option("--stats", flags->stats_every,
                  "Every N generated tokens, print KV bytes per tier and VRAM in use (stderr)")
      ->check(CLI::NonNegativeNumber);
  add_sampling_flags(cmd, &flags->sampling);
  cmd->callback([flags, exit_code] {
    Status s = run(*flags);
    *exit_code = s.is_ok() ? 0 : report_error(s.message());
  });
}

}  // namespace strata::cli
