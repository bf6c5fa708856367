// Policy: what the user asks of the offload, as one frozen value (FlexGen's Policy is the model):
// which strategy places the weights, the VRAM budget, how far ahead weights are streamed, the
// workload the plan is made for, manual placement rules by tensor name (like llama.cpp's
// --override-tensor) and overrides of the machine's measured rates. It lives in a TOML file
// (`--config policy.toml`, examples in policies/examples/) and every key is also a flag of
// `strata plan` / `strata run`. Unknown keys and bad values are errors that name the key.
//
// Keys (defaults in brackets):
//   policy          "auto" | "gpu-first" | "stream" | "cpu"                         ["auto"]
//   vram_budget     "8GiB", "512MiB" or bytes; "" = the free VRAM minus 1 GiB        [""]
//   prefetch_depth  layers streamed ahead of the one computing, 1..8                 [2]
//   context         tokens of KV per sequence the plan provisions                    [4096]
//   batch           sequences decoded together                                       [1]
//   prefill_tokens  tokens per prefill chunk                                         [2048]
//   kv_type         "f16" | "f32" | "q8_0"                                           ["f16"]
//   hot_window      tokens of each sequence's most recent KV kept in VRAM; 0 = all   [0]
//   sink_blocks     the first KV blocks of a sequence, kept in VRAM with the window  [1]
//   block_tokens    tokens per KV block                                              [16]
//   cold_attention  "auto" | "prefetch" | "cpu": how KV outside VRAM is attended     ["auto"]
//   [[rule]]        match = "<ECMAScript regex on tensor names>", place = "vram" | "stream" | "cpu"
//   [caps]          any field of Caps (policies/caps.h) by name, e.g. hbm_bytes_per_s = 3.3e12
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "offload/core/dtype.h"
#include "offload/core/status.h"
#include "policies/caps.h"
#include "policies/plan.h"

namespace strata {

enum class PolicyKind {
  kAuto,      // the cost model decides (default)
  kGpuFirst,  // the first layers resident, the rest on the CPU (llama.cpp's -ngl)
  kStream,    // everything that is not resident is streamed (ZeRO-Inference, FlexGen)
  kCpu,       // no GPU at all
};
const char* policy_kind_name(PolicyKind kind);

// How attention reads KV blocks that live in pinned host memory (issue 6): copied back into VRAM
// ahead of their layer (prefetch, over PCIe), or attended where they are by the CPU and merged
// with the GPU's part through the log-sum-exp (cpu). auto: the faster link by the cost model.
enum class ColdAttention { kAuto, kPrefetch, kCpu };
const char* cold_attention_name(ColdAttention mode);
StatusOr<ColdAttention> parse_cold_attention(std::string_view name);
// The KV element types by their --kv-type / kv_type names: "f32", "f16", "q8_0".
const char* kv_type_name(DType kv_type);
StatusOr<DType> parse_kv_type(std::string_view name);

struct PlacementRule {
  std::string match;  // regex over the whole tensor name
  Placement place = Placement::kVram;
};

struct Policy {
  PolicyKind kind = PolicyKind::kAuto;
  int64_t vram_budget_bytes = 0;  // 0: the free VRAM minus kDefaultVramMarginBytes
  int64_t prefetch_depth = 2;
  int64_t context_tokens = 4096;
  int64_t batch = 1;
  int64_t prefill_tokens = 2048;
  DType kv_type = DType::kF16;
  int64_t hot_window_tokens = 0;  // 0: every sequence's whole KV in VRAM
  int64_t sink_blocks = 1;
  int64_t block_tokens = 16;
  ColdAttention cold_attention = ColdAttention::kAuto;
  std::vector<PlacementRule> rules;
  // Rates given in [caps]; the rest come from calibration (or Caps::reference()).
  std::vector<std::pair<std::string, double>> caps_overrides;

  static constexpr int64_t kDefaultVramMarginBytes = int64_t{1} << 30;

  // invalid_argument naming the key when a value is out of range.
  Status validate() const;
  // KV tokens per sequence held in VRAM and in host memory for `context_tokens` (all in VRAM
  // without a hot window; sinks and window in whole blocks, plus the block being written).
  int64_t hot_kv_tokens() const;
  // The hot tier's size per sequence in tokens, what VRAM must hold: blocks move to the cold tier
  // only between chunks, so one prefill chunk (prefill_tokens) comes on top of hot_kv_tokens'
  // window. The executor sizes its hot pool the same way (ExecutorOptions::kv_cache_config).
  int64_t hot_kv_reserved_tokens() const;
  int64_t cold_kv_tokens() const { return context_tokens - hot_kv_tokens(); }
  // Blocks of cold_kv_tokens: what one VRAM staging slot holds of a layer to prefetch all of a
  // sequence's cold KV (GpuExecutorOptions::cold_stage_blocks; fixed_vram keeps two layers).
  int64_t cold_kv_blocks() const { return (cold_kv_tokens() + block_tokens - 1) / block_tokens; }

  // `caps` with the [caps] overrides applied.
  Caps apply_caps(Caps caps) const;
};

// Parses a policy file's text; `origin` (the file name) starts every error message.
StatusOr<Policy> parse_policy_toml(std::string_view text, const std::string& origin);
StatusOr<Policy> load_policy_file(const std::string& path);

StatusOr<PolicyKind> parse_policy_kind(std::string_view name);
StatusOr<Placement> parse_placement(std::string_view name);

}  // namespace strata
