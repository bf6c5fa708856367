// The loop nest of one AMX prefill-attention work unit (attention_amx.h): 32 query tokens of one
// query head against the keys they can see, in key chunks with an online softmax (flash-attention
// order), written once over a Tiles policy (amx_tiles.h or emulated_tiles.h, the same register
// roles as gemm_amx_unit.h: C 0..3, A 4..5, B 6..7) and a Vec policy for the row work between the
// two products (AVX-512 in attention_amx_tiles.cpp, scalar in attention_amx.cpp). Internal to
// cpu_backend; only <cstdint> here, for the reason gemm_amx_unit.h gives.
//
// Layouts (bf16 unless said; a tile is 1 KiB):
//   qb  [32][D]: the unit's queries, A tiles of 16 rows x 32 dims at qb + ds * 32 (+ 16 * D).
//   k   [key_tile][D / 32][16 dim pairs][16 keys][2]: K^T as B tiles (gemm_amx_unit.h's token
//       tiles with keys for tokens), tile (kt, ds) at k + (kt * D / 32 + ds) * 512.
//   v   [D / 16][key_steps][16 key pairs][16 dims][2]: V as B tiles, tile (dt, ks) at
//       v + (dt * key_steps + ks) * 512.
//   s   [32][key_chunk] float32 scores; p [32][key_chunk] the softmax weights, A tiles at
//       p + ks * 32 (+ 16 * key_chunk); o [32][D] float32 running outputs.
#pragma once

#include <cstdint>

namespace strata::cpu::amx_detail {

struct AttentionUnitArgs {
  const float* q = nullptr;  // the unit's first query row of its head (row stride ldq floats)
  int64_t ldq = 0;
  int64_t rows = 0;      // query tokens in the unit (1..32; the rest is padding)
  int64_t head_dim = 0;  // D, a multiple of 32
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  int64_t key_steps = 0;      // 32-key steps per dim tile in v
  int64_t keys = 0;           // keys the unit reads (a multiple of 32, <= 32 * key_steps)
  int64_t first_visible = 0;  // row r sees keys [0, first_visible + r)
  int64_t key_chunk = 0;      // keys per pass (a multiple of 32)
  float scale = 1.0f;         // of the scores, 1 / sqrt(D)
  // Per-thread scratch, 64-byte aligned: qb 32 * D, s and p 32 * key_chunk, o 32 * D, m and l 32.
  uint16_t* qb = nullptr;
  float* s = nullptr;
  uint16_t* p = nullptr;
  float* o = nullptr;
  float* m = nullptr;
  float* l = nullptr;
  float* out = nullptr;  // the unit's first output row of its head (row stride ldo floats)
  int64_t ldo = 0;
};

// Vec supplies:
//   load_queries(q, ldq, rows, D, qb): bf16 rows, zeros past `rows` (of 32);
//   start(m, l, o, D): m = -inf, l = 0, o = 0;
//   softmax_chunk(s, ld, width, rows, visible0, scale, m, l, o, D, p): for row r < rows, the
//     chunk's first min(width, max(0, visible0 + r)) scores are seen: m[r] becomes the running
//     max of the scaled scores, o's row and l[r] are rescaled to it, p = bf16(e^(scale s - m)) for
//     the seen keys and 0 past them (and on padding rows), and l[r] adds the rounded p;
//   finish(o, l, rows, D, out, ldo): out row r = o row r / l[r].
template <class Tiles, class Vec>
void run_attention_unit(Tiles& tiles, Vec& vec, const AttentionUnitArgs& a) {
  constexpr int64_t kTile = 512;     // bf16 per A / B tile
  constexpr int64_t kRowBytes = 64;  // stride of a packed tile's rows
  const int64_t D = a.head_dim, d_steps = D / 32, kc = a.key_chunk;
  vec.load_queries(a.q, a.ldq, a.rows, D, a.qb);
  vec.start(a.m, a.l, a.o, D);
  for (int64_t c0 = 0; c0 < a.keys; c0 += kc) {
    const int64_t width = a.keys - c0 < kc ? a.keys - c0 : kc;
    // S = Q K^T for the chunk, 32 queries x 32 keys per step (2 x 2 register tiles).
    for (int64_t kt = 0; kt < width / 16; kt += 2) {
      tiles.template zero<0>();
      tiles.template zero<1>();
      tiles.template zero<2>();
      tiles.template zero<3>();
      const uint16_t* k0 = a.k + (c0 / 16 + kt) * d_steps * kTile;
      const uint16_t* k1 = k0 + d_steps * kTile;
      for (int64_t ds = 0; ds < d_steps; ++ds) {
        tiles.template load<4>(a.qb + ds * 32, D * 2);
        tiles.template load<6>(k0 + ds * kTile, kRowBytes);
        tiles.template dot<0, 4, 6>();
        tiles.template load<7>(k1 + ds * kTile, kRowBytes);
        tiles.template dot<1, 4, 7>();
        tiles.template load<5>(a.qb + 16 * D + ds * 32, D * 2);
        tiles.template dot<2, 5, 6>();
        tiles.template dot<3, 5, 7>();
      }
      float* s = a.s + kt * 16;
      tiles.template store<0>(s, kc * 4);
      tiles.template store<1>(s + 16, kc * 4);
      tiles.template store<2>(s + 16 * kc, kc * 4);
      tiles.template store<3>(s + 16 * kc + 16, kc * 4);
    }
    vec.softmax_chunk(a.s, kc, width, a.rows, a.first_visible - c0, a.scale, a.m, a.l, a.o, D, a.p);
    // O += P V, 32 queries x 32 dims per step, the running outputs through the tiles.
    for (int64_t dt = 0; dt < D / 16; dt += 2) {
      float* o = a.o + dt * 16;
      tiles.template load<0>(o, D * 4);
      tiles.template load<1>(o + 16, D * 4);
      tiles.template load<2>(o + 16 * D, D * 4);
      tiles.template load<3>(o + 16 * D + 16, D * 4);
      const uint16_t* v0 = a.v + (dt * a.key_steps + c0 / 32) * kTile;
      const uint16_t* v1 = v0 + a.key_steps * kTile;
      for (int64_t ks = 0; ks < width / 32; ++ks) {
        tiles.template load<4>(a.p + ks * 32, kc * 2);
        tiles.template load<6>(v0 + ks * kTile, kRowBytes);
        tiles.template dot<0, 4, 6>();
        tiles.template load<7>(v1 + ks * kTile, kRowBytes);
        tiles.template dot<1, 4, 7>();
        tiles.template load<5>(a.p + 16 * kc + ks * 32, kc * 2);
        tiles.template dot<2, 5, 6>();
        tiles.template dot<3, 5, 7>();
      }
      tiles.template store<0>(o, D * 4);
      tiles.template store<1>(o + 16, D * 4);
      tiles.template store<2>(o + 16 * D, D * 4);
      tiles.template store<3>(o + 16 * D + 16, D * 4);
    }
  }
  vec.finish(a.o, a.l, a.rows, D, a.out, a.ldo);
}

// attention_amx_tiles.cpp (AMX flags; call only when amx_bf16_available(), after
// configure_amx_tiles() on this thread).
void run_attention_unit_amx(const AttentionUnitArgs& a);
// 32 keys' K and V rows (float32 [32][D], rows past `rows` zero-filled here) into their tiles:
// K tiles kt0, kt0 + 1 at k_tiles (= k + kt0 * D / 32 * 512) and V tiles (dt, ks) at
// v + (dt * key_steps + ks) * 512 for every dt.
void pack_keys_values_avx512(const float* k_rows, const float* v_rows, int64_t rows, int64_t D,
                             uint16_t* k_tiles, uint16_t* v, int64_t key_steps, int64_t ks);

}  // namespace strata::cpu::amx_detail
