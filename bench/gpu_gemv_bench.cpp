// gpu_gemv_bench: does the GPU decode GEMV (gpu_backend/gemv.h) read weights at HBM bandwidth?
// Per weight type, the llama3-8b decode matrices of one layer (q/o 4096x4096, k/v 1024x4096,
// gate/up 14336x4096, down 4096x14336; random contents, 8 layers' worth so that nothing is served
// from L2) are multiplied at batch 1 back to back, timed with CUDA events; achieved weight
// bytes/s over H, the HBM read bandwidth measured in the same run. Also the fused forms the
// executor uses (QKV in one launch, gate+up with SwiGLU). One JSON line per type, a table last.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/bench_check.h"
#include "gpu_backend/cuda_device_allocator.h"
#include "gpu_backend/device_probe.h"
#include "gpu_backend/elementwise.h"
#include "gpu_backend/gemv.h"
#include "gpu_backend/gemv_tuning.h"
#include "gpu_backend/probes.h"

namespace {

using namespace strata;

using bench::check;

struct Matrix {
  DeviceBuffer buffer;
  gpu::GpuWeight w;
};

Matrix make_matrix(DeviceArena& arena, const cuda::Stream& stream, DType type, int64_t rows,
                   int64_t cols, uint64_t seed) {
  const auto layout = check(gpu::gpu_weight_layout(type, rows, cols), "layout");
  Matrix m;
  m.buffer = check(arena.allocate(layout.total_bytes, DeviceMemoryTag::kWeights), "alloc");
  auto* base = static_cast<uint8_t*>(m.buffer.data());
  if (type == DType::kF32 || type == DType::kF16 || type == DType::kBF16) {
    check(gpu::fill_random(base, rows * cols, type, seed, 0.05f, stream), "fill");
  } else {
    check(gpu::fill_random(base, layout.payload_bytes, DType::kQ8_0, seed, 1, stream), "fill");
    // Scales: small finite halves, so that the arithmetic is what real weights cost.
    if (layout.scale_row_elems > 0) {
      check(gpu::fill_random(base + layout.scale_offset_bytes, rows * layout.scale_row_elems,
                             DType::kF16, seed + 1, 0.01f, stream),
            "fill");
    }
  }
  m.w = gpu::GpuWeight{type, rows, cols, base,
                       layout.scale_row_elems > 0
                           ? reinterpret_cast<const uint16_t*>(base + layout.scale_offset_bytes)
                           : nullptr};
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GPU decode GEMV bytes/s against the measured HBM read bandwidth"};
  std::string types_arg = "F16,BF16,Q8_0,Q4_0,Q4_K,Q6_K", json_out, commit;
  int layers = 8, repeats = 20;
  bool tune = false;
  app.add_option("--types", types_arg, "Comma-separated weight types");
  app.add_option("--layers", layers, "Layers' worth of matrices to rotate through");
  app.add_option("--repeats", repeats, "Timed passes over all matrices");
  app.add_option("--json", json_out, "Append JSON lines here");
  app.add_option("--commit", commit, "Commit id for the record");
  app.add_flag("--tune", tune,
               "Also time every GEMV shape (rows per warp, loads in flight, row split) for F16, "
               "Q8_0 and Q4_0 and print the best");
  CLI11_PARSE(app, argc, argv);

  const GpuProbe probe = probe_gpu(0);
  if (!probe.usable) {
    std::fprintf(stderr, "gpu_gemv_bench: no usable GPU: %s\n", probe.reason.c_str());
    return 1;
  }
  auto stream = check(cuda::Stream::create(), "stream");
  DeviceArenaOptions o;
  o.budget_bytes = int64_t{40} << 30;
  auto arena = check(DeviceArena::create(o, make_cuda_device_allocator(0)), "arena");
  const auto bw =
      check(gpu::measure_hbm_read_bandwidth(*arena, int64_t{4} << 30, 10, stream), "hbm");
  const double H = bw.best_bytes_per_s;
  arena->trim();
  std::fprintf(stderr, "HBM read: best %.0f GB/s, median %.0f GB/s\n", H / 1e9,
               bw.median_bytes_per_s / 1e9);

  DeviceBuffer x = check(arena->allocate(14336 * 4 * 8, DeviceMemoryTag::kActivations), "x");
  DeviceBuffer y = check(arena->allocate(14336 * 4 * 8, DeviceMemoryTag::kActivations), "y");
  DeviceBuffer y2 = check(arena->allocate(14336 * 4 * 8, DeviceMemoryTag::kActivations), "y");
  DeviceBuffer y3 = check(arena->allocate(14336 * 4 * 8, DeviceMemoryTag::kActivations), "y");
  check(gpu::fill_random(x.data(), 14336 * 8, DType::kF32, 5, 1.0f, stream), "fill");
  auto* xf = static_cast<float*>(x.data());
  auto* yf = static_cast<float*>(y.data());
  auto* y2f = static_cast<float*>(y2.data());
  auto* y3f = static_cast<float*>(y3.data());
  // x quantized to 8 bits (activation_q8.h) for the integer path, for both widths of a layer.
  DeviceBuffer x8a = check(
      arena->allocate(gpu::activations_q8_bytes(1, 4096), DeviceMemoryTag::kActivations), "x8");
  DeviceBuffer x8b = check(
      arena->allocate(gpu::activations_q8_bytes(1, 14336), DeviceMemoryTag::kActivations), "x8");
  const gpu::ActivationsQ8 x8_4096 = gpu::activations_q8_at(x8a.data(), 1, 4096);
  const gpu::ActivationsQ8 x8_14336 = gpu::activations_q8_at(x8b.data(), 1, 14336);
  check(gpu::quantize_activations_q8(xf, 1, x8_4096, stream), "quantize");
  check(gpu::quantize_activations_q8(xf, 1, x8_14336, stream), "quantize");
  auto x8_for = [&](const gpu::GpuWeight& w) { return w.cols == 4096 ? &x8_4096 : &x8_14336; };

  std::vector<nlohmann::json> records;
  std::stringstream types_in(types_arg);
  std::string type_name;
  while (std::getline(types_in, type_name, ',')) {
    const DType type = *dtype_from_name(type_name);
    struct LayerMats {
      Matrix q, k, v, o, gate, up, down;
    };
    std::vector<LayerMats> mats;
    int64_t layer_bytes = 0;
    for (int l = 0; l < layers; ++l) {
      LayerMats m{make_matrix(*arena, stream, type, 4096, 4096, 100 * l + 1),
                  make_matrix(*arena, stream, type, 1024, 4096, 100 * l + 2),
                  make_matrix(*arena, stream, type, 1024, 4096, 100 * l + 3),
                  make_matrix(*arena, stream, type, 4096, 4096, 100 * l + 4),
                  make_matrix(*arena, stream, type, 14336, 4096, 100 * l + 5),
                  make_matrix(*arena, stream, type, 14336, 4096, 100 * l + 6),
                  make_matrix(*arena, stream, type, 4096, 14336, 100 * l + 7)};
      if (l == 0) {
        for (const Matrix* mm : {&m.q, &m.k, &m.v, &m.o, &m.gate, &m.up, &m.down}) {
          layer_bytes += row_bytes(type, mm->w.cols) * mm->w.rows;  // bytes as stored
        }
      }
      mats.push_back(std::move(m));
    }
    auto start = check(cuda::Event::create(cuda::EventTiming::kEnabled), "event");
    auto end = check(cuda::Event::create(cuda::EventTiming::kEnabled), "event");
    // Every matrix of every layer through `gemv_one`, separately: bytes/s.
    auto run_each = [&](auto&& gemv_one) -> double {
      std::vector<double> ms;
      for (int r = -2; r < repeats; ++r) {
        check(start.record(stream), "record");
        for (const LayerMats& m : mats) {
          for (const Matrix* mm : {&m.q, &m.k, &m.v, &m.o, &m.gate, &m.up, &m.down}) {
            check(gemv_one(mm->w), "gemv");
          }
        }
        check(end.record(stream), "record");
        check(end.synchronize(), "sync");
        if (r >= 0) ms.push_back(check(cuda::elapsed_ms(start, end), "elapsed"));
      }
      std::sort(ms.begin(), ms.end());
      return static_cast<double>(layer_bytes) * layers / (ms[ms.size() / 2] * 1e-3);
    };
    // Fused as the executor runs them: QKV, o, gate+up SwiGLU, down (four launches a layer).
    // int8: the integer path, each input quantized just before its GEMV as the executor does
    // (the quantize kernels' time counts against the weight bytes/s).
    auto run_fused = [&](bool int8) -> double {
      std::vector<double> ms;
      auto in = [&](const gpu::ActivationsQ8* a) -> const gpu::ActivationsQ8* {
        if (!int8) return nullptr;
        check(gpu::quantize_activations_q8(xf, 1, *a, stream), "quantize");
        return a;
      };
      for (int r = -2; r < repeats; ++r) {
        check(start.record(stream), "record");
        for (const LayerMats& m : mats) {
          const gpu::GpuWeight qkv[3] = {m.q.w, m.k.w, m.v.w};
          float* const outs[3] = {yf, y2f, y3f};
          check(gpu::gemv_multi(qkv, xf, 1, outs, stream, {}, {in(&x8_4096)}), "multi");
          check(
              gpu::gemv(m.o.w, xf, 1, yf, gpu::GemvOutput::kAccumulate, stream, {}, {in(&x8_4096)}),
              "o");
          check(gpu::gemv_swiglu(m.gate.w, m.up.w, xf, 1, y2f, stream, {}, {in(&x8_4096)}),
                "swiglu");
          check(gpu::gemv(m.down.w, xf, 1, yf, gpu::GemvOutput::kAccumulate, stream, {},
                          {in(&x8_14336)}),
                "down");
        }
        check(end.record(stream), "record");
        check(end.synchronize(), "sync");
        if (r >= 0) ms.push_back(check(cuda::elapsed_ms(start, end), "elapsed"));
      }
      std::sort(ms.begin(), ms.end());
      return static_cast<double>(layer_bytes) * layers / (ms[ms.size() / 2] * 1e-3);
    };
    const double separate = run_each([&](const gpu::GpuWeight& w) {
      return gpu::gemv(w, xf, 1, yf, gpu::GemvOutput::kStore, stream);
    });
    const double fused = run_fused(false);
    // Q8_0 and Q4_0 decode on the tensor cores; the SIMT kernel they used before, in the same run.
    // And the integer path over 8-bit activations (activation_q8.h), separate and fused.
    double simt = 0, int8 = 0, int8_fused = 0;
    const bool has_mma = type == DType::kQ8_0 || type == DType::kQ4_0;
    if (has_mma) {
      const gpu::GemvShape def = gpu::gemv_default_shape(type);
      simt = run_each(
          [&](const gpu::GpuWeight& w) { return gpu::gemv_with_shape(w, xf, yf, def, stream); });
      int8 = run_each([&](const gpu::GpuWeight& w) {
        return gpu::gemv(w, xf, 1, yf, gpu::GemvOutput::kStore, stream, {}, {x8_for(w)});
      });
      int8_fused = run_fused(true);
    }
    if (tune && has_mma) {
      std::fprintf(stderr, "tune %s tensor cores (tiles, stages):", type_name.c_str());
      nlohmann::json t;
      t["bench"] = "gpu_gemv_mma_tune";
      t["type"] = type_name;
      for (const auto& [tiles, stages] : std::vector<std::pair<int, int>>{
               {1, 4}, {1, 8}, {2, 3}, {2, 4}, {2, 6}, {2, 8}, {4, 3}, {4, 4}}) {
        const Status probe_call =
            gpu::gemv_mma_with_shape(mats[0].q.w, xf, yf, tiles, stages, stream);
        if (!probe_call.is_ok()) {
          std::fprintf(stderr, "  T%d S%d: %s", tiles, stages, probe_call.to_string().c_str());
          continue;
        }
        const double bps = run_each([&](const gpu::GpuWeight& w) {
          return gpu::gemv_mma_with_shape(w, xf, yf, tiles, stages, stream);
        });
        std::fprintf(stderr, "  T%d S%d %.3f", tiles, stages, bps / H);
        t["shapes"].push_back({{"tiles", tiles}, {"stages", stages}, {"ratio_to_hbm", bps / H}});
      }
      std::fprintf(stderr, "\n");
      t["hbm_bytes_per_s"] = H;
      t["commit"] = commit;
      records.push_back(t);
    }
    if (tune && (type == DType::kF16 || type == DType::kQ8_0 || type == DType::kQ4_0)) {
      struct Result {
        gpu::GemvShape shape;
        double bytes_per_s;
      };
      for (const bool q8x : {false, true}) {
        if (q8x && !has_mma) continue;
        std::vector<Result> results;
        for (int rows : {2, 4, 8})
          for (int units : {1, 2})
            for (int min_units : {1, 2, 4, 8, 1 << 20}) {
              const gpu::GemvShape shape{rows, units, min_units};
              std::vector<double> ms;
              for (int r = -2; r < repeats; ++r) {
                check(start.record(stream), "record");
                for (const LayerMats& m : mats) {
                  for (const Matrix* mm : {&m.q, &m.k, &m.v, &m.o, &m.gate, &m.up, &m.down}) {
                    check(gpu::gemv_with_shape(mm->w, xf, yf, shape, stream,
                                               q8x ? x8_for(mm->w) : nullptr),
                          "gemv shape");
                  }
                }
                check(end.record(stream), "record");
                check(end.synchronize(), "sync");
                if (r >= 0) ms.push_back(check(cuda::elapsed_ms(start, end), "elapsed"));
              }
              std::sort(ms.begin(), ms.end());
              results.push_back(
                  {shape, static_cast<double>(layer_bytes) * layers / (ms[ms.size() / 2] * 1e-3)});
            }
        std::sort(results.begin(), results.end(),
                  [](const Result& a, const Result& b) { return a.bytes_per_s > b.bytes_per_s; });
        const gpu::GemvShape def = gpu::gemv_default_shape(type, q8x);
        std::fprintf(stderr, "tune %s%s (default R%d U%d M%d):", type_name.c_str(),
                     q8x ? " int8" : "", def.rows_per_warp, def.units_in_flight,
                     def.min_units_per_lane);
        for (size_t i = 0; i < std::min<size_t>(6, results.size()); ++i) {
          std::fprintf(stderr, "  R%d U%d M%d %.3f", results[i].shape.rows_per_warp,
                       results[i].shape.units_in_flight, results[i].shape.min_units_per_lane,
                       results[i].bytes_per_s / H);
        }
        std::fprintf(stderr, "\n");
        nlohmann::json t;
        t["bench"] = "gpu_gemv_tune";
        t["type"] = type_name;
        t["int8_activations"] = q8x;
        for (const Result& res : results) {
          t["shapes"].push_back({{"rows_per_warp", res.shape.rows_per_warp},
                                 {"units_in_flight", res.shape.units_in_flight},
                                 {"min_units_per_lane", res.shape.min_units_per_lane},
                                 {"ratio_to_hbm", res.bytes_per_s / H}});
        }
        t["hbm_bytes_per_s"] = H;
        t["commit"] = commit;
        records.push_back(t);
      }
    }
    // The prefill path's tile: the gate matrix dequantized to f16, bytes read + written per s.
    double dequant = 0;
    {
      const Matrix& g = mats[0].gate;
      DeviceBuffer tile =
          check(arena->allocate(g.w.rows * g.w.cols * 2, DeviceMemoryTag::kWorkspace), "tile");
      std::vector<double> ms;
      for (int r = -2; r < 10; ++r) {
        check(start.record(stream), "record");
        check(gpu::dequantize_rows(g.w, 0, g.w.rows, DType::kF16, tile.data(), stream), "deq");
        check(end.record(stream), "record");
        check(end.synchronize(), "sync");
        if (r >= 0) ms.push_back(check(cuda::elapsed_ms(start, end), "elapsed"));
      }
      std::sort(ms.begin(), ms.end());
      const double bytes = static_cast<double>(row_bytes(type, g.w.cols) * g.w.rows) +
                           static_cast<double>(g.w.rows * g.w.cols * 2);
      dequant = bytes / (ms[ms.size() / 2] * 1e-3);
    }
    nlohmann::json r;
    r["bench"] = "gpu_gemv";
    r["type"] = type_name;
    r["batch"] = 1;
    r["weight_bytes_per_s"] = separate;
    r["fused_weight_bytes_per_s"] = fused;
    r["hbm_bytes_per_s"] = H;
    r["ratio_to_hbm"] = separate / H;
    r["fused_ratio_to_hbm"] = fused / H;
    r["dequant_f16_bytes_per_s"] = dequant;
    if (has_mma) {
      r["simt_weight_bytes_per_s"] = simt;
      r["simt_ratio_to_hbm"] = simt / H;
      r["int8_weight_bytes_per_s"] = int8;
      r["int8_ratio_to_hbm"] = int8 / H;
      r["int8_fused_ratio_to_hbm"] = int8_fused / H;
    }
    r["device"] = probe.caps.name;
    r["commit"] = commit;
    std::printf("%s\n", r.dump().c_str());
    records.push_back(r);
    mats.clear();
    arena->trim();
  }
  if (!json_out.empty()) {
    std::ofstream out(json_out, std::ios::app);
    for (const auto& r : records) out << r.dump() << "\n";
  }
  std::fprintf(stderr, "\n%-6s %12s %7s %12s %7s %12s %10s %10s %10s  (H = %.0f GB/s)\n", "type",
               "GB/s", "ratio", "fused GB/s", "ratio", "deq GB/s", "SIMT ratio", "int8 ratio",
               "int8 fused", H / 1e9);
  for (const auto& r : records) {
    if (r["bench"] != "gpu_gemv") continue;
    std::fprintf(
        stderr, "%-6s %12.0f %7.3f %12.0f %7.3f %12.0f %10.3f %10.3f %10.3f\n",
        r["type"].get<std::string>().c_str(), r["weight_bytes_per_s"].get<double>() / 1e9,
        r["ratio_to_hbm"].get<double>(), r["fused_weight_bytes_per_s"].get<double>() / 1e9,
        r["fused_ratio_to_hbm"].get<double>(), r["dequant_f16_bytes_per_s"].get<double>() / 1e9,
        r.contains("simt_ratio_to_hbm") ? r["simt_ratio_to_hbm"].get<double>() : 0.0,
        r.contains("int8_ratio_to_hbm") ? r["int8_ratio_to_hbm"].get<double>() : 0.0,
        r.contains("int8_fused_ratio_to_hbm") ? r["int8_fused_ratio_to_hbm"].get<double>() : 0.0);
  }
  return 0;
}
