// StagingSchedule (offload/exec/staging_schedule.h): the staging ring's decisions, checked
// against a model of the slots' contents over random passes: every acquired slot holds the layer
// the pass asks for, no copy ever targets the acquired slot, and the copy counts are the ones
// streaming promises (every layer of a pass longer than the ring once per pass; a pass that fits
// in the ring once, then never again).
#include "offload/exec/staging_schedule.h"

#include <gtest/gtest.h>

#include <random>

namespace strata {
namespace {

// Layer keys: addresses of these.
int layers[64];
const void* key(int i) { return &layers[i]; }

// Runs a pass through the schedule, applying issues to `contents` (slot -> layer) as the copy
// engine would, and checking each acquire. Returns the copies this pass issued.
int64_t run_pass(StagingSchedule& s, const std::vector<int>& pass,
                 std::vector<const void*>& contents) {
  const int64_t before = s.stats().copies;
  auto apply = [&](const std::vector<StagingIssue>& issues) {
    for (const StagingIssue& i : issues) {
      EXPECT_NE(i.slot, s.acquired_slot()) << "a copy into the slot being read";
      if (i.copy) {
        contents[static_cast<size_t>(i.slot)] = i.layer;
      } else {
        EXPECT_EQ(contents[static_cast<size_t>(i.slot)], i.layer) << "a hit on a stale slot";
      }
    }
  };
  std::vector<const void*> keys;
  for (int l : pass) keys.push_back(key(l));
  apply(s.begin_pass(keys));
  for (int l : pass) {
    StatusOr<int> slot = s.acquire();
    EXPECT_TRUE(slot.is_ok()) << slot.status().to_string();
    if (!slot.is_ok()) return -1;
    EXPECT_EQ(contents[static_cast<size_t>(*slot)], key(l)) << "slot " << *slot;
    StatusOr<std::vector<StagingIssue>> issues = s.release();
    EXPECT_TRUE(issues.is_ok());
    // Issued after the release: the freed slot may be copied into now.
    apply(*issues);
  }
  return s.stats().copies - before;
}

TEST(StagingSchedule, RepeatedPassLongerThanTheRingCopiesEachLayerOncePerPass) {
  StagingSchedule s(3);
  std::vector<const void*> contents(3, nullptr);
  const std::vector<int> pass = {4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(run_pass(s, pass, contents), 7 + 3);  // the first pass also prefetches the next's
  for (int token = 0; token < 10; ++token) EXPECT_EQ(run_pass(s, pass, contents), 7);
}

TEST(StagingSchedule, PassThatFitsInTheRingStreamsOnce) {
  StagingSchedule s(3);
  std::vector<const void*> contents(3, nullptr);
  const std::vector<int> pass = {1, 2};
  EXPECT_EQ(run_pass(s, pass, contents), 2);
  for (int token = 0; token < 10; ++token) EXPECT_EQ(run_pass(s, pass, contents), 0);
  EXPECT_GT(s.stats().slot_hits, 0);
}

TEST(StagingSchedule, SwitchingPassesRecopiesOnlyWhatDiffers) {
  StagingSchedule s(2);
  std::vector<const void*> contents(2, nullptr);
  const std::vector<int> prefill = {0, 1, 2, 3}, decode = {0, 2, 3};
  run_pass(s, prefill, contents);  // prefetched for the next pass: 0, 1
  const int64_t before = s.stats().copies;
  s.begin_pass({key(0), key(2), key(3)});  // 0 is right, 1 must become 2
  EXPECT_EQ(s.stats().copies - before, 1);
}

TEST(StagingSchedule, MisuseIsAnError) {
  StagingSchedule s(2);
  EXPECT_FALSE(s.acquire().is_ok());  // no pass
  EXPECT_FALSE(s.release().is_ok());  // nothing acquired
  s.begin_pass({key(0)});
  ASSERT_TRUE(s.acquire().is_ok());
  EXPECT_FALSE(s.acquire().is_ok());  // not released
  ASSERT_TRUE(s.release().is_ok());
  EXPECT_FALSE(s.acquire().is_ok());  // the pass is over
}

TEST(StagingSchedule, RandomPassesAlwaysDeliverTheRightLayer) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 200; ++trial) {
    const int slots = 1 + static_cast<int>(rng() % 4);
    StagingSchedule s(slots);
    std::vector<const void*> contents(static_cast<size_t>(slots), nullptr);
    // A few distinct passes (prefill, decode, ...), switched between at random.
    std::vector<std::vector<int>> passes(1 + rng() % 3);
    for (auto& p : passes) {
      for (int l = 0; l < 12; ++l) {
        if (rng() % 2) p.push_back(l);
      }
      if (p.empty()) p.push_back(static_cast<int>(rng() % 12));
    }
    for (int step = 0; step < 30; ++step) {
      const auto& p = passes[rng() % passes.size()];
      ASSERT_GE(run_pass(s, p, contents), 0) << "trial " << trial << " step " << step;
      ASSERT_FALSE(::testing::Test::HasFailure()) << "trial " << trial << " step " << step;
    }
  }
}

}  // namespace
}  // namespace strata
