// gpu_e2e_bench: end-to-end tokens/s of a model held entirely in VRAM (scenario gpu-8b in
// ../shared/BENCHMARKS.md), with its rooflines measured in the same run:
//   decode  (batch 1): T = B / H, B = weight bytes read per token, H = HBM read bandwidth
//                      (16-byte loads over >= 4 GiB);
//   prefill (N tokens): T = FLOPs / G, FLOPs = 2 * matmul params * N + attention, G = the cuBLAS
//                       GEMM rate in the prefill precision on the model's largest prefill shape
//                       (random data).
// Prints one JSON line per phase (also appended to --json-out) and a short table last.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "bench/bench_check.h"
#include "gpu_backend/cublas.h"
#include "gpu_backend/cuda_device_allocator.h"
#include "gpu_backend/device_probe.h"
#include "gpu_backend/probes.h"
#include "offload/exec/gpu_executor.h"
#include "offload/model/model_loader.h"

namespace {

using namespace strata;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

using bench::check;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"End-to-end GPU tokens/s (whole model in VRAM) with rooflines from the same run"};
  std::string model_path, json_out, scenario = "gpu-8b", model_name, commit, precision = "f16";
  int decode_tokens = 64, prefill_tokens = 2048, batch = 2048;
  bool profile = false;
  bool ncu_step = false;
  bool fold_norms = true;
  bool fuse_rope_store = true;
  bool int8_activations = false;
  bool int8_quantize_in_gemv = false;
  double l2_prefetch_mib = 0;
  double read_gib = 4.0;
  app.add_option("-m,--model", model_path, "GGUF model (e.g. from strata synth)")->required();
  app.add_option("--model-name", model_name, "Name for the record (default: general.name)");
  app.add_option("--scenario", scenario, "Scenario id for the record");
  app.add_option("--decode", decode_tokens, "Tokens to decode (batch 1)");
  app.add_option("--prefill", prefill_tokens, "Prompt tokens for the prefill phase (0: skip)");
  app.add_option("--batch", batch, "Prefill chunk (tokens per forward call)");
  app.add_option("--precision", precision, "Prefill GEMM inputs: f16 or f32")
      ->check(CLI::IsMember({"f16", "f32"}));
  app.add_option("--read-gib", read_gib, "Buffer for the HBM read-bandwidth measurement");
  app.add_option("--json-out", json_out, "Append JSON lines here");
  app.add_option("--fold-norms", fold_norms,
                 "Fold RMSNorm into the decode GEMVs (GpuExecutorOptions::fold_norms)");
  app.add_option("--fuse-rope-store", fuse_rope_store,
                 "RoPE and the KV store in the QKV GEMV (GpuExecutorOptions::fuse_rope_store)");
  app.add_option("--int8-activations", int8_activations,
                 "Q8_0/Q4_0 decode GEMVs over 8-bit activations, dp4a "
                 "(GpuExecutorOptions::int8_activations)");
  app.add_option("--int8-quantize-in-gemv", int8_quantize_in_gemv,
                 "With --int8-activations: each GEMV quantizes its output for the next "
                 "(GpuExecutorOptions::int8_quantize_in_gemv); 0: a quantize kernel per GEMV");
  app.add_option("--l2-prefetch-mib", l2_prefetch_mib,
                 "MiB of the matrices after attention fetched into L2 while it runs "
                 "(GpuExecutorOptions::l2_prefetch_bytes); -1: half the L2, 0: off");
  app.add_flag("--ncu-step", ncu_step,
               "Bracket one warm decode step with cudaProfilerStart/Stop (for ncu "
               "--profile-from-start off)");
  app.add_flag("--profile", profile, "Per-op GPU time (events between ops; slows decode a little)");
  app.add_option("--commit", commit, "Commit id for the record");
  CLI11_PARSE(app, argc, argv);

  const GpuProbe probe = probe_gpu(0);
  if (!probe.usable) {
    std::fprintf(stderr, "gpu_e2e_bench: no usable GPU: %s\n", probe.reason.c_str());
    return 1;
  }
  auto loaded = check(load_model(model_path), "load");
  const ModelSpec& spec = loaded.spec;
  const HyperParams& hp = spec.hp;
  if (model_name.empty()) model_name = spec.name;
  // Decode reads every matrix once per token (the embedding: one row). Prefill multiplies every
  // layer matrix with all N tokens, and the output head with the last token only.
  uint64_t bytes_per_token = 0, layer_params = 0, head_params = 0;
  for (const TensorSpec& t : spec.tensors) {
    const bool embd_only = t.name == "token_embd.weight" && !hp.tied_embeddings;
    if (t.ne.size() < 2) {
      bytes_per_token += t.size_bytes;  // norms, biases
      continue;
    }
    bytes_per_token += embd_only ? t.size_bytes / t.num_rows() : t.size_bytes;
    if (t.name.rfind("blk.", 0) == 0) layer_params += t.num_elements();
    if (t.name == "output.weight" || (hp.tied_embeddings && t.name == "token_embd.weight")) {
      head_params += t.num_elements();
    }
  }
  std::string type_name = "mixed";
  if (const TensorSpec* t = spec.find("blk.0.ffn_up.weight")) type_name = dtype_name(t->type);

  // The limits first, each in an arena of its own that is gone before the model loads.
  auto stream = check(cuda::Stream::create(), "stream");
  double H = 0, G = 0;
  const DType gemm_type = precision == "f16" ? DType::kF16 : DType::kF32;
  {
    DeviceArenaOptions o;
    o.budget_bytes = static_cast<int64_t>(read_gib * (1ll << 30)) + (int64_t{2} << 30);
    auto arena = check(DeviceArena::create(o, make_cuda_device_allocator(0)), "arena");
    const auto bw = check(gpu::measure_hbm_read_bandwidth(
                              *arena, static_cast<int64_t>(read_gib * (1ll << 30)), 10, stream),
                          "hbm");
    H = bw.best_bytes_per_s;
    std::fprintf(stderr, "HBM read: best %.0f GB/s, median %.0f GB/s over %.1f GiB\n", H / 1e9,
                 bw.median_bytes_per_s / 1e9, read_gib);
  }
  if (prefill_tokens > 0) {
    DeviceArenaOptions o;
    o.budget_bytes = int64_t{8} << 30;
    auto arena = check(DeviceArena::create(o, make_cuda_device_allocator(0)), "arena");
    G = check(gpu::measure_gemm_flop_per_s(*arena, stream, gemm_type, hp.n_ff,
                                           std::min(prefill_tokens, batch), hp.n_embd),
              "gemm probe");
    std::fprintf(stderr, "cuBLAS %s GEMM %lldx%lldx%lld: %.1f TFLOP/s\n", precision.c_str(),
                 static_cast<long long>(std::min(prefill_tokens, batch)),
                 static_cast<long long>(hp.n_ff), static_cast<long long>(hp.n_embd), G / 1e12);
  }

  GpuExecutorOptions opts;
  opts.base.max_context = std::max<int64_t>(prefill_tokens + 16, decode_tokens + 64);
  opts.base.max_batch_tokens = batch;
  opts.base.kv_type = DType::kF16;
  opts.base.gemm_attention_min_tokens = 32;
  opts.base.attention_tile_tokens = 1024;
  opts.gemm_precision = precision == "f16" ? gpu::GemmPrecision::kF16 : gpu::GemmPrecision::kF32;
  opts.profile = profile;
  opts.fold_norms = fold_norms;
  opts.fuse_rope_store = fuse_rope_store;
  opts.int8_activations = int8_activations;
  opts.int8_quantize_in_gemv = int8_quantize_in_gemv;
  opts.l2_prefetch_bytes =
      l2_prefetch_mib < 0 ? -1 : static_cast<int64_t>(l2_prefetch_mib * 1024 * 1024);
  const double t_load = now_s();
  auto exec = check(GpuExecutor::create(spec, opts), "GpuExecutor");
  std::fprintf(stderr, "loaded %s (%s) into VRAM in %.1f s\n", model_name.c_str(),
               type_name.c_str(), now_s() - t_load);

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(hp.n_vocab - 1));
  std::vector<float> logits;
  std::vector<nlohmann::json> records;
  GpuProfile last_profile;
  // Per-op GPU milliseconds per token (decode) or per prefill, since the last call.
  auto profile_json = [&](double per) -> nlohmann::json {
    const GpuProfile& p = exec->profile();
    nlohmann::json j = {{"matmul_ms", (p.matmul_ms - last_profile.matmul_ms) / per},
                        {"attention_ms", (p.attention_ms - last_profile.attention_ms) / per},
                        {"other_ms", (p.other_ms - last_profile.other_ms) / per},
                        {"logits_ms", (p.logits_ms - last_profile.logits_ms) / per}};
    last_profile = p;
    return j;
  };
  auto record = [&](const std::string& phase, int64_t context, double tps, double roof_tps,
                    const nlohmann::json& extra) {
    nlohmann::json r;
    r["scenario"] = scenario;
    r["model"] = model_name;
    r["type"] = type_name;
    r["phase"] = phase;
    r["policy"] = "gpu";
    r["fold_norms"] = fold_norms;
    r["fuse_rope_store"] = fuse_rope_store;
    r["int8_activations"] = int8_activations;
    r["int8_quantize_in_gemv"] = int8_quantize_in_gemv;
    r["l2_prefetch_mib"] = l2_prefetch_mib;
    r["vram_budget_bytes"] = exec->device_stats()->budget_bytes;
    r["batch"] = 1;
    r["context"] = context;
    r["tokens_per_s"] = tps;
    r["roofline_tokens_per_s"] = roof_tps;
    r["ratio_to_roofline"] = roof_tps > 0 ? tps / roof_tps : 0.0;
    r["limits"] = {{"hbm_bytes_per_s", H},
                   {"h2d_pinned_bytes_per_s", 0},
                   {"cpu_read_bytes_per_s", 0},
                   {"host_combined_bytes_per_s", 0},
                   {"gemm_flop_per_s", G}};
    r["bytes_per_token"] = {
        {"vram", bytes_per_token}, {"stream", 0}, {"cpu", 0}, {"kv_vram", 0}, {"kv_host", 0}};
    r["peak_vram_bytes"] = exec->device_stats()->peak_used_bytes;
    r["device"] = exec->device_description();
    r["commit"] = commit;
    for (auto it = extra.begin(); it != extra.end(); ++it) r[it.key()] = it.value();
    records.push_back(r);
    std::printf("%s\n", r.dump().c_str());
  };

  if (decode_tokens > 0) {
    check(exec->add_sequence(1), "seq");
    std::vector<int32_t> prompt(16);
    for (int32_t& t : prompt) t = tok(rng);
    check(exec->forward(1, prompt, false, &logits), "decode prompt");
    int32_t next = tok(rng);
    for (int i = 0; i < 4; ++i)
      check(exec->forward(1, std::span(&next, 1), false, &logits), "warm");
    if (ncu_step) {  // one step as the timed ones run it (its graph is captured by now)
      check(cuda::profiler_start(), "profiler");
      check(exec->forward(1, std::span(&next, 1), false, &logits), "profiled step");
      check(cuda::profiler_stop(), "profiler");
    }
    profile_json(1);  // reset
    const double t0 = now_s();
    for (int i = 0; i < decode_tokens; ++i) {
      next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      check(exec->forward(1, std::span(&next, 1), false, &logits), "decode");
    }
    const double s = now_s() - t0;
    const double tps = decode_tokens / s;
    record(
        "decode", static_cast<int64_t>(prompt.size()) + 4 + decode_tokens / 2, tps,
        H / static_cast<double>(bytes_per_token),
        {{"weight_bytes_per_s", tps * static_cast<double>(bytes_per_token)},
         {"ratio_to_hbm", tps * static_cast<double>(bytes_per_token) / H},
         {"gpu_profile_ms_per_token", profile ? profile_json(decode_tokens) : nlohmann::json()}});
    check(exec->remove_sequence(1), "seq");
  }
  if (prefill_tokens > 0) {
    std::vector<int32_t> prompt(static_cast<size_t>(prefill_tokens));
    for (int32_t& t : prompt) t = tok(rng);
    double best = 1e30;
    nlohmann::json best_profile;
    for (int rep = 0; rep < 3; ++rep) {  // the first run finds cuBLAS's kernels; keep the best
      profile_json(1);
      check(exec->add_sequence(2), "seq");
      check(exec->synchronize(), "sync");
      const double t0 = now_s();
      check(exec->forward(2, prompt, false, &logits), "prefill");
      const double s = now_s() - t0;
      if (s < best) {
        best = s;
        if (profile) best_profile = profile_json(1);
      }
      check(exec->remove_sequence(2), "seq");
    }
    const double n = prefill_tokens;
    // Attention: QK^T and PV over the causal triangle, 2 FLOPs per multiply-add.
    const double attn_flops = 4.0 * hp.n_layer * hp.n_head * hp.head_dim * n * (n + 1) / 2;
    const double flops = 2.0 * static_cast<double>(layer_params) * n +
                         2.0 * static_cast<double>(head_params) + attn_flops;
    const double tps = n / best;
    record("prefill", prefill_tokens, tps, G > 0 ? n / (flops / G) : 0.0,
           {{"flop_per_s", flops / best},
            {"ratio_to_gemm_peak", flops / best / G},
            {"prefill_precision", precision},
            {"gpu_profile_ms", best_profile}});
  }
  if (!json_out.empty()) {
    std::ofstream out(json_out, std::ios::app);
    for (const auto& r : records) out << r.dump() << "\n";
  }
  std::fprintf(stderr, "\n%-8s %-6s %-8s %10s %10s %6s\n", "model", "type", "phase", "tok/s",
               "roof", "ratio");
  for (const auto& r : records) {
    std::fprintf(stderr, "%-8s %-6s %-8s %10.1f %10.1f %6.3f\n",
                 r["model"].get<std::string>().c_str(), r["type"].get<std::string>().c_str(),
                 r["phase"].get<std::string>().c_str(), r["tokens_per_s"].get<double>(),
                 r["roofline_tokens_per_s"].get<double>(), r["ratio_to_roofline"].get<double>());
  }
  return 0;
}
