#include "gpu_backend/matmul.h"

#include <algorithm>

#include "gpu_backend/elementwise.h"

namespace strata::gpu {
namespace {
constexpr int64_t kTileRowAlign = 128;
}  // namespace

StatusOr<std::unique_ptr<GpuMatmul>> GpuMatmul::create(DeviceArena& arena, Cublas& blas,
                                                       const GpuMatmulOptions& options) {
  if (options.max_tokens <= 0 || options.max_cols <= 0 || options.tile_bytes <= 0) {
    return Status::invalid_argument("GpuMatmul: max_tokens, max_cols and tile_bytes must be > 0");
  }
  std::unique_ptr<GpuMatmul> mm(new GpuMatmul(blas, options));
  // The GEMM path serves only chunks larger than the GEMV's; smaller executors need no scratch.
  if (options.max_tokens > kGpuGemvMaxTokens) {
    // A tile holds at least a few rows of the widest matrix.
    const int64_t tile = std::max(options.tile_bytes, options.max_cols * 4 * 64);
    STRATA_ASSIGN_OR_RETURN(mm->tile_, arena.allocate(tile, DeviceMemoryTag::kWorkspace));
    if (options.precision == GemmPrecision::kF16) {
      STRATA_ASSIGN_OR_RETURN(mm->x_half_, arena.allocate(options.max_tokens * options.max_cols * 2,
                                                          DeviceMemoryTag::kWorkspace));
    }
  }
  return mm;
}

Status GpuMatmul::run(const GpuWeight& w, const float* x, int64_t n_tokens, float* y,
                      GemvOutput output) {
  if (n_tokens <= kGpuGemvMaxTokens) return gemv(w, x, n_tokens, y, output, blas_.stream());
  if (n_tokens > options_.max_tokens || w.cols > options_.max_cols) {
    return Status::invalid_argument("GpuMatmul: " + std::to_string(n_tokens) + " x " +
                                    std::to_string(w.cols) + " is larger than the scratch for " +
                                    std::to_string(options_.max_tokens) + " x " +
                                    std::to_string(options_.max_cols));
  }
  const float beta = output == GemvOutput::kAccumulate ? 1.0f : 0.0f;
  const bool f32 = options_.precision == GemmPrecision::kF32;
  // The dense type cuBLAS multiplies: float32, or the weights' own half type.
  const DType dense = f32 ? DType::kF32 : (w.type == DType::kBF16 ? DType::kBF16 : DType::kF16);
  const void* xin = x;
  if (!f32) {
    STRATA_RETURN_IF_ERROR(
        convert_f32(x, n_tokens * w.cols, dense, x_half_.data(), blas_.stream()));
    xin = x_half_.data();
  }
  if (w.type == dense) {  // stored as cuBLAS wants it: no tile
    return blas_.matmul_xwt(dense, w.data, xin, w.rows, n_tokens, w.cols, y, beta, w.rows);
  }
  const int64_t elem = dense == DType::kF32 ? 4 : 2;
  // Tiles of equal height, a multiple of 128 rows when a tile holds that many: a remainder height
  // (4681 rows of the 70B's w_down in 256 MiB) gives cuBLAS unaligned rows and output columns.
  const int64_t fit = std::max<int64_t>(1, tile_.size_bytes() / (w.cols * elem));
  const int64_t align = fit >= kTileRowAlign ? kTileRowAlign : 1;
  const int64_t max_rows = fit / align * align;
  const int64_t n_tiles = (w.rows + max_rows - 1) / max_rows;
  const int64_t even = (w.rows + n_tiles - 1) / n_tiles;
  const int64_t tile_rows = std::min(max_rows, (even + align - 1) / align * align);
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, w.rows - r0);
    STRATA_RETURN_IF_ERROR(dequantize_rows(w, r0, rows, dense, tile_.data(), blas_.stream()));
    // y[:, r0 : r0 + rows] with row stride w.rows.
    STRATA_RETURN_IF_ERROR(
        blas_.matmul_xwt(dense, tile_.data(), xin, rows, n_tokens, w.cols, y + r0, beta, w.rows));
  }
  return Status::ok();
}

}  // namespace strata::gpu
