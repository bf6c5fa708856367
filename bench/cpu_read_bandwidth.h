// C in ../shared/BENCHMARKS.md: the host's all-core DRAM read bandwidth, measured the STREAM way
// (a read-only sum over a buffer far larger than the last-level cache, first-touched by the same
// pinned OpenMP threads that later read it, each thread always reading its own static slice,
// with 32-byte loads, 64-byte loads, and 64-byte loads with software prefetch).
// This is the roofline of decode on the CPU: a bandwidth-bound kernel can at best match it.
#pragma once

#include <cstdint>
#include <vector>

namespace strata::bench {

// One way of reading the buffer and what it reached.
struct ReadMethod {
  const char* name = "";          // "load32", "load64", "load64+prefetch"
  double best_bytes_per_s = 0;    // the fastest pass
  double median_bytes_per_s = 0;
};

struct ReadBandwidth {
  // C: the best pass of any method. Several methods because a plain read loop is not always the
  // fastest reader: on some hosts software prefetch raises a core's reads in flight, and a
  // roofline that a kernel can beat is no roofline.
  double best_bytes_per_s = 0;
  std::vector<ReadMethod> methods;
  int64_t buffer_bytes = 0;
  int passes = 0;                 // per method
  int threads = 0;
};

// Reads `buffer_bytes` (rounded down to whole 4 KiB pages per thread) `passes` times per method
// (the methods interleaved pass by pass, so that a noisy neighbour hurts them alike) with the
// current OpenMP thread count; the buffer is allocated, first-touched, read and freed inside.
ReadBandwidth measure_cpu_read_bandwidth(int64_t buffer_bytes, int passes);

// Allocates `bytes` aligned to 2 MiB and asks for transparent huge pages (fewer TLB misses, as a
// mapped model file gets with MAP_HUGETLB or THP). Free with free_huge().
void* alloc_huge(int64_t bytes);
void free_huge(void* p);

}  // namespace strata::bench
