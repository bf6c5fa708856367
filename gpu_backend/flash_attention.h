// Flash attention (FlashAttention-2 style) for the prefill of one sequence: causal attention with
// grouped KV heads, read straight from the paged f16 KV cache, on the tensor cores (mma.sync
// m16n8k16, f16 inputs, float32 accumulators; sm_80 and newer). It is GpuAttention's prefill path
// for GemmPrecision::kF16 (attention.h): the scores never leave the chip, where the GEMM path
// writes and reads a float32 score matrix per query tile through HBM.
//
// Query token i of the chunk sits at position pos0 + i and attends to KV positions 0 .. pos0 + i
// (the chunk's own K/V are already in the cache). Query head h reads KV head h / (n_head /
// n_head_kv). Arithmetic: q is rounded to f16 (as the GEMM path's kF16 tier does), S = q K^T is
// summed in float32 and scaled by 1/sqrt(head_dim), the softmax runs online in float32 (running
// max and sum per query row), the probabilities are rounded to f16 for P V, and O is summed and
// normalised in float32. Against an exact float32 reference over the same f16 KV values the
// relative L2 error is of the order of f16's rounding (~1e-3).
//
// Supported (flash_attention_supported): head_dim 64 or 128, an f16 KV cache. Other head dims
// and f32 caches stay on GpuAttention's GEMM path.
//
// Nothing is allocated: no workspace, one kernel launch on `stream`.
//
// REQUIRES (not checkable on the host): q, out and the KV blocks are device memory; the block
// pointers in kv.block_table are 16-byte aligned (arena buffers are 256-byte aligned, a block is
// whole rows); q and out do not overlap; the GPU is sm_80 or newer.
//
// Example usage (inside GpuAttention::run, prefill):
//   if (flash_attention_supported(shape, kv.dtype))
//     return flash_attention_prefill(q, n_tokens, pos0, kv, layer, shape, out, stream);
#pragma once

#include <cstdint>

#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_kv_view.h"
#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata::gpu {

// True when flash_attention_prefill runs this shape over a KV cache of `kv_dtype`: head_dim 64
// or 128, n_head a positive multiple of n_head_kv, kv_dtype kF16.
bool flash_attention_supported(const AttentionShape& shape, DType kv_dtype);

// out [n_tokens][n_head * head_dim] from q [n_tokens][n_head * head_dim] (device, float32) and
// layer `layer` of the paged cache `kv`. Queued on `stream`; returns once launched.
// REQUIRES: flash_attention_supported(shape, kv.dtype), pos0 + n_tokens == kv.num_tokens,
// kv.kv_dim == n_head_kv * head_dim, 0 <= layer < kv.n_layer (invalid_argument otherwise).
Status flash_attention_prefill(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                               int64_t layer, const AttentionShape& shape, float* out,
                               const cuda::Stream& stream);

}  // namespace strata::gpu
