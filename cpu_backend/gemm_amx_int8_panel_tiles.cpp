// The AMX half of AmxInt8Gemm's many-token path (gemm_amx_int8_panel.h): staging a tile of
// weight rows into TDPBSSD's quads with AVX-512 gathers, and one pass of 16 tokens x 16 weight
// rows over every block. Built with the AMX / AVX-512 flags (cpu_backend/CMakeLists.txt) and run
// only after amx_int8_available(); besides the entry points everything here has internal linkage.
#include <immintrin.h>

#include <utility>

// GCC 12's AVX-512 headers build some intrinsics on a self-initialised "undefined" vector and
// warn about it at every use; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu_backend/amx_tiles.h"
#include "cpu_backend/gemm_amx_int8_panel.h"

namespace strata::cpu::amx_detail {
namespace {

// Tiles: C 0 / 1, A 4 / 5, B 6 / 7, the first of each for even blocks. A: 16 tokens x one
// block's 32 quants; B: the block's 8 quads x 16 weight rows.
constexpr int64_t kARowBytes = 32;

// acc[t] += float(c[t]) * (dw * dx[t]) for the 16 tokens of one block. Constant indices (a fold
// over t rather than a loop), so that the compiler keeps acc in registers: with a loop it kept
// the array on the stack, a load and a store a row each block.
template <int... T>
__attribute__((always_inline)) inline void scale_add_rows(std::integer_sequence<int, T...>,
                                                          const int32_t* c, __m512 dw,
                                                          const float* dx, __m512 (&acc)[16]) {
  ((acc[T] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + T * 16)),
                             _mm512_mul_ps(dw, _mm512_set1_ps(dx[T])), acc[T])),
   ...);
}
__attribute__((always_inline)) inline void scale_add(const int32_t* c, __m512 dw, const float* dx,
                                                     __m512 (&acc)[16]) {
  scale_add_rows(std::make_integer_sequence<int, 16>{}, c, dw, dx, acc);
}

template <int... T>
__attribute__((always_inline)) inline void zero_rows(std::integer_sequence<int, T...>,
                                                     __m512 (&acc)[16]) {
  ((acc[T] = _mm512_setzero_ps()), ...);
}

// y[t * ldy + n] = acc[t] lane n for t < tokens, n in mask (constant indices, as above).
template <int... T>
__attribute__((always_inline)) inline void store_rows(std::integer_sequence<int, T...>,
                                                      const __m512 (&acc)[16], float* y,
                                                      int64_t ldy, int tokens, __mmask16 mask) {
  ((T < tokens ? _mm512_mask_storeu_ps(y + T * ldy, mask, acc[T]) : void()), ...);
}

#define STRATA_PANEL_PRODUCTS(C, A, B)                        \
  do {                                                        \
    _tile_loadd(A, p.x.xq + b * kPanelTileBytes, kARowBytes); \
    _tile_loadd(B, p.w.wt + b * kPanelTileBytes, 64);         \
    _tile_zero(C);                                            \
    _tile_dpbssd(C, A, B);                                    \
  } while (0)

}  // namespace

void stage_panel_tile_amx(const uint8_t* w, int64_t row_bytes, int64_t blocks, bool q4, int rows,
                          const PanelTile& out) {
  if (rows < 16) {
    stage_panel_tile(w, row_bytes, blocks, q4, rows, out);
    return;
  }
  const __m512i offsets =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(row_bytes)));
  const int64_t block_bytes = q4 ? 18 : 34;
  const __m512i low = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = w + b * block_bytes;
    int8_t* tile = out.wt + b * kPanelTileBytes;
    _mm512_store_ps(out.dw + b * 16, scales16(blk, offsets));
    if (q4) {
      // Bytes 4 kk .. 4 kk + 3 of the nibbles hold elements 4 kk .. (low) and 16 + 4 kk .. (high).
      for (int kk = 0; kk < 4; ++kk) {
        const __m512i g = _mm512_i32gather_epi32(offsets, blk + 2 + 4 * kk, 1);
        const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(g, low), eight);
        const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(g, 4), low), eight);
        _mm512_store_si512(tile + kk * 64, lo);
        _mm512_store_si512(tile + (kk + 4) * 64, hi);
      }
    } else {
      for (int kk = 0; kk < 8; ++kk) {
        _mm512_store_si512(tile + kk * 64, _mm512_i32gather_epi32(offsets, blk + 2 + 4 * kk, 1));
      }
    }
  }
}

void run_panel_pass_amx(const PanelPass& p) {
  __m512 acc[16];
  zero_rows(std::make_integer_sequence<int, 16>{}, acc);
  // Block b's product is queued before block b - 1's float work, which the out-of-order core
  // overlaps with it (the tile unit and the vector units are separate); the store comes after,
  // since loads that follow a tile store in program order wait for it.
  for (int64_t b = 0; b < p.blocks; ++b) {
    int32_t* c = p.c + (b & 1) * 256;
    if ((b & 1) == 0) {
      STRATA_PANEL_PRODUCTS(0, 4, 6);
    } else {
      STRATA_PANEL_PRODUCTS(1, 5, 7);
    }
    if (b > 0) {
      scale_add(p.c + ((b - 1) & 1) * 256, _mm512_load_ps(p.w.dw + (b - 1) * 16),
                p.x.dx + (b - 1) * 16, acc);
    }
    if ((b & 1) == 0) {
      _tile_stored(0, c, 64);
    } else {
      _tile_stored(1, c, 64);
    }
  }
  const int64_t last = p.blocks - 1;
  scale_add(p.c + (last & 1) * 256, _mm512_load_ps(p.w.dw + last * 16), p.x.dx + last * 16, acc);
  store_rows(std::make_integer_sequence<int, 16>{}, acc, p.y, p.ldy, p.x.tokens,
             first_lanes(p.rows));
}

#undef STRATA_PANEL_PRODUCTS

}  // namespace strata::cpu::amx_detail
