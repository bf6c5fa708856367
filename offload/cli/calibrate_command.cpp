// `strata calibrate`: measures this machine's limits (the Caps of policies/caps.h) and caches them
// where `strata plan` finds them: CPU read bandwidth C, the CPU decode GEMV's fraction of it for
// dense and 4-bit weights, the CPU prefill GEMM rate; with a usable GPU also HBM read bandwidth H,
// pinned and pageable host-to-device copies P, device-to-host copies, P and C at the same time
// (S), the tensor-core GEMM rate G and the free VRAM. Each figure is measured the way
// ../shared/BENCHMARKS.md defines it; without a GPU the GPU rates keep their reference values and
// the file says so.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_backend/gemv.h"
#include "cpu_backend/matmul.h"
#include "cpu_backend/read_bandwidth.h"
#include "cpu_backend/thread_placement.h"
#include "gpu_backend/device_probe.h"
#include "offload/cli/caps_file.h"
#include "offload/cli/command.h"
#include "offload/cli/format_units.h"
#include "offload/core/quantize.h"
#include "offload/exec/gpu_limits.h"

namespace strata::cli {
namespace {

struct CalibrateFlags {
  std::string out;
  double read_gib = 4.0;
  bool no_gpu = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes/s of the CPU decode GEMV on `type` over a working set of copies far larger than the last
// level cache (so every call streams its weights from DRAM, as decode does).
StatusOr<double> cpu_gemv_rate(DType type, int64_t working_set_bytes) {
  const int64_t rows = 4096, cols = 4096;
  const int64_t matrix_bytes = row_bytes(type, cols) * rows;
  const int64_t copies = std::max<int64_t>(2, working_set_bytes / matrix_bytes);
  std::vector<uint8_t> data(static_cast<size_t>(matrix_bytes * copies));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(rng);
    STRATA_RETURN_IF_ERROR(
        quantize_row(type, row.data(), data.data() + r * row_bytes(type, cols), cols));
  }
  for (int64_t c = 1; c < copies; ++c) {
    std::memcpy(data.data() + c * matrix_bytes, data.data(), static_cast<size_t>(matrix_bytes));
  }
  std::vector<float> x(static_cast<size_t>(cols), 0.5f), y(static_cast<size_t>(rows));
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t c = 0; c < copies; ++c) {
      WeightMatrix w{type, rows, cols, data.data() + c * matrix_bytes};
      STRATA_RETURN_IF_ERROR(gemv(w, x.data(), y.data()));
    }
    best = std::max(best, static_cast<double>(matrix_bytes * copies) / seconds_since(t0));
  }
  return best;
}

// FLOP/s of the CPU prefill matmul (oneDNN, bf16 inputs) on a 4096 x 4096 F16 matrix, 512 tokens.
StatusOr<double> cpu_gemm_rate() {
  cpu::MatmulOptions o;
  o.precision = cpu::MatmulPrecision::kBF16;
  STRATA_ASSIGN_OR_RETURN(auto mm, cpu::CpuMatmul::create(o));
  const int64_t rows = 4096, cols = 4096, n = 512;
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_f16(0.01f * static_cast<float>(i % 97));
  std::vector<float> x(static_cast<size_t>(n * cols), 0.25f), y(static_cast<size_t>(n * rows));
  const WeightMatrix m{DType::kF16, rows, cols, reinterpret_cast<const uint8_t*>(w.data())};
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {  // the first includes the primitive's creation
    const auto t0 = std::chrono::steady_clock::now();
    STRATA_RETURN_IF_ERROR(mm->run(m, x.data(), n, y.data()));
    best = std::max(best, 2.0 * rows * cols * n / seconds_since(t0));
  }
  return best;
}

Status calibrate(const CalibrateFlags& f) {
  const ThreadPlacement placement = apply_thread_placement(default_thread_count());
  Caps caps = Caps::reference();  // the rates nothing here measures keep their reference values
  std::fprintf(stderr, "calibrate: CPU read bandwidth over %.1f GiB, %d threads...\n", f.read_gib,
               placement.num_threads);
  cpu::CpuReadProbe cpu_probe(static_cast<int64_t>(f.read_gib * (1ll << 30)));
  if (!cpu_probe.ok()) return Status::out_of_memory("calibrate: cannot allocate the read probe");
  caps.cpu_read_bytes_per_s = cpu_probe.measure(5).best_bytes_per_s;
  std::fprintf(stderr, "calibrate: CPU decode GEMV and prefill GEMM...\n");
  STRATA_ASSIGN_OR_RETURN(const double f16, cpu_gemv_rate(DType::kF16, int64_t{512} << 20));
  STRATA_ASSIGN_OR_RETURN(const double q4, cpu_gemv_rate(DType::kQ4_0, int64_t{512} << 20));
  caps.cpu_gemv_efficiency_dense = std::min(1.0, f16 / caps.cpu_read_bytes_per_s);
  caps.cpu_gemv_efficiency_4bit = std::min(1.0, q4 / caps.cpu_read_bytes_per_s);
  STRATA_ASSIGN_OR_RETURN(caps.cpu_gemm_flop_per_s, cpu_gemm_rate());

  std::string gpu_note = "no GPU rates measured (--no-gpu)";
  if (!f.no_gpu) {
    const GpuProbe probe = probe_gpu(0);
    if (probe.usable) {
      std::fprintf(stderr, "calibrate: %s...\n", describe(probe).c_str());
      STRATA_RETURN_IF_ERROR(measure_gpu_limits(probe, f.read_gib, cpu_probe, GemmShape{}, &caps));
      gpu_note = describe(probe);
    } else {
      gpu_note = "no usable GPU (" + probe.reason + "): GPU rates are the reference's";
      caps.vram_free_bytes = 0;
    }
  }
  // Nothing streams without a measured GPU: the host's combined rate is the CPU's own.
  if (gpu_note.rfind("no ", 0) == 0) caps.host_combined_bytes_per_s = caps.cpu_read_bytes_per_s;
  char when[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::localtime(&now));
  caps.source = std::string("calibrated ") + when + "; " + gpu_note;
  const std::string path = f.out.empty() ? default_caps_path() : f.out;
  STRATA_RETURN_IF_ERROR(caps.save(path));

  std::printf("C  CPU read              %8.1f GB/s  (%d threads)\n",
              caps.cpu_read_bytes_per_s / 1e9, placement.num_threads);
  std::printf("   CPU GEMV F16 / Q4_0   %8.2f / %.2f of C\n", caps.cpu_gemv_efficiency_dense,
              caps.cpu_gemv_efficiency_4bit);
  std::printf("   CPU GEMM (bf16)       %8.2f TFLOP/s\n", caps.cpu_gemm_flop_per_s / 1e12);
  std::printf("H  HBM read              %8.1f GB/s\n", caps.hbm_bytes_per_s / 1e9);
  std::printf("P  H2D pinned / pageable %8.1f / %.1f GB/s\n", caps.h2d_pinned_bytes_per_s / 1e9,
              caps.h2d_pageable_bytes_per_s / 1e9);
  std::printf("   D2H pinned / pageable %8.1f / %.1f GB/s\n", caps.d2h_pinned_bytes_per_s / 1e9,
              caps.d2h_pageable_bytes_per_s / 1e9);
  std::printf("S  P and C together      %8.1f GB/s\n", caps.host_combined_bytes_per_s / 1e9);
  std::printf("G  GPU GEMM (f16)        %8.1f TFLOP/s\n", caps.gpu_gemm_flop_per_s / 1e12);
  std::printf("   VRAM free             %s\n", format_bytes(caps.vram_free_bytes).c_str());
  std::printf("%s\nsaved to %s\n", caps.source.c_str(), path.c_str());
  return Status::ok();
}

}  // namespace

void add_calibrate_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand(
      "calibrate", "Measure this machine's bandwidths and compute rates for the planner");
  auto f = std::make_shared<CalibrateFlags>();
  cmd->add_option("--out", f->out, "Where to write them (default: " + default_caps_path() + ")");
  cmd->add_option("--read-gib", f->read_gib, "Buffer of the bandwidth probes (default 4)")
      ->check(CLI::Range(0.25, 256.0));
  cmd->add_flag("--no-gpu", f->no_gpu, "Measure the CPU only");
  cmd->callback([f, exit_code] {
    const Status s = calibrate(*f);
    *exit_code = s.is_ok() ? 0 : report_error(s.message());
  });
}

}  // namespace strata::cli
