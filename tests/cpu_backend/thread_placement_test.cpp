// Thread placement: the topology probe gives sane counts and applying a placement sets OpenMP's
// thread count, pinned where hwloc can bind (a warning, never a failure, where it cannot).
#include "cpu_backend/thread_placement.h"

#include <gtest/gtest.h>
#include <omp.h>

namespace strata {
namespace {

TEST(ThreadPlacement, ProbeCountsAtLeastOneCoreAndNoMoreCoresThanCpus) {
  const CpuTopology topology = probe_cpu_topology();
  EXPECT_GE(topology.physical_cores, 1);
  EXPECT_GE(topology.logical_cpus, topology.physical_cores);
  EXPECT_EQ(default_thread_count(), topology.physical_cores);
}

TEST(ThreadPlacement, ApplySetsThreadCountAndPinsOrWarns) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {  // 3 may exceed the cores here: threads wrap around them
    const ThreadPlacement placed = apply_thread_placement(threads);
    EXPECT_EQ(placed.num_threads, threads);
    EXPECT_EQ(omp_get_max_threads(), threads);
    EXPECT_EQ(placed.pinned, placed.warning.empty()) << placed.warning;
    int seen = 0;
#pragma omp parallel reduction(+ : seen)
    seen += 1;
    EXPECT_EQ(seen, threads);
  }
  // A team placed from core 1 on (as the GPU executor's cold attention places its own).
  const ThreadPlacement shifted = apply_thread_placement(2, /*first_core=*/1);
  EXPECT_EQ(shifted.num_threads, 2);
  EXPECT_EQ(shifted.pinned, shifted.warning.empty()) << shifted.warning;
  const ThreadPlacement by_default = apply_thread_placement(0);
  EXPECT_EQ(by_default.num_threads, default_thread_count());
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace strata
