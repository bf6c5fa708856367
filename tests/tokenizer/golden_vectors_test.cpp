// llama.cpp's tokenizer test vectors (../shared/testdata/vocab): every input of every vocab
// must give exactly llama.cpp's ids (add_special = false, parse_special = false), and decoding
// those ids must give the input back wherever llama.cpp's decode would.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "offload/formats/gguf_file.h"
#include "offload/formats/mapped_file.h"
#include "offload/tokenizer/tokenizer.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

struct VectorCase {
  std::string input;
  std::vector<int32_t> expected;
};

std::string vocab_path(const std::string& name) {
  return testing::testdata_path("vocab/ggml-vocab-" + name + ".gguf");
}

// Reads NAME.gguf.inp / .out as llama.cpp's test-tokenizer-0 does (see vocab/README.md).
std::vector<VectorCase> read_cases(const std::string& gguf_path) {
  StatusOr<std::string> inp = read_text_file(gguf_path + ".inp");
  StatusOr<std::string> out = read_text_file(gguf_path + ".out");
  EXPECT_TRUE(inp.is_ok()) << inp.status().to_string();
  EXPECT_TRUE(out.is_ok()) << out.status().to_string();
  if (!inp.is_ok() || !out.is_ok()) return {};

  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t start = 0;
  for (size_t end = inp->find(separator); end != std::string::npos;
       end = inp->find(separator, start)) {
    inputs.push_back(inp->substr(start, end - start));
    start = end + separator.size();
  }
  std::vector<std::vector<int32_t>> outputs;
  std::istringstream lines(*out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream numbers(line);
    std::vector<int32_t> ids;
    for (int64_t id; numbers >> id;) ids.push_back(static_cast<int32_t>(id));
    outputs.push_back(std::move(ids));
  }
  EXPECT_EQ(inputs.size(), outputs.size()) << "input and output counts differ for " << gguf_path;
  std::vector<VectorCase> cases;
  for (size_t i = 0; i < inputs.size() && i < outputs.size(); ++i) {
    cases.push_back({inputs[i], outputs[i]});
  }
  return cases;
}

std::string escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\r')
      out += "\\r";
    else
      out += static_cast<char>(c);
  }
  return out;
}

std::string join(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id);
  }
  return s;
}

// Where llama.cpp's clean-up of spaces on decode changes the text (BPE families with
// clean_spaces): " ?", " !", " .", " ,", " ' " and the contractions " 's", " 'm", " 're", " 've".
bool decode_cleans_up(const std::string& s) {
  for (const char* pattern : {" ?", " !", " .", " ,", " ' ", " 's", " 'm", " 're", " 've"}) {
    if (s.find(pattern) != std::string::npos) return true;
  }
  return false;
}

class GoldenVectors : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    path_ = vocab_path(GetParam());
    STRATA_REQUIRE_TESTDATA(path_);
    // Loading a 150k-token vocabulary takes a moment: load each once for the whole suite.
    static std::map<std::string, std::shared_ptr<const Tokenizer>> loaded;
    std::shared_ptr<const Tokenizer>& cached = loaded[path_];
    if (cached == nullptr) {
      StatusOr<GgufFile> file = GgufFile::open(path_);
      ASSERT_TRUE(file.is_ok()) << file.status().to_string();
      StatusOr<Tokenizer> tokenizer = Tokenizer::from_gguf(*file);
      ASSERT_TRUE(tokenizer.is_ok()) << tokenizer.status().to_string();
      cached = std::make_shared<const Tokenizer>(std::move(tokenizer).value());
    }
    tokenizer_ = cached;
    cases_ = read_cases(path_);
  }

  std::string path_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::vector<VectorCase> cases_;
};

TEST_P(GoldenVectors, EveryInputGivesLlamaCppIds) {
  ASSERT_EQ(cases_.size(), 46u);
  int mismatches = 0;
  for (size_t i = 0; i < cases_.size(); ++i) {
    const VectorCase& c = cases_[i];
    const std::vector<int32_t> got = tokenizer_->encode(c.input, false, false);
    if (got != c.expected) {
      ++mismatches;
      ADD_FAILURE() << GetParam() << " case " << i << ": input '" << escape(c.input)
                    << "'\n  expected: " << join(c.expected) << "\n  got:      " << join(got);
    }
  }
  std::printf("[ vectors  ] %s: %zu of %zu cases match\n", GetParam().c_str(),
              cases_.size() - mismatches, cases_.size());
}

TEST_P(GoldenVectors, DecodeGivesTheInputBack) {
  int checked = 0;
  for (size_t i = 0; i < cases_.size(); ++i) {
    const VectorCase& c = cases_[i];
    if (tokenizer_->vocab().clean_spaces() && decode_cleans_up(c.input)) continue;
    ++checked;
    EXPECT_EQ(tokenizer_->decode(c.expected), c.input)
        << GetParam() << " case " << i << ": '" << escape(c.input) << "'";
  }
  EXPECT_GT(checked, 35);
}

TEST_P(GoldenVectors, PiecesAddUpToTheInput) {
  for (const VectorCase& c : cases_) {
    std::string joined;
    for (int32_t id : c.expected) joined += tokenizer_->token_to_piece(id);
    if (tokenizer_->vocab().add_space_prefix() && !joined.empty() && joined[0] == ' ') {
      joined.erase(0, 1);
    }
    EXPECT_EQ(joined, c.input) << escape(c.input);
  }
}

// A perplexity run tokenizes a few hundred KB at once: no quadratic behaviour on long texts
// or on one long word.
TEST_P(GoldenVectors, LongTextsEncodeQuickly) {
  std::string text;
  for (int copy = 0; copy < 320; ++copy) {
    for (const VectorCase& c : cases_) text += c.input + "\n";
  }
  ASSERT_GT(text.size(), 300000u);
  std::string long_word(100000, 'a');
  for (size_t i = 0; i < long_word.size(); i += 7) long_word[i] = 'b';

  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer_->encode(text, false, false);
  const std::vector<int32_t> word_ids = tokenizer_->encode(long_word, false, false);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ timing   ] %s: %zu bytes -> %zu tokens, 100 KB word -> %zu tokens: %.3f s\n",
              GetParam().c_str(), text.size(), ids.size(), word_ids.size(), seconds);
  EXPECT_LT(seconds, 20.0);  // linear-ish work takes well under a second
  EXPECT_EQ(tokenizer_->decode(word_ids), long_word);
}

INSTANTIATE_TEST_SUITE_P(Vocabs, GoldenVectors,
                         ::testing::Values("llama-spm", "llama-bpe", "qwen2"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace strata
