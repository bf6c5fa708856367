// Cublas: the project's one cuBLAS handle per stream, and the only includer of cublas_v2.h
// (cublas.cpp). Its workspace comes from the device arena (tag kWorkspace), so cuBLAS's own
// scratch counts against --vram-budget. Calls return a Status naming the cuBLAS call and its
// status string.
//
// Precision: f32 products use CUBLAS_COMPUTE_32F without TF32 (IEEE float32, the golden `exact`
// tier); f16 and bf16 inputs run on the tensor cores with float32 accumulation.
//
// Example usage:
//   STRATA_ASSIGN_OR_RETURN(auto blas, Cublas::create(arena, stream));
//   // y [n][m] = x [n][k] * W[m][k]^T, all row-major, W and x f16, y float32:
//   STRATA_RETURN_IF_ERROR(blas->matmul_xwt(DType::kF16, w, x, m, n, k, y, /*beta=*/0.0f));
#pragma once

#include <cstdint>
#include <memory>

#include "gpu_backend/cuda_api.h"
#include "memory/device_arena.h"
#include "offload/core/dtype.h"
#include "offload/core/status.h"

struct cublasContext;

namespace strata::gpu {

class Cublas {
 public:
  // REQUIRES: arena and stream outlive the handle.
  static StatusOr<std::unique_ptr<Cublas>> create(DeviceArena& arena, const cuda::Stream& stream);
  // The same in two steps, for a caller that sizes its arena after the handle exists (what the
  // handle itself takes lies outside any arena: GpuExecutor measures it and budgets for it).
  // No GEMM may run before use_workspace.
  static StatusOr<std::unique_ptr<Cublas>> create_handle(const cuda::Stream& stream);
  Status use_workspace(DeviceArena& arena);
  ~Cublas();
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;

  // y [n][m] = x [n][k] * W[m][k]^T + beta * y; W and x of `in_type` (kF32, kF16 or kBF16), row
  // major; y float32 row-major with row stride ldy (default m).
  Status matmul_xwt(DType in_type, const void* w, const void* x, int64_t m, int64_t n, int64_t k,
                    float* y, float beta, int64_t ldy = 0);

  // Column-major strided batched GEMM (cublasGemmStridedBatchedEx): for i < batch,
  //   C_i = alpha * op(A_i) op(B_i) + beta * C_i,  C_i m x n, op(A_i) m x k, op(B_i) k x n,
  // X_i = X + i * stride_x (elements). A and B of ab_type, C of c_type (kF32, or ab_type).
  struct Batched {
    bool trans_a = false, trans_b = false;
    int64_t m = 0, n = 0, k = 0;
    DType ab_type = DType::kF32;
    const void* a = nullptr;
    int64_t lda = 0, stride_a = 0;
    const void* b = nullptr;
    int64_t ldb = 0, stride_b = 0;
    DType c_type = DType::kF32;
    void* c = nullptr;
    int64_t ldc = 0, stride_c = 0;
    int64_t batch = 1;
    float alpha = 1.0f, beta = 0.0f;
  };
  Status gemm_strided_batched(const Batched& g);

  const cuda::Stream& stream() const { return stream_; }

 private:
  Cublas(const cuda::Stream& stream) : stream_(stream) {}
  const cuda::Stream& stream_;
  cublasContext* handle_ = nullptr;
  DeviceBuffer workspace_;
};

}  // namespace strata::gpu
