// HostWorker: jobs run on another thread, one at a time, and their status comes back by wait().
#include "offload/exec/host_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace strata {
namespace {

TEST(HostWorker, RunsEachJobOnItsThreadAndReturnsItsStatus) {
  HostWorker worker;
  EXPECT_TRUE(worker.wait().is_ok());  // nothing started
  std::thread::id ran_on;
  int runs = 0;
  for (int i = 0; i < 200; ++i) {
    worker.start([&, i] {
      ran_on = std::this_thread::get_id();
      ++runs;
      return i % 3 == 0 ? Status::internal("job " + std::to_string(i)) : Status::ok();
    });
    const Status s = worker.wait();
    EXPECT_EQ(s.is_ok(), i % 3 != 0) << i;
    if (!s.is_ok()) {
      EXPECT_EQ(s.message(), "job " + std::to_string(i));
    }
    EXPECT_NE(ran_on, std::this_thread::get_id());
  }
  EXPECT_EQ(runs, 200);
  EXPECT_TRUE(worker.wait().is_ok());  // a status is returned once
}

TEST(HostWorker, TheJobRunsWhileTheCallerWorks) {
  HostWorker worker;
  std::atomic<bool> caller_ready{false}, job_saw_caller{false};
  worker.start([&] {
    while (!caller_ready.load()) std::this_thread::yield();  // would hang if run inline
    job_saw_caller = true;
    return Status::ok();
  });
  caller_ready = true;
  EXPECT_TRUE(worker.wait().is_ok());
  EXPECT_TRUE(job_saw_caller.load());
}

TEST(HostWorker, DestructionWaitsForARunningJob) {
  std::atomic<bool> finished{false};
  {
    HostWorker worker;
    worker.start([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      finished = true;
      return Status::ok();
    });
  }
  EXPECT_TRUE(finished.load());
}

}  // namespace
}  // namespace strata
