// GpuAttention: causal multi-head attention (grouped KV heads) over one sequence's paged KV cache
// on the GPU, the twin of cpu_backend/attention.h + attention_gemm.h.
//
// Query token i of a chunk of n_tokens sits at position pos0 + i and attends to KV positions
// 0 .. pos0 + i (the chunk's own K/V are already stored in the cache). Two paths:
//   - few query tokens (decode): flash-decoding. The KV sequence is split into pieces of
//     `split_tokens`; one CUDA block per (query token, group of 1-4 query heads sharing a KV
//     head, piece) reads each K/V row once and computes a partial softmax
//     (running max m, sum l, weighted V sum) in float32, and a second kernel merges the pieces
//     exactly through their log-sum-exp. Long contexts thus fill the GPU at batch 1.
//   - many query tokens (prefill, n_tokens >= gemm_min_tokens): the cache rows 0..pos0+n-1 are
//     gathered into contiguous K/V arrays, and per tile of queries S = Q K^T (cuBLAS strided
//     batched, one batch per KV head group), a causal softmax kernel, then O = P V (cuBLAS).
//     GemmPrecision::kF32 keeps everything float32 (exact tier); kF16 rounds Q, K, V and P to
//     f16 for the tensor cores (like_llama_cpp tier).
// Scores are scaled by 1/sqrt(head_dim); softmax subtracts the row max; all sums are float32.
//
// Workspace (split partials, gathered K/V, the score tile) comes from the arena once, sized for
// options.max_context and options.max_tokens; run() allocates nothing.
//
// Example usage:
//   STRATA_ASSIGN_OR_RETURN(auto att, GpuAttention::create(arena, blas, options));
//   STRATA_RETURN_IF_ERROR(att->run(q, n, pos0, kv_view, layer, out, stream));
#pragma once

#include <cstdint>
#include <memory>

#include "gpu_backend/cublas.h"
#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_kv_view.h"
#include "memory/device_arena.h"
#include "offload/core/status.h"

namespace strata::gpu {

enum class GemmPrecision { kF32, kF16 };

struct GpuAttentionOptions {
  AttentionShape shape;
  int64_t max_context = 0;          // longest sequence (KV tokens) run() will see
  int64_t max_tokens = 0;           // most query tokens per run() call
  int64_t gemm_min_tokens = 32;     // at or above: the GEMM path
  int64_t query_tile_tokens = 256;  // GEMM path: queries per score tile
  // Decode path: KV tokens per piece. Small pieces fill the GPU at short contexts; the merge
  // costs one partial per piece.
  int64_t split_tokens = 64;
  GemmPrecision precision = GemmPrecision::kF32;
};

class GpuAttention {
 public:
  // REQUIRES: arena and blas outlive the object. invalid_argument for bad options.
  static StatusOr<std::unique_ptr<GpuAttention>> create(DeviceArena& arena, Cublas& blas,
                                                        const GpuAttentionOptions& options);
  virtual ~GpuAttention() = default;

  // out [n_tokens][n_head * head_dim] from q [n_tokens][n_head * head_dim] (device, float32).
  // REQUIRES: pos0 + n_tokens == kv.num_tokens <= max_context, n_tokens <= max_tokens.
  virtual Status run(const float* q, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                     int64_t layer, float* out, const cuda::Stream& stream) = 0;

  // The decode path (REQUIRES n_tokens < gemm_min_tokens) as one part of a split attention: KV
  // blocks whose block-table entry is null are masked (attended elsewhere, e.g. by the CPU from
  // the cold tier), and lse [n_tokens][n_head] receives each row's log-sum-exp of the scores it
  // saw (-inf, with out 0, when it saw none), for merge_attention_parts.
  virtual Status run_decode_partial(const float* q, int64_t n_tokens, int64_t pos0,
                                    const GpuKvView& kv, int64_t layer, float* out, float* lse,
                                    const cuda::Stream& stream) = 0;

  // Device bytes held for workspace.
  virtual int64_t workspace_bytes() const = 0;
};

// out/lse [rows][head_dim] / [rows] (device) = the exact merge of themselves with another part
// over disjoint keys, through the log-sum-exps (cpu::merge_attention's formula). other_out and
// other_lse may be pinned host memory under its device address.
Status merge_attention_parts(float* out, float* lse, const float* other_out, const float* other_lse,
                             int64_t rows, int64_t head_dim, const cuda::Stream& stream);

}  // namespace strata::gpu
