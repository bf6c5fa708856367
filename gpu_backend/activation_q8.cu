// quantize_activations_q8 (activation_q8.h): one warp per block of 32 values
// (quantize_block_q8 in activation_q8.cuh: llama.cpp's rounding, so that a GEMV over these
// blocks computes what llama.cpp computes).
#include <cstdint>
#include <string>

#include "gpu_backend/activation_q8.cuh"
#include "gpu_backend/activation_q8.h"
#include "gpu_backend/dependent_launch.cuh"

namespace strata::gpu {
namespace {

constexpr int kWarps = 8;

__global__ void __launch_bounds__(kWarps * 32)
    quantize_kernel(const float* x, int64_t num_blocks, int8_t* q, ActivationBlockQ8* blocks) {
  allow_dependent_launch();  // the GEMV after it may start loading its weights
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  grid_dependency_wait();  // x is the previous kernel's output; q may still be read by it
  if (b >= num_blocks) return;
  quantize_block_q8(x[b * kActivationBlock + lane], lane, q + b * kActivationBlock + lane,
                    blocks + b);  // row-major rows of whole blocks
}

int64_t q_bytes(int64_t n_tokens, int64_t cols) { return (n_tokens * cols + 15) / 16 * 16; }

}  // namespace

int64_t activations_q8_bytes(int64_t n_tokens, int64_t cols) {
  return q_bytes(n_tokens, cols) +
         n_tokens * (cols / kActivationBlock) * static_cast<int64_t>(sizeof(ActivationBlockQ8));
}

ActivationsQ8 activations_q8_at(void* device_bytes, int64_t n_tokens, int64_t cols) {
  ActivationsQ8 a;
  a.q = static_cast<int8_t*>(device_bytes);
  a.blocks = reinterpret_cast<ActivationBlockQ8*>(a.q + q_bytes(n_tokens, cols));
  a.n_tokens = n_tokens;
  a.cols = cols;
  return a;
}

Status quantize_activations_q8(const float* x, int64_t n_tokens, const ActivationsQ8& out,
                               const cuda::Stream& stream) {
  if (n_tokens < 0 || n_tokens > out.n_tokens || out.cols <= 0 ||
      out.cols % kActivationBlock != 0 || out.q == nullptr || out.blocks == nullptr) {
    return Status::invalid_argument("quantize_activations_q8: " + std::to_string(n_tokens) +
                                    " rows of " + std::to_string(out.cols) +
                                    " values into a view of " + std::to_string(out.n_tokens) +
                                    " rows (whole blocks of 32 only)");
  }
  const int64_t num_blocks = n_tokens * (out.cols / kActivationBlock);
  if (num_blocks == 0) return Status::ok();
  const dim3 grid(static_cast<unsigned>((num_blocks + kWarps - 1) / kWarps));
  launch_dependent(quantize_kernel, grid, kWarps * 32, stream.native(), x, num_blocks, out.q,
                   out.blocks);
  return cuda::check_last_launch("quantize_activations_q8");
}

}  // namespace strata::gpu
