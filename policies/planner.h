// Planner: a pure function from (model spec, policy, caps) to a Plan (plan.h), made of named
// passes, each tested on its own (tests/policies/). Nothing here loads weights or calls CUDA: the
// spec's tensor table (names, types, shapes, bytes) is all it reads, so `strata plan` works on a
// shape with no file.
//
// The unit of placement is a layer (its nine or twelve tensors move together) plus two units
// outside the layers: the output head (output_norm + output, or the tied embedding) and the
// embedding table, which stays on the host (one row per token crosses PCIe). Passes:
//   1. fixed_vram:        KV, workspace and (when anything streams) the staging ring
//   2. place_by_rules:    tensors a [[rule]] names are pinned where the rule says
//   3. fill_vram:         units in model order become resident while they fit (the head last
//                         for gpu-first, as llama.cpp's -ngl; first for the others: it is read
//                         by every token and is the largest unit)
//   4. split_host:        the remaining units go to the CPU (gpu-first), to the stream (stream),
//                         or, for auto, the split between stream and CPU that the cost model
//                         predicts fastest for decode, the streamed layers spread evenly among
//                         the CPU ones (so that PCIe and the CPU work at the same time);
//                         prefill streams every non-resident unit. Residents are the same in
//                         both phases (the executor keeps one set).
//                         Staging slots hold one layer, so a head that is not resident runs on
//                         the CPU
//   5. predict:           cost_model.h for decode and prefill
#pragma once

#include "offload/model/model_spec.h"
#include "policies/caps.h"
#include "policies/plan.h"
#include "policies/policy.h"

namespace strata {

// REQUIRES: policy.validate() is ok. `vram_budget_bytes` of 0 in the policy means
// caps.vram_free_bytes - Policy::kDefaultVramMarginBytes. The plan is always returned; when the
// budget is below the policy's minimum, plan.fits is false and plan.min_vram_budget_bytes says
// what would work.
Plan make_plan(const ModelSpec& spec, const Policy& policy, const Caps& caps);

// The passes, for tests.
namespace planner {

// Device memory a GPU executor holds outside its arena (the CUDA stream, cuBLAS's handle): the
// executor measures it at creation and takes it off the arena's budget (GpuExecutor::
// outside_arena_bytes; the golden offload tests check the measurement stays below this), so the
// plan keeps this much of the budget free of weights, KV and workspace.
inline constexpr int64_t kOutsideArenaBytes = int64_t{96} << 20;

struct Unit {
  std::string name;             // "blk.7", "output", "token_embd"
  std::vector<size_t> tensors;  // indices into Plan::tensors
  int64_t bytes = 0;
};

// Layer units in order, then the head unit, then the embedding unit.
std::vector<Unit> units_of(const ModelSpec& spec, std::vector<TensorPlacement>* tensors);

// VRAM the policy needs besides resident weights: KV for context x batch, workspace, and the
// staging ring of (prefetch_depth + 1) slots of the largest streamable unit.
TierBytes fixed_vram(const ModelSpec& spec, const Policy& policy, int64_t largest_unit_bytes,
                     bool streams);

}  // namespace planner
}  // namespace strata
