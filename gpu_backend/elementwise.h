// Elementwise and per-row CUDA kernels of the Llama-family forward pass: the GPU twins of
// cpu_backend/elementwise.h, with the same arithmetic (float32; RMSNorm's sum of squares and the
// RoPE angles in double, as the CPU does), so that the GPU path meets the golden `exact` tier.
// Activations are row-major [n_tokens][n] device arrays. Every function queues one kernel on
// `stream` and returns the launch's Status (cuda::check_last_launch); nothing allocates.
#pragma once

#include <cstdint>

#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_kv_view.h"
#include "gpu_backend/gpu_weight.h"
#include "offload/model/model_spec.h"

namespace strata::gpu {

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight (x and y may alias).
Status rms_norm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t n,
                float eps, const cuda::Stream& stream);

// The same norm left unapplied, for GEMVs that fold it in (gemv.h, GemvNorm): xg[t] = x[t] o
// weight and scale[t] = 1 / sqrt(mean(x[t]^2) + eps), the scale rms_norm applies.
Status rms_norm_unapplied(const float* x, const float* weight, float* xg, float* scale,
                          int64_t n_tokens, int64_t n, float eps, const cuda::Stream& stream);

// Rotates the first rope_dims of every head of x [n_tokens][n_heads * head_dim] in place by the
// angle positions[t] * theta^(-2i/rope_dims) of pair i (adjacent pairs or NEOX halves).
// `positions` is a device array [n_tokens].
Status rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dims,
            const int32_t* positions, double theta, RopeStyle style, const cuda::Stream& stream);

// out = silu(gate) * up over n values (out may alias gate).
Status swiglu(const float* gate, const float* up, float* out, int64_t n,
              const cuda::Stream& stream);

// y += x over n values.
Status add_inplace(float* y, const float* x, int64_t n, const cuda::Stream& stream);

// y = x over n values. x may be page-locked host memory under its device address
// (cuda::device_pointer_of_host): the kernel then reads it over PCIe itself, so a small upload
// does not queue on the copy engine behind a large copy of another stream.
Status copy_floats(float* y, const float* x, int64_t n, const cuda::Stream& stream);

// The same for int32 values (token ids, positions).
Status copy_int32(int32_t* y, const int32_t* x, int64_t n, const cuda::Stream& stream);

// y[t] += bias for every row of y [n_tokens][n].
Status add_bias(float* y, const float* bias, int64_t n_tokens, int64_t n,
                const cuda::Stream& stream);

// out[t] = row ids[t] of `table` dequantized to float32 ([n_tokens][table.cols]); ids is a device
// array. Exactly dequantize_row's values.
Status embed_rows(const GpuWeight& table, const int32_t* ids, int64_t n_tokens, float* out,
                  const cuda::Stream& stream);

// Rows [row0, row0 + n_rows) of `w` dequantized into a dense row-major [n_rows][w.cols] array of
// `to` (kF32, kF16 or kBF16): the tile that a cuBLAS GEMM reads in prefill. kF32 is exact; kF16 and
// kBF16 round each dequantized value once (round to nearest even).
Status dequantize_rows(const GpuWeight& w, int64_t row0, int64_t n_rows, DType to, void* out,
                       const cuda::Stream& stream);

// out[i] = x[i] rounded to `to` (kF16 or kBF16), n values.
Status convert_f32(const float* x, int64_t n, DType to, void* out, const cuda::Stream& stream);

// Stores K and V of n_tokens new tokens (k, v: [n_tokens][kv_dim] float32) at positions
// pos0 .. pos0 + n_tokens - 1 of `layer` in the paged cache (converted to kv.dtype).
// REQUIRES: pos0 + n_tokens <= kv.num_tokens.
Status store_kv(const float* k, const float* v, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                int64_t layer, const cuda::Stream& stream);

// (cos, sin) of pair i at position positions[t] for the rotation by positions[t] *
// theta^(-2i/rope_dims): table [n_tokens][rope_dims / 2], angles in double rounded to float, the
// values rope() uses, as (cos, sin) float pairs: [n_tokens][rope_dims / 2][2]. Computed once per
// forward call and shared by every layer.
Status rope_table(const int32_t* positions, int64_t n_tokens, int64_t rope_dims, double theta,
                  float* table, const cuda::Stream& stream);

// One layer's rope and KV store in one launch: rotates the first rope_dims of every head of
// q [n_tokens][n_head * head_dim] in place, and writes k (rotated likewise) and v
// ([n_tokens][kv_dim]) into the cache at the positions in kv.positions (device; required), in
// kv.dtype. Bit-identical to rope(q), rope(k) and store_kv in sequence.
Status rope_store_kv(float* q, const float* k, const float* v, int64_t n_tokens, const float* table,
                     const AttentionShape& shape, int64_t rope_dims, RopeStyle style,
                     const GpuKvView& kv, int64_t layer, const cuda::Stream& stream);

}  // namespace strata::gpu
