// GpuAttention against the CPU reference (cpu::attention) on the same paged KV cache: decode
// (flash-decoding, one or several pieces, pieces past a query's causal limit) and prefill (the
// cuBLAS path, f32 and f16 math), f32, f16 and q8_0 caches (q8_0 where head_dim is a multiple of
// 32: Llama-3-8B's heads; its blocks decode exactly, so the same tolerances hold), the tiny golden
// model's heads (4 / 2 / 8)
// and Llama-3-8B's (32 / 8 / 128). The cache has two layers and layer 1 is read; its blocks sit
// in shuffled physical slots, rows past the sequence are NaN, outputs start as NaN (the fixture),
// and the inputs are fresh random numbers on every run.
#include "gpu_backend/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cpu_backend/attention.h"
#include "gpu_backend/cublas.h"
#include "memory/kv_view.h"
#include "offload/core/dtype.h"
#include "tests/gpu_backend/paged_attention_test_fixture.h"

namespace strata::gpu {
namespace {

struct Model {
  const char* name;
  AttentionShape shape;
  int64_t block_tokens;
  int64_t split_tokens;  // decode pieces: block_tokens need not divide it
};
const Model kTiny{"tiny", {4, 2, 8}, 24, 64};
const Model kLlama3_8b{"llama3-8b", {32, 8, 128}, 16, 256};

// The KV types a model's heads can have: q8_0 needs head_dim a multiple of 32.
std::vector<DType> kv_types(const Model& model) {
  if (model.shape.head_dim % 32 != 0) return {DType::kF32, DType::kF16};
  return {DType::kF32, DType::kF16, DType::kQ8_0};
}

struct Case {
  Model model;
  DType kv_dtype = DType::kF32;
  int64_t n_tokens = 1;
  int64_t pos0 = 0;
  int64_t gemm_min_tokens = 32;
  int64_t query_tile_tokens = 256;
  GemmPrecision precision = GemmPrecision::kF32;

  std::string describe() const {
    return std::string(model.name) + " kv " + dtype_name(kv_dtype) + " n_tokens " +
           std::to_string(n_tokens) + " pos0 " + std::to_string(pos0) + " gemm_min " +
           std::to_string(gemm_min_tokens) + " tile " + std::to_string(query_tile_tokens) +
           (precision == GemmPrecision::kF16 ? " f16 math" : " f32 math");
  }
};

class GpuAttentionTest : public PagedAttentionTest {
 protected:
  // rel L2 of the GPU's output against the CPU's for one case (infinity on NaN or a failure).
  double run_case(const Case& c) {
    const AttentionShape& shape = c.model.shape;
    const int64_t num_tokens = c.pos0 + c.n_tokens;
    PagedCache cache = make_cache(c.model.shape, c.kv_dtype, num_tokens, c.model.block_tokens);
    const int64_t q_dim = shape.n_head * shape.head_dim;
    const std::vector<float> q = random_floats(c.n_tokens * q_dim);

    auto blas = Cublas::create(arena(), stream());
    EXPECT_TRUE(blas.is_ok()) << blas.status().to_string();
    if (!blas.is_ok()) return INFINITY;
    GpuAttentionOptions options;
    options.shape = shape;
    options.max_context = num_tokens + 5;  // a little headroom, as a real cache has
    options.max_tokens = c.n_tokens;
    options.gemm_min_tokens = c.gemm_min_tokens;
    options.query_tile_tokens = c.query_tile_tokens;
    options.split_tokens = c.model.split_tokens;
    options.precision = c.precision;
    auto attention = GpuAttention::create(arena(), **blas, options);
    EXPECT_TRUE(attention.is_ok()) << attention.status().to_string();
    if (!attention.is_ok()) return INFINITY;
    EXPECT_GT((*attention)->workspace_bytes(), 0);

    const float* device_q = upload(q);
    float* device_out = device_output(c.n_tokens * q_dim);
    GpuAttention& gpu = **attention;
    const Status status =
        gpu.run(device_q, c.n_tokens, c.pos0, cache.device_view, kLayer, device_out, stream());
    EXPECT_TRUE(status.is_ok()) << status.to_string();
    if (!status.is_ok()) return INFINITY;
    const std::vector<float> got = download(device_out, c.n_tokens * q_dim);
    return rel_l2(got, reference(q, c.model.shape, c.n_tokens, c.pos0, cache.host_view));
  }
};

TEST_F(GpuAttentionTest, DecodeOneTokenMatchesCpu) {
  for (const Model& model : {kTiny, kLlama3_8b}) {
    for (DType dtype : kv_types(model)) {
      for (int64_t context : {1, 17, 300, 1000}) {
        Case c{model, dtype};
        c.n_tokens = 1;
        c.pos0 = context - 1;
        SCOPED_TRACE(c.describe());
        EXPECT_LE(run_case(c), 1e-5);
      }
    }
  }
}

TEST_F(GpuAttentionTest, DecodeSeveralTokensIsCausal) {
  for (const Model& model : {kTiny, kLlama3_8b}) {
    for (DType dtype : kv_types(model)) {
      for (int64_t context : {3, 17, 300, 1000}) {
        Case c{model, dtype};
        c.n_tokens = 3;
        c.pos0 = context - 3;
        SCOPED_TRACE(c.describe());
        EXPECT_LE(run_case(c), 1e-5);
      }
    }
  }
}

// The last piece holds a key of the last query only: the earlier queries' blocks for it do
// nothing and their merge must leave it out.
TEST_F(GpuAttentionTest, PiecesPastTheCausalLimitAreSkipped) {
  for (const Model& model : {kTiny, kLlama3_8b}) {
    for (DType dtype : kv_types(model)) {
      Case c{model, dtype};
      c.n_tokens = 3;
      c.pos0 = 2 * model.split_tokens + 1 - c.n_tokens;  // 2 full pieces and 1 key
      SCOPED_TRACE(c.describe());
      EXPECT_LE(run_case(c), 1e-5);
    }
  }
}

// Split decode (run_decode_partial + merge_attention_parts), as the GPU executor will split a
// tiered sequence: the GPU attends the blocks its table keeps, the CPU (cpu::attention_range) the
// masked ones, block by block; merged through the log-sum-exps the result is the attention over
// everything. Masks: random blocks, every block (the GPU part is empty), none (the CPU part is).
TEST_F(GpuAttentionTest, SplitDecodeMergedWithTheCpuPartMatchesCpu) {
  std::mt19937 rng{std::random_device{}()};
  for (const Model& model : {kTiny, kLlama3_8b}) {
    for (DType dtype : kv_types(model)) {
      for (int64_t context : {40, 300, 1000}) {
        for (int64_t n_tokens : {1, 3}) {
          for (int mask_kind = 0; mask_kind < 3; ++mask_kind) {
            const AttentionShape& shape = model.shape;
            const int64_t bt = model.block_tokens;
            const int64_t pos0 = context - n_tokens;
            SCOPED_TRACE(std::string(model.name) + " " + dtype_name(dtype) + " context " +
                         std::to_string(context) + " tokens " + std::to_string(n_tokens) +
                         " mask " + std::to_string(mask_kind));
            PagedCache cache = make_cache(shape, dtype, context, bt);
            const int64_t n_blocks = (context + bt - 1) / bt;
            std::vector<bool> masked(static_cast<size_t>(n_blocks));
            for (int64_t b = 0; b < n_blocks; ++b) {
              masked[b] = mask_kind == 0 ? rng() % 2 == 0 : mask_kind == 1;
            }
            // The GPU's table: masked blocks' entries null in every layer.
            std::vector<void*> table =
                download(cache.device_view.block_table, n_blocks * kLayers * 2);
            for (int64_t b = 0; b < n_blocks; ++b) {
              for (int64_t e = 0; e < kLayers * 2 && masked[b]; ++e) {
                table[static_cast<size_t>(b * kLayers * 2 + e)] = nullptr;
              }
            }
            GpuKvView hot = cache.device_view;
            hot.block_table = upload(table);

            const int64_t q_dim = shape.n_head * shape.head_dim;
            const int64_t rows = n_tokens * shape.n_head;
            const std::vector<float> q = random_floats(n_tokens * q_dim);
            auto blas = Cublas::create(arena(), stream());
            ASSERT_TRUE(blas.is_ok()) << blas.status().to_string();
            GpuAttentionOptions options;
            options.shape = shape;
            options.max_context = context;
            options.max_tokens = n_tokens;
            options.split_tokens = model.split_tokens;
            auto attention = GpuAttention::create(arena(), **blas, options);
            ASSERT_TRUE(attention.is_ok()) << attention.status().to_string();
            float* out = device_output(n_tokens * q_dim);
            float* lse = device_output(rows);
            Status st = (*attention)
                            ->run_decode_partial(upload(q), n_tokens, pos0, hot, kLayer, out, lse,
                                                 stream());
            ASSERT_TRUE(st.is_ok()) << st.to_string();

            // The CPU part: every masked block, merged one by one into an empty part.
            const cpu::AttentionShape cs{shape.n_head, shape.n_head_kv, shape.head_dim};
            std::vector<int32_t> positions(static_cast<size_t>(n_tokens));
            std::iota(positions.begin(), positions.end(), static_cast<int32_t>(pos0));
            std::vector<float> scratch(
                static_cast<size_t>(cpu::attention_scratch_floats(context, cs)));
            std::vector<float> cpu_out(static_cast<size_t>(n_tokens * q_dim), 0.0f);
            std::vector<float> cpu_lse(static_cast<size_t>(rows), -INFINITY);
            std::vector<float> part_out(cpu_out.size()), part_lse(cpu_lse.size());
            for (int64_t b = 0; b < n_blocks; ++b) {
              if (!masked[b]) continue;
              cpu::attention_range(q.data(), n_tokens, positions.data(), cache.host_view, cs,
                                   b * bt, std::min(context, (b + 1) * bt), part_out.data(),
                                   part_lse.data(), scratch.data());
              cpu::merge_attention(cpu_out.data(), cpu_lse.data(), part_out.data(), part_lse.data(),
                                   rows, shape.head_dim, cpu_out.data(), cpu_lse.data());
            }
            st = merge_attention_parts(out, lse, upload(cpu_out), upload(cpu_lse), rows,
                                       shape.head_dim, stream());
            ASSERT_TRUE(st.is_ok()) << st.to_string();
            const std::vector<float> got = download(out, n_tokens * q_dim);
            EXPECT_LE(rel_l2(got, reference(q, shape, n_tokens, pos0, cache.host_view)), 1e-5);
            for (float x : download(lse, rows)) EXPECT_TRUE(std::isfinite(x));
          }
        }
      }
    }
  }
}

TEST_F(GpuAttentionTest, PrefillMatchesCpu) {
  for (const Model& model : {kTiny, kLlama3_8b}) {
    for (DType dtype : kv_types(model)) {
      for (GemmPrecision precision : {GemmPrecision::kF32, GemmPrecision::kF16}) {
        for (int64_t n_tokens : {64, 300}) {
          for (int64_t pos0 : {0, 100}) {
            Case c{model, dtype};
            c.n_tokens = n_tokens;
            c.pos0 = pos0;
            c.query_tile_tokens = 128;  // 300 tokens: three tiles, the last a partial one
            c.precision = precision;
            SCOPED_TRACE(c.describe());
            EXPECT_LE(run_case(c), precision == GemmPrecision::kF32 ? 1e-5 : 2e-3);
          }
        }
      }
    }
  }
}

// gemm_min_tokens = 1 sends even a single query through cuBLAS: tiny tiles and a one-key row.
TEST_F(GpuAttentionTest, PrefillPathHandlesFewTokens) {
  for (const Model& model : {kTiny, kLlama3_8b}) {
    for (int64_t context : {1, 17}) {
      for (int64_t n_tokens : {int64_t{1}, std::min<int64_t>(3, context)}) {
        Case c{model, DType::kF16};
        c.n_tokens = n_tokens;
        c.pos0 = context - n_tokens;
        c.gemm_min_tokens = 1;
        c.query_tile_tokens = 2;
        SCOPED_TRACE(c.describe());
        EXPECT_LE(run_case(c), 1e-5);
      }
    }
  }
}

TEST_F(GpuAttentionTest, RejectsBadOptions) {
  auto blas = Cublas::create(arena(), stream());
  ASSERT_TRUE(blas.is_ok()) << blas.status().to_string();
  GpuAttentionOptions options;
  options.shape = {4, 2, 8};
  options.max_context = 64;
  options.max_tokens = 4;

  GpuAttentionOptions odd_head_dim = options;
  odd_head_dim.shape.head_dim = 12;
  EXPECT_EQ(GpuAttention::create(arena(), **blas, odd_head_dim).status().code(),
            StatusCode::kInvalidArgument);
  GpuAttentionOptions bad_group = options;
  bad_group.shape.n_head_kv = 3;
  EXPECT_EQ(GpuAttention::create(arena(), **blas, bad_group).status().code(),
            StatusCode::kInvalidArgument);
  GpuAttentionOptions huge_split = options;
  huge_split.split_tokens = 1 << 20;
  EXPECT_EQ(GpuAttention::create(arena(), **blas, huge_split).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(GpuAttentionTest, RejectsBrokenRequirements) {
  auto blas = Cublas::create(arena(), stream());
  ASSERT_TRUE(blas.is_ok()) << blas.status().to_string();
  GpuAttentionOptions options;
  options.shape = kTiny.shape;
  options.max_context = 64;
  options.max_tokens = 4;
  options.split_tokens = kTiny.split_tokens;
  auto attention = GpuAttention::create(arena(), **blas, options);
  ASSERT_TRUE(attention.is_ok()) << attention.status().to_string();

  PagedCache cache = make_cache(kTiny.shape, DType::kF32, 40, kTiny.block_tokens);
  const int64_t q_dim = kTiny.shape.n_head * kTiny.shape.head_dim;
  const float* q = upload(random_floats(8 * q_dim));
  float* out = device_output(8 * q_dim);

  // More query tokens than max_tokens.
  EXPECT_EQ((*attention)->run(q, 5, 35, cache.device_view, kLayer, out, stream()).code(),
            StatusCode::kInvalidArgument);
  // pos0 + n_tokens != kv.num_tokens.
  EXPECT_EQ((*attention)->run(q, 2, 37, cache.device_view, kLayer, out, stream()).code(),
            StatusCode::kInvalidArgument);
  // A sequence longer than max_context.
  PagedCache long_cache = make_cache(kTiny.shape, DType::kF32, 70, kTiny.block_tokens);
  EXPECT_EQ((*attention)->run(q, 1, 69, long_cache.device_view, kLayer, out, stream()).code(),
            StatusCode::kInvalidArgument);
  // A q8_0 cache with heads of 8 (q8_0 blocks are 32 elements).
  GpuKvView q8_view = cache.device_view;
  q8_view.dtype = DType::kQ8_0;
  const Status q8 = (*attention)->run(q, 1, 39, q8_view, kLayer, out, stream());
  EXPECT_EQ(q8.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(q8.message().find("multiple of 32"), std::string::npos) << q8.message();
  // A layer the cache does not have.
  EXPECT_EQ((*attention)->run(q, 1, 39, cache.device_view, kLayers, out, stream()).code(),
            StatusCode::kInvalidArgument);
  // And the same call with everything right succeeds.
  EXPECT_TRUE((*attention)->run(q, 1, 39, cache.device_view, kLayer, out, stream()).is_ok());
  EXPECT_TRUE(stream().synchronize().is_ok());
}

}  // namespace
}  // namespace strata::gpu
