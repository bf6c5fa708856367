// Weight rows dequantized into bfloat16 for the bf16 prefill matmuls (AmxGemm's A tiles,
// CpuMatmul's oneDNN tiles): each value is dequantize_row's float32 rounded to nearest even.
// Where the CPU has AVX-512 BF16, F32 / F16 / BF16 / Q8_0 / Q4_0 rows go straight from the stored
// blocks to bf16 (0.04-0.07 ns a weight per thread on the dev VM, against 0.50-1.15 for
// dequantize_row plus a rounding loop; a 256-token 1B bf16 prefill there went from ~106 to
// ~125 tok/s; bench/NOTES.md, "Fourth session of 2026-12-04").
//
// Example (a row of A tiles, 16 rows x 32 columns each):
//   STRATA_RETURN_IF_ERROR(dequantize_row_bf16(w.type, row, w.cols, tile_row, 512, scratch));
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata::cpu {

// True when the CPU has AVX-512 F/BW and BF16 and the OS saves the zmm state.
bool avx512_bf16_available();

// Row `src` (cols values of `type`) as ceil(cols / 32) runs of 32 bf16: columns 32 i .. 32 i + 31
// at dst + i * run_stride, columns past cols as zeros. `scratch` holds ceil(cols / 32) * 32
// floats (used where there is no direct path). A float32 value below the smallest normal becomes
// zero on the direct path (VCVTNE2PS2BF16); no Q8_0 / Q4_0 / F16 / BF16 value is one.
Status dequantize_row_bf16(DType type, const void* src, int64_t cols, uint16_t* dst,
                           int64_t run_stride, float* scratch);

}  // namespace strata::cpu
