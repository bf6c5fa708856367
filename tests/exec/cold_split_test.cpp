#include "offload/exec/cold_split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace strata {
namespace {

// A simulated step: the CPU reads share * B at r_cpu, the link the rest at r_link.
void step(ColdSplit& split, double bytes, double r_cpu, double r_link) {
  const double cpu = split.share() * bytes, link = bytes - cpu;
  split.add_cpu(cpu, cpu / r_cpu);
  split.add_link(link, link / r_link);
  split.end_step();
}

TEST(ColdSplit, ConvergesToTheShareThatEndsBothSidesTogether) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> rate(5e9, 150e9), start(0.05, 0.95);
  for (int trial = 0; trial < 50; ++trial) {
    const double r_cpu = rate(rng), r_link = rate(rng);
    ColdSplit split(start(rng));
    for (int i = 0; i < 8; ++i) step(split, 16e9, r_cpu, r_link);
    EXPECT_NEAR(split.cpu_bytes_per_s(), r_cpu, r_cpu * 1e-9);
    EXPECT_NEAR(split.link_bytes_per_s(), r_link, r_link * 1e-9);
    // Balanced within the hysteresis: neither side takes much longer than the other.
    const double t_cpu = split.share() / r_cpu, t_link = (1 - split.share()) / r_link;
    EXPECT_LE(std::max(t_cpu, t_link) / std::min(t_cpu, t_link), ColdSplit::kImbalance + 1e-9)
        << r_cpu << " " << r_link;
  }
}

TEST(ColdSplit, TheMeasurementsOfTheH200RunMoveTheCpuShareDown) {
  // 2026-12-02 on the H200: the share from C (0.61) with the CPU attention at 46 GB/s and the
  // link at 55: the CPU was the long pole. Balanced: 46 / 101 = 0.455.
  ColdSplit split(0.61);
  split.add_cpu(0.61 * 16.6e9, 0.61 * 16.6e9 / 46e9);
  split.add_link(0.39 * 16.6e9, 0.39 * 16.6e9 / 55e9);
  EXPECT_TRUE(split.end_step());
  EXPECT_NEAR(split.share(), 46.0 / 101.0, 1e-9);
}

TEST(ColdSplit, KeepsItsShareUntilBothSidesAreMeasuredAndWithinTheHysteresis) {
  ColdSplit split(0.5);
  split.add_cpu(1e9, 0.1);  // the link had no work this step
  EXPECT_FALSE(split.end_step());
  EXPECT_EQ(split.share(), 0.5);
  // The link takes a little longer, inside the hysteresis.
  split.add_link(1e9, 0.1 * (1 + (ColdSplit::kImbalance - 1) / 2));
  EXPECT_FALSE(split.end_step());
  EXPECT_EQ(split.share(), 0.5);
  split.add_link(1e9, 0.0);  // no time, no rate: ignored
  EXPECT_FALSE(split.end_step());
  EXPECT_EQ(split.share(), 0.5);
}

TEST(ColdSplit, ClampsItsStart) {
  EXPECT_EQ(ColdSplit(-1).share(), 0.0);
  EXPECT_EQ(ColdSplit(2).share(), 1.0);
}

}  // namespace
}  // namespace strata
