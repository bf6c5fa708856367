// The AMX half of AmxInt8Gemm (gemm_amx_int8.h): one group of 32 weight rows on the int8 tiles.
// Built with the AMX / AVX-512 flags (cpu_backend/CMakeLists.txt) and run only after
// amx_int8_available(); besides the entry points everything here has internal linkage.
#include <immintrin.h>

// GCC 12's AVX-512 headers build some intrinsics on a self-initialised "undefined" vector and
// warn about it at every use; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu_backend/amx_tiles.h"
#include "cpu_backend/gemm_amx_int8_group.h"

namespace strata::cpu::amx_detail {
namespace {

// Tiles: C 0 and 1 (rows 0-15, 16-31) for even blocks, 2 and 3 for odd ones; A 4 and 5; B 6.
// A row of an A tile: one block's 32 quants.
constexpr int64_t kARowBytes = 32;

// Why the next group is prefetched in address order rather than each row a little ahead: the
// group's 32 rows are walked side by side, 32 streams at once, and a core keeps only ~16 line
// misses in flight from L1; per-row prefetches ran a core at ~7 GB/s (2-core dev VM). A linear
// sweep of the next group's bytes into L2 is one stream, which the L2 streamer follows too.
constexpr int64_t kLine = 64;

// Q4_0 blocks of 16 rows (at row_bytes) into int8 rows of 32 at a: nibbles less 8.
inline void unpack_q4_rows(const uint8_t* blk, int64_t row_bytes, int8_t* a) {
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m256i eight = _mm256_set1_epi8(8);
  for (int r = 0; r < 16; ++r) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + r * row_bytes + 2));
    const __m128i lo = _mm_and_si128(q, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
    const __m256i v = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), eight);
    _mm256_store_si256(reinterpret_cast<__m256i*>(a + r * kARowBytes), v);
  }
}

// acc[r] += float(c[r]) * (dw lane r * dx) for 16 rows.
inline void accumulate16(const int32_t* c, __m512 dw, __m512 dx, __m512* acc) {
  for (int r = 0; r < 16; ++r) {
    const __m512 s = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_set1_epi32(r), dw), dx);
    const __m512 v = _mm512_cvtepi32_ps(_mm512_load_si512(c + r * 16));
    acc[r] = _mm512_fmadd_ps(v, s, acc[r]);
  }
}

// One block's products: A tiles 4 (rows 0-15) and 5 (16-31) times B tile 6 into C tiles C0 and
// C1, then their stores to c (rows 0-15) and c + 256. Even blocks use C tiles 0 and 1, odd ones 2
// and 3, so that a block's products need not wait for the stores of the block before it.
#define STRATA_INT8_PRODUCTS(C0, C1) \
  do {                               \
    _tile_loadd(4, a0, a_stride);    \
    _tile_loadd(5, a1, a_stride);    \
    _tile_loadd(6, bt, 64);          \
    _tile_zero(C0);                  \
    _tile_zero(C1);                  \
    _tile_dpbssd(C0, 4, 6);          \
    _tile_dpbssd(C1, 5, 6);          \
  } while (0)
#define STRATA_INT8_STORE(C0, C1)  \
  do {                             \
    _tile_stored(C0, c, 64);       \
    _tile_stored(C1, c + 256, 64); \
  } while (0)

// A block whose int32 sums are stored and whose float work is still to do.
struct Pending {
  const int32_t* c;
  __m512 dw0, dw1, dx;
};

}  // namespace

void configure_amx_int8_tiles() {
  TileConfig config;
  for (int i = 0; i < 4; ++i) {
    config.rows[i] = 16;
    config.colsb[i] = 64;
  }
  config.rows[4] = config.rows[5] = 16;
  config.colsb[4] = config.colsb[5] = kARowBytes;
  config.rows[6] = config.rows[7] = 8;  // the streaming path uses B tile 6, the panels 6 and 7
  config.colsb[6] = config.colsb[7] = 64;
  load_tile_config(config);
}

void run_int8_group_amx(const Int8GroupArgs& g) {
  const int64_t rb = g.row_bytes;
  // Q8_0's quants are the A tiles where they lie; Q4_0 and a last, short group go through g.a.
  const bool in_place = !g.q4 && g.rows_valid == 32;
  const bool full = g.rows_valid == 32;
  const __m512i offsets =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(rb)));
  // Lines of the next group to ask for per block, so that the sweep ends with this group.
  const int64_t next_lines = (g.next_bytes + kLine - 1) / kLine;
  const int64_t lines_per_block = g.next != nullptr ? (next_lines + g.blocks - 1) / g.blocks : 0;
  int64_t next_line = 0;
  __m512 acc[32];
  for (__m512& v : acc) v = _mm512_setzero_ps();
  alignas(64) float dw[32];
  Pending pending{};
  bool have_pending = false;

  // Block b's products are queued before block b - 1's float work, which the out-of-order core
  // then overlaps with them (the tile unit and the vector units are separate).
  for (int64_t b = 0; b < g.blocks; ++b) {
    const uint8_t* blk = g.w + b * g.block_bytes;
    for (int64_t i = 0; i < lines_per_block && next_line < next_lines; ++i, ++next_line) {
      _mm_prefetch(reinterpret_cast<const char*>(g.next + next_line * kLine), _MM_HINT_T1);
    }
    int8_t* staged = g.a + (b & 1) * 32 * kARowBytes;  // two buffers, as the C tiles
    const void* a0 = staged;
    const void* a1 = staged + 16 * kARowBytes;
    int64_t a_stride = kARowBytes;
    __m512 dw0, dw1;
    if (full) {
      dw0 = scales16(blk, offsets);
      dw1 = scales16(blk + 16 * rb, offsets);
      if (in_place) {
        a0 = blk + 2;
        a1 = blk + 16 * rb + 2;
        a_stride = rb;
      } else {
        unpack_q4_rows(blk, rb, staged);
        unpack_q4_rows(blk + 16 * rb, rb, staged + 16 * kARowBytes);
      }
    } else {
      stage_block_rows(g, b, g.rows_valid, staged, dw);
      dw0 = _mm512_load_ps(dw);
      dw1 = _mm512_load_ps(dw + 16);
    }
    const int8_t* bt = g.b + b * kInt8BlockBytes;
    int32_t* c = g.c + (b & 1) * 512;
    const bool even = (b & 1) == 0;
    if (even) {
      STRATA_INT8_PRODUCTS(0, 1);
    } else {
      STRATA_INT8_PRODUCTS(2, 3);
    }
    // The float work of the block before, between this block's products and its stores: loads
    // after a tile store in program order waited for it (and so for its products).
    if (have_pending) {
      accumulate16(pending.c, pending.dw0, pending.dx, acc);
      accumulate16(pending.c + 256, pending.dw1, pending.dx, acc + 16);
    }
    if (even) {
      STRATA_INT8_STORE(0, 1);
    } else {
      STRATA_INT8_STORE(2, 3);
    }
    pending = Pending{c, dw0, dw1, _mm512_load_ps(g.dx + b * 16)};
    have_pending = true;
  }
  if (have_pending) {
    accumulate16(pending.c, pending.dw0, pending.dx, acc);
    accumulate16(pending.c + 256, pending.dw1, pending.dx, acc + 16);
  }

  for (int r = 0; r < 32; ++r) _mm512_store_ps(g.acc + r * 16, acc[r]);
  AmxTiles out;
  out.write_transposed(g.acc, g.y, g.ldy, g.rows_valid < 16 ? g.rows_valid : 16, g.tokens);
  if (g.rows_valid > 16) {
    out.write_transposed(g.acc + 256, g.y + 16, g.ldy, g.rows_valid - 16, g.tokens);
  }
}

#undef STRATA_INT8_PRODUCTS
#undef STRATA_INT8_STORE

}  // namespace strata::cpu::amx_detail
