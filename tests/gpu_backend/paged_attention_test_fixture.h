// PagedAttentionTest: the fixture of the GPU attention tests. It builds one sequence's paged KV
// cache of kPagedLayers layers twice, as host bytes (cpu::attention, the reference, reads them) and
// as their device copy (the kernels read it), with the physical blocks in a random order that is
// never the identity, and rows past the sequence set to NaN so that a read beyond it fails.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cpu_backend/attention.h"
#include "gpu_backend/gpu_kv_view.h"
#include "memory/kv_view.h"
#include "offload/core/dtype.h"
#include "offload/core/quantize.h"
#include "tests/gpu_backend/gpu_test_fixture.h"

namespace strata::gpu {

inline constexpr int64_t kLayers = 2;
inline constexpr int64_t kLayer = 1;  // the layer under test; layer 0 holds other random values

class PagedAttentionTest : public strata::testing::GpuTest {
 protected:
  // One sequence of `num_tokens` in a paged cache of kLayers layers: host bytes (the reference
  // reads them) and their device copy (the kernels read it), in the same shuffled slot order.
  struct PagedCache {
    std::vector<uint8_t> host_slots;    // [slot][block_tokens][kv_dim] elements
    std::vector<void*> host_k, host_v;  // layer kLayer's logical blocks -> host slots
    KvLayerView host_view;
    GpuKvView device_view;
  };

  PagedCache make_cache(const AttentionShape& shape, DType dtype, int64_t num_tokens,
                        int64_t block_tokens) {
    const int64_t kv_dim = shape.n_head_kv * shape.head_dim;
    const int64_t bt = block_tokens;
    const int64_t row_bytes = kv_bytes(dtype, kv_dim);
    const int64_t slot_bytes = bt * row_bytes;
    const int64_t n_blocks = (num_tokens + bt - 1) / bt;
    const int64_t n_slots = n_blocks * kLayers * 2;

    // Which physical slot holds (block, layer, K/V): a random permutation, never the identity.
    std::vector<int64_t> slot_of(static_cast<size_t>(n_slots));
    std::iota(slot_of.begin(), slot_of.end(), 0);
    std::mt19937 rng{std::random_device{}()};
    do {
      std::shuffle(slot_of.begin(), slot_of.end(), rng);
    } while (n_slots > 1 && std::is_sorted(slot_of.begin(), slot_of.end()));

    std::vector<int64_t> entry_of(static_cast<size_t>(n_slots));  // the inverse permutation
    for (int64_t entry = 0; entry < n_slots; ++entry) entry_of[slot_of[entry]] = entry;

    PagedCache c;
    c.host_slots.resize(static_cast<size_t>(n_slots * slot_bytes));
    const std::vector<float> values = random_floats(n_slots * bt * kv_dim);
    for (int64_t slot = 0; slot < n_slots; ++slot) {
      // Which logical block this slot holds decides which of its rows are past the sequence.
      const int64_t block = entry_of[static_cast<size_t>(slot)] / (kLayers * 2);
      for (int64_t row = 0; row < bt; ++row) {
        if (dtype == DType::kQ8_0) {  // as the executors store it: the CPU's quantizer
          std::vector<float> x(values.begin() + (slot * bt + row) * kv_dim,
                               values.begin() + (slot * bt + row + 1) * kv_dim);
          if (block * bt + row >= num_tokens) std::fill(x.begin(), x.end(), NAN);  // NaN scales
          uint8_t* dst = c.host_slots.data() + (slot * bt + row) * row_bytes;
          if (!quantize_row(DType::kQ8_0, x.data(), dst, kv_dim).is_ok()) ADD_FAILURE();
          continue;
        }
        for (int64_t i = 0; i < kv_dim; ++i) {
          const int64_t e = (slot * bt + row) * kv_dim + i;
          float x = values[static_cast<size_t>(e)];
          if (block * bt + row >= num_tokens) x = NAN;  // never to be read
          if (dtype == DType::kF16) {
            const uint16_t h = f32_to_f16(x);
            std::memcpy(c.host_slots.data() + e * 2, &h, 2);
          } else {
            std::memcpy(c.host_slots.data() + e * 4, &x, 4);
          }
        }
      }
    }

    auto* device_slots = upload(c.host_slots);
    std::vector<void*> table(static_cast<size_t>(n_slots));
    c.host_k.resize(static_cast<size_t>(n_blocks));
    c.host_v.resize(static_cast<size_t>(n_blocks));
    for (int64_t b = 0; b < n_blocks; ++b) {
      for (int64_t layer = 0; layer < kLayers; ++layer) {
        for (int64_t kv = 0; kv < 2; ++kv) {
          const int64_t entry = (b * kLayers + layer) * 2 + kv;
          const int64_t offset = slot_of[static_cast<size_t>(entry)] * slot_bytes;
          table[static_cast<size_t>(entry)] = device_slots + offset;
          if (layer == kLayer) (kv == 0 ? c.host_k : c.host_v)[b] = c.host_slots.data() + offset;
        }
      }
    }
    c.device_view.block_table = upload(table);
    c.device_view.n_layer = kLayers;
    c.device_view.num_tokens = num_tokens;
    c.device_view.block_tokens = bt;
    c.device_view.kv_dim = kv_dim;
    c.device_view.dtype = dtype;

    c.host_view.k_blocks = c.host_k.data();
    c.host_view.v_blocks = c.host_v.data();
    c.host_view.num_blocks = n_blocks;
    c.host_view.num_tokens = num_tokens;
    c.host_view.block_tokens = bt;
    c.host_view.kv_dim = kv_dim;
    c.host_view.dtype = dtype;
    return c;
  }

  // cpu::attention of q [n_tokens][n_head * head_dim] at positions pos0.. over the host view.
  static std::vector<float> reference(const std::vector<float>& q, const AttentionShape& s,
                                      int64_t n_tokens, int64_t pos0, const KvLayerView& kv) {
    const cpu::AttentionShape shape{s.n_head, s.n_head_kv, s.head_dim};
    std::vector<int32_t> positions(static_cast<size_t>(n_tokens));
    std::iota(positions.begin(), positions.end(), static_cast<int32_t>(pos0));
    std::vector<float> scratch(
        static_cast<size_t>(cpu::attention_scratch_floats(kv.num_tokens, shape)));
    std::vector<float> out(q.size());
    cpu::attention(q.data(), n_tokens, positions.data(), kv, shape, out.data(), scratch.data());
    return out;
  }
};

}  // namespace strata::gpu
