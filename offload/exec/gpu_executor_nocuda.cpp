// GpuExecutor in a build without CUDA: create() says so; nothing else is reachable.
#include "offload/exec/gpu_executor.h"

namespace strata {

StatusOr<std::unique_ptr<GpuExecutor>> GpuExecutor::create(const ModelSpec&,
                                                           const GpuExecutorOptions&) {
  return Status::unsupported("--device gpu: this build has no CUDA support");
}

GpuExecutor::~GpuExecutor() = default;
Status GpuExecutor::add_sequence(SeqId) { return Status::unsupported("no CUDA support"); }
Status GpuExecutor::remove_sequence(SeqId) { return Status::unsupported("no CUDA support"); }
Status GpuExecutor::forward(SeqId, std::span<const int32_t>, bool, std::vector<float>*) {
  return Status::unsupported("no CUDA support");
}
Status GpuExecutor::forward_batch(std::span<const SeqId>, std::span<const int32_t>,
                                  std::vector<float>*) {
  return Status::unsupported("no CUDA support");
}
int64_t GpuExecutor::host_activation_bytes() const { return 0; }

}  // namespace strata
