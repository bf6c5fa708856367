// `strata convert` end to end: the golden tiny-llama HF checkpoint plus the llama-spm vocab,
// converted to F32, is the golden tiny-llama-F32.gguf (same tensors bit for bit, Q/K permuted the
// way llama.cpp permutes them; same metadata), and `strata eval` gives the same logits for both.
// Bad input is one clear error and leaves no output file behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "offload/formats/gguf_file.h"
#include "tests/testing/run_strata.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using testing::expect_clear_error;
using testing::run_strata;
using testing::StrataResult;

std::string hf_dir() { return testing::testdata_path("models/tiny-llama/hf"); }
std::string golden_f32() { return testing::testdata_path("models/tiny-llama/tiny-llama-F32.gguf"); }
std::string spm_vocab() { return testing::testdata_path("vocab/ggml-vocab-llama-spm.gguf"); }

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("strata_convert_test_" + name);
}

std::vector<char> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Same GGUF type and the same value (arrays element by element).
bool same_value(const GgufValue& a, const GgufValue& b) {
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.array_type() != b.array_type() || a.array_size() != b.array_size()) return false;
    if (a.strings() != nullptr) return *a.strings() == *b.strings();
    if (a.ints() != nullptr) return *a.ints() == *b.ints();
    if (a.uints() != nullptr) return *a.uints() == *b.uints();
    if (a.floats() != nullptr) return *a.floats() == *b.floats();
    return false;
  }
  if (a.to_string() != nullptr) return *a.to_string() == *b.to_string();
  if (a.type() == GgufType::kFloat32 || a.type() == GgufType::kFloat64)
    return a.to_float() == b.to_float();
  if (a.type() == GgufType::kBool) return a.to_bool() == b.to_bool();
  return a.to_int() == b.to_int();
}

class ConvertTinyLlama : public ::testing::Test {
 protected:
  void SetUp() override {
    STRATA_REQUIRE_TESTDATA(hf_dir());
    STRATA_REQUIRE_TESTDATA(golden_f32());
    STRATA_REQUIRE_TESTDATA(spm_vocab());
    // One file per test: ctest may run the tests of this fixture in parallel.
    out_ = temp_file(std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
                     "-F32.gguf");
    std::filesystem::remove(out_);
    const StrataResult r = run_strata("convert --hf " + hf_dir() + " --vocab " + spm_vocab() +
                                      " --out " + out_.string() + " --type F32 --name tiny-llama");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("30 tensors"), std::string::npos) << r.output;
  }
  void TearDown() override { std::filesystem::remove(out_); }

  std::filesystem::path out_;
};

TEST_F(ConvertTinyLlama, EveryTensorEqualsTheGoldenF32FileBitForBit) {
  auto converted = GgufFile::open(out_.string());
  auto golden = GgufFile::open(golden_f32());
  ASSERT_TRUE(converted.is_ok()) << converted.status().message();
  ASSERT_TRUE(golden.is_ok()) << golden.status().message();
  ASSERT_EQ(converted->tensors().size(), golden->tensors().size());
  for (size_t i = 0; i < golden->tensors().size(); ++i) {
    const GgufTensorInfo& want = golden->tensors()[i];
    const GgufTensorInfo& got = converted->tensors()[i];
    EXPECT_EQ(got.name, want.name) << "tensor " << i;
    EXPECT_EQ(got.type, want.type) << want.name;
    EXPECT_EQ(got.ne, want.ne) << want.name;
    ASSERT_EQ(got.data.size(), want.data.size()) << want.name;
    EXPECT_TRUE(std::equal(got.data.begin(), got.data.end(), want.data.begin()))
        << want.name << " differs (a wrong Q/K permutation shows up in attn_q / attn_k)";
  }
}

TEST_F(ConvertTinyLlama, MetadataMatchesTheGoldenFileKeyByKey) {
  auto converted = GgufFile::open(out_.string());
  auto golden = GgufFile::open(golden_f32());
  ASSERT_TRUE(converted.is_ok() && golden.is_ok());
  ASSERT_EQ(converted->metadata().size(), golden->metadata().size());
  for (const auto& [key, value] : golden->metadata()) {
    const GgufValue* got = converted->find(key);
    ASSERT_NE(got, nullptr) << "missing " << key;
    EXPECT_TRUE(same_value(*got, value)) << key;
  }
}

TEST_F(ConvertTinyLlama, EvalLogitsEqualThoseOfTheGoldenFile) {
  const std::string manifest_path = testing::testdata_path("models/tiny-llama/manifest.json");
  STRATA_REQUIRE_TESTDATA(manifest_path);
  std::ifstream in(manifest_path);
  const auto manifest = nlohmann::json::parse(in);
  std::string ids;
  for (int id : manifest["prompt"]["ids"]) {
    if (!ids.empty()) ids += ',';
    ids += std::to_string(id);
  }

  const auto logits_converted = temp_file("logits-converted.f32");
  const auto logits_golden = temp_file("logits-golden.f32");
  StrataResult r = run_strata("eval -m " + out_.string() + " --ids " + ids + " --dump-logits " +
                              logits_converted.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_strata("eval -m " + golden_f32() + " --ids " + ids + " --dump-logits " +
                 logits_golden.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<char> a = read_bytes(logits_converted);
  const std::vector<char> b = read_bytes(logits_golden);
  EXPECT_EQ(a.size(), 20u * 32000u * 4u);
  EXPECT_TRUE(a == b) << "logits of the converted file differ from the golden F32 file's";
  std::filesystem::remove(logits_converted);
  std::filesystem::remove(logits_golden);
}

TEST(Convert, QuantizedOutputLoadsAndRuns) {
  STRATA_REQUIRE_TESTDATA(hf_dir());
  STRATA_REQUIRE_TESTDATA(spm_vocab());
  const auto out = temp_file("tiny-llama-Q8_0.gguf");
  StrataResult r = run_strata("convert --hf " + hf_dir() + " --vocab " + spm_vocab() + " --out " +
                              out.string() + " --type q8_0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_strata("info " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Q8_0"), std::string::npos) << r.output;
  r = run_strata("run -m " + out.string() + " -p hello -n 4 --temp 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::filesystem::remove(out);
}

void expect_clear_error_and_no_output(const std::string& args, const std::filesystem::path& out,
                                      const std::string& what) {
  std::filesystem::remove(out);
  expect_clear_error(run_strata(args), what);
  EXPECT_FALSE(std::filesystem::exists(out)) << out;
  EXPECT_FALSE(std::filesystem::exists(out.string() + ".tmp")) << out;
}

TEST(Convert, MissingCheckpointFolderIsNamed) {
  STRATA_REQUIRE_TESTDATA(spm_vocab());
  const auto out = temp_file("missing.gguf");
  expect_clear_error_and_no_output(
      "convert --hf /nonexistent/hf --vocab " + spm_vocab() + " --out " + out.string(), out,
      "/nonexistent/hf");
}

TEST(Convert, GgufFileIsNotAnHfCheckpoint) {
  STRATA_REQUIRE_TESTDATA(golden_f32());
  const auto out = temp_file("from-gguf.gguf");
  expect_clear_error_and_no_output(
      "convert --hf " + golden_f32() + " --vocab " + spm_vocab() + " --out " + out.string(), out,
      "expected an HF checkpoint folder");
}

TEST(Convert, VocabLargerThanTheEmbeddingIsRefused) {
  const std::string bpe_vocab = testing::testdata_path("vocab/ggml-vocab-llama-bpe.gguf");
  STRATA_REQUIRE_TESTDATA(hf_dir());
  STRATA_REQUIRE_TESTDATA(bpe_vocab);
  const auto out = temp_file("big-vocab.gguf");
  expect_clear_error_and_no_output(
      "convert --hf " + hf_dir() + " --vocab " + bpe_vocab + " --out " + out.string(), out,
      "more than the 32000 rows");
}

TEST(Convert, FileWithoutTokenizerIsRefusedAsVocab) {
  STRATA_REQUIRE_TESTDATA(hf_dir());
  const auto not_gguf = temp_file("not-a-vocab.bin");
  std::ofstream(not_gguf) << "not a gguf file";
  const auto out = temp_file("bad-vocab.gguf");
  expect_clear_error_and_no_output(
      "convert --hf " + hf_dir() + " --vocab " + not_gguf.string() + " --out " + out.string(), out,
      "--vocab");
  std::filesystem::remove(not_gguf);
}

TEST(Convert, UnknownTypeIsRefused) {
  STRATA_REQUIRE_TESTDATA(hf_dir());
  const auto out = temp_file("bad-type.gguf");
  expect_clear_error_and_no_output("convert --hf " + hf_dir() + " --vocab " + spm_vocab() +
                                       " --out " + out.string() + " --type Q5_1",
                                   out, "unknown --type 'Q5_1'");
}

// The model that ships in models/default (once it is committed) loads and writes text.
TEST(DefaultModel, GeneratesText) {
  const std::string model = std::string(STRATA_SOURCE_DIR) + "/models/default/strata-tiny.gguf";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "no default model at " << model;
  const StrataResult r =
      run_strata("run -m " + model + " -p 'In the beginning' -n 16 --temp 0 --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["generated_ids"].size(), 16u) << r.output;
  EXPECT_FALSE(j["text"].get<std::string>().empty()) << r.output;
}

}  // namespace
}  // namespace strata
