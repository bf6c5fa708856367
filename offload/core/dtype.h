// DType: tensor element types, numbered exactly as ggml numbers them (GGUF stores these ids).
// A quantized type packs `block_elems` consecutive elements of one row into `block_bytes`.
// Strata reads and computes F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K; the other ggml types are
// named so that errors can say which type a file uses, but nothing runs on them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "offload/core/status.h"

namespace strata {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

struct DTypeTraits {
  DType type;
  const char* name;     // as ggml prints it: "F32", "Q4_K", ...
  int64_t block_elems;  // elements per block (1 for plain types)
  int64_t block_bytes;  // bytes per block
  bool supported;       // Strata can dequantize and compute with it
};

// Traits of a ggml type id, or nullopt when the id is not a type whose layout we know.
std::optional<DTypeTraits> dtype_traits(uint32_t ggml_type_id);
const DTypeTraits& traits(DType type);  // REQUIRES: type is one of the enumerators above
inline const char* dtype_name(DType type) { return traits(type).name; }
std::optional<DType> dtype_from_name(std::string_view name);  // case-insensitive "q8_0" -> kQ8_0
inline bool dtype_supported(DType type) { return traits(type).supported; }
// The type's name, or "type id N" for a value outside the enum (for messages about bad input).
std::string dtype_name_or_id(DType type);

// Blocks in a row of `n_elems` elements of `type`; invalid_argument, its message starting with
// `caller`, when n_elems is negative or not whole blocks. A value outside the enum has no block
// size and gives 0 blocks (the caller then reports the type as unsupported).
StatusOr<int64_t> row_blocks(std::string_view caller, DType type, int64_t n_elems);

// Bytes of one row of `n_elems` elements. REQUIRES: n_elems % block_elems == 0.
inline int64_t row_bytes(DType type, int64_t n_elems) {
  const DTypeTraits& t = traits(type);
  return n_elems / t.block_elems * t.block_bytes;
}

// IEEE half and bfloat16 conversions, bit-exact with ggml's (round-to-nearest-even; NaN kept).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);

}  // namespace strata
