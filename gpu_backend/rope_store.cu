// rope_table and rope_store_kv (see elementwise.h): the rotation of a decode step in two launches
// instead of one rope kernel per layer and tensor. The (cos, sin) of every (token, pair) depend
// only on the positions, so they are computed once per forward call, in double as the CPU does,
// then rounded to float; each layer's q and k are rotated from that table with the same float
// operations as rope_kernel and the CPU (no FMA contraction), and k and v go straight into the
// paged cache at positions read from device memory (a CUDA graph replays this unchanged). A q8_0
// cache quantizes whole 32-element blocks, so there k is rotated into shared memory first and
// then k and v are quantized a block per warp (kv_q8_0.cuh).
#include <cstdint>
#include <string>

#include "gpu_backend/elementwise.h"
#include "gpu_backend/half_bits.cuh"
#include "gpu_backend/kv_q8_0.cuh"

namespace strata::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void rope_table_kernel(const int32_t* positions, int64_t n_tokens, int half,
                                  int rope_dims, double theta, float2* table) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_tokens * half) return;
  const int64_t t = idx / half;
  const int i = static_cast<int>(idx - t * half);
  const double inv_freq = pow(theta, -2.0 * static_cast<double>(i) / rope_dims);
  const double angle = static_cast<double>(positions[t]) * inv_freq;
  table[idx] = make_float2(static_cast<float>(cos(angle)), static_cast<float>(sin(angle)));
}

struct RopeStoreParams {
  float* q;        // [n_tokens][n_head * head_dim], rotated in place
  const float* k;  // [n_tokens][kv_dim], rotated on its way into the cache
  const float* v;  // [n_tokens][kv_dim]
  const float2* table;
  int n_head, n_head_kv, head_dim, half;
  bool neox;
  const int32_t* positions;
  void* const* block_table;
  int64_t n_layer, layer, block_tokens, kv_dim;
  bool f16;
  bool q8_0;  // then the kernel needs kv_dim floats of dynamic shared memory
};

__device__ __forceinline__ void rotate(float x0, float x1, float2 cs, float* r0, float* r1) {
  *r0 = __fsub_rn(__fmul_rn(x0, cs.x), __fmul_rn(x1, cs.y));
  *r1 = __fadd_rn(__fmul_rn(x0, cs.y), __fmul_rn(x1, cs.x));
}

__device__ __forceinline__ void put(void* rows, int64_t index, float value, bool f16) {
  if (f16) {
    static_cast<uint16_t*>(rows)[index] = f32_to_f16_bits(value);
  } else {
    static_cast<float*>(rows)[index] = value;
  }
}

// One block per token: q's pairs, then k's pairs (stored rotated) and v (stored as is).
__global__ void __launch_bounds__(kThreads) rope_store_kernel(const RopeStoreParams p) {
  const int64_t t = blockIdx.x;
  const float2* cs = p.table + t * p.half;
  const int64_t pos = p.positions[t];
  const int64_t block = pos / p.block_tokens;
  const int64_t slot = pos - block * p.block_tokens;
  void* k_rows = p.block_table[(block * p.n_layer + p.layer) * 2];
  void* v_rows = p.block_table[(block * p.n_layer + p.layer) * 2 + 1];
  const int64_t base = slot * p.kv_dim;

  float* qr = p.q + t * p.n_head * p.head_dim;
  for (int pr = threadIdx.x; pr < p.n_head * p.half; pr += kThreads) {
    const int h = pr / p.half, i = pr - h * p.half;
    const int a = h * p.head_dim + (p.neox ? i : 2 * i);
    const int b = h * p.head_dim + (p.neox ? i + p.half : 2 * i + 1);
    float r0, r1;
    rotate(qr[a], qr[b], cs[i], &r0, &r1);
    qr[a] = r0;
    qr[b] = r1;
  }
  const float* kr = p.k + t * p.kv_dim;
  const float* vr = p.v + t * p.kv_dim;
  const int rot = p.n_head_kv * p.half;
  if (p.q8_0) {
    extern __shared__ float k_rotated[];  // [kv_dim]
    for (int e = threadIdx.x; e < p.kv_dim; e += kThreads) {
      const int h = e / p.head_dim, d = e - h * p.head_dim;
      if (d >= 2 * p.half) k_rotated[e] = kr[e];
    }
    for (int pr = threadIdx.x; pr < rot; pr += kThreads) {
      const int h = pr / p.half, i = pr - h * p.half;
      const int a = h * p.head_dim + (p.neox ? i : 2 * i);
      const int b = h * p.head_dim + (p.neox ? i + p.half : 2 * i + 1);
      rotate(kr[a], kr[b], cs[i], &k_rotated[a], &k_rotated[b]);
    }
    __syncthreads();
    const int64_t n_blocks = p.kv_dim / kQ8Block;
    const int64_t row_offset = slot * q8_0_block_offset(p.kv_dim);
    const int lane = threadIdx.x & 31;
    for (int64_t qb = threadIdx.x / 32; qb < 2 * n_blocks; qb += kThreads / 32) {
      const bool is_v = qb >= n_blocks;
      const int64_t b = is_v ? qb - n_blocks : qb;
      const float x = is_v ? vr[b * kQ8Block + lane] : k_rotated[b * kQ8Block + lane];
      auto* rows = static_cast<unsigned char*>(is_v ? v_rows : k_rows);
      warp_store_q8_0(x, rows + row_offset + b * kQ8BlockBytes);
    }
    return;
  }
  for (int e = threadIdx.x; e < p.kv_dim; e += kThreads) {
    put(v_rows, base + e, vr[e], p.f16);
    // Elements past rope_dims in each head are copied unrotated.
    const int h = e / p.head_dim, d = e - h * p.head_dim;
    if (d >= 2 * p.half) put(k_rows, base + e, kr[e], p.f16);
  }
  for (int pr = threadIdx.x; pr < rot; pr += kThreads) {
    const int h = pr / p.half, i = pr - h * p.half;
    const int a = h * p.head_dim + (p.neox ? i : 2 * i);
    const int b = h * p.head_dim + (p.neox ? i + p.half : 2 * i + 1);
    float r0, r1;
    rotate(kr[a], kr[b], cs[i], &r0, &r1);
    put(k_rows, base + a, r0, p.f16);
    put(k_rows, base + b, r1, p.f16);
  }
}

}  // namespace

Status rope_table(const int32_t* positions, int64_t n_tokens, int64_t rope_dims, double theta,
                  float* table, const cuda::Stream& stream) {
  if (n_tokens < 0 || rope_dims < 0 || rope_dims % 2 != 0) {
    return Status::invalid_argument("rope_table: bad token count or rope_dims " +
                                    std::to_string(rope_dims));
  }
  const int64_t half = rope_dims / 2;
  if (n_tokens == 0 || half == 0) return Status::ok();
  const int64_t total = n_tokens * half;
  rope_table_kernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0,
                      stream.native()>>>(positions, n_tokens, static_cast<int>(half),
                                         static_cast<int>(rope_dims), theta,
                                         reinterpret_cast<float2*>(table));
  return cuda::check_last_launch("rope_table_kernel");
}

Status rope_store_kv(float* q, const float* k, const float* v, int64_t n_tokens, const float* table,
                     const AttentionShape& shape, int64_t rope_dims, RopeStyle style,
                     const GpuKvView& kv, int64_t layer, const cuda::Stream& stream) {
  if (kv.positions == nullptr) {
    return Status::invalid_argument("rope_store_kv: the KV view carries no device positions");
  }
  if (rope_dims % 2 != 0 || rope_dims > shape.head_dim || rope_dims < 0) {
    return Status::invalid_argument("rope_store_kv: rope_dims " + std::to_string(rope_dims));
  }
  if (kv.dtype != DType::kF32 && kv.dtype != DType::kF16 && kv.dtype != DType::kQ8_0) {
    return Status::invalid_argument("rope_store_kv: a cache of F32, F16 or Q8_0");
  }
  // The rotated k row of a q8_0 store sits in shared memory (48 KiB without an opt-in).
  constexpr int64_t kMaxSharedFloats = 48 * 1024 / 4;
  if (kv.dtype == DType::kQ8_0 && (kv.kv_dim % kQ8Block != 0 || kv.kv_dim > kMaxSharedFloats)) {
    return Status::invalid_argument(
        "rope_store_kv: a Q8_0 cache needs kv_dim a multiple of 32 and at most " +
        std::to_string(kMaxSharedFloats) + ", got " + std::to_string(kv.kv_dim));
  }
  if (layer < 0 || layer >= kv.n_layer || kv.kv_dim != shape.n_head_kv * shape.head_dim) {
    return Status::invalid_argument("rope_store_kv: layer or shape does not match the cache");
  }
  if (n_tokens <= 0) return Status::ok();
  RopeStoreParams p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.table = reinterpret_cast<const float2*>(table);
  p.n_head = static_cast<int>(shape.n_head);
  p.n_head_kv = static_cast<int>(shape.n_head_kv);
  p.head_dim = static_cast<int>(shape.head_dim);
  p.half = static_cast<int>(rope_dims / 2);
  p.neox = style == RopeStyle::kNeoxHalves;
  p.positions = kv.positions;
  p.block_table = kv.block_table;
  p.n_layer = kv.n_layer;
  p.layer = layer;
  p.block_tokens = kv.block_tokens;
  p.kv_dim = kv.kv_dim;
  p.f16 = kv.dtype == DType::kF16;
  p.q8_0 = kv.dtype == DType::kQ8_0;
  const size_t shared_bytes = p.q8_0 ? static_cast<size_t>(kv.kv_dim) * sizeof(float) : 0;
  rope_store_kernel<<<static_cast<unsigned>(n_tokens), kThreads, shared_bytes, stream.native()>>>(
      p);
  return cuda::check_last_launch("rope_store_kernel");
}

}  // namespace strata::gpu
