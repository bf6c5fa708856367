// AmxInt8Gemm's work on one group of 32 weight rows (gemm_amx_int8.h), shared by the AMX
// kernel (gemm_amx_int8_tiles.cpp, built with the AMX flags) and the plain C++ one
// (gemm_amx_int8.cpp). No intrinsics here: this header is included on both sides.
#pragma once

#include <cstdint>

namespace strata::cpu::amx_detail {

inline constexpr int64_t kInt8BlockBytes = 512;  // one block's B tile: 8 rows x 16 tokens x 4

struct Int8GroupArgs {
  const uint8_t* w = nullptr;  // the group's first row
  // The rows this thread takes next (null: none), fetched into L2 in address order while this
  // group computes, so that the next group's tile loads find them there.
  const uint8_t* next = nullptr;
  int64_t next_bytes = 0;
  int64_t row_bytes = 0;
  int64_t blocks = 0;       // cols / 32
  int64_t block_bytes = 0;  // 34 (Q8_0: f16 d, 32 int8) or 18 (Q4_0: f16 d, 16 bytes of nibbles)
  bool q4 = false;          // Q4_0: element j the low nibble of byte j, j + 16 the high, less 8
  int rows_valid = 32;      // rows past them are zeros (their sums are dropped)
  // [blocks][8][64] int8: row kk of block b's B tile holds q_x[t][32 b + 4 kk + j] at 4 t + j.
  const int8_t* b = nullptr;
  const float* dx = nullptr;  // [blocks][16]: d_x[t][b]; zero for tokens past n_tokens
  // Scratch, 64-byte aligned: a 2 x 32 x 32 int8 (2 KiB), c 2 x 2 x 16 x 16 int32 (4 KiB), acc
  // 32 x 16 float (2 KiB). Two of a and c: consecutive blocks alternate between them.
  int8_t* a = nullptr;
  int32_t* c = nullptr;
  float* acc = nullptr;
  float* y = nullptr;  // y[t * ldy + r] for r < rows_valid, t < tokens
  int64_t ldy = 0;
  int tokens = 0;
};

// The block's 32 weights of `rows` rows (from row pointer `w` + b * block_bytes, at row_bytes)
// as int8 rows of 32 at `a` (rows up to 32 zero-filled past `rows`), and their scales.
void stage_block_rows(const Int8GroupArgs& g, int64_t block, int rows, int8_t* a, float* dw);

// TDPBSSD on the tiles: ldtilecfg for this thread (C 0-3 16 x 64 B, A 4-5 16 x 32 B, B 6-7
// 8 x 64 B: the layout of both int8 paths, this one and the panels of gemm_amx_int8_panel.h),
// the group, and the release. AMX-INT8 only (amx_int8_available()).
void configure_amx_int8_tiles();
void run_int8_group_amx(const Int8GroupArgs& g);

}  // namespace strata::cpu::amx_detail
