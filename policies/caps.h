// Caps: what the planner knows about this machine, as plain numbers (DESIGN.md: "Caps is what
// calibration measured"). The planner and the cost model read nothing else about the hardware.
// `strata calibrate` (issue 5) will measure and cache them per machine; until then
// Caps::reference() gives the figures measured on the project's GPU machine (bench/NOTES.md,
// ../shared/BENCHMARKS.md), and every field can be overridden in the policy file's [caps] table.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "offload/core/status.h"

namespace strata {

struct Caps {
  int64_t vram_free_bytes = 0;           // free VRAM when measured
  double hbm_bytes_per_s = 0;            // H: GPU memory read bandwidth
  double h2d_pinned_bytes_per_s = 0;     // P: host-to-device copies from pinned memory
  double h2d_pageable_bytes_per_s = 0;   // the same from pageable memory (never for streaming)
  double d2h_pinned_bytes_per_s = 0;     // device-to-host into pinned memory (KV copy-out)
  double d2h_pageable_bytes_per_s = 0;   // the same into pageable memory
  double cpu_read_bytes_per_s = 0;       // C: all-core read bandwidth
  double host_combined_bytes_per_s = 0;  // S: P and C at the same time, summed
  double gpu_gemm_flop_per_s = 0;        // G: tensor-core GEMM rate (f16 in, f32 out)
  double cpu_gemm_flop_per_s = 0;        // the CPU's prefill GEMM rate (oneDNN, bf16)
  // Fraction of C the CPU decode GEMV reaches on quantized weights (bench/NOTES.md: ~0.85 for
  // F16/Q8_0, ~0.6 for 4-bit types on the 16-core host).
  double cpu_gemv_efficiency_dense = 0.9;
  double cpu_gemv_efficiency_4bit = 0.6;
  // Fraction of H the GPU decode GEMV reaches (gpu_gemv_bench: 0.89 F16, 0.70 Q8_0, 0.40 Q4_0).
  double gpu_gemv_efficiency_dense = 0.88;
  double gpu_gemv_efficiency_8bit = 0.70;
  double gpu_gemv_efficiency_4bit = 0.40;
  std::string source = "unset";  // "reference (H200 machine, 2026-12-01)", "calibrated ...", ...

  // The share of a read split between the CPU and PCIe that the CPU should take so that both
  // finish together while they share host memory: (S - P) / S, in [0, 1]; 1 when S is unknown.
  // (Where cold_attention = cpu starts GpuExecutorOptions::cold_cpu_fraction; ColdSplit then
  // balances it on the rates measured.)
  double cpu_share_of_host_reads() const;

  // The GPU machine of this project: H200, PCIe Gen5 host with 16 cores (bench/NOTES.md).
  static Caps reference();

  // The cache file `strata calibrate` writes and `strata plan` reads: every rate by name.
  nlohmann::json to_json() const;
  // invalid_data naming `origin` and the key for a missing, unknown or non-positive rate.
  static StatusOr<Caps> from_json(const nlohmann::json& j, const std::string& origin);
  Status save(const std::string& path) const;  // written through path + ".tmp", then renamed
  static StatusOr<Caps> load(const std::string& path);
};

// The rates of Caps by name, for the cache file and the policy file's [caps] table.
struct CapsField {
  const char* key;
  double Caps::*rate;
};
std::span<const CapsField> caps_fields();

}  // namespace strata
