// The AMX prefill attention (attention_amx.h): argument checks, the K / V gather and packing per
// group of KV heads, the units handed to the threads, and the scalar row work of the emulated
// tile unit. The AMX instructions live in attention_amx_tiles.cpp.
#include "cpu_backend/attention_amx.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu_backend/attention_amx_unit.h"
#include "cpu_backend/emulated_tiles.h"
#include "cpu_backend/kv_row.h"

namespace strata::cpu {
namespace {

using amx_detail::AttentionUnitArgs;
using amx_detail::from_bf16;
using amx_detail::kTileElems;
using amx_detail::to_bf16;

// The Vec policy of attention_amx_unit.h in plain C++ (the reference for the AVX-512 one).
struct ScalarRows {
  void load_queries(const float* q, int64_t ldq, int64_t rows, int64_t D, uint16_t* qb) {
    for (int64_t r = 0; r < 32; ++r) {
      for (int64_t d = 0; d < D; ++d) qb[r * D + d] = r < rows ? to_bf16(q[r * ldq + d]) : 0;
    }
  }
  void start(float* m, float* l, float* o, int64_t D) {
    std::fill(m, m + 32, -std::numeric_limits<float>::infinity());
    std::fill(l, l + 32, 0.0f);
    std::fill(o, o + 32 * D, 0.0f);
  }
  void softmax_chunk(const float* s, int64_t ld, int64_t width, int64_t rows, int64_t visible0,
                     float scale, float* m, float* l, float* o, int64_t D, uint16_t* p) {
    for (int64_t r = 0; r < 32; ++r) {
      const float* sr = s + r * ld;
      uint16_t* pr = p + r * ld;
      const int64_t n = r < rows ? std::clamp<int64_t>(visible0 + r, 0, width) : 0;
      std::fill(pr, pr + width, 0);
      if (n == 0) continue;
      float m_new = m[r];
      for (int64_t j = 0; j < n; ++j) m_new = std::max(m_new, sr[j] * scale);
      const float alpha =
          m[r] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(m[r] - m_new);
      for (int64_t d = 0; d < D; ++d) o[r * D + d] *= alpha;
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        pr[j] = to_bf16(std::exp(sr[j] * scale - m_new));
        sum += from_bf16(pr[j]);
      }
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
    }
  }
  void finish(const float* o, const float* l, int64_t rows, int64_t D, float* out, int64_t ldo) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t d = 0; d < D; ++d) out[r * ldo + d] = o[r * D + d] / l[r];
    }
  }
};

void pack_keys_values_scalar(const float* k_rows, const float* v_rows, int64_t rows, int64_t D,
                             uint16_t* k_tiles, uint16_t* v, int64_t key_steps, int64_t ks) {
  amx_detail::pack_tokens_scalar(k_rows, D, rows, D, D / 32, 0, 2, k_tiles);
  for (int64_t dt = 0; dt < D / 16; ++dt) {
    uint16_t* tile = v + (dt * key_steps + ks) * kTileElems;
    for (int64_t r = 0; r < 32; ++r) {
      for (int64_t n = 0; n < 16; ++n) {
        tile[(r / 2) * 32 + n * 2 + r % 2] = r < rows ? to_bf16(v_rows[r * D + dt * 16 + n]) : 0;
      }
    }
  }
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

class AmxPrefillAttention final : public PrefillAttention {
 public:
  explicit AmxPrefillAttention(const AmxAttentionConfig& config) : config_(config) {}

  Status run(const float* q, int64_t n_tokens, int64_t first_position, const KvLayerView& kv,
             const AttentionShape& shape, float* out) override {
    const int64_t D = shape.head_dim;
    if (D <= 0 || D % 32 != 0 || shape.n_head_kv <= 0 || shape.n_head % shape.n_head_kv != 0) {
      return Status::invalid_argument(
          "amx attention: head_dim must be a positive multiple of 32 and the heads a multiple "
          "of the KV heads (head_dim " +
          std::to_string(D) + ", heads " + std::to_string(shape.n_head) + " / " +
          std::to_string(shape.n_head_kv) + ")");
    }
    const int64_t n_keys = first_position + n_tokens;
    if (first_position < 0 || n_tokens < 0 || n_keys > kv.num_tokens) {
      return Status::internal("amx attention: the KV cache holds too few tokens");
    }
    if (n_tokens == 0) return Status::ok();
    if (q == nullptr || out == nullptr)
      return Status::invalid_argument("amx attention: null q or out");

    const int64_t G = shape.n_head / shape.n_head_kv, ld = shape.n_head * D;
    const int64_t keys_pad = round_up(n_keys, 32), key_steps = keys_pad / 32;
    const int64_t head_elems = 2 * keys_pad * D;  // packed K then V of one KV head, bf16
    const int64_t group =
        std::clamp<int64_t>(config_.max_packed_bytes / (head_elems * 2), 1, shape.n_head_kv);
    uint16_t* packed = reserve_packed(group * head_elems);
    const int64_t threads = omp_get_max_threads();
    const int64_t kc = config_.key_chunk;
    const int64_t per_thread = 32 * D * 4 /*qb o kbuf vbuf*/ + 32 * kc * 2 /*s p*/ + 64;
    if (packed == nullptr || !reserve_scratch(threads * per_thread)) {
      return Status::out_of_memory("amx attention: packed K / V or scratch");
    }
    const int64_t q_blocks = (n_tokens + 31) / 32;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const bool amx = config_.unit == TileUnit::kAmx;
    const int64_t head_bytes = kv_bytes(kv.dtype, D);

    for (int64_t g0 = 0; g0 < shape.n_head_kv; g0 += group) {
      const int64_t gh = std::min(group, shape.n_head_kv - g0);
#pragma omp parallel
      {
        // Thread scratch: qb, s, p, o, m, l, and two [32][D] row buffers for the packing.
        float* base = scratch_.get() + omp_get_thread_num() * per_thread;
        uint16_t* qb = reinterpret_cast<uint16_t*>(base);
        float* s = base + 16 * D;
        uint16_t* p = reinterpret_cast<uint16_t*>(s + 32 * kc);
        float* o = s + 48 * kc;
        float* m = o + 32 * D;
        float* l = m + 32;
        float* k_rows = l + 32;
        float* v_rows = k_rows + 32 * D;
        const amx_detail::ThreadTiles thread_tiles(amx);
        amx_detail::EmulatedTiles* const emulated = thread_tiles.emulated();

#pragma omp for schedule(static)
        for (int64_t item = 0; item < gh * key_steps; ++item) {
          const int64_t h = item / key_steps, ks = item % key_steps;
          const int64_t p0 = ks * 32, rows = std::min<int64_t>(32, n_keys - p0);
          for (int64_t r = 0; r < rows; ++r) {
            const char* kr = static_cast<const char*>(kv_k_row(kv, p0 + r)) + (g0 + h) * head_bytes;
            const char* vr = static_cast<const char*>(kv_v_row(kv, p0 + r)) + (g0 + h) * head_bytes;
            const float* kf = kv_row_f32(kr, D, kv.dtype, k_rows + r * D);
            const float* vf = kv_row_f32(vr, D, kv.dtype, v_rows + r * D);
            if (kf != k_rows + r * D) std::memcpy(k_rows + r * D, kf, D * sizeof(float));
            if (vf != v_rows + r * D) std::memcpy(v_rows + r * D, vf, D * sizeof(float));
          }
          uint16_t* head_k = packed + h * head_elems;
          uint16_t* k_tiles = head_k + 2 * ks * (D / 32) * kTileElems;
          uint16_t* head_v = head_k + keys_pad * D;
          if (amx) {
            amx_detail::pack_keys_values_avx512(k_rows, v_rows, rows, D, k_tiles, head_v, key_steps,
                                                ks);
          } else {
            pack_keys_values_scalar(k_rows, v_rows, rows, D, k_tiles, head_v, key_steps, ks);
          }
        }

        // Latest query blocks first: they see the most keys, so the dynamic schedule ends even.
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < gh * G * q_blocks; ++item) {
          const int64_t block = q_blocks - 1 - item / (gh * G), hq = item % (gh * G);
          const int64_t head = g0 * G + hq, t0 = block * 32;
          AttentionUnitArgs a;
          a.rows = std::min<int64_t>(32, n_tokens - t0);
          a.q = q + t0 * ld + head * D;
          a.ldq = ld;
          a.head_dim = D;
          a.k = packed + (hq / G) * head_elems;
          a.v = a.k + keys_pad * D;
          a.key_steps = key_steps;
          a.first_visible = first_position + t0 + 1;
          a.keys = round_up(a.first_visible + a.rows - 1, 32);
          a.key_chunk = kc;
          a.scale = scale;
          a.qb = qb;
          a.s = s;
          a.p = p;
          a.o = o;
          a.m = m;
          a.l = l;
          a.out = out + t0 * ld + head * D;
          a.ldo = ld;
          if (amx) {
            amx_detail::run_attention_unit_amx(a);
          } else {
            ScalarRows vec;
            amx_detail::run_attention_unit(*emulated, vec, a);
          }
        }
      }
    }
    return Status::ok();
  }

 private:
  uint16_t* reserve_packed(int64_t elems) {
    if (elems > packed_elems_) {
      packed_.reset(static_cast<uint16_t*>(
          std::aligned_alloc(64, static_cast<size_t>(round_up(elems * 2, 64)))));
      packed_elems_ = packed_ != nullptr ? elems : 0;
    }
    return packed_.get();
  }
  bool reserve_scratch(int64_t floats) {
    if (floats > scratch_floats_) {
      scratch_.reset(static_cast<float*>(
          std::aligned_alloc(64, static_cast<size_t>(round_up(floats * 4, 64)))));
      scratch_floats_ = scratch_ != nullptr ? floats : 0;
    }
    return scratch_ != nullptr;
  }

  AmxAttentionConfig config_;
  std::unique_ptr<uint16_t, FreeDeleter> packed_;
  int64_t packed_elems_ = 0;
  std::unique_ptr<float, FreeDeleter> scratch_;
  int64_t scratch_floats_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<PrefillAttention>> make_amx_prefill_attention(
    const AmxAttentionConfig& config) {
  if (config.key_chunk < 32 || config.key_chunk % 32 != 0 || config.max_packed_bytes <= 0) {
    return Status::invalid_argument(
        "amx attention: key_chunk must be a positive multiple of 32 and max_packed_bytes "
        "positive (got " +
        std::to_string(config.key_chunk) + ", " + std::to_string(config.max_packed_bytes) + ")");
  }
  if (config.unit == TileUnit::kAmx && !amx_bf16_available()) {
    return Status::unsupported("amx attention: this CPU or kernel offers no AMX-BF16 tiles");
  }
  return std::unique_ptr<PrefillAttention>(new AmxPrefillAttention(config));
}

}  // namespace strata::cpu
