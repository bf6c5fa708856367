// A paged KV layer of random rows in shuffled blocks (rows past the sequence NaN) and a float64
// attention over it, for the CPU attention tests (attention_range_test.cpp, attention_amx_test.cpp).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cpu_backend/attention.h"
#include "offload/core/dequantize.h"
#include "offload/core/dtype.h"
#include "offload/core/quantize.h"

namespace strata::cpu::testing_kv {

struct Paged {
  std::vector<uint8_t> bytes;
  std::vector<void*> k, v;
  KvLayerView view;
};

inline Paged make_paged(std::mt19937& rng, const AttentionShape& s, DType dtype, int64_t tokens,
                 int64_t bt) {
  const int64_t kv_dim = s.n_head_kv * s.head_dim, row_bytes = kv_bytes(dtype, kv_dim);
  const int64_t blocks = (tokens + bt - 1) / bt, slot = bt * row_bytes;
  std::vector<int64_t> order(static_cast<size_t>(2 * blocks));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  Paged p;
  p.bytes.resize(static_cast<size_t>(2 * blocks * slot));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int kv = 0; kv < 2; ++kv) {
      uint8_t* base = p.bytes.data() + order[static_cast<size_t>(2 * b + kv)] * slot;
      (kv == 0 ? p.k : p.v).push_back(base);
      for (int64_t r = 0; r < bt; ++r) {
        const bool live = b * bt + r < tokens;  // rows past the sequence are NaN
        std::vector<float> row(static_cast<size_t>(kv_dim));
        for (float& x : row) x = live ? normal(rng) : NAN;
        uint8_t* dst = base + r * row_bytes;
        if (dtype == DType::kQ8_0) {
          if (live) {
            EXPECT_TRUE(quantize_row(DType::kQ8_0, row.data(), dst, kv_dim).is_ok());
          } else {
            std::memset(dst, 0xFF, static_cast<size_t>(row_bytes));  // NaN scales
          }
          continue;
        }
        for (int64_t i = 0; i < kv_dim; ++i) {
          if (dtype == DType::kF16) {
            const uint16_t h = f32_to_f16(row[static_cast<size_t>(i)]);
            std::memcpy(dst + i * 2, &h, 2);
          } else {
            std::memcpy(dst + i * 4, &row[static_cast<size_t>(i)], 4);
          }
        }
      }
    }
  }
  p.view = KvLayerView{p.k.data(), p.v.data(), blocks, tokens, bt, kv_dim, dtype};
  return p;
}

inline double kv_at(const KvLayerView& v, bool is_v, int64_t t, int64_t i) {
  const void* row = is_v ? kv_v_row(v, t) : kv_k_row(v, t);
  if (v.dtype == DType::kF16) return f16_to_f32(static_cast<const uint16_t*>(row)[i]);
  if (v.dtype == DType::kQ8_0) {  // the stored value, by the format's own dequantizer
    std::vector<float> values(static_cast<size_t>(v.kv_dim));
    EXPECT_TRUE(dequantize_row(DType::kQ8_0, row, values.data(), v.kv_dim).is_ok());
    return values[static_cast<size_t>(i)];
  }
  return static_cast<const float*>(row)[i];
}

// float64 attention of query row t over keys [begin, min(end, pos + 1)).
inline std::vector<double> reference(const float* q, int64_t pos, const KvLayerView& kv,
                              const AttentionShape& s, int64_t begin, int64_t end) {
  const int64_t hd = s.head_dim, group = s.n_head / s.n_head_kv;
  std::vector<double> out(static_cast<size_t>(s.n_head * hd), 0.0);
  const int64_t stop = std::min(end, pos + 1);
  for (int64_t h = 0; h < s.n_head; ++h) {
    const int64_t kvh = h / group;
    std::vector<double> sc;
    double m = -INFINITY;
    for (int64_t t = begin; t < stop; ++t) {
      double d = 0;
      for (int64_t i = 0; i < hd; ++i) d += q[h * hd + i] * kv_at(kv, false, t, kvh * hd + i);
      sc.push_back(d / std::sqrt(static_cast<double>(hd)));
      m = std::max(m, sc.back());
    }
    double sum = 0;
    for (double& x : sc) sum += (x = std::exp(x - m));
    for (int64_t t = begin; t < stop; ++t) {
      for (int64_t i = 0; i < hd; ++i) {
        out[h * hd + i] += sc[t - begin] / sum * kv_at(kv, true, t, kvh * hd + i);
      }
    }
  }
  return out;
}

}  // namespace strata::cpu::testing_kv
