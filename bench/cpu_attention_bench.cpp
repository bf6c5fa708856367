// cpu_attention_bench: the CPU's share of long-context decode attention (cpu::attention_ranges
// over f16 or q8_0 KV, one token, llama3-8b's heads by default) against C, the host's all-core read
// bandwidth measured in the same run. This is the rate the cold_attention = cpu mode of the GPU
// executor runs at (bench/NOTES.md, ctx-8b): K and V bytes read per second over C.
//
//   cpu_attention_bench [--tokens 65536] [--range 4096] [--heads 32 --kv-heads 8 --head-dim 128]
//                       [--kv-type f16|q8_0] [--read-gib 4] [--huge-pages] [--json-out FILE]
//                       [--commit SHA]
#include <omp.h>
#include <sys/mman.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <vector>

#include "cpu_backend/attention.h"
#include "cpu_backend/read_bandwidth.h"
#include "memory/kv_view.h"
#include "offload/core/quantize.h"

int main(int argc, char** argv) {
  using namespace strata;
  CLI::App app{"CPU decode attention over f16 or q8_0 KV against the host's read bandwidth"};
  int64_t tokens = 65536, range = 4096, heads = 32, kv_heads = 8, head_dim = 128, block = 16;
  double read_gib = 4.0;
  int passes = 5;
  std::string json_out, commit;
  app.add_option("--tokens", tokens, "KV tokens attended per pass");
  app.add_option("--range", range, "Keys per attention_range call (the executor's cold ranges)");
  app.add_option("--heads", heads, "Query heads");
  app.add_option("--kv-heads", kv_heads, "KV heads");
  app.add_option("--head-dim", head_dim, "Head size");
  app.add_option("--read-gib", read_gib, "Buffer of the read-bandwidth probe");
  app.add_option("--passes", passes, "Timed passes (the best is reported)");
  std::string kv_type_name = "f16";
  app.add_option("--kv-type", kv_type_name, "KV element type")
      ->check(CLI::IsMember({"f16", "q8_0"}));
  bool huge_pages = false;
  app.add_flag("--huge-pages", huge_pages,
               "KV memory in 2 MB pages (madvise MADV_HUGEPAGE), to tell TLB misses from the rest");
  app.add_option("--json-out", json_out, "Append the JSON record here");
  app.add_option("--commit", commit, "Commit for the record");
  CLI11_PARSE(app, argc, argv);
  if (heads % kv_heads != 0 || tokens % block != 0 || range <= 0) {
    std::fprintf(stderr, "heads must be a multiple of kv-heads, tokens of %lld, range > 0\n",
                 static_cast<long long>(block));
    return 2;
  }

  const cpu::AttentionShape shape{heads, kv_heads, head_dim};
  const DType kv_type = kv_type_name == "q8_0" ? DType::kQ8_0 : DType::kF16;
  if (kv_type == DType::kQ8_0 && head_dim % 32 != 0) {
    std::fprintf(stderr, "q8_0 needs a head size that is a multiple of 32\n");
    return 2;
  }
  const int64_t kv_dim = kv_heads * head_dim, row_bytes = kv_bytes(kv_type, kv_dim);
  const int64_t blocks = tokens / block;
  // Blocks as the cold tier lays them out: one allocation, K then V, rows contiguous per block.
  const size_t kv_used_bytes = static_cast<size_t>(2 * tokens * row_bytes);
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t kv_bytes_total = (kv_used_bytes + kHuge - 1) / kHuge * kHuge;
  std::unique_ptr<char, decltype(&std::free)> kv_mem(
      static_cast<char*>(std::aligned_alloc(kHuge, kv_bytes_total)), &std::free);
  if (!kv_mem) {
    std::fprintf(stderr, "cannot allocate %zu bytes of KV\n", kv_bytes_total);
    return 1;
  }
  if (huge_pages && madvise(kv_mem.get(), kv_bytes_total, MADV_HUGEPAGE) != 0)
    std::fprintf(stderr, "madvise(MADV_HUGEPAGE) refused: %s\n", std::strerror(errno));
  char* mem = kv_mem.get();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(kv_dim));
  for (int64_t r = 0; r < 2 * tokens; ++r) {  // every K and V row, as the executors store them
    for (float& x : row) x = normal(rng);
    if (!quantize_row(kv_type, row.data(), mem + r * row_bytes, kv_dim).is_ok()) return 1;
  }
  std::vector<void*> k(static_cast<size_t>(blocks)), v(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    k[static_cast<size_t>(b)] = mem + b * block * row_bytes;
    v[static_cast<size_t>(b)] = mem + (blocks + b) * block * row_bytes;
  }
  KvLayerView view;
  view.k_blocks = k.data();
  view.v_blocks = v.data();
  view.num_blocks = blocks;
  view.num_tokens = tokens;
  view.block_tokens = block;
  view.kv_dim = kv_dim;
  view.dtype = kv_type;
  std::vector<float> q(static_cast<size_t>(heads * head_dim));
  for (float& x : q) x = normal(rng);
  std::vector<float> out(q.size()), lse(static_cast<size_t>(heads));
  std::vector<float> scratch(static_cast<size_t>(cpu::attention_scratch_floats(tokens, shape)));
  const int32_t pos = static_cast<int32_t>(tokens - 1);
  std::vector<cpu::KeyRange> ranges;
  for (int64_t b = 0; b < tokens; b += range) ranges.emplace_back(b, std::min(tokens, b + range));

  const cpu::ReadBandwidth c =
      cpu::measure_cpu_read_bandwidth(static_cast<int64_t>(read_gib * (1 << 30)), 3);
  double best = 0;
  for (int pass = 0; pass < passes; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    // As split_attention: the ranges (here laid end to end) in one attention_ranges call.
    cpu::attention_ranges(q.data(), 1, &pos, view, shape, ranges, out.data(), lse.data(),
                          scratch.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(2 * tokens * row_bytes) / s);
  }
  for (float x : out) {
    if (!std::isfinite(x)) {
      std::fprintf(stderr, "non-finite output\n");
      return 1;
    }
  }
  nlohmann::json r;
  r["scenario"] = "cpu-attention";
  r["threads"] = omp_get_max_threads();
  r["shape"] = {{"heads", heads}, {"kv_heads", kv_heads}, {"head_dim", head_dim}};
  r["tokens"] = tokens;
  r["range"] = range;
  r["huge_pages"] = huge_pages;
  r["kv_type"] = kv_type_name;
  r["kv_bytes_per_s"] = best;
  r["cpu_read_bytes_per_s"] = c.best_bytes_per_s;
  r["ratio_to_read_bandwidth"] = c.best_bytes_per_s > 0 ? best / c.best_bytes_per_s : 0.0;
  r["commit"] = commit;
  std::printf("%s\n", r.dump().c_str());
  if (!json_out.empty()) std::ofstream(json_out, std::ios::app) << r.dump() << "\n";
  std::fprintf(stderr, "attention_range %s: %.1f GB/s of KV, C %.1f GB/s (%.2f), %d threads\n",
               kv_type_name.c_str(), best / 1e9, c.best_bytes_per_s / 1e9,
               c.best_bytes_per_s > 0 ? best / c.best_bytes_per_s : 0.0, omp_get_max_threads());
  return 0;
}
