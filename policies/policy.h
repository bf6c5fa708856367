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
//   kv_type         "f16" | "f32"                                                    ["f16"]
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
  std::vector<PlacementRule> rules;
  // Rates given in [caps]; the rest come from calibration (or Caps::reference()).
  std::vector<std::pair<std::string, double>> caps_overrides;

  static constexpr int64_t kDefaultVramMarginBytes = int64_t{1} << 30;

  // invalid_argument naming the key when a value is out of range.
  Status validate() const;
  // `caps` with the [caps] overrides applied.
  Caps apply_caps(Caps caps) const;
};

// Parses a policy file's text; `origin` (the file name) starts every error message.
StatusOr<Policy> parse_policy_toml(std::string_view text, const std::string& origin);
StatusOr<Policy> load_policy_file(const std::string& path);

StatusOr<PolicyKind> parse_policy_kind(std::string_view name);
StatusOr<Placement> parse_placement(std::string_view name);

}  // namespace strata
