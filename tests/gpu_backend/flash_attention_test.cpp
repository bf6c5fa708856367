// flash_attention_prefill against the CPU reference (cpu::attention, float32 over the same f16 KV
// values) on a paged f16 KV cache: Llama-3-8B's heads (32 / 8 / 128) and a head_dim-64 model
// (16 / 4 / 64), chunks of 1 .. 300 tokens (whole, partial and single query tiles), contexts
// longer than the chunk (pos0 100 and 1000), block sizes that do and do not divide the key tile.
// The cache has two layers and layer 1 is read; its blocks sit in shuffled physical slots, rows
// past the sequence are NaN, outputs start as NaN (the fixture), and the inputs are fresh random
// numbers on every run. The tolerance, 3e-3 relative L2, is f16's rounding of q and of the
// probabilities; a NaN anywhere fails it.
#include "gpu_backend/flash_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cpu_backend/attention.h"
#include "gpu_backend/attention.h"
#include "gpu_backend/cublas.h"
#include "memory/kv_view.h"
#include "offload/core/dtype.h"
#include "tests/gpu_backend/paged_attention_test_fixture.h"

namespace strata::gpu {
namespace {

constexpr double kTolerance = 3e-3;

struct Model {
  const char* name;
  AttentionShape shape;
};
const Model kLlama3_8b{"llama3-8b", {32, 8, 128}};
const Model kHeadDim64{"head_dim-64", {16, 4, 64}};

struct Case {
  Model model;
  int64_t n_tokens = 1;
  int64_t pos0 = 0;
  int64_t block_tokens = 16;

  std::string describe() const {
    return std::string(model.name) + " n_tokens " + std::to_string(n_tokens) + " pos0 " +
           std::to_string(pos0) + " block_tokens " + std::to_string(block_tokens);
  }
};

class FlashAttentionTest : public PagedAttentionTest {
 protected:
  // rel L2 of the kernel's output against the CPU's for one case (infinity on NaN or failure).
  double run_case(const Case& c) {
    const AttentionShape& shape = c.model.shape;
    PagedCache cache = make_cache(shape, DType::kF16, c.pos0 + c.n_tokens, c.block_tokens);
    const int64_t q_dim = shape.n_head * shape.head_dim;
    const std::vector<float> q = random_floats(c.n_tokens * q_dim);
    const float* device_q = upload(q);
    float* device_out = device_output(c.n_tokens * q_dim);
    const Status status = flash_attention_prefill(device_q, c.n_tokens, c.pos0, cache.device_view,
                                                  kLayer, shape, device_out, stream());
    EXPECT_TRUE(status.is_ok()) << status.to_string();
    if (!status.is_ok()) return INFINITY;
    const std::vector<float> got = download(device_out, c.n_tokens * q_dim);
    return rel_l2(got, reference(q, c.model.shape, c.n_tokens, c.pos0, cache.host_view));
  }
};

TEST(FlashAttentionSupport, HeadDims64And128OverAnF16Cache) {
  EXPECT_TRUE(flash_attention_supported({32, 8, 128}, DType::kF16));
  EXPECT_TRUE(flash_attention_supported({16, 4, 64}, DType::kF16));
  EXPECT_TRUE(flash_attention_supported({8, 8, 64}, DType::kF16));
  EXPECT_FALSE(flash_attention_supported({32, 8, 128}, DType::kF32));
  EXPECT_FALSE(flash_attention_supported({4, 2, 8}, DType::kF16));  // the tiny test models
  EXPECT_FALSE(flash_attention_supported({8, 2, 96}, DType::kF16));
  EXPECT_FALSE(flash_attention_supported({8, 3, 64}, DType::kF16));  // no whole KV groups
  EXPECT_FALSE(flash_attention_supported({8, 0, 64}, DType::kF16));
}

TEST_F(FlashAttentionTest, MatchesCpu) {
  for (const Model& model : {kLlama3_8b, kHeadDim64}) {
    for (int64_t n_tokens : {1, 37, 64, 200, 300}) {
      for (int64_t pos0 : {0, 100, 1000}) {
        Case c{model};
        c.n_tokens = n_tokens;
        c.pos0 = pos0;
        SCOPED_TRACE(c.describe());
        EXPECT_LE(run_case(c), kTolerance);
      }
    }
  }
}

// Key tiles of 64 that start and end inside a block, blocks of one row, and a block larger than
// the sequence.
TEST_F(FlashAttentionTest, ReadsAnyBlockSize) {
  for (const Model& model : {kLlama3_8b, kHeadDim64}) {
    for (int64_t block_tokens : {1, 7, 40, 256}) {
      Case c{model};
      c.n_tokens = 130;
      c.pos0 = 33;
      c.block_tokens = block_tokens;
      SCOPED_TRACE(c.describe());
      EXPECT_LE(run_case(c), kTolerance);
    }
  }
}

// GpuAttention's prefill with f16 math over an f16 cache is this kernel: the same bits (the
// kernel is deterministic; the GEMM path rounds differently), and still close to the CPU.
TEST_F(FlashAttentionTest, GpuAttentionF16PrefillRunsThisKernel) {
  const Model& model = kLlama3_8b;
  const AttentionShape& shape = model.shape;
  Case c{model};
  c.n_tokens = 200;
  c.pos0 = 100;
  PagedCache cache = make_cache(shape, DType::kF16, c.pos0 + c.n_tokens, c.block_tokens);
  const int64_t q_dim = shape.n_head * shape.head_dim;
  const std::vector<float> q = random_floats(c.n_tokens * q_dim);
  const float* device_q = upload(q);

  float* direct = device_output(c.n_tokens * q_dim);
  ASSERT_TRUE(flash_attention_prefill(device_q, c.n_tokens, c.pos0, cache.device_view, kLayer,
                                      shape, direct, stream())
                  .is_ok());

  auto blas = Cublas::create(arena(), stream());
  ASSERT_TRUE(blas.is_ok()) << blas.status().to_string();
  GpuAttentionOptions options;
  options.shape = shape;
  options.max_context = c.pos0 + c.n_tokens;
  options.max_tokens = c.n_tokens;
  options.precision = GemmPrecision::kF16;
  auto attention = GpuAttention::create(arena(), **blas, options);
  ASSERT_TRUE(attention.is_ok()) << attention.status().to_string();
  float* routed = device_output(c.n_tokens * q_dim);
  const Status status =
      (*attention)->run(device_q, c.n_tokens, c.pos0, cache.device_view, kLayer, routed, stream());
  ASSERT_TRUE(status.is_ok()) << status.to_string();

  const std::vector<float> want = download(direct, c.n_tokens * q_dim);
  const std::vector<float> got = download(routed, c.n_tokens * q_dim);
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
  EXPECT_LE(rel_l2(got, reference(q, c.model.shape, c.n_tokens, c.pos0, cache.host_view)),
            kTolerance);
}

TEST_F(FlashAttentionTest, RejectsBrokenRequirements) {
  const AttentionShape shape = kHeadDim64.shape;
  PagedCache cache = make_cache(shape, DType::kF16, 40, 16);
  const int64_t q_dim = shape.n_head * shape.head_dim;
  const float* q = upload(random_floats(8 * q_dim));
  float* out = device_output(8 * q_dim);
  auto code = [&](const float* q_in, int64_t n, int64_t pos0, const GpuKvView& kv, int64_t layer,
                  const AttentionShape& s) {
    return flash_attention_prefill(q_in, n, pos0, kv, layer, s, out, stream()).code();
  };

  // pos0 + n_tokens != kv.num_tokens.
  EXPECT_EQ(code(q, 2, 37, cache.device_view, kLayer, shape), StatusCode::kInvalidArgument);
  // A layer the cache does not have.
  EXPECT_EQ(code(q, 1, 39, cache.device_view, kLayers, shape), StatusCode::kInvalidArgument);
  // A KV row that does not fit the shape.
  AttentionShape wide = shape;
  wide.n_head_kv = 8;
  EXPECT_EQ(code(q, 1, 39, cache.device_view, kLayer, wide), StatusCode::kInvalidArgument);
  // A head_dim the kernel does not take, and an f32 cache.
  AttentionShape tiny = {4, 2, 8};
  GpuKvView tiny_view = cache.device_view;
  tiny_view.kv_dim = 16;
  EXPECT_EQ(code(q, 1, 39, tiny_view, kLayer, tiny), StatusCode::kInvalidArgument);
  PagedCache f32_cache = make_cache(shape, DType::kF32, 40, 16);
  EXPECT_EQ(code(q, 1, 39, f32_cache.device_view, kLayer, shape), StatusCode::kInvalidArgument);
  // No query: nothing to do.
  EXPECT_TRUE(
      flash_attention_prefill(q, 0, 40, cache.device_view, kLayer, shape, out, stream()).is_ok());
  // And the same call with everything right succeeds.
  EXPECT_EQ(code(q, 8, 32, cache.device_view, kLayer, shape), StatusCode::kOk);
  EXPECT_TRUE(stream().synchronize().is_ok());
}

}  // namespace
}  // namespace strata::gpu
