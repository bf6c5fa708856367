#include "offload/exec/cold_split.h"

#include <algorithm>

namespace strata {

ColdSplit::ColdSplit(double initial) : share_(std::clamp(initial, 0.0, 1.0)) {}

void ColdSplit::add_cpu(double bytes, double seconds) {
  cpu_bytes_ += bytes;
  cpu_s_ += seconds;
}

void ColdSplit::add_link(double bytes, double seconds) {
  link_bytes_ += bytes;
  link_s_ += seconds;
}

void ColdSplit::fold(double bytes, double seconds, double* rate) {
  if (bytes <= 0 || seconds <= 0) return;
  const double r = bytes / seconds;
  *rate = *rate > 0 ? kSmoothing * r + (1 - kSmoothing) * *rate : r;
}

bool ColdSplit::end_step() {
  fold(cpu_bytes_, cpu_s_, &cpu_rate_);
  fold(link_bytes_, link_s_, &link_rate_);
  last_cpu_s_ = cpu_s_;
  last_link_s_ = link_s_;
  last_cpu_wait_s_ = cpu_wait_s_;
  cpu_bytes_ = cpu_s_ = link_bytes_ = link_s_ = cpu_wait_s_ = 0;
  // Until both sides have been seen the share stays: a side with no work has no rate to weigh.
  if (cpu_rate_ <= 0 || link_rate_ <= 0) return false;
  const double t_cpu = share_ / cpu_rate_, t_link = (1 - share_) / link_rate_;
  if (t_cpu <= kImbalance * t_link && t_link <= kImbalance * t_cpu) return false;
  share_ = cpu_rate_ / (cpu_rate_ + link_rate_);
  return true;
}

}  // namespace strata
