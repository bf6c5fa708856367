// The AMX half of AmxGemm (gemm_amx.h): tile configuration, the unit loop nest of
// gemm_amx_unit.h on the tile registers, and the AVX-512 packing / transposing around it. This
// file alone is built with AMX and AVX-512 flags (cpu_backend/CMakeLists.txt) and runs only after
// amx_bf16_available(); it includes nothing but intrinsics and gemm_amx_unit.h, and everything
// here besides the entry points has internal linkage, so no AVX-512 copy of a shared inline
// function can reach the rest of the build.
#include <immintrin.h>

// GCC 12's AVX-512 headers build some intrinsics on a self-initialised "undefined" vector and
// warn about it at every use; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu_backend/amx_tiles.h"
#include "cpu_backend/gemm_amx_unit.h"

namespace strata::cpu::amx_detail {

void configure_amx_tiles() {
  TileConfig config;
  for (int i = 0; i < 8; ++i) {
    config.rows[i] = 16;
    config.colsb[i] = 64;
  }
  _tile_loadconfig(&config);
}

void release_amx_tiles() { _tile_release(); }

void run_unit_amx(const UnitArgs& u) {
  AmxTiles tiles;
  run_unit(tiles, u);
}

namespace {

// `iterations` x 6 dot products on register-resident tiles (C 0..5, A 6, B 7) of +-1 inputs
// (not zeros: the unit's clock may depend on how many bits toggle), tiles as configured.
template <bool kInt8>
void peak_loop(int64_t iterations) {
  alignas(64) uint16_t ones[kTileElems];
  for (int64_t i = 0; i < kTileElems; ++i) {
    ones[i] = kInt8 ? 0xff01 : ((i & 1) != 0 ? 0xbf80 : 0x3f80);  // int8 1, -1 / bf16 +-1
  }
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
#define STRATA_PEAK_DOT(C)   \
  if constexpr (kInt8) {     \
    _tile_dpbssd(C, 6, 7);   \
  } else {                   \
    _tile_dpbf16ps(C, 6, 7); \
  }
  for (int64_t i = 0; i < iterations; ++i) {
    STRATA_PEAK_DOT(0)
    STRATA_PEAK_DOT(1)
    STRATA_PEAK_DOT(2)
    STRATA_PEAK_DOT(3)
    STRATA_PEAK_DOT(4)
    STRATA_PEAK_DOT(5)
  }
#undef STRATA_PEAK_DOT
  alignas(64) float sink[kTileFloats];
  _tile_stored(0, sink, 64);  // keeps the loop's results observable
  release_amx_tiles();
}

}  // namespace

void run_peak_loop_amx(int64_t iterations) {
  configure_amx_tiles();
  peak_loop<false>(iterations);
}

void run_peak_loop_amx_int8(int64_t iterations, int64_t k_bytes) {
  TileConfig config;
  for (int i = 0; i < 6; ++i) {
    config.rows[i] = 16;
    config.colsb[i] = 64;
  }
  config.rows[6] = 16;  // A: 16 rows of k_bytes int8
  config.colsb[6] = static_cast<uint16_t>(k_bytes);
  config.rows[7] = static_cast<uint8_t>(k_bytes / 4);  // B: k_bytes / 4 rows of 16 quads
  config.colsb[7] = 64;
  _tile_loadconfig(&config);
  peak_loop<true>(iterations);
}

void pack_tokens_avx512(const float* x, int64_t ldx, int64_t tokens, int64_t cols, int64_t k_steps,
                        int64_t tt0, int64_t tt1, uint16_t* b) {
  for (int64_t tt = tt0; tt < tt1; ++tt) {
    for (int64_t ks = 0; ks < k_steps; ++ks) {
      const int64_t k0 = ks * 32;
      const __mmask16 lo = first_lanes(cols - k0 > 0 ? cols - k0 : 0);
      const __mmask16 hi = first_lanes(cols - k0 - 16 > 0 ? cols - k0 - 16 : 0);
      // Row t of r: token tt * 16 + t's 32 columns as 16 bf16 pairs.
      __m512i r[16];
      for (int t = 0; t < 16; ++t) {
        const int64_t token = tt * 16 + t;
        if (token >= tokens) {
          r[t] = _mm512_setzero_si512();
          continue;
        }
        const float* row = x + token * ldx + k0;
        const __m512 a = _mm512_maskz_loadu_ps(lo, row);
        const __m512 c = _mm512_maskz_loadu_ps(hi, row + 16);
        r[t] = (__m512i)_mm512_cvtne2ps_pbh(c, a);
      }
      transpose_16x16(r);
      uint16_t* tile = b + (tt * k_steps + ks) * kTileElems;
      for (int p = 0; p < 16; ++p) _mm512_store_si512(tile + p * 32, r[p]);
    }
  }
}

}  // namespace strata::cpu::amx_detail
