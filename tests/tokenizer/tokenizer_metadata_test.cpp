// Bad tokenizer metadata: every inconsistency is one clear error naming the key (and, from a
// file, the file), never a crash.
#include <gtest/gtest.h>

#include "offload/tokenizer/tokenizer.h"
#include "tests/testing/gguf_bytes.h"
#include "tests/tokenizer/toy_vocab.h"

namespace strata {
namespace {

using testing::GgufBytes;
using testing::toy_bpe;
using testing::toy_spm;

// Expects from_metadata to fail with `code` and a message containing each of `fragments`.
void expect_error(TokenizerMetadata m, StatusCode code,
                  std::initializer_list<std::string> fragments) {
  StatusOr<Tokenizer> t = Tokenizer::from_metadata(std::move(m));
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().code(), code) << t.status().to_string();
  for (const std::string& f : fragments) {
    EXPECT_NE(t.status().message().find(f), std::string::npos)
        << "'" << f << "' not in: " << t.status().message();
  }
}

TokenizerMetadata small_spm() { return toy_spm({{"\xE2\x96\x81", -1}, {"a", -2}}); }

TEST(TokenizerMetadata, UnknownModelIsNamed) {
  TokenizerMetadata m = small_spm();
  m.model = "bert";
  expect_error(std::move(m), StatusCode::kUnsupported, {"tokenizer.ggml.model", "'bert'"});
}

TEST(TokenizerMetadata, UnknownPreTokenizerIsNamed) {
  expect_error(toy_bpe("klingon-bpe", {}, {"a b"}), StatusCode::kUnsupported,
               {"tokenizer.ggml.pre", "'klingon-bpe'", "qwen2"});
}

TEST(TokenizerMetadata, MissingPreTokenizerMeansDefault) {
  TokenizerMetadata m = toy_bpe("", {"ab"}, {"a b"});
  m.pre.reset();
  StatusOr<Tokenizer> t = Tokenizer::from_metadata(std::move(m));
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->vocab().pre_tokenizer(), PreTokenizerKind::kDefault);
  EXPECT_EQ(t->encode("ab", false, false), (std::vector<int32_t>{256}));
}

TEST(TokenizerMetadata, ScoresCountMustMatchTokens) {
  TokenizerMetadata m = small_spm();
  m.scores.pop_back();
  expect_error(std::move(m), StatusCode::kInvalidData,
               {"tokenizer.ggml.scores", std::to_string(small_spm().tokens.size() - 1)});
}

TEST(TokenizerMetadata, TokenTypeCountMustMatchTokens) {
  TokenizerMetadata m = small_spm();
  m.token_types.push_back(1);
  expect_error(std::move(m), StatusCode::kInvalidData, {"tokenizer.ggml.token_type"});
}

TEST(TokenizerMetadata, TokenTypeMustBeKnown) {
  TokenizerMetadata m = small_spm();
  m.token_types[5] = 9;
  expect_error(std::move(m), StatusCode::kInvalidData, {"tokenizer.ggml.token_type[5] = 9"});
}

TEST(TokenizerMetadata, SpecialIdMustBeInRange) {
  TokenizerMetadata m = small_spm();
  m.eos_id = 100000;
  expect_error(std::move(m), StatusCode::kInvalidData,
               {"tokenizer.ggml.eos_token_id = 100000", "out of range"});
  m = small_spm();
  m.padding_id = -7;
  expect_error(std::move(m), StatusCode::kInvalidData, {"tokenizer.ggml.padding_token_id"});
}

TEST(TokenizerMetadata, MinusOneMeansNoSuchToken) {
  TokenizerMetadata m = small_spm();
  m.padding_id = 0xFFFFFFFFLL;
  m.eos_id = -1;
  StatusOr<Tokenizer> t = Tokenizer::from_metadata(std::move(m));
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->eos_id(), kNoToken);
  EXPECT_EQ(t->vocab().padding_id(), kNoToken);
}

TEST(TokenizerMetadata, AddingAMissingBosIsAnError) {
  TokenizerMetadata m = small_spm();
  m.bos_id = -1;  // and add_bos defaults to true for SentencePiece
  expect_error(std::move(m), StatusCode::kInvalidData, {"add_bos_token", "bos_token_id"});
}

TEST(TokenizerMetadata, EmptyVocabularyIsAnError) {
  TokenizerMetadata m;
  m.model = "llama";
  expect_error(std::move(m), StatusCode::kInvalidData, {"tokenizer.ggml.tokens is empty"});
}

TEST(TokenizerMetadata, ByteLevelBpeNeedsMerges) {
  expect_error(toy_bpe("qwen2", {}, {}), StatusCode::kInvalidData, {"tokenizer.ggml.merges"});
}

TEST(TokenizerMetadata, MergeWithoutSpaceIsNamed) {
  expect_error(toy_bpe("qwen2", {}, {"a b", "cd"}), StatusCode::kInvalidData,
               {"tokenizer.ggml.merges[1] = 'cd'"});
}

TEST(TokenizerMetadata, EmptyTokenTextGetsAPlaceholder) {
  TokenizerMetadata m = small_spm();
  m.tokens.back() = "";
  StatusOr<Tokenizer> t = Tokenizer::from_metadata(std::move(m));
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  const int32_t last = static_cast<int32_t>(t->n_vocab() - 1);
  EXPECT_EQ(t->vocab().text(last), "[EMPTY_" + std::to_string(last) + "]");
}

// ---- From GGUF bytes --------------------------------------------------------------------

GgufBytes& kv_strings(GgufBytes& b, const std::string& key, const std::vector<std::string>& v) {
  b.str(key).raw<uint32_t>(9).raw<uint32_t>(8).raw<uint64_t>(v.size());
  for (const std::string& s : v) b.str(s);
  return b;
}
GgufBytes& kv_i32s(GgufBytes& b, const std::string& key, const std::vector<int32_t>& v) {
  b.str(key).raw<uint32_t>(9).raw<uint32_t>(5).raw<uint64_t>(v.size());
  for (int32_t x : v) b.raw(x);
  return b;
}
GgufBytes& kv_f32s(GgufBytes& b, const std::string& key, const std::vector<float>& v) {
  b.str(key).raw<uint32_t>(9).raw<uint32_t>(6).raw<uint64_t>(v.size());
  for (float x : v) b.raw(x);
  return b;
}

StatusOr<Tokenizer> from_bytes(const GgufBytes& b) {
  StatusOr<GgufFile> file = GgufFile::parse(std::span<const uint8_t>(b.bytes), "tok.gguf");
  if (!file.is_ok()) return file.status();
  return Tokenizer::from_gguf(*file);
}

const std::vector<std::string> kTokens = {"<unk>",
                                          "<s>",
                                          "</s>",
                                          "\xE2\x96\x81",
                                          "a",
                                          "\xE2\x96\x81"
                                          "a"};

TEST(TokenizerFromGguf, BuildsFromAMinimalFile) {
  GgufBytes b;
  b.header(0, 4).kv_str("tokenizer.ggml.model", "llama");
  kv_strings(b, "tokenizer.ggml.tokens", kTokens);
  kv_f32s(b, "tokenizer.ggml.scores", {0, 0, 0, -1, -2, -0.5f});
  kv_i32s(b, "tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1});
  StatusOr<Tokenizer> t = from_bytes(b);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->encode("a", true, true), (std::vector<int32_t>{1, 5}));
  EXPECT_EQ(t->decode(std::vector<int32_t>{5, 3, 4}), "a a");
}

TEST(TokenizerFromGguf, TokensThatAreNotStringsAreNamed) {
  GgufBytes b;
  b.header(0, 2).kv_str("tokenizer.ggml.model", "llama");
  kv_i32s(b, "tokenizer.ggml.tokens", {1, 2, 3});
  StatusOr<Tokenizer> t = from_bytes(b);
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("tok.gguf: tokenizer.ggml.tokens must be an array of "
                                      "strings"),
            std::string::npos)
      << t.status().message();
}

TEST(TokenizerFromGguf, FileWithoutTokenizerSaysSo) {
  GgufBytes b;
  b.header(0, 1).kv_str("general.architecture", "llama");
  StatusOr<Tokenizer> t = from_bytes(b);
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_NE(t.status().message().find("tokenizer.ggml.model"), std::string::npos);
}

TEST(TokenizerFromGguf, WrongScalarTypesAreNamed) {
  GgufBytes b;
  b.header(0, 3).kv_str("tokenizer.ggml.model", "llama");
  kv_strings(b, "tokenizer.ggml.tokens", kTokens);
  b.kv_str("tokenizer.ggml.bos_token_id", "one");
  StatusOr<Tokenizer> t = from_bytes(b);
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("tokenizer.ggml.bos_token_id must be an integer"),
            std::string::npos)
      << t.status().message();
}

TEST(TokenizerFromGguf, ErrorsFromTheVocabularyNameTheFile) {
  GgufBytes b;
  b.header(0, 3).kv_str("tokenizer.ggml.model", "llama");
  kv_strings(b, "tokenizer.ggml.tokens", kTokens);
  b.kv_u32("tokenizer.ggml.eos_token_id", 6);
  StatusOr<Tokenizer> t = from_bytes(b);
  ASSERT_FALSE(t.is_ok());
  EXPECT_EQ(t.status().message().rfind("tok.gguf: tokenizer.ggml.eos_token_id = 6", 0), 0u)
      << t.status().message();
}

}  // namespace
}  // namespace strata
