// Quantization of float32 rows into ggml block types (for the GGUF writer and `strata synth`).
// Q8_0 and Q4_0 follow ggml's reference quantizers exactly (quantize_row_*_ref); the K-quants
// produce valid blocks that ggml dequantizes to the same numbers we do, with a quantizer of the
// same kind (per-sub-block scale and min search) but not bit-identical to llama-quantize.
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata {

// REQUIRES: n_elems % traits(type).block_elems == 0; `dst` has room for row_bytes(type, n_elems).
Status quantize_row(DType type, const float* src, void* dst, int64_t n_elems);

}  // namespace strata
