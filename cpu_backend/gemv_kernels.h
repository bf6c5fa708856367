// Internal to the GEMV: the row kernels that gemv.cpp dispatches to, one set per instruction set
// (gemv_scalar.cpp, gemv_avx2.cpp, gemv_avx512.cpp). Not for use outside cpu_backend.
//
// A row kernel computes y[m][n] for rows n in [row_begin, row_end) and m < batch, reading each
// weight row once, dequantizing it block by block in registers exactly as dequantize_row does,
// and accumulating in float32. It runs on the calling thread; gemv.cpp splits rows over threads.
#pragma once

#include <omp.h>

#include <cstdint>

#include "cpu_backend/activation_q8.h"
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

// The integer GEMV's kernels (gemv_q8.h): the same contract over activations quantized to 8 bits.
struct GemvQ8Args {
  const uint8_t* w = nullptr;  // row n starts at w + n * w_row_bytes
  int64_t w_row_bytes = 0;
  int64_t cols = 0;                       // a multiple of the type's block size; == x->cols()
  const cpu::ActivationsQ8* x = nullptr;  // rows m < batch used
  float* y = nullptr;                     // [batch][y_stride], rows used
  int64_t y_stride = 0;
  int batch = 1;          // 1..kGemvMaxBatch
  int64_t first_row = 0;  // y row m is x row first_row + m
};

using Q8RowKernel = void (*)(const GemvQ8Args& args, int64_t row_begin, int64_t row_end);

Q8RowKernel scalar_q8_row_kernel(DType type);
Q8RowKernel avx512_q8_row_kernel(DType type);  // nullptr without AVX-512 VNNI

// Calls f(begin, end) for one contiguous static chunk of [0, rows) per OpenMP thread, so that
// each core streams one run of memory, which the hardware prefetchers follow best; on the
// calling thread alone when already inside a parallel region or for fewer than 2 rows.
template <class F>
void for_thread_rows(int64_t rows, F&& f) {
  if (omp_in_parallel() || rows < 2) {
    f(int64_t{0}, rows);
    return;
  }
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t thread = omp_get_thread_num();
    const int64_t begin = rows * thread / threads;
    const int64_t end = rows * (thread + 1) / threads;
    if (begin < end) f(begin, end);
  }
}

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
