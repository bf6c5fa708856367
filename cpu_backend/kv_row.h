// One head's slice of a KV row as float32, whatever the cache stores (memory/kv_view.h): kF32 is
// returned in place; kF16 and kQ8_0 are widened into `buf` (n floats) by dequantize_row, so
// attention runs the same float32 loops on every KV type.
#pragma once

#include <cstdint>

#include "offload/core/dequantize.h"
#include "offload/core/dtype.h"

namespace strata::cpu {

// REQUIRES: dtype is a KV type (KvLayout::validate); for kQ8_0, n is a multiple of 32 and `row`
// starts at a block. Under those, dequantize_row cannot fail.
inline const float* kv_row_f32(const void* row, int64_t n, DType dtype, float* buf) {
  if (dtype == DType::kF32) return static_cast<const float*>(row);
  (void)dequantize_row(dtype, row, buf, n);
  return buf;
}

}  // namespace strata::cpu
