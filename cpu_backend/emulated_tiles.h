// Plain-array stand-ins for the AMX tile unit (the Tiles policy of gemm_amx_unit.h and
// attention_amx_unit.h) and the scalar packing of the B operand: the reference semantics, slow,
// so that the loop nests and their edge cases are tested on CPUs without AMX (CI). Internal to
// cpu_backend; never include from the AMX-flagged *_tiles.cpp files.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "cpu_backend/gemm_amx_unit.h"

namespace strata::cpu::amx_detail {

inline uint16_t to_bf16(float f) {  // round to nearest even, NaN stays NaN (as matmul.cpp)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Tile registers as arrays: the reference semantics of TDPBF16PS (products of bf16 pairs summed
// in float32), slow, for tests on CPUs without AMX.
struct EmulatedTiles {
  alignas(64) float c[4][kTileFloats];
  alignas(64) uint16_t ab[4][kTileElems];  // tiles 4..7

  template <int T>
  void zero() {
    static_assert(T < 4);
    std::fill(c[T], c[T] + kTileFloats, 0.f);
  }
  template <int T>
  void load(const void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r) {
      const char* row = static_cast<const char*>(p) + r * stride;
      if constexpr (T < 4) {
        std::memcpy(c[T] + r * 16, row, 64);
      } else {
        std::memcpy(ab[T - 4] + r * 32, row, 64);
      }
    }
  }
  template <int T>
  void store(void* p, int64_t stride) {
    static_assert(T < 4);
    for (int r = 0; r < 16; ++r) std::memcpy(static_cast<char*>(p) + r * stride, c[T] + r * 16, 64);
  }
  template <int C, int A, int B>
  void dot() {
    const uint16_t* a = ab[A - 4];  // [16 rows][32 columns]
    const uint16_t* b = ab[B - 4];  // [16 pairs][16 tokens][2]
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) {
        float acc = c[C][m * 16 + n];
        for (int p = 0; p < 16; ++p) {
          acc += from_bf16(a[m * 32 + 2 * p]) * from_bf16(b[p * 32 + n * 2]) +
                 from_bf16(a[m * 32 + 2 * p + 1]) * from_bf16(b[p * 32 + n * 2 + 1]);
        }
        c[C][m * 16 + n] = acc;
      }
    }
  }
  void write_transposed(const float* tile, float* y, int64_t ldy, int64_t rows, int64_t tokens) {
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t r = 0; r < rows; ++r) y[t * ldy + r] = tile[r * 16 + t];
    }
  }
};

// This thread's tile unit for one OpenMP parallel region: the AMX tiles, configured here and
// released at the end of the scope, or a set of emulated ones (emulated() is then non-null).
class ThreadTiles {
 public:
  explicit ThreadTiles(bool amx) {
    if (amx) {
      configure_amx_tiles();
    } else {
      emulated_ = std::make_unique<EmulatedTiles>();
    }
  }
  ~ThreadTiles() {
    if (emulated_ == nullptr) release_amx_tiles();
  }
  ThreadTiles(const ThreadTiles&) = delete;
  ThreadTiles& operator=(const ThreadTiles&) = delete;

  EmulatedTiles* emulated() const { return emulated_.get(); }

 private:
  std::unique_ptr<EmulatedTiles> emulated_;
};

inline void pack_tokens_scalar(const float* x, int64_t ldx, int64_t tokens, int64_t cols,
                               int64_t k_steps, int64_t tt0, int64_t tt1, uint16_t* b) {
  for (int64_t tt = tt0; tt < tt1; ++tt) {
    for (int64_t ks = 0; ks < k_steps; ++ks) {
      uint16_t* tile = b + (tt * k_steps + ks) * kTileElems;
      for (int64_t p = 0; p < 16; ++p) {
        for (int64_t t = 0; t < 16; ++t) {
          for (int64_t h = 0; h < 2; ++h) {
            const int64_t token = tt * 16 + t, col = ks * 32 + 2 * p + h;
            tile[p * 32 + t * 2 + h] =
                token < tokens && col < cols ? to_bf16(x[token * ldx + col]) : 0;
          }
        }
      }
    }
  }
}

}  // namespace strata::cpu::amx_detail
