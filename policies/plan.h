// Plan: what the planner decided (planner.h), the value that memory tiers and the executor
// consume: where every weight tensor lives and runs, for prefill and for decode, how many bytes
// each tier holds, and what the cost model predicts. Plain data; printed by `strata plan`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace strata {

// Where a tensor's bytes are read from when its op runs.
enum class Placement {
  kVram,    // resident in VRAM, run on the GPU
  kStream,  // pinned host memory, copied into a VRAM staging slot ahead of use, run on the GPU
  kCpu,     // pinned host memory, run on the CPU (only activations cross PCIe)
};
const char* placement_name(Placement placement);

struct TensorPlacement {
  std::string name;
  int64_t layer = -1;  // -1: not in a layer (embedding, output norm, head)
  int64_t bytes = 0;
  Placement decode = Placement::kVram;
  Placement prefill = Placement::kVram;
  bool by_rule = false;  // a [[rule]] of the policy placed it
};

// Bytes per tier. VRAM parts add up to vram_total(); host_pinned_bytes hold every streamed or
// CPU-run weight once (decode and prefill read the same copy).
struct TierBytes {
  int64_t vram_weights = 0;
  int64_t vram_kv = 0;
  int64_t vram_staging = 0;    // the ring of streaming slots
  int64_t vram_workspace = 0;  // activations, cuBLAS, attention, dequantization tiles
  int64_t host_pinned_weights = 0;
  int64_t host_kv = 0;
  int64_t vram_total() const { return vram_weights + vram_kv + vram_staging + vram_workspace; }
};

// Per-token (decode) or per-chunk (prefill) prediction, with the bytes each link moves.
struct Prediction {
  double seconds = 0;
  double tokens_per_s = 0;
  double vram_bytes = 0;    // weight bytes read from VRAM
  double stream_bytes = 0;  // over PCIe
  double cpu_bytes = 0;     // read by the CPU
  double flops = 0;
  double kv_host_bytes = 0;    // KV read from host memory per step (tiered KV, issue 6)
  std::string cold_attention;  // how that KV is attended: "prefetch" or "cpu" ("" when none)
  std::string bound;  // what limits it: "hbm", "pcie", "cpu", "host memory", "gpu compute", ...
};

struct Plan {
  std::string policy;  // the policy kind that made it
  std::vector<TensorPlacement> tensors;
  TierBytes bytes;          // the phase that needs more VRAM, with every host-held weight
  TierBytes bytes_decode;   // VRAM during decode (host_pinned_weights unset)
  TierBytes bytes_prefill;  // VRAM during prefill (host_pinned_weights unset)
  int64_t vram_budget_bytes = 0;
  int64_t min_vram_budget_bytes = 0;  // the smallest budget this policy can run with
  bool fits = true;                   // bytes.vram_total() <= vram_budget_bytes
  Prediction decode;
  Prediction prefill;
  std::string caps_source;
};

}  // namespace strata
