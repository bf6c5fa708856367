// ColdSplit: the share of a decode step's cold KV that the CPU attends (cold_attention = cpu,
// issue 6), chosen per step from the rates the previous steps measured.
//
// The cold blocks of a decode step are read by two readers at once: the CPU attends its share
// where the blocks lie, and the link copies the rest into VRAM staging for the GPU. The step
// takes max(f B / r_cpu, (1 - f) B / r_link); both end together at f = r_cpu / (r_cpu + r_link).
// The rates are not known in advance: the link's is P less what the CPU's reads take from the
// memory system, and the CPU's depends on the attention kernel, the threads and the shape (on the
// H200's host it ran at 46 GB/s when C alone was 94, so a share from C alone, (S - P) / S, left
// the CPU as the long pole of every layer). So the executor reports what each side read and how
// long it took, and the share follows the measured rates (exponential average over steps).
//
// A share near 0 is the prefetch mode and near 1 the CPU-only mode: the split tends to either
// when one side is much faster. The share moves only when, at the rates measured, one side would
// take more than kImbalance times as long as the other, so that the block tables (whose entries
// depend on it) rarely change.
#pragma once

#include <cstdint>

namespace strata {

class ColdSplit {
 public:
  // 1.1 left the 128k step of the H200 at the link's 161 ms against the CPU's 153 (5%).
  static constexpr double kImbalance = 1.04;
  static constexpr double kSmoothing = 0.5;  // weight of the newest step's rate

  // initial: the share to start from (clamped to [0, 1]), e.g. Caps::cpu_share_of_host_reads().
  explicit ColdSplit(double initial);

  // What one step read: bytes and seconds on each side (either may be 0 when that side had no
  // work; its rate estimate then stays as it was).
  void add_cpu(double bytes, double seconds);
  void add_link(double bytes, double seconds);
  // Seconds the CPU side waited for a layer's q (the GPU's serial work between its parts);
  // reported only, the share does not weigh it.
  void add_cpu_wait(double seconds) { cpu_wait_s_ += seconds; }
  // Folds the step's reports into the rates; returns true when the share changed.
  bool end_step();

  double share() const { return share_; }
  double cpu_bytes_per_s() const { return cpu_rate_; }
  double link_bytes_per_s() const { return link_rate_; }
  // The last folded step's seconds on each side (summed over layers), to set against the
  // step's wall time: what the two readers leave of it is the step's serial part.
  double last_cpu_seconds() const { return last_cpu_s_; }
  double last_link_seconds() const { return last_link_s_; }
  double last_cpu_wait_seconds() const { return last_cpu_wait_s_; }

 private:
  static void fold(double bytes, double seconds, double* rate);

  double share_;
  double cpu_rate_ = 0, link_rate_ = 0;                             // 0: not measured yet
  double cpu_bytes_ = 0, cpu_s_ = 0, link_bytes_ = 0, link_s_ = 0;  // this step's
  double cpu_wait_s_ = 0;
  double last_cpu_s_ = 0, last_link_s_ = 0, last_cpu_wait_s_ = 0;
};

}  // namespace strata
