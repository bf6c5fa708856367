// Prefill attention on Intel AMX: the PrefillAttention of attention_gemm.h with Q, K, V and the
// softmax weights rounded to bfloat16 and float32 sums in the tile registers (TDPBF16PS), the
// arithmetic of the kBF16 prefill matmuls (the golden `like_llama_cpp` tier, as llama.cpp's CPU
// flash attention rounds K and V to f16).
//
// Why: the float32 oneDNN path (attention_gemm.h) took 2.8 s of a 9 s 2048-token llama3-8b
// prefill on the 16-core host, ~0.4 TFLOP/s, against the tiles' ~14 (bench/NOTES.md).
//
// How: per call (one layer), the K and V rows of a group of KV heads are gathered from the paged
// cache and packed once into B tiles (attention_amx_unit.h has the layouts); then the OpenMP
// threads take units of 32 query tokens of one query head, latest first (they see the most keys),
// and run S = Q K^T, an online softmax and O += P V over key chunks of key_chunk keys, so the
// scratch stays a few hundred KiB per thread at any context length. The causal mask costs at
// most one partial 32-key step per unit.
//
// TileUnit::kEmulated runs the same loop nest on plain arrays (tests on CPUs without AMX).
//
// Example:
//   if (amx_bf16_available() && head_dim % 32 == 0)
//     STRATA_ASSIGN_OR_RETURN(attention, make_amx_prefill_attention({}));
#pragma once

#include <cstdint>
#include <memory>

#include "cpu_backend/attention_gemm.h"
#include "cpu_backend/gemm_amx.h"
#include "offload/core/status.h"

namespace strata::cpu {

struct AmxAttentionConfig {
  int64_t key_chunk = 256;                 // keys per online-softmax pass (a multiple of 32)
  int64_t max_packed_bytes = 256ll << 20;  // packed K and V of the KV heads done at once
  TileUnit unit = TileUnit::kAmx;
};

// invalid_argument for a bad config; unsupported for kAmx without amx_bf16_available(). Its
// run() returns invalid_argument for a head_dim that is not a multiple of 32.
StatusOr<std::unique_ptr<PrefillAttention>> make_amx_prefill_attention(
    const AmxAttentionConfig& config);

}  // namespace strata::cpu
