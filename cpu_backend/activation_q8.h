// Activations quantized to 8 bits for the CPU's integer decode GEMV (gemv_q8.h): every block of
// 32 values of a row becomes int8 q_i = round(x_i / d) (half away from zero) with
// d = max |x_i| / 127, as llama.cpp quantizes a matmul's input for its quantized dot products
// (and as gpu_backend/activation_q8.h does, bit for bit). A GEMV over these meets the golden
// `like_llama_cpp` tier, not `exact`. What it buys: a block of weights times a block of x is an
// integer dot product of byte pairs (AVX-512 VNNI: 64 pairs an instruction) and one float
// multiply, instead of a float conversion and an FMA per weight, so the 4- and 6-bit types stop
// being compute-bound (bench/NOTES.md, "CPU int8 GEMV").
//
// Besides q and d the quantizer leaves what the kernels would otherwise recompute for every
// weight row: per group of 4 values (one int32 lane of a VNNI dot) the block's d and the sum of
// the 4 q (for the offsets: Q4_0's -8, Q6_K's -32, Q8_0's +128 bias), and per block d times
// the sum of its q (Q4_K's mins).
//
// Not thread-safe; one per caller (CpuMatmul keeps one). Grows on demand, then reuses memory.
//
// Example:
//   ActivationsQ8 xq;
//   STRATA_RETURN_IF_ERROR(xq.quantize(x, /*rows=*/1, /*cols=*/4096));
//   STRATA_RETURN_IF_ERROR(gemv_q8_batched(w, xq, 1, y));
#pragma once

#include <cstdint>
#include <memory>

#include "offload/core/status.h"

namespace strata::cpu {

inline constexpr int64_t kActivationBlockQ8 = 32;

class ActivationsQ8 {
 public:
  // Rows m < rows of x (row m at x + m * x_stride floats; 0: dense) quantized. REQUIRES: x holds
  // them. invalid_argument unless cols is a positive multiple of 32 and x_stride >= cols.
  Status quantize(const float* x, int64_t rows, int64_t cols, int64_t x_stride = 0);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

  // Row m's arrays (m < rows()); q is 64-byte aligned.
  const int8_t* q(int64_t m) const { return q_ + m * q_stride_; }               // [cols]
  const float* d(int64_t m) const { return d_ + m * block_stride_; }            // [cols / 32]
  const int32_t* sums(int64_t m) const { return sums_ + m * block_stride_; }    // [cols / 32]
  const float* d_sums(int64_t m) const { return d_sums_ + m * block_stride_; }  // d * sum
  const float* lane_d(int64_t m) const { return lane_d_ + m * lane_stride_; }   // [cols / 4]
  const int32_t* lane_sums(int64_t m) const { return lane_sums_ + m * lane_stride_; }  // [cols/4]

 private:
  void reserve(int64_t rows, int64_t cols);

  std::unique_ptr<uint8_t[]> storage_;
  int64_t capacity_bytes_ = 0;
  int64_t rows_ = 0, cols_ = 0;
  int64_t q_stride_ = 0, block_stride_ = 0, lane_stride_ = 0;  // elements between rows
  int8_t* q_ = nullptr;
  float* d_ = nullptr;
  int32_t* sums_ = nullptr;
  float* d_sums_ = nullptr;
  float* lane_d_ = nullptr;
  int32_t* lane_sums_ = nullptr;
};

}  // namespace strata::cpu
