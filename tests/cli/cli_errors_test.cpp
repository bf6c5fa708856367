// The `strata` binary end to end: bad input gets one clear line on stderr and a non-zero exit,
// never a crash; good input produces what the commands promise.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/testing/testdata.h"

namespace strata {
namespace {

struct Result {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

Result run_strata(const std::string& args) {
  const std::string cmd = std::string(STRATA_BINARY_DIR) + "/strata " + args + " 2>&1";
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string tiny_llama() { return testing::testdata_path("models/tiny-llama/tiny-llama-Q8_0.gguf"); }

void expect_clear_error(const Result& r, const std::string& what) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.output;
  EXPECT_NE(r.output.find(what), std::string::npos) << r.output;
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

TEST(Cli, RunRejectsInvalidSamplingValues) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --top-p 1.5"), "--top-p");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --temp -1"), "--temp");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --min-p 2"), "--min-p");
  expect_clear_error(run_strata("run -m " + tiny_llama() + " -p hi --ids 1,99999999"), "99999999");
}

TEST(Cli, RunJsonGreedyMatchesGoldenContinuation) {
  const std::string manifest_path = testing::testdata_path("models/tiny-llama/manifest.json");
  STRATA_REQUIRE_TESTDATA(manifest_path);
  std::ifstream in(manifest_path);
  const auto manifest = nlohmann::json::parse(in);
  std::string ids;
  for (int id : manifest["prompt"]["ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const Result r = run_strata("run -m " + tiny_llama() + " --ids " + ids +
                              " -n 24 --temp 0 --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["generated_ids"], manifest["variants"]["Q8_0"]["greedy"]);
  for (const char* key : {"prompt_ids", "generated_ids", "text", "timings", "memory"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST(Cli, EvalDumpsLogitsOfEveryPosition) {
  STRATA_REQUIRE_TESTDATA(tiny_llama());
  const auto out = std::filesystem::temp_directory_path() / "strata_cli_logits.f32";
  const Result r = run_strata("eval -m " + tiny_llama() + " --ids 1,450,4996 --dump-logits " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::filesystem::file_size(out), 3u * 32000u * 4u);
  std::filesystem::remove(out);
}

}  // namespace
}  // namespace strata
