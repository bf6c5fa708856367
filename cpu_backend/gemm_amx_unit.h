// The loop nest of one AmxGemm work unit (gemm_amx.h), written once over a Tiles policy: the AMX
// hardware (gemm_amx_tiles.cpp, the only code built with AMX flags) or plain arrays
// (gemm_amx.cpp, for tests on CPUs without AMX). Internal to cpu_backend.
//
// Layouts (one tile = 1 KiB = 512 bfloat16):
//   A (weights): tile (row_tile, ks) holds rows 16 row_tile.. x columns 32 ks.., [16][32];
//                the tiles of a row tile are adjacent: a + (row_tile * k_steps + ks) * 512.
//   B (tokens):  tile (token_tile, ks) holds columns 32 ks.. x tokens 16 token_tile.. as column
//                pairs, [16 pairs][16 tokens][2]; b + (token_tile * k_steps + ks) * 512.
//   C (sums):    [16 rows][16 tokens] float32; four per 32 x 32 block in the scratch.
// Only <cstdint> here: this header is compiled with AMX flags in one translation unit, and any
// shared inline function instantiated there could be picked by the linker for the others.
#pragma once

#include <cstdint>

namespace strata::cpu::amx_detail {

inline constexpr int64_t kTileElems = 512;   // bf16 per A or B tile
inline constexpr int64_t kTileFloats = 256;  // float32 per C tile

struct UnitArgs {
  const uint16_t* a = nullptr;               // the slab's weight tiles
  const uint16_t* b = nullptr;               // all tokens' tiles
  int64_t k_steps = 0;                       // columns / 32 (padded)
  int64_t k_chunk_steps = 0;                 // steps per pass over the unit
  int64_t row_tile0 = 0, row_tiles = 0;      // the unit's row tiles in the slab (row_tiles even)
  int64_t token_tile0 = 0, token_tiles = 0;  // the unit's token tiles (even)
  int64_t rows_valid = 0, tokens_valid = 0;  // rows / tokens that exist (the rest is padding)
  float* scratch = nullptr;                  // row_tiles * token_tiles C tiles, 64-byte aligned
  float* y = nullptr;                        // y of the unit's first token and first row
  int64_t ldy = 0;
};

// Asks for the 16 lines of the A or B tile at t (1 KiB) in L1. run_unit's tiles come from L2, and
// a tile load that misses L1 waits for its lines: with the unit's tiles pinned in L1 the loop ran
// at 0.43 of the tile peak on one dev-VM core, streamed from L2 at 0.25-0.27; asking for each
// step's four tiles two steps ahead took it to 0.29 (+12-15 % for the whole product; one step
// ahead the same, four less, eight or a T1 hint nothing; bench/NOTES.md, "CPU prefill on the
// int8 tiles"). __builtin_prefetch, so that this header stays free of intrinsics.
inline void prefetch_tile(const uint16_t* t) {
  for (int line = 0; line < 16; ++line) {
    __builtin_prefetch(reinterpret_cast<const char*>(t) + 64 * line, 0, 3);
  }
}
inline constexpr int64_t kTilePrefetchSteps = 2;

// The C tiles of a block of 32 weight rows x 32 tokens, kept at c between K chunks: C0 rows 0-15 /
// tokens 0-15, C1 rows 0-15 / tokens 16-31, C2 rows 16-31 / tokens 0-15, C3 rows 16-31 / tokens
// 16-31. With `two` false the block has one token tile: C0 and C2 only.
template <class Tiles>
void start_sums(Tiles& tiles, const float* c, bool first, bool two) {
  constexpr int64_t kTileBytes = 64;
  if (first) {
    tiles.template zero<0>();
    tiles.template zero<2>();
    if (two) {
      tiles.template zero<1>();
      tiles.template zero<3>();
    }
    return;
  }
  tiles.template load<0>(c, kTileBytes);
  tiles.template load<2>(c + 2 * kTileFloats, kTileBytes);
  if (two) {
    tiles.template load<1>(c + kTileFloats, kTileBytes);
    tiles.template load<3>(c + 3 * kTileFloats, kTileBytes);
  }
}

template <class Tiles>
void store_sums(Tiles& tiles, float* c, bool two) {
  constexpr int64_t kTileBytes = 64;
  tiles.template store<0>(c, kTileBytes);
  tiles.template store<2>(c + 2 * kTileFloats, kTileBytes);
  if (two) {
    tiles.template store<1>(c + kTileFloats, kTileBytes);
    tiles.template store<3>(c + 3 * kTileFloats, kTileBytes);
  }
}

// The stored block out into y (at the block's first row and token), transposed; rows_valid and
// tokens_valid of the block exist, the rest is padding.
template <class Tiles>
void write_sums(Tiles& tiles, const float* c, float* y, int64_t ldy, int64_t rows_valid,
                int64_t tokens_valid, bool two) {
  for (int64_t i = 0; i < 4; i += two ? 1 : 2) {
    const int64_t r0 = (i / 2) * 16, t0 = (i % 2) * 16;
    const int64_t rows = rows_valid - r0, tokens = tokens_valid - t0;
    if (rows <= 0 || tokens <= 0) continue;
    tiles.write_transposed(c + i * kTileFloats, y + t0 * ldy + r0, ldy, rows < 16 ? rows : 16,
                           tokens < 16 ? tokens : 16);
  }
}

// Tiles supplies: zero<C>(), load<T>(ptr, stride_bytes), store<T>(ptr, stride_bytes),
// dot<C, A, B>() (C += A * B as TDPBF16PS), and write_transposed(c, y, ldy, rows, tokens)
// (y[t * ldy + r] = c[r * 16 + t] for r < rows, t < tokens).
template <class Tiles>
void run_unit(Tiles& tiles, const UnitArgs& u) {
  constexpr int64_t kTileBytes = 64;  // stride of a tile row in memory
  for (int64_t ks0 = 0; ks0 < u.k_steps; ks0 += u.k_chunk_steps) {
    const int64_t ks1 = ks0 + u.k_chunk_steps < u.k_steps ? ks0 + u.k_chunk_steps : u.k_steps;
    const bool first = ks0 == 0, last = ks1 == u.k_steps;
    for (int64_t tp = 0; tp < u.token_tiles; tp += 2) {
      const uint16_t* b_chunk = u.b + ((u.token_tile0 + tp) * u.k_steps + ks0) * kTileElems;
      for (int64_t rp = 0; rp < u.row_tiles; rp += 2) {
        float* c = u.scratch + ((rp / 2) * (u.token_tiles / 2) + tp / 2) * 4 * kTileFloats;
        start_sums(tiles, c, first, /*two=*/true);
        const uint16_t* a0 = u.a + ((u.row_tile0 + rp) * u.k_steps + ks0) * kTileElems;
        const uint16_t* a1 = a0 + u.k_steps * kTileElems;
        const uint16_t* b0 = b_chunk;
        const uint16_t* b1 = b0 + u.k_steps * kTileElems;
        for (int64_t ks = ks0; ks < ks1; ++ks) {
          if (ks + kTilePrefetchSteps < ks1) {
            constexpr int64_t kAhead = kTilePrefetchSteps * kTileElems;
            prefetch_tile(a0 + kAhead);
            prefetch_tile(a1 + kAhead);
            prefetch_tile(b0 + kAhead);
            prefetch_tile(b1 + kAhead);
          }
          tiles.template load<4>(a0, kTileBytes);
          tiles.template load<6>(b0, kTileBytes);
          tiles.template dot<0, 4, 6>();
          tiles.template load<7>(b1, kTileBytes);
          tiles.template dot<1, 4, 7>();
          tiles.template load<5>(a1, kTileBytes);
          tiles.template dot<2, 5, 6>();
          tiles.template dot<3, 5, 7>();
          a0 += kTileElems;
          a1 += kTileElems;
          b0 += kTileElems;
          b1 += kTileElems;
        }
        store_sums(tiles, c, /*two=*/true);
        if (last) {
          write_sums(tiles, c, u.y + tp * 16 * u.ldy + rp * 16, u.ldy, u.rows_valid - rp * 16,
                     u.tokens_valid - tp * 16, /*two=*/true);
        }
      }
    }
  }
}

// One chunk of AmxGemm's few-token path: a block of 32 weight rows (the chunk's columns freshly
// dequantized by the caller into plain bf16 rows, which the tile loads read with a row stride)
// times one or two token tiles, over
// `steps` k-steps from ks0. The four C tiles live in `c` between chunks (loaded unless first,
// stored after); after the last chunk they go out transposed into y.
struct SkinnyChunkArgs {
  const uint16_t* a = nullptr;  // [32 rows][lda] bf16: row r, step s at a + r * lda + s * 32
  int64_t lda = 0;              // elements per row of a (>= steps * 32)
  const uint16_t* b = nullptr;  // all tokens' tiles, laid out as UnitArgs::b
  int64_t k_steps = 0;          // columns / 32 (padded): B's stride between token tiles
  int64_t ks0 = 0, steps = 0;   // this chunk's k-steps
  int64_t token_tiles = 1;      // 1 or 2
  bool first = false, last = false;
  int64_t rows_valid = 0, tokens_valid = 0;  // rows of the block / tokens that exist
  float* c = nullptr;                        // four C tiles (C0, C1, C2, C3 as run_unit's)
  float* y = nullptr;                        // y of the block's first row, token 0
  int64_t ldy = 0;
};

template <class Tiles>
void run_skinny_chunk(Tiles& tiles, const SkinnyChunkArgs& u) {
  constexpr int64_t kTileBytes = 64;
  const bool two = u.token_tiles == 2;
  start_sums(tiles, u.c, u.first, two);
  const uint16_t* a0 = u.a;
  const uint16_t* a1 = u.a + 16 * u.lda;
  const int64_t a_stride = u.lda * 2;
  const uint16_t* b0 = u.b + u.ks0 * kTileElems;
  const uint16_t* b1 = b0 + u.k_steps * kTileElems;
  for (int64_t s = 0; s < u.steps; ++s) {
    tiles.template load<4>(a0 + s * 32, a_stride);
    tiles.template load<5>(a1 + s * 32, a_stride);
    tiles.template load<6>(b0 + s * kTileElems, kTileBytes);
    tiles.template dot<0, 4, 6>();
    tiles.template dot<2, 5, 6>();
    if (two) {
      tiles.template load<7>(b1 + s * kTileElems, kTileBytes);
      tiles.template dot<1, 4, 7>();
      tiles.template dot<3, 5, 7>();
    }
  }
  store_sums(tiles, u.c, two);
  if (u.last) write_sums(tiles, u.c, u.y, u.ldy, u.rows_valid, u.tokens_valid, two);
}

// gemm_amx_tiles.cpp (AMX flags; call only when amx_bf16_available()).
void configure_amx_tiles();  // ldtilecfg: tiles 0..7 of 16 rows x 64 bytes, for this thread
void release_amx_tiles();
void run_unit_amx(const UnitArgs& u);
void run_skinny_chunk_amx(const SkinnyChunkArgs& u);
// `iterations` x 6 TDPBF16PS on register-resident tiles (six accumulators, no memory traffic):
// the tile unit's own rate, for the roofline. Configures and releases the tiles itself.
void run_peak_loop_amx(int64_t iterations);
// The same with TDPBSSD (int8) on A tiles of 16 rows x k_bytes (32 or 64) and B tiles of
// k_bytes / 4 rows: the int8 unit's rate at a Q8_0 block's K (32) and at the full tile (64).
void run_peak_loop_amx_int8(int64_t iterations, int64_t k_bytes);

// The stored types dequantize_row_bf16_avx512 reads (a local enum: this header cannot include
// dtype.h, see above). Block layouts as offload/core/quant_blocks.h.
enum class TileSource : int { kF32, kF16, kBF16, kQ8_0, kQ4_0 };

// One weight row (cols values of `type`, cols a multiple of 32) into bf16 runs of 32: columns
// 32 ks .. 32 ks + 31 go to dst + ks * run_stride for ks < cols / 32 (kTileElems: rows of A
// tiles; 32: a plain row, as CpuMatmul's oneDNN path takes it). Each value is
// dequantize_row's float32, rounded to nearest even as to_bf16 (emulated_tiles.h) does; a
// float32 input below the smallest normal becomes zero (VCVTNE2PS2BF16), which no Q8_0 / Q4_0 /
// F16 / BF16 value is. AVX-512 BF16 (avx512_bf16_available()), not AMX. Called through
// dequantize_row_bf16 (dequantize_bf16.h), which falls back to dequantize_row elsewhere.
void dequantize_row_bf16_avx512(TileSource type, const void* src, int64_t cols, uint16_t* dst,
                                int64_t run_stride);

// x [tokens][cols] (row stride ldx floats) into B tiles for token tiles [tt0, tt1): padded
// tokens and columns are zeros. AVX-512 BF16.
void pack_tokens_avx512(const float* x, int64_t ldx, int64_t tokens, int64_t cols, int64_t k_steps,
                        int64_t tt0, int64_t tt1, uint16_t* b);

}  // namespace strata::cpu::amx_detail
