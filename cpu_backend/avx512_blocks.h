// AVX-512 pieces shared by the float GEMV kernels (gemv_avx512.cpp) and the integer ones
// (gemv_q8_avx512.cpp): the weight stream's software prefetch, f16 scale broadcasts, the
// unpacking of Q4_K scales and Q6_K quants, and the walk over rows and batch sizes. Internal to
// cpu_backend; include only from a translation unit built with AVX-512 (F, BW, VL) enabled.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cpu_backend/gemv.h"
#include "offload/core/quant_blocks.h"

#define STRATA_ALWAYS_INLINE inline __attribute__((always_inline))

namespace strata::gemv_detail {

#ifndef STRATA_GEMV_PREFETCH_BYTES
#define STRATA_GEMV_PREFETCH_BYTES 2048
#endif
// Software prefetch distance along the weight stream. The decode work per cache line is long
// enough that the out-of-order window alone does not keep enough DRAM reads in flight; asking
// for the line this far ahead overlaps the memory latency with the decode (bench/NOTES.md).
constexpr int64_t kPrefetchBytes = STRATA_GEMV_PREFETCH_BYTES;
#ifndef STRATA_GEMV_PREFETCH_HINT
#define STRATA_GEMV_PREFETCH_HINT _MM_HINT_T0
#endif

// Prefetches the cache lines kPrefetchBytes ahead of bytes [offset, offset + bytes) of a row that
// is read in step with R - 1 following rows (R rows of row_bytes each, then the next R). Ahead
// of the end of the row lies the next row, which another stream of this group is reading
// already; the line this stream will need then is in its row of the next group, R rows on.
// Past the end of the matrix this touches nothing: prefetches never fault.
template <int R>
STRATA_ALWAYS_INLINE void prefetch_ahead(const uint8_t* row, int64_t offset, int64_t bytes,
                                         int64_t row_bytes) {
  if constexpr (kPrefetchBytes > 0) {
#pragma GCC unroll 8
    for (int64_t line = 0; line < bytes; line += 64) {
      int64_t ahead = offset + kPrefetchBytes + line;
      if (ahead >= row_bytes) ahead += (R - 1) * row_bytes;
      _mm_prefetch(reinterpret_cast<const char*>(row + ahead), STRATA_GEMV_PREFETCH_HINT);
    }
  }
}

// Broadcasts the f16 scale at p, as float, to 16 lanes. The conversion is a lookup in a table of
// all 65536 halves, so the broadcast is a plain load (vbroadcastss from memory): converting in
// registers would cost a vcvtph2ps and a register broadcast, both on port 5, which the decode's
// shuffles already keep busy (see bench/NOTES.md).
STRATA_ALWAYS_INLINE __m512 broadcast_half(const float* f16_table, const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm512_set1_ps(f16_table[h]);
}

// Tells the compiler that `values` must be read back from memory: GCC otherwise keeps a small
// array it just stored in a register and broadcasts its lanes with vpermps (port 5) instead of
// broadcast loads (load ports only).
template <class Array>
STRATA_ALWAYS_INLINE void force_reload(Array& values) {
  asm volatile("" : "+m"(values));
}

// Per-block scales: dm[j] = d * sc[j], dm[8 + j] = dmin * m[j] for the 8 sub-blocks. The 6-bit
// fields are unpacked with ggml's word masks (the same values as q4k_scale_min) in the 32-bit
// lanes of one register, then converted and scaled 16 at a time; stored so that the tables
// broadcast them from memory. Why in a register: built in four scalar words on the stack and
// loaded back as one vector, the load waited for a failed store forwarding on every block.
STRATA_ALWAYS_INLINE void q4k_scales(const uint8_t* blk, const float* f16_table, float* dm) {
  // Words u0, u1, u2 of the scales (the 16-byte load ends inside qs, within the block).
  const __m128i v =
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + offsetof(BlockQ4_K, scales)));
  const __m128i p = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));  // u0, u2, u1, u2
  const __m128i q = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));  // u0, u0, u1, u1
  const __m128i low6 = _mm_set1_epi32(0x3f3f3f3f), low4 = _mm_set1_epi32(0x0f0f0f0f),
                low2 = _mm_set1_epi32(0x03030303);
  // sc[0..3] = u0 & low6; m[0..3] = u1 & low6 (lanes 0, 2);
  // sc[4..7] = (u2 & low4) | ((u0 >> 6) & low2) << 4; m[4..7] = ((u2 >> 4) & low4) | ((u1 >> 6)
  // & low2) << 4 (lanes 1, 3).
  const __m128i even = _mm_and_si128(p, low6);
  const __m128i odd =
      _mm_or_si128(_mm_and_si128(_mm_srlv_epi32(p, _mm_setr_epi32(0, 0, 0, 4)), low4),
                   _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(q, 6), low2), 4));
  const __m128i u = _mm_blend_epi32(even, odd, 0b1010);
  const __m512 d_then_dmin =
      _mm512_mask_blend_ps(0xFF00, broadcast_half(f16_table, blk + offsetof(BlockQ4_K, d)),
                           broadcast_half(f16_table, blk + offsetof(BlockQ4_K, dmin)));
  const __m512 sc_m = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(u));
  _mm512_store_ps(dm, _mm512_mul_ps(d_then_dmin, sc_m));
}

// The 6-bit quants of one half of a block (128 elements from 64 bytes of ql and 32 of qh), as
// bytes in element order: elements 0..63 in *q_lo, 64..127 in *q_hi.
STRATA_ALWAYS_INLINE void q6k_unpack(const uint8_t* ql, const uint8_t* qh, __m512i* q_lo,
                                     __m512i* q_hi) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i bits45 = _mm512_set1_epi8(0x30);
  // qh bits for bytes 0..31 (elements 0..31) and 32..63 (elements 32..63) of q_a: bits 0-1 and
  // 2-3 of qh moved to bits 4-5 (16-bit lanes shifted left by 4 and 2); for q_b (elements
  // 64..127): bits 4-5 and 6-7 (shifted right by 0 and 2). Bits that cross into the
  // neighbouring byte land outside bits 4-5, which the ternary-logic mask drops.
  const __m512i shift_a = _mm512_set_epi64(
      0x0002000200020002, 0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
      0x0004000400040004, 0x0004000400040004, 0x0004000400040004, 0x0004000400040004);
  const __m512i shift_b = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002,
                                           0x0002000200020002, 0x0002000200020002, 0, 0, 0, 0);
  const __m512i l = _mm512_loadu_si512(ql);
  const __m512i h =
      _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh)));
  // (h_shifted & 0x30) | low nibbles, in one vpternlogd (0xEA: (A & B) | C).
  *q_lo = _mm512_ternarylogic_epi32(_mm512_sllv_epi16(h, shift_a), bits45,
                                    _mm512_and_si512(l, low4), 0xEA);
  *q_hi = _mm512_ternarylogic_epi32(_mm512_srlv_epi16(h, shift_b), bits45,
                                    _mm512_and_si512(_mm512_srli_epi16(l, 4), low4), 0xEA);
}

// Rows [row_begin, row_end) of a GEMV against a batch of M activation rows: two weight rows at a
// time (sharing each x load) where the sums fit in registers, then one at a time for the
// remainder. Sums<R, M> is the kernel's accumulator (made from the arguments; store(y, y_stride,
// n) writes its R x M results); Row::run(rows, cols, sums) walks R weight rows in step.
#ifndef STRATA_GEMV_ROWS_AT_ONCE
#define STRATA_GEMV_ROWS_AT_ONCE 2
#endif

template <template <int, int> class Sums, class Row, int M, class Args>
void rows_for_batch(const Args& a, int64_t row_begin, int64_t row_end) {
  constexpr int kRows = M <= 2 ? STRATA_GEMV_ROWS_AT_ONCE : 1;
  int64_t n = row_begin;
  for (; n + kRows <= row_end; n += kRows) {
    const uint8_t* rows[kRows];
#pragma GCC unroll 2
    for (int r = 0; r < kRows; ++r) rows[r] = a.w + (n + r) * a.w_row_bytes;
    Sums<kRows, M> acc(a);
    Row::run(rows, a.cols, acc);
    acc.store(a.y, a.y_stride, n);
  }
  for (; n < row_end; ++n) {
    const uint8_t* rows[1] = {a.w + n * a.w_row_bytes};
    Sums<1, M> acc(a);
    Row::run(rows, a.cols, acc);
    acc.store(a.y, a.y_stride, n);
  }
}

// The kernel for one weight type: rows_for_batch instantiated for each batch size.
template <template <int, int> class Sums, class Row, class Args>
void row_kernel(const Args& a, int64_t row_begin, int64_t row_end) {
  static_assert(kGemvMaxBatch == 8, "one instantiation per batch size below");
  switch (a.batch) {
    case 1:
      return rows_for_batch<Sums, Row, 1>(a, row_begin, row_end);
    case 2:
      return rows_for_batch<Sums, Row, 2>(a, row_begin, row_end);
    case 3:
      return rows_for_batch<Sums, Row, 3>(a, row_begin, row_end);
    case 4:
      return rows_for_batch<Sums, Row, 4>(a, row_begin, row_end);
    case 5:
      return rows_for_batch<Sums, Row, 5>(a, row_begin, row_end);
    case 6:
      return rows_for_batch<Sums, Row, 6>(a, row_begin, row_end);
    case 7:
      return rows_for_batch<Sums, Row, 7>(a, row_begin, row_end);
    default:
      return rows_for_batch<Sums, Row, 8>(a, row_begin, row_end);
  }
}

}  // namespace strata::gemv_detail
