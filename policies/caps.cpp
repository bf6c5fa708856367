#include "policies/caps.h"

namespace strata {

Caps Caps::reference() {
  Caps c;
  c.vram_free_bytes = int64_t{139} << 30;
  c.hbm_bytes_per_s = 4.50e12;          // gpu_e2e_bench read probe, 2026-12-01
  c.h2d_pinned_bytes_per_s = 52.6e9;    // BENCHMARKS.md
  c.h2d_pageable_bytes_per_s = 6.7e9;   // BENCHMARKS.md
  c.cpu_read_bytes_per_s = 79e9;        // BENCHMARKS.md (unpinned threads)
  c.host_combined_bytes_per_s = 108e9;  // BENCHMARKS.md
  c.gpu_gemm_flop_per_s = 7.0e14;       // cuBLAS f16 2048x14336x4096, 2026-12-01
  c.cpu_gemm_flop_per_s = 3.8e12;       // oneDNN bf16 on the 16-core host (bench/NOTES.md)
  c.source = "reference (the project's H200 machine, bench/NOTES.md)";
  return c;
}

}  // namespace strata
