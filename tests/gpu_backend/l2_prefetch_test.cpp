// prefetch_l2 between two GEMVs that depend on each other: the second must still see the first's
// output (the prefetch kernel starts early but ends only after the first), the result must equal
// the chain without the prefetch bit for bit, and bad calls fail with a clear error.
#include "gpu_backend/l2_prefetch.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gpu_backend/gemv.h"
#include "tests/gpu_backend/gpu_weight_fixture.h"

namespace strata::gpu {
namespace {

class L2PrefetchTest : public strata::testing::GpuWeightTest {};

TEST_F(L2PrefetchTest, ADependentGemvAfterThePrefetchSeesTheGemvBeforeIt) {
  // A large first matrix so that its GEMV still runs when the prefetch kernel starts.
  const strata::testing::HostMatrix a =
      strata::testing::random_matrix(DType::kF16, 8192, 4096, rng_);
  const strata::testing::HostMatrix b =
      strata::testing::random_matrix(DType::kQ4_0, 1024, 8192, rng_);
  const GpuWeight wa = upload(a), wb = upload(b);
  const std::vector<float> x = random_floats(a.cols);
  const float* dx = upload(x);
  float* y = device_output(a.rows);

  auto chain = [&](bool prefetch) {
    float* z = device_output(b.rows);  // poisoned
    EXPECT_TRUE(gemv(wa, dx, 1, y, GemvOutput::kStore, stream()).is_ok());
    if (prefetch) {
      const DeviceRange next[] = {{wb.data, b.rows * 4096}, {wb.scales, b.rows * 256 * 2}};
      const Status s = prefetch_l2(next, int64_t{64} << 20, 132, stream());
      EXPECT_TRUE(s.is_ok()) << s.to_string();
    }
    EXPECT_TRUE(gemv(wb, y, 1, z, GemvOutput::kStore, stream()).is_ok());
    return download(z, b.rows);
  };
  const std::vector<float> plain = chain(false);
  for (int round = 0; round < 20; ++round) {
    const std::vector<float> with = chain(true);
    ASSERT_EQ(0, std::memcmp(with.data(), plain.data(), plain.size() * sizeof(float)))
        << "round " << round;
  }
  // And the chain itself is right: z = B (A x) against float64 over the exact weights.
  std::vector<float> yf = download(y, a.rows);
  const std::vector<double> zr = reference(b, yf, 1);
  std::vector<float> zf(zr.begin(), zr.end());
  EXPECT_LT(rel_l2(plain, zf), 1e-5);
}

TEST_F(L2PrefetchTest, NothingToFetchLaunchesNothing) {
  const DeviceRange none[] = {{nullptr, 4096}, {device_output(4), 8}};  // null; under 16 bytes
  EXPECT_TRUE(prefetch_l2(none, int64_t{1} << 20, 8, stream()).is_ok());
  const DeviceRange some[] = {{device_output(1024), 4096}};
  EXPECT_TRUE(prefetch_l2(some, 0, 8, stream()).is_ok());  // no budget
  EXPECT_TRUE(stream().synchronize().is_ok());
}

TEST_F(L2PrefetchTest, BadCallsFailNamingWhatIsWrong) {
  std::vector<DeviceRange> many(kMaxPrefetchRanges + 1, DeviceRange{device_output(64), 256});
  Status s = prefetch_l2(many, 1 << 20, 8, stream());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("at most"), std::string::npos) << s.to_string();
  const DeviceRange one[] = {{device_output(64), 256}};
  EXPECT_FALSE(prefetch_l2(one, -1, 8, stream()).is_ok());
  EXPECT_FALSE(prefetch_l2(one, 1 << 20, 0, stream()).is_ok());
  const DeviceRange negative[] = {{device_output(64), -16}};
  EXPECT_FALSE(prefetch_l2(negative, 1 << 20, 8, stream()).is_ok());
}

}  // namespace
}  // namespace strata::gpu
