// PinnedHostPool: the host tier of the weights that do not live in VRAM (streamed or CPU-run) and
// of host KV blocks. Memory is page-locked so that the copy engine streams it at the full PCIe
// rate P (pageable memory runs at a fraction: 6.7 vs 52.6 GB/s on the GPU machine, and the driver
// stages it synchronously). When pinning is refused (no GPU driver, the locked-memory limit, a
// host short of memory) the pool falls back to ordinary pageable memory, says so once in
// warning(), and keeps working: the planner must then not stream from it (HostBuffer::pinned()).
//
// Who pins is injected, so that memory/ never sees CUDA: gpu_backend/cuda_host_pinner.h supplies
// cudaMallocHost; tests use a recording fake; a null pinner (CPU-only runs) means pageable only.
//
// Ownership: the pool owns its pinner; a HostBuffer returns its memory when destroyed.
// REQUIRES: every HostBuffer is destroyed before its pool. Thread-safe.
//
// Example usage:
//   STRATA_ASSIGN_OR_RETURN(auto pool, PinnedHostPool::create({}, make_cuda_host_pinner()));
//   STRATA_ASSIGN_OR_RETURN(HostBuffer w, pool->allocate(layer_bytes));
//   if (!w.pinned()) plan_cpu_for_this_layer();  // pageable: never stream it
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "offload/core/status.h"

namespace strata {

// Page-locks host memory. allocate() fails with a Status (any code) when the OS or driver refuses.
class HostPinner {
 public:
  virtual ~HostPinner() = default;
  virtual StatusOr<void*> allocate(int64_t size_bytes) = 0;
  // REQUIRES: data came from allocate() of this pinner and was not freed yet.
  virtual void free(void* data) = 0;
};

struct PinnedHostPoolOptions {
  // Bytes the pool may hold in all (pinned and pageable together); 0 = no limit.
  int64_t budget_bytes = 0;
  // Fail instead of falling back to pageable memory.
  bool require_pinned = false;
};

class PinnedHostPool;

// Host memory from a PinnedHostPool, returned to it when destroyed. Move-only.
class HostBuffer {
 public:
  HostBuffer() = default;
  ~HostBuffer() { reset(); }
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() const { return data_; }
  int64_t size_bytes() const { return size_bytes_; }
  bool pinned() const { return pinned_; }
  bool empty() const { return data_ == nullptr; }
  void reset();

 private:
  friend class PinnedHostPool;
  PinnedHostPool* pool_ = nullptr;
  void* data_ = nullptr;
  int64_t size_bytes_ = 0;
  bool pinned_ = false;
};

struct PinnedHostPoolStats {
  int64_t pinned_bytes = 0;    // live
  int64_t pageable_bytes = 0;  // live
  int64_t peak_bytes = 0;      // the most live bytes of both kinds at once
  int64_t num_pin_refusals = 0;
};

class PinnedHostPool {
 public:
  // `pinner` may be null: pageable memory only (no warning: nothing was refused).
  static StatusOr<std::unique_ptr<PinnedHostPool>> create(const PinnedHostPoolOptions& options,
                                                          std::unique_ptr<HostPinner> pinner);
  PinnedHostPool(const PinnedHostPool&) = delete;
  PinnedHostPool& operator=(const PinnedHostPool&) = delete;

  // `size_bytes` (> 0), pinned when the pinner agrees, else pageable (or the pinner's error with
  // require_pinned). out_of_memory naming the request and the budget past the budget, or when even
  // pageable memory cannot be had.
  StatusOr<HostBuffer> allocate(int64_t size_bytes);

  PinnedHostPoolStats stats() const;
  // Empty, or one sentence about the first refusal ("pinning 1.0 GiB failed (...): using pageable
  // memory; streaming from it would run at pageable speed").
  std::string warning() const;

 private:
  PinnedHostPool(const PinnedHostPoolOptions& options, std::unique_ptr<HostPinner> pinner)
      : options_(options), pinner_(std::move(pinner)) {}
  friend class HostBuffer;
  void release(HostBuffer& buffer);

  const PinnedHostPoolOptions options_;
  const std::unique_ptr<HostPinner> pinner_;
  mutable std::mutex mutex_;
  PinnedHostPoolStats stats_;
  std::string warning_;
};

}  // namespace strata
