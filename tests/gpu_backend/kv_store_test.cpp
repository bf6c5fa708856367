// store_kv into a paged cache whose blocks sit in a pool in random order, as the block allocator
// hands them out. A host model of the pool applies the same stores; the whole pool must then
// equal it byte for byte: the new rows in place (f32 bits, f32_to_f16 of them, or the CPU
// quantizer's Q8_0 blocks of them), and every other byte still the fixture's 0xFF poison, so a row
// in the wrong block or slot shows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gpu_backend/elementwise.h"
#include "gpu_backend/gpu_kv_view.h"
#include "offload/core/dtype.h"
#include "offload/core/quantize.h"
#include "tests/gpu_backend/gpu_test_fixture.h"
#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

struct Store {
  int64_t layer;
  int64_t pos0;
  int64_t n_tokens;
};

class KvStoreTest : public strata::testing::GpuTest {
 protected:
  // A cache of num_blocks blocks x n_layer layers x {K, V}; table entry e uses pool slot slot[e].
  struct Cache {
    gpu::GpuKvView view;
    uint8_t* pool = nullptr;  // device
    int64_t block_bytes = 0;
    int64_t row_bytes = 0;
    std::vector<int64_t> slot;
    std::vector<uint8_t> model;  // what the pool must hold
  };

  Cache make_cache(DType dtype, int64_t n_layer, int64_t num_blocks, int64_t block_tokens,
                   int64_t kv_dim, std::mt19937_64& rng) {
    Cache c;
    c.row_bytes =
        dtype == DType::kQ8_0 ? kv_dim / 32 * 34 : kv_dim * (dtype == DType::kF16 ? 2 : 4);
    c.block_bytes = block_tokens * c.row_bytes;
    const int64_t entries = num_blocks * n_layer * 2;
    c.pool = static_cast<uint8_t*>(device_alloc(entries * c.block_bytes));  // 0xFF
    c.model.assign(static_cast<size_t>(entries * c.block_bytes), 0xFF);
    c.slot.resize(static_cast<size_t>(entries));
    std::iota(c.slot.begin(), c.slot.end(), 0);
    std::shuffle(c.slot.begin(), c.slot.end(), rng);
    std::vector<void*> table(static_cast<size_t>(entries));
    for (int64_t e = 0; e < entries; ++e) table[e] = c.pool + c.slot[e] * c.block_bytes;
    c.view.block_table = upload(table);
    c.view.n_layer = n_layer;
    c.view.num_tokens = num_blocks * block_tokens;
    c.view.block_tokens = block_tokens;
    c.view.kv_dim = kv_dim;
    c.view.dtype = dtype;
    return c;
  }

  // Runs `store` on the GPU with fresh random rows and applies it to the host model.
  void store(Cache& c, const Store& step) {
    const int64_t kv_dim = c.view.kv_dim;
    const std::vector<float> k = random_floats(step.n_tokens * kv_dim, 2.0f);
    const std::vector<float> v = random_floats(step.n_tokens * kv_dim, 2.0f);
    gpu::GpuKvView view = c.view;
    view.num_tokens = step.pos0 + step.n_tokens;  // as after this step's store
    const Status s =
        gpu::store_kv(upload(k), upload(v), step.n_tokens, step.pos0, view, step.layer, stream());
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    for (int64_t t = 0; t < step.n_tokens; ++t) {
      const int64_t pos = step.pos0 + t;
      const int64_t block = pos / view.block_tokens;
      const int64_t row = pos % view.block_tokens;
      for (int which = 0; which < 2; ++which) {
        const int64_t entry = (block * view.n_layer + step.layer) * 2 + which;
        uint8_t* dst = c.model.data() + c.slot[entry] * c.block_bytes + row * c.row_bytes;
        const float* src = (which == 0 ? k : v).data() + t * kv_dim;
        if (view.dtype == DType::kQ8_0) {
          ASSERT_TRUE(quantize_row(DType::kQ8_0, src, dst, kv_dim).is_ok());
          continue;
        }
        for (int64_t i = 0; i < kv_dim; ++i) {
          if (view.dtype == DType::kF16) {
            const uint16_t h = f32_to_f16(src[i]);
            std::memcpy(dst + 2 * i, &h, 2);
          } else {
            std::memcpy(dst + 4 * i, &src[i], 4);
          }
        }
      }
    }
  }

  // "" when the pool equals the model, else the first differing element.
  std::string compare_pool(const Cache& c) {
    const std::vector<uint8_t> got = download(c.pool, static_cast<int64_t>(c.model.size()));
    for (size_t byte = 0; byte < got.size(); ++byte) {
      if (got[byte] == c.model[byte]) continue;
      const int64_t slot = static_cast<int64_t>(byte) / c.block_bytes;
      const int64_t entry = std::find(c.slot.begin(), c.slot.end(), slot) - c.slot.begin();
      const int64_t in_block = static_cast<int64_t>(byte) % c.block_bytes;
      return "table entry " + std::to_string(entry) + " (block " +
             std::to_string(entry / 2 / c.view.n_layer) + ", layer " +
             std::to_string(entry / 2 % c.view.n_layer) + ", " + (entry % 2 ? "V" : "K") +
             "), row " + std::to_string(in_block / c.row_bytes) + ", byte " +
             std::to_string(in_block % c.row_bytes) + " differs";
    }
    return "";
  }
};

TEST_F(KvStoreTest, RowsLandInTheirShuffledBlocks) {
  const uint64_t seed =
      (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // A prefill across block boundaries, a decode step after it, another layer's prefill starting
  // mid-block, and the cache's very last slot.
  const Store stores[] = {{1, 0, 37}, {1, 37, 1}, {0, 20, 50}, {2, 95, 1}};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    SCOPED_TRACE(dtype_name(dtype));
    Cache cache = make_cache(dtype, /*n_layer=*/3, /*num_blocks=*/6, /*block_tokens=*/16,
                             /*kv_dim=*/320, rng);
    for (const Store& s : stores) store(cache, s);
    EXPECT_EQ(compare_pool(cache), "");
  }
}

// Q8_0 rows with values that stress the quantizer: all zeros (scale 0), one large element among
// tiny ones, exact halves (roundf ties away from zero), negative maxima. Byte-equal to the CPU.
TEST_F(KvStoreTest, Q8_0BlocksEqualTheCpuQuantizer) {
  std::mt19937_64 rng{std::random_device{}()};
  Cache cache = make_cache(DType::kQ8_0, /*n_layer=*/1, /*num_blocks=*/1, /*block_tokens=*/4,
                           /*kv_dim=*/128, rng);
  std::vector<float> rows(4 * 128, 0.0f);  // row 0: all zeros
  for (int i = 0; i < 128; ++i) {
    rows[128 + i] = i % 32 == 5 ? -1000.0f : 1e-3f * static_cast<float>(i);
    // amax 127: scale 1, so the halves are exact ties of roundf.
    rows[256 + i] = i % 32 == 0 ? 127.0f : static_cast<float>(i % 32 - 16) + 0.5f;
    rows[384 + i] = -std::ldexp(1.0f, i % 32 - 20);
  }
  std::vector<uint8_t> want(static_cast<size_t>(4 * cache.row_bytes));
  for (int r = 0; r < 4; ++r)
    ASSERT_TRUE(
        quantize_row(DType::kQ8_0, rows.data() + r * 128, want.data() + r * cache.row_bytes, 128)
            .is_ok());
  const float* d = upload(rows);
  ASSERT_TRUE(gpu::store_kv(d, d, 4, 0, cache.view, 0, stream()).is_ok());
  const std::vector<uint8_t> got = download(cache.pool, 2 * cache.block_bytes);
  for (int which = 0; which < 2; ++which) {
    const uint8_t* block = got.data() + cache.slot[which] * cache.block_bytes;
    EXPECT_EQ(0, std::memcmp(block, want.data(), want.size())) << (which ? "V" : "K");
  }
}

// More tokens than a grid's y dimension holds (65535): the kernel loops over them.
TEST_F(KvStoreTest, TokensPastTheGridLimitAreStored) {
  std::mt19937_64 rng{std::random_device{}()};
  Cache cache = make_cache(DType::kF16, /*n_layer=*/1, /*num_blocks=*/18, /*block_tokens=*/4096,
                           /*kv_dim=*/8, rng);
  store(cache, {0, 1000, 70000});
  EXPECT_EQ(compare_pool(cache), "");
}

TEST_F(KvStoreTest, RejectsStoresOutsideTheView) {
  std::mt19937_64 rng{std::random_device{}()};
  Cache cache = make_cache(DType::kF32, 2, 2, 16, 64, rng);
  const float* rows = upload(random_floats(4 * 64));
  Status s = gpu::store_kv(rows, rows, 4, 30, cache.view, 0, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "positions [30, 34)");
  s = gpu::store_kv(rows, rows, 4, 0, cache.view, 2, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "layer 2");
  gpu::GpuKvView bf16 = cache.view;
  bf16.dtype = DType::kBF16;
  s = gpu::store_kv(rows, rows, 4, 0, bf16, 0, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "BF16");
  gpu::GpuKvView q8_odd = cache.view;  // 64-element rows, but said to be 48
  q8_odd.dtype = DType::kQ8_0;
  q8_odd.kv_dim = 48;
  s = gpu::store_kv(rows, rows, 4, 0, q8_odd, 0, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "multiple of 32");
  EXPECT_TRUE(gpu::store_kv(rows, rows, 0, 32, cache.view, 0, stream()).is_ok());
  // None of these wrote anything.
  EXPECT_EQ(compare_pool(cache), "");
}

}  // namespace
}  // namespace strata
