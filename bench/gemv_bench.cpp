// gemv_bench: does decode GEMV on the CPU run at the host's DRAM read bandwidth?
//
// In one run it measures C, the all-core read bandwidth (cpu_backend/read_bandwidth.h), then for
// each weight type times gemv on the llama3-8b decode shapes, rotating over copies of each matrix
// that together fill a working set far larger than the last-level cache, so every call streams its
// weights from DRAM as a real decode step does; with --activations int8 also the integer GEMV
// (gemv_q8.h, x quantized per 32 as llama.cpp does) for the types that have it. Per type it prints
// one JSON line (bytes/s achieved, C, their ratio, per-shape detail) and finishes with a short
// table. See bench/NOTES.md. With --cache-resident it instead times one small matrix per thread
// that stays in L2 (no DRAM traffic): the kernels' compute rate, which says whether a type is
// bound by instructions or by memory (and, at 8 vs 16 threads, whether threads share cores).
//
//   gemv_bench --threads 16 --read-gib 8 --working-set-gib 4 --json gemv.jsonl
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu_backend/activation_q8.h"
#include "cpu_backend/gemm_amx.h"
#include "cpu_backend/gemm_amx_int8.h"
#include "cpu_backend/gemv.h"
#include "cpu_backend/gemv_q8.h"
#include "cpu_backend/read_bandwidth.h"
#include "cpu_backend/thread_placement.h"
#include "offload/core/dtype.h"
#include "offload/core/quant_blocks.h"

namespace strata::bench {
namespace {

using cpu::alloc_huge;
using cpu::CpuReadProbe;
using cpu::free_huge;
using cpu::ReadBandwidth;
using cpu::ReadMethod;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// One matrix shape of the model and how many times a decoded token reads it.
struct Shape {
  const char* role;
  int64_t rows, cols;      // out features x in features (GGUF: ne[1] x ne[0])
  int64_t uses_per_token;  // 32 layers x matrices of this shape per layer; the output head once
};

// llama3-8b: 32 layers of q, o (4096x4096), k, v (1024x4096), gate, up (14336x4096), down
// (4096x14336), and the output head (128256x4096).
const std::vector<Shape> kLlama3_8b = {
    {"attn_q,attn_o", 4096, 4096, 64},    {"attn_k,attn_v", 1024, 4096, 64},
    {"ffn_gate,ffn_up", 14336, 4096, 64}, {"ffn_down", 4096, 14336, 32},
    {"output", 128256, 4096, 1},
};

// --cache-resident: 256 rows x 2048 columns (Q4_0 288 KiB, F16 1 MiB): one copy, in L2 after the
// first call on every core of the host and the dev VM (2 MiB L2s).
const std::vector<Shape> kCacheResident = {{"cache_resident", 256, 2048, 1}};

struct Options {
  bool cache_resident = false;
  int threads = 0;
  double read_gib = 4.0;
  int read_passes = 7;
  double working_set_gib = 2.0;
  int repeats = 25;
  std::vector<std::string> types = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"};
  std::vector<int> batches = {1};
  std::vector<std::string> activations = {"f32", "int8"};
  std::string isa = "best";
  int64_t skinny_k_chunk = 0;  // 0: AmxGemmConfig's default
  int x_offset_floats = 0;
  std::string json_path;
  std::string commit;
};

// xorshift64*: fast enough to fill gigabytes, one stream per thread.
struct FastRng {
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  float uniform() { return static_cast<float>(next() >> 40) * (2.0f / 16777216.0f) - 1.0f; }
};

uint16_t scale_bits(FastRng& rng, bool allow_negative) {
  float v = 0.002f + 0.02f * (0.5f + 0.5f * rng.uniform());
  if (allow_negative && (rng.next() & 1)) v = -v;
  return f32_to_f16(v);
}

// Fills `bytes` of `data` with valid random elements of `type`, in parallel: uniform values in
// [-1, 1) for the plain types (random bits would give subnormals, whose arithmetic is slow and
// unlike real weights), random quants with normal f16 scales for the block types.
void fill_weights(DType type, uint8_t* data, int64_t bytes) {
  const DTypeTraits& t = traits(type);
  const int64_t blocks = bytes / t.block_bytes;
#pragma omp parallel
  {
    FastRng rng{0x9E3779B97F4A7C15ull * (omp_get_thread_num() + 1)};
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* p = data + b * t.block_bytes;
      switch (type) {
        case DType::kF32: {
          const float v = rng.uniform();
          std::memcpy(p, &v, 4);
          break;
        }
        case DType::kF16:
        case DType::kBF16: {
          const float v = rng.uniform();
          const uint16_t h = type == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v);
          std::memcpy(p, &h, 2);
          break;
        }
        default: {
          for (int64_t i = 0; i + 8 <= t.block_bytes; i += 8) {
            const uint64_t r = rng.next();
            std::memcpy(p + i, &r, 8);
          }
          for (int64_t i = t.block_bytes / 8 * 8; i < t.block_bytes; ++i) p[i] = rng.next() & 0xFF;
          uint16_t d = scale_bits(rng, type != DType::kQ4_K);
          if (type == DType::kQ8_0) std::memcpy(p + offsetof(BlockQ8_0, d), &d, 2);
          if (type == DType::kQ4_0) std::memcpy(p + offsetof(BlockQ4_0, d), &d, 2);
          if (type == DType::kQ6_K) std::memcpy(p + offsetof(BlockQ6_K, d), &d, 2);
          if (type == DType::kQ4_K) {
            const uint16_t dmin = scale_bits(rng, false);
            std::memcpy(p + offsetof(BlockQ4_K, d), &d, 2);
            std::memcpy(p + offsetof(BlockQ4_K, dmin), &dmin, 2);
          }
        }
      }
    }
  }
}

struct ShapeResult {
  Shape shape;
  int64_t bytes = 0;  // weight bytes one call reads
  int copies = 0;     // matrices rotated over
  double median_s = 0, min_s = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times gemv on `shape`, rotating over as many back-to-back copies as fit in the arena.
// Activations as the runtime keeps them: 64-byte aligned rows (a 64-byte load of x that straddles
// two cache lines costs two; --x-offset-floats shows what a misaligned caller pays).
struct Activations {
  float* x = nullptr;
  float* y = nullptr;
  Activations(int64_t x_floats, int64_t y_floats, int offset_floats) {
    x_base = static_cast<float*>(std::aligned_alloc(64, (x_floats + 64) * sizeof(float)));
    y = static_cast<float*>(std::aligned_alloc(64, (y_floats + 16) * sizeof(float)));
    x = x_base + offset_floats;
  }
  ~Activations() {
    std::free(x_base);
    std::free(y);
  }
  Activations(const Activations&) = delete;
  Activations& operator=(const Activations&) = delete;

 private:
  float* x_base = nullptr;
};

// int8: the integer GEMV (gemv_q8.h), its activation quantization timed with it as a decode
// step pays it before every matrix.
// bf16: AmxGemm's streaming path for few tokens (gemm_amx.h; x and weights rounded to bf16, the
// like_llama_cpp tier), as CpuMatmul runs batched decode steps on a CPU with AMX.
// amx-int8: AmxInt8Gemm (gemm_amx_int8.h; Q8_0 / Q4_0 on the int8 tiles, x quantized per 32 as
// int8, timed with it), CpuMatmul's batched decode path for those types.
ShapeResult time_shape(DType type, const Shape& shape, int batch, const std::string& activations,
                       GemvIsa isa, const uint8_t* arena, int64_t arena_bytes, int repeats,
                       int x_offset, int64_t skinny_k_chunk) {
  const bool int8 = activations == "int8", bf16 = activations == "bf16";
  const bool amx_int8 = activations == "amx-int8";
  cpu::AmxInt8Gemm amx8(cpu::TileUnit::kAmx);
  cpu::AmxGemmConfig amx_config;
  if (skinny_k_chunk > 0) amx_config.skinny_k_chunk = skinny_k_chunk;
  cpu::AmxGemm amx(amx_config);
  ShapeResult r;
  r.shape = shape;
  r.bytes = shape.rows * row_bytes(type, shape.cols);
  r.copies = static_cast<int>(std::max<int64_t>(1, arena_bytes / r.bytes));
  Activations act(batch * shape.cols, batch * shape.rows, x_offset);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (int64_t i = 0; i < batch * shape.cols; ++i) act.x[i] = uni(rng);
  cpu::ActivationsQ8 xq;
  std::vector<double> seconds;
  const int warmup = std::min(r.copies, 3);
  for (int call = 0; call < warmup + repeats; ++call) {
    const WeightMatrix w{type, shape.rows, shape.cols, arena + (call % r.copies) * r.bytes};
    const auto start = std::chrono::steady_clock::now();
    Status s;
    if (bf16) {
      s = amx.run(w, act.x, batch, act.y, shape.rows);
    } else if (amx_int8) {
      s = xq.quantize(act.x, batch, shape.cols);
      if (s.is_ok()) s = amx8.run(w, xq, batch, act.y, shape.rows);
    } else if (int8) {
      s = xq.quantize(act.x, batch, shape.cols);
      if (s.is_ok()) s = gemv_q8_batched(w, xq, batch, act.y, 0, isa);
    } else {
      s = gemv_batched(w, act.x, batch, act.y, 0, 0, isa);
    }
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!s.is_ok()) {
      std::cerr << "gemv_bench: " << s.to_string() << "\n";
      std::exit(1);
    }
    if (call >= warmup) seconds.push_back(elapsed);
  }
  r.median_s = median(seconds);
  r.min_s = *std::min_element(seconds.begin(), seconds.end());
  return r;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown cpu";
}

int run(const Options& opt) {
  GemvIsa isa = GemvIsa::kBest;
  if (opt.isa == "avx512") isa = GemvIsa::kAvx512;
  if (opt.isa == "avx2") isa = GemvIsa::kAvx2;
  if (opt.isa == "scalar") isa = GemvIsa::kScalar;
  if (!gemv_isa_available(isa)) {
    std::cerr << "gemv_bench: --isa " << opt.isa << ": not compiled into this build\n";
    return 2;
  }
  const CpuTopology topology = probe_cpu_topology();
  const ThreadPlacement placed = apply_thread_placement(opt.threads);
  std::fprintf(stderr,
               "gemv_bench: %d physical cores, %d logical cpus; %d threads, %s; kernels: %s\n",
               topology.physical_cores, topology.logical_cpus, placed.num_threads,
               placed.pinned ? "pinned one per core" : "NOT pinned", gemv_isa_name(isa));

  std::vector<DType> types;
  for (const std::string& name : opt.types) {
    const auto type = dtype_from_name(name);
    if (!type || !gemv_supports(*type)) {
      std::cerr << "gemv_bench: --types: '" << name << "' is not a type gemv runs on\n";
      return 2;
    }
    types.push_back(*type);
  }

  // C is measured at the start and again after each type (2 passes per method), on one buffer:
  // on a shared host the read bandwidth drifts by tens of percent within seconds. Every record
  // gets the run's C (the best of all probes: the machine's capacity) and the local C bracketing
  // its own measurement, so a slow neighbour shows up as a gap between the two ratios.
  CpuReadProbe probe(static_cast<int64_t>(opt.read_gib * kGiB));
  if (!probe.ok()) {
    std::cerr << "gemv_bench: could not allocate the " << opt.read_gib << " GiB read buffer\n";
    return 1;
  }
  const ReadBandwidth first = probe.measure(opt.read_passes);
  for (const ReadMethod& m : first.methods) {
    std::fprintf(stderr, "gemv_bench: read %-16s best %7.2f GB/s, median %7.2f GB/s\n", m.name,
                 m.best_bytes_per_s / 1e9, m.median_bytes_per_s / 1e9);
  }
  std::fprintf(
      stderr, "gemv_bench: C = %.2f GB/s (best pass of any method; %d passes each over %.2f GiB)\n",
      first.best_bytes_per_s / 1e9, first.passes, first.buffer_bytes / kGiB);
  std::vector<ReadBandwidth> probes = {first};  // probes[t] before type t, probes[t + 1] after it

  std::ofstream json_file;
  if (!opt.json_path.empty()) {
    json_file.open(opt.json_path, std::ios::app);
    if (!json_file) {
      std::cerr << "gemv_bench: --json: cannot write " << opt.json_path << "\n";
      return 2;
    }
  }
  const std::string device = cpu_model_name() + ", " + std::to_string(placed.num_threads) +
                             " threads" + (placed.pinned ? " pinned" : " unpinned");

  struct Measured {  // one type, batch and activation kind, before C is known
    DType type;
    int batch;
    std::string activations;
    size_t probe_before;
    int64_t arena_bytes;
    double token_bytes, token_s, token_best_s;
    std::vector<ShapeResult> shapes;
  };
  std::vector<Measured> measured;
  for (DType type : types) {
    const std::vector<Shape>& model_shapes = opt.cache_resident ? kCacheResident : kLlama3_8b;
    int64_t largest = 0;
    for (const Shape& s : model_shapes)
      largest = std::max(largest, s.rows * row_bytes(type, s.cols));
    const int64_t arena_bytes =
        opt.cache_resident ? largest
                           : std::max(static_cast<int64_t>(opt.working_set_gib * kGiB), largest);
    auto* arena = static_cast<uint8_t*>(alloc_huge(arena_bytes));
    if (arena == nullptr) {
      std::cerr << "gemv_bench: cannot allocate a " << arena_bytes / kGiB << " GiB working set\n";
      return 1;
    }
    fill_weights(type, arena, arena_bytes);
    for (int batch : opt.batches) {
      for (const std::string& activations : opt.activations) {
        const bool int8 = activations == "int8";
        if (int8 && !gemv_q8_supports(type)) continue;
        if (activations == "amx-int8" &&
            (!cpu::AmxInt8Gemm::supports(type) || batch > cpu::AmxInt8Gemm::kStreamingTokens)) {
          continue;
        }
        if (activations == "amx-int8" && !cpu::amx_int8_available()) {
          std::fprintf(stderr, "gemv_bench: amx-int8 skipped: this CPU has no AMX-INT8 tiles\n");
          continue;
        }
        if (activations == "bf16" && !cpu::amx_bf16_available()) {
          std::fprintf(stderr, "gemv_bench: bf16 skipped: this CPU has no AMX-BF16 tiles\n");
          continue;
        }
        Measured m{type, batch, activations, probes.size() - 1, arena_bytes, 0, 0, 0, {}};
        for (const Shape& shape : model_shapes) {
          const ShapeResult r = time_shape(type, shape, batch, activations, isa, arena, arena_bytes,
                                           opt.repeats, opt.x_offset_floats, opt.skinny_k_chunk);
          m.token_bytes += static_cast<double>(r.bytes) * shape.uses_per_token;
          m.token_s += r.median_s * shape.uses_per_token;
          m.token_best_s += r.min_s * shape.uses_per_token;
          m.shapes.push_back(r);
        }
        std::fprintf(stderr, "gemv_bench: %s batch %d %s: %.2f GB/s\n", dtype_name(type), batch,
                     activations.c_str(), m.token_bytes / m.token_s / 1e9);
        measured.push_back(std::move(m));
        probes.push_back(probe.measure(2));
      }
    }
    free_huge(arena);
  }
  double c = 0;
  for (const ReadBandwidth& p : probes) c = std::max(c, p.best_bytes_per_s);

  struct Row {
    std::string type;
    int batch;
    std::string activations;
    double bytes_per_s, ratio, local_ratio, best_ratio, worst_shape_ratio;
  };
  std::vector<Row> table;
  for (const Measured& m : measured) {
    const double c_local = std::max(probes[m.probe_before].best_bytes_per_s,
                                    probes[m.probe_before + 1].best_bytes_per_s);
    nlohmann::json shapes = nlohmann::json::array();
    double worst = 1e9;
    for (const ShapeResult& r : m.shapes) {
      const double rate = r.bytes / r.median_s;
      worst = std::min(worst, rate / c);
      shapes.push_back({{"role", r.shape.role},
                        {"rows", r.shape.rows},
                        {"cols", r.shape.cols},
                        {"weight_bytes", r.bytes},
                        {"copies_rotated", r.copies},
                        {"median_s", r.median_s},
                        {"min_s", r.min_s},
                        {"weight_bytes_per_s", rate},
                        {"ratio_to_roofline", rate / c}});
    }
    // The rate a whole decoded token sees (each shape weighted by its reads per token).
    const double rate = m.token_bytes / m.token_s;
    const double best_rate = m.token_bytes / m.token_best_s;
    nlohmann::json read_methods = nlohmann::json::object();
    for (const ReadMethod& method : first.methods) {
      read_methods[method.name] = {{"best_bytes_per_s", method.best_bytes_per_s},
                                   {"median_bytes_per_s", method.median_bytes_per_s}};
    }
    nlohmann::json record = {{"scenario", "cpu-gemv"},
                             {"model", "llama3-8b"},
                             {"type", dtype_name(m.type)},
                             {"phase", "decode"},
                             {"policy", "cpu-only"},
                             {"batch", m.batch},
                             {"activations", m.activations},
                             {"tier", m.activations == "f32" ? "exact" : "like_llama_cpp"},
                             {"threads", placed.num_threads},
                             {"pinned", placed.pinned},
                             {"isa", gemv_isa_name(isa)},
                             {"weight_bytes_per_token", m.token_bytes},
                             {"weight_bytes_per_s", rate},
                             {"cpu_read_bytes_per_s", c},
                             {"ratio_to_roofline", rate / c},
                             {"local_cpu_read_bytes_per_s", c_local},
                             {"ratio_to_local_roofline", rate / c_local},
                             {"best_weight_bytes_per_s", best_rate},
                             {"best_ratio_to_roofline", best_rate / c},
                             {"tokens_per_s", 1.0 / m.token_s},
                             {"roofline_tokens_per_s", c / m.token_bytes},
                             {"limits",
                              {{"cpu_read_bytes_per_s", c},
                               {"cpu_read_first_probe_methods", read_methods},
                               {"cpu_read_buffer_bytes", first.buffer_bytes}}},
                             {"bytes_per_token", {{"cpu", m.token_bytes}}},
                             {"working_set_bytes", m.arena_bytes},
                             {"repeats", opt.repeats},
                             {"x_offset_floats", opt.x_offset_floats},
                             {"shapes", shapes},
                             {"device", device},
                             {"commit", opt.commit}};
    const std::string line = record.dump();
    std::cout << line << "\n" << std::flush;
    if (json_file) json_file << line << "\n" << std::flush;
    table.push_back({dtype_name(m.type), m.batch, m.activations, rate, rate / c, rate / c_local,
                     best_rate / c, worst});
  }

  std::printf(
      "\nC (all-core read, best of %zu probes) = %.2f GB/s; probes ranged %.2f-%.2f GB/s; %s\n",
      probes.size(), c / 1e9,
      std::min_element(
          probes.begin(), probes.end(),
          [](const ReadBandwidth& a, const ReadBandwidth& b) {
            return a.best_bytes_per_s < b.best_bytes_per_s;
          })->best_bytes_per_s /
          1e9,
      c / 1e9, device.c_str());
  std::printf("%-6s %5s %5s %10s %7s %10s %10s %12s\n", "type", "batch", "x", "GEMV GB/s", "ratio",
              "local-ratio", "best-ratio", "worst shape");
  for (const Row& r : table) {
    std::printf("%-6s %5d %5s %10.2f %7.3f %10.3f %10.3f %12.3f\n", r.type.c_str(), r.batch,
                r.activations.c_str(), r.bytes_per_s / 1e9, r.ratio, r.local_ratio, r.best_ratio,
                r.worst_shape_ratio);
  }
  std::printf(
      "(GEMV GB/s: weight bytes per token / summed median call times, llama3-8b shapes;\n"
      " ratio = that / C; local-ratio = that / the best probe just before or after;\n"
      " best-ratio uses the fastest call of each shape; worst shape = lowest per-shape\n"
      " median ratio to C)\n");
  return 0;
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  strata::bench::Options opt;
  CLI::App app{"Decode GEMV on the CPU against the host's all-core DRAM read bandwidth"};
  app.add_flag("--cache-resident", opt.cache_resident,
               "time one L2-resident matrix instead of the model's shapes from DRAM: the kernels' "
               "compute rate (the ratio to C is then not a bandwidth ratio)");
  app.add_option("--threads", opt.threads,
                 "OpenMP threads, pinned one per core (0: physical cores)")
      ->capture_default_str();
  app.add_option("--read-gib", opt.read_gib,
                 "buffer for the read-bandwidth probe, GiB (>= 4 on the target)")
      ->capture_default_str();
  app.add_option("--read-passes", opt.read_passes, "passes of the read probe; the best is C")
      ->capture_default_str();
  app.add_option("--working-set-gib", opt.working_set_gib,
                 "weights rotated over per shape, GiB (>> last-level cache)")
      ->capture_default_str();
  app.add_option("--repeats", opt.repeats, "timed calls per shape (the median is reported)")
      ->capture_default_str();
  app.add_option("--types", opt.types, "weight types")->delimiter(',')->capture_default_str();
  app.add_option("--batch", opt.batches, "sequences decoded at once (gemv_batched), e.g. 1,4")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--activations", opt.activations,
                 "f32 (exact: float x) and/or int8 (x quantized per 32, the integer GEMV of "
                 "Q8_0/Q4_0/Q4_K/Q6_K; the like_llama_cpp tier) and/or bf16 (AmxGemm's few-token "
                 "path on the AMX tiles, as batched decode runs there; like_llama_cpp) and/or "
                 "amx-int8 (Q8_0/Q4_0 on the AMX int8 tiles, x quantized per 32; like_llama_cpp)")
      ->delimiter(',')
      ->check(CLI::IsMember({"f32", "int8", "bf16", "amx-int8"}))
      ->capture_default_str();
  app.add_option("--skinny-k-chunk", opt.skinny_k_chunk,
                 "bf16: AmxGemmConfig::skinny_k_chunk (columns dequantized at once; 0: default)");
  app.add_option("--isa", opt.isa, "kernels: best, avx512, avx2, scalar")
      ->check(CLI::IsMember({"best", "avx512", "avx2", "scalar"}))
      ->capture_default_str();
  app.add_option("--x-offset-floats", opt.x_offset_floats,
                 "misalign x by this many floats from a 64-byte boundary (0..15)")
      ->check(CLI::Range(0, 15))
      ->capture_default_str();
  app.add_option("--json", opt.json_path, "also write the JSON lines to this file");
  app.add_option("--commit", opt.commit, "commit id to record");
  CLI11_PARSE(app, argc, argv);
  return strata::bench::run(opt);
}
