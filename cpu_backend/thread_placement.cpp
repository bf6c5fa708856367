// hwloc is the only topology source; every hwloc call's failure turns into a warning.
#include "cpu_backend/thread_placement.h"

#include <hwloc.h>
#include <omp.h>

#include <atomic>
#include <cstdio>
#include <string>

namespace strata {
namespace {

// Owns an hwloc topology loaded for this process (restricted to the cpuset it may use).
class Topology {
 public:
  Topology() {
    if (hwloc_topology_init(&topology_) != 0) return;
    initialized_ = true;
    loaded_ = hwloc_topology_load(topology_) == 0;
  }
  ~Topology() {
    if (initialized_) hwloc_topology_destroy(topology_);
  }
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  bool ok() const { return loaded_; }
  hwloc_topology_t get() const { return topology_; }

 private:
  hwloc_topology_t topology_ = nullptr;
  bool initialized_ = false;
  bool loaded_ = false;
};

void warn(const std::string& message) {
  std::fprintf(stderr, "strata: warning: %s\n", message.c_str());
}

}  // namespace

CpuTopology probe_cpu_topology() {
  CpuTopology result;
  Topology topology;
  if (topology.ok()) {
    const int cores = hwloc_get_nbobjs_by_type(topology.get(), HWLOC_OBJ_CORE);
    const int pus = hwloc_get_nbobjs_by_type(topology.get(), HWLOC_OBJ_PU);
    if (cores > 0 && pus > 0) {
      result.physical_cores = cores;
      result.logical_cpus = pus;
      result.from_hwloc = true;
      return result;
    }
  }
  result.physical_cores = result.logical_cpus = omp_get_num_procs();
  return result;
}

int default_thread_count() {
  const int cores = probe_cpu_topology().physical_cores;
  return cores > 0 ? cores : 1;
}

ThreadPlacement apply_thread_placement(int num_threads, int first_core) {
  ThreadPlacement placement;
  Topology topology;
  int cores = 0;
  if (topology.ok()) cores = hwloc_get_nbobjs_by_type(topology.get(), HWLOC_OBJ_CORE);
  if (num_threads <= 0) num_threads = cores > 0 ? cores : omp_get_num_procs();
  placement.num_threads = num_threads;
  omp_set_dynamic(0);
  omp_set_num_threads(num_threads);
  if (cores <= 0) {
    placement.warning = "hwloc could not read the CPU topology; " + std::to_string(num_threads) +
                        " OpenMP threads run unpinned";
    warn(placement.warning);
    return placement;
  }

  std::atomic<int> failed{0};
  std::atomic<int> ran{0};
#pragma omp parallel num_threads(num_threads)
  {
    const int thread = omp_get_thread_num();
    hwloc_obj_t core = hwloc_get_obj_by_type(topology.get(), HWLOC_OBJ_CORE,
                                             static_cast<unsigned>((first_core + thread) % cores));
    // Bind to the whole core (all its hardware threads): the OS may pick the idle sibling.
    if (core == nullptr || core->cpuset == nullptr ||
        hwloc_set_cpubind(topology.get(), core->cpuset, HWLOC_CPUBIND_THREAD) != 0) {
      failed.fetch_add(1);
    }
    ran.fetch_add(1);
  }
  if (ran.load() != num_threads) {
    placement.warning = "OpenMP started " + std::to_string(ran.load()) + " threads of the " +
                        std::to_string(num_threads) + " asked for";
    placement.num_threads = ran.load();
  }
  if (failed.load() > 0) {
    placement.warning = "hwloc could not bind " + std::to_string(failed.load()) + " of " +
                        std::to_string(num_threads) + " OpenMP threads to cores; they run unpinned";
    warn(placement.warning);
    return placement;
  }
  placement.pinned = true;
  return placement;
}

}  // namespace strata
