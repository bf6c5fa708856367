// PTX wrappers for the sm_80+ tensor-core kernels (flash_attention.cu, gemv_mma.cu): cp.async
// copies global -> shared without passing through registers, ldmatrix fragment loads, and
// mma.sync m16n8k16 with f16 inputs and f32 accumulation. Every GPU Strata builds for (sm_80,
// 86, 89, 90) has them.
//
// Fragment layouts of m16n8k16 (lane = 4 g + t): A registers 0 / 1 hold rows g / g + 8,
// columns 2t, 2t + 1 of the k-step; 2 / 3 the same rows, columns 8 + 2t, 9 + 2t. B registers
// 0 / 1 hold rows 2t, 2t + 1 / 8 + 2t, 9 + 2t of column g. C registers 0, 1 hold row g,
// columns 2t, 2t + 1; 2, 3 the same columns of row g + 8.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

namespace strata::gpu {

__device__ __forceinline__ uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; .cg skips L1 (data read once per CTA).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_addr(smem)), "l"(gmem)
               : "memory");
}

// 16 bytes, of which the first src_bytes (0 or 16) come from gmem and the rest are zero.
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_addr(smem)),
               "l"(gmem), "r"(src_bytes)
               : "memory");
}

// 4 bytes, of which the first src_bytes (0, 2 or 4) come from gmem and the rest are zero.
__device__ __forceinline__ void cp_async_4_zfill(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's committed groups are still in flight; a barrier must
// follow before other threads read the data.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void cp_async_wait_all() { cp_async_wait<0>(); }

// Four 8x8 b16 matrices; lanes 8i .. 8i + 7 give the row addresses of matrix i, and register i
// of lane 4 g + t receives row g, columns 2t, 2t + 1 of matrix i (transposed with .trans:
// rows 2t, 2t + 1 of column g).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_addr(smem)));
}

// c (16x8 f32) += a (16x16 f16, row) * b (16x8 f16, col).
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d (16x8 f32) = a * b, the accumulator starting at zero (no registers to clear). Not volatile:
// a pure function of its operands, so the compiler may schedule it freely.
__device__ __forceinline__ void mma_16816_from_zero(float (&d)[4], const uint32_t (&a)[4],
                                                    uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%10, %10, %10, %10};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
}

// Two floats as f16x2 (round to nearest even); `lo` is the lower column / address.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

}  // namespace strata::gpu
