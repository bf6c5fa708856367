// GpuKvView: what a GPU kernel sees of one sequence's paged KV cache: plain data, like
// memory/kv_view.h is for the CPU kernels. The block memory is VRAM from the device arena; the
// block table is a device array of pointers, block-major so that a new block's entries for every
// layer are one contiguous upload:
//
//   block_table[(b * n_layer + layer) * 2 + 0] -> K rows of block b in `layer`
//   [block_tokens][kv_dim] block_table[(b * n_layer + layer) * 2 + 1] -> V rows of block b in
//   `layer`
//
// Token t is row (t % block_tokens) of block (t / block_tokens). Elements are float (kF32), IEEE
// half bits (kF16) or GGUF Q8_0 blocks of 32 (kQ8_0: 34 bytes each, head_dim a multiple of 32);
// a row holds the n_head_kv heads one after another (head h, dim d is element h * head_dim + d;
// byte offsets as memory/kv_view.h's kv_bytes).
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"

namespace strata::gpu {

struct GpuKvView {
  void* const* block_table = nullptr;  // device, see above
  int64_t n_layer = 0;
  int64_t num_tokens = 0;  // rows [0, num_tokens) are valid (after this step's store)
  int64_t block_tokens = 0;
  int64_t kv_dim = 0;         // n_head_kv * head_dim
  DType dtype = DType::kF32;  // kF32, kF16 or kQ8_0
  // Device array [n_tokens] of the positions of this call's query tokens, or null. When set, the
  // decode kernels (store_kv, decode attention) read the positions from it when they run instead
  // of taking pos0 by value, so that a CUDA graph captured at one step replays correctly at the
  // next (the executor rewrites the array before each replay).
  const int32_t* positions = nullptr;
};

struct AttentionShape {
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
};

}  // namespace strata::gpu
