// The integer decode GEMV path (activation_q8.h, gemv.h's x8): the quantizer against the obvious
// host implementation of llama.cpp's rounding, bit for bit; the GEMV of Q8_0 and Q4_0 weights over
// quantized x against a float64 reference of that same arithmetic (exact weights times the
// dequantized activations d q) on fresh random inputs, its fused forms against its plain one, and
// the bad calls refused.
#include "gpu_backend/activation_q8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gpu_backend/gemv.h"
#include "gpu_backend/gemv_tuning.h"
#include "tests/gpu_backend/gpu_weight_fixture.h"

namespace strata {
namespace {

using testing::HostMatrix;
using testing::random_matrix;

struct HostQ8 {
  std::vector<int8_t> q;
  std::vector<gpu::ActivationBlockQ8> blocks;
};

// llama.cpp's quantize_q8_1 for one row set: d = amax / 127, q = roundf(x / d) via 1 / d.
HostQ8 quantize_on_host(const std::vector<float>& x) {
  HostQ8 h;
  h.q.resize(x.size());
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0.0f;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (size_t i = 0; i < 32; ++i) {
      const int v = static_cast<int>(std::round(x[b * 32 + i] * id));
      h.q[b * 32 + i] = static_cast<int8_t>(v);
      sum += v;
    }
    h.blocks.push_back({d, sum});
  }
  return h;
}

// The activations the integer path multiplies by: d q, in double.
std::vector<double> dequantized(const HostQ8& h) {
  std::vector<double> x(h.q.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(h.blocks[i / 32].d) * h.q[i];
  return x;
}

class ActivationQ8Test : public testing::GpuWeightTest {
 protected:
  // x quantized on the GPU into a fresh (poisoned) view.
  gpu::ActivationsQ8 quantize(const float* dx, int64_t n, int64_t cols) {
    const gpu::ActivationsQ8 a =
        gpu::activations_q8_at(device_alloc(gpu::activations_q8_bytes(n, cols)), n, cols);
    const Status st = gpu::quantize_activations_q8(dx, n, a, stream());
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    return a;
  }

  // ||got - ref|| / ||sum_c |w x| ||, the reference over exact weights and activations x (double).
  static double backward_err(const HostMatrix& m, const std::vector<double>& x, int64_t n,
                             const std::vector<float>& got) {
    double num = 0, den = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < m.rows; ++r) {
        double s = 0, abs_sum = 0;
        for (int64_t c = 0; c < m.cols; ++c) {
          const double p = static_cast<double>(m.values[r * m.cols + c]) * x[t * m.cols + c];
          s += p;
          abs_sum += std::abs(p);
        }
        const float g = got[static_cast<size_t>(t * m.rows + r)];
        if (!std::isfinite(g)) return INFINITY;
        num += (g - s) * (g - s);
        den += abs_sum * abs_sum;
      }
    return std::sqrt(num / den);
  }
};

TEST_F(ActivationQ8Test, QuantizesAsLlamaCppDoesBitForBit) {
  for (int64_t n : {1, 3, 8}) {
    const int64_t cols = 4096 + 32 * 7;
    std::vector<float> x = random_floats(n * cols);
    for (int64_t i = 0; i < 32; ++i) x[static_cast<size_t>(64 + i)] = 0.0f;      // a block of zeros
    for (int64_t i = 0; i < 32; ++i) x[static_cast<size_t>(128 + i)] *= 1e-30f;  // tiny values
    const gpu::ActivationsQ8 a = quantize(upload(x), n, cols);
    const HostQ8 want = quantize_on_host(x);
    EXPECT_EQ(download(a.q, n * cols), want.q) << "tokens " << n;
    const auto got = download(a.blocks, n * cols / 32);
    ASSERT_EQ(got.size(), want.blocks.size());
    for (size_t b = 0; b < got.size(); ++b) {
      ASSERT_EQ(std::memcmp(&got[b].d, &want.blocks[b].d, 4), 0) << "d of block " << b;
      ASSERT_EQ(got[b].sum, want.blocks[b].sum) << "sum of block " << b;
    }
    EXPECT_EQ(got[2].d, 0.0f);
  }
}

TEST_F(ActivationQ8Test, GemvOverQuantizedXMatchesFloat64OfTheSameArithmetic) {
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{37, 256}, {64, 4096}, {24, 14336}, {1, 512}, {19, 96}, {40, 8224}};
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    for (const Shape& s : shapes) {
      const HostMatrix m = random_matrix(type, s.rows, s.cols, rng_);
      const gpu::GpuWeight w = upload(m);
      for (int64_t n : {1, 2, 3, 5, 8}) {
        SCOPED_TRACE(std::string(dtype_name(type)) + " " + std::to_string(s.rows) + "x" +
                     std::to_string(s.cols) + " tokens " + std::to_string(n));
        const std::vector<float> x = random_floats(n * s.cols);
        const float* dx = upload(x);
        const gpu::ActivationsQ8 xq = quantize(dx, n, s.cols);
        float* dy = device_output(n * s.rows);
        ASSERT_TRUE(gpu::gemv(w, dx, n, dy, gpu::GemvOutput::kStore, stream(), {}, {&xq}).is_ok());
        const std::vector<float> y = download(dy, n * s.rows);
        EXPECT_LT(backward_err(m, dequantized(quantize_on_host(x)), n, y), 1e-6);
        // And it is the product with x up to the rounding of x (~0.3 % per element here): a
        // kernel that read the float x instead, or the wrong blocks, would miss one or the other.
        std::vector<double> xd(x.begin(), x.end());
        const double vs_float = backward_err(m, xd, n, y);
        EXPECT_LT(vs_float, 2e-2);
        EXPECT_GT(vs_float, 1e-5);
        float* again = device_output(n * s.rows);
        ASSERT_TRUE(
            gpu::gemv(w, dx, n, again, gpu::GemvOutput::kStore, stream(), {}, {&xq}).is_ok());
        EXPECT_EQ(download(again, n * s.rows), y) << "not bit-for-bit repeatable";
      }
    }
  }
}

// The fused forms share the plain GEMV's per-row sums: gemv_multi and the accumulating GEMV must
// equal it bit for bit, SwiGLU its formula, and every tuning shape the default.
TEST_F(ActivationQ8Test, FusedFormsAndShapesEqualThePlainProduct) {
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    for (int64_t n : {1, 3}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " tokens " + std::to_string(n));
      const int64_t cols = 2048;
      const HostMatrix a = random_matrix(type, 96, cols, rng_),
                       b = random_matrix(type, 32, cols, rng_);
      const gpu::GpuWeight wa = upload(a), wb = upload(b);
      const std::vector<float> x = random_floats(n * cols);
      const float* dx = upload(x);
      const gpu::ActivationsQ8 xq = quantize(dx, n, cols);
      float* ya = device_output(n * 96);
      float* yb = device_output(n * 32);
      ASSERT_TRUE(gpu::gemv(wa, dx, n, ya, gpu::GemvOutput::kStore, stream(), {}, {&xq}).is_ok());
      ASSERT_TRUE(gpu::gemv(wb, dx, n, yb, gpu::GemvOutput::kStore, stream(), {}, {&xq}).is_ok());
      const std::vector<float> plain_a = download(ya, n * 96), plain_b = download(yb, n * 32);

      const gpu::GpuWeight ws[2] = {wa, wb};
      float* outs[2] = {device_output(n * 96), device_output(n * 32)};
      ASSERT_TRUE(gpu::gemv_multi(ws, dx, n, outs, stream(), {}, {&xq}).is_ok());
      EXPECT_EQ(download(outs[0], n * 96), plain_a);
      EXPECT_EQ(download(outs[1], n * 32), plain_b);

      const std::vector<float> y0 = random_floats(n * 96);
      float* acc = upload(y0);
      ASSERT_TRUE(
          gpu::gemv(wa, dx, n, acc, gpu::GemvOutput::kAccumulate, stream(), {}, {&xq}).is_ok());
      const std::vector<float> got_acc = download(acc, n * 96);
      for (size_t i = 0; i < got_acc.size(); ++i) ASSERT_EQ(got_acc[i], y0[i] + plain_a[i]) << i;

      float* h = device_output(n * 96);
      ASSERT_TRUE(gpu::gemv_swiglu(wa, wa, dx, n, h, stream(), {}, {&xq}).is_ok());
      const std::vector<float> got_h = download(h, n * 96);
      for (size_t i = 0; i < got_h.size(); ++i) {
        const double g = plain_a[i];
        EXPECT_NEAR(got_h[i], g / (1.0 + std::exp(-g)) * g, 1e-5 * (1.0 + g * g)) << i;
      }

      if (n == 1) {  // the tuning shapes: the same sums in other groupings, float rounding apart
        const gpu::GemvShape def = gpu::gemv_default_shape(type, true);
        for (int rows : {2, 4, 8})
          for (int units : {1, 2})
            for (int min_units : {1, 4}) {
              float* ys = device_output(96);
              ASSERT_TRUE(gpu::gemv_with_shape(wa, dx, ys, {rows, units, min_units}, stream(), &xq)
                              .is_ok());
              EXPECT_LT(backward_err(a, dequantized(quantize_on_host(x)), 1, download(ys, 96)),
                        1e-6)
                  << "R" << rows << " U" << units << " M" << min_units;
            }
        float* yd = device_output(96);
        ASSERT_TRUE(gpu::gemv_with_shape(wa, dx, yd, def, stream(), &xq).is_ok());
        EXPECT_EQ(download(yd, 96), plain_a) << "the default shape is what gemv runs";
      }
    }
  }
}

// GemvInt8::out8: the GEMV quantizes the values it leaves (y, the updated y, xg, SwiGLU's h)
// exactly as the quantize kernel would quantize them afterwards, for CUDA blocks of fewer rows
// than 32 (the counter path) and of 32 or more (each its own), call after call (the counters go
// back to zero).
TEST_F(ActivationQ8Test, GemvQuantizesItsOwnOutputAsTheQuantizeKernelWould) {
  enum class Form { kStore, kAccumulate, kNormOut, kSwiGLU };
  struct Case {
    DType type;
    int64_t cols;
  };
  // F16 over 256 columns: 32 rows a CUDA block; 4096 columns: 4 rows a block; Q4_0 with x8 in.
  const Case cases[] = {{DType::kF16, 256}, {DType::kF16, 4096}, {DType::kQ4_0, 4096}};
  const int64_t rows = 96;
  for (const Case& c : cases) {
    for (Form form : {Form::kStore, Form::kAccumulate, Form::kNormOut, Form::kSwiGLU}) {
      for (int64_t n : {1, 3}) {
        SCOPED_TRACE(std::string(dtype_name(c.type)) + " cols " + std::to_string(c.cols) +
                     " form " + std::to_string(static_cast<int>(form)) + " tokens " +
                     std::to_string(n));
        const HostMatrix m = random_matrix(c.type, rows, c.cols, rng_);
        const gpu::GpuWeight w = upload(m);
        const float* dx = upload(random_floats(n * c.cols));
        const gpu::ActivationsQ8 xq = quantize(dx, n, c.cols);
        unsigned* counters = upload(
            std::vector<unsigned>(static_cast<size_t>(gpu::gemv_out8_counter_bytes(rows) / 4), 0));
        void* scratch = upload(
            std::vector<uint8_t>(static_cast<size_t>(gpu::gemv_norm_scratch_bytes(rows)), 0));
        const std::vector<float> y0 = random_floats(n * rows);
        for (int call = 0; call < 3; ++call) {
          SCOPED_TRACE("call " + std::to_string(call));
          gpu::GemvInt8 i8;
          i8.x8 = &xq;
          i8.out8 =
              gpu::activations_q8_at(device_alloc(gpu::activations_q8_bytes(n, rows)), n, rows);
          i8.out8_counters = counters;
          float* y = upload(y0);
          float* xg = device_output(n * rows);
          gpu::GemvNorm norm;
          Status st;
          switch (form) {
            case Form::kStore:
              st = gpu::gemv(w, dx, n, y, gpu::GemvOutput::kStore, stream(), {}, i8);
              break;
            case Form::kAccumulate:
              st = gpu::gemv(w, dx, n, y, gpu::GemvOutput::kAccumulate, stream(), {}, i8);
              break;
            case Form::kNormOut:
              norm.out_weight = upload(random_floats(rows));
              norm.out_eps = 1e-5f;
              norm.out_xg = xg;
              norm.out_scale = device_output(n);
              norm.scratch = gpu::gemv_norm_scratch_at(scratch, rows);
              st = gpu::gemv(w, dx, n, y, gpu::GemvOutput::kAccumulate, stream(), norm, i8);
              break;
            case Form::kSwiGLU:
              st = gpu::gemv_swiglu(w, w, dx, n, y, stream(), {}, i8);
              break;
          }
          ASSERT_TRUE(st.is_ok()) << st.to_string();
          const std::vector<float> left = download(form == Form::kNormOut ? xg : y, n * rows);
          for (float v : left) ASSERT_TRUE(std::isfinite(v));
          const gpu::ActivationsQ8 want = quantize(upload(left), n, rows);
          EXPECT_EQ(download(i8.out8.q, n * rows), download(want.q, n * rows));
          const auto got_b = download(i8.out8.blocks, n * rows / 32);
          const auto want_b = download(want.blocks, n * rows / 32);
          for (size_t b = 0; b < got_b.size(); ++b) {
            ASSERT_EQ(std::memcmp(&got_b[b], &want_b[b], sizeof(got_b[b])), 0) << "block " << b;
          }
          for (unsigned v : download(counters, rows / 32)) ASSERT_EQ(v, 0u) << "counter left";
        }
      }
    }
  }
}

TEST_F(ActivationQ8Test, RejectsAQuantizedOutputItCannotMake) {
  const HostMatrix m = random_matrix(DType::kQ8_0, 64, 512, rng_);
  const HostMatrix odd = random_matrix(DType::kQ8_0, 40, 512, rng_);  // not whole blocks of 32
  const gpu::GpuWeight w = upload(m), wodd = upload(odd);
  const float* dx = upload(random_floats(512));
  const gpu::ActivationsQ8 xq = quantize(dx, 1, 512);
  gpu::GemvInt8 i8;
  i8.x8 = &xq;
  i8.out8 = gpu::activations_q8_at(device_alloc(gpu::activations_q8_bytes(1, 64)), 1, 64);
  i8.out8_counters = upload(std::vector<unsigned>(64 / 32, 0));
  const gpu::GpuWeight two[2] = {w, w};
  float* outs[2] = {device_output(64), device_output(64)};
  EXPECT_EQ(gpu::gemv_multi(two, dx, 1, outs, stream(), {}, i8).code(),
            StatusCode::kInvalidArgument);  // two matrices
  gpu::GemvInt8 for_odd = i8;
  for_odd.out8 = gpu::activations_q8_at(device_alloc(gpu::activations_q8_bytes(1, 40)), 1, 40);
  EXPECT_EQ(
      gpu::gemv(wodd, dx, 1, device_output(40), gpu::GemvOutput::kStore, stream(), {}, for_odd)
          .code(),
      StatusCode::kInvalidArgument);
  gpu::GemvInt8 no_counters = i8;
  no_counters.out8_counters = nullptr;
  EXPECT_EQ(
      gpu::gemv(w, dx, 1, device_output(64), gpu::GemvOutput::kStore, stream(), {}, no_counters)
          .code(),
      StatusCode::kInvalidArgument);
  const Status ok =
      gpu::gemv(w, dx, 1, device_output(64), gpu::GemvOutput::kStore, stream(), {}, i8);
  EXPECT_TRUE(ok.is_ok()) << ok.to_string();
}

// Types without an integer path read the float x whatever x8 says.
TEST_F(ActivationQ8Test, OtherTypesIgnoreQuantizedX) {
  for (DType type : {DType::kF16, DType::kQ6_K}) {
    const HostMatrix m = random_matrix(type, 40, 512, rng_);
    const gpu::GpuWeight w = upload(m);
    const float* dx = upload(random_floats(512));
    const gpu::ActivationsQ8 xq = quantize(dx, 1, 512);
    float* a = device_output(40);
    float* b = device_output(40);
    ASSERT_TRUE(gpu::gemv(w, dx, 1, a, gpu::GemvOutput::kStore, stream()).is_ok());
    ASSERT_TRUE(gpu::gemv(w, dx, 1, b, gpu::GemvOutput::kStore, stream(), {}, {&xq}).is_ok());
    EXPECT_EQ(download(a, 40), download(b, 40)) << dtype_name(type);
  }
}

TEST_F(ActivationQ8Test, RejectsMismatchedViews) {
  const HostMatrix m = random_matrix(DType::kQ4_0, 16, 512, rng_);
  const gpu::GpuWeight w = upload(m);
  const float* dx = upload(random_floats(2 * 512));
  const gpu::ActivationsQ8 narrow = quantize(dx, 2, 256);  // 256 columns, not 512
  EXPECT_EQ(gpu::gemv(w, dx, 1, device_output(16), gpu::GemvOutput::kStore, stream(), {}, {&narrow})
                .code(),
            StatusCode::kInvalidArgument);
  const gpu::ActivationsQ8 one = quantize(dx, 1, 512);  // one token, two asked for
  EXPECT_EQ(
      gpu::gemv(w, dx, 2, device_output(32), gpu::GemvOutput::kStore, stream(), {}, {&one}).code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::quantize_activations_q8(dx, 2, one, stream()).code(),
            StatusCode::kInvalidArgument);  // more rows than the view
  gpu::ActivationsQ8 ragged = one;
  ragged.cols = 500;  // not whole blocks
  EXPECT_EQ(gpu::quantize_activations_q8(dx, 1, ragged, stream()).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata
