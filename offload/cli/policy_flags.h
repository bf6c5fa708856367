// The part of the offload policy that `strata plan` and `strata run` take the same way: the
// policy file (--config), and the flags over it (flags win). Each command adds its own keys on
// top and validates the result.
#pragma once

#include <cstdint>
#include <string>

#include "policies/policy.h"

namespace strata::cli {

// `kind` empty, `vram_budget_bytes` 0 and `prefetch_depth` 0 mean "not given".
inline StatusOr<Policy> policy_from_file_and_flags(const std::string& config,
                                                   const std::string& kind,
                                                   int64_t vram_budget_bytes,
                                                   int64_t prefetch_depth) {
  Policy p;
  if (!config.empty()) {
    STRATA_ASSIGN_OR_RETURN(p, load_policy_file(config));
  }
  if (!kind.empty()) {
    STRATA_ASSIGN_OR_RETURN(p.kind, parse_policy_kind(kind));
  }
  if (vram_budget_bytes > 0) p.vram_budget_bytes = vram_budget_bytes;
  if (prefetch_depth > 0) p.prefetch_depth = prefetch_depth;
  return p;
}

// The tiered-KV keys (issue 6) as given on a command line; unset values leave the file's.
struct KvTierFlags {
  int64_t hot_window = -1;
  int64_t sink_blocks = -1;
  int64_t block_tokens = 0;
  std::string cold_attention;  // auto | prefetch | cpu
};

inline Status apply_kv_tier_flags(const KvTierFlags& f, Policy* p) {
  if (f.hot_window >= 0) p->hot_window_tokens = f.hot_window;
  if (f.sink_blocks >= 0) p->sink_blocks = f.sink_blocks;
  if (f.block_tokens > 0) p->block_tokens = f.block_tokens;
  if (!f.cold_attention.empty()) {
    STRATA_ASSIGN_OR_RETURN(p->cold_attention, parse_cold_attention(f.cold_attention));
  }
  return Status::ok();
}

}  // namespace strata::cli
