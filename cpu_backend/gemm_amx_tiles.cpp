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
  load_tile_config(config);
}

void release_amx_tiles() { _tile_release(); }

void run_unit_amx(const UnitArgs& u) {
  AmxTiles tiles;
  run_unit(tiles, u);
}

void run_skinny_chunk_amx(const SkinnyChunkArgs& u) {
  AmxTiles tiles;
  run_skinny_chunk(tiles, u);
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
  load_tile_config(config);
  peak_loop<true>(iterations);
}

namespace {

// 16 floats from the low (k = 0) or high (k = 1) nibbles of 16 bytes, less 8, as integers.
inline __m512 q4_half(__m128i q, int high) {
  const __m128i n = _mm_and_si128(high != 0 ? _mm_srli_epi16(q, 4) : q, _mm_set1_epi8(0x0f));
  return _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(n), _mm512_set1_epi32(8)));
}

inline float f16_scale(const uint8_t* p) {
  uint16_t h;
  __builtin_memcpy(&h, p, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

// 32 floats (lo: columns 0-15, hi: 16-31) as one row of an A tile.
inline void store_run(uint16_t* dst, __m512 lo, __m512 hi) {
  _mm512_storeu_si512(dst, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

}  // namespace

// Software prefetch distance along the weights, as the GEMVs' (avx512_blocks.h): rows are
// dequantized one after another and lie back to back, so the stream runs on into the next row.
// Without it the few-token path read ~0.3 of C on two cores, its time in the loads' latency.
constexpr int64_t kDequantPrefetchBytes = 2048;

inline void prefetch_ahead(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p + kDequantPrefetchBytes), _MM_HINT_T0);
}

void dequantize_row_bf16_avx512(TileSource type, const void* src, int64_t cols, uint16_t* dst,
                                int64_t run_stride) {
  const auto* p = static_cast<const uint8_t*>(src);
  const int64_t runs = cols / 32;
  switch (type) {
    case TileSource::kF32:
      for (int64_t ks = 0; ks < runs; ++ks, p += 128) {
        prefetch_ahead(p);
        prefetch_ahead(p + 64);
        store_run(dst + ks * run_stride, _mm512_loadu_ps(p), _mm512_loadu_ps(p + 64));
      }
      break;
    case TileSource::kF16:
      for (int64_t ks = 0; ks < runs; ++ks, p += 64) {
        prefetch_ahead(p);
        const __m512 lo = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        const __m512 hi =
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
        store_run(dst + ks * run_stride, lo, hi);
      }
      break;
    case TileSource::kBF16:
      for (int64_t ks = 0; ks < runs; ++ks, p += 64) {
        prefetch_ahead(p);
        _mm512_storeu_si512(dst + ks * run_stride, _mm512_loadu_si512(p));
      }
      break;
    case TileSource::kQ8_0:  // {f16 d; int8 qs[32]}: qs[j] * d
      for (int64_t ks = 0; ks < runs; ++ks, p += 34) {
        prefetch_ahead(p);
        const __m512 d = _mm512_set1_ps(f16_scale(p));
        const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
        const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 18));
        store_run(dst + ks * run_stride,
                  _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), d),
                  _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), d));
      }
      break;
    case TileSource::kQ4_0:  // {f16 d; u8 qs[16]}: element j low nibble of qs[j], j + 16 high
      for (int64_t ks = 0; ks < runs; ++ks, p += 18) {
        prefetch_ahead(p);
        const __m512 d = _mm512_set1_ps(f16_scale(p));
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
        store_run(dst + ks * run_stride, _mm512_mul_ps(q4_half(q, 0), d),
                  _mm512_mul_ps(q4_half(q, 1), d));
      }
      break;
  }
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
