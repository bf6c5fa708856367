// store_kv (see elementwise.h): the new tokens' K and V rows into their slots of the paged cache.
// grid.z picks K or V, grid.y the token (looping past 65535), grid.x the row's elements (f32,
// f16: one thread each) or the row's q8_0 blocks (one warp each, kv_q8_0.cuh); each token looks
// its block up in the block table once (see gpu_kv_view.h for its order).
#include <cstdint>
#include <string>

#include "gpu_backend/elementwise.h"
#include "gpu_backend/half_bits.cuh"
#include "gpu_backend/kv_q8_0.cuh"

namespace strata::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

struct StoreParams {
  const float* k = nullptr;  // [n_tokens][kv_dim]
  const float* v = nullptr;  // [n_tokens][kv_dim]
  void* const* block_table = nullptr;
  int64_t n_tokens = 0;
  int64_t pos0 = 0;
  int64_t n_layer = 0;
  int64_t layer = 0;
  int64_t block_tokens = 0;
  int64_t kv_dim = 0;
  const int32_t* positions = nullptr;  // device; when set, overrides pos0 + t (gpu_kv_view.h)
};

template <bool kToF16>
__global__ void __launch_bounds__(kThreads) store_kv_kernel(const StoreParams p) {
  const int which = blockIdx.z;  // 0: K, 1: V
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= p.kv_dim) return;
  const float* src = which == 0 ? p.k : p.v;
  for (int64_t t = blockIdx.y; t < p.n_tokens; t += gridDim.y) {
    const int64_t pos = p.positions != nullptr ? static_cast<int64_t>(p.positions[t]) : p.pos0 + t;
    const int64_t block = pos / p.block_tokens;
    const int64_t slot = pos - block * p.block_tokens;
    void* rows = p.block_table[(block * p.n_layer + p.layer) * 2 + which];
    const float value = src[t * p.kv_dim + i];
    if constexpr (kToF16) {
      static_cast<uint16_t*>(rows)[slot * p.kv_dim + i] = f32_to_f16_bits(value);
    } else {
      static_cast<float*>(rows)[slot * p.kv_dim + i] = value;
    }
  }
}

// One warp per 32-element block of a row: kThreads / 32 blocks per CUDA block in x.
__global__ void __launch_bounds__(kThreads) store_kv_q8_0_kernel(const StoreParams p) {
  const int which = blockIdx.z;  // 0: K, 1: V
  const int64_t q8_block = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (q8_block * kQ8Block >= p.kv_dim) return;  // whole warps leave together
  const int64_t i = q8_block * kQ8Block + (threadIdx.x & 31);
  const float* src = which == 0 ? p.k : p.v;
  const int64_t row_bytes = q8_0_block_offset(p.kv_dim);
  for (int64_t t = blockIdx.y; t < p.n_tokens; t += gridDim.y) {
    const int64_t pos = p.positions != nullptr ? static_cast<int64_t>(p.positions[t]) : p.pos0 + t;
    const int64_t block = pos / p.block_tokens;
    const int64_t slot = pos - block * p.block_tokens;
    auto* rows =
        static_cast<unsigned char*>(p.block_table[(block * p.n_layer + p.layer) * 2 + which]);
    warp_store_q8_0(src[t * p.kv_dim + i], rows + slot * row_bytes + q8_block * kQ8BlockBytes);
  }
}

}  // namespace

Status store_kv(const float* k, const float* v, int64_t n_tokens, int64_t pos0, const GpuKvView& kv,
                int64_t layer, const cuda::Stream& stream) {
  if (n_tokens < 0 || pos0 < 0) {
    return Status::invalid_argument("store_kv: negative token count or position");
  }
  if (kv.dtype != DType::kF32 && kv.dtype != DType::kF16 && kv.dtype != DType::kQ8_0) {
    return Status::invalid_argument(std::string("store_kv: a ") + dtype_name_or_id(kv.dtype) +
                                    " cache (F32, F16 or Q8_0)");
  }
  if (kv.dtype == DType::kQ8_0 && kv.kv_dim % kQ8Block != 0) {
    return Status::invalid_argument("store_kv: a Q8_0 cache needs kv_dim a multiple of 32, got " +
                                    std::to_string(kv.kv_dim));
  }
  if (n_tokens == 0) return Status::ok();
  if (pos0 + n_tokens > kv.num_tokens) {
    return Status::invalid_argument("store_kv: positions [" + std::to_string(pos0) + ", " +
                                    std::to_string(pos0 + n_tokens) + ") are not within the " +
                                    std::to_string(kv.num_tokens) + " tokens of the cache view");
  }
  if (layer < 0 || layer >= kv.n_layer) {
    return Status::invalid_argument("store_kv: layer " + std::to_string(layer) + " of " +
                                    std::to_string(kv.n_layer));
  }
  if (kv.block_tokens <= 0 || kv.kv_dim <= 0 || kv.block_table == nullptr) {
    return Status::invalid_argument("store_kv: an empty cache view");
  }
  StoreParams p;
  p.k = k;
  p.v = v;
  p.block_table = kv.block_table;
  p.n_tokens = n_tokens;
  p.pos0 = pos0;
  p.n_layer = kv.n_layer;
  p.layer = layer;
  p.block_tokens = kv.block_tokens;
  p.kv_dim = kv.kv_dim;
  p.positions = kv.positions;
  const unsigned grid_y = static_cast<unsigned>(n_tokens < kMaxGridY ? n_tokens : kMaxGridY);
  if (kv.dtype == DType::kQ8_0) {
    const int64_t per_cta = int64_t{kThreads} / 32 * kQ8Block;
    const dim3 grid(static_cast<unsigned>((kv.kv_dim + per_cta - 1) / per_cta), grid_y, 2);
    store_kv_q8_0_kernel<<<grid, kThreads, 0, stream.native()>>>(p);
    return cuda::check_last_launch("store_kv_q8_0_kernel");
  }
  const dim3 grid(static_cast<unsigned>((kv.kv_dim + kThreads - 1) / kThreads), grid_y, 2);
  if (kv.dtype == DType::kF16) {
    store_kv_kernel<true><<<grid, kThreads, 0, stream.native()>>>(p);
  } else {
    store_kv_kernel<false><<<grid, kThreads, 0, stream.native()>>>(p);
  }
  return cuda::check_last_launch("store_kv_kernel");
}

}  // namespace strata::gpu
