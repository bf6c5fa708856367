// rope_table + rope_store_kv (one launch per layer in the decode step) against rope(q), rope(k)
// and store_kv run separately: q, and every byte of the paged cache, must be bit-identical, for
// both RoPE styles, partial rotation (rope_dims < head_dim), every KV type (f32, f16, q8_0) and
// block tables in random order.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "gpu_backend/elementwise.h"
#include "gpu_backend/gpu_kv_view.h"
#include "tests/gpu_backend/gpu_test_fixture.h"

namespace strata {
namespace {

class RopeStoreTest : public strata::testing::GpuTest {};

TEST_F(RopeStoreTest, EqualsRopeThenStoreBitForBit) {
  std::mt19937_64 rng(std::random_device{}());
  struct Case {
    gpu::AttentionShape shape;
    int64_t rope_dims;
    RopeStyle style;
    DType kv_type;
    int64_t n_tokens, pos0;
  };
  const Case cases[] = {
      {{32, 8, 128}, 128, RopeStyle::kAdjacentPairs, DType::kF16, 1, 4000},
      {{32, 8, 128}, 128, RopeStyle::kNeoxHalves, DType::kF32, 5, 17},
      {{4, 2, 8}, 8, RopeStyle::kAdjacentPairs, DType::kF32, 20, 0},
      {{8, 2, 64}, 32, RopeStyle::kNeoxHalves, DType::kF16, 3, 99},
      {{32, 8, 128}, 128, RopeStyle::kAdjacentPairs, DType::kQ8_0, 7, 250},
      {{8, 2, 64}, 32, RopeStyle::kNeoxHalves, DType::kQ8_0, 2, 15},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("head_dim " + std::to_string(c.shape.head_dim) + " rope_dims " +
                 std::to_string(c.rope_dims) + " tokens " + std::to_string(c.n_tokens));
    const int64_t n = c.n_tokens, q_dim = c.shape.n_head * c.shape.head_dim;
    const int64_t kv_dim = c.shape.n_head_kv * c.shape.head_dim;
    const int64_t block_tokens = 16, n_layer = 2, layer = 1;
    const int64_t num_blocks = (c.pos0 + n + block_tokens - 1) / block_tokens;
    const int64_t row_bytes =
        c.kv_type == DType::kQ8_0 ? kv_dim / 32 * 34 : kv_dim * (c.kv_type == DType::kF16 ? 2 : 4);
    const int64_t block_bytes = block_tokens * row_bytes;
    const int64_t entries = num_blocks * n_layer * 2;
    std::vector<int64_t> slot(static_cast<size_t>(entries));
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), rng);
    // Two caches with the same shuffled table layout; each starts as 0xFF poison.
    auto make_view = [&](uint8_t* pool) {
      std::vector<void*> table(static_cast<size_t>(entries));
      for (int64_t e = 0; e < entries; ++e) table[e] = pool + slot[e] * block_bytes;
      gpu::GpuKvView v;
      v.block_table = upload(table);
      v.n_layer = n_layer;
      v.num_tokens = c.pos0 + n;
      v.block_tokens = block_tokens;
      v.kv_dim = kv_dim;
      v.dtype = c.kv_type;
      return v;
    };
    auto* pool_a = static_cast<uint8_t*>(device_alloc(entries * block_bytes));
    auto* pool_b = static_cast<uint8_t*>(device_alloc(entries * block_bytes));
    gpu::GpuKvView view_a = make_view(pool_a), view_b = make_view(pool_b);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(c.pos0 + i);
    const int32_t* dpos = upload(pos);
    view_b.positions = dpos;

    const std::vector<float> q = random_floats(n * q_dim, 2.0f);
    const std::vector<float> k = random_floats(n * kv_dim, 2.0f);
    const std::vector<float> v = random_floats(n * kv_dim, 2.0f);
    float* qa = upload(q);
    float* ka = upload(k);
    float* qb = upload(q);
    const float* kb = upload(k);
    const float* vd = upload(v);

    const double theta = 500000.0;
    ASSERT_TRUE(gpu::rope(qa, n, c.shape.n_head, c.shape.head_dim, c.rope_dims, dpos, theta,
                          c.style, stream())
                    .is_ok());
    ASSERT_TRUE(gpu::rope(ka, n, c.shape.n_head_kv, c.shape.head_dim, c.rope_dims, dpos, theta,
                          c.style, stream())
                    .is_ok());
    ASSERT_TRUE(gpu::store_kv(ka, vd, n, c.pos0, view_a, layer, stream()).is_ok());

    auto* table = device_output(n * c.rope_dims);
    ASSERT_TRUE(gpu::rope_table(dpos, n, c.rope_dims, theta, table, stream()).is_ok());
    const Status st = gpu::rope_store_kv(qb, kb, vd, n, table, c.shape, c.rope_dims, c.style,
                                         view_b, layer, stream());
    ASSERT_TRUE(st.is_ok()) << st.to_string();

    const std::vector<float> qa_host = download(qa, n * q_dim), qb_host = download(qb, n * q_dim);
    ASSERT_EQ(0, std::memcmp(qa_host.data(), qb_host.data(), qa_host.size() * 4));
    for (float f : qb_host) ASSERT_TRUE(std::isfinite(f));
    const std::vector<uint8_t> a = download(pool_a, entries * block_bytes);
    const std::vector<uint8_t> b = download(pool_b, entries * block_bytes);
    EXPECT_TRUE(a == b) << "the caches differ";
  }
}

TEST_F(RopeStoreTest, NeedsDevicePositions) {
  gpu::GpuKvView view;
  view.n_layer = 1;
  view.kv_dim = 8;
  view.block_tokens = 16;
  const Status st = gpu::rope_store_kv(nullptr, nullptr, nullptr, 1, nullptr, {1, 1, 8}, 8,
                                       RopeStyle::kAdjacentPairs, view, 0, stream());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata
