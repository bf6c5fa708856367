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

}  // namespace strata::cli
