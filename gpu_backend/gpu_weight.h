// GpuWeight: a weight matrix in VRAM, in the GPU layout of its stored type. The layout keeps the
// type's bits (no dequantized copy of the model in VRAM) but splits the GGUF blocks into planes so
// that every kernel load is 16-byte aligned; the 18-byte Q4_0 and 34-byte Q8_0 blocks of GGUF
// are not, and misaligned loads would cost the decode GEMV much of the memory bandwidth.
//
// Planes of a [rows][cols] matrix (nb = cols / block_elems blocks per row):
//   F32, F16, BF16   payload [rows][cols] as stored; no scale plane
//   Q8_0             payload [rows][nb][32] int8 quants;      scales [rows][nb] f16 d
//   Q4_0             payload [rows][nb][16] packed nibbles;   scales [rows][nb] f16 d
//                    (byte i: element i in the low nibble, element i + 16 in the high one)
//   Q4_K             payload [rows][nb][144] GGUF blocks as stored (144 is a multiple of 16)
//   Q6_K             payload [rows][nb][208] ql, qh, scales;  scales [rows][nb] f16 d
// Scale rows hold nb rounded up to even halves (the padding one is zero), so that each row's
// scales start 4-byte aligned.
// The payload plane starts at a 256-byte boundary (the arena's alignment), the scale plane right
// after it, rounded up to 256 bytes; both live in one DeviceBuffer.
//
// repack_rows does the rewrite on the host, row range by row range, so that large tensors go up
// through a bounded pinned staging buffer; it is exact (bytes are moved, never re-rounded).
#pragma once

#include <cstdint>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata::gpu {

struct GpuWeight {
  DType type = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;        // device: payload plane
  const uint16_t* scales = nullptr;  // device: scale plane, or null for types without one
};

struct GpuWeightLayout {
  int64_t payload_row_bytes = 0;   // bytes of one row in the payload plane
  int64_t scale_row_elems = 0;     // f16 scales per row (0: no scale plane)
  int64_t payload_bytes = 0;       // rows * payload_row_bytes
  int64_t scale_offset_bytes = 0;  // where the scale plane starts in the buffer
  int64_t total_bytes = 0;         // the buffer to allocate
};

// True for the types the GPU kernels read: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K.
bool gpu_supports(DType type);

// The layout of a [rows][cols] matrix of `type`. invalid_argument when the type is not supported
// on the GPU or cols is not whole blocks (or, for F32/F16/BF16, not a multiple of 8 elements: the
// kernels read 16 bytes at a time).
StatusOr<GpuWeightLayout> gpu_weight_layout(DType type, int64_t rows, int64_t cols);

// Rewrites `n_rows` GGUF-stored rows (`src`, row_bytes(type, cols) each) into the planes:
// payload_dst receives n_rows * payload_row_bytes, scale_dst n_rows * scale_row_elems (unused when
// the type has no scale plane). Host memory; OpenMP-parallel over rows.
// REQUIRES: gpu_weight_layout(type, n_rows, cols) is ok.
void repack_rows(DType type, int64_t cols, const uint8_t* src, int64_t n_rows, uint8_t* payload_dst,
                 uint16_t* scale_dst);

// The inverse, for tests: GPU planes back to GGUF rows (bit-identical to what repack_rows read).
void unpack_rows(DType type, int64_t cols, const uint8_t* payload, const uint16_t* scales,
                 int64_t n_rows, uint8_t* dst);

}  // namespace strata::gpu
