// CPU matrix products of the forward pass: Y[t] = W X[t] for t < n_tokens, W stored as in GGUF.
//
// Few tokens (decode, a few sequences): the bandwidth-bound GEMV kernels (gemv.h, or gemv_q8.h
// over 8-bit activations with MatmulOptions::int8_gemv), which read each weight once and never
// write a dequantized copy. Many tokens (prefill): the weights are
// dequantized tile by tile (a few MiB of scratch, reused) and multiplied with oneDNN, which is
// compute-bound there; in kF32 the result is float32 over the exact weights (the golden `exact`
// tier), in kBF16 the inputs are rounded to bfloat16 for the AMX/AVX512-BF16 units (like
// llama.cpp's CPU backend rounds matmul inputs; the `like_llama_cpp` tier). In kBF16 on a CPU
// with AMX, a few tokens (amx_min_tokens and more: a batched decode step) go to the tiles too;
// there Q8_0 and Q4_0 weights go to the int8 tiles with x quantized per 32 (amx_int8; many
// tokens too with amx_int8_prefill), the rest to bf16.
//
// A CpuMatmul is not thread-safe: one per executor. It owns the oneDNN engine/stream, a cache
// of primitives per shape, and the scratch buffers (allocated once, grown only for larger
// shapes, so steady-state decode and prefill allocate nothing).
#pragma once

#include <cstdint>
#include <memory>

#include "cpu_backend/gemm_amx.h"
#include "cpu_backend/gemm_amx_int8.h"
#include "cpu_backend/gemv.h"
#include "offload/core/status.h"

namespace strata::cpu {

enum class MatmulPrecision { kF32, kBF16 };

struct MatmulOptions {
  MatmulPrecision precision = MatmulPrecision::kF32;
  // At or below this many tokens the GEMV kernels run (one weight pass per kGemvMaxBatch).
  int64_t gemv_max_tokens = 2 * kGemvMaxBatch;
  // The GEMVs of Q8_0, Q4_0, Q4_K and Q6_K weights over x quantized to 8 bits per 32 values
  // (gemv_q8.h: llama.cpp's arithmetic, the `like_llama_cpp` tier) instead of float32 x (exact).
  bool int8_gemv = false;
  // Bytes of one dequantized weight tile.
  int64_t tile_bytes = 8ll << 20;
  // kBF16 products of many tokens on the AMX tile kernel (gemm_amx.h) where the CPU has AMX;
  // oneDNN otherwise, or when false. Same arithmetic either way (bf16 inputs, f32 sums).
  bool amx_tiles = true;
  // With those tiles, products of at least this many tokens (and at most gemv_max_tokens) take
  // AmxGemm's streaming path instead of the GEMV: a few float32 rows already make the GEMV
  // compute-bound (8 FMAs a weight at 8 rows), while the tiles keep it bound by the weights'
  // bytes (bench/NOTES.md, "Batched decode on the tiles").
  int64_t amx_min_tokens = 2;
  // Of the few-token ones, products over Q8_0 and Q4_0 weights on the AMX int8 tiles
  // (gemm_amx_int8.h: the quants as stored, x quantized per 32 as int8; also the like_llama_cpp
  // tier) where the CPU has AMX-INT8. Off: the bf16 tiles for every type.
  bool amx_int8 = true;
  // With amx_int8, the many-token (prefill) products too. Off by default: on the dev VM's cores
  // the int8 panels ran at 0.7-0.9x AmxGemm's bf16 rate (every block of 32 stores its C tile;
  // bench/NOTES.md, "CPU prefill on the int8 tiles"); cpu_gemm_bench compares them on a host.
  bool amx_int8_prefill = false;
  AmxGemmConfig amx;
};

class CpuMatmul {
 public:
  static StatusOr<std::unique_ptr<CpuMatmul>> create(const MatmulOptions& options);
  virtual ~CpuMatmul() = default;

  // y [n_tokens][w.rows] = x [n_tokens][w.cols] * W^T. REQUIRES: x, y do not overlap.
  virtual Status run(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) = 0;

  virtual const MatmulOptions& options() const = 0;
};

}  // namespace strata::cpu
