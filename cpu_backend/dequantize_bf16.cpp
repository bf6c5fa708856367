#include "cpu_backend/dequantize_bf16.h"

#include <cpuid.h>

#include <algorithm>
#include <optional>

#include "cpu_backend/emulated_tiles.h"
#include "cpu_backend/gemm_amx_unit.h"
#include "offload/core/dequantize.h"

namespace strata::cpu {
namespace {

bool query_avx512_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const bool f = (b >> 16) & 1u, bw = (b >> 30) & 1u;
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) == 0 || ((a1 >> 5) & 1u) == 0) return false;
  unsigned a2 = 0, b2 = 0, c2 = 0, d2 = 0;
  if (!f || !bw || __get_cpuid(1, &a2, &b2, &c2, &d2) == 0 || ((c2 >> 27) & 1u) == 0) return false;
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xe6u) == 0xe6u;  // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM state
}

// The types dequantize_row_bf16_avx512 reads directly.
std::optional<amx_detail::TileSource> tile_source(DType type) {
  switch (type) {
    case DType::kF32:
      return amx_detail::TileSource::kF32;
    case DType::kF16:
      return amx_detail::TileSource::kF16;
    case DType::kBF16:
      return amx_detail::TileSource::kBF16;
    case DType::kQ8_0:
      return amx_detail::TileSource::kQ8_0;
    case DType::kQ4_0:
      return amx_detail::TileSource::kQ4_0;
    default:
      return std::nullopt;
  }
}

}  // namespace

bool avx512_bf16_available() {
  static const bool available = query_avx512_bf16();  // thread-safe once; never changes after
  return available;
}

Status dequantize_row_bf16(DType type, const void* src, int64_t cols, uint16_t* dst,
                           int64_t run_stride, float* scratch) {
  const int64_t runs = (cols + 31) / 32;
  if (cols % 32 == 0 && avx512_bf16_available()) {
    if (const auto source = tile_source(type)) {
      amx_detail::dequantize_row_bf16_avx512(*source, src, cols, dst, run_stride);
      return Status::ok();
    }
  }
  STRATA_RETURN_IF_ERROR(dequantize_row(type, src, scratch, cols));
  std::fill(scratch + cols, scratch + runs * 32, 0.f);
  for (int64_t i = 0; i < runs; ++i) {
    const float* in = scratch + i * 32;
    uint16_t* out = dst + i * run_stride;
#pragma omp simd
    for (int j = 0; j < 32; ++j) out[j] = amx_detail::to_bf16(in[j]);
  }
  return Status::ok();
}

}  // namespace strata::cpu
