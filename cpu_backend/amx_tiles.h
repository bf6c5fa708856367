// The AMX tile registers as the Tiles policy of the AMX loop nests (gemm_amx_unit.h,
// attention_amx_unit.h), with the AVX-512 helpers around them. Include ONLY from translation units
// built with the AMX / AVX-512 flags (cpu_backend/CMakeLists.txt: the *_tiles.cpp files), and
// nothing else from there: everything here has internal linkage, so no AVX-512 copy of an inline
// function can be picked by the linker for code that runs on CPUs without it.
#pragma once

#include <immintrin.h>

#include <cstdint>

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

// ldtilecfg through an asm whose input operand is the config itself: GCC 12's _tile_loadconfig
// builtin does not tell the optimizer that it reads memory, so the stores of rows and colsb were
// dropped as dead (seen 2026-12-07: ldtilecfg of a half-initialized stack slot raised SIGSEGV on
// an AMX VM; it had worked on the GPU machine's host by the luck of what was on the stack).
inline void load_tile_config(const TileConfig& config) {
  __asm__ volatile("ldtilecfg %0" : : "m"(config));
}

// The tile instructions take the register as an immediate, so a template's tile number is
// turned into one by this switch (folded at compile time).
#define STRATA_TILE_SWITCH(T, OP)  \
  if constexpr ((T) == 0) {        \
    OP(0);                         \
  } else if constexpr ((T) == 1) { \
    OP(1);                         \
  } else if constexpr ((T) == 2) { \
    OP(2);                         \
  } else if constexpr ((T) == 3) { \
    OP(3);                         \
  } else if constexpr ((T) == 4) { \
    OP(4);                         \
  } else if constexpr ((T) == 5) { \
    OP(5);                         \
  } else if constexpr ((T) == 6) { \
    OP(6);                         \
  } else {                         \
    static_assert((T) == 7);       \
    OP(7);                         \
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

// The f16 scales of a Q8_0 / Q4_0 block at blk + r * row_bytes for 16 rows, offsets lane r =
// r * row_bytes (a 32-bit gather: the scale and the block's first two bytes, all inside the row).
inline __m512 scales16(const uint8_t* blk, __m512i offsets) {
  const __m512i words = _mm512_i32gather_epi32(offsets, blk, 1);
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words));
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
}  // namespace strata::cpu::amx_detail
