#include "gpu_backend/cuda_host_pinner.h"

#include <map>
#include <mutex>

#include "gpu_backend/cuda_api.h"

namespace strata {
namespace {

class CudaHostPinner final : public HostPinner {
 public:
  explicit CudaHostPinner(cuda::HostPages pages) : pages_(pages) {}

  StatusOr<void*> allocate(int64_t size_bytes) override {
    STRATA_ASSIGN_OR_RETURN(cuda::PinnedHostBuffer buffer,
                            cuda::PinnedHostBuffer::allocate(size_bytes, pages_));
    void* data = buffer.data();
    std::lock_guard<std::mutex> lock(mutex_);
    buffers_.emplace(data, std::move(buffer));
    return data;
  }

  void free(void* data) override {
    std::lock_guard<std::mutex> lock(mutex_);
    buffers_.erase(data);  // cudaFreeHost
  }

 private:
  const cuda::HostPages pages_;
  std::mutex mutex_;
  std::map<void*, cuda::PinnedHostBuffer> buffers_;
};

}  // namespace

std::unique_ptr<HostPinner> make_cuda_host_pinner(bool huge_pages) {
  return std::make_unique<CudaHostPinner>(huge_pages ? cuda::HostPages::kHuge
                                                     : cuda::HostPages::kDefault);
}

}  // namespace strata
