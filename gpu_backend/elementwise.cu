// The elementwise and per-row kernels of elementwise.h: rms_norm, rope, swiglu, add_inplace,
// add_bias, convert_f32. Each computes what its cpu_backend/elementwise.cpp twin computes, in
// the same order of float operations, so that the results agree to the last bit or nearly:
//   - nvcc contracts a * b + c into one FMA by default, the CPU build (-ffp-contract=off) does
//     not; multiply-adds are therefore spelled __fmul_rn / __fadd_rn, which nvcc never fuses.
//   - what the CPU does in double (RMSNorm's sum of squares, the RoPE angles) is done in double
//     here too; only the order of the sum of squares differs (a tree instead of a loop), which
//     moves it by a few double ulps, far below the float rounding of the scale.
//   - expf and the double pow/cos/sin of CUDA are within 1-2 ulp of glibc's, not bit-equal.
#include <cstdint>
#include <limits>
#include <string>

#include "gpu_backend/dependent_launch.cuh"
#include "gpu_backend/elementwise.h"
#include "gpu_backend/half_bits.cuh"

namespace strata::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridX = int64_t{1} << 16;  // grid-stride loops cover the rest
constexpr int64_t kMaxGridY = 65535;             // CUDA's limit; rows beyond it loop
// The RoPE table is (cos, sin) per pair in shared memory, within the default 48 KiB.
constexpr int64_t kMaxRopePairs = 4096;

unsigned blocks_for(int64_t n, int64_t max_blocks) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < max_blocks ? blocks : max_blocks);
}

unsigned rows_for(int64_t n_rows) {
  return static_cast<unsigned>(n_rows < kMaxGridY ? n_rows : kMaxGridY);
}

Status negative(const char* caller) {
  return Status::invalid_argument(std::string(caller) + ": negative size");
}

// ---- rms_norm: one block per token row.

__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(const float* x, const float* weight, float* y, int64_t n, float eps,
                    float* unapplied_scale) {
  allow_dependent_launch();  // the GEMV after it may start loading its weights (it waits for y)
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * n;
  double sum_sq = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const double v = xr[i];
    sum_sq = __dadd_rn(sum_sq, __dmul_rn(v, v));  // the CPU's separate multiply and add
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
  }
  __shared__ double warp_sums[kThreads / 32];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = sum_sq;
  // Also orders every read of x before the writes of y below, which may alias it.
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  const float scale =
      static_cast<float>(1.0 / sqrt(total / static_cast<double>(n) + static_cast<double>(eps)));
  if (unapplied_scale != nullptr) {  // rms_norm_unapplied: x o weight, and the scale apart
    for (int64_t i = threadIdx.x; i < n; i += kThreads) yr[i] = __fmul_rn(xr[i], weight[i]);
    if (threadIdx.x == 0) unapplied_scale[blockIdx.x] = scale;
    return;
  }
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), weight[i]);
  }
}

// ---- rope: one block per token; the token's (cos, sin) table first, then every (head, pair).

__global__ void __launch_bounds__(kThreads)
    rope_kernel(float* x, int n_heads, int head_dim, int rope_dims, const int32_t* positions,
                double theta, bool neox) {
  extern __shared__ float2 cos_sin[];  // [rope_dims / 2]
  const int half = rope_dims / 2;
  const int64_t t = blockIdx.x;
  const double position = static_cast<double>(positions[t]);
  for (int i = threadIdx.x; i < half; i += kThreads) {
    const double inv_freq = pow(theta, -2.0 * static_cast<double>(i) / rope_dims);
    const double angle = position * inv_freq;
    cos_sin[i] = make_float2(static_cast<float>(cos(angle)), static_cast<float>(sin(angle)));
  }
  __syncthreads();
  float* row = x + t * n_heads * head_dim;
  const int pairs = n_heads * half;
  for (int p = threadIdx.x; p < pairs; p += kThreads) {
    const int h = p / half;
    const int i = p - h * half;
    float* v = row + static_cast<int64_t>(h) * head_dim;
    const int a = neox ? i : 2 * i;
    const int b = neox ? i + half : 2 * i + 1;
    const float cs = cos_sin[i].x;
    const float sn = cos_sin[i].y;
    const float x0 = v[a];
    const float x1 = v[b];
    v[a] = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
    v[b] = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs));
  }
}

// ---- flat elementwise kernels: grid-stride over n.

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float g = gate[i];
    // expf, not __expf: the fast one is off by up to 2^-21 relative.
    out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
  }
}

__global__ void add_inplace_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    y[i] = __fadd_rn(y[i], x[i]);
  }
}

__global__ void copy_floats_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    y[i] = x[i];
  }
}

__global__ void copy_int32_kernel(int32_t* y, const int32_t* x, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    y[i] = x[i];
  }
}

// grid.x covers a row, grid.y (with a loop past 65535) the rows: no 64-bit division per element.
__global__ void add_bias_kernel(float* y, const float* bias, int64_t n_tokens, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  const float b = bias[i];
  for (int64_t t = blockIdx.y; t < n_tokens; t += gridDim.y) {
    y[t * n + i] = __fadd_rn(y[t * n + i], b);
  }
}

template <bool kToF16>
__global__ void convert_f32_kernel(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    out[i] = kToF16 ? f32_to_f16_bits(x[i]) : f32_to_bf16_bits(x[i]);
  }
}

}  // namespace

Status rms_norm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t n,
                float eps, const cuda::Stream& stream) {
  if (n_tokens < 0 || n < 0) return negative("rms_norm");
  if (n_tokens == 0 || n == 0) return Status::ok();
  if (n_tokens > std::numeric_limits<int32_t>::max()) {
    return Status::invalid_argument("rms_norm: more than 2^31 - 1 rows");
  }
  rms_norm_kernel<<<static_cast<unsigned>(n_tokens), kThreads, 0, stream.native()>>>(
      x, weight, y, n, eps, nullptr);
  return cuda::check_last_launch("rms_norm_kernel");
}

Status rms_norm_unapplied(const float* x, const float* weight, float* xg, float* scale,
                          int64_t n_tokens, int64_t n, float eps, const cuda::Stream& stream) {
  if (n_tokens < 0 || n < 0) return negative("rms_norm_unapplied");
  if (scale == nullptr) return Status::invalid_argument("rms_norm_unapplied: null scale");
  if (n_tokens == 0 || n == 0) return Status::ok();
  if (n_tokens > std::numeric_limits<int32_t>::max()) {
    return Status::invalid_argument("rms_norm_unapplied: more than 2^31 - 1 rows");
  }
  rms_norm_kernel<<<static_cast<unsigned>(n_tokens), kThreads, 0, stream.native()>>>(x, weight, xg,
                                                                                     n, eps, scale);
  return cuda::check_last_launch("rms_norm_kernel (unapplied)");
}

Status rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dims,
            const int32_t* positions, double theta, RopeStyle style, const cuda::Stream& stream) {
  if (n_tokens < 0 || n_heads < 0 || head_dim < 0 || rope_dims < 0) return negative("rope");
  if (rope_dims % 2 != 0 || rope_dims > head_dim) {
    return Status::invalid_argument("rope: rope_dims " + std::to_string(rope_dims) +
                                    " must be even and at most head_dim " +
                                    std::to_string(head_dim));
  }
  if (style != RopeStyle::kAdjacentPairs && style != RopeStyle::kNeoxHalves) {
    return Status::invalid_argument("rope: unknown RoPE style");
  }
  if (n_tokens == 0 || n_heads == 0 || rope_dims == 0) return Status::ok();
  const int64_t half = rope_dims / 2;
  if (half > kMaxRopePairs || n_heads * head_dim > std::numeric_limits<int32_t>::max() ||
      n_tokens > std::numeric_limits<int32_t>::max()) {
    return Status::invalid_argument("rope: a row of " + std::to_string(n_heads) + " heads of " +
                                    std::to_string(head_dim) + " (rope_dims " +
                                    std::to_string(rope_dims) + ") is larger than the kernel's");
  }
  const size_t shared_bytes = static_cast<size_t>(half) * sizeof(float2);
  rope_kernel<<<static_cast<unsigned>(n_tokens), kThreads, shared_bytes, stream.native()>>>(
      x, static_cast<int>(n_heads), static_cast<int>(head_dim), static_cast<int>(rope_dims),
      positions, theta, style == RopeStyle::kNeoxHalves);
  return cuda::check_last_launch("rope_kernel");
}

Status swiglu(const float* gate, const float* up, float* out, int64_t n,
              const cuda::Stream& stream) {
  if (n < 0) return negative("swiglu");
  if (n == 0) return Status::ok();
  swiglu_kernel<<<blocks_for(n, kMaxGridX), kThreads, 0, stream.native()>>>(gate, up, out, n);
  return cuda::check_last_launch("swiglu_kernel");
}

Status copy_floats(float* y, const float* x, int64_t n, const cuda::Stream& stream) {
  if (n < 0) return negative("copy_floats");
  if (n == 0) return Status::ok();
  copy_floats_kernel<<<blocks_for(n, kMaxGridX), kThreads, 0, stream.native()>>>(y, x, n);
  return cuda::check_last_launch("copy_floats_kernel");
}

Status copy_int32(int32_t* y, const int32_t* x, int64_t n, const cuda::Stream& stream) {
  if (n < 0) return negative("copy_int32");
  if (n == 0) return Status::ok();
  copy_int32_kernel<<<blocks_for(n, kMaxGridX), kThreads, 0, stream.native()>>>(y, x, n);
  return cuda::check_last_launch("copy_int32_kernel");
}

Status add_inplace(float* y, const float* x, int64_t n, const cuda::Stream& stream) {
  if (n < 0) return negative("add_inplace");
  if (n == 0) return Status::ok();
  add_inplace_kernel<<<blocks_for(n, kMaxGridX), kThreads, 0, stream.native()>>>(y, x, n);
  return cuda::check_last_launch("add_inplace_kernel");
}

Status add_bias(float* y, const float* bias, int64_t n_tokens, int64_t n,
                const cuda::Stream& stream) {
  if (n_tokens < 0 || n < 0) return negative("add_bias");
  if (n_tokens == 0 || n == 0) return Status::ok();
  const dim3 grid(blocks_for(n, std::numeric_limits<int32_t>::max()), rows_for(n_tokens));
  add_bias_kernel<<<grid, kThreads, 0, stream.native()>>>(y, bias, n_tokens, n);
  return cuda::check_last_launch("add_bias_kernel");
}

Status convert_f32(const float* x, int64_t n, DType to, void* out, const cuda::Stream& stream) {
  if (to != DType::kF16 && to != DType::kBF16) {
    return Status::invalid_argument(std::string("convert_f32: cannot convert to ") +
                                    dtype_name_or_id(to) + " (F16 or BF16)");
  }
  if (n < 0) return negative("convert_f32");
  if (n == 0) return Status::ok();
  auto* dst = static_cast<uint16_t*>(out);
  if (to == DType::kF16) {
    convert_f32_kernel<true><<<blocks_for(n, kMaxGridX), kThreads, 0, stream.native()>>>(x, n, dst);
  } else {
    convert_f32_kernel<false>
        <<<blocks_for(n, kMaxGridX), kThreads, 0, stream.native()>>>(x, n, dst);
  }
  return cuda::check_last_launch("convert_f32_kernel");
}

}  // namespace strata::gpu
