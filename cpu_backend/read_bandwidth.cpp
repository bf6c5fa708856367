#include "cpu_backend/read_bandwidth.h"

#include <omp.h>
#include <sys/mman.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

// GCC 12's _mm512_reduce_add_epi64 goes through _mm512_undefined_*; -Wmaybe-uninitialized then
// warns inside avx512fintrin.h. False positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace strata::cpu {
namespace {

constexpr int64_t kHugePage = 2 << 20;
constexpr int64_t kSliceAlign = 4096;

enum class Method { kLoad32, kLoad64, kLoad64Prefetch };
constexpr Method kMethods[] = {Method::kLoad32, Method::kLoad64, Method::kLoad64Prefetch};
const char* method_name(Method m) {
  switch (m) {
    case Method::kLoad32:
      return "load32";
    case Method::kLoad64:
      return "load64";
    default:
      return "load64+prefetch";
  }
}

// Sums [p, p + bytes) with independent accumulators so that the loads, not the adds, set the pace.
// Without AVX-512 the 64-byte methods read with two 32-byte loads per line.
uint64_t read_slice(const uint8_t* p, int64_t bytes, Method method) {
#if defined(__AVX512F__)
  if (method != Method::kLoad32) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    const __m512i* v = reinterpret_cast<const __m512i*>(p);
    const int64_t n = bytes / 64;
    for (int64_t i = 0; i + 4 <= n; i += 4) {
      if (method == Method::kLoad64Prefetch) {
        _mm_prefetch(reinterpret_cast<const char*>(v + i + 32), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(v + i + 33), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(v + i + 34), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(v + i + 35), _MM_HINT_T0);
      }
      a0 = _mm512_add_epi64(a0, _mm512_load_si512(v + i));
      a1 = _mm512_add_epi64(a1, _mm512_load_si512(v + i + 1));
      a2 = _mm512_add_epi64(a2, _mm512_load_si512(v + i + 2));
      a3 = _mm512_add_epi64(a3, _mm512_load_si512(v + i + 3));
    }
    return _mm512_reduce_add_epi64(
        _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  }
#endif
#if defined(__AVX2__)
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  const __m256i* v = reinterpret_cast<const __m256i*>(p);
  const int64_t n = bytes / 32;
  for (int64_t i = 0; i + 4 <= n; i += 4) {
    if (method == Method::kLoad64Prefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(v + i + 64), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(v + i + 66), _MM_HINT_T0);
    }
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(v + i));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + i + 1));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + i + 2));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + i + 3));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
#else
  const uint64_t* v = reinterpret_cast<const uint64_t*>(p);
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int64_t i = 0; i + 4 <= bytes / 8; i += 4) {
    a0 += v[i];
    a1 += v[i + 1];
    a2 += v[i + 2];
    a3 += v[i + 3];
  }
  return a0 + a1 + a2 + a3;
#endif
}

}  // namespace

void* alloc_huge(int64_t bytes) {
  const int64_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (p != nullptr) madvise(p, rounded, MADV_HUGEPAGE);  // a hint; failure is harmless
  return p;
}

void free_huge(void* p) { std::free(p); }

CpuReadProbe::CpuReadProbe(int64_t buffer_bytes) {
  threads_ = omp_get_max_threads();
  slice_bytes_ = buffer_bytes / threads_ / kSliceAlign * kSliceAlign;
  if (slice_bytes_ == 0) return;
  buffer_ = static_cast<uint8_t*>(alloc_huge(slice_bytes_ * threads_));
  if (buffer_ == nullptr) return;
  uint8_t* const buffer = buffer_;
  const int64_t slice = slice_bytes_;
#pragma omp parallel num_threads(threads_)
  {
    // First touch by the thread that will read it: the pages land on its NUMA node.
    const int t = omp_get_thread_num();
    uint8_t* mine = buffer + t * slice;
    for (int64_t i = 0; i < slice; i += 8) {
      const uint64_t v = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull + t;
      std::memcpy(mine + i, &v, 8);
    }
  }
}

CpuReadProbe::~CpuReadProbe() { free_huge(buffer_); }

ReadBandwidth CpuReadProbe::measure(int passes) {
  ReadBandwidth result;
  result.threads = threads_;
  result.passes = passes;
  result.buffer_bytes = slice_bytes_ * threads_;
  if (buffer_ == nullptr || passes < 1) return result;
  constexpr int kNumMethods = sizeof(kMethods) / sizeof(kMethods[0]);
  std::vector<double> seconds(static_cast<size_t>(passes) * kNumMethods);
  std::vector<uint64_t> sums(threads_);
  uint8_t* const buffer = buffer_;
  const int64_t slice = slice_bytes_;
#pragma omp parallel num_threads(threads_)
  {
    const int t = omp_get_thread_num();
    const uint8_t* mine = buffer + t * slice;
    std::chrono::steady_clock::time_point start;
    for (int pass = 0; pass < passes; ++pass) {
      for (int m = 0; m < kNumMethods; ++m) {
#pragma omp barrier
#pragma omp master
        start = std::chrono::steady_clock::now();
#pragma omp barrier
        sums[t] += read_slice(mine, slice, kMethods[m]);
#pragma omp barrier
#pragma omp master
        seconds[pass * kNumMethods + m] =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
    }
  }
  uint64_t sink = 0;
  for (uint64_t s : sums) sink += s;
  asm volatile("" : : "r"(sink));  // keep the sums alive
  for (int m = 0; m < kNumMethods; ++m) {
    std::vector<double> mine;
    for (int pass = 0; pass < passes; ++pass) mine.push_back(seconds[pass * kNumMethods + m]);
    std::sort(mine.begin(), mine.end());
    ReadMethod method;
    method.name = method_name(kMethods[m]);
    method.best_bytes_per_s = result.buffer_bytes / mine.front();
    method.median_bytes_per_s = result.buffer_bytes / mine[passes / 2];
    result.best_bytes_per_s = std::max(result.best_bytes_per_s, method.best_bytes_per_s);
    result.methods.push_back(method);
  }
  return result;
}

ReadBandwidth measure_cpu_read_bandwidth(int64_t buffer_bytes, int passes) {
  CpuReadProbe probe(buffer_bytes);
  if (!probe.ok()) return {};
  return probe.measure(passes);
}

}  // namespace strata::cpu
