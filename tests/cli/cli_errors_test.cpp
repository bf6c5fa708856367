// The `strata` binary end to end: bad input gets one clear line on stderr and a non-zero exit,
// never a crash; good input produces what the commands promise.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "gpu_backend/device_probe.h"
#include "tests/testing/run_strata.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using testing::expect_clear_error;
using testing::run_strata;
using testing::StrataResult;

std::string tiny_llama() {
  return testing::testdata_path("models/tiny-llama/tiny-llama-Q8_0.gguf");
}

TEST(Cli, UnknownFlagIsRejected) {
  expect_clear_error(run_strata("info --no-such-flag x"), "--no-such-flag");
}

TEST(Cli, MissingModelFileNamesThePath) {
  expect_clear_error(run_strata("info /nonexistent/model.gguf"), "/nonexistent/model.gguf");
}

TEST(Cli, NotAGgufFileIsRejected) {
  const auto path = std::filesystem::temp_directory_path() / "strata_cli_not_gguf.bin";
  std::ofstream(path) << "this is not a model";
  expect_clear_error(run_strata("info " + path.string()), path.string());
  std::filesystem::remove(path);
}

TEST(Cli, RunRejectsEmptyPrompt) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p ''"), "prompt is empty");
}

TEST(Cli, RunRejectsPromptLongerThanContext) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  std::string words;
  for (int i = 0; i < 100; ++i) words += "word ";
  expect_clear_error(run_strata("run -m " + tiny_llama() + " --ctx 16 -p '" + words + "'"),
                     "more than the context of 16");
}

TEST(Cli, RunRejectsContextLargerThanTrained) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  expect_clear_error(run_strata("run -m " + tiny_llama() + " --ctx 100000 -p hi"),
                     "larger than the model's trained context");
}

TEST(Cli, RunRejectsABadVramBudget) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --vram-budget 8XB"),
                     "--vram-budget: '8XB' is not a size");
}

TEST(Cli, ForcedGpuWithoutAGpuSaysWhy) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const GpuProbe probe = probe_gpu(0);
  if (probe.usable) GTEST_SKIP() << "this machine has a usable GPU: " << describe(probe);
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --device gpu"),
                     "--device gpu: ");
}

TEST(Cli, Q8_0KvOnAModelWithShortHeadsNamesTheHeadSize) {
  // tiny-llama's heads have 8 dims; q8_0 blocks hold 32.
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  expect_clear_error(
      run_strata("run -m " + tiny_llama() + " -p hi -n 1 --device cpu --kv-type q8_0"),
      "multiple of 32");
}

TEST(Cli, GpuRunFitsTheBudgetOrSaysSo) {
  // With a GPU: a 1 MiB budget cannot hold even the workspace; the error names the budget and
  // the flag that raises it.
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const GpuProbe probe = probe_gpu(0);
  if (!probe.usable) GTEST_SKIP() << "no usable GPU: " << probe.reason;
  expect_clear_error(
      run_strata("run -m " + tiny_llama() + " -p hi --device gpu --vram-budget 1MiB"),
      "raise --vram-budget");
}

// The offload policy of `strata run` (policies/policy.h): checked on every machine, GPU or not.
std::string write_policy(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path) << text;
  return path.string();
}

TEST(Cli, RunRejectsAnUnknownPolicyKeyNamingIt) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const std::string cfg = write_policy("strata_cli_bad_key.toml", "policy = \"auto\"\nbogus = 1\n");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi -n 1 --config " + cfg), "bogus");
  std::filesystem::remove(cfg);
}

TEST(Cli, RunRejectsABadPolicyValueNamingTheKey) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const std::string cfg = write_policy("strata_cli_bad_value.toml", "prefetch_depth = 0\n");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi -n 1 --config " + cfg),
                     "prefetch_depth");
  std::filesystem::remove(cfg);
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi -n 1 --policy fastest"),
                     "--policy");
  expect_clear_error(
      run_strata("run -m " + tiny_llama() + " -p hi -n 1 --config /nonexistent/policy.toml"),
      "/nonexistent/policy.toml");
}

TEST(Cli, RunWithTheCpuPolicyRunsOnTheCpu) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const StrataResult r = run_strata("run -m " + tiny_llama() + " -p hi -n 4 --temp 0 --policy cpu");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("device cpu"), std::string::npos) << r.output;
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi -n 1 --policy cpu --device gpu"),
                     "cpu policy uses no GPU");
}

TEST(Cli, RunStatsPrintsKvBytesPerTierAsItGoes) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const StrataResult r =
      run_strata("run -m " + tiny_llama() + " -p hello -n 6 --temp 0 --ignore-eos --stats 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  size_t lines = 0;
  for (size_t at = r.output.find("[stats]"); at != std::string::npos;
       at = r.output.find("[stats]", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 3u) << r.output;  // after tokens 2, 4 and 6
  EXPECT_NE(r.output.find(" cold"), std::string::npos) << r.output;
}

TEST(Cli, RunRejectsInvalidSamplingValues) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --top-p 1.5"), "--top-p");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --temp -1"), "--temp");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --min-p 2"), "--min-p");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --ids 1,99999999"), "99999999");
}

std::string golden_manifest_path() {
  return testing::testdata_path("models/tiny-llama/manifest.json");
}

// `strata run --json` greedy over tiny-llama's golden prompt for 24 tokens, with `flags` added:
// its JSON object (null when the run failed), and the manifest in *manifest. f32 prefill: the
// exact tier on either device (auto rounds to f16 on a GPU, where the golden greedy tokens hold
// only where the margins are large).
nlohmann::json run_golden_greedy(const std::string& flags, nlohmann::json* manifest) {
  std::ifstream in(golden_manifest_path());
  *manifest = nlohmann::json::parse(in);
  std::string ids;
  for (int id : (*manifest)["prompt"]["ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const StrataResult r =
      run_strata("run -m " + tiny_llama() + " --ids " + ids +
                 " -n 24 --temp 0 --ignore-eos --json --prefill-precision f32 " + flags);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (r.exit_code != 0) return nullptr;
  return nlohmann::json::parse(r.output.substr(r.output.find('{')));
}

TEST(Cli, RunJsonGreedyMatchesGoldenContinuation) {
  STRATA_REQUIRE_TESTDATA(golden_manifest_path());
  nlohmann::json manifest;
  const auto j = run_golden_greedy("", &manifest);
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["generated_ids"], manifest["variants"]["Q8_0"]["greedy"]);
  for (const char* key : {"prompt_ids", "generated_ids", "text", "timings", "memory"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST(Cli, HotWindowOnGpuOrCpuKeepsTheTokensInEveryColdAttentionMode) {
  // The golden greedy continuation again, with 4-token blocks, an 8-token hot window and 4-token
  // chunks: 44 tokens end with most blocks in the cold tier, reported per tier in --json. Under
  // each --cold-attention: on a GPU machine the cold tier is pinned host memory, prefetch stages
  // it in VRAM and cpu attends a share of it on the CPU in decode steps; on a CPU-only machine
  // every mode is the CPU executor's (its cold tier is host memory already).
  STRATA_REQUIRE_TESTDATA(golden_manifest_path());
  for (const char* mode : {"auto", "prefetch", "cpu"}) {
    SCOPED_TRACE(mode);
    nlohmann::json manifest;
    const auto j = run_golden_greedy(
        std::string("--hot-window 8 --block-tokens 4 -b 4 --cold-attention ") + mode, &manifest);
    ASSERT_FALSE(j.is_null());
    EXPECT_EQ(j["generated_ids"], manifest["variants"]["Q8_0"]["greedy"]);
    EXPECT_GT(j["memory"]["kv_cold_peak_bytes"].get<int64_t>(), 0) << j.dump();
    EXPECT_GT(j["memory"]["kv_hot_peak_bytes"].get<int64_t>(), 0) << j.dump();
  }
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi -n 1 --hot-window -3"),
                     "--hot-window");
}

TEST(Cli, EvalDumpsLogitsOfEveryPosition) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const auto out = std::filesystem::temp_directory_path() / "strata_cli_logits.f32";
  const StrataResult r =
      run_strata("eval -m " + tiny_llama() + " --ids 1,450,4996 --dump-logits " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::filesystem::file_size(out), 3u * 32000u * 4u);
  std::filesystem::remove(out);
}

}  // namespace
}  // namespace strata
