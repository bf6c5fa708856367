// Few-token products over Q8_0 and Q4_0 weights as stored, on Intel AMX's int8 unit (TDPBSSD):
// y [t][r] = sum over blocks b of d_w[r][b] d_x[t][b] sum_k q_w[r][32 b + k] q_x[t][32 b + k],
// with x quantized per block of 32 (ActivationsQ8: llama.cpp's arithmetic, the golden
// `like_llama_cpp` tier, as gemv_q8.h).
//
// Why: a batched decode step multiplies the CPU-run matrices by up to 16 rows of x. AmxGemm's
// few-token path (bf16 tiles) spends ~20 instructions a block of 32 weights dequantizing them to
// bf16 and storing them for the tile loads: ~2.8 G weights/s a core on the GPU machine's host,
// 0.26-0.53 of its memory bandwidth for Q4_0 / Q8_0 (bench/NOTES.md, "Batched decode on the
// tiles"). Here the Q8_0 quants are the A tile as they lie in memory (16 rows at the row
// stride), Q4_0's nibbles are unpacked to int8 with a few byte operations, and the scales are
// applied once per block and row to the int32 sums: a few instructions per 32 weights.
//
// How: a thread takes 32 weight rows at a time and walks their blocks; per block, two A tiles
// (rows 0-15, 16-31) times one B tile (the block's 32 values of every token, in the quads
// TDPBSSD wants), the two int32 C tiles stored to L1 and added into float32 sums per row and
// token. TileUnit::kEmulated runs the same arithmetic in plain C++ (bit for bit: integer sums
// are exact and the float operations are the same, in the same order), for CPUs without AMX.
//
// Example:
//   AmxInt8Gemm gemm(TileUnit::kAmx);
//   if (amx_int8_available() && AmxInt8Gemm::supports(w.type)) {
//     STRATA_RETURN_IF_ERROR(x8.quantize(x, n_tokens, w.cols));
//     STRATA_RETURN_IF_ERROR(gemm.run(w, x8, n_tokens, y, w.rows));
//   }
#pragma once

#include <cstdint>
#include <memory>

#include "cpu_backend/activation_q8.h"
#include "cpu_backend/gemm_amx.h"
#include "cpu_backend/gemv.h"
#include "offload/core/status.h"

namespace strata::cpu {

class AmxInt8Gemm {
 public:
  static constexpr int64_t kMaxTokens = 16;  // one B tile's columns

  explicit AmxInt8Gemm(TileUnit unit);
  ~AmxInt8Gemm();
  AmxInt8Gemm(const AmxInt8Gemm&) = delete;
  AmxInt8Gemm& operator=(const AmxInt8Gemm&) = delete;

  static bool supports(DType type) { return type == DType::kQ8_0 || type == DType::kQ4_0; }

  // y[t * ldy + r] for t < n_tokens, r < w.rows, as above. x8 holds at least n_tokens rows of
  // w.cols columns. unsupported for kAmx without amx_int8_available(); invalid_argument for
  // another type, n_tokens outside 1..kMaxTokens, ldy < w.rows, x8 of another width, or nulls.
  Status run(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens, float* y,
             int64_t ldy);

 private:
  struct Buffers;
  TileUnit unit_;
  std::unique_ptr<Buffers> buffers_;
};

}  // namespace strata::cpu
