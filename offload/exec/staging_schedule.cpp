#include "offload/exec/staging_schedule.h"

#include <algorithm>

namespace strata {

StagingSchedule::StagingSchedule(int num_slots)
    : holds_(static_cast<size_t>(std::max(num_slots, 1)), nullptr) {
  for (int s = static_cast<int>(holds_.size()) - 1; s >= 0; --s) free_.push_back(s);  // 0 first
}

size_t StagingSchedule::window() const { return std::min(holds_.size(), pass_.size()); }

StagingIssue StagingSchedule::issue(int slot, const void* layer) {
  StagingIssue i{slot, layer, holds_[static_cast<size_t>(slot)] != layer};
  ++(i.copy ? stats_.copies : stats_.slot_hits);
  holds_[static_cast<size_t>(slot)] = layer;
  in_flight_.push_back({slot, layer});
  return i;
}

void StagingSchedule::fill(std::vector<StagingIssue>* out) {
  while (in_flight_.size() < window() && !free_.empty()) {
    const int slot = free_.back();
    free_.pop_back();
    out->push_back(issue(slot, pass_[next_issue_]));
    next_issue_ = (next_issue_ + 1) % pass_.size();
  }
}

std::vector<StagingIssue> StagingSchedule::begin_pass(std::vector<const void*> pass) {
  pass_ = std::move(pass);
  next_acquire_ = 0;
  std::vector<StagingIssue> out;
  // What is in flight assumed the last pass repeats: keep what matches this pass, re-issue the
  // slots that hold something else, give back the slots past this pass's window.
  std::deque<InFlight> old;
  old.swap(in_flight_);
  while (old.size() > window()) {
    free_.push_back(old.back().slot);
    old.pop_back();
  }
  for (size_t i = 0; i < old.size(); ++i) {
    if (old[i].layer == pass_[i]) {
      in_flight_.push_back(old[i]);
    } else {
      out.push_back(issue(old[i].slot, pass_[i]));
    }
  }
  next_issue_ = pass_.empty() ? 0 : in_flight_.size() % pass_.size();
  fill(&out);
  return out;
}

StatusOr<int> StagingSchedule::acquire() {
  if (acquired_ >= 0) return Status::internal("staging: the last slot was not released");
  if (next_acquire_ >= pass_.size() || in_flight_.empty()) {
    return Status::internal("staging: no streamed layer left in this pass");
  }
  const InFlight f = in_flight_.front();
  if (f.layer != pass_[next_acquire_]) return Status::internal("staging: prefetch order lost");
  in_flight_.pop_front();
  ++next_acquire_;
  acquired_ = f.slot;
  return f.slot;
}

StatusOr<std::vector<StagingIssue>> StagingSchedule::release() {
  if (acquired_ < 0) return Status::internal("staging: nothing acquired");
  free_.push_back(acquired_);
  acquired_ = -1;
  std::vector<StagingIssue> out;
  fill(&out);
  return out;
}

}  // namespace strata
