// GpuMatmul: the weight products of the GPU forward pass, y [n][rows] = x [n][cols] W^T, choosing
// the kernel by token count, like cpu_backend/matmul.h does on the CPU:
//   n <= kGpuGemvMaxTokens: the decode GEMV (gemv.h), float32 over the weights as stored;
//   more tokens (prefill): cuBLAS. F16/BF16 weights (and F32 in kF32 mode) are used in place;
//   quantized weights are dequantized tile by tile into a reused scratch buffer first.
//   GemmPrecision::kF32 multiplies float32 (tiles dequantized exactly, x as is: the `exact`
//   tier); kF16 rounds x and the tiles to f16 (bf16 for BF16 weights) for the tensor cores with
//   float32 accumulation (the `like_llama_cpp` tier).
// Scratch (tile, converted x) comes from the arena once at create(); run() allocates nothing.
// Not thread-safe: one per executor, on one stream (the Cublas handle's).
#pragma once

#include <cstdint>
#include <memory>

#include "gpu_backend/attention.h"
#include "gpu_backend/cublas.h"
#include "gpu_backend/gemv.h"
#include "gpu_backend/gpu_weight.h"
#include "memory/device_arena.h"

namespace strata::gpu {

struct GpuMatmulOptions {
  GemmPrecision precision = GemmPrecision::kF32;
  int64_t max_tokens = 512;                // most rows of x per run()
  int64_t max_cols = 0;                    // widest x row (n_embd or n_ff)
  int64_t tile_bytes = int64_t{64} << 20;  // dequantized weight tile
};

class GpuMatmul {
 public:
  static StatusOr<std::unique_ptr<GpuMatmul>> create(DeviceArena& arena, Cublas& blas,
                                                     const GpuMatmulOptions& options);

  // y [n_tokens][w.rows] (=|+=) x [n_tokens][w.cols] W^T on the Cublas stream.
  Status run(const GpuWeight& w, const float* x, int64_t n_tokens, float* y, GemvOutput output);

  int64_t workspace_bytes() const { return tile_.size_bytes() + x_half_.size_bytes(); }

 private:
  GpuMatmul(Cublas& blas, const GpuMatmulOptions& options) : blas_(blas), options_(options) {}

  Cublas& blas_;
  GpuMatmulOptions options_;
  DeviceBuffer tile_;    // a dequantized [tile_rows][cols] slice of W
  DeviceBuffer x_half_;  // x rounded to f16 / bf16 [max_tokens][max_cols]
};

}  // namespace strata::gpu
