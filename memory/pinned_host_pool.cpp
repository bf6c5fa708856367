#include "memory/pinned_host_pool.h"

#include <mimalloc.h>

#include <algorithm>
#include <cstdio>
#include <utility>

namespace strata {
namespace {

// Pageable fallback: 2 MiB-aligned so that transparent huge pages can back large weight blocks.
constexpr size_t kPageableAlignment = size_t{2} << 20;

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1 << 30));
  return buf;
}

}  // namespace

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)),
      pinned_(std::exchange(other.pinned_, false)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
    pinned_ = std::exchange(other.pinned_, false);
  }
  return *this;
}

void HostBuffer::reset() {
  if (data_ != nullptr && pool_ != nullptr) pool_->release(*this);
  pool_ = nullptr;
  data_ = nullptr;
  size_bytes_ = 0;
  pinned_ = false;
}

StatusOr<std::unique_ptr<PinnedHostPool>> PinnedHostPool::create(
    const PinnedHostPoolOptions& options, std::unique_ptr<HostPinner> pinner) {
  if (options.budget_bytes < 0) return Status::invalid_argument("host pool: negative budget");
  if (options.require_pinned && pinner == nullptr) {
    return Status::invalid_argument("host pool: pinned memory required but nothing can pin");
  }
  return std::unique_ptr<PinnedHostPool>(new PinnedHostPool(options, std::move(pinner)));
}

StatusOr<HostBuffer> PinnedHostPool::allocate(int64_t size_bytes) {
  if (size_bytes <= 0) return Status::invalid_argument("host pool: allocation must be > 0 bytes");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t live = stats_.pinned_bytes + stats_.pageable_bytes;
    if (options_.budget_bytes > 0 && live + size_bytes > options_.budget_bytes) {
      return Status::out_of_memory("host pool: " + gib(size_bytes) + " more would pass its " +
                                   gib(options_.budget_bytes) + " budget (" + gib(live) +
                                   " in use)");
    }
  }
  HostBuffer b;
  b.pool_ = this;
  b.size_bytes_ = size_bytes;
  if (pinner_ != nullptr) {
    StatusOr<void*> pinned = pinner_->allocate(size_bytes);  // outside the lock: may be slow
    if (pinned.is_ok()) {
      b.data_ = *pinned;
      b.pinned_ = true;
    } else {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.num_pin_refusals;
      if (options_.require_pinned) {
        b.pool_ = nullptr;
        return Status(pinned.status().code(), "host pool: pinning " + gib(size_bytes) +
                                                  " failed: " + pinned.status().message());
      }
      if (warning_.empty()) {
        warning_ = "pinning " + gib(size_bytes) + " of host memory failed (" +
                   pinned.status().message() +
                   "): using pageable memory; streaming from it would run at pageable speed";
      }
    }
  }
  if (b.data_ == nullptr) {
    b.data_ = mi_malloc_aligned(static_cast<size_t>(size_bytes), kPageableAlignment);
    if (b.data_ == nullptr) {
      b.pool_ = nullptr;
      return Status::out_of_memory("host pool: " + gib(size_bytes) +
                                   " of host memory could not be had, pinned or pageable");
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  (b.pinned_ ? stats_.pinned_bytes : stats_.pageable_bytes) += size_bytes;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.pinned_bytes + stats_.pageable_bytes);
  return b;
}

void PinnedHostPool::release(HostBuffer& buffer) {
  if (buffer.pinned_) {
    pinner_->free(buffer.data_);
  } else {
    mi_free(buffer.data_);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  (buffer.pinned_ ? stats_.pinned_bytes : stats_.pageable_bytes) -= buffer.size_bytes_;
}

PinnedHostPoolStats PinnedHostPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::string PinnedHostPool::warning() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return warning_;
}

}  // namespace strata
