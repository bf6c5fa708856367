// gemv_q8_batched: argument checks, the choice of kernels and the split of rows over the OpenMP
// threads (as gemv.cpp). The arithmetic lives in gemv_q8_{scalar,avx512}.cpp.
#include "cpu_backend/gemv_q8.h"

#include <string>

#include "cpu_backend/gemv_kernels.h"

namespace strata {
namespace {

using gemv_detail::GemvQ8Args;
using gemv_detail::Q8RowKernel;

Q8RowKernel kernel_for(GemvIsa isa, DType type) {
  switch (isa) {
    case GemvIsa::kBest: {
      const Q8RowKernel k = gemv_detail::avx512_q8_row_kernel(type);
      return k != nullptr ? k : gemv_detail::scalar_q8_row_kernel(type);
    }
    case GemvIsa::kAvx512:
      return gemv_detail::avx512_q8_row_kernel(type);
    case GemvIsa::kScalar:
      return gemv_detail::scalar_q8_row_kernel(type);
    default:
      return nullptr;
  }
}

}  // namespace

bool gemv_q8_supports(DType type) { return gemv_detail::scalar_q8_row_kernel(type) != nullptr; }

bool gemv_q8_isa_available(GemvIsa isa) { return kernel_for(isa, DType::kQ4_0) != nullptr; }

Status gemv_q8_batched(const WeightMatrix& w, const cpu::ActivationsQ8& x, int64_t batch, float* y,
                       int64_t y_stride, GemvIsa isa) {
  if (!gemv_q8_supports(w.type)) {
    return Status::unsupported(std::string("gemv_q8: weight type ") + dtype_name(w.type) +
                               " has no integer kernel (Q8_0, Q4_0, Q4_K, Q6_K do)");
  }
  const int64_t block = traits(w.type).block_elems;
  if (w.rows < 0 || w.cols <= 0 || w.cols % block != 0 || x.cols() != w.cols) {
    return Status::invalid_argument(
        "gemv_q8: a " + std::string(dtype_name(w.type)) + " matrix of " + std::to_string(w.rows) +
        " x " + std::to_string(w.cols) + " against activations of " + std::to_string(x.cols()) +
        " columns (needs equal columns, a multiple of " + std::to_string(block) + ")");
  }
  if (batch < 1 || batch > x.rows()) {
    return Status::invalid_argument("gemv_q8: batch " + std::to_string(batch) + " of " +
                                    std::to_string(x.rows()) + " quantized rows");
  }
  if (y_stride == 0) y_stride = w.rows;
  if (y_stride < w.rows) {
    return Status::invalid_argument("gemv_q8: y stride " + std::to_string(y_stride) +
                                    " shorter than a row (" + std::to_string(w.rows) + ")");
  }
  if (w.rows == 0) return Status::ok();
  if (y == nullptr || w.data == nullptr) {
    return Status::invalid_argument("gemv_q8: null weight or y pointer");
  }
  const Q8RowKernel kernel = kernel_for(isa, w.type);
  if (kernel == nullptr) {
    return Status::unsupported(std::string("gemv_q8: this build has no ") +
                               (isa == GemvIsa::kAvx2 ? "avx2" : "avx512 VNNI") +
                               " integer kernels (STRATA_CPU_ARCH)");
  }
  for (int64_t m0 = 0; m0 < batch; m0 += kGemvMaxBatch) {
    GemvQ8Args args;
    args.w = w.data;
    args.w_row_bytes = w.row_stride_bytes();
    args.cols = w.cols;
    args.x = &x;
    args.y = y + m0 * y_stride;
    args.y_stride = y_stride;
    args.batch = static_cast<int>(batch - m0 < kGemvMaxBatch ? batch - m0 : kGemvMaxBatch);
    args.first_row = m0;
    gemv_detail::for_thread_rows(w.rows,
                                 [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
  }
  return Status::ok();
}

}  // namespace strata
