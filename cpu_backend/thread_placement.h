// Thread placement for the CPU kernels: how many physical cores this process may use, and one
// OpenMP thread pinned to each. Decode GEMV is bound by DRAM bandwidth, which one thread per
// physical core already saturates; a second hyperthread on a core adds no bandwidth and an
// unpinned thread that migrates loses its cache and its prefetch streams.
//
// Call apply_thread_placement once at start-up, before the first parallel region, from the main
// thread. It sets OpenMP's thread count and binds OpenMP thread i to physical core i (cores
// counted in hwloc's order over the cores this process is allowed to run on; threads beyond the
// core count wrap around). The binding holds while later parallel regions use the same thread
// count: OpenMP reuses its pool of threads.
//
// If hwloc cannot read the topology or bind, nothing fails: the placement reports a warning (and
// prints it to stderr) and the threads run unpinned.
//
// Example:
//   const ThreadPlacement placed = apply_thread_placement(0);   // 0: one per physical core
//   // placed.num_threads threads, pinned if placed.pinned
#pragma once

#include <string>

namespace strata {

struct CpuTopology {
  int physical_cores = 0;   // cores this process may run on (its cpuset), not all of the machine's
  int logical_cpus = 0;     // hardware threads this process may run on
  bool from_hwloc = false;  // false: hwloc failed and the counts come from OpenMP (logical only)
};

// Reads the topology with hwloc; on failure falls back to omp_get_num_procs() for both counts.
CpuTopology probe_cpu_topology();

// The default thread count for the CPU kernels: one per physical core.
int default_thread_count();

struct ThreadPlacement {
  int num_threads = 0;  // threads OpenMP will use from now on
  bool pinned = false;  // every thread was bound to a core
  std::string warning;  // empty, or why the threads are not pinned
};

// Sets OpenMP to `num_threads` threads (0: default_thread_count()) and pins them, one per core:
// the calling thread's team, thread i on core (first_core + i) mod cores. A second team, led by
// another host thread, can be placed beside the first with first_core > 0 (the GPU executor's
// cold attention leaves core 0 to the thread that queues the GPU's work).
ThreadPlacement apply_thread_placement(int num_threads, int first_core = 0);

}  // namespace strata
