// Decode GEMV on the GPU: y[t] = W x[t] for a few tokens (batch-1 decode, a few sequences), over
// the weights as they sit in VRAM in their stored type (GpuWeight). Each weight is dequantized in
// registers and used once per token; activations and accumulation are float32, so the result is
// float32 arithmetic over the exactly dequantized weights (the golden `exact` tier) in another
// summation order. (A tensor-core kernel for Q8_0 and Q4_0 at one token, gemv_mma.h, exists
// beside this one; gemv.cu's kTensorCoreDecode says whether it is used.)
//
// This is the bandwidth-bound kernel of the GPU decode step: one pass over each weight byte per
// call, 16-byte loads, several loads in flight per lane, split over the row when a row is long so
// that every SM has enough warps to cover HBM latency. Fused forms save launches and activation
// round trips: several matrices over the same x in one launch (Q, K, V), the SwiGLU gate and up
// products combined in the epilogue, and an accumulating store for the residual adds.
//
// Example usage (one layer's FFN at decode):
//   STRATA_RETURN_IF_ERROR(gpu::gemv_swiglu(gate, up, xb, 1, hidden, stream));   // hidden [F]
//   STRATA_RETURN_IF_ERROR(gpu::gemv(down, hidden, 1, x, GemvOutput::kAccumulate, stream));  // x
//   += W h
#pragma once

#include <cstdint>
#include <span>

#include "gpu_backend/activation_q8.h"
#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_kv_view.h"
#include "gpu_backend/gpu_weight.h"
#include "offload/core/status.h"

namespace strata::gpu {

// Tokens one GEMV call reads each weight for; more tokens go to the GEMM path (cuBLAS).
inline constexpr int64_t kGpuGemvMaxTokens = 8;

enum class GemvOutput {
  kStore,       // y = W x
  kAccumulate,  // y += W x (the residual add)
};

// RMSNorm folded into the GEMVs on either side of it, so that a decode step has no norm kernels:
// RMSNorm(x) = s x o g with one scale s = 1 / sqrt(mean(x^2) + eps) per token, and
// W (s x o g) = s W (x o g). A GEMV that accumulates into the residual x leaves the next norm's
// xg = x o g and s (`out_*`); the GEMV after it reads xg and multiplies its sums by s
// (`in_scale`). s is summed in double, as rms_norm does; the products round differently from
// rms_norm's (x s) g, by an ulp or so: the `exact` tier still holds.
struct GemvNormScratch {
  double* partials = nullptr;  // [max_blocks][kGpuGemvMaxTokens]: each block's sum of squares
  int64_t max_blocks = 0;
  unsigned* counter = nullptr;  // zero between calls (the last block to finish resets it)
};

// Device bytes of a GemvNormScratch for GEMVs with up to `rows` rows, and its layout in them.
int64_t gemv_norm_scratch_bytes(int64_t rows);
GemvNormScratch gemv_norm_scratch_at(void* device_bytes, int64_t rows);

struct GemvNorm {
  const float* in_scale = nullptr;  // [n_tokens]: y = in_scale[t] * (W x), x being an xg
  // kAccumulate only: from the updated y, the next RMSNorm's xg and scale (weight g [w.rows]).
  const float* out_weight = nullptr;
  float out_eps = 0.0f;
  float* out_xg = nullptr;     // [n_tokens][w.rows]
  float* out_scale = nullptr;  // [n_tokens]
  GemvNormScratch scratch;     // REQUIRES with out_weight: zeroed counter
};

// The integer path (activation_q8.h) of a call, llama.cpp's arithmetic (the `like_llama_cpp`
// tier): dp4a over the weights as stored, ~4x fewer instructions per weight than dequantizing to
// float.
struct GemvInt8 {
  // The same x quantized (w.cols columns, at least n_tokens rows): Q8_0 and Q4_0 weights read it
  // instead of x; other types ignore it and read x.
  const ActivationsQ8* x8 = nullptr;
  // Or null q: the values this call leaves for the next GEMV, quantized by this call, so that no
  // quantize kernel runs between the two: y (kStore, SwiGLU's h), the updated y (kAccumulate) or,
  // with a folded norm's output, xg. Each block of 32 rows is quantized by the CUDA block that
  // finishes it (out8_counters says which: [rows / 32], zero between calls, each reset by the
  // block that used it). REQUIRES: one matrix (or gemv_swiglu), rows a multiple of 32, out8 for
  // those rows and at least n_tokens, apart from x8.
  ActivationsQ8 out8;
  unsigned* out8_counters = nullptr;
};

// Device bytes of out8_counters for GEMVs with up to `rows` rows.
int64_t gemv_out8_counter_bytes(int64_t rows);

// y [n_tokens][w.rows] (=|+=) x [n_tokens][w.cols] W^T. REQUIRES: 1 <= n_tokens <=
// kGpuGemvMaxTokens; x and y are device arrays that do not overlap, 16-byte aligned.
Status gemv(const GpuWeight& w, const float* x, int64_t n_tokens, float* y, GemvOutput output,
            const cuda::Stream& stream, const GemvNorm& norm = {}, const GemvInt8& int8 = {});

// Up to 3 matrices with the same cols over the same x in one launch: ys[i] [n_tokens][ws[i].rows]
// = x ws[i]^T (the Q, K and V projections). norm: in_scale only.
Status gemv_multi(std::span<const GpuWeight> ws, const float* x, int64_t n_tokens,
                  std::span<float* const> ys, const cuda::Stream& stream, const GemvNorm& norm = {},
                  const GemvInt8& int8 = {});

// The Q, K and V products of a decode step with rope_store_kv (elementwise.h) in the epilogue,
// for adjacent-pair RoPE and an F32 or F16 cache: q [n_tokens][wq.rows] = rotated x wq^T; k
// rotated and v go straight into the cache `kv` of `layer` at kv.positions (device). Bit for bit
// what gemv_multi and then rope_store_kv give. `rope_table` as rope_table() writes it for these
// tokens. REQUIRES: wk and wv have kv.kv_dim rows, head_dim and rope_dims even; norm: in_scale.
Status gemv_qkv_rope_store(const GpuWeight& wq, const GpuWeight& wk, const GpuWeight& wv,
                           const float* x, int64_t n_tokens, float* q, const float* rope_table,
                           int64_t rope_dims, int64_t head_dim, const GpuKvView& kv, int64_t layer,
                           const cuda::Stream& stream, const GemvNorm& norm = {},
                           const GemvInt8& int8 = {});

// y [n_tokens][gate.rows] = silu(x gate^T) * (x up^T). REQUIRES: gate and up have the same shape
// and type. norm: in_scale only (both products are scaled before the SwiGLU).
Status gemv_swiglu(const GpuWeight& gate, const GpuWeight& up, const float* x, int64_t n_tokens,
                   float* y, const cuda::Stream& stream, const GemvNorm& norm = {},
                   const GemvInt8& int8 = {});

}  // namespace strata::gpu
