#include "offload/exec/weight_stream.h"

#include <algorithm>

namespace strata {

StatusOr<std::unique_ptr<WeightStream>> WeightStream::create(DeviceArena& arena, int num_slots,
                                                             int64_t slot_bytes,
                                                             const cuda::Stream& compute) {
  if (num_slots < 1 || slot_bytes < 1) {
    return Status::invalid_argument("the staging ring needs at least one slot of at least 1 byte");
  }
  std::unique_ptr<WeightStream> ws(new WeightStream(compute, slot_bytes));
  STRATA_ASSIGN_OR_RETURN(ws->copy_, cuda::Stream::create());
  ws->slots_.resize(static_cast<size_t>(num_slots));
  for (int s = 0; s < num_slots; ++s) {
    Slot& slot = ws->slots_[static_cast<size_t>(s)];
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
  for (int s = num_slots - 1; s >= 0; --s) ws->free_slots_.push_back(s);  // slot 0 first
  return ws;
}

WeightStream::~WeightStream() {
  // Copies may still be writing into slots that are about to go back to the arena.
  (void)copy_.synchronize();
}

size_t WeightStream::window() const { return std::min(slots_.size(), pass_.size()); }

Status WeightStream::issue(int slot, const StreamedLayer* layer) {
  Slot& s = slots_[static_cast<size_t>(slot)];
  pending_.push_back(Pending{slot, layer});
  if (s.holds == layer) {  // still there from an earlier copy: its "ready" is still the right one
    ++stats_.slot_hits;
    return Status::ok();
  }
  // The copy stream waits for the last kernels that read the slot (an event never recorded is
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
  s.holds = layer;
  ++stats_.copies;
  return Status::ok();
}

Status WeightStream::begin_pass(std::vector<const StreamedLayer*> layers) {
  if (acquired_slot_ >= 0) {
    return Status::internal("WeightStream::begin_pass with a slot still acquired");
  }
  pass_ = std::move(layers);
  next_acquire_ = 0;
  // What was prefetched assumed the last pass repeats. Keep what matches this pass, copy again
  // what does not, and give back the slots of prefetches past this pass's window.
  std::deque<Pending> old;
  old.swap(pending_);
  while (old.size() > window()) {
    free_slots_.push_back(old.back().slot);
    old.pop_back();
  }
  for (size_t i = 0; i < old.size(); ++i) {
    if (old[i].layer == pass_[i]) {
      pending_.push_back(old[i]);
    } else {
      STRATA_RETURN_IF_ERROR(issue(old[i].slot, pass_[i]));
    }
  }
  next_issue_ = pass_.empty() ? 0 : pending_.size() % pass_.size();
  while (pending_.size() < window() && !free_slots_.empty()) {
    const int slot = free_slots_.back();
    free_slots_.pop_back();
    STRATA_RETURN_IF_ERROR(issue(slot, pass_[next_issue_]));
    next_issue_ = (next_issue_ + 1) % pass_.size();
  }
  return Status::ok();
}

StatusOr<const uint8_t*> WeightStream::acquire() {
  if (acquired_slot_ >= 0) return Status::internal("WeightStream: slot not released");
  if (next_acquire_ >= pass_.size() || pending_.empty()) {
    return Status::internal("WeightStream: no streamed layer left in this pass");
  }
  const Pending p = pending_.front();
  if (p.layer != pass_[next_acquire_]) {
    return Status::internal("WeightStream: prefetch order lost");
  }
  pending_.pop_front();
  ++next_acquire_;
  Slot& s = slots_[static_cast<size_t>(p.slot)];
  STRATA_RETURN_IF_ERROR(compute_.wait(s.ready));
  acquired_slot_ = p.slot;
  return static_cast<const uint8_t*>(s.buffer.data());
}

Status WeightStream::release() {
  if (acquired_slot_ < 0) return Status::internal("WeightStream: nothing acquired");
  Slot& s = slots_[static_cast<size_t>(acquired_slot_)];
  STRATA_RETURN_IF_ERROR(s.free.record(compute_));
  free_slots_.push_back(acquired_slot_);
  acquired_slot_ = -1;
  // The freed slot takes the next layer in cyclic pass order: the next pass's first layers
  // start copying while this pass's last layers compute.
  while (pending_.size() < window() && !free_slots_.empty()) {
    const int slot = free_slots_.back();
    free_slots_.pop_back();
    STRATA_RETURN_IF_ERROR(issue(slot, pass_[next_issue_]));
    next_issue_ = (next_issue_ + 1) % pass_.size();
  }
  return Status::ok();
}

}  // namespace strata
