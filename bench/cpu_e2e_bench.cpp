// cpu_e2e_bench: end-to-end CPU-only tokens/s of a model (scenario cpu-8b in
// ../shared/BENCHMARKS.md) with its rooflines measured in the same run:
//   decode  (batch 1): T = B / C, B = weight bytes read per token, C = all-core read bandwidth;
//   prefill (N tokens): T = max(B / C, 2 * params * N / G), G = in bf16 on a CPU with AMX the
//                       tile unit's own rate (measure_amx_bf16_peak_flop_per_s: the executor's
//                       matmuls run on the AMX kernel there), else oneDNN's GEMM rate on the
//                       model's FFN shape in the prefill precision (recorded either way).
// Prints one JSON line per phase (also appended to --json-out) and a short table last.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <dnnl.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "bench/bench_check.h"
#include "bench/onednn_gemm_rate.h"
#include "cpu_backend/gemm_amx.h"
#include "cpu_backend/read_bandwidth.h"
#include "cpu_backend/thread_placement.h"
#include "offload/exec/executor.h"
#include "offload/model/model_loader.h"

int main(int argc, char** argv) {
  using namespace strata;
  CLI::App app{"End-to-end CPU-only tokens/s with rooflines measured in the same run"};
  std::string model_path, json_out, scenario = "cpu-8b", model_name = "", commit = "", device = "";
  int threads = 0, decode_tokens = 64, prefill_tokens = 2048;
  double read_gib = 4.0;
  std::string precision = "bf16";
  std::string activations = "f32";
  std::vector<std::string> attentions = {"amx"};
  app.add_option("-m,--model", model_path, "GGUF model (e.g. from strata synth)")->required();
  app.add_option("--model-name", model_name, "Name for the record (default: general.name)");
  app.add_option("--scenario", scenario, "Scenario id for the record");
  app.add_option("-t,--threads", threads, "Threads (default: physical cores)");
  app.add_option("--decode", decode_tokens, "Tokens to decode (batch 1)");
  app.add_option("--prefill", prefill_tokens, "Prompt tokens for the prefill phase (0: skip)");
  app.add_option("--prefill-precision", precision, "f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--decode-activations", activations,
                 "f32 (exact) or int8 (the integer GEMV, like_llama_cpp tier)")
      ->check(CLI::IsMember({"f32", "int8"}));
  app.add_option("--prefill-attention", attentions,
                 "amx and/or onednn (comma list): the bf16 prefill's attention kernel, one prefill "
                 "per entry in this run (amx falls back to onednn without AMX tiles)")
      ->delimiter(',')
      ->check(CLI::IsMember({"amx", "onednn"}));
  app.add_option("--read-gib", read_gib, "Buffer for the read-bandwidth measurement");
  app.add_option("--json-out", json_out, "Append JSON lines here");
  app.add_option("--commit", commit, "Commit id for the record");
  app.add_option("--device-name", device, "Device description for the record");
  CLI11_PARSE(app, argc, argv);

  const ThreadPlacement placement =
      apply_thread_placement(threads > 0 ? threads : default_thread_count());
  auto loaded = load_model(model_path);
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().to_string().c_str());
    return 1;
  }
  const ModelSpec& spec = loaded->spec;
  if (model_name.empty()) model_name = spec.name;
  // Bytes one decode step reads: every matrix once, but only one row of the embedding (unless
  // it is also the output head).
  uint64_t bytes_per_token = 0, params = 0;
  for (const TensorSpec& t : spec.tensors) {
    const bool embd_only = t.name == "token_embd.weight" && !spec.hp.tied_embeddings;
    bytes_per_token += embd_only ? t.size_bytes / t.num_rows() : t.size_bytes;
    if (!embd_only) params += t.num_elements();
  }
  std::string type_name = "mixed";
  if (const TensorSpec* t = spec.find("blk.0.ffn_up.weight")) type_name = dtype_name(t->type);

  std::fprintf(stderr, "measuring CPU read bandwidth over %.1f GiB with %d threads...\n", read_gib,
               placement.num_threads);
  const cpu::ReadBandwidth bw =
      cpu::measure_cpu_read_bandwidth(static_cast<int64_t>(read_gib * (1ll << 30)), 7);
  const double C = bw.best_bytes_per_s;
  const auto gemm_dt =
      precision == "bf16" ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  const double G_onednn =
      prefill_tokens > 0
          ? bench::measure_gemm_flops(prefill_tokens, spec.hp.n_embd, spec.hp.n_ff, gemm_dt)
          : 0.0;
  const bool amx = precision == "bf16" && cpu::amx_bf16_available();
  const double G =
      amx ? bench::check(cpu::measure_amx_bf16_peak_flop_per_s(), "AMX peak") : G_onednn;

  ExecutorOptions opts;
  opts.max_context =
      std::min<int64_t>(spec.hp.n_ctx_train, std::max(prefill_tokens, 256) + decode_tokens + 64);
  opts.max_batch_tokens = std::max(prefill_tokens, 1);
  opts.prefill_precision =
      precision == "bf16" ? cpu::MatmulPrecision::kBF16 : cpu::MatmulPrecision::kF32;
  opts.int8_activations = activations == "int8";
  opts.profile = true;
  opts.amx_attention = attentions.front() == "amx";
  auto exec_or = Executor::create(spec, opts);
  if (!exec_or.is_ok()) {
    std::fprintf(stderr, "%s\n", exec_or.status().to_string().c_str());
    return 1;
  }
  Executor& exec = **exec_or;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(spec.hp.n_vocab - 1));
  std::vector<float> logits;
  auto check = [](const Status& s) {
    if (!s.is_ok()) {
      std::fprintf(stderr, "%s\n", s.to_string().c_str());
      std::exit(1);
    }
  };

  nlohmann::json base = {
      {"scenario", scenario},
      {"model", model_name},
      {"type", type_name},
      {"policy", "cpu"},
      {"decode_activations", activations},
      {"vram_budget_bytes", 0},
      {"batch", 1},
      {"peak_vram_bytes", 0},
      {"device", device},
      {"commit", commit},
      {"threads", placement.num_threads},
      {"limits",
       {{"hbm_bytes_per_s", 0},
        {"h2d_pinned_bytes_per_s", 0},
        {"cpu_read_bytes_per_s", C},
        {"host_combined_bytes_per_s", 0},
        {"gemm_flop_per_s", G},
        {"onednn_gemm_flop_per_s", G_onednn}}},
      {"prefill_kernel", amx ? "amx" : "onednn"},
      {"bytes_per_token",
       {{"vram", 0}, {"stream", 0}, {"cpu", bytes_per_token}, {"kv_vram", 0}, {"kv_host", 0}}}};
  std::vector<nlohmann::json> records;

  // Warm-up: one token through every layer, so page faults of the mapping are not timed.
  check(exec.add_sequence(0));
  int32_t first = tok(rng);
  check(exec.forward(0, std::span(&first, 1), false, &logits));
  check(exec.remove_sequence(0));

  for (const std::string& attention :
       prefill_tokens > 0 ? attentions : std::vector<std::string>{}) {
    // Each attention kernel gets its own executor over the same mapped model.
    std::unique_ptr<Executor> other;
    Executor* e = &exec;
    if (attention != attentions.front()) {
      ExecutorOptions o = opts;
      o.amx_attention = attention == "amx";
      auto made = Executor::create(spec, o);
      check(made.status());
      other = std::move(*made);
      e = other.get();
    }
    std::vector<int32_t> prompt(prefill_tokens);
    for (auto& t : prompt) t = tok(rng);
    check(e->add_sequence(1));
    const ExecutorProfile p0 = e->profile();
    const double t0 = bench::now_s();
    check(e->forward(1, prompt, false, &logits));
    const double secs = bench::now_s() - t0;
    const ExecutorProfile& p1 = e->profile();
    const double matmul_s = p1.matmul_s - p0.matmul_s,
                 attention_s = p1.attention_s - p0.attention_s,
                 other_s = p1.other_s() - p0.other_s();
    std::fprintf(stderr,
                 "prefill (%s attention) %.2f s: matmul %.2f s, attention %.2f s, other %.2f s; "
                 "oneDNN ISA %d\n",
                 attention.c_str(), secs, matmul_s, attention_s, other_s,
                 static_cast<int>(dnnl::get_effective_cpu_isa()));
    check(e->remove_sequence(1));
    const double roof_s = std::max(bytes_per_token / C, 2.0 * params * prefill_tokens / G);
    nlohmann::json r = base;
    r["phase"] = "prefill";
    r["context"] = prefill_tokens;
    r["batch"] = prefill_tokens;
    r["prefill_precision"] = precision;
    r["prefill_attention"] = amx && attention == "amx" ? "amx" : "onednn";
    r["seconds"] = {{"matmul", matmul_s}, {"attention", attention_s}, {"other", other_s}};
    r["tokens_per_s"] = prefill_tokens / secs;
    r["roofline_tokens_per_s"] = prefill_tokens / roof_s;
    r["ratio_to_roofline"] = roof_s / secs;
    r["achieved_flop_per_s"] = 2.0 * params * prefill_tokens / secs;
    records.push_back(r);
  }
  {
    check(exec.add_sequence(2));
    std::vector<int32_t> prompt(16);
    for (auto& t : prompt) t = tok(rng);
    check(exec.forward(2, prompt, false, &logits));
    const ExecutorProfile p0 = exec.profile();
    const double t0 = bench::now_s();
    for (int i = 0; i < decode_tokens; ++i) {
      int32_t next = tok(rng);
      check(exec.forward(2, std::span(&next, 1), false, &logits));
    }
    const double secs = bench::now_s() - t0;
    const ExecutorProfile& p1 = exec.profile();
    std::fprintf(stderr, "decode %.2f s: matmul %.2f s, attention %.2f s, other %.2f s\n", secs,
                 p1.matmul_s - p0.matmul_s, p1.attention_s - p0.attention_s,
                 p1.other_s() - p0.other_s());
    const double tps = decode_tokens / secs;
    nlohmann::json r = base;
    r["phase"] = "decode";
    r["context"] = 16 + decode_tokens;
    r["tokens_per_s"] = tps;
    r["roofline_tokens_per_s"] = C / bytes_per_token;
    r["ratio_to_roofline"] = tps / (C / bytes_per_token);
    r["weight_bytes_per_s"] = tps * bytes_per_token;
    records.push_back(r);
  }
  std::ofstream out;
  if (!json_out.empty()) out.open(json_out, std::ios::app);
  for (const auto& r : records) {
    std::printf("%s\n", r.dump().c_str());
    if (out) out << r.dump() << "\n";
  }
  std::printf(
      "\n%-8s %-6s %-14s %10s %10s %7s   C %.1f GB/s, G %.2f TFLOP/s (%s, %s; oneDNN %.2f)\n",
      "model", "type", "phase", "tok/s", "roof tok/s", "ratio", C / 1e9, G / 1e12,
      precision.c_str(), amx ? "AMX tile peak" : "oneDNN", G_onednn / 1e12);
  for (const auto& r : records) {
    const std::string phase =
        r["phase"].get<std::string>() +
        (r.contains("prefill_attention") ? "/" + r["prefill_attention"].get<std::string>() : "");
    std::printf("%-8s %-6s %-14s %10.2f %10.2f %7.3f\n", model_name.substr(0, 8).c_str(),
                type_name.c_str(), phase.c_str(), r["tokens_per_s"].get<double>(),
                r["roofline_tokens_per_s"].get<double>(), r["ratio_to_roofline"].get<double>());
  }
  return 0;
}
