// Cublas in a build without CUDA: never created (GpuExecutor's stub factory refuses first), so only
// its destructor exists here, for the owners' destructors to link.
#include "gpu_backend/cublas.h"

namespace strata::gpu {

Cublas::~Cublas() = default;

}  // namespace strata::gpu
