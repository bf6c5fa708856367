// The tensor-core decode GEMV for the 32-element block types Q8_0 and Q4_0, at one token (see
// gemv_mma.cu for how). gemv.h's entry points route such calls here; nothing else should call
// it. The result is float32 arithmetic over the exactly dequantized weights, as the SIMT
// kernels' is: x is split exactly into three f16 parts, the weights' integers are exact in f16,
// and the tensor cores accumulate their exact products in f32.
#pragma once

#include <cstdint>

#include "gpu_backend/cuda_api.h"
#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata::gpu::mma_gemv {

enum class Epilogue { kStore, kAccumulate, kSwiGLU };

struct Job {
  const uint8_t* payload = nullptr;  // GpuWeight planes
  const uint16_t* scales = nullptr;
  float* y = nullptr;
  int64_t rows = 0;
};

// Up to three jobs over the same x (Q, K, V), or gate and up (kSwiGLU: y = silu(gate x) * up x,
// written to jobs[0].y).
struct Call {
  Job jobs[3];
  int num_jobs = 0;
  const float* x = nullptr;  // [cols], device, 16-byte aligned
  int64_t cols = 0;
  int64_t scale_row_elems = 0;  // GpuWeightLayout::scale_row_elems
  Epilogue epilogue = Epilogue::kStore;
};

// The work shape: m16 tiles of rows each CTA stages per 64-column chunk, and cp.async stages per
// warp.
struct Shape {
  int tiles = 2;
  int stages = 6;
};

// True for the types this kernel reads (Q8_0, Q4_0).
bool reads(DType type);

// The shape launch() uses for `type` (measured by gpu_gemv_bench --tune, see bench/NOTES.md).
Shape default_shape(DType type, Epilogue epilogue);

// Queues the GEMV on `stream`. invalid_argument for a type it does not read or a shape it was not
// built for; a launch error names the kernel.
Status launch(DType type, const Call& call, const Shape& shape, cudaStream_t stream);

}  // namespace strata::gpu::mma_gemv
