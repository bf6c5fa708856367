#include "offload/exec/weight_stream.h"

namespace strata {

StatusOr<std::unique_ptr<WeightStream>> WeightStream::create(DeviceArena& arena, int num_slots,
                                                             int64_t slot_bytes,
                                                             const cuda::Stream& compute) {
  if (num_slots < 1 || slot_bytes < 1) {
    return Status::invalid_argument("the staging ring needs at least one slot of at least 1 byte");
  }
  std::unique_ptr<WeightStream> ws(new WeightStream(compute, num_slots, slot_bytes));
  STRATA_ASSIGN_OR_RETURN(ws->copy_, cuda::Stream::create());
  ws->slots_.resize(static_cast<size_t>(num_slots));
  for (Slot& slot : ws->slots_) {
    StatusOr<DeviceBuffer> buffer = arena.allocate(slot_bytes, DeviceMemoryTag::kStaging);
    if (!buffer.is_ok()) {
      return Status(buffer.status().code(), "the staging ring (" + std::to_string(num_slots) +
                                                " slots of " + std::to_string(slot_bytes) +
                                                " bytes): " + buffer.status().message());
    }
    slot.buffer = std::move(buffer).value();
    STRATA_ASSIGN_OR_RETURN(slot.ready, cuda::Event::create(cuda::EventTiming::kDisabled));
    STRATA_ASSIGN_OR_RETURN(slot.free, cuda::Event::create(cuda::EventTiming::kDisabled));
  }
  return ws;
}

WeightStream::~WeightStream() {
  // Copies may still be writing into slots that are about to go back to the arena.
  (void)copy_.synchronize();
}

Status WeightStream::run(const std::vector<StagingIssue>& issues) {
  for (const StagingIssue& i : issues) {
    if (!i.copy) {  // the slot holds the layer: its "ready" event is still the right one
      ++stats_.slot_hits;
      continue;
    }
    Slot& s = slots_[static_cast<size_t>(i.slot)];
    const auto* layer = static_cast<const StreamedLayer*>(i.layer);
    // The copy waits for the last kernels that read the slot (an event never recorded is
    // complete already).
    STRATA_RETURN_IF_ERROR(copy_.wait(s.free));
    auto* base = static_cast<uint8_t*>(s.buffer.data());
    for (const StreamedLayer::Range& r : layer->ranges) {
      if (r.offset + r.bytes > slot_bytes_) {
        return Status::internal("layer " + std::to_string(layer->layer) +
                                " does not fit in a staging slot");
      }
      STRATA_RETURN_IF_ERROR(cuda::memcpy_async(base + r.offset, layer->host + r.offset, r.bytes,
                                                cuda::CopyKind::kHostToDevice, copy_));
      stats_.bytes_copied += r.bytes;
    }
    STRATA_RETURN_IF_ERROR(s.ready.record(copy_));
    ++stats_.copies;
  }
  return Status::ok();
}

Status WeightStream::begin_pass(std::vector<const StreamedLayer*> layers) {
  if (schedule_.acquired_slot() >= 0) {
    return Status::internal("WeightStream::begin_pass with a slot still acquired");
  }
  return run(schedule_.begin_pass(std::vector<const void*>(layers.begin(), layers.end())));
}

StatusOr<const uint8_t*> WeightStream::acquire() {
  STRATA_ASSIGN_OR_RETURN(const int slot, schedule_.acquire());
  Slot& s = slots_[static_cast<size_t>(slot)];
  STRATA_RETURN_IF_ERROR(compute_.wait(s.ready));
  return static_cast<const uint8_t*>(s.buffer.data());
}

Status WeightStream::release() {
  const int slot = schedule_.acquired_slot();
  if (slot < 0) return Status::internal("WeightStream: nothing acquired");
  // "free" is recorded before the next copy into the slot is queued: that copy waits for it.
  STRATA_RETURN_IF_ERROR(slots_[static_cast<size_t>(slot)].free.record(compute_));
  STRATA_ASSIGN_OR_RETURN(const std::vector<StagingIssue> issues, schedule_.release());
  return run(issues);
}

}  // namespace strata
