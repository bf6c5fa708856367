// AmxInt8Gemm's path for many tokens (prefill; gemm_amx_int8.h): the loop nest's pieces, shared
// by the AMX kernel (gemm_amx_int8_tiles.cpp, built with the AMX flags) and the plain C++ one
// (gemm_amx_int8.cpp). No intrinsics here: this header is included on both sides.
//
// Roles: A = 16 tokens' quantized x (TokenGroup), B = 16 weight rows in TDPBSSD's quads, staged
// once per panel of weight rows and then reused by every group of 16 tokens, C = 16 tokens x 16
// weight rows of int32 block sums.
//
// Why one 16 x 16 C tile a pass, and not llama.cpp's 2 x 2 tiles: each block's int32 sums must
// be scaled by d_x d_w and added in float32 before the next block (every block of 32 has its
// own scales), 3 vector instructions a row of 16. With one C tile the 16 float sums stay in
// registers (16 zmm); four tiles' 64 would live in L1 and add a load and a store a row, which
// makes the loop bound by L1 stores rather than by the tiles (bench/NOTES.md, "CPU prefill on
// the int8 tiles"). Consecutive blocks alternate between two C / A / B tile sets, so that one
// block's products run while the block before is stored and scaled.
#pragma once

#include <cstdint>

namespace strata::cpu::amx_detail {

inline constexpr int64_t kPanelTileBytes = 512;  // one block's B tile: 8 quads x 16 rows x 4

// A panel of up to 16 weight rows staged for the tiles: block b's B tile at wt + 512 b (row kk
// holds q_w[n][32 b + 4 kk + i] at 4 n + i), their scales at dw + 16 b (zeros past `rows`).
struct PanelTile {
  int8_t* wt = nullptr;
  float* dw = nullptr;
};

// 16 tokens' x, copied once per call into the A tiles' order: block b's tile at xq + 512 b (row
// t: token t's 32 quants), their scales at dx + 16 b + t; zeros past the valid tokens. Why a
// copy rather than the tiles loaded in place from ActivationsQ8: the last group of tokens needs
// zero rows past the prompt anyway, and rows of 4096 values lie 4 KiB apart (one L1 set for a
// tile's 16 rows). The copy was measured no faster than in place (0.42 TOP/s either way on one
// dev-VM core): it buys one layout, not speed.
struct TokenGroup {
  const int8_t* xq = nullptr;
  const float* dx = nullptr;
  int tokens = 16;  // valid tokens: y rows written
};

struct PanelPass {
  PanelTile w;
  TokenGroup x;
  int64_t blocks = 0;
  int32_t* c = nullptr;  // scratch, 64-byte aligned: 2 x 256 int32 (consecutive blocks alternate)
  float* y = nullptr;    // y[t * ldy + n] for t < x.tokens, n < rows
  int64_t ldy = 0;
  int rows = 16;  // valid weight rows of the tile
};

// Stages `rows` (<= 16) rows of Q8_0 (q4 false) or Q4_0 weights from w (at row_bytes) into `out`
// (blocks * 512 bytes and blocks * 16 floats), in plain C++.
void stage_panel_tile(const uint8_t* w, int64_t row_bytes, int64_t blocks, bool q4, int rows,
                      const PanelTile& out);

// The AMX versions: the staging with AVX-512 gathers (full tiles; partial ones through the plain
// one), and one pass. REQUIRES: configure_amx_int8_tiles() (gemm_amx_int8_group.h) on this
// thread.
void stage_panel_tile_amx(const uint8_t* w, int64_t row_bytes, int64_t blocks, bool q4, int rows,
                          const PanelTile& out);
void run_panel_pass_amx(const PanelPass& p);

}  // namespace strata::cpu::amx_detail
