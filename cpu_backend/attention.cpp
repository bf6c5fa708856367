#include "cpu_backend/attention.h"

#include <omp.h>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include "cpu_backend/avx512_exp.h"
#include "cpu_backend/kv_row.h"

namespace strata::cpu {
namespace {

// The query heads that share one KV head (GQA) are processed together (attend_heads), so each K
// and V row is read once per group instead of once per head. Reductions use `omp simd` so that
// they vectorize (the build keeps strict FP semantics otherwise); summation order differs from a
// scalar loop only by float32 rounding.
// Key splitting (attention_range): at most this many pieces, of at least this many keys.
constexpr int64_t kMaxKeySplits = 64;
constexpr int64_t kMinKeysPerSplit = 256;

inline float dot_f32(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy_f32(float w, const float* x, float* acc, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += w * x[i];
}

// One KV head's slice of a row as float32 (kv_row_f32), f16 widened 8 at a time by F16C: the
// generic dequantize_row widened the CPU's share of a 128k decode at ~5 GB/s.
inline const float* head_f32(const void* raw, int64_t hd, DType dtype, float* buf) {
#if defined(__F16C__)
  if (dtype == DType::kF16 && hd % 8 == 0) {
    const auto* h = static_cast<const __m128i*>(raw);
    for (int64_t i = 0; i < hd / 8; ++i)
      _mm256_storeu_ps(buf + 8 * i, _mm256_cvtph_ps(_mm_loadu_si128(h + i)));
    return buf;
  }
#endif
  return kv_row_f32(raw, hd, dtype, buf);
}

// Keys per chunk of attend_heads.
constexpr int64_t kRowChunk = 64;

// Software prefetch into L2, for the loops that read one KV head's slice of each row (256 bytes,
// 2 KB apart for llama3-8b's f16 rows): a stride the hardware prefetchers follow poorly. Whole
// rows are read in address order and left to the hardware (chunk_scores_fast).
inline void prefetch_bytes(const void* p, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(p) + b, 0, 2);
}

constexpr int64_t kPrefetchKeys = 16;

// A chunk's keys [c0, c1) and the addresses of the rows its loops read, found once per chunk:
// the loops read each row once per pair of heads, and kv_k_row's division by block_tokens at
// every read showed in their profile. k also holds the kPrefetchKeys rows after c1 (below p_end)
// that prefetch_rows asks for.
struct ChunkRows {
  DType dtype;
  int64_t c0, c1, k_end;  // k[p - c0] for p in [c0, k_end), v[p - c0] for p in [c0, c1)
  const char* k[kRowChunk + kPrefetchKeys];
  const char* v[kRowChunk];
  const char* key(int64_t p) const { return k[p - c0]; }
  const char* value(int64_t p) const { return v[p - c0]; }
};

void find_rows(const KvLayerView& kv, int64_t c0, int64_t c1, int64_t p_end, ChunkRows* r) {
  r->dtype = kv.dtype;
  r->c0 = c0;
  r->c1 = c1;
  r->k_end = std::min(p_end, c1 + kPrefetchKeys);
  const int64_t row_bytes = kv_bytes(kv.dtype, kv.kv_dim);
  int64_t block = c0 / kv.block_tokens, in_block = c0 % kv.block_tokens;
  for (int64_t p = c0; p < r->k_end; ++p) {
    r->k[p - c0] = static_cast<const char*>(kv.k_blocks[block]) + in_block * row_bytes;
    if (p < c1) r->v[p - c0] = static_cast<const char*>(kv.v_blocks[block]) + in_block * row_bytes;
    if (++in_block == kv.block_tokens) {
      in_block = 0;
      ++block;
    }
  }
}

// Asks for the slices [off, off + bytes) of keys [p, p + n): their V rows, which the values pass
// reads after the chunk's scores, and the K rows kPrefetchKeys keys later. The scores loops go
// key by key, all heads of a key before the next, so that both streams run in address order.
inline void prefetch_rows(const ChunkRows& rows, int64_t p, int64_t n, int64_t off, int64_t bytes) {
  for (int64_t j = p; j < p + n; ++j) {
    prefetch_bytes(rows.value(j) + off, bytes);
    if (j + kPrefetchKeys < rows.k_end) prefetch_bytes(rows.key(j + kPrefetchKeys) + off, bytes);
  }
}

// One thread's scratch in attention_range: see attention_scratch_floats.
int64_t per_thread_floats(const AttentionShape& shape) {
  return shape.n_head * (kRowChunk + 2) + shape.head_dim;
}

}  // namespace

// Per thread: attend_heads' score rows (kRowChunk keys for each head), running max and sum, and
// one widened head row; then the key-split pieces' parts, at most 2 x threads pieces of every
// head (key_splits), each head_dim outputs and a log-sum-exp. Independent of the context length.
int64_t attention_scratch_floats(int64_t /*max_kv_tokens*/, const AttentionShape& shape) {
  const int64_t threads = omp_get_max_threads();
  return threads * per_thread_floats(shape) + 2 * threads * shape.n_head * (shape.head_dim + 1);
}

void attention(const float* q, int64_t n_tokens, const int32_t* positions, const KvLayerView& kv,
               const AttentionShape& shape, float* out, float* scratch) {
  attention_range(q, n_tokens, positions, kv, shape, 0, kv.num_tokens, out, nullptr, scratch);
}

void merge_attention(const float* out_a, const float* lse_a, const float* out_b, const float* lse_b,
                     int64_t rows, int64_t head_dim, float* out, float* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    const float la = lse_a[r], lb = lse_b[r];
    const float m = std::max(la, lb);
    float* o = out + r * head_dim;
    if (m == -std::numeric_limits<float>::infinity()) {  // neither part saw a key
      std::fill(o, o + head_dim, 0.0f);
      lse[r] = m;
      continue;
    }
    const float wa = std::exp(la - m), wb = std::exp(lb - m);
    const float inv = 1.0f / (wa + wb);
    const float* a = out_a + r * head_dim;
    const float* b = out_b + r * head_dim;
    for (int64_t i = 0; i < head_dim; ++i) o[i] = (wa * a[i] + wb * b[i]) * inv;
    lse[r] = m + std::log(wa + wb);
  }
}

namespace {

// Scores of keys [c0, c1) for every query head: scores[h * kRowChunk + p - c0] = q_h . k_p *
// scale. qt: the token's queries [n_head][head_dim]; row: room for one widened head slice.
void chunk_scores(const float* qt, const ChunkRows& rows, const AttentionShape& shape, int64_t kvh0,
                  int64_t kvh1, float scale, float* scores, float* row) {
  const int64_t hd = shape.head_dim, group = shape.n_head / shape.n_head_kv;
  const int64_t head_bytes = kv_bytes(rows.dtype, hd), c0 = rows.c0;
  for (int64_t p = c0; p < rows.c1; ++p) {
    const char* k_row = rows.key(p);
    prefetch_rows(rows, p, 1, kvh0 * head_bytes, (kvh1 - kvh0) * head_bytes);
    for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
      const float* k = head_f32(k_row + kvh * head_bytes, hd, rows.dtype, row);
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = kvh * group + g, r = h - kvh0 * group;
        scores[r * kRowChunk + (p - c0)] = dot_f32(qt + h * hd, k, hd) * scale;
      }
    }
  }
}

// out_h += sum over p in [c0, c1) of w[h * kRowChunk + p - c0] * v_p, for every query head.
void chunk_values(const float* w, const ChunkRows& rows, const AttentionShape& shape, int64_t kvh0,
                  int64_t kvh1, float* out_first, int64_t out_stride, float* row) {
  const int64_t hd = shape.head_dim, group = shape.n_head / shape.n_head_kv;
  const int64_t head_bytes = kv_bytes(rows.dtype, hd), c0 = rows.c0;
  for (int64_t p = c0; p < rows.c1; ++p) {
    const char* v_row = rows.value(p);
    for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
      const float* v = head_f32(v_row + kvh * head_bytes, hd, rows.dtype, row);
      for (int64_t g = 0; g < group; ++g) {
        const int64_t r = (kvh - kvh0) * group + g;
        axpy_f32(w[r * kRowChunk + (p - c0)], v, out_first + r * out_stride, hd);
      }
    }
  }
}

#if defined(__AVX512F__)
// How the AVX-512 loops below read a KV row's head slices, 16 elements at a time, for the two
// compact cache types: f16 (one 32-byte load, widened by vcvtph2ps) and q8_0 (16 int8 of one
// 34-byte block, widened and multiplied by the block's f16 scale: d * q, the exact product
// dequantize_row forms, so both give the values the generic loops see).
struct F16Slices {
  static int64_t head_bytes(int64_t hd) { return 2 * hd; }
  static __m512 load16(const char* head, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(head) + i));
  }
};
struct Q8Slices {
  static int64_t head_bytes(int64_t hd) { return hd / 32 * 34; }
  static __m512 load16(const char* head, int64_t i) {
    const char* block = head + (i >> 1) * 34;
    uint16_t d_bits;
    std::memcpy(&d_bits, block, 2);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2 + (i & 1) * 16));
    return _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(d_bits)),
                         _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
  }
};

// The sums of four vectors' lanes, {sum a[0], ..., sum a[3]}: 13 shuffles and adds where four
// _mm512_reduce_add_ps take ~32, most of them on the shuffle port the widening also uses.
inline __m128 sum4(const __m512 a[4]) {
  // Halves: [a0 lanes 0+2, 1+3, a1 lanes 0+2, 1+3], the same for a2, a3.
  const __m512 t01 =
      _mm512_add_ps(_mm512_shuffle_f32x4(a[0], a[1], 0x44), _mm512_shuffle_f32x4(a[0], a[1], 0xEE));
  const __m512 t23 =
      _mm512_add_ps(_mm512_shuffle_f32x4(a[2], a[3], 0x44), _mm512_shuffle_f32x4(a[2], a[3], 0xEE));
  // One 128-bit lane per vector, four partial sums each.
  __m512 u =
      _mm512_add_ps(_mm512_shuffle_f32x4(t01, t23, 0x88), _mm512_shuffle_f32x4(t01, t23, 0xDD));
  u = _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(2, 3, 0, 1)));
  u = _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(1, 0, 3, 2)));  // lane totals, 4 times
  return _mm512_castps512_ps128(
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), u));
}

// The same two for f16 and q8_0 rows (Slices, above) with head_dim = 16 V, AVX-512 (below): scores
// four keys at a time for four query heads (two where the group is not a multiple of four), values
// four heads at a time, each head slice widened once per pass. The generic loops above went through
// memory for every key and head and ran at ~1 GB/s per core, compute-bound; the cold share of a
// 128k decode needs the CPU's whole read bandwidth.
//
// Scores of keys k[0..3] (one KV head's slices) for the H query heads h[] of that KV head, into
// scores[r[j] * kRowChunk + at + key]. Each key slice is widened once for the H heads: with
// pairs of heads a group of four widened every K slice twice, a fifth of the kernel's
// instructions (vcvtph2ps is two uops, one on the port the FMAs and shuffles share).
template <typename Slices, int V, int H>
inline void score_four_keys(const float* qt, const char* const k[4], const int64_t h[H],
                            const int64_t r[H], int64_t at, __m128 scale4, float* scores) {
  constexpr int64_t hd = 16 * V;
  __m512 s[H][4];
  for (int j = 0; j < H; ++j)
    for (int key = 0; key < 4; ++key) s[j][key] = _mm512_setzero_ps();
  for (int i = 0; i < V; ++i) {
    __m512 kf[4];
    for (int key = 0; key < 4; ++key) kf[key] = Slices::load16(k[key], i);
    for (int j = 0; j < H; ++j) {
      const __m512 qj = _mm512_loadu_ps(qt + h[j] * hd + 16 * i);
      for (int key = 0; key < 4; ++key) s[j][key] = _mm512_fmadd_ps(qj, kf[key], s[j][key]);
    }
  }
  // Four keys' sums reduced together (sum4).
  for (int j = 0; j < H; ++j)
    _mm_storeu_ps(scores + r[j] * kRowChunk + at, _mm_mul_ps(sum4(s[j]), scale4));
}

template <typename Slices, int V>
void chunk_scores_fast(const float* qt, const ChunkRows& rows, const AttentionShape& shape,
                       int64_t kvh0, int64_t kvh1, float scale, float* scores) {
  const int64_t c0 = rows.c0, c1 = rows.c1;
  constexpr int64_t hd = 16 * V;
  const int64_t head_bytes = Slices::head_bytes(hd);
  const int64_t group = shape.n_head / shape.n_head_kv;
  const __m128 scale4 = _mm_set1_ps(scale);
  // Whole rows (every KV head: the key split of a decode step), in groups of four heads: one
  // key at a time, its row front to back, each K slice widened once for the four heads and their
  // sums reduced together. Reading four rows side by side (as below) ran ~60 GB/s on 16 threads
  // of the H200's host, this 66-69 in most runs (b79c054, 8a61503). Whole rows get no software
  // prefetch: in address order the hardware prefetchers follow them without taking the core's fill
  // buffers.
  const bool full_rows = kvh1 - kvh0 == shape.n_head_kv;
  if (full_rows && group % 4 == 0) {
    for (int64_t p = c0; p < c1; ++p) {
      const char* krow = rows.key(p);
      for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
        const char* k = krow + kvh * head_bytes;
        for (int64_t g = 0; g < group; g += 4) {
          const int64_t h0 = kvh * group + g, r0 = h0 - kvh0 * group;
          __m512 sv[4];
          for (int j = 0; j < 4; ++j) sv[j] = _mm512_setzero_ps();
          for (int i = 0; i < V; ++i) {
            const __m512 kf = Slices::load16(k, i);
            for (int j = 0; j < 4; ++j)
              sv[j] = _mm512_fmadd_ps(_mm512_loadu_ps(qt + (h0 + j) * hd + 16 * i), kf, sv[j]);
          }
          alignas(16) float out4[4];
          _mm_store_ps(out4, _mm_mul_ps(sum4(sv), scale4));
          for (int j = 0; j < 4; ++j) scores[(r0 + j) * kRowChunk + (p - c0)] = out4[j];
        }
      }
    }
    return;
  }
  // Otherwise key by key, four at a time, all heads of those keys before the next. Slices of
  // rows (one KV head) are strided and prefetched.
  int64_t p = c0;
  for (; p + 4 <= c1; p += 4) {
    if (!full_rows) prefetch_rows(rows, p, 4, kvh0 * head_bytes, (kvh1 - kvh0) * head_bytes);
    for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
      const char* k[4];
      for (int j = 0; j < 4; ++j) k[j] = rows.key(p + j) + kvh * head_bytes;
      if (group % 4 == 0) {
        for (int64_t g = 0; g < group; g += 4) {
          const int64_t h0 = kvh * group + g, r0 = h0 - kvh0 * group;  // absolute, in the range
          const int64_t h[4] = {h0, h0 + 1, h0 + 2, h0 + 3}, r[4] = {r0, r0 + 1, r0 + 2, r0 + 3};
          score_four_keys<Slices, V, 4>(qt, k, h, r, p - c0, scale4, scores);
        }
        continue;
      }
      for (int64_t g = 0; g < group; g += 2) {
        const int64_t ha = kvh * group + g, hb = g + 1 < group ? ha + 1 : ha;  // absolute
        const int64_t h[2] = {ha, hb}, r[2] = {ha - kvh0 * group, hb - kvh0 * group};
        score_four_keys<Slices, V, 2>(qt, k, h, r, p - c0, scale4, scores);
      }
    }
  }
  for (; p < c1; ++p) {
    if (!full_rows) prefetch_rows(rows, p, 1, kvh0 * head_bytes, (kvh1 - kvh0) * head_bytes);
    for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
      const char* k = rows.key(p) + kvh * head_bytes;
      for (int64_t g = 0; g < group; g += 2) {
        const int64_t ha = kvh * group + g, hb = g + 1 < group ? ha + 1 : ha;
        const int64_t ra = ha - kvh0 * group, rb = hb - kvh0 * group;
        __m512 sa = _mm512_setzero_ps(), sb = _mm512_setzero_ps();
        for (int i = 0; i < V; ++i) {
          const __m512 kf = Slices::load16(k, i);
          sa = _mm512_fmadd_ps(_mm512_loadu_ps(qt + ha * hd + 16 * i), kf, sa);
          sb = _mm512_fmadd_ps(_mm512_loadu_ps(qt + hb * hd + 16 * i), kf, sb);
        }
        scores[ra * kRowChunk + (p - c0)] = _mm512_reduce_add_ps(sa) * scale;
        scores[rb * kRowChunk + (p - c0)] = _mm512_reduce_add_ps(sb) * scale;
      }
    }
  }
}

// Values: four heads at a time over a quarter of their output rows (4 x 4 accumulators) for
// heads of 64, or over half of it twice for heads of 128, so that each key's V slice is widened
// once per four heads instead of once per two. Missing heads of a group not a multiple of four
// take weights 0 and are not written.
template <typename Slices, int V>
void chunk_values_fast(const float* w, const ChunkRows& rows, const AttentionShape& shape,
                       int64_t kvh0, int64_t kvh1, float* out_first, int64_t out_stride) {
  const int64_t c0 = rows.c0, c1 = rows.c1;
  constexpr int64_t hd = 16 * V;
  const int64_t head_bytes = Slices::head_bytes(hd);
  constexpr int kHeads = 4, kVecs = 4;  // per pass
  static_assert(V % kVecs == 0);
  const int64_t group = shape.n_head / shape.n_head_kv;
  alignas(64) const float zeros[kRowChunk] = {};
  // Whole rows: eight keys at a time, all heads of them before the next eight, so that V rows
  // go in about address order (see chunk_scores_fast); the heads' output rows stay in L1
  // between. One head's slices: all the chunk's keys per pass, accumulators in registers.
  const int64_t kKeys = kvh1 - kvh0 == shape.n_head_kv ? 8 : kRowChunk;
  for (int64_t k0 = c0; k0 < c1; k0 += kKeys) {
    const int64_t k1 = std::min(c1, k0 + kKeys);
    for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
      for (int64_t g = 0; g < group; g += kHeads) {
        const int live = static_cast<int>(std::min<int64_t>(kHeads, group - g));
        const int64_t h0 = (kvh - kvh0) * group + g;  // in the range
        const float* wr[kHeads];
        for (int j = 0; j < kHeads; ++j)
          wr[j] = j < live ? w + (h0 + j) * kRowChunk - c0 : zeros - c0;
        for (int part = 0; part < V; part += kVecs) {
          __m512 acc[kHeads][kVecs];
          for (int j = 0; j < kHeads; ++j)
            for (int i = 0; i < kVecs; ++i)
              acc[j][i] = j < live
                              ? _mm512_loadu_ps(out_first + (h0 + j) * out_stride + 16 * (part + i))
                              : _mm512_setzero_ps();
          for (int64_t p = k0; p < k1; ++p) {
            const char* v = rows.value(p) + kvh * head_bytes;
            __m512 vf[kVecs];
            for (int i = 0; i < kVecs; ++i) vf[i] = Slices::load16(v, part + i);
            for (int j = 0; j < kHeads; ++j) {
              const __m512 wj = _mm512_set1_ps(wr[j][p]);
              for (int i = 0; i < kVecs; ++i) acc[j][i] = _mm512_fmadd_ps(wj, vf[i], acc[j][i]);
            }
          }
          for (int j = 0; j < live; ++j)
            for (int i = 0; i < kVecs; ++i)
              _mm512_storeu_ps(out_first + (h0 + j) * out_stride + 16 * (part + i), acc[j][i]);
        }
      }
    }
  }
}
#endif

// One head's scores of a chunk, sc[0, n) with n >= 1: returns m = max(prev_max, max sc) and
// replaces sc[j] by e^(sc[j] - m), their sum in *sum.
inline float chunk_softmax(float* sc, int64_t n, float prev_max, float* sum) {
#if defined(__AVX512F__)
  const float inf = std::numeric_limits<float>::infinity();
  __m512 mv = _mm512_set1_ps(prev_max);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? __mmask16{0xFFFF} : __mmask16((1u << (n - j)) - 1);
    mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(_mm512_set1_ps(-inf), k, sc + j));
  }
  const float m = _mm512_reduce_max_ps(mv);
  const __m512 mb = _mm512_set1_ps(m);
  __m512 s = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? __mmask16{0xFFFF} : __mmask16((1u << (n - j)) - 1);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, sc + j), mb));
    _mm512_mask_storeu_ps(sc + j, k, e);
    s = _mm512_mask_add_ps(s, k, s, e);
  }
  *sum = _mm512_reduce_add_ps(s);
  return m;
#else
  float m = prev_max;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, sc[j]);
  float total = 0.0f;
  for (int64_t j = 0; j < n; ++j) total += (sc[j] = std::exp(sc[j] - m));
  *sum = total;
  return m;
#endif
}

// Token t, keys of the disjoint ranges [begin, min(end, positions[t] + 1)), the query heads of KV
// heads [kvh0, kvh1) at once: their K rows, then their V rows, read front to back in chunks of
// kRowChunk keys (a block's rows are contiguous), with a running max and sum per head (online
// softmax, across the ranges) so that the scratch does not grow with them. The i-th of those
// heads writes its output to out_first + i * out_stride and its log-sum-exp to
// lse_first[i * lse_stride] (if set). base: this thread's scratch, heads * (kRowChunk + 2) +
// head_dim floats.
void attend_heads(const float* q, int64_t t, const int32_t* positions, const KvLayerView& kv,
                  const AttentionShape& shape, int64_t kvh0, int64_t kvh1,
                  std::span<const KeyRange> ranges, float* out_first, int64_t out_stride,
                  float* lse_first, int64_t lse_stride, float* base) {
  const int64_t hd = shape.head_dim;
  const int64_t nh = (kvh1 - kvh0) * (shape.n_head / shape.n_head_kv);  // heads in the range
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float inf = std::numeric_limits<float>::infinity();
  float* scores = base;  // [nh][kRowChunk]
  float* run_max = scores + nh * kRowChunk;
  float* run_sum = run_max + nh;
  float* row = run_sum + nh;  // one widened head slice
  std::fill(run_max, run_max + nh, -inf);
  std::fill(run_sum, run_sum + nh, 0.0f);
  for (int64_t h = 0; h < nh; ++h)
    std::fill(out_first + h * out_stride, out_first + h * out_stride + hd, 0.0f);
  const float* qt = q + t * shape.n_head * hd;
#if defined(__AVX512F__)
  const bool compact = kv.dtype == DType::kF16 || kv.dtype == DType::kQ8_0;
  const int vecs = compact && (hd == 64 || hd == 128) ? static_cast<int>(hd / 16) : 0;
  const bool q8 = kv.dtype == DType::kQ8_0;
#else
  const int vecs = 0;
#endif
  ChunkRows rows;
  for (const auto& [kv_begin, kv_end] : ranges) {
    const int64_t p_end = std::min(kv_end, static_cast<int64_t>(positions[t]) + 1);
    for (int64_t c0 = kv_begin; c0 < p_end; c0 += kRowChunk) {
      const int64_t c1 = std::min(p_end, c0 + kRowChunk);
      find_rows(kv, c0, c1, p_end, &rows);
#if defined(__AVX512F__)
      if (vecs == 8 && q8) {
        chunk_scores_fast<Q8Slices, 8>(qt, rows, shape, kvh0, kvh1, scale, scores);
      } else if (vecs == 4 && q8) {
        chunk_scores_fast<Q8Slices, 4>(qt, rows, shape, kvh0, kvh1, scale, scores);
      } else if (vecs == 8) {
        chunk_scores_fast<F16Slices, 8>(qt, rows, shape, kvh0, kvh1, scale, scores);
      } else if (vecs == 4) {
        chunk_scores_fast<F16Slices, 4>(qt, rows, shape, kvh0, kvh1, scale, scores);
      } else
#endif
      {
        chunk_scores(qt, rows, shape, kvh0, kvh1, scale, scores, row);
      }
      for (int64_t h = 0; h < nh; ++h) {
        float* sc = scores + h * kRowChunk;
        float sum = 0.0f;
        const float m = chunk_softmax(sc, c1 - c0, run_max[h], &sum);  // finite: c1 > c0
        const float rescale = std::exp(run_max[h] - m);                // 0 on the first chunk
        run_sum[h] = run_sum[h] * rescale + sum;
        run_max[h] = m;
        if (rescale != 1.0f) {
          float* o = out_first + h * out_stride;
          for (int64_t i = 0; i < hd; ++i) o[i] *= rescale;
        }
      }
#if defined(__AVX512F__)
      if (vecs == 8 && q8) {
        chunk_values_fast<Q8Slices, 8>(scores, rows, shape, kvh0, kvh1, out_first, out_stride);
      } else if (vecs == 4 && q8) {
        chunk_values_fast<Q8Slices, 4>(scores, rows, shape, kvh0, kvh1, out_first, out_stride);
      } else if (vecs == 8) {
        chunk_values_fast<F16Slices, 8>(scores, rows, shape, kvh0, kvh1, out_first, out_stride);
      } else if (vecs == 4) {
        chunk_values_fast<F16Slices, 4>(scores, rows, shape, kvh0, kvh1, out_first, out_stride);
      } else
#endif
      {
        chunk_values(scores, rows, shape, kvh0, kvh1, out_first, out_stride, row);
      }
    }
  }
  for (int64_t h = 0; h < nh; ++h) {
    const float l = run_sum[h];
    // No key in the range: out = 0 and lse = -inf, which merge_attention ignores.
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* o = out_first + h * out_stride;
    for (int64_t i = 0; i < hd; ++i) o[i] *= inv;
    if (lse_first != nullptr)
      lse_first[h * lse_stride] = l > 0.0f ? run_max[h] + std::log(l) : -inf;
  }
}

// Key pieces per token when (token, KV head) items are fewer than the threads: at batch 1
// llama3-8b has 8 KV heads for 16 cores. Pieces then take every head (attend_heads), up to
// 2 x threads of them in all, of at least kMinKeysPerSplit keys. 1: no split.
int64_t key_splits(int64_t n_tokens, int64_t n_head_kv, int64_t n_keys) {
  const int64_t threads = omp_get_max_threads();
  if (n_tokens * n_head_kv >= threads || n_keys < 2 * kMinKeysPerSplit) return 1;
  return std::max<int64_t>(
      1, std::min({2 * threads / n_tokens, n_keys / kMinKeysPerSplit, kMaxKeySplits}));
}

}  // namespace

void attention_range(const float* q, int64_t n_tokens, const int32_t* positions,
                     const KvLayerView& kv, const AttentionShape& shape, int64_t kv_begin,
                     int64_t kv_end, float* out, float* lse, float* scratch) {
  const KeyRange range{kv_begin, kv_end};
  attention_ranges(q, n_tokens, positions, kv, shape, std::span(&range, 1), out, lse, scratch);
}

void attention_ranges(const float* q, int64_t n_tokens, const int32_t* positions,
                      const KvLayerView& kv, const AttentionShape& shape,
                      std::span<const KeyRange> ranges, float* out, float* lse, float* scratch) {
  const int64_t hd = shape.head_dim;
  const int64_t group = shape.n_head / shape.n_head_kv;
  const int64_t per_thread = per_thread_floats(shape);  // as attention_scratch_floats lays it out
  int64_t n_keys = 0;
  for (const auto& [b, e] : ranges) n_keys += e - b;
  const int64_t splits = key_splits(n_tokens, shape.n_head_kv, n_keys);
  if (splits == 1) {
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t kvh = 0; kvh < shape.n_head_kv; ++kvh) {
        float* base = scratch + static_cast<int64_t>(omp_get_thread_num()) * per_thread;
        const int64_t h0 = t * shape.n_head + kvh * group;
        attend_heads(q, t, positions, kv, shape, kvh, kvh + 1, ranges, out + h0 * hd, hd,
                     lse != nullptr ? lse + h0 : nullptr, 1, base);
      }
    }
    return;
  }
  // Pieces of equal key counts over the ranges laid end to end; a piece may take parts of
  // several ranges.
  std::vector<std::vector<KeyRange>> pieces(static_cast<size_t>(splits));
  {
    size_t r = 0;
    int64_t at = ranges.empty() ? 0 : ranges[0].first;
    for (int64_t sp = 0; sp < splits; ++sp) {
      int64_t want = n_keys * (sp + 1) / splits - n_keys * sp / splits;
      while (want > 0) {
        const int64_t take = std::min(want, ranges[r].second - at);
        if (take > 0) pieces[static_cast<size_t>(sp)].emplace_back(at, at + take);
        at += take;
        want -= take;
        if (at == ranges[r].second && r + 1 < ranges.size()) at = ranges[++r].first;
      }
    }
  }
  // Split keys: each piece's part into [token][head][piece] rows after the threads' scratch,
  // then merged exactly (merge_attention's formula) per head.
  float* part_out = scratch + static_cast<int64_t>(omp_get_max_threads()) * per_thread;
  float* part_lse = part_out + n_tokens * shape.n_head * splits * hd;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t sp = 0; sp < splits; ++sp) {
      float* base = scratch + static_cast<int64_t>(omp_get_thread_num()) * per_thread;
      const int64_t row0 = t * shape.n_head * splits + sp;  // head 0's row of this piece
      attend_heads(q, t, positions, kv, shape, 0, shape.n_head_kv, pieces[static_cast<size_t>(sp)],
                   part_out + row0 * hd, splits * hd, part_lse + row0, splits, base);
    }
  }
#pragma omp parallel for
  for (int64_t r = 0; r < n_tokens * shape.n_head; ++r) {
    const float* l = part_lse + r * splits;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t sp = 0; sp < splits; ++sp) m = std::max(m, l[sp]);
    float* o = out + r * hd;
    std::fill(o, o + hd, 0.0f);
    if (m == -std::numeric_limits<float>::infinity()) {  // no key for this row
      if (lse != nullptr) lse[r] = m;
      continue;
    }
    float sum = 0.0f;
    for (int64_t sp = 0; sp < splits; ++sp) {
      const float w = std::exp(l[sp] - m);
      sum += w;
      axpy_f32(w, part_out + (r * splits + sp) * hd, o, hd);
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < hd; ++i) o[i] *= inv;
    if (lse != nullptr) lse[r] = m + std::log(sum);
  }
}

}  // namespace strata::cpu
