// The only includer of cublas_v2.h (see cublas.h). Compiled only in CUDA builds (see
// gpu_backend/CMakeLists.txt): nothing in a CPU-only build calls it.
#include "gpu_backend/cublas.h"

#include <cublas_v2.h>

#include <string>

namespace strata::gpu {
namespace {

// 32 MiB: what cuBLAS asks for on Hopper for its largest kernels (cuBLAS docs recommend 32 MiB
// for sm_90); without a user workspace it would cudaMalloc its own, outside the budget.
constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;

Status cublas_status(cublasStatus_t status, const std::string& call) {
  if (status == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return Status::device_error(call + ": " + cublasGetStatusString(status));
}

StatusOr<cudaDataType_t> data_type(DType type) {
  switch (type) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      return Status::invalid_argument(std::string("cuBLAS GEMM of ") + dtype_name_or_id(type));
  }
}

}  // namespace

StatusOr<std::unique_ptr<Cublas>> Cublas::create(DeviceArena& arena, const cuda::Stream& stream) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Cublas> blas, create_handle(stream));
  STRATA_RETURN_IF_ERROR(blas->use_workspace(arena));
  return blas;
}

StatusOr<std::unique_ptr<Cublas>> Cublas::create_handle(const cuda::Stream& stream) {
  std::unique_ptr<Cublas> blas(new Cublas(stream));
  STRATA_RETURN_IF_ERROR(cublas_status(cublasCreate(&blas->handle_), "cublasCreate"));
  STRATA_RETURN_IF_ERROR(
      cublas_status(cublasSetStream(blas->handle_, stream.native()), "cublasSetStream"));
  // Pedantic math: no TF32 for float32 products (the exact tier), whatever the environment says.
  STRATA_RETURN_IF_ERROR(
      cublas_status(cublasSetMathMode(blas->handle_, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode"));
  return blas;
}

Status Cublas::use_workspace(DeviceArena& arena) {
  STRATA_ASSIGN_OR_RETURN(workspace_, arena.allocate(kWorkspaceBytes, DeviceMemoryTag::kWorkspace));
  return cublas_status(cublasSetWorkspace(handle_, workspace_.data(), kWorkspaceBytes),
                       "cublasSetWorkspace");
}

Cublas::~Cublas() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

Status Cublas::matmul_xwt(DType in_type, const void* w, const void* x, int64_t m, int64_t n,
                          int64_t k, float* y, float beta, int64_t ldy) {
  // Row-major y [n][m] is column-major m x n; W row-major [m][k] is column-major k x m, so
  // y = op(W)^T... in cuBLAS terms: C(m x n) = A^T(m x k) B(k x n), A = W (lda k), B = x (ldb k).
  Batched g;
  g.trans_a = true;
  g.m = m;
  g.n = n;
  g.k = k;
  g.ab_type = in_type;
  g.a = w;
  g.lda = k;
  g.b = x;
  g.ldb = k;
  g.c_type = DType::kF32;
  g.c = y;
  g.ldc = ldy > 0 ? ldy : m;
  g.beta = beta;
  return gemm_strided_batched(g);
}

Status Cublas::gemm_strided_batched(const Batched& g) {
  STRATA_ASSIGN_OR_RETURN(const cudaDataType_t ab, data_type(g.ab_type));
  STRATA_ASSIGN_OR_RETURN(const cudaDataType_t c, data_type(g.c_type));
  const cublasComputeType_t compute =
      g.ab_type == DType::kF32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  const std::string call = "cublasGemmStridedBatchedEx(" + std::to_string(g.m) + "x" +
                           std::to_string(g.n) + "x" + std::to_string(g.k) + ", batch " +
                           std::to_string(g.batch) + ", " + dtype_name(g.ab_type) + ")";
  return cublas_status(
      cublasGemmStridedBatchedEx(
          handle_, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
          static_cast<int>(g.m), static_cast<int>(g.n), static_cast<int>(g.k), &g.alpha, g.a, ab,
          static_cast<int>(g.lda), g.stride_a, g.b, ab, static_cast<int>(g.ldb), g.stride_b,
          &g.beta, g.c, c, static_cast<int>(g.ldc), g.stride_c, static_cast<int>(g.batch), compute,
          CUBLAS_GEMM_DEFAULT),
      call);
}

}  // namespace strata::gpu
