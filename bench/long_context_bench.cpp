// long_context_bench: decode at long contexts with the tiered KV cache under a VRAM budget
// (scenario ctx-8b in ../shared/BENCHMARKS.md: llama3-8b Q4_0, 8 GiB, decode at 4k, 32k and 128k
// context, prefill of a 32k prompt), with the limits measured in the same run (H, P, C, S, G as
// in offload_bench).
// First a prompt of --prefill-context tokens is prefilled (timed) on a sequence of its own; then
// one sequence grows through the contexts, --decode tokens timed at each. Rooflines (issue 6), per
// decode token at context L with the plan's weight bytes per tier and the KV split by the hot
// window (hot: sinks + window, in VRAM; cold: the rest, in pinned host):
//   T = (B_vram + KV_hot) / H + (B_host + KV_cold) / S            (both host links, as issue 5)
// and, beside it, the same with the cold KV over PCIe alone (P), what --cold-attention prefetch
// can reach; --cold-attention cpu also attends a share of them on the CPU, towards S.
// Prefill of N tokens in chunks of C: max(passes * B_stream / P + cold KV read by the chunks / P,
// FLOPs / G); the chunks' attention reads every earlier token's KV once per chunk.
// Checks that the device memory never exceeded the budget, and prints KV bytes per tier.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "bench/bench_check.h"
#include "bench/offload_limits.h"
#include "cpu_backend/read_bandwidth.h"
#include "cpu_backend/thread_placement.h"
#include "gpu_backend/device_probe.h"
#include "offload/core/units.h"
#include "offload/exec/gpu_executor.h"
#include "offload/exec/gpu_limits.h"
#include "offload/model/model_loader.h"
#include "policies/planner.h"

namespace {

using namespace strata;
using bench::check;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Bytes of this process's anonymous memory in transparent huge pages (smaps_rollup), to see
// whether --host-pages huge got them; -1 where the kernel does not say.
int64_t anon_huge_page_bytes() {
  std::ifstream in("/proc/self/smaps_rollup");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("AnonHugePages:", 0) == 0) return std::stoll(line.substr(14)) * 1024;
  }
  return -1;
}

std::vector<int64_t> split_ints(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Decode tokens/s at long contexts with the tiered KV cache, rooflines measured here"};
  std::string model_path, json_out, scenario = "ctx-8b", model_name, commit, budget_text = "8GiB";
  std::string contexts_text = "4096,32768,131072";
  int64_t hot_window = 4096, sink_blocks = 1, chunk = 2048, decode_tokens = 16;
  int64_t prefill_context = 32768;
  double read_gib = 4.0;
  std::string cold_attention = "in-place";
  double cold_cpu_fraction = -1;
  app.add_option("-m,--model", model_path, "GGUF model (e.g. from strata synth)")->required();
  app.add_option("--model-name", model_name, "Name for the record (default: general.name)");
  app.add_option("--scenario", scenario, "Scenario id for the record");
  app.add_option("--vram-budget", budget_text, "The VRAM budget (default 8GiB)");
  app.add_option("--contexts", contexts_text, "Contexts to decode at, increasing");
  app.add_option("--hot-window", hot_window, "Tokens of KV kept in VRAM per sequence");
  app.add_option("--sink-blocks", sink_blocks, "First KV blocks kept in VRAM");
  app.add_option("--chunk", chunk, "Tokens per prefill chunk");
  app.add_option("--decode", decode_tokens, "Tokens decoded at each context");
  app.add_option("--prefill-context", prefill_context,
                 "Tokens of the prompt whose prefill is timed, on a sequence of its own (0: skip)");
  app.add_option("--cold-attention", cold_attention,
                 "in-place: the GPU reads cold blocks over PCIe where they lie; prefetch: each "
                 "layer's cold blocks are copied into VRAM staging while the layer before "
                 "computes (GpuExecutorOptions::cold_stage_blocks); cpu: as prefetch, and decode "
                 "steps attend a share of the cold blocks on the CPU, merged by log-sum-exp "
                 "(cold_attention_on_cpu)")
      ->check(CLI::IsMember({"in-place", "prefetch", "cpu"}));
  app.add_option("--cold-cpu-fraction", cold_cpu_fraction,
                 "With --cold-attention cpu: a fixed share of cold blocks the CPU attends, the "
                 "rest staged for the GPU meanwhile (default: start at (S - P) / S from the "
                 "limits measured here, then balance on the rates measured per step)");
  int cold_worker_threads = -1;
  app.add_option("--cold-worker-threads", cold_worker_threads,
                 "With --cold-attention cpu: -1 attends the CPU's share on this thread's team; "
                 ">= 0 on a worker thread's own team of that many threads (0: cores - 1) while "
                 "this thread queues the GPU's work (GpuExecutorOptions::cold_worker_threads)");
  std::string kv_type_name = "f16";
  app.add_option("--kv-type", kv_type_name, "KV element type in both tiers")
      ->check(CLI::IsMember({"f16", "q8_0"}));
  std::string host_pages = "huge";
  app.add_option("--host-pages", host_pages,
                 "Pinned host memory (the cold KV tier) in 2 MiB pages registered with CUDA, or "
                 "cudaMallocHost's small ones (GpuExecutorOptions::host_huge_pages)")
      ->check(CLI::IsMember({"huge", "small"}));
  app.add_option("--read-gib", read_gib, "Buffers of the bandwidth measurements");
  app.add_option("--json-out", json_out, "Append JSON lines here");
  app.add_option("--commit", commit, "Commit id for the record");
  CLI11_PARSE(app, argc, argv);
  const std::vector<int64_t> contexts = split_ints(contexts_text);
  const DType kv_type = *dtype_from_name(kv_type_name);  // one of the two the check allows
  if (contexts.empty() || !std::is_sorted(contexts.begin(), contexts.end())) {
    std::fprintf(stderr, "long_context_bench: --contexts must be increasing\n");
    return 2;
  }

  const GpuProbe probe = probe_gpu(0);
  if (!probe.usable) {
    std::fprintf(stderr, "long_context_bench: no usable GPU: %s\n", probe.reason.c_str());
    return 1;
  }
  const int64_t budget = check(parse_byte_size("--vram-budget", budget_text), "--vram-budget");
  const ThreadPlacement placement = apply_thread_placement(default_thread_count());
  auto loaded = check(load_model(model_path), "load");
  const ModelSpec& spec = loaded.spec;
  const HyperParams& hp = spec.hp;
  if (model_name.empty()) model_name = spec.name;
  const std::string type_name = bench::layer_weight_type(spec);

  Caps caps = bench::measure_offload_limits(probe, hp, chunk, read_gib);
  caps.source = "measured by long_context_bench";
  bench::print_offload_limits(caps, placement.num_threads);

  const int64_t max_context = contexts.back() + decode_tokens + 8;
  Policy policy;
  policy.kind = PolicyKind::kAuto;
  policy.vram_budget_bytes = budget;
  policy.context_tokens = max_context;
  policy.prefill_tokens = chunk;
  policy.kv_type = kv_type;
  policy.hot_window_tokens = hot_window;
  policy.sink_blocks = sink_blocks;
  policy.cold_attention = ColdAttention::kPrefetch;  // what the executor's in-place reads cost
  const Plan plan = make_plan(spec, policy, caps);
  if (!plan.fits) {
    std::fprintf(stderr, "does not fit in %s (needs %lld bytes)\n", budget_text.c_str(),
                 static_cast<long long>(plan.min_vram_budget_bytes));
    return 1;
  }
  GpuExecutorOptions o;
  o.base.max_context = max_context;
  // llama3-8b was trained at 8k; the synthetic weights make the same work at any context.
  o.base.allow_beyond_trained_context = true;
  o.base.max_batch_tokens = chunk;
  o.base.kv_type = kv_type;
  o.base.attention_tile_tokens = 1024;
  o.base.kv_hot_window_tokens = hot_window;
  o.base.kv_sink_blocks = sink_blocks;
  o.vram_budget_bytes = plan.vram_budget_bytes;
  o.gemm_precision = gpu::GemmPrecision::kF16;
  o.placements = plan.tensors;
  o.cold_attention_on_cpu = cold_attention == "cpu";
  o.host_huge_pages = host_pages == "huge";
  o.cold_worker_threads = cold_worker_threads;
  // A slot holds one layer's cold blocks at max_context (as strata run sizes it).
  if (cold_attention != "in-place") o.cold_stage_blocks = policy.cold_kv_blocks();
  // cpu: the share starts at (S - P) / S and follows the measured rates (ColdSplit), unless
  // --cold-cpu-fraction fixes it.
  o.cold_cpu_fraction = cold_cpu_fraction >= 0 ? cold_cpu_fraction : caps.cpu_share_of_host_reads();
  o.balance_cold_split = o.cold_attention_on_cpu && cold_cpu_fraction < 0;
  std::fprintf(stderr, "cold attention %s%s\n", cold_attention.c_str(),
               o.cold_attention_on_cpu
                   ? (", CPU share " + std::to_string(o.cold_cpu_fraction)).c_str()
                   : "");
  auto exec = check(GpuExecutor::create(spec, o), "GpuExecutor");
  check(exec->add_sequence(0), "seq");

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(hp.n_vocab - 1));
  const double per_token_kv = static_cast<double>(hp.kv_bytes_per_token(kv_type));
  int64_t layer_params = 0;
  for (const TensorSpec& t : spec.tensors) {
    if (t.ne.size() >= 2 && t.name.rfind("blk.", 0) == 0) layer_params += t.num_elements();
  }
  const Prediction& d = plan.decode;
  std::vector<nlohmann::json> records;
  auto record = [&](const std::string& phase, int64_t context, double tps, double roof_tps,
                    nlohmann::json extra) {
    const KvCacheStats kv = exec->kv_stats();
    nlohmann::json r;
    r["scenario"] = scenario;
    r["model"] = model_name;
    r["type"] = type_name;
    r["phase"] = phase;
    r["policy"] = "auto";
    r["vram_budget_bytes"] = budget;
    r["batch"] = 1;
    r["context"] = context;
    r["tokens_per_s"] = tps;
    r["roofline_tokens_per_s"] = roof_tps;
    r["ratio_to_roofline"] = roof_tps > 0 ? tps / roof_tps : 0.0;
    r["limits"] = {{"hbm_bytes_per_s", caps.hbm_bytes_per_s},
                   {"h2d_pinned_bytes_per_s", caps.h2d_pinned_bytes_per_s},
                   {"cpu_read_bytes_per_s", caps.cpu_read_bytes_per_s},
                   {"host_combined_bytes_per_s", caps.host_combined_bytes_per_s},
                   {"gemm_flop_per_s", caps.gpu_gemm_flop_per_s}};
    r["kv_bytes"] = {{"vram", kv.used_bytes}, {"host", kv.cold_used_bytes}};
    r["hot_window_tokens"] = hot_window;
    r["trained_context"] = hp.n_ctx_train;
    r["cold_attention"] = cold_attention;
    r["kv_type"] = kv_type_name;
    r["cold_worker_threads"] = cold_worker_threads;
    r["host_huge_pages"] = o.host_huge_pages;
    r["anon_huge_page_bytes"] = anon_huge_page_bytes();
    if (o.cold_attention_on_cpu) {
      const ColdSplit& split = exec->cold_split();
      r["cold_cpu_fraction"] = split.share();  // at the end of the phase
      r["cold_cpu_fraction_start"] = o.cold_cpu_fraction;
      r["cold_split_balanced"] = o.balance_cold_split;
      r["cold_cpu_attention_bytes_per_s"] = split.cpu_bytes_per_s();
      r["cold_link_bytes_per_s"] = split.link_bytes_per_s();
      // One step's CPU attention and staging copy seconds (summed over layers; the last step the
      // split folded), against the step's 1 / tokens_per_s.
      r["cold_step_cpu_s"] = split.last_cpu_seconds();
      r["cold_step_cpu_wait_s"] = split.last_cpu_wait_seconds();
      r["cold_step_link_s"] = split.last_link_seconds();
      const GpuExecutor::HostTimes& ht = exec->last_host_times();
      r["host_prepare_s"] = ht.prepare_s;
      r["host_stage_enqueue_s"] = ht.stage_enqueue_s;
      r["host_run_s"] = ht.run_s;
      r["host_step_s"] = ht.total_s;
      if (phase == "decode" && tps > 0)
        std::fprintf(stderr,
                     "%lld: host: prepare %.1f ms, staging enqueue %.1f ms, run_model %.1f ms, "
                     "chunk %.1f ms\n",
                     static_cast<long long>(context), 1e3 * ht.prepare_s, 1e3 * ht.stage_enqueue_s,
                     1e3 * ht.run_s, 1e3 * ht.total_s);
      if (phase == "decode" && tps > 0)
        std::fprintf(stderr,
                     "%lld: step %.1f ms, CPU attention %.1f ms (waits for q %.1f ms), staging "
                     "copies %.1f ms\n",
                     static_cast<long long>(context), 1e3 / tps, 1e3 * split.last_cpu_seconds(),
                     1e3 * split.last_cpu_wait_seconds(), 1e3 * split.last_link_seconds());
    }
    r["cold_stage_blocks"] = o.cold_stage_blocks;
    r["peak_vram_bytes"] = exec->device_stats()->peak_used_bytes;
    r["device"] = exec->device_description();
    r["commit"] = commit;
    for (auto it = extra.begin(); it != extra.end(); ++it) r[it.key()] = it.value();
    records.push_back(r);
    if (!json_out.empty()) std::ofstream(json_out, std::ios::app) << r.dump() << "\n";
    std::printf("%s\n", r.dump().c_str());
  };

  std::vector<float> logits;
  if (prefill_context > 0) {  // a prompt of prefill_context tokens on a sequence of its own
    std::vector<int32_t> prompt(static_cast<size_t>(prefill_context));
    for (int32_t& t : prompt) t = tok(rng);
    check(exec->add_sequence(1), "seq");
    const double t0 = now_s();
    check(exec->forward(1, prompt, false, &logits), "prefill");
    const double prefill_s = now_s() - t0;
    // Chunk i attends over the tokens before it: their cold part comes over PCIe.
    const double n = static_cast<double>(prefill_context);
    double cold_read = 0;
    for (int64_t start = 0; start < prefill_context; start += chunk) {
      cold_read +=
          static_cast<double>(std::max<int64_t>(0, start - policy.hot_kv_tokens())) * per_token_kv;
    }
    const double passes = std::ceil(n / static_cast<double>(chunk));
    const double attn_flops = 4.0 * hp.n_layer * hp.n_head * hp.head_dim * n * (n + 1) / 2;
    const double flops = 2.0 * static_cast<double>(layer_params) * n + attn_flops;
    const double roof_s =
        std::max((passes * plan.prefill.stream_bytes + cold_read) / caps.h2d_pinned_bytes_per_s,
                 flops / caps.gpu_gemm_flop_per_s);
    record("prefill", prefill_context, n / prefill_s, n / roof_s,
           {{"chunk_tokens", chunk}, {"flop_per_s", flops / prefill_s}});
    check(exec->remove_sequence(1), "seq");
  }
  int64_t held = 0;
  for (const int64_t context : contexts) {
    // Grow the sequence to `context` tokens (chunked prefill), then decode there.
    std::vector<int32_t> prompt(static_cast<size_t>(context - held));
    for (int32_t& t : prompt) t = tok(rng);
    check(exec->forward(0, prompt, false, &logits), "grow");
    held = context;
    int32_t next = tok(rng);
    // Warm-up steps: the first cold steps also let a balanced split settle (ColdSplit).
    for (int w = 0; w < 3; ++w) {
      check(exec->forward(0, std::span(&next, 1), false, &logits), "warm");
      ++held;
    }
    const double t1 = now_s();
    for (int64_t i = 0; i < decode_tokens; ++i) {
      next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      check(exec->forward(0, std::span(&next, 1), false, &logits), "decode");
    }
    const double tps = static_cast<double>(decode_tokens) / (now_s() - t1);
    const double ctx_mid = static_cast<double>(held) + decode_tokens / 2.0;
    held += decode_tokens;
    const double kv_hot = std::min<double>(ctx_mid, policy.hot_kv_tokens()) * per_token_kv;
    const double kv_cold = std::max(0.0, ctx_mid * per_token_kv - kv_hot);
    const double host = d.stream_bytes + d.cpu_bytes;
    const double roof_s = (d.vram_bytes + kv_hot) / caps.hbm_bytes_per_s +
                          (host + kv_cold) / caps.host_combined_bytes_per_s;
    // The bound of the prefetch mode: cold KV over PCIe alone (the weights' host bytes, here the
    // host embedding's row, still at S).
    const double pcie_s = (d.vram_bytes + kv_hot) / caps.hbm_bytes_per_s +
                          host / caps.host_combined_bytes_per_s +
                          kv_cold / caps.h2d_pinned_bytes_per_s;
    record("decode", context, tps, 1.0 / roof_s,
           {{"roofline_cold_kv_over_pcie_tokens_per_s", 1.0 / pcie_s},
            {"bytes_per_token",
             {{"vram", d.vram_bytes},
              {"stream", d.stream_bytes},
              {"cpu", d.cpu_bytes},
              {"kv_vram", kv_hot},
              {"kv_host", kv_cold}}}});
  }
  const DeviceArenaStats vram = *exec->device_stats();
  const bool within = vram.peak_used_bytes <= vram.budget_bytes;
  std::fprintf(stderr, "\nVRAM peak %.2f GiB of a %.2f GiB arena budget: %s\n",
               vram.peak_used_bytes / double(1ll << 30), vram.budget_bytes / double(1ll << 30),
               within ? "within" : "OVER");
  std::fprintf(stderr, "%-12s %-6s %-8s %8s %10s %10s %6s %12s %12s\n", "model", "type", "phase",
               "context", "tok/s", "roof", "ratio", "KV vram", "KV host");
  for (const auto& r : records) {
    std::fprintf(stderr, "%-12s %-6s %-8s %8lld %10.2f %10.2f %6.3f %10.2f G %10.2f G\n",
                 r["model"].get<std::string>().c_str(), r["type"].get<std::string>().c_str(),
                 r["phase"].get<std::string>().c_str(),
                 static_cast<long long>(r["context"].get<int64_t>()),
                 r["tokens_per_s"].get<double>(), r["roofline_tokens_per_s"].get<double>(),
                 r["ratio_to_roofline"].get<double>(), r["kv_bytes"]["vram"].get<double>() / 1e9,
                 r["kv_bytes"]["host"].get<double>() / 1e9);
  }
  return within ? 0 : 3;
}
