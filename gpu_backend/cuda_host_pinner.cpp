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
    StatusOr<cuda::PinnedHostBuffer> got = cuda::PinnedHostBuffer::allocate(size_bytes, pages_);
    // Huge pages refused (mmap or cudaHostRegister failed): cudaMallocHost's small pages are
    // still pinned, which is what streaming needs; pageable memory would not be.
    if (!got.is_ok() && pages_ == cuda::HostPages::kHuge)
      got = cuda::PinnedHostBuffer::allocate(size_bytes, cuda::HostPages::kDefault);
    STRATA_ASSIGN_OR_RETURN(cuda::PinnedHostBuffer buffer, std::move(got));
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
