// Scratch memory for the tile kernels (gemm_amx.h, gemm_amx_int8.h): 64-byte aligned (the tile
// loads and AVX-512 stores want whole lines), uninitialized, grown on demand and then reused, so
// that steady-state calls allocate nothing. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdlib>

namespace strata::cpu {

template <class T>
class AlignedArray {
 public:
  AlignedArray() = default;
  AlignedArray(const AlignedArray&) = delete;
  AlignedArray& operator=(const AlignedArray&) = delete;
  ~AlignedArray() { std::free(data_); }

  // At least n elements (the old contents are lost when it grows); null if allocation failed.
  T* reserve(int64_t n) {
    if (n > capacity_) {
      std::free(data_);
      const size_t bytes = (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64;
      data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
      capacity_ = data_ != nullptr ? n : 0;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  int64_t capacity_ = 0;
};

}  // namespace strata::cpu
