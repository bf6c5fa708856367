// Decode GEMV on the CPU: y[n] = sum_k W[n, k] * x[k] for a weight matrix stored as GGUF stores
// it (row n holds `cols` = ne[0] elements in the stored type; rows are contiguous), with float32
// activations and outputs.
//
// At batch 1 every weight byte is read once per token and used for two flops, so the kernel is
// bound by DRAM read bandwidth. The weights are dequantized in registers, block by block, and fed
// straight into float32 FMAs: no dequantized copy of the weights is ever written. Each weight value
// is computed as dequantize_row computes it (same formula, same rounding; the AVX-512 Q4_K kernel
// alone fuses d1 * q - m1 into one rounding), and the activations stay float32 (they are never
// quantized), so the result differs from a float64 dot of the dequantized row only by float32
// accumulation error (~1e-7 relative to sum |w||x|).
//
// Speed: keep x rows 64-byte aligned (a misaligned x splits every 64-byte load over two cache
// lines; F16 then runs at a quarter of the speed). bench/NOTES.md has the measured rates.
//
// Threads: the row range is split into one contiguous static chunk per OpenMP thread (the caller's
// thread pool is OpenMP's; see thread_placement.h for pinning it). Calls made from inside an
// active parallel region run on the calling thread alone. Nothing is allocated per call.
//
// Example:
//   WeightMatrix w{DType::kQ4_K, /*rows=*/14336, /*cols=*/4096, mapped_bytes};
//   STRATA_RETURN_IF_ERROR(gemv(w, x, y));                 // x[4096] -> y[14336]
//   STRATA_RETURN_IF_ERROR(gemv_batched(w, xs, 4, ys));     // xs[4][4096] -> ys[4][14336]
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata {

// A read-only view of a weight matrix in its stored type. Row n starts at
// data + n * row_bytes(type, cols). The view owns nothing.
struct WeightMatrix {
  DType type = DType::kF32;
  int64_t rows = 0;  // output features (ne[1])
  int64_t cols = 0;  // input features (ne[0]); a multiple of the type's block size
  const uint8_t* data = nullptr;

  int64_t row_stride_bytes() const { return row_bytes(type, cols); }
  int64_t size_bytes() const { return rows * row_stride_bytes(); }
};

// Which instruction set the kernels use. kBest picks the widest one this build was compiled for
// (the build's -march, STRATA_CPU_ARCH); the others exist so that tests can check every path.
enum class GemvIsa { kBest, kScalar, kAvx2, kAvx512 };

// True when this build contains kernels for `isa` (kScalar and kBest always).
bool gemv_isa_available(GemvIsa isa);
const char* gemv_isa_name(GemvIsa isa);  // "avx512", ... ; kBest names the one it resolves to

// Types that gemv runs on: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K.
bool gemv_supports(DType type);

// The largest batch that one pass over the weights serves; larger batches take several passes.
inline constexpr int kGemvMaxBatch = 8;

// y[rows] = W x[cols].
// REQUIRES: x holds w.cols floats, y has room for w.rows floats; x and y do not overlap.
// Returns invalid_argument for a bad shape or null pointer, unsupported for a type gemv does not
// run on (or an ISA this build lacks); y is untouched then.
Status gemv(const WeightMatrix& w, const float* x, float* y, GemvIsa isa = GemvIsa::kBest);

// Several sequences at once: y[m][rows] = W x[m][cols] for m < batch. Each weight block is loaded
// and dequantized once for up to kGemvMaxBatch rows of x. Row m of x starts at x + m * x_stride
// and row m of y at y + m * y_stride (strides in floats; 0 means dense: cols and rows).
Status gemv_batched(const WeightMatrix& w, const float* x, int64_t batch, float* y,
                    int64_t x_stride = 0, int64_t y_stride = 0, GemvIsa isa = GemvIsa::kBest);

}  // namespace strata
