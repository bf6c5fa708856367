// The CPU elementwise kernels (cpu_backend/elementwise.h) whose fast paths differ from the plain
// formula: swiglu against a float64 silu on fresh random inputs of both signs and every
// magnitude up to overflow, and to_f16 against f32_to_f16 bit for bit on random bit patterns.
#include "cpu_backend/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "offload/core/dtype.h"
#include "tests/cpu_backend/random_weights.h"

namespace strata::cpu {
namespace {

using testing_weights::fresh_seed;
using testing_weights::seed_note;

TEST(Elementwise, SwigluIsSiluTimesUpWithinAFewUlp) {
  const uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> exponent(-20.f, 7.f), uni(-2.f, 2.f);
  const int64_t n = 16 * 1000 + 7;  // a scalar tail too
  std::vector<float> gate(n), up(n), out(n, std::numeric_limits<float>::quiet_NaN());
  for (int64_t i = 0; i < n; ++i) {
    const float mag = std::exp2(exponent(rng));  // 1e-6 .. 128: both tails of the sigmoid
    gate[i] = (rng() & 1) != 0 ? mag : -mag;
    up[i] = uni(rng);
  }
  gate[0] = 0.f;
  gate[1] = -100.f;  // e^100 overflows float: the formula must not
  gate[2] = 100.f;
  swiglu(gate.data(), up.data(), out.data(), n);
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double ref = g / (1.0 + std::exp(-g)) * up[i];
    const double err = std::abs(out[i] - ref);
    const double tol = 1e-6 * std::abs(ref) + 1e-38;
    if (!std::isfinite(out[i]) || err > tol) ++bad;
    if (ref != 0) worst = std::max(worst, err / std::abs(ref));
  }
  EXPECT_EQ(bad, 0) << "worst relative error " << worst << " " << seed_note(seed);

  // In place (out aliases gate), as the executor calls it.
  std::vector<float> again = gate;
  swiglu(again.data(), up.data(), again.data(), n);
  EXPECT_EQ(std::memcmp(again.data(), out.data(), n * sizeof(float)), 0);
}

TEST(Elementwise, ToF16IsF32ToF16BitForBit) {
  const uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  const int64_t n = 16 * 4096 + 5;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) {
    // Random bits cover NaNs, infinities and values that become half subnormals or overflow;
    // every fourth value is kept near the half range so that rounding cases dominate there.
    uint32_t u = static_cast<uint32_t>(rng());
    if (i % 4 == 0) u = (u & 0x807fffffu) | ((static_cast<uint32_t>(rng() % 40) + 100) << 23);
    std::memcpy(&x[i], &u, 4);
  }
  std::vector<uint16_t> y(n, 0xdead);
  to_f16(x.data(), y.data(), n);
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) wrong += y[i] != f32_to_f16(x[i]);
  EXPECT_EQ(wrong, 0) << seed_note(seed);
}

}  // namespace
}  // namespace strata::cpu
