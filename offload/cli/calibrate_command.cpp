// `strata calibrate`: measures this machine's limits (the Caps of policies/caps.h) and caches them
// where `strata plan` finds them: CPU read bandwidth C, the CPU decode GEMV's fraction of it for
// dense and 4-bit weights, the CPU prefill GEMM rate; with a usable GPU also HBM read bandwidth H,
// pinned and pageable host-to-device copies P, device-to-host copies, P and C at the same time
// (S), the tensor-core GEMM rate G and the free VRAM. Each figure is measured the way
// ../shared/BENCHMARKS.md defines it; without a GPU the GPU rates keep their reference values and
// the file says so.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu_backend/compute_rates.h"
#include "cpu_backend/read_bandwidth.h"
#include "cpu_backend/thread_placement.h"
#include "gpu_backend/device_probe.h"
#include "offload/cli/caps_file.h"
#include "offload/cli/command.h"
#include "offload/cli/format_units.h"
#include "offload/exec/gpu_limits.h"
#include "policies/cost_model.h"

namespace strata::cli {
namespace {

struct CalibrateFlags {
  std::string out;
  double read_gib = 4.0;
  bool no_gpu = false;
};

Status calibrate(const CalibrateFlags& f) {
  const ThreadPlacement placement = apply_thread_placement(default_thread_count());
  Caps caps = Caps::reference();  // the rates nothing here measures keep their reference values
  std::fprintf(stderr, "calibrate: CPU read bandwidth over %.1f GiB, %d threads...\n", f.read_gib,
               placement.num_threads);
  cpu::CpuReadProbe cpu_probe(static_cast<int64_t>(f.read_gib * (1ll << 30)));
  if (!cpu_probe.ok()) return Status::out_of_memory("calibrate: cannot allocate the read probe");
  caps.cpu_read_bytes_per_s = cpu_probe.measure(5).best_bytes_per_s;
  std::fprintf(stderr, "calibrate: CPU decode GEMV and prefill GEMM...\n");
  STRATA_ASSIGN_OR_RETURN(const double f16,
                          cpu::measure_gemv_bytes_per_s(DType::kF16, int64_t{512} << 20));
  STRATA_ASSIGN_OR_RETURN(const double q4,
                          cpu::measure_gemv_bytes_per_s(DType::kQ4_0, int64_t{512} << 20));
  // Not clamped at 1: the read probe and the GEMV run at different moments of a shared host, and
  // the GEMV's own rate is what the cost model needs (C x efficiency).
  set_cpu_gemv_rate(DType::kF16, f16, &caps);
  set_cpu_gemv_rate(DType::kQ4_0, q4, &caps);
  STRATA_ASSIGN_OR_RETURN(caps.cpu_gemm_flop_per_s, cpu::measure_prefill_gemm_flop_per_s());

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
