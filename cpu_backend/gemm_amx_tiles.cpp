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

#include "cpu_backend/gemm_amx_unit.h"

namespace strata::cpu::amx_detail {
namespace {

// ldtilecfg's 64-byte operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// The tile instructions take the register as an immediate, so a template's tile number is
// turned into one by this switch (folded at compile time).
#define STRATA_TILE_SWITCH(T, OP) \
  if constexpr ((T) == 0) {       \
    OP(0);                        \
  } else if constexpr ((T) == 1) { \
    OP(1);                        \
  } else if constexpr ((T) == 2) { \
    OP(2);                        \
  } else if constexpr ((T) == 3) { \
    OP(3);                        \
  } else if constexpr ((T) == 4) { \
    OP(4);                        \
  } else if constexpr ((T) == 5) { \
    OP(5);                        \
  } else if constexpr ((T) == 6) { \
    OP(6);                        \
  } else {                        \
    static_assert((T) == 7);      \
    OP(7);                        \
  }

// In-register transpose of 16 rows of 16 32-bit lanes (out[j] lane i = in[i] lane j): pairs of
// 32-bit, then 64-bit interleaves inside 128-bit lanes, then two 128-bit lane shuffles.
inline void transpose_16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // v[4g + c], 128-bit lane L: column 4L + c of rows 4g..4g+3.
  __m512i v[16];
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    v[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    v[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    v[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i p0 = _mm512_shuffle_i32x4(v[c], v[4 + c], 0x88);
    const __m512i p1 = _mm512_shuffle_i32x4(v[c], v[4 + c], 0xdd);
    const __m512i q0 = _mm512_shuffle_i32x4(v[8 + c], v[12 + c], 0x88);
    const __m512i q1 = _mm512_shuffle_i32x4(v[8 + c], v[12 + c], 0xdd);
    r[c] = _mm512_shuffle_i32x4(p0, q0, 0x88);       // lane L = 0
    r[4 + c] = _mm512_shuffle_i32x4(p1, q1, 0x88);   // L = 1
    r[8 + c] = _mm512_shuffle_i32x4(p0, q0, 0xdd);   // L = 2
    r[12 + c] = _mm512_shuffle_i32x4(p1, q1, 0xdd);  // L = 3
  }
}

inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

struct AmxTiles {
#define STRATA_TILE_ZERO(N) _tile_zero(N)
  template <int T>
  void zero() {
    STRATA_TILE_SWITCH(T, STRATA_TILE_ZERO)
  }
#define STRATA_TILE_LOAD(N) _tile_loadd(N, p, stride)
  template <int T>
  void load(const void* p, int64_t stride) {
    STRATA_TILE_SWITCH(T, STRATA_TILE_LOAD)
  }
#define STRATA_TILE_STORE(N) _tile_stored(N, p, stride)
  template <int T>
  void store(void* p, int64_t stride) {
    STRATA_TILE_SWITCH(T, STRATA_TILE_STORE)
  }
  template <int C, int A, int B>
  void dot() {
    static_assert(C < 4 && (A == 4 || A == 5) && (B == 6 || B == 7));
    if constexpr (C == 0) {
      _tile_dpbf16ps(0, 4, 6);
    } else if constexpr (C == 1) {
      _tile_dpbf16ps(1, 4, 7);
    } else if constexpr (C == 2) {
      _tile_dpbf16ps(2, 5, 6);
    } else {
      _tile_dpbf16ps(3, 5, 7);
    }
  }

  void write_transposed(const float* c, float* y, int64_t ldy, int64_t rows, int64_t tokens) {
    __m512i r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(c + i * 16);
    transpose_16x16(r);
    const __mmask16 mask = first_lanes(rows);
    for (int64_t t = 0; t < tokens; ++t) {
      _mm512_mask_storeu_ps(y + t * ldy, mask, _mm512_castsi512_ps(r[t]));
    }
  }
};

}  // namespace

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

void run_peak_loop_amx(int64_t iterations) {
  configure_amx_tiles();
  // +-1 in bf16, not zeros: the unit's clock may depend on how many bits toggle.
  alignas(64) uint16_t ones[kTileElems];
  for (int64_t i = 0; i < kTileElems; ++i) ones[i] = (i & 1) != 0 ? 0xbf80 : 0x3f80;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
  for (int64_t i = 0; i < iterations; ++i) {
    _tile_dpbf16ps(0, 6, 7);
    _tile_dpbf16ps(1, 6, 7);
    _tile_dpbf16ps(2, 6, 7);
    _tile_dpbf16ps(3, 6, 7);
    _tile_dpbf16ps(4, 6, 7);
    _tile_dpbf16ps(5, 6, 7);
  }
  alignas(64) float sink[kTileFloats];
  _tile_stored(0, sink, 64);  // keeps the loop's results observable
  release_amx_tiles();
}

void pack_tokens_avx512(const float* x, int64_t ldx, int64_t tokens, int64_t cols,
                        int64_t k_steps, int64_t tt0, int64_t tt1, uint16_t* b) {
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
