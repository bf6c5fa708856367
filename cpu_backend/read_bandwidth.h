// C in ../shared/BENCHMARKS.md: the host's all-core DRAM read bandwidth, measured the STREAM way
// (a read-only sum over a buffer far larger than the last-level cache, first-touched by the same
// pinned OpenMP threads that later read it, each thread always reading its own static slice,
// with 32-byte loads, 64-byte loads, and 64-byte loads with software prefetch).
// This is the roofline of decode on the CPU: a bandwidth-bound kernel can at best match it.
#pragma once

#include <cstdint>
#include <vector>

namespace strata::cpu {

// One way of reading the buffer and what it reached.
struct ReadMethod {
  const char* name = "";        // "load32", "load64", "load64+prefetch"
  double best_bytes_per_s = 0;  // the fastest pass
  double median_bytes_per_s = 0;
};

struct ReadBandwidth {
  // C: the best pass of any method. Several methods because a plain read loop is not always the
  // fastest reader: on some hosts software prefetch raises a core's reads in flight, and a
  // roofline that a kernel can beat is no roofline.
  double best_bytes_per_s = 0;
  std::vector<ReadMethod> methods;
  int64_t buffer_bytes = 0;
  int passes = 0;  // per method
  int threads = 0;
};

// Owns the probe's buffer (`buffer_bytes` rounded down to whole 4 KiB pages per thread), first-
// touched at construction by the current OpenMP threads, so that C can be measured again and
// again during a run (on a shared host it drifts by tens of percent within seconds).
// REQUIRES: the OpenMP thread count and placement do not change between construction and
// measure(). Not thread-safe; call from outside parallel regions.
class CpuReadProbe {
 public:
  explicit CpuReadProbe(int64_t buffer_bytes);
  ~CpuReadProbe();
  CpuReadProbe(const CpuReadProbe&) = delete;
  CpuReadProbe& operator=(const CpuReadProbe&) = delete;

  bool ok() const { return buffer_ != nullptr; }  // false: the allocation failed
  // Reads the buffer `passes` times per method (methods interleaved pass by pass, so that a noisy
  // neighbour hurts them alike). REQUIRES: ok().
  ReadBandwidth measure(int passes);

 private:
  uint8_t* buffer_ = nullptr;
  int64_t slice_bytes_ = 0;  // per thread
  int threads_ = 0;
};

// One-shot: allocates, first-touches, measures and frees (best_bytes_per_s 0 if it cannot).
ReadBandwidth measure_cpu_read_bandwidth(int64_t buffer_bytes, int passes);

// Allocates `bytes` aligned to 2 MiB and asks for transparent huge pages (fewer TLB misses, as a
// mapped model file gets with MAP_HUGETLB or THP). Free with free_huge().
void* alloc_huge(int64_t bytes);
void free_huge(void* p);

}  // namespace strata::cpu
