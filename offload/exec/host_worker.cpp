#include "offload/exec/host_worker.h"

#include <cassert>
#include <utility>

namespace strata {

HostWorker::HostWorker() : thread_([this] { loop(); }) {}

HostWorker::~HostWorker() {
  (void)wait();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void HostWorker::start(std::function<Status()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    assert(!pending_);
    job_ = std::move(job);
    pending_ = true;
    result_ = Status::ok();
  }
  cv_.notify_all();
}

Status HostWorker::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return !pending_; });
  return std::exchange(result_, Status::ok());
}

void HostWorker::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || (pending_ && job_); });
    if (stop_ && !pending_) return;
    std::function<Status()> job = std::move(job_);
    job_ = nullptr;
    lock.unlock();
    Status status = job();
    lock.lock();
    result_ = std::move(status);
    pending_ = false;
    cv_.notify_all();
  }
}

}  // namespace strata
