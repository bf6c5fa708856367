// StagingSchedule: which layer goes into which staging slot, and when (the decisions of
// WeightStream, weight_stream.h, without the CUDA calls, so that they are tested on any machine).
//
// A pass is the list of streamed layers a forward chunk runs, in order. Each slot holds one
// layer. Up to num_slots layers are "in flight" (issued, not yet acquired), in pass order; they
// wrap around to the start of the pass, so the last layers of one pass issue the first layers
// of the next. An issue whose slot already holds that layer needs no copy (a pass no longer than
// the ring streams once). A new pass that differs from the prefetched one re-issues the slots
// that hold the wrong layers and gives back the slots past its window.
//
// Layers are opaque keys (WeightStream passes its StreamedLayer pointers: one per layer and
// phase, so a layer copied for one phase never stands in for another phase's copy).
//
// Invariants: a slot is in flight, acquired, or free, never two at once; at most one slot is
// acquired; an issue never names the acquired slot; in-flight layers are the pass's next layers
// in cyclic order.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "offload/core/status.h"

namespace strata {

struct StagingIssue {
  int slot = 0;
  const void* layer = nullptr;
  bool copy = true;  // false: the slot holds this layer already
};

struct StagingStats {
  int64_t copies = 0;     // issues that copy
  int64_t slot_hits = 0;  // issues that found their layer in the slot
};

class StagingSchedule {
 public:
  explicit StagingSchedule(int num_slots);

  // Starts a pass; returns what to issue now (in order).
  std::vector<StagingIssue> begin_pass(std::vector<const void*> pass);
  // The slot of the pass's next layer. internal when the pass has no layer left, nothing is in
  // flight, or a slot is still acquired.
  StatusOr<int> acquire();
  // Frees the acquired slot; returns what to issue now (the next layers, cyclically).
  StatusOr<std::vector<StagingIssue>> release();

  int num_slots() const { return static_cast<int>(holds_.size()); }
  int acquired_slot() const { return acquired_; }
  const StagingStats& stats() const { return stats_; }

 private:
  struct InFlight {
    int slot = 0;
    const void* layer = nullptr;
  };
  size_t window() const;
  StagingIssue issue(int slot, const void* layer);
  void fill(std::vector<StagingIssue>* out);

  std::vector<const void*> holds_;  // by slot: the layer last issued into it
  std::vector<const void*> pass_;
  size_t next_acquire_ = 0;  // index into pass_
  size_t next_issue_ = 0;    // index into pass_ (cyclic)
  std::deque<InFlight> in_flight_;
  std::vector<int> free_;  // a stack: the slot freed last is reused first
  int acquired_ = -1;
  StagingStats stats_;
};

}  // namespace strata
