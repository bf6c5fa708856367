// Helpers shared by the dequantize / quantize tests: a fresh seed per run that failures print,
// bit-level float comparison (so -0.0 vs 0.0 and NaN are told apart) and error measures that
// never let a NaN pass.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace strata::testing {

// A new seed each run; STRATA_TEST_SEED=<n> replays a failing one. Tests wrap their body in
// SCOPED_TRACE(seed_trace(seed)) so every failure names it.
inline uint64_t fresh_seed() {
  if (const char* fixed = std::getenv("STRATA_TEST_SEED")) return std::strtoull(fixed, nullptr, 10);
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}
inline std::string seed_trace(uint64_t seed) {
  return "seed " + std::to_string(seed) + " (rerun with STRATA_TEST_SEED=" + std::to_string(seed) +
         ")";
}

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Gaussian floats with standard deviation `sigma`.
inline std::vector<float> gaussian(std::mt19937_64& rng, size_t n, float sigma = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> out(n);
  for (float& v : out) v = normal(rng);
  return out;
}

// ||a - b|| / ||b||; NaN when anything is NaN, so `EXPECT_LT(rel_rms_error(...), bound)` fails.
inline double rel_rms_error(const std::vector<float>& approx, const std::vector<float>& exact) {
  double err = 0.0;
  double ref = 0.0;
  for (size_t i = 0; i < exact.size(); ++i) {
    const double diff = static_cast<double>(approx[i]) - exact[i];
    err += diff * diff;
    ref += static_cast<double>(exact[i]) * exact[i];
  }
  return std::sqrt(err / ref);
}

// Number of elements whose bits differ (a NaN in either always counts as a difference).
inline size_t count_bit_mismatches(const float* a, const float* b, size_t n) {
  size_t mismatches = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i]) || float_bits(a[i]) != float_bits(b[i])) ++mismatches;
  }
  return mismatches;
}

}  // namespace strata::testing
