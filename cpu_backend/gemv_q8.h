// The CPU's integer decode GEMV: y[m][n] = sum_k W[n, k] x[m][k] for weights stored as GGUF
// stores them (Q8_0, Q4_0, Q4_K, Q6_K) and activations quantized to 8 bits per block of 32
// (activation_q8.h), as llama.cpp's CPU backend multiplies those types. Each weight (sub-)block
// times an activation block is an exact integer dot product, scaled once in float32; so the
// result is llama.cpp's arithmetic (the golden `like_llama_cpp` tier), not the float32 product
// over exactly dequantized weights that gemv.h computes (the `exact` tier). The point is speed:
// with VNNI (vpdpbusd, 64 byte pairs an instruction) the 4- and 6-bit types need a few vector
// instructions per 64 weights and run at the memory's pace (bench/NOTES.md, "CPU int8 GEMV").
//
// Kernels: AVX-512 VNNI where the build has it (STRATA_CPU_ARCH), scalar otherwise (slow; it is
// also the tests' second opinion). Threads, row split and calling conventions as gemv.h.
//
// Example:
//   cpu::ActivationsQ8 xq;
//   STRATA_RETURN_IF_ERROR(xq.quantize(x, 1, w.cols));
//   STRATA_RETURN_IF_ERROR(gemv_q8_batched(w, xq, 1, y));  // y[w.rows]
#pragma once

#include <cstdint>

#include "cpu_backend/activation_q8.h"
#include "cpu_backend/gemv.h"

namespace strata {

// Q8_0, Q4_0, Q4_K and Q6_K.
bool gemv_q8_supports(DType type);

// True when this build has the integer kernels for `isa` (kAvx512 needs VNNI; kScalar and kBest
// always; kAvx2 has none).
bool gemv_q8_isa_available(GemvIsa isa);

// y[m][rows] = W x[m] for the first `batch` rows of x (row m of y at y + m * y_stride floats; 0
// means dense). invalid_argument for a bad shape (x.cols() != w.cols, batch outside
// 1..x.rows()), unsupported for another type or an ISA this build lacks; y is untouched then.
Status gemv_q8_batched(const WeightMatrix& w, const cpu::ActivationsQ8& x, int64_t batch, float* y,
                       int64_t y_stride = 0, GemvIsa isa = GemvIsa::kBest);

}  // namespace strata
