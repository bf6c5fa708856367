// CostModel: predicted time of a decode step and a prefill chunk for a placement, from the bytes
// each tier must move, the FLOPs, and the machine's rates (Caps). The rooflines of
// ../shared/BENCHMARKS.md, made per tensor:
//
//   decode, per step of `batch` sequences:
//     T = max( B_stream / P,                           PCIe, overlapped with compute (prefetch)
//              (B_vram + B_stream) / (H e_gpu) + KV / H  the GPU's work, in layer order
//                + B_cpu / (C e_cpu) * f(batch),          ... then the CPU's, in the same order
//              (B_stream + B_cpu) / S )                 both host links share the memory system
//   prefill, per chunk of N tokens:
//     T = max( B_stream / P, FLOPs_gpu / G ) + FLOPs_cpu / G_cpu
//
// e_gpu, e_cpu are the GEMV efficiencies per weight type (Caps); f(batch) = 1 + 0.5 (batch - 1)
// models the CPU GEMV turning compute-bound beyond one sequence (bench/NOTES.md: batch 4 ran at
// ~0.35 of C in weight bytes). Pure functions; the planner calls them for every candidate.
#pragma once

#include <vector>

#include "offload/model/model_spec.h"
#include "policies/caps.h"
#include "policies/plan.h"
#include "policies/policy.h"

namespace strata {

struct TensorCost {
  int64_t bytes = 0;
  int64_t params = 0;  // multiply-adds per token
  DType type = DType::kF16;
  int64_t layer = -1;  // -1: not in a layer
  // The output head: a prefill chunk needs the logits of its last token only (all_logits aside).
  bool head = false;
};

// Decode streams the same layers every token. When they are no more than the staging ring's
// slots (prefetch_depth + 1), they stay in their slots after the first token (the executor's
// WeightStream copies a slot only when it holds another layer): no PCIe traffic, read from VRAM.
bool streamed_layers_stay_in_ring(const std::vector<TensorCost>& costs,
                                  const std::vector<Placement>& placements, const Policy& policy);

// `costs[i]` belongs to `placements[i]`. KV bytes read per step come from the spec and policy.
Prediction predict_decode(const HyperParams& hp, const std::vector<TensorCost>& costs,
                          const std::vector<Placement>& placements, const Policy& policy,
                          const Caps& caps);
Prediction predict_prefill(const HyperParams& hp, const std::vector<TensorCost>& costs,
                           const std::vector<Placement>& placements, const Policy& policy,
                           const Caps& caps);

// e_gpu and e_cpu of a weight type.
double gpu_gemv_efficiency(DType type, const Caps& caps);
double cpu_gemv_efficiency(DType type, const Caps& caps);
// Records a CPU decode GEMV rate measured on `type` as the efficiency (of
// caps.cpu_read_bytes_per_s) of the class cpu_gemv_efficiency reads for it.
void set_cpu_gemv_rate(DType type, double bytes_per_s, Caps* caps);

}  // namespace strata
