// cpu_gemm_bench: the CPU prefill matmul (many tokens x a weight matrix as stored) against the
// AMX tile unit's own rate measured in the same run (bench/NOTES.md, "CPU prefill on AMX").
// For each weight type and shape it times AmxGemm under each config of the sweep, CpuMatmul's
// oneDNN path (dequantized tiles, reorder, matmul: what ran before AmxGemm), and oneDNN's bare
// matmul on pre-blocked bf16 weights (its best case, no dequantization); for Q8_0 / Q4_0 also
// CpuMatmul's int8 tile path (AmxInt8Gemm's panels, x quantized per 32 included), against the
// int8 unit's rate at K = 32. One JSON line per measurement (also appended to --json-out), a
// table last.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_check.h"
#include "bench/onednn_gemm_rate.h"
#include "cpu_backend/gemm_amx.h"
#include "cpu_backend/matmul.h"
#include "cpu_backend/thread_placement.h"
#include "offload/core/quantize.h"

namespace strata::bench {
namespace {

// A rows x cols matrix of `type` quantized from N(0, 1) values (threads over rows).
std::vector<uint8_t> random_matrix(DType type, int64_t rows, int64_t cols) {
  const int64_t stride = row_bytes(type, cols);
  std::vector<uint8_t> w(rows * stride);
  Status status;
#pragma omp parallel
  {
    std::mt19937 rng(1234 + omp_get_thread_num());
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> row(cols);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : row) v = nd(rng);
      const Status s = quantize_row(type, row.data(), w.data() + r * stride, cols);
      if (!s.is_ok()) {
#pragma omp critical
        status = s;
      }
    }
  }
  check(status, "quantize");
  return w;
}

// Median seconds of `runs` calls after one warm-up.
template <class F>
double median_s(int runs, F&& f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const double t0 = now_s();
    f();
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t next = s.find(',', pos);
    out.push_back(s.substr(pos, next - pos));
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  return out;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  for (const std::string& e : split(s)) out.push_back(std::stoll(e));
  return out;
}

// "KxN" -> {K, N}.
std::pair<int64_t, int64_t> parse_shape(const std::string& s) {
  const size_t x = s.find('x');
  return {std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1))};
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  using namespace strata;
  using namespace strata::bench;
  CLI::App app{"CPU prefill matmul against the AMX tile unit's measured rate"};
  int threads = 0, runs = 3;
  int64_t tokens = 2048;
  std::string types = "F16,Q8_0,Q4_0", shapes = "4096x14336,14336x4096,4096x4096";
  std::string unit_rows = "128", unit_tokens = "256", k_chunks = "1024", json_out, commit, device;
  int64_t tile_mib = 8;
  bool onednn = true, amx_bf16 = true, amx_int8 = true;
  app.add_option("-t,--threads", threads, "Threads (default: physical cores)");
  app.add_option("--tokens", tokens, "Tokens (rows of X)");
  app.add_option("--types", types, "Weight types, comma-separated");
  app.add_option("--shapes", shapes, "KxN (input x output features), comma-separated");
  app.add_option("--unit-rows", unit_rows, "AmxGemm unit rows to sweep, comma-separated");
  app.add_option("--unit-tokens", unit_tokens, "AmxGemm unit tokens to sweep");
  app.add_option("--k-chunk", k_chunks, "AmxGemm K chunks to sweep");
  app.add_option("--tile-mib", tile_mib, "MiB of bf16 weights per slab");
  app.add_option("--runs", runs, "Timed runs per measurement (median)");
  app.add_option("--onednn", onednn, "Also time the oneDNN paths");
  app.add_option("--amx-bf16", amx_bf16, "Time AmxGemm (the bf16 tiles) over the sweep");
  app.add_option("--amx-int8", amx_int8, "Time the int8 tiles (Q8_0 / Q4_0)");
  app.add_option("--json-out", json_out, "Append JSON lines here");
  app.add_option("--commit", commit, "Commit id for the record");
  app.add_option("--device-name", device, "Device description for the record");
  CLI11_PARSE(app, argc, argv);

  const ThreadPlacement placement =
      apply_thread_placement(threads > 0 ? threads : default_thread_count());
  const bool amx = cpu::amx_bf16_available();
  const double peak = amx ? check(cpu::measure_amx_bf16_peak_flop_per_s(), "AMX peak") : 0.0;
  double peak_1 = 0;
  if (amx) {
    omp_set_num_threads(1);
    peak_1 = check(cpu::measure_amx_bf16_peak_flop_per_s(), "AMX peak, 1 thread");
    omp_set_num_threads(placement.num_threads);
  }
  std::fprintf(stderr, "AMX-BF16 %s; tile peak %.2f TFLOP/s on %d threads (%.3f on 1)\n",
               amx ? "yes" : "no", peak / 1e12, placement.num_threads, peak_1 / 1e12);
  // The int8 unit's rate at K = 32 (one Q8_0 block per TDPBSSD: AmxInt8Gemm's roofline) and 64.
  double int8_k32 = 0, int8_k64 = 0;
  if (amx) {
    if (auto r = cpu::measure_amx_int8_peak_op_per_s(32); r.is_ok()) int8_k32 = *r;
    if (auto r = cpu::measure_amx_int8_peak_op_per_s(64); r.is_ok()) int8_k64 = *r;
    std::fprintf(stderr, "AMX-INT8 tile peak: K=32 %.2f TOP/s, K=64 %.2f TOP/s\n", int8_k32 / 1e12,
                 int8_k64 / 1e12);
  }

  std::ofstream out;
  if (!json_out.empty()) out.open(json_out, std::ios::app);
  std::vector<nlohmann::json> records;
  auto emit = [&](nlohmann::json r) {
    r["bench"] = "cpu_gemm";
    r["tokens"] = tokens;
    r["threads"] = placement.num_threads;
    r["commit"] = commit;
    r["device"] = device;
    r["limits"] = {{"amx_peak_flop_per_s", peak},
                   {"amx_peak_flop_per_s_1thread", peak_1},
                   {"amx_int8_peak_op_per_s_k32", int8_k32},
                   {"amx_int8_peak_op_per_s_k64", int8_k64}};
    r["ratio_to_peak"] = peak > 0 ? r["flop_per_s"].get<double>() / peak : 0.0;
    r["ratio_to_int8_k32"] = int8_k32 > 0 ? r["flop_per_s"].get<double>() / int8_k32 : 0.0;
    std::printf("%s\n", r.dump().c_str());
    if (out) out << r.dump() << "\n";
    records.push_back(r);
  };

  const std::vector<std::string> type_names = split(types), shape_names = split(shapes);
  for (const std::string& type_name : type_names) {
    const auto type = dtype_from_name(type_name);
    if (!type) check(Status::invalid_argument("unknown type " + type_name), "--types");
    for (const std::string& shape : shape_names) {
      const auto [k, n] = parse_shape(shape);
      const std::vector<uint8_t> w_bytes = random_matrix(*type, n, k);
      const WeightMatrix w{*type, n, k, w_bytes.data()};
      std::vector<float> xs(tokens * k), y(tokens * n);
      {
        std::mt19937 rng(7);
        std::normal_distribution<float> nd(0.f, 1.f);
        for (float& v : xs) v = nd(rng);
      }
      const double flops = 2.0 * tokens * k * n;
      nlohmann::json base = {{"type", type_name}, {"k", k}, {"n", n}};
      if (amx && amx_bf16) {
        for (int64_t ur : parse_list(unit_rows)) {
          for (int64_t ut : parse_list(unit_tokens)) {
            for (int64_t kc : parse_list(k_chunks)) {
              cpu::AmxGemmConfig cfg;
              cfg.unit_rows = ur;
              cfg.unit_tokens = ut;
              cfg.k_chunk = kc;
              cfg.tile_bytes = tile_mib << 20;
              cpu::AmxGemm gemm(cfg);
              const double s = median_s(
                  runs, [&] { check(gemm.run(w, xs.data(), tokens, y.data(), n), "AmxGemm"); });
              // Phase means over every call (the warm-up included): where a call's time goes.
              const cpu::AmxGemmTimes& ph = gemm.times();
              const double calls = runs + 1.0;
              nlohmann::json r = base;
              r["kernel"] = "amx";
              r["unit_rows"] = ur;
              r["unit_tokens"] = ut;
              r["k_chunk"] = kc;
              r["tile_mib"] = tile_mib;
              r["seconds"] = s;
              r["flop_per_s"] = flops / s;
              r["pack_s"] = ph.pack_s / calls;
              r["dequant_s"] = ph.dequant_s / calls;
              r["units_s"] = ph.units_s / calls;
              r["units_flop_per_s"] = flops / (ph.units_s / calls);
              emit(r);
            }
          }
        }
      }
      // CpuMatmul (kBF16) with these options, timed as one record of `kernel`.
      const auto time_matmul = [&](const cpu::MatmulOptions& mo, const char* kernel) {
        auto mm = check(cpu::CpuMatmul::create(mo), "CpuMatmul");
        const double s =
            median_s(runs, [&] { check(mm->run(w, xs.data(), tokens, y.data()), kernel); });
        nlohmann::json r = base;
        r["kernel"] = kernel;
        r["seconds"] = s;
        r["flop_per_s"] = flops / s;
        emit(r);
      };
      cpu::MatmulOptions bf16;
      bf16.precision = cpu::MatmulPrecision::kBF16;
      if (amx && amx_int8 && cpu::amx_int8_available() && cpu::AmxInt8Gemm::supports(*type)) {
        cpu::MatmulOptions mo = bf16;
        mo.amx_int8_prefill = true;
        time_matmul(mo, "amx_int8");
      }
      if (onednn) {
        cpu::MatmulOptions mo = bf16;
        mo.amx_tiles = false;
        time_matmul(mo, "onednn_tiles");
      }
    }
  }
  if (onednn) {
    // The bare oneDNN matmul does not depend on the stored type: once per shape.
    for (const std::string& shape : shape_names) {
      const auto [k, n] = parse_shape(shape);
      nlohmann::json r = {{"type", "bf16 (pre-blocked)"}, {"k", k}, {"n", n}};
      r["kernel"] = "onednn_bare";
      r["flop_per_s"] = measure_gemm_flops(tokens, k, n, dnnl::memory::data_type::bf16);
      emit(r);
    }
  }

  std::printf(
      "\n%-14s %-20s %6s %6s %5s %5s %5s %9s %7s %8s %8s %8s %7s %7s   peak %.2f TFLOP/s (%d "
      "thr), 1 thr %.3f; int8 K=32 %.2f TOP/s\n",
      "kernel", "type", "K", "N", "ur", "ut", "kc", "TFLOP/s", "ratio", "pack_ms", "deq_ms",
      "units_ms", "units_r", "i8_r", peak / 1e12, placement.num_threads, peak_1 / 1e12,
      int8_k32 / 1e12);
  for (const auto& r : records) {
    const double units_ratio = peak > 0 ? r.value("units_flop_per_s", 0.0) / peak : 0.0;
    std::printf(
        "%-14s %-20s %6lld %6lld %5lld %5lld %5lld %9.2f %7.3f %8.1f %8.1f %8.1f %7.3f %7.3f\n",
        r["kernel"].get<std::string>().c_str(), r["type"].get<std::string>().c_str(),
        static_cast<long long>(r["k"].get<int64_t>()),
        static_cast<long long>(r["n"].get<int64_t>()),
        static_cast<long long>(r.value("unit_rows", int64_t{0})),
        static_cast<long long>(r.value("unit_tokens", int64_t{0})),
        static_cast<long long>(r.value("k_chunk", int64_t{0})),
        r["flop_per_s"].get<double>() / 1e12, r["ratio_to_peak"].get<double>(),
        1e3 * r.value("pack_s", 0.0), 1e3 * r.value("dequant_s", 0.0),
        1e3 * r.value("units_s", 0.0), units_ratio, r["ratio_to_int8_k32"].get<double>());
  }
  return 0;
}
