#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <vector>

#include "gpu_backend/probes.h"

namespace strata::gpu {
namespace {

__device__ __forceinline__ uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A normal from two hashed uniforms (Box-Muller).
__device__ float normal_at(uint64_t seed, int64_t i) {
  const uint64_t h = mix(seed ^ mix(static_cast<uint64_t>(i)));
  const float u1 = (static_cast<float>(h >> 40) + 1.0f) / 16777217.0f;
  const float u2 = static_cast<float>((h >> 16) & 0xFFFFFF) / 16777216.0f;
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

__global__ void fill_kernel(void* data, int64_t count, int kind, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (kind == 0) {
      static_cast<float*>(data)[i] = scale * normal_at(seed, i);
    } else if (kind == 1) {
      static_cast<__half*>(data)[i] = __float2half_rn(scale * normal_at(seed, i));
    } else if (kind == 2) {
      static_cast<__nv_bfloat16*>(data)[i] = __float2bfloat16_rn(scale * normal_at(seed, i));
    } else {
      static_cast<uint8_t*>(data)[i] = static_cast<uint8_t>(mix(seed ^ mix(i)) >> 24);
    }
  }
}

// Sums 16-byte words; one value per block goes to `sink` so the loads cannot be dropped.
__global__ void read_kernel(const uint4* __restrict__ data, int64_t words, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < words; i += 4 * stride) {
    const uint4 a = __ldcs(data + i), b = __ldcs(data + i + stride);
    const uint4 c = __ldcs(data + i + 2 * stride), d = __ldcs(data + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^
           d.w;
  }
  for (; i < words; i += stride) {
    const uint4 a = __ldcs(data + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9E3779B9u) sink[blockIdx.x] = acc;  // practically never; the compiler can't know
}

}  // namespace

Status fill_random(void* data, int64_t count, DType type, uint64_t seed, float scale,
                   const cuda::Stream& stream) {
  if (count <= 0) return Status::ok();
  const int kind = type == DType::kF32 ? 0 : type == DType::kF16 ? 1 : type == DType::kBF16 ? 2 : 3;
  const int64_t blocks = std::min<int64_t>((count + 255) / 256, 65536);
  fill_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream.native()>>>(data, count, kind, seed,
                                                                          scale);
  return cuda::check_last_launch("fill_random");
}

StatusOr<HbmReadBandwidth> measure_hbm_read_bandwidth(DeviceArena& arena, int64_t bytes, int passes,
                                                      const cuda::Stream& stream) {
  bytes = bytes / 16 * 16;
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer buffer, arena.allocate(bytes, DeviceMemoryTag::kWorkspace));
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer sink, arena.allocate(4 << 20, DeviceMemoryTag::kWorkspace));
  STRATA_RETURN_IF_ERROR(fill_random(buffer.data(), bytes, DType::kQ8_0, 1234, 1.0f, stream));
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) prop.multiProcessorCount = 132;
  const unsigned blocks = static_cast<unsigned>(prop.multiProcessorCount) * 8;
  STRATA_ASSIGN_OR_RETURN(cuda::Event start, cuda::Event::create(cuda::EventTiming::kEnabled));
  STRATA_ASSIGN_OR_RETURN(cuda::Event end, cuda::Event::create(cuda::EventTiming::kEnabled));
  std::vector<double> rates;
  for (int p = -1; p < passes; ++p) {  // pass -1 warms up
    STRATA_RETURN_IF_ERROR(start.record(stream));
    read_kernel<<<blocks, 256, 0, stream.native()>>>(
        static_cast<const uint4*>(buffer.data()), bytes / 16, static_cast<uint32_t*>(sink.data()));
    STRATA_RETURN_IF_ERROR(cuda::check_last_launch("read_kernel"));
    STRATA_RETURN_IF_ERROR(end.record(stream));
    STRATA_RETURN_IF_ERROR(end.synchronize());
    STRATA_ASSIGN_OR_RETURN(const float ms, cuda::elapsed_ms(start, end));
    if (p >= 0) rates.push_back(static_cast<double>(bytes) / (ms * 1e-3));
  }
  std::sort(rates.begin(), rates.end());
  HbmReadBandwidth out;
  out.bytes = bytes;
  out.best_bytes_per_s = rates.back();
  out.median_bytes_per_s = rates[rates.size() / 2];
  return out;
}

}  // namespace strata::gpu
