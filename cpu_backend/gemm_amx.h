// Prefill matrix products on Intel AMX: Y [tokens][rows] = X [tokens][cols] * W^T with both inputs
// rounded to bfloat16 and float32 accumulation in the tile registers (TDPBF16PS), the same
// arithmetic as CpuMatmul's kBF16 path through oneDNN (the golden `like_llama_cpp` tier), but
// with the weights dequantized straight into the tile layout the kernel reads.
//
// Why our own kernel: oneDNN 2.6's AMX bf16 GEMM reached ~3.8 TFLOP/s on the GPU machine's
// 16-core host, where the tiles' own rate is several times that (bench/NOTES.md, "CPU prefill on
// AMX"), so prefill ran at ~135 tok/s against llama.cpp's 269-956.
//
// How: the weights are dequantized a slab of rows at a time (tile_bytes of bf16) into 1 KiB tiles
// of 16 rows x 32 columns, the A operand of TDPBF16PS as is; X is rounded once per call into the
// B operand's pair-interleaved tiles (16 column pairs x 16 tokens). Units of unit_rows weight rows
// x unit_tokens tokens go to the OpenMP threads; a unit walks K in k_chunk steps so that its
// weight and token panels stay in L2, with 2 x 2 register tiles (32 rows x 32 tokens, four
// accumulators) and the partial sums kept in a per-thread scratch between chunks. The output
// tile is [rows][tokens]; it is transposed on the way out into Y's [tokens][rows].
//
// Few tokens (a batched decode step, <= skinny_max_tokens): no slab; see AmxGemmConfig.
//
// TileUnit::kEmulated runs the same loop nest on plain arrays, so that the blocking and the edge
// cases are tested on CPUs without AMX (CI); kAmx is the hardware.
//
// Example:
//   AmxGemm gemm({});
//   if (amx_bf16_available()) STRATA_RETURN_IF_ERROR(gemm.run(w, x, n_tokens, y, w.rows));
#pragma once

#include <cstdint>
#include <memory>

#include "cpu_backend/gemv.h"
#include "offload/core/status.h"

namespace strata::cpu {

// True when the CPU has AMX-TILE and AMX-BF16 and Linux granted this process the tile state
// (arch_prctl ARCH_REQ_XCOMP_PERM; asked once, the answer is kept).
bool amx_bf16_available();

// amx_bf16_available() and AMX-INT8 (TDPBSSD and kin).
bool amx_int8_available();

// The tile unit's own rate: every current OpenMP thread runs TDPBF16PS on register-resident
// tiles at once (no memory traffic), best of three; FLOP/s summed over the threads. The
// roofline of AmxGemm. unsupported without AMX.
StatusOr<double> measure_amx_bf16_peak_flop_per_s();

// TDPBSSD's rate the same way (int8 products, int32 sums; ops = 2 x multiply-adds) with K =
// k_bytes (32: one Q8_0 block per instruction, as a per-block-scale kernel needs; 64: the full
// tile). unsupported without AMX-INT8; invalid_argument unless k_bytes is 32 or 64. For the
// roofline of an int8 prefill kernel (bench/NOTES.md, "CPU prefill on AMX").
StatusOr<double> measure_amx_int8_peak_op_per_s(int64_t k_bytes);

enum class TileUnit { kAmx, kEmulated };

// Seconds spent in run()'s three phases, summed over calls: the tokens' rounding into B tiles,
// the weights' dequantization into A tiles (a parallel phase before each slab's units), and the
// units on the tiles. For the benchmark's breakdown (bench/NOTES.md, "CPU prefill on AMX").
struct AmxGemmTimes {
  double pack_s = 0, dequant_s = 0, units_s = 0;
};

struct AmxGemmConfig {
  int64_t tile_bytes = 8ll << 20;  // bf16 weights dequantized per slab
  int64_t unit_rows = 128;         // weight rows of one thread's unit (a multiple of 32)
  int64_t unit_tokens = 256;       // tokens of one unit (a multiple of 32)
  int64_t k_chunk = 1024;          // columns per pass over a unit (a multiple of 32)
  TileUnit unit = TileUnit::kAmx;
  // At most this many tokens (1..32) take the streaming path: each thread dequantizes a block of
  // 32 weight rows, skinny_k_chunk columns at a time, into tiles of its own (L1/L2) and
  // multiplies them at once, so every weight is read from memory once and no slab is written:
  // a batched decode step is bound by the weights' bytes, as the GEMV is, not by f32 FMAs.
  int64_t skinny_max_tokens = 32;
  // Columns dequantized at once (a multiple of 256, a K-quant super-block). 4096: a block's 32
  // rows are read as 32 runs of 4-8 KiB (long enough for the prefetch), and the per-thread bf16
  // buffer stays at 256 KiB, so that two hyperthreads of one core fit in a 2 MiB L2 with their
  // token panels. Whole rows (16384) were no faster on the 2-core dev VM (within its noise); on
  // the H100 host they ran the CPU's share at 20 GB/s, cause not yet known (bench/NOTES.md).
  int64_t skinny_k_chunk = 4096;
};

class AmxGemm {
 public:
  explicit AmxGemm(const AmxGemmConfig& config);
  ~AmxGemm();
  AmxGemm(const AmxGemm&) = delete;
  AmxGemm& operator=(const AmxGemm&) = delete;

  // y[t * ldy + r] = sum_k bf16(x[t * w.cols + k]) * bf16(W[r][k]) for t < n_tokens, r < w.rows.
  // unsupported when config.unit is kAmx and amx_bf16_available() is false; invalid_argument for
  // a bad config, ldy < w.rows or null pointers.
  Status run(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy);

  const AmxGemmConfig& config() const { return config_; }
  const AmxGemmTimes& times() const { return times_; }

 private:
  Status run_skinny(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy);

  struct Buffers;
  AmxGemmConfig config_;
  AmxGemmTimes times_;
  std::unique_ptr<Buffers> buffers_;
};

}  // namespace strata::cpu
