// wait_host_flag (see host_flag.h).
#include <cstdint>

#include "gpu_backend/host_flag.h"

namespace strata::gpu {
namespace {

// One thread polls the counter over PCIe, sleeping between reads so that it takes little of the
// link; the kernels queued after it start when it returns.
__global__ void wait_host_flag_kernel(const int64_t* flag, int64_t value) {
  for (;;) {
    int64_t seen;
    asm volatile("ld.acquire.sys.global.s64 %0, [%1];" : "=l"(seen) : "l"(flag) : "memory");
    if (seen >= value) return;
    __nanosleep(500);
  }
}

}  // namespace

Status wait_host_flag(const int64_t* flag, int64_t value, const cuda::Stream& stream) {
  if (flag == nullptr || reinterpret_cast<uintptr_t>(flag) % 8 != 0) {
    return Status::invalid_argument("wait_host_flag: a null or misaligned flag");
  }
  wait_host_flag_kernel<<<1, 1, 0, stream.native()>>>(flag, value);
  return cuda::check_last_launch("wait_host_flag_kernel");
}

}  // namespace strata::gpu
