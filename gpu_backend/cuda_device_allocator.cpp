#include "gpu_backend/cuda_device_allocator.h"

#include <cassert>

#include "gpu_backend/cuda_api.h"

namespace strata {
namespace {

class CudaDeviceAllocator final : public DeviceAllocator {
 public:
  explicit CudaDeviceAllocator(int device) : device_(device) {}

  StatusOr<void*> allocate(int64_t size_bytes) override {
    // cudaMalloc allocates on the calling thread's current device; the arena may be used from any.
    STRATA_RETURN_IF_ERROR(cuda::set_device(device_));
    return cuda::device_malloc(size_bytes);
  }

  void free(void* data) override {
    // cudaFree fails only on a bad pointer (an arena bug) or a device already lost (reported by
    // the next call that can return a Status); neither has anyone to tell here.
    [[maybe_unused]] const Status freed = cuda::device_free(data);
    assert(freed.is_ok() || freed.code() == StatusCode::kUnsupported);
  }

 private:
  const int device_;
};

}  // namespace

std::unique_ptr<DeviceAllocator> make_cuda_device_allocator(int device) {
  return std::make_unique<CudaDeviceAllocator>(device);
}

}  // namespace strata
