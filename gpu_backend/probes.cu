#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <vector>

#include "gpu_backend/cublas.h"
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

StatusOr<double> measure_copy_bandwidth(DeviceArena& arena, int64_t chunk_bytes, int chunks,
                                        CopyDirection direction, bool pinned,
                                        const cuda::Stream& stream) {
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer device,
                          arena.allocate(chunk_bytes, DeviceMemoryTag::kWorkspace));
  cuda::PinnedHostBuffer pinned_host;
  std::vector<uint8_t> pageable_host;
  void* host = nullptr;
  if (pinned) {
    STRATA_ASSIGN_OR_RETURN(pinned_host, cuda::PinnedHostBuffer::allocate(chunk_bytes));
    host = pinned_host.data();
  } else {
    pageable_host.assign(static_cast<size_t>(chunk_bytes), 1);  // touched: resident pages
    host = pageable_host.data();
  }
  const auto kind = direction == CopyDirection::kHostToDevice ? cuda::CopyKind::kHostToDevice
                                                              : cuda::CopyKind::kDeviceToHost;
  void* dst = direction == CopyDirection::kHostToDevice ? device.data() : host;
  const void* src = direction == CopyDirection::kHostToDevice ? host : device.data();
  STRATA_ASSIGN_OR_RETURN(cuda::Event start, cuda::Event::create(cuda::EventTiming::kEnabled));
  STRATA_ASSIGN_OR_RETURN(cuda::Event end, cuda::Event::create(cuda::EventTiming::kEnabled));
  STRATA_RETURN_IF_ERROR(cuda::memcpy_async(dst, src, chunk_bytes, kind, stream));  // warm-up
  STRATA_RETURN_IF_ERROR(start.record(stream));
  for (int i = 0; i < chunks; ++i) {
    STRATA_RETURN_IF_ERROR(cuda::memcpy_async(dst, src, chunk_bytes, kind, stream));
  }
  STRATA_RETURN_IF_ERROR(end.record(stream));
  STRATA_RETURN_IF_ERROR(end.synchronize());
  STRATA_ASSIGN_OR_RETURN(const float ms, cuda::elapsed_ms(start, end));
  return static_cast<double>(chunk_bytes) * chunks / (ms * 1e-3);
}

StatusOr<std::unique_ptr<CopyBatch>> CopyBatch::start(DeviceArena& arena, int64_t chunk_bytes,
                                                      int chunks, const cuda::Stream& stream) {
  std::unique_ptr<CopyBatch> b(new CopyBatch());
  STRATA_ASSIGN_OR_RETURN(b->device_, arena.allocate(chunk_bytes, DeviceMemoryTag::kWorkspace));
  STRATA_ASSIGN_OR_RETURN(b->host_, cuda::PinnedHostBuffer::allocate(chunk_bytes));
  STRATA_ASSIGN_OR_RETURN(b->start_, cuda::Event::create(cuda::EventTiming::kEnabled));
  STRATA_ASSIGN_OR_RETURN(b->end_, cuda::Event::create(cuda::EventTiming::kEnabled));
  STRATA_RETURN_IF_ERROR(b->start_.record(stream));
  for (int i = 0; i < chunks; ++i) {
    STRATA_RETURN_IF_ERROR(cuda::memcpy_async(b->device_.data(), b->host_.data(), chunk_bytes,
                                              cuda::CopyKind::kHostToDevice, stream));
  }
  STRATA_RETURN_IF_ERROR(b->end_.record(stream));
  b->bytes_ = chunk_bytes * chunks;
  return StatusOr<std::unique_ptr<CopyBatch>>(std::move(b));
}

StatusOr<double> CopyBatch::finish() {
  STRATA_RETURN_IF_ERROR(end_.synchronize());
  STRATA_ASSIGN_OR_RETURN(const float ms, cuda::elapsed_ms(start_, end_));
  return static_cast<double>(bytes_) / (ms * 1e-3);
}

StatusOr<double> measure_gemm_flop_per_s(DeviceArena& arena, const cuda::Stream& stream, DType type,
                                         int64_t m, int64_t n, int64_t k) {
  STRATA_ASSIGN_OR_RETURN(auto blas, Cublas::create(arena, stream));
  const int64_t elem = type == DType::kF32 ? 4 : 2;
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer w,
                          arena.allocate(m * k * elem, DeviceMemoryTag::kWorkspace));
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer x,
                          arena.allocate(n * k * elem, DeviceMemoryTag::kWorkspace));
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer y, arena.allocate(n * m * 4, DeviceMemoryTag::kWorkspace));
  STRATA_RETURN_IF_ERROR(fill_random(w.data(), m * k, type, 11, 0.05f, stream));
  STRATA_RETURN_IF_ERROR(fill_random(x.data(), n * k, type, 12, 1.0f, stream));
  STRATA_ASSIGN_OR_RETURN(cuda::Event start, cuda::Event::create(cuda::EventTiming::kEnabled));
  STRATA_ASSIGN_OR_RETURN(cuda::Event end, cuda::Event::create(cuda::EventTiming::kEnabled));
  std::vector<double> ms;
  for (int r = 0; r < 13; ++r) {
    STRATA_RETURN_IF_ERROR(start.record(stream));
    STRATA_RETURN_IF_ERROR(
        blas->matmul_xwt(type, w.data(), x.data(), m, n, k, static_cast<float*>(y.data()), 0.0f));
    STRATA_RETURN_IF_ERROR(end.record(stream));
    STRATA_RETURN_IF_ERROR(end.synchronize());
    STRATA_ASSIGN_OR_RETURN(const float t, cuda::elapsed_ms(start, end));
    if (r >= 3) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(m) * n * k / (ms[ms.size() / 2] * 1e-3);
}

}  // namespace strata::gpu
