// The limits of issue 5's rooflines, measured in the calling benchmark's own run (offload_bench,
// long_context_bench): C by the all-core read probe, then H, P, S and G by measure_gpu_limits
// (G on the model's prefill GEMM shape), starting from the reference caps' GEMV efficiencies.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "bench/bench_check.h"
#include "cpu_backend/read_bandwidth.h"
#include "offload/exec/gpu_limits.h"
#include "offload/model/model_spec.h"
#include "policies/caps.h"

namespace strata::bench {

inline Caps measure_offload_limits(const GpuProbe& probe, const HyperParams& hp,
                                   int64_t prefill_chunk, double read_gib) {
  Caps caps = Caps::reference();
  cpu::CpuReadProbe cpu_probe(static_cast<int64_t>(read_gib * (1ll << 30)));
  if (!cpu_probe.ok()) check(Status::out_of_memory("CPU read probe"), "cpu read");
  caps.cpu_read_bytes_per_s = cpu_probe.measure(5).best_bytes_per_s;
  check(measure_gpu_limits(probe, read_gib, cpu_probe, GemmShape{hp.n_ff, prefill_chunk, hp.n_embd},
                           &caps),
        "limits");
  return caps;
}

inline void print_offload_limits(const Caps& caps, int threads) {
  std::fprintf(stderr,
               "limits: H %.0f GB/s, P %.1f GB/s, C %.1f GB/s, S %.1f GB/s (P and C together), "
               "G %.0f TFLOP/s, %d threads\n",
               caps.hbm_bytes_per_s / 1e9, caps.h2d_pinned_bytes_per_s / 1e9,
               caps.cpu_read_bytes_per_s / 1e9, caps.host_combined_bytes_per_s / 1e9,
               caps.gpu_gemm_flop_per_s / 1e12, threads);
}

// The weight type of the model's layer matrices ("mixed" when it has none to name it by).
inline std::string layer_weight_type(const ModelSpec& spec) {
  const TensorSpec* t = spec.find("blk.0.ffn_up.weight");
  return t != nullptr ? dtype_name(t->type) : "mixed";
}

}  // namespace strata::bench
