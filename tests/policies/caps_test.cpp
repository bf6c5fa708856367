// The calibration cache file (policies/caps.h): what is saved loads back exactly, and a broken
// file is an error naming the file and the key.
#include "policies/caps.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

TEST(CapsFile, SavedCapsLoadBackExactly) {
  Caps c = Caps::reference();
  c.hbm_bytes_per_s = 1.234567e12;
  c.cpu_gemv_efficiency_4bit = 0.61;
  c.vram_free_bytes = 12345;
  c.source = "test";
  const auto path = std::filesystem::temp_directory_path() / "strata_caps_test" / "caps.json";
  ASSERT_TRUE(c.save(path.string()).is_ok());
  auto back = Caps::load(path.string());
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->to_json(), c.to_json());
  std::filesystem::remove_all(path.parent_path());
}

TEST(CapsFile, BrokenFilesNameTheProblem) {
  nlohmann::json j = Caps::reference().to_json();
  j.erase("hbm_bytes_per_s");
  EXPECT_CONTAINS(Caps::from_json(j, "c.json").status().message(),
                  "c.json: hbm_bytes_per_s: missing");
  j = Caps::reference().to_json();
  j["warp_drive"] = 1;
  EXPECT_CONTAINS(Caps::from_json(j, "c.json").status().message(), "warp_drive: unknown rate");
  j = Caps::reference().to_json();
  j["cpu_read_bytes_per_s"] = -3;
  EXPECT_CONTAINS(Caps::from_json(j, "c.json").status().message(), "expected a positive number");
  EXPECT_EQ(Caps::load("/nonexistent/caps.json").status().code(), StatusCode::kNotFound);
  const auto path = std::filesystem::temp_directory_path() / "strata_caps_garbage.json";
  std::ofstream(path) << "{ not json";
  EXPECT_EQ(Caps::load(path.string()).status().code(), StatusCode::kInvalidData);
  std::filesystem::remove(path);
}

}  // namespace
TEST(Caps, TheCpuShareOfHostReadsBalancesTheCpuAgainstTheLink) {
  Caps c;
  EXPECT_EQ(c.cpu_share_of_host_reads(), 1.0);  // S unknown: all on the CPU
  c.h2d_pinned_bytes_per_s = 55e9;
  c.host_combined_bytes_per_s = 135e9;
  EXPECT_NEAR(c.cpu_share_of_host_reads(), 80.0 / 135.0, 1e-12);
  c.host_combined_bytes_per_s = 50e9;  // a probe reading S below P: nothing for the CPU
  EXPECT_EQ(c.cpu_share_of_host_reads(), 0.0);
}

}  // namespace strata
