// offload_bench: a model larger than the VRAM budget (scenarios off-8b, off-14b, off-70b in
// ../shared/BENCHMARKS.md), run under each policy, with the limits measured in the same run:
//   H  HBM read bandwidth; P  pinned host-to-device copies; C  the all-core CPU read;
//   S  the host side when PCIe streaming and CPU reads run at the same time (summed);
//   G  the cuBLAS f16 GEMM rate on the model's prefill shape.
// Rooflines (issue 5):
//   decode  (batch 1): T = B_vram / H + B_host / S, the bytes per token of each tier as the plan
//                      places them (streamed layers the ring holds for good count as VRAM);
//   prefill (N tokens): T = max(B_stream / P, FLOPs / G) per pass over the weights (+ the CPU-run
//                      bytes / C, which the plan keeps to the head's one row).
// The plan for each policy is made from the rates measured here. Prints one JSON line per policy
// and phase (also appended to --json-out) and a short table last.
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
#include "cpu_backend/compute_rates.h"
#include "cpu_backend/read_bandwidth.h"
#include "cpu_backend/thread_placement.h"
#include "gpu_backend/device_probe.h"
#include "offload/core/units.h"
#include "offload/exec/executor.h"
#include "offload/exec/gpu_executor.h"
#include "offload/exec/gpu_limits.h"
#include "offload/model/model_loader.h"
#include "policies/cost_model.h"
#include "policies/planner.h"

namespace {

using namespace strata;
using bench::check;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Offloaded tokens/s per policy under a VRAM budget, rooflines from the same run"};
  std::string model_path, json_out, scenario = "off-8b", model_name, commit, budget_text = "8GiB";
  std::string policies_text = "auto,gpu-first,stream,cpu";
  int decode_tokens = 32, prefill_tokens = 2048, prefetch_depth = 2, batch_seqs = 16;
  double read_gib = 4.0;
  app.add_option("-m,--model", model_path, "GGUF model (e.g. from strata synth)")->required();
  app.add_option("--model-name", model_name, "Name for the record (default: general.name)");
  app.add_option("--scenario", scenario, "Scenario id for the record");
  app.add_option("--vram-budget", budget_text, "The VRAM budget (default 8GiB)");
  app.add_option("--policies", policies_text, "Comma-separated policies to run");
  app.add_option("--prefetch-depth", prefetch_depth, "Layers streamed ahead (default 2)");
  app.add_option("--decode", decode_tokens, "Tokens to decode (batch 1; 0: skip)");
  app.add_option("--prefill", prefill_tokens, "Prompt tokens of the prefill phase (0: skip)");
  bool profile = false;
  app.add_flag("--profile", profile,
               "GPU time per op family in prefill (events between ops): matmul, attention, and "
               "'other', which also holds the waits for streamed weights (they sit before a "
               "layer's first norm)");
  double max_prefill_s = 20;
  app.add_option("--max-prefill-seconds", max_prefill_s,
                 "Skip the prefill of a policy whose plan predicts it takes longer (the CPU-bound "
                 "ones on large models; the skip is printed with the prediction)");
  app.add_option("--batch-seqs", batch_seqs,
                 "Sequences of the batched decode phase (Engine::forward_batch; 0: skip)");
  int64_t decode_phase_rows = 0;
  app.add_option("--decode-phase-rows", decode_phase_rows,
                 "GpuExecutorOptions::decode_phase_max_tokens: steps of at most this many rows "
                 "(the batched decode) run the decode placement (0: the executor's default, 16 "
                 "where the CPU has AMX tiles, else 8)");
  int64_t batch_ab_rows = 0;
  app.add_option("--batch-ab-rows", batch_ab_rows,
                 "Also run the batched decode on a second executor of the same plan with this "
                 "--decode-phase-rows (an A/B in one process; 0: no)");
  bool cpu_amx_int8 = true;
  app.add_option("--cpu-amx-int8", cpu_amx_int8,
                 "GpuExecutorOptions::cpu_amx_int8: the CPU's few-row Q8_0/Q4_0 products on the "
                 "AMX int8 tiles (else bf16 tiles)");
  int batch_ab_amx_int8 = -1;
  app.add_option("--batch-ab-cpu-amx-int8", batch_ab_amx_int8,
                 "Also run the batched decode on a second executor of the same plan with this "
                 "--cpu-amx-int8 (0 or 1; -1: no, unless --batch-ab-rows)");
  app.add_option("--read-gib", read_gib, "Buffers of the bandwidth measurements");
  app.add_option("--json-out", json_out, "Append JSON lines here");
  app.add_option("--commit", commit, "Commit id for the record");
  CLI11_PARSE(app, argc, argv);

  const GpuProbe probe = probe_gpu(0);
  if (!probe.usable) {
    std::fprintf(stderr, "offload_bench: no usable GPU: %s\n", probe.reason.c_str());
    return 1;
  }
  const int64_t budget = check(parse_byte_size("--vram-budget", budget_text), "--vram-budget");
  const ThreadPlacement placement = apply_thread_placement(default_thread_count());
  auto loaded = check(load_model(model_path), "load");
  const ModelSpec& spec = loaded.spec;
  const HyperParams& hp = spec.hp;
  if (model_name.empty()) model_name = spec.name;
  const std::string type_name = bench::layer_weight_type(spec);
  const int64_t chunk = std::min(prefill_tokens > 0 ? prefill_tokens : 512, 2048);

  // The limits, measured before the model loads (gpu_limits.h, as strata calibrate does).
  Caps caps = bench::measure_offload_limits(probe, hp, chunk, read_gib);
  {
    // The CPU decode GEMV on the model's own weight type, so that the plan charges CPU-run layers
    // what the kernels do on this host now (the read probe alone swings by tens of percent here).
    // Timed on the model's own mapped layers (the last ones, up to 2 GiB): synthetic copies in
    // a fresh allocation read much slower on this VM than the page cache of the model file.
    if (const TensorSpec* t = spec.find("blk.0.ffn_up.weight")) {
      std::vector<WeightMatrix> layers;
      int64_t bytes = 0;
      for (int64_t l = hp.n_layer - 1; l >= 0 && bytes < (int64_t{2} << 30); --l) {
        for (const char* name : {"ffn_gate", "ffn_up", "ffn_down", "attn_q", "attn_output"}) {
          const TensorSpec* m = spec.find("blk." + std::to_string(l) + "." + name + ".weight");
          if (m == nullptr || m->type != t->type) continue;
          layers.push_back(WeightMatrix{m->type, m->num_rows(), m->row_length(), m->data.data()});
          bytes += static_cast<int64_t>(m->size_bytes);
        }
      }
      const double gemv = check(cpu::measure_gemv_bytes_per_s(layers), "gemv");
      set_cpu_gemv_rate(t->type, gemv, &caps);
      std::fprintf(stderr, "CPU GEMV %s: %.1f GB/s (%.2f of C)\n", dtype_name(t->type), gemv / 1e9,
                   gemv / caps.cpu_read_bytes_per_s);
    }
    caps.source = "measured by offload_bench";
  }
  bench::print_offload_limits(caps, placement.num_threads);

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(hp.n_vocab - 1));
  std::vector<nlohmann::json> records;
  int64_t layer_params = 0, head_params = 0;
  for (const TensorSpec& t : spec.tensors) {
    if (t.ne.size() < 2) continue;
    if (t.name.rfind("blk.", 0) == 0) layer_params += t.num_elements();
    if (t.name == "output.weight" || (hp.tied_embeddings && t.name == "token_embd.weight")) {
      head_params += t.num_elements();
    }
  }

  for (const std::string& name : split(policies_text)) {
    Policy policy;
    policy.kind = check(parse_policy_kind(name), "--policies");
    policy.vram_budget_bytes = budget;
    policy.prefetch_depth = prefetch_depth;
    policy.context_tokens = std::max(prefill_tokens, decode_tokens + 32) + 64;
    policy.prefill_tokens = chunk;
    policy.kv_type = DType::kF16;
    const Plan plan = make_plan(spec, policy, caps);
    if (!plan.fits) {
      std::fprintf(stderr, "%s: does not fit in %s (needs %lld bytes)\n", name.c_str(),
                   budget_text.c_str(), static_cast<long long>(plan.min_vram_budget_bytes));
      continue;
    }
    ExecutorOptions base;
    base.max_context = policy.context_tokens;
    base.max_batch_tokens = chunk;
    base.kv_type = DType::kF16;
    base.attention_tile_tokens = 1024;
    const double t_load = now_s();
    std::unique_ptr<Engine> engine;
    GpuExecutor* gpu = nullptr;
    GpuExecutorOptions gpu_options;
    if (policy.kind == PolicyKind::kCpu) {
      base.prefill_precision = cpu::MatmulPrecision::kBF16;
      engine = check(Executor::create(spec, base), "Executor");
    } else {
      GpuExecutorOptions& o = gpu_options;
      o.base = base;
      o.vram_budget_bytes = plan.vram_budget_bytes;
      o.gemm_precision = gpu::GemmPrecision::kF16;
      o.profile = profile;
      o.placements = plan.tensors;
      o.prefetch_depth = prefetch_depth;
      o.decode_phase_max_tokens = decode_phase_rows;
      o.cpu_amx_int8 = cpu_amx_int8;
      auto exec = check(GpuExecutor::create(spec, o), "GpuExecutor");
      gpu = exec.get();
      engine = std::move(exec);
    }
    std::fprintf(stderr, "%s: loaded in %.1f s (plan: decode %.1f tok/s, prefill %.0f tok/s)\n",
                 name.c_str(), now_s() - t_load, plan.decode.tokens_per_s,
                 plan.prefill.tokens_per_s);

    auto record = [&](const std::string& phase, const Prediction& pred, double tps, double roof_tps,
                      const nlohmann::json& extra) {
      nlohmann::json r;
      r["scenario"] = scenario;
      r["model"] = model_name;
      r["type"] = type_name;
      r["phase"] = phase;
      r["policy"] = name;
      r["vram_budget_bytes"] = budget;
      r["batch"] = 1;
      r["tokens_per_s"] = tps;
      r["roofline_tokens_per_s"] = roof_tps;
      r["ratio_to_roofline"] = roof_tps > 0 ? tps / roof_tps : 0.0;
      r["predicted_tokens_per_s"] = pred.tokens_per_s;
      r["limits"] = {{"hbm_bytes_per_s", caps.hbm_bytes_per_s},
                     {"h2d_pinned_bytes_per_s", caps.h2d_pinned_bytes_per_s},
                     {"cpu_read_bytes_per_s", caps.cpu_read_bytes_per_s},
                     {"host_combined_bytes_per_s", caps.host_combined_bytes_per_s},
                     {"gemm_flop_per_s", caps.gpu_gemm_flop_per_s},
                     {"cpu_gemv_efficiency_dense", caps.cpu_gemv_efficiency_dense},
                     {"cpu_gemv_efficiency_4bit", caps.cpu_gemv_efficiency_4bit}};
      r["bytes_per_token"] = {
          {"vram", pred.vram_bytes}, {"stream", pred.stream_bytes}, {"cpu", pred.cpu_bytes}};
      if (gpu != nullptr) {
        r["peak_vram_bytes"] = gpu->device_stats()->peak_used_bytes;
        r["stream_copies"] = gpu->stream_stats().copies;
        r["stream_bytes_copied"] = gpu->stream_stats().bytes_copied;
        r["host_pinned_bytes"] = gpu->host_pool_stats().pinned_bytes;
        r["host_pageable_bytes"] = gpu->host_pool_stats().pageable_bytes;
      }
      r["device"] = engine->device_description();
      r["commit"] = commit;
      for (auto it = extra.begin(); it != extra.end(); ++it) r[it.key()] = it.value();
      records.push_back(r);
      // Appended as it is measured: a run cut short by a time limit keeps what it measured.
      if (!json_out.empty()) std::ofstream(json_out, std::ios::app) << r.dump() << "\n";
      std::printf("%s\n", r.dump().c_str());
    };

    // Host time of CPU-run matrices over a timed phase, per token: waiting for the GPU before
    // them, the CPU matmuls, and the CPU matmuls' weight read rate.
    auto host_times = [&](const OffloadTimes& before, double tokens) {
      nlohmann::json j = nlohmann::json::object();
      if (gpu == nullptr) return j;
      const OffloadTimes& now = gpu->offload_times();
      const double cpu_s = now.cpu_matmul_s - before.cpu_matmul_s;
      j["host_wait_ms_per_token"] = 1e3 * (now.host_wait_s - before.host_wait_s) / tokens;
      j["cpu_matmul_ms_per_token"] = 1e3 * cpu_s / tokens;
      j["cpu_part_ms_per_token"] = 1e3 * (now.cpu_s - before.cpu_s) / tokens;
      j["cpu_matmul_bytes_per_s"] =
          cpu_s > 0 ? static_cast<double>(now.cpu_weight_bytes - before.cpu_weight_bytes) / cpu_s
                    : 0.0;
      return j;
    };
    auto times_now = [&] { return gpu != nullptr ? gpu->offload_times() : OffloadTimes{}; };

    std::vector<float> logits;
    if (decode_tokens > 0) {
      check(engine->add_sequence(1), "seq");
      std::vector<int32_t> prompt(16);
      for (int32_t& t : prompt) t = tok(rng);
      check(engine->forward(1, prompt, false, &logits), "decode prompt");
      int32_t next = tok(rng);
      for (int i = 0; i < 3; ++i)
        check(engine->forward(1, std::span(&next, 1), false, &logits), "warm");
      const OffloadTimes times0 = times_now();
      const double t0 = now_s();
      for (int i = 0; i < decode_tokens; ++i) {
        next =
            static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        check(engine->forward(1, std::span(&next, 1), false, &logits), "decode");
      }
      const double tps = decode_tokens / (now_s() - t0);
      const Prediction& d = plan.decode;
      const double host_bytes = d.stream_bytes + d.cpu_bytes;
      const double roof_s =
          d.vram_bytes / caps.hbm_bytes_per_s + host_bytes / caps.host_combined_bytes_per_s;
      // The same with only the links this plan uses (P alone, C alone, or S for both).
      const double own_link = d.stream_bytes > 0 && d.cpu_bytes > 0 ? caps.host_combined_bytes_per_s
                              : d.stream_bytes > 0                  ? caps.h2d_pinned_bytes_per_s
                                                                    : caps.cpu_read_bytes_per_s;
      const double own_s = d.vram_bytes / caps.hbm_bytes_per_s + host_bytes / own_link;
      nlohmann::json extra = {
          {"context", 16 + 3 + decode_tokens / 2},
          {"roofline_own_links_tokens_per_s", own_s > 0 ? 1.0 / own_s : 0.0},
          {"weight_bytes_per_s", tps * (d.vram_bytes + d.stream_bytes + d.cpu_bytes)}};
      extra.update(host_times(times0, decode_tokens));
      record("decode", d, tps, roof_s > 0 ? 1.0 / roof_s : 0.0, extra);
      check(engine->remove_sequence(1), "seq");
      if (batch_seqs > 1) {
        // Batched decode: one forward_batch step per token of every sequence; each step reads
        // the weights once, so the roofline is batch_seqs tokens per T above (KV aside).
        auto batch_phase = [&](int64_t rows, bool amx_int8) {
          std::vector<SeqId> seqs;
          std::vector<int32_t> next_ids(static_cast<size_t>(batch_seqs));
          for (int b = 0; b < batch_seqs; ++b) {
            seqs.push_back(100 + b);
            check(engine->add_sequence(seqs.back()), "seq");
            check(engine->forward(seqs.back(), prompt, false, &logits), "batch prompt");
            next_ids[static_cast<size_t>(b)] = tok(rng);
          }
          check(engine->forward_batch(seqs, next_ids, &logits), "batch warm");
          const int steps = std::max(4, decode_tokens / 4);
          const OffloadTimes times_batch = times_now();
          const double tb = now_s();
          for (int i = 0; i < steps; ++i) {
            check(engine->forward_batch(seqs, next_ids, &logits), "batch decode");
          }
          const double btps = static_cast<double>(steps) * batch_seqs / (now_s() - tb);
          record("decode-batch", d, btps, roof_s > 0 ? batch_seqs / roof_s : 0.0,
                 {{"batch", batch_seqs},
                  {"context", 16 + 1 + steps / 2},
                  {"decode_phase_rows", rows},
                  {"cpu_amx_int8", amx_int8},
                  {"host", host_times(times_batch, static_cast<double>(steps) * batch_seqs)}});
          for (SeqId q : seqs) check(engine->remove_sequence(q), "seq");
        };
        batch_phase(decode_phase_rows, cpu_amx_int8);
        // The same plan on a second executor with other decode-phase rows: an A/B of the batched
        // step in one process (the plan rests on rates measured at the start, which swing by
        // tens of percent between processes on a shared host).
        if (gpu != nullptr && (batch_ab_rows > 0 || batch_ab_amx_int8 >= 0)) {
          GpuExecutorOptions o = gpu_options;
          if (batch_ab_rows > 0) o.decode_phase_max_tokens = batch_ab_rows;
          if (batch_ab_amx_int8 >= 0) o.cpu_amx_int8 = batch_ab_amx_int8 != 0;
          std::unique_ptr<Engine> other = check(GpuExecutor::create(spec, o), "GpuExecutor B");
          GpuExecutor* const gpu_a = gpu;
          gpu = static_cast<GpuExecutor*>(other.get());
          std::swap(engine, other);
          batch_phase(o.decode_phase_max_tokens, o.cpu_amx_int8);
          std::swap(engine, other);
          gpu = gpu_a;
        }
      }
    }
    const double predicted_prefill_s =
        plan.prefill.tokens_per_s > 0 ? prefill_tokens / plan.prefill.tokens_per_s : 0.0;
    if (prefill_tokens > 0 && predicted_prefill_s > max_prefill_s) {
      std::fprintf(stderr,
                   "%s: prefill skipped: the plan predicts %.0f s (%.1f tok/s), over "
                   "--max-prefill-seconds %.0f\n",
                   name.c_str(), predicted_prefill_s, plan.prefill.tokens_per_s, max_prefill_s);
    } else if (prefill_tokens > 0) {
      std::vector<int32_t> prompt(static_cast<size_t>(prefill_tokens));
      for (int32_t& t : prompt) t = tok(rng);
      double best = 1e30;
      const GpuProfile profile0 = gpu != nullptr ? gpu->profile() : GpuProfile{};
      // The first run finds cuBLAS's kernels; CPU-bound prefills (seconds) need no second.
      const int reps = policy.kind == PolicyKind::kCpu || predicted_prefill_s > 2 ? 1 : 2;
      for (int rep = 0; rep < reps; ++rep) {
        check(engine->add_sequence(2), "seq");
        const double t0 = now_s();
        check(engine->forward(2, prompt, false, &logits), "prefill");
        best = std::min(best, now_s() - t0);
        check(engine->remove_sequence(2), "seq");
      }
      const double n = prefill_tokens;
      const double attn_flops = 4.0 * hp.n_layer * hp.n_head * hp.head_dim * n * (n + 1) / 2;
      const double flops = 2.0 * static_cast<double>(layer_params) * n +
                           2.0 * static_cast<double>(head_params) + attn_flops;
      const Prediction& p = plan.prefill;
      const double passes = std::ceil(n / static_cast<double>(chunk));
      const double roof_s = policy.kind == PolicyKind::kCpu
                                ? flops / caps.cpu_gemm_flop_per_s
                                : std::max(passes * p.stream_bytes / caps.h2d_pinned_bytes_per_s,
                                           flops / caps.gpu_gemm_flop_per_s) +
                                      passes * p.cpu_bytes / caps.cpu_read_bytes_per_s;
      nlohmann::json extra = {
          {"context", prefill_tokens}, {"flop_per_s", flops / best}, {"chunk_tokens", chunk}};
      if (profile && gpu != nullptr) {  // milliseconds per prefill, over all its reps
        const GpuProfile& g = gpu->profile();
        const double per = reps;
        extra["profile_ms"] = {{"matmul", (g.matmul_ms - profile0.matmul_ms) / per},
                               {"attention", (g.attention_ms - profile0.attention_ms) / per},
                               {"other_and_waits", (g.other_ms - profile0.other_ms) / per},
                               {"logits", (g.logits_ms - profile0.logits_ms) / per}};
        std::fprintf(stderr, "%s prefill profile (ms): %s\n", name.c_str(),
                     extra["profile_ms"].dump().c_str());
      }
      record("prefill", p, n / best, n / roof_s, extra);
    }
  }
  std::fprintf(stderr, "\n%-12s %-6s %-10s %-8s %10s %10s %6s %10s  %s\n", "model", "type",
               "policy", "phase", "tok/s", "roof", "ratio", "predicted",
               "host wait / cpu ms per token, cpu GB/s");
  for (const auto& r : records) {
    std::string host;
    if (r.contains("host_wait_ms_per_token")) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%.1f / %.1f, %.1f", r["host_wait_ms_per_token"].get<double>(),
                    r["cpu_matmul_ms_per_token"].get<double>(),
                    r["cpu_matmul_bytes_per_s"].get<double>() / 1e9);
      host = buf;
    }
    std::fprintf(stderr, "%-12s %-6s %-10s %-8s %10.1f %10.1f %6.3f %10.1f  %s\n",
                 r["model"].get<std::string>().c_str(), r["type"].get<std::string>().c_str(),
                 r["policy"].get<std::string>().c_str(), r["phase"].get<std::string>().c_str(),
                 r["tokens_per_s"].get<double>(), r["roofline_tokens_per_s"].get<double>(),
                 r["ratio_to_roofline"].get<double>(), r["predicted_tokens_per_s"].get<double>(),
                 host.c_str());
  }
  return 0;
}
