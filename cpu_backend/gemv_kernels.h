// Internal to the GEMV: the row kernels that gemv.cpp dispatches to, one set per instruction set
// (gemv_scalar.cpp, gemv_avx2.cpp, gemv_avx512.cpp). Not for use outside cpu_backend.
//
// A row kernel computes y[m][n] for rows n in [row_begin, row_end) and m < batch, reading each
// weight row once, dequantizing it block by block in registers exactly as dequantize_row does,
// and accumulating in float32. It runs on the calling thread; gemv.cpp splits rows over threads.
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"

namespace strata::gemv_detail {

struct GemvArgs {
  const uint8_t* w = nullptr;  // row n starts at w + n * w_row_bytes
  int64_t w_row_bytes = 0;
  int64_t cols = 0;          // a multiple of the type's block size
  const float* x = nullptr;  // [batch][x_stride], cols used
  int64_t x_stride = 0;
  float* y = nullptr;  // [batch][y_stride], rows used
  int64_t y_stride = 0;
  int batch = 1;  // 1..kGemvMaxBatch
};

using RowKernel = void (*)(const GemvArgs& args, int64_t row_begin, int64_t row_end);

// The kernel for `type`, or nullptr when that instruction set was not compiled in or the type is
// not one gemv runs on.
RowKernel scalar_row_kernel(DType type);
RowKernel avx2_row_kernel(DType type);
RowKernel avx512_row_kernel(DType type);

// f16 -> f32 for all 65536 bit patterns (bit-exact with f16_to_f32), built on first use. The
// kernels look block scales up here so that a scale broadcast is a memory operand.
const float* f16_to_f32_table();

// f16 scale of a block as float, bit-exact with f16_to_f32 (F16C when the build has it).
inline float half_to_float(uint16_t h);

}  // namespace strata::gemv_detail

#if defined(__F16C__)
#include <immintrin.h>
inline float strata::gemv_detail::half_to_float(uint16_t h) { return _cvtsh_ss(h); }
#else
inline float strata::gemv_detail::half_to_float(uint16_t h) { return strata::f16_to_f32(h); }
#endif
