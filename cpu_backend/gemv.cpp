// GEMV entry points: argument checks, choice of instruction set, and the split of rows over the
// OpenMP threads. The arithmetic lives in gemv_{scalar,avx2,avx512}.cpp.
#include "cpu_backend/gemv.h"

#include <string>
#include <vector>

#include "cpu_backend/gemv_kernels.h"

namespace strata {
namespace {

using gemv_detail::GemvArgs;
using gemv_detail::RowKernel;

GemvIsa resolve(GemvIsa isa) {
  if (isa != GemvIsa::kBest) return isa;
  if (gemv_isa_available(GemvIsa::kAvx512)) return GemvIsa::kAvx512;
  if (gemv_isa_available(GemvIsa::kAvx2)) return GemvIsa::kAvx2;
  return GemvIsa::kScalar;
}

RowKernel kernel_for(GemvIsa isa, DType type) {
  switch (resolve(isa)) {
    case GemvIsa::kAvx512:
      return gemv_detail::avx512_row_kernel(type);
    case GemvIsa::kAvx2:
      return gemv_detail::avx2_row_kernel(type);
    default:
      return gemv_detail::scalar_row_kernel(type);
  }
}

std::string type_name(DType type) {
  const auto t = dtype_traits(static_cast<uint32_t>(type));
  return t ? t->name : "ggml type " + std::to_string(static_cast<uint32_t>(type));
}

void run_rows(RowKernel kernel, const GemvArgs& args, int64_t rows) {
  gemv_detail::for_thread_rows(rows, [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
}

}  // namespace

const float* gemv_detail::f16_to_f32_table() {
  // 256 KiB, built once (thread-safe static initialization) and never written again.
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = f16_to_f32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.data();
}

bool gemv_isa_available(GemvIsa isa) {
  switch (isa) {
    case GemvIsa::kBest:
    case GemvIsa::kScalar:
      return true;
    case GemvIsa::kAvx2:
      return gemv_detail::avx2_row_kernel(DType::kF32) != nullptr;
    case GemvIsa::kAvx512:
      return gemv_detail::avx512_row_kernel(DType::kF32) != nullptr;
  }
  return false;
}

const char* gemv_isa_name(GemvIsa isa) {
  switch (resolve(isa)) {
    case GemvIsa::kAvx512:
      return "avx512";
    case GemvIsa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

bool gemv_supports(DType type) { return gemv_detail::scalar_row_kernel(type) != nullptr; }

Status gemv(const WeightMatrix& w, const float* x, float* y, GemvIsa isa) {
  return gemv_batched(w, x, 1, y, 0, 0, isa);
}

Status gemv_batched(const WeightMatrix& w, const float* x, int64_t batch, float* y,
                    int64_t x_stride, int64_t y_stride, GemvIsa isa) {
  // Checked before traits(): a type id outside the enum must give an error, not an assert.
  if (!gemv_supports(w.type)) {
    return Status::unsupported("gemv: weight type " + type_name(w.type) +
                               " is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K are)");
  }
  const DTypeTraits& t = traits(w.type);
  if (w.rows < 0 || w.cols < 0 || w.cols % t.block_elems != 0) {
    return Status::invalid_argument("gemv: a " + std::string(t.name) + " matrix of " +
                                    std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                                    " needs rows >= 0 and cols a multiple of " +
                                    std::to_string(t.block_elems));
  }
  if (batch < 1) {
    return Status::invalid_argument("gemv: batch is " + std::to_string(batch) + ", needs >= 1");
  }
  if (x_stride == 0) x_stride = w.cols;
  if (y_stride == 0) y_stride = w.rows;
  if (x_stride < w.cols || y_stride < w.rows) {
    return Status::invalid_argument("gemv: x stride " + std::to_string(x_stride) + " / y stride " +
                                    std::to_string(y_stride) + " shorter than a row (" +
                                    std::to_string(w.cols) + " / " + std::to_string(w.rows) + ")");
  }
  if (w.rows == 0) return Status::ok();
  if (y == nullptr || (w.cols > 0 && (x == nullptr || w.data == nullptr))) {
    return Status::invalid_argument("gemv: null weight, x or y pointer");
  }
  const RowKernel kernel = kernel_for(isa, w.type);
  if (kernel == nullptr) {
    return Status::unsupported(std::string("gemv: this build has no ") + gemv_isa_name(isa) +
                               " kernels (STRATA_CPU_ARCH)");
  }
  for (int64_t m0 = 0; m0 < batch; m0 += kGemvMaxBatch) {
    GemvArgs args;
    args.w = w.data;
    args.w_row_bytes = w.row_stride_bytes();
    args.cols = w.cols;
    args.x = x + m0 * x_stride;
    args.x_stride = x_stride;
    args.y = y + m0 * y_stride;
    args.y_stride = y_stride;
    args.batch = static_cast<int>(batch - m0 < kGemvMaxBatch ? batch - m0 : kGemvMaxBatch);
    run_rows(kernel, args, w.rows);
  }
  return Status::ok();
}

}  // namespace strata
