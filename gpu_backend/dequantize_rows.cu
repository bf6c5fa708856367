// embed_rows and dequantize_rows (see elementwise.h): whole rows of a GpuWeight decoded with
// exactly the float operations of offload/core/dequantize.cpp, stored as float32 or rounded once
// to f16 / bf16 for the prefill GEMM's tiles.
//
// One thread per group of 8 consecutive elements of a row. In every supported layout the 8
// elements of an aligned group come from one contiguous 8-byte (quants), 16-byte (F16/BF16) or
// 32-byte (F32) load plus at most one scale, and they leave as one (f16/bf16) or two (f32)
// 16-byte stores, so a warp writes 512 or 1024 contiguous bytes. The stores are what must
// coalesce: the output is 2-14x the bytes of the input; a block's scales, reloaded by the 4 or 32
// threads that share it, come from L1.
//
// nvcc contracts a * b - c into one FMA by default, which rounds once where the CPU reference
// (built without contraction) rounds twice. Every multiply and add below is therefore spelled
// __fmul_rn / __fsub_rn, which nvcc never fuses.
#include <cstdint>
#include <string>

#include "gpu_backend/elementwise.h"
#include "gpu_backend/half_bits.cuh"

namespace strata::gpu {
namespace {

constexpr int kGroupElems = 8;
constexpr int kMaxThreads = 256;
constexpr int64_t kMaxGridY = 65535;  // CUDA's limit; rows beyond it loop

struct RowsParams {
  const uint8_t* payload = nullptr;
  const uint16_t* scales = nullptr;
  int64_t payload_row_bytes = 0;
  int64_t scale_row_elems = 0;
  int64_t weight_rows = 0;  // bound for ids
  int64_t cols = 0;
  int64_t groups_per_row = 0;    // cols / 8
  int64_t row0 = 0;              // without ids: output row r is weight row row0 + r
  const int32_t* ids = nullptr;  // device [n_rows], or null
  int64_t n_rows = 0;
  void* out = nullptr;  // [n_rows][cols] of the output type
};

__device__ __forceinline__ uint32_t byte_of(const uint2& q, int j) {
  return ((j < 4 ? q.x : q.y) >> (8 * (j & 3))) & 0xffu;
}

__device__ __forceinline__ uint2 load8(const uint8_t* p) {
  return __ldg(reinterpret_cast<const uint2*>(p));
}

__device__ __forceinline__ float load_f16(const uint16_t* p) { return f16_bits_to_f32(__ldg(p)); }

// The 6-bit scale and min of sub-block j of a Q4_K block: q4k_scale_min of quant_blocks.h.
__device__ __forceinline__ void q4k_scale_min_dev(int j, const uint8_t* s, uint32_t* sc,
                                                  uint32_t* m) {
  if (j < 4) {
    *sc = __ldg(s + j) & 63u;
    *m = __ldg(s + j + 4) & 63u;
  } else {
    const uint32_t s_j4 = __ldg(s + j + 4);
    *sc = (s_j4 & 0xFu) | ((__ldg(s + j - 4) >> 6) << 4);
    *m = (s_j4 >> 4) | ((__ldg(s + j) >> 6) << 4);
  }
}

// Elements [8g, 8g + 8) of weight row `row`, as dequantize_row computes them.
template <DType kType>
__device__ __forceinline__ void decode_group(const RowsParams& p, int64_t row, int64_t g,
                                             float v[kGroupElems]) {
  const uint8_t* rowp = p.payload + row * p.payload_row_bytes;
  // Only the types with a scale plane use this (p.scales is null for the others).
  const uint16_t* row_scales = p.scales + row * p.scale_row_elems;
  if constexpr (kType == DType::kF32) {
    const float4* src = reinterpret_cast<const float4*>(rowp) + 2 * g;
    const float4 a = __ldg(src);
    const float4 b = __ldg(src + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else if constexpr (kType == DType::kF16 || kType == DType::kBF16) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(rowp) + g);
    const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (kType == DType::kF16) {
        v[2 * k] = f16_bits_to_f32(words[k] & 0xffffu);
        v[2 * k + 1] = f16_bits_to_f32(words[k] >> 16);
      } else {
        v[2 * k] = bf16_bits_to_f32(words[k] & 0xffffu);
        v[2 * k + 1] = bf16_bits_to_f32(words[k] >> 16);
      }
    }
  } else if constexpr (kType == DType::kQ8_0) {
    // 4 groups per 32-element block; x = q * d.
    const int64_t b = g >> 2;
    const uint2 q = load8(rowp + b * 32 + (g & 3) * 8);
    const float d = load_f16(row_scales + b);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int qi = static_cast<int8_t>(byte_of(q, j));
      v[j] = __fmul_rn(static_cast<float>(qi), d);
    }
  } else if constexpr (kType == DType::kQ4_0) {
    // Groups 0, 1 of a block are the low nibbles of bytes 0-7, 8-15; groups 2, 3 the high ones.
    const int64_t b = g >> 2;
    const int sub = static_cast<int>(g & 3);
    const uint2 q = load8(rowp + b * 16 + (sub & 1) * 8);
    const float d = load_f16(row_scales + b);
    const int shift = sub < 2 ? 0 : 4;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int qi = static_cast<int>((byte_of(q, j) >> shift) & 0xFu) - 8;
      v[j] = __fmul_rn(static_cast<float>(qi), d);
    }
  } else if constexpr (kType == DType::kQ4_K) {
    // 32 groups per 256-element block. Group k: 64-element chunk c = k / 8 reads qs[32c ..];
    // its first half (k % 8 < 4) the low nibbles as sub-block 2c, the second the high ones as
    // sub-block 2c + 1. x = (d * sc) * q - (dmin * m).
    const int64_t b = g >> 5;
    const int k = static_cast<int>(g & 31);
    const int c = k >> 3;
    const int high = (k >> 2) & 1;
    const uint8_t* block = rowp + b * 144;
    const float d = load_f16(reinterpret_cast<const uint16_t*>(block));
    const float dmin = load_f16(reinterpret_cast<const uint16_t*>(block) + 1);
    uint32_t sc = 0;
    uint32_t m = 0;
    q4k_scale_min_dev(2 * c + high, block + 4, &sc, &m);
    const float d_sub = __fmul_rn(d, static_cast<float>(sc));
    const float m_sub = __fmul_rn(dmin, static_cast<float>(m));
    const uint2 q = load8(block + 16 + 32 * c + (k & 3) * 8);
    const int shift = high ? 4 : 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t qi = (byte_of(q, j) >> shift) & 0xFu;
      v[j] = __fsub_rn(__fmul_rn(d_sub, static_cast<float>(qi)), m_sub);
    }
  } else if constexpr (kType == DType::kQ6_K) {
    // 32 groups per 256-element block (payload: ql[128], qh[64], scales[16]). Group k: half
    // h = k / 16 (ql + 64h, qh + 32h, scales + 8h), quarter r = (k / 4) % 4 of it, offset
    // i = 8 * (k % 4) in the quarter; ql byte i (+32 for odd r), its high nibble for r >= 2, qh
    // bits 2r..2r+1 of byte i, scale i / 16 + 2r. x = (d * scale) * (q - 32).
    const int64_t b = g >> 5;
    const int k = static_cast<int>(g & 31);
    const int h = k >> 4;
    const int r = (k >> 2) & 3;
    const int i = (k & 3) * 8;
    const uint8_t* block = rowp + b * 208;
    const uint2 ql = load8(block + 64 * h + 32 * (r & 1) + i);
    const uint2 qh = load8(block + 128 + 32 * h + i);
    const int scale = static_cast<int8_t>(__ldg(block + 192 + 8 * h + (i >> 4) + 2 * r));
    const float d = load_f16(row_scales + b);
    const float d_sc = __fmul_rn(d, static_cast<float>(scale));
    const int ql_shift = (r >> 1) * 4;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int qi = static_cast<int>(((byte_of(ql, j) >> ql_shift) & 0xFu) |
                                      (((byte_of(qh, j) >> (2 * r)) & 3u) << 4)) -
                     32;
      v[j] = __fmul_rn(d_sc, static_cast<float>(qi));
    }
  }
}

template <DType kTo>
__device__ __forceinline__ void store_group(void* out, int64_t elem, const float v[kGroupElems]) {
  if constexpr (kTo == DType::kF32) {
    float4* dst = reinterpret_cast<float4*>(static_cast<float*>(out) + elem);
    dst[0] = make_float4(v[0], v[1], v[2], v[3]);
    dst[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo =
          kTo == DType::kF16 ? f32_to_f16_bits(v[2 * k]) : f32_to_bf16_bits(v[2 * k]);
      const uint32_t hi =
          kTo == DType::kF16 ? f32_to_f16_bits(v[2 * k + 1]) : f32_to_bf16_bits(v[2 * k + 1]);
      words[k] = lo | (hi << 16);
    }
    *reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + elem) =
        make_uint4(words[0], words[1], words[2], words[3]);
  }
}

// grid.x covers a row's groups, grid.y (with a loop past 65535) the rows.
template <DType kType, DType kTo>
__global__ void __launch_bounds__(kMaxThreads) dequantize_rows_kernel(const RowsParams p) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= p.groups_per_row) return;
  for (int64_t r = blockIdx.y; r < p.n_rows; r += gridDim.y) {
    float v[kGroupElems];
    const int64_t row = p.ids != nullptr ? static_cast<int64_t>(__ldg(p.ids + r)) : p.row0 + r;
    if (row >= 0 && row < p.weight_rows) {
      decode_group<kType>(p, row, g, v);
    } else {
      // A token id outside the table (ids live on the device, so the host cannot check them):
      // NaN rather than a read past the weight, so that it shows in the logits.
#pragma unroll
      for (int j = 0; j < kGroupElems; ++j) v[j] = __uint_as_float(0x7fc00000u);
    }
    store_group<kTo>(p.out, r * p.cols + g * kGroupElems, v);
  }
}

template <DType kType, DType kTo>
Status launch(const RowsParams& p, const char* caller, const cuda::Stream& stream) {
  const int64_t warps = (p.groups_per_row + 31) / 32;
  const int threads = static_cast<int>(warps * 32 < kMaxThreads ? warps * 32 : kMaxThreads);
  const dim3 grid(static_cast<unsigned>((p.groups_per_row + threads - 1) / threads),
                  static_cast<unsigned>(p.n_rows < kMaxGridY ? p.n_rows : kMaxGridY));
  dequantize_rows_kernel<kType, kTo><<<grid, threads, 0, stream.native()>>>(p);
  return cuda::check_last_launch(caller);
}

template <DType kType>
Status launch_to(DType to, const RowsParams& p, const char* caller, const cuda::Stream& stream) {
  switch (to) {
    case DType::kF32:
      return launch<kType, DType::kF32>(p, caller, stream);
    case DType::kF16:
      return launch<kType, DType::kF16>(p, caller, stream);
    case DType::kBF16:
      return launch<kType, DType::kBF16>(p, caller, stream);
    default:
      return Status::internal(std::string(caller) + ": unchecked output type");
  }
}

Status launch_rows(DType type, DType to, const RowsParams& p, const char* caller,
                   const cuda::Stream& stream) {
  switch (type) {
    case DType::kF32:
      return launch_to<DType::kF32>(to, p, caller, stream);
    case DType::kF16:
      return launch_to<DType::kF16>(to, p, caller, stream);
    case DType::kBF16:
      return launch_to<DType::kBF16>(to, p, caller, stream);
    case DType::kQ8_0:
      return launch_to<DType::kQ8_0>(to, p, caller, stream);
    case DType::kQ4_0:
      return launch_to<DType::kQ4_0>(to, p, caller, stream);
    case DType::kQ4_K:
      return launch_to<DType::kQ4_K>(to, p, caller, stream);
    case DType::kQ6_K:
      return launch_to<DType::kQ6_K>(to, p, caller, stream);
    default:
      return Status::internal(std::string(caller) + ": unchecked weight type");
  }
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The kernel's view of `w`, or invalid_argument when w is not a well-formed GPU weight: a type
// the GPU reads, whole blocks, 16-byte aligned payload (the kernels' vector loads) and a scale
// plane where the type has one.
StatusOr<RowsParams> weight_params(const char* caller, const GpuWeight& w) {
  StatusOr<GpuWeightLayout> layout = gpu_weight_layout(w.type, w.rows, w.cols);
  if (!layout.is_ok()) {
    return Status(layout.status().code(), std::string(caller) + ": " + layout.status().message());
  }
  if (w.data == nullptr || !aligned(w.data, 16)) {
    return Status::invalid_argument(std::string(caller) +
                                    ": the weight's payload is null or not 16-byte aligned");
  }
  if (layout->scale_row_elems > 0 && (w.scales == nullptr || !aligned(w.scales, 2))) {
    return Status::invalid_argument(std::string(caller) + ": a " + dtype_name(w.type) +
                                    " weight needs its scale plane");
  }
  RowsParams p;
  p.payload = static_cast<const uint8_t*>(w.data);
  p.scales = w.scales;
  p.payload_row_bytes = layout->payload_row_bytes;
  p.scale_row_elems = layout->scale_row_elems;
  p.weight_rows = w.rows;
  p.cols = w.cols;
  p.groups_per_row = w.cols / kGroupElems;
  return p;
}

}  // namespace

Status embed_rows(const GpuWeight& table, const int32_t* ids, int64_t n_tokens, float* out,
                  const cuda::Stream& stream) {
  if (n_tokens < 0) return Status::invalid_argument("embed_rows: negative token count");
  if (n_tokens == 0) return Status::ok();
  STRATA_ASSIGN_OR_RETURN(RowsParams p, weight_params("embed_rows", table));
  if (ids == nullptr) return Status::invalid_argument("embed_rows: no token ids");
  if (out == nullptr || !aligned(out, 16)) {
    return Status::invalid_argument("embed_rows: the output is null or not 16-byte aligned");
  }
  p.ids = ids;
  p.n_rows = n_tokens;
  p.out = out;
  return launch_rows(table.type, DType::kF32, p, "embed_rows", stream);
}

Status dequantize_rows(const GpuWeight& w, int64_t row0, int64_t n_rows, DType to, void* out,
                       const cuda::Stream& stream) {
  if (to != DType::kF32 && to != DType::kF16 && to != DType::kBF16) {
    return Status::invalid_argument(std::string("dequantize_rows: cannot write ") +
                                    dtype_name_or_id(to) + " tiles (F32, F16 or BF16)");
  }
  if (row0 < 0 || n_rows < 0 || row0 + n_rows > w.rows) {
    return Status::invalid_argument("dequantize_rows: rows [" + std::to_string(row0) + ", " +
                                    std::to_string(row0 + n_rows) + ") are not within the " +
                                    std::to_string(w.rows) + " rows of the weight");
  }
  if (n_rows == 0) return Status::ok();
  STRATA_ASSIGN_OR_RETURN(RowsParams p, weight_params("dequantize_rows", w));
  if (out == nullptr || !aligned(out, 16)) {
    return Status::invalid_argument("dequantize_rows: the output is null or not 16-byte aligned");
  }
  p.row0 = row0;
  p.n_rows = n_rows;
  p.out = out;
  return launch_rows(w.type, to, p, "dequantize_rows", stream);
}

}  // namespace strata::gpu
