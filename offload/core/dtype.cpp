#include "offload/core/dtype.h"

#include <array>
#include <cassert>
#include <cctype>
#include <cmath>
#include <cstring>

namespace strata {
namespace {

constexpr std::array<DTypeTraits, 20> kTraits = {{
    {DType::kF32, "F32", 1, 4, true},       {DType::kF16, "F16", 1, 2, true},
    {DType::kQ4_0, "Q4_0", 32, 18, true},   {DType::kQ4_1, "Q4_1", 32, 20, false},
    {DType::kQ5_0, "Q5_0", 32, 22, false},  {DType::kQ5_1, "Q5_1", 32, 24, false},
    {DType::kQ8_0, "Q8_0", 32, 34, true},   {DType::kQ8_1, "Q8_1", 32, 36, false},
    {DType::kQ2_K, "Q2_K", 256, 84, false}, {DType::kQ3_K, "Q3_K", 256, 110, false},
    {DType::kQ4_K, "Q4_K", 256, 144, true}, {DType::kQ5_K, "Q5_K", 256, 176, false},
    {DType::kQ6_K, "Q6_K", 256, 210, true}, {DType::kQ8_K, "Q8_K", 256, 292, false},
    {DType::kI8, "I8", 1, 1, false},        {DType::kI16, "I16", 1, 2, false},
    {DType::kI32, "I32", 1, 4, false},      {DType::kI64, "I64", 1, 8, false},
    {DType::kF64, "F64", 1, 8, false},      {DType::kBF16, "BF16", 1, 2, true},
}};

}  // namespace

std::optional<DTypeTraits> dtype_traits(uint32_t ggml_type_id) {
  for (const DTypeTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == ggml_type_id) return t;
  }
  return std::nullopt;
}

const DTypeTraits& traits(DType type) {
  for (const DTypeTraits& t : kTraits) {
    if (t.type == type) return t;
  }
  assert(false && "DType without traits");
  return kTraits[0];
}

std::string dtype_name_or_id(DType type) {
  const std::optional<DTypeTraits> t = dtype_traits(static_cast<uint32_t>(type));
  return t ? std::string(t->name) : "type id " + std::to_string(static_cast<uint32_t>(type));
}

StatusOr<int64_t> row_blocks(std::string_view caller, DType type, int64_t n_elems) {
  const std::optional<DTypeTraits> t = dtype_traits(static_cast<uint32_t>(type));
  if (n_elems < 0 || (t && n_elems % t->block_elems != 0)) {
    return Status::invalid_argument(std::string(caller) + ": " + std::to_string(n_elems) + " " +
                                    dtype_name_or_id(type) + " elements are not whole blocks of " +
                                    std::to_string(t ? t->block_elems : 1));
  }
  return t ? n_elems / t->block_elems : 0;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const DTypeTraits& t : kTraits) {
    std::string_view n = t.name;
    if (n.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < n.size(); ++i) {
      if (std::toupper(static_cast<unsigned char>(name[i])) != n[i]) same = false;
    }
    if (same) return t.type;
  }
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24, exact in f32
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&bits, &f, 4);
      bits |= sign;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

uint16_t f32_to_f16(float f) {
  // Round to nearest even, as F16C's vcvtps2ph and ggml's software fallback do.
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u)
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65536: inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < half of the smallest subnormal
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    // value = mant * 2^(exp-150); a half subnormal counts units of 2^-24, so drop 126-exp bits.
    const uint32_t drop = 126 - exp;
    uint32_t half = mant >> drop;
    const uint32_t rem = mant & ((1u << drop) - 1);
    const uint32_t mid = 1u << (drop - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = ((abs - 0x38000000u) >> 13);  // rebias exponent 127 -> 15, drop 13 bits
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent
  return static_cast<uint16_t>(sign | half);
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

}  // namespace strata
