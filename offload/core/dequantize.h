// Dequantization of ggml tensor types to float32, bit-exact with ggml's reference
// (dequantize_row_* in ggml-quants.c): the same block layouts, the same f16 scale conversions,
// the same order of multiplications, so every value equals what llama.cpp produces.
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata {

// Converts `n_elems` consecutive elements starting at the beginning of a block.
// REQUIRES: n_elems % traits(type).block_elems == 0; `src` holds row_bytes(type, n_elems).
// Returns unsupported for types Strata does not read.
Status dequantize_row(DType type, const void* src, float* dst, int64_t n_elems);

}  // namespace strata
