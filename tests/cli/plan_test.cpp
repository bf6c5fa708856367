// `strata plan` end to end: a shape with no file, a real file's tensor table, JSON, a policy file,
// and the errors for bad input (one clear line naming the key or flag, no crash).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/testing/expect_contains.h"
#include "tests/testing/run_strata.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using testing::expect_clear_error;
using testing::run_strata;

TEST(PlanCommand, PrintsTiersLayersAndPredictionsForAShape) {
  const auto r = run_strata("plan --shape llama3-8b --type F16 --vram-budget 8GiB");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "VRAM     weights");
  EXPECT_CONTAINS(r.output, "predicted decode");
  EXPECT_CONTAINS(r.output, "predicted prefill");
  EXPECT_CONTAINS(r.output, "stream");
}

TEST(PlanCommand, JsonHasEveryLayerAndStaysUnderTheBudget) {
  const auto r = run_strata("plan --shape qwen2.5-14b --type Q8_0 --vram-budget 8GiB --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["layers"].size(), 48u);
  EXPECT_TRUE(j["fits"].get<bool>());
  EXPECT_LE(j["bytes"]["vram_total"].get<int64_t>(), int64_t{8} << 30);
  EXPECT_GT(j["predicted"]["decode"]["tokens_per_s"].get<double>(), 0);
}

TEST(PlanCommand, ReadsAPolicyFileAndFlagsWin) {
  const auto path = std::filesystem::temp_directory_path() / "strata_plan_policy.toml";
  std::ofstream(path) << "policy = \"cpu\"\n";
  auto r = run_strata("plan --shape llama3-8b --type Q4_0 --config " + path.string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["policy"], "cpu");
  EXPECT_EQ(j["bytes"]["vram_total"], 0);
  r = run_strata("plan --shape llama3-8b --type Q4_0 --config " + path.string() +
                 " --policy stream --vram-budget 4GiB --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["policy"], "stream");
  std::filesystem::remove(path);
}

TEST(PlanCommand, ReadsOnlyTheTensorTableOfAFile) {
  const std::string model = testing::testdata_path("models/tiny-llama/tiny-llama-Q8_0.gguf");
  STRATA_REQUIRE_TESTDATA(model);
  const auto r = run_strata("plan -m " + model + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["layers"].size(), 3u);
}

TEST(PlanCommand, UsesTheRatesThatCalibrateMeasured) {
  const auto caps = std::filesystem::temp_directory_path() / "strata_plan_caps.json";
  auto r = run_strata("calibrate --no-gpu --read-gib 0.25 --out " + caps.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "C  CPU read");
  ASSERT_TRUE(std::filesystem::exists(caps));
  r = run_strata("plan --shape llama3-8b --type Q4_0 --policy cpu --caps " + caps.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "rates    calibrated");
  std::filesystem::remove(caps);
  expect_clear_error(run_strata("plan --shape llama3-8b --caps /nonexistent/caps.json"),
                     "/nonexistent/caps.json");
}

TEST(PlanCommand, BadInputGetsOneClearError) {
  const auto path = std::filesystem::temp_directory_path() / "strata_plan_bad.toml";
  std::ofstream(path) << "policy = \"auto\"\nprefetch = 2\n";
  expect_clear_error(run_strata("plan --shape llama3-8b --config " + path.string()),
                     "strata_plan_bad.toml:2: prefetch: unknown key");
  std::filesystem::remove(path);
  expect_clear_error(run_strata("plan --shape llama3-9000b"), "no shape named 'llama3-9000b'");
  expect_clear_error(run_strata("plan --shape llama3-8b --type Q5_1"), "Q5_1");
  expect_clear_error(run_strata("plan --shape llama3-8b --vram-budget lots"), "--vram-budget");
  expect_clear_error(run_strata("plan --shape llama3-8b --prefetch-depth 99"), "prefetch_depth");
  expect_clear_error(run_strata("plan"), "give a model");
  expect_clear_error(run_strata("plan --shape llama3-8b --config /nonexistent.toml"),
                     "/nonexistent.toml");
}

}  // namespace
}  // namespace strata
