#include "gpu_backend/gpu_weight.h"

#include <cstring>

#include "memory/device_arena.h"
#include "offload/core/quant_blocks.h"

namespace strata::gpu {
namespace {

int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// Bytes of one block's payload in the GPU layout, and whether it has a scale in the scale plane.
struct BlockSplit {
  int64_t payload_bytes;
  bool has_scale;
};

BlockSplit block_split(DType type) {
  switch (type) {
    case DType::kQ8_0:
      return {kQK8_0, true};
    case DType::kQ4_0:
      return {kQK4_0 / 2, true};
    case DType::kQ4_K:
      return {sizeof(BlockQ4_K), false};
    case DType::kQ6_K:
      return {sizeof(BlockQ6_K) - sizeof(uint16_t), true};
    default:
      return {traits(type).block_bytes, false};
  }
}

// f16 scales per row in the scale plane: nb rounded up to even, so that every row's scales start
// 4-byte aligned and a pair of blocks' scales is one 4-byte copy (gemv_mma.cu). The padding half
// is zero.
int64_t scale_stride(int64_t nb) { return round_up(nb, 2); }

}  // namespace

bool gpu_supports(DType type) {
  switch (type) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

StatusOr<GpuWeightLayout> gpu_weight_layout(DType type, int64_t rows, int64_t cols) {
  if (!gpu_supports(type)) {
    return Status::invalid_argument(std::string("the GPU kernels do not read ") +
                                    dtype_name_or_id(type) + " weights");
  }
  if (rows <= 0 || cols <= 0) return Status::invalid_argument("empty weight matrix");
  const DTypeTraits& t = traits(type);
  if (cols % t.block_elems != 0) {
    return Status::invalid_argument("a " + std::string(t.name) + " row of " + std::to_string(cols) +
                                    " elements is not whole blocks of " +
                                    std::to_string(t.block_elems));
  }
  if (t.block_elems == 1 && cols % 8 != 0) {
    return Status::invalid_argument("GPU weight rows must hold a multiple of 8 elements, not " +
                                    std::to_string(cols));
  }
  const BlockSplit split = block_split(type);
  const int64_t nb = cols / t.block_elems;
  GpuWeightLayout layout;
  layout.payload_row_bytes = nb * split.payload_bytes;
  layout.scale_row_elems = split.has_scale ? scale_stride(nb) : 0;
  layout.payload_bytes = rows * layout.payload_row_bytes;
  layout.scale_offset_bytes = round_up(layout.payload_bytes, kDeviceArenaAlignmentBytes);
  layout.total_bytes =
      layout.scale_offset_bytes +
      round_up(rows * layout.scale_row_elems * int64_t{2}, kDeviceArenaAlignmentBytes);
  return layout;
}

void repack_rows(DType type, int64_t cols, const uint8_t* src, int64_t n_rows, uint8_t* payload_dst,
                 uint16_t* scale_dst) {
  const int64_t src_row = row_bytes(type, cols);
  const int64_t nb = cols / traits(type).block_elems;
  const BlockSplit split = block_split(type);
  if (!split.has_scale) {
    std::memcpy(payload_dst, src, static_cast<size_t>(n_rows * src_row));
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* s = src + r * src_row;
    uint8_t* p = payload_dst + r * nb * split.payload_bytes;
    uint16_t* d = scale_dst + r * scale_stride(nb);
    if (scale_stride(nb) != nb) d[nb] = 0;
    for (int64_t b = 0; b < nb; ++b) {
      if (type == DType::kQ6_K) {
        const auto* blk = reinterpret_cast<const BlockQ6_K*>(s) + b;
        std::memcpy(p + b * split.payload_bytes, blk, static_cast<size_t>(split.payload_bytes));
        std::memcpy(&d[b], &blk->d, 2);
      } else {
        // Q8_0 and Q4_0: the f16 d first, then the quants.
        const uint8_t* blk = s + b * traits(type).block_bytes;
        std::memcpy(&d[b], blk, 2);
        std::memcpy(p + b * split.payload_bytes, blk + 2, static_cast<size_t>(split.payload_bytes));
      }
    }
  }
}

void unpack_rows(DType type, int64_t cols, const uint8_t* payload, const uint16_t* scales,
                 int64_t n_rows, uint8_t* dst) {
  const int64_t dst_row = row_bytes(type, cols);
  const int64_t nb = cols / traits(type).block_elems;
  const BlockSplit split = block_split(type);
  if (!split.has_scale) {
    std::memcpy(dst, payload, static_cast<size_t>(n_rows * dst_row));
    return;
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* p = payload + r * nb * split.payload_bytes;
    const uint16_t* d = scales + r * scale_stride(nb);
    uint8_t* out = dst + r * dst_row;
    for (int64_t b = 0; b < nb; ++b) {
      if (type == DType::kQ6_K) {
        auto* blk = reinterpret_cast<BlockQ6_K*>(out) + b;
        std::memcpy(blk, p + b * split.payload_bytes, static_cast<size_t>(split.payload_bytes));
        std::memcpy(&blk->d, &d[b], 2);
      } else {
        uint8_t* blk = out + b * traits(type).block_bytes;
        std::memcpy(blk, &d[b], 2);
        std::memcpy(blk + 2, p + b * split.payload_bytes, static_cast<size_t>(split.payload_bytes));
      }
    }
  }
}

}  // namespace strata::gpu
