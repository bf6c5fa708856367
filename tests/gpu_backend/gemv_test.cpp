// The GPU decode GEMV (gpu_backend/gemv.h) against a float64 reference over the exactly
// dequantized weights, for every weight type the GPU reads, on fresh random matrices every run:
// the GPU result must be float32 arithmetic over those weights (rel L2 well under 1e-5).
// Also the weight repacking (gpu_weight.h), which needs no GPU and runs in CI.
#include "gpu_backend/gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gpu_backend/elementwise.h"
#include "gpu_backend/gemv_tuning.h"
#include "gpu_backend/gpu_weight.h"
#include "tests/gpu_backend/gpu_weight_fixture.h"

namespace strata {
namespace {

using testing::HostMatrix;
using testing::random_matrix;

const DType kTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                        DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};

TEST(GpuWeightLayout, RepackRoundTripsEveryType) {
  std::mt19937_64 rng(std::random_device{}());
  for (DType type : kTypes) {
    SCOPED_TRACE(dtype_name(type));
    const HostMatrix m = random_matrix(type, 5, 512, rng);
    auto layout = gpu::gpu_weight_layout(type, m.rows, m.cols);
    ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
    std::vector<uint8_t> payload(static_cast<size_t>(layout->payload_bytes));
    std::vector<uint16_t> scales(static_cast<size_t>(m.rows * layout->scale_row_elems) + 1);
    gpu::repack_rows(type, m.cols, m.stored.data(), m.rows, payload.data(), scales.data());
    std::vector<uint8_t> back(m.stored.size(), 0xAB);
    gpu::unpack_rows(type, m.cols, payload.data(), scales.data(), m.rows, back.data());
    EXPECT_EQ(back, m.stored);
    EXPECT_EQ(layout->payload_row_bytes % 16, 0);
    EXPECT_EQ(layout->scale_offset_bytes % 256, 0);
    EXPECT_GE(layout->total_bytes,
              layout->scale_offset_bytes + m.rows * layout->scale_row_elems * 2);
  }
}

TEST(GpuWeightLayout, RejectsWhatTheKernelsCannotRead) {
  EXPECT_EQ(gpu::gpu_weight_layout(DType::kQ5_0, 4, 64).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::gpu_weight_layout(DType::kQ4_K, 4, 64).status().code(),
            StatusCode::kInvalidArgument);  // not whole 256-element super-blocks
  EXPECT_EQ(gpu::gpu_weight_layout(DType::kF16, 4, 12).status().code(),
            StatusCode::kInvalidArgument);  // not a multiple of 8
}

using GpuGemvTest = testing::GpuWeightTest;

TEST_F(GpuGemvTest, MatchesFloat64OverExactWeightsForEveryTypeAndTokenCount) {
  struct Shape {
    int64_t rows, cols;
  };
  // Odd row counts leave partial row groups; 4096 and 14336 are llama3-8b's widths (the row is
  // split over several warps there).
  // 96 and 8224 columns are odd block counts (the tensor-core kernel's last chunk is half a
  // chunk); 8224 and 14336 take more than one 4096-column segment of x there.
  const Shape shapes[] = {{37, 256}, {64, 4096}, {24, 14336}, {1, 512}, {19, 96}, {40, 8224}};
  for (DType type : kTypes) {
    for (const Shape& s : shapes) {
      if (s.cols % traits(type).block_elems != 0) continue;  // Q4_K, Q6_K: 256-element blocks
      const HostMatrix m = random_matrix(type, s.rows, s.cols, rng_);
      const gpu::GpuWeight w = upload(m);
      for (int64_t n : {1, 2, 3, 5, 8}) {
        SCOPED_TRACE(std::string(dtype_name(type)) + " " + std::to_string(s.rows) + "x" +
                     std::to_string(s.cols) + " tokens " + std::to_string(n));
        const std::vector<float> x = random_floats(n * s.cols);
        const float* dx = upload(x);
        float* dy = device_output(n * s.rows);
        const Status st = gpu::gemv(w, dx, n, dy, gpu::GemvOutput::kStore, stream());
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        const std::vector<float> y = download(dy, n * s.rows);
        EXPECT_LT(backward_err(m, x, n, y), 1e-6);
        if (s.rows * n >= 64) {
          EXPECT_LT(rel_err(y, reference(m, x, n)), 5e-6);
        }
      }
    }
  }
}

// The tensor-core kernel (gemv_mma.h) directly, in every shape it is built for: float32
// arithmetic over the exact weights, like the SIMT kernel.
TEST_F(GpuGemvTest, TensorCoreKernelMatchesFloat64) {
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{37, 256}, {64, 4096}, {24, 14336}, {1, 512}, {19, 96}, {40, 8224}};
  const std::pair<int, int> kernels[] = {{1, 4}, {1, 8}, {2, 3}, {2, 4},
                                         {2, 6}, {2, 8}, {4, 3}, {4, 4}};
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    for (const Shape& s : shapes) {
      const HostMatrix m = random_matrix(type, s.rows, s.cols, rng_);
      const gpu::GpuWeight w = upload(m);
      const std::vector<float> x = random_floats(s.cols);
      const float* dx = upload(x);
      for (const auto& [tiles, stages] : kernels) {
        SCOPED_TRACE(std::string(dtype_name(type)) + " " + std::to_string(s.rows) + "x" +
                     std::to_string(s.cols) + " tiles " + std::to_string(tiles) + " stages " +
                     std::to_string(stages));
        float* dy = device_output(s.rows);
        const Status st = gpu::gemv_mma_with_shape(w, dx, dy, tiles, stages, stream());
        if (st.code() == StatusCode::kInvalidArgument) continue;  // over this GPU's shared memory
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        EXPECT_LT(backward_err(m, x, 1, download(dy, s.rows)), 1e-6);
      }
    }
  }
}

// Blocks of x 2^-40 .. 2^40 apart (the tensor-core kernel scales x by a power of two before it
// splits it into f16 parts) must each keep float32 precision.
TEST_F(GpuGemvTest, KeepsPrecisionWhenBlocksOfXDifferInScale) {
  for (DType type : {DType::kQ8_0, DType::kQ4_0, DType::kF16}) {
    SCOPED_TRACE(dtype_name(type));
    const HostMatrix m = random_matrix(type, 48, 2048, rng_);
    const gpu::GpuWeight w = upload(m);
    std::vector<float> x = random_floats(m.cols);
    std::uniform_int_distribution<int> exponent(-40, 40);
    for (int64_t b = 0; b < m.cols / 32; ++b) {
      const float scale = std::ldexp(1.0f, exponent(rng_));
      for (int64_t i = 0; i < 32; ++i) x[b * 32 + i] *= scale;
    }
    const float* dx = upload(x);
    float* dy = device_output(m.rows);
    ASSERT_TRUE(gpu::gemv(w, dx, 1, dy, gpu::GemvOutput::kStore, stream()).is_ok());
    EXPECT_LT(backward_err(m, x, 1, download(dy, m.rows)), 1e-6);
    if (type != DType::kF16) {
      float* dz = device_output(m.rows);
      ASSERT_TRUE(gpu::gemv_mma_with_shape(w, dx, dz, 2, 4, stream()).is_ok());
      EXPECT_LT(backward_err(m, x, 1, download(dz, m.rows)), 1e-6) << "tensor cores";
    }
  }
}

// Decode steps replay as CUDA graphs and must equal direct launches bit for bit: the GEMV may
// not depend on timing (no atomics in its reductions).
TEST_F(GpuGemvTest, RepeatsBitForBit) {
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    SCOPED_TRACE(dtype_name(type));
    const HostMatrix m = random_matrix(type, 4096, 4096, rng_);
    const gpu::GpuWeight w = upload(m);
    const float* dx = upload(random_floats(m.cols));
    float* a = device_output(m.rows);
    float* b = device_output(m.rows);
    ASSERT_TRUE(gpu::gemv(w, dx, 1, a, gpu::GemvOutput::kStore, stream()).is_ok());
    ASSERT_TRUE(gpu::gemv(w, dx, 1, b, gpu::GemvOutput::kStore, stream()).is_ok());
    EXPECT_EQ(download(a, m.rows), download(b, m.rows));
    ASSERT_TRUE(gpu::gemv_mma_with_shape(w, dx, a, 2, 4, stream()).is_ok());
    ASSERT_TRUE(gpu::gemv_mma_with_shape(w, dx, b, 2, 4, stream()).is_ok());
    EXPECT_EQ(download(a, m.rows), download(b, m.rows)) << "tensor cores";
  }
}

TEST_F(GpuGemvTest, AccumulatesIntoTheOutput) {
  for (int64_t n : {1, 2}) {
    const HostMatrix m = random_matrix(DType::kQ8_0, 40, 1024, rng_);
    const gpu::GpuWeight w = upload(m);
    const std::vector<float> x = random_floats(n * m.cols);
    const std::vector<float> y0 = random_floats(n * m.rows);
    float* dy = upload(y0);
    ASSERT_TRUE(gpu::gemv(w, upload(x), n, dy, gpu::GemvOutput::kAccumulate, stream()).is_ok());
    std::vector<double> want = reference(m, x, n);
    for (size_t i = 0; i < want.size(); ++i) want[i] += y0[i];
    EXPECT_LT(rel_err(download(dy, n * m.rows), want), 2e-6);
  }
}

TEST_F(GpuGemvTest, MultiAndSwiGLUMatchSeparateProducts) {
  for (DType type : {DType::kF16, DType::kQ4_0, DType::kQ8_0, DType::kQ6_K}) {
    for (int64_t n : {1, 3}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " tokens " + std::to_string(n));
      const int64_t cols = 512;
      const HostMatrix a = random_matrix(type, 48, cols, rng_);
      const HostMatrix b = random_matrix(type, 16, cols, rng_);
      const HostMatrix c = random_matrix(type, 20, cols, rng_);
      const gpu::GpuWeight ws[3] = {upload(a), upload(b), upload(c)};
      const std::vector<float> x = random_floats(n * cols);
      const float* dx = upload(x);
      float* ys[3] = {device_output(n * 48), device_output(n * 16), device_output(n * 20)};
      ASSERT_TRUE(gpu::gemv_multi(ws, dx, n, ys, stream()).is_ok());
      EXPECT_LT(rel_err(download(ys[0], n * 48), reference(a, x, n)), 2e-6);
      EXPECT_LT(rel_err(download(ys[1], n * 16), reference(b, x, n)), 2e-6);
      EXPECT_LT(rel_err(download(ys[2], n * 20), reference(c, x, n)), 2e-6);

      const HostMatrix up = random_matrix(type, 48, cols, rng_);
      float* h = device_output(n * 48);
      ASSERT_TRUE(gpu::gemv_swiglu(ws[0], upload(up), dx, n, h, stream()).is_ok());
      const std::vector<double> g = reference(a, x, n), u = reference(up, x, n);
      std::vector<double> want(g.size());
      for (size_t i = 0; i < g.size(); ++i) want[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      EXPECT_LT(rel_err(download(h, n * 48), want), 4e-6);
    }
  }
}

// RMSNorm folded into the GEMVs (GemvNorm): the accumulating GEMV leaves xg = y o g and the
// scale 1 / sqrt(mean(y^2) + eps) of the updated y, the next GEMV multiplies by that scale; the
// pair must equal the unfolded norm and products (the `exact` tier: float64 reference of the
// normed x), and the norm's scratch must be reusable call after call (the counter resets).
TEST_F(GpuGemvTest, FoldedNormMatchesNormThenProduct) {
  for (DType type : {DType::kF16, DType::kQ8_0, DType::kQ4_0}) {
    for (int64_t n : {1, 3}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " tokens " + std::to_string(n));
      const int64_t E = 1024, F = 2048;
      const HostMatrix down = random_matrix(type, E, F, rng_);  // writes the residual
      const HostMatrix next = random_matrix(type, 3 * 64, E, rng_);
      const gpu::GpuWeight wd = upload(down), wn = upload(next);
      const std::vector<float> h = random_floats(n * F), y0 = random_floats(n * E);
      std::vector<float> g = random_floats(E);
      const float eps = 1e-5f;
      float* dy = upload(y0);
      float* xg = device_output(n * E);
      float* scale = device_output(n);
      void* scratch_bytes =
          upload(std::vector<uint8_t>(static_cast<size_t>(gpu::gemv_norm_scratch_bytes(E)), 0));
      gpu::GemvNorm out;
      out.out_weight = upload(g);
      out.out_eps = eps;
      out.out_xg = xg;
      out.out_scale = scale;
      out.scratch = gpu::gemv_norm_scratch_at(scratch_bytes, E);
      for (int call = 0; call < 3; ++call) {  // the same scratch each time
        SCOPED_TRACE("call " + std::to_string(call));
        ASSERT_TRUE(
            cuda::memcpy_async(dy, y0.data(), n * E * 4, cuda::CopyKind::kHostToDevice, stream())
                .is_ok());
        ASSERT_TRUE(
            gpu::gemv(wd, upload(h), n, dy, gpu::GemvOutput::kAccumulate, stream(), out).is_ok());
        const std::vector<float> y = download(dy, n * E);
        const std::vector<float> got_xg = download(xg, n * E);
        const std::vector<float> got_scale = download(scale, n);
        // The updated residual as an unfolded accumulate gives it, and xg from it exactly.
        std::vector<double> want_y = reference(down, h, n);
        for (size_t i = 0; i < want_y.size(); ++i) want_y[i] += y0[i];
        EXPECT_LT(rel_err(y, want_y), 2e-6);
        std::vector<double> want_normed(static_cast<size_t>(n * E));
        for (int64_t t = 0; t < n; ++t) {
          double ss = 0;
          for (int64_t i = 0; i < E; ++i) {
            const size_t k = static_cast<size_t>(t * E + i);
            ASSERT_EQ(got_xg[k], y[k] * g[static_cast<size_t>(i)]) << "xg at " << k;
            ss += static_cast<double>(y[k]) * y[k];
          }
          const double s = 1.0 / std::sqrt(ss / E + eps);
          EXPECT_NEAR(got_scale[static_cast<size_t>(t)], s, 2e-7 * s) << "token " << t;
          for (int64_t i = 0; i < E; ++i) {
            const size_t k = static_cast<size_t>(t * E + i);
            want_normed[k] = static_cast<double>(y[k]) * s * g[static_cast<size_t>(i)];
          }
        }
        // The next product over xg with the scale: the product over the normed x.
        std::vector<float> normed(want_normed.begin(), want_normed.end());
        const std::vector<double> want_next = reference(next, normed, n);
        gpu::GemvNorm in;
        in.in_scale = scale;
        float* yn = device_output(n * next.rows);
        ASSERT_TRUE(gpu::gemv(wn, xg, n, yn, gpu::GemvOutput::kStore, stream(), in).is_ok());
        EXPECT_LT(rel_err(download(yn, n * next.rows), want_next), 2e-6);
        float* ys[1] = {device_output(n * next.rows)};
        const gpu::GpuWeight one[1] = {wn};
        ASSERT_TRUE(gpu::gemv_multi(one, xg, n, ys, stream(), in).is_ok());
        EXPECT_LT(rel_err(download(ys[0], n * next.rows), want_next), 2e-6);
        float* sw = device_output(n * next.rows);
        ASSERT_TRUE(gpu::gemv_swiglu(wn, wn, xg, n, sw, stream(), in).is_ok());
        std::vector<double> want_sw(want_next.size());
        for (size_t i = 0; i < want_sw.size(); ++i)
          want_sw[i] = want_next[i] / (1.0 + std::exp(-want_next[i])) * want_next[i];
        EXPECT_LT(rel_err(download(sw, n * next.rows), want_sw), 4e-6);
      }
    }
  }
}

TEST_F(GpuGemvTest, FoldedNormOutputNeedsAnAccumulatingCallWithScratch) {
  const HostMatrix m = random_matrix(DType::kF16, 64, 256, rng_);
  const gpu::GpuWeight w = upload(m);
  gpu::GemvNorm out;
  out.out_weight = device_output(64);
  out.out_xg = device_output(64);
  out.out_scale = device_output(1);  // no scratch
  const float* x = upload(random_floats(256));
  EXPECT_EQ(
      gpu::gemv(w, x, 1, device_output(64), gpu::GemvOutput::kAccumulate, stream(), out).code(),
      StatusCode::kInvalidArgument);
  void* scratch_bytes =
      upload(std::vector<uint8_t>(static_cast<size_t>(gpu::gemv_norm_scratch_bytes(64)), 0));
  out.scratch = gpu::gemv_norm_scratch_at(scratch_bytes, 64);
  EXPECT_EQ(gpu::gemv(w, x, 1, device_output(64), gpu::GemvOutput::kStore, stream(), out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      gpu::gemv(w, x, 1, device_output(64), gpu::GemvOutput::kAccumulate, stream(), out).is_ok());
}

// The QKV GEMV with RoPE and the KV store in its epilogue against gemv_multi then
// rope_store_kv: q and every byte of both caches bit for bit (partial rotation, f32 and f16
// caches, one and several tokens, with a folded norm's scale).
TEST_F(GpuGemvTest, QkvRopeStoreEqualsProductsThenRopeStore) {
  struct Case {
    DType type;
    int64_t rope_dims;
    DType kv_type;
    int64_t n;
  };
  const Case cases[] = {{DType::kF16, 64, DType::kF16, 1},
                        {DType::kQ4_0, 64, DType::kF32, 3},
                        {DType::kQ8_0, 32, DType::kF16, 2},
                        {DType::kQ4_0, 64, DType::kF16, 1}};
  const gpu::AttentionShape shape{8, 2, 64};
  const int64_t E = 512, Q = 512, K = 128, block_tokens = 16, n_layer = 2, layer = 1, pos0 = 37;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(dtype_name(c.type)) + " rope_dims " + std::to_string(c.rope_dims) +
                 " tokens " + std::to_string(c.n));
    const HostMatrix mq = random_matrix(c.type, Q, E, rng_), mk = random_matrix(c.type, K, E, rng_),
                     mv = random_matrix(c.type, K, E, rng_);
    const gpu::GpuWeight wq = upload(mq), wk = upload(mk), wv = upload(mv);
    const int64_t n = c.n, blocks = (pos0 + n + block_tokens - 1) / block_tokens;
    const int64_t block_bytes = block_tokens * K * (c.kv_type == DType::kF16 ? 2 : 4);
    const int64_t entries = blocks * n_layer * 2;
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(pos0 + i);
    const int32_t* dpos = upload(pos);
    auto* pool_a = static_cast<uint8_t*>(device_alloc(entries * block_bytes));
    auto* pool_b = static_cast<uint8_t*>(device_alloc(entries * block_bytes));
    auto view_of = [&](uint8_t* pool) {
      std::vector<void*> table(static_cast<size_t>(entries));
      for (int64_t e = 0; e < entries; ++e) table[static_cast<size_t>(e)] = pool + e * block_bytes;
      gpu::GpuKvView v;
      v.block_table = upload(table);
      v.n_layer = n_layer;
      v.num_tokens = pos0 + n;
      v.block_tokens = block_tokens;
      v.kv_dim = K;
      v.dtype = c.kv_type;
      v.positions = dpos;
      return v;
    };
    const gpu::GpuKvView view_a = view_of(pool_a), view_b = view_of(pool_b);
    float* table = device_output(n * c.rope_dims);
    ASSERT_TRUE(gpu::rope_table(dpos, n, c.rope_dims, 5e5, table, stream()).is_ok());
    const float* x = upload(random_floats(n * E));
    std::vector<float> scale_host = random_floats(n);
    for (float& v : scale_host) v = 0.5f + std::abs(v);
    gpu::GemvNorm in;
    in.in_scale = upload(scale_host);

    float *qa = device_output(n * Q), *ka = device_output(n * K), *va = device_output(n * K);
    const gpu::GpuWeight ws[3] = {wq, wk, wv};
    float* outs[3] = {qa, ka, va};
    ASSERT_TRUE(gpu::gemv_multi(ws, x, n, outs, stream(), in).is_ok());
    ASSERT_TRUE(gpu::rope_store_kv(qa, ka, va, n, table, shape, c.rope_dims,
                                   RopeStyle::kAdjacentPairs, view_a, layer, stream())
                    .is_ok());
    float* qb = device_output(n * Q);
    ASSERT_TRUE(gpu::gemv_qkv_rope_store(wq, wk, wv, x, n, qb, table, c.rope_dims, shape.head_dim,
                                         view_b, layer, stream(), in)
                    .is_ok());
    const std::vector<float> got_q = download(qb, n * Q);
    for (float v : got_q) ASSERT_TRUE(std::isfinite(v));
    EXPECT_EQ(download(qa, n * Q), got_q);
    EXPECT_EQ(download(pool_a, entries * block_bytes), download(pool_b, entries * block_bytes));
  }
}

TEST_F(GpuGemvTest, QkvRopeStoreRejectsAQ8_0Cache) {
  const HostMatrix m = random_matrix(DType::kF16, 64, 64, rng_);
  const gpu::GpuWeight w = upload(m);
  gpu::GpuKvView kv;
  kv.dtype = DType::kQ8_0;
  kv.kv_dim = 64;
  EXPECT_EQ(gpu::gemv_qkv_rope_store(w, w, w, device_output(64), 1, device_output(64),
                                     device_output(64), 64, 64, kv, 0, stream())
                .code(),
            StatusCode::kInvalidArgument);
}

TEST_F(GpuGemvTest, RejectsTooManyTokens) {
  const HostMatrix m = random_matrix(DType::kF16, 8, 64, rng_);
  const gpu::GpuWeight w = upload(m);
  const Status st = gpu::gemv(w, device_output(9 * 64), 9, device_output(9 * 8),
                              gpu::GemvOutput::kStore, stream());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata
