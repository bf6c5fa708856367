// WeightStream: the streamed tier of the weights (DESIGN.md, "Overlap"). A streamed layer's
// matrices live in pinned host memory, already in their GPU layout; before the layer runs they are
// copied, on a copy stream of their own, into one of a ring of VRAM staging slots, and CUDA events
// order everything: the compute stream waits for the slot's copy ("ready"), the next copy into
// the slot waits for the compute that read it ("free"). Nothing synchronizes the host.
//
// Which layer goes into which slot is StagingSchedule's decision (staging_schedule.h, tested
// without a GPU); this class turns its decisions into copies and events.
//
// A pass is the list of streamed layers one forward chunk runs, in order. Copies run ahead of the
// compute by the ring's size, and they wrap around: the last layers of one pass start the copies
// of the first layers of the next (decode repeats the same pass every token, so the copy engine
// never waits for the host). When the next pass is a different list (prefill, then decode), the
// prefetched slots that hold the wrong layers are copied again. A slot that still holds the layer
// it is asked for is not copied again, so a pass no longer than the ring streams once and then
// runs from the slots.
//
// Example (one forward chunk):
//   STRATA_RETURN_IF_ERROR(stream->begin_pass(layers_this_pass));
//   for each layer: if streamed {
//     STRATA_ASSIGN_OR_RETURN(const uint8_t* slot, stream->acquire());  // compute waits for it
//     ... queue the layer's kernels on `compute`, reading the slot ...
//     STRATA_RETURN_IF_ERROR(stream->release());  // the slot is free once those kernels ran
//   }
// Not thread-safe: the executor's one thread drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "gpu_backend/cuda_api.h"
#include "memory/device_arena.h"
#include "offload/core/status.h"
#include "offload/exec/staging_schedule.h"

namespace strata {

// One streamed layer: its host image and the byte ranges of it to copy, each to the same offset
// in the slot (the matrices this pass streams; a layer may stream all of its matrices or some).
struct StreamedLayer {
  struct Range {
    int64_t offset = 0;
    int64_t bytes = 0;
  };
  int64_t layer = -1;
  const uint8_t* host = nullptr;  // pinned; outlives the WeightStream
  std::vector<Range> ranges;
};

struct WeightStreamStats {
  int64_t copies = 0;        // layer copies issued
  int64_t bytes_copied = 0;  // host-to-device bytes issued
  int64_t slot_hits = 0;     // layers found still in their slot (no copy)
};

class WeightStream {
 public:
  // `num_slots` slots of `slot_bytes` each, from the arena (tag kStaging). The compute stream
  // outlives the WeightStream. out_of_memory naming the ring when the budget is short.
  static StatusOr<std::unique_ptr<WeightStream>> create(DeviceArena& arena, int num_slots,
                                                        int64_t slot_bytes,
                                                        const cuda::Stream& compute);
  ~WeightStream();
  WeightStream(const WeightStream&) = delete;
  WeightStream& operator=(const WeightStream&) = delete;

  // Starts a pass over `layers` (they outlive the pass; an empty list is a pass with nothing
  // streamed) and issues the copies of its first layers that are not already in flight.
  Status begin_pass(std::vector<const StreamedLayer*> layers);
  // The next layer of the pass: the compute stream waits (on the GPU) for its copy. Returns the
  // slot's base address; matrix i of the layer is at base + its range's offset.
  // REQUIRES: fewer acquire() calls than layers in this pass; the previous acquire was released.
  StatusOr<const uint8_t*> acquire();
  // Everything that reads the acquired slot has been queued on the compute stream: records the
  // slot's "free" event and issues the next copy (of this pass, or the first layers of the next).
  Status release();

  int num_slots() const { return static_cast<int>(slots_.size()); }
  int64_t slot_bytes() const { return slot_bytes_; }
  const WeightStreamStats& stats() const { return stats_; }

 private:
  struct Slot {
    DeviceBuffer buffer;
    cuda::Event ready;  // the last copy into the slot
    cuda::Event free;   // the last compute that read the slot
  };
  WeightStream(const cuda::Stream& compute, int num_slots, int64_t slot_bytes)
      : compute_(compute), slot_bytes_(slot_bytes), schedule_(num_slots) {}
  // Queues the copies the schedule decided on the copy stream, each after the slot's last reader.
  Status run(const std::vector<StagingIssue>& issues);

  const cuda::Stream& compute_;
  const int64_t slot_bytes_;
  cuda::Stream copy_;
  std::vector<Slot> slots_;
  StagingSchedule schedule_;  // which layer goes into which slot, when
  WeightStreamStats stats_;
};

}  // namespace strata
