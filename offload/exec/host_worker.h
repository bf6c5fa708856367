// HostWorker: one host thread that runs a job while the calling thread does something else.
//
// The GPU executor's cpu cold split (split_attention) runs the CPU's share of each layer's
// attention on it, with its own OpenMP team (pinned as the caller's), while the calling thread
// queues the layer's staging copies (one cudaMemcpyBatchAsync of ~250 runs per layer at 128k,
// ~0.7 ms of host time) and the rest of the layer's GPU work behind a wait for the job's flag
// (gpu_backend/host_flag.h). On the calling thread, both were in series with the CPU's attention:
// ~22 ms and ~10 ms of a ~200 ms step on the H200. The worker is started once and reused: a
// thread per layer would cost its start, and its OpenMP team is kept between jobs.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "offload/core/status.h"

namespace strata {

class HostWorker {
 public:
  HostWorker();
  ~HostWorker();  // waits for a running job, then ends the thread
  HostWorker(const HostWorker&) = delete;
  HostWorker& operator=(const HostWorker&) = delete;

  // Runs job on the worker thread. REQUIRES: no job started and not yet waited for.
  void start(std::function<Status()> job);
  // Blocks until the started job has returned; its status (ok when no job was started).
  Status wait();

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::function<Status()> job_;
  bool pending_ = false;  // a job is queued or running
  bool stop_ = false;
  Status result_ = Status::ok();
  std::thread thread_;  // last: starts after the fields it reads
};

}  // namespace strata
