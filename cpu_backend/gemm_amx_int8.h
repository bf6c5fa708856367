// Products over Q8_0 and Q4_0 weights as stored, on Intel AMX's int8 unit (TDPBSSD):
// y [t][r] = sum over blocks b of d_w[r][b] d_x[t][b] sum_k q_w[r][32 b + k] q_x[t][32 b + k],
// with x quantized per block of 32 (ActivationsQ8: llama.cpp's arithmetic, the golden
// `like_llama_cpp` tier, as gemv_q8.h).
//
// Why: the bf16 tiles (AmxGemm) first dequantize every weight to bf16 (~20 instructions a block
// of 32) and run at half the int8 unit's rate. A batched decode step that spends those
// instructions per weight read is bound by them, not by memory: 0.26-0.53 of the host's
// bandwidth for Q4_0 / Q8_0 (bench/NOTES.md, "Batched decode on the tiles"); a prefill pays them
// once per weight tile but then runs the bf16 tiles.
//
// How, for at most kStreamingTokens tokens (the weights streamed once): a thread takes 32
// weight rows at a time and walks their blocks; per block, two A tiles (rows 0-15, 16-31; Q8_0's
// quants as they lie in memory, Q4_0's nibbles unpacked with a few byte operations) times one B
// tile (the block's 32 values of every token, in the quads TDPBSSD wants), the two int32 C
// tiles stored to L1 and added into float32 sums per row and token.
// For more tokens (prefill; gemm_amx_int8_panel.h): a thread takes kPanelRows weight rows,
// stages them once in the quads, and runs every group of 16 tokens over them (x copied once
// into A-tile order), one 16 x 16 C tile a pass. Every block of 32 then stores a C tile and
// scales it on the vector units, which on the dev VM's cores made this path slower than
// AmxGemm's bf16 prefill (bench/NOTES.md, "CPU prefill on the int8 tiles"): CpuMatmul takes it
// only with MatmulOptions::amx_int8_prefill.
// TileUnit::kEmulated runs the same arithmetic in plain C++ (bit for bit: integer sums are exact
// and the float operations are the same, in the same order), for CPUs without AMX.
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
  // At most this many tokens, the weights are streamed once (one B tile's columns of tokens);
  // more take the panel path.
  static constexpr int64_t kStreamingTokens = 16;
  static constexpr int64_t kPanelRows = 64;  // weight rows a thread stages at a time (4 tiles)

  explicit AmxInt8Gemm(TileUnit unit);
  ~AmxInt8Gemm();
  AmxInt8Gemm(const AmxInt8Gemm&) = delete;
  AmxInt8Gemm& operator=(const AmxInt8Gemm&) = delete;

  static bool supports(DType type) { return type == DType::kQ8_0 || type == DType::kQ4_0; }

  // y[t * ldy + r] for t < n_tokens, r < w.rows, as above. x8 holds at least n_tokens rows of
  // w.cols columns. unsupported for kAmx without amx_int8_available(); invalid_argument for
  // another type, n_tokens < 1, ldy < w.rows, x8 of another width, or nulls.
  Status run(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens, float* y,
             int64_t ldy);

 private:
  Status run_streaming(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens, float* y,
                       int64_t ldy);
  Status run_panels(const WeightMatrix& w, const ActivationsQ8& x8, int64_t n_tokens, float* y,
                    int64_t ldy);

  struct Buffers;
  TileUnit unit_;
  std::unique_ptr<Buffers> buffers_;
};

}  // namespace strata::cpu
