// KvLayerView: what a kernel sees of one sequence's KV cache in one layer. Plain data only, so
// backends include this header and nothing else from memory/ (DESIGN.md: "backends see KV blocks
// through a plain view, never through memory/ internals").
//
// The cache is paged: a sequence's tokens live in fixed-size blocks of `block_tokens` rows, and the
// blocks of one sequence are not contiguous. Token t is row (t % block_tokens) of the sequence's
// block number (t / block_tokens):
//
//   K row of token t = (T*)k_blocks[t / block_tokens] + (t % block_tokens) * kv_dim
//   V row of token t = (T*)v_blocks[t / block_tokens] + (t % block_tokens) * kv_dim
//
// where T is `float` for DType::kF32 and `uint16_t` (IEEE half bits) for DType::kF16. A row holds
// the n_head_kv heads one after another: element (kv head h, dim d) is at h * head_dim + d. For
// DType::kQ8_0 a row is kv_dim / 32 blocks of 34 bytes (f16 scale, 32 int8), as GGUF stores
// Q8_0; head_dim is a multiple of 32, so head h starts at block h * head_dim / 32. Byte offsets
// of any of the three: kv_bytes(dtype, elements).
//
// Example usage (attention for one sequence, one layer):
//   KvLayerView kv = cache.layer_view(seq, layer);
//   for (int64_t t = 0; t < kv.num_tokens; ++t) {
//     const float* k = static_cast<const float*>(kv_k_row(kv, t));  // [kv_dim]
//     ...
//   }
//
// Lifetime: the pointer arrays belong to the cache. A view stays valid until the cache changes that
// sequence (reserve_slots, remove_sequence); take a fresh view each step. The block memory itself
// does not move while the sequence holds it.
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"

namespace strata {

struct KvLayerView {
  void* const* k_blocks = nullptr;  // [num_blocks] -> K rows [block_tokens][kv_dim]
  void* const* v_blocks = nullptr;  // [num_blocks] -> V rows [block_tokens][kv_dim]
  int64_t num_blocks = 0;           // = ceil(num_tokens / block_tokens)
  int64_t num_tokens = 0;           // rows [0, num_tokens) belong to the sequence
  int64_t block_tokens = 0;         // rows per block
  int64_t kv_dim = 0;               // elements per row (n_head_kv * head_dim)
  DType dtype = DType::kF32;        // kF32, kF16 or kQ8_0
};

// Where one token's K and V rows are, in one layer: the write path of the forward pass.
struct KvRowPtrs {
  void* k = nullptr;  // [kv_dim]
  void* v = nullptr;  // [kv_dim]
};

// Bytes of `elements` KV elements of `dtype` (for kQ8_0, REQUIRES: a multiple of 32).
inline int64_t kv_bytes(DType dtype, int64_t elements) {
  switch (dtype) {
    case DType::kF16:
      return elements * 2;
    case DType::kQ8_0:
      return elements / 32 * 34;
    default:
      return elements * 4;
  }
}

// REQUIRES: 0 <= token < view.num_tokens
inline void* kv_k_row(const KvLayerView& view, int64_t token) {
  auto* block = static_cast<char*>(view.k_blocks[token / view.block_tokens]);
  return block + kv_bytes(view.dtype, (token % view.block_tokens) * view.kv_dim);
}
inline void* kv_v_row(const KvLayerView& view, int64_t token) {
  auto* block = static_cast<char*>(view.v_blocks[token / view.block_tokens]);
  return block + kv_bytes(view.dtype, (token % view.block_tokens) * view.kv_dim);
}

}  // namespace strata
