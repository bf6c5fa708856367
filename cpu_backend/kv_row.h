// One head's slice of a KV row as float32, whatever the cache stores (memory/kv_view.h): kF32 is
// returned in place; kF16 and kQ8_0 are widened into `buf` (n floats), so attention runs the same
// float32 loops on every KV type. The values are exactly dequantize_row's.
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"
#include "offload/core/quant_blocks.h"

namespace strata::cpu {

// REQUIRES: for kQ8_0, n is a multiple of 32 and `row` starts at a block.
inline const float* kv_row_f32(const void* row, int64_t n, DType dtype, float* buf) {
  switch (dtype) {
    case DType::kF16: {
      const auto* r = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) buf[i] = f16_to_f32(r[i]);
      return buf;
    }
    case DType::kQ8_0: {
      const auto* blocks = static_cast<const BlockQ8_0*>(row);
      for (int64_t b = 0; b < n / kQK8_0; ++b) {
        const float d = f16_to_f32(blocks[b].d);
        for (int64_t i = 0; i < kQK8_0; ++i) {
          buf[b * kQK8_0 + i] = d * static_cast<float>(blocks[b].qs[i]);
        }
      }
      return buf;
    }
    default:
      return static_cast<const float*>(row);
  }
}

}  // namespace strata::cpu
