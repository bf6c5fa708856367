// Tokenizer behaviour: how each vocabulary type merges, where spaces and BOS/EOS go, how
// special-token texts are parsed, and how decoding puts text back together.
#include "offload/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>

#include "offload/tokenizer/utf8.h"
#include "tests/testing/testdata.h"
#include "tests/tokenizer/toy_vocab.h"

namespace strata {
namespace {

using Ids = std::vector<int32_t>;
using testing::kToyFirstNormalId;
using testing::toy_bpe;
using testing::toy_byte_id;
using testing::toy_spm;

Tokenizer build(TokenizerMetadata m) {
  StatusOr<Tokenizer> t = Tokenizer::from_metadata(std::move(m));
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  return std::move(t).value();
}

// A real vocabulary from ../shared/testdata/vocab, loaded once per test binary.
std::shared_ptr<const Tokenizer> real_vocab(const std::string& name) {
  static std::map<std::string, std::shared_ptr<const Tokenizer>> loaded;
  std::shared_ptr<const Tokenizer>& cached = loaded[name];
  if (cached == nullptr) {
    StatusOr<GgufFile> file =
        GgufFile::open(testing::testdata_path("vocab/ggml-vocab-" + name + ".gguf"));
    if (!file.is_ok()) return nullptr;
    StatusOr<Tokenizer> t = Tokenizer::from_gguf(*file);
    EXPECT_TRUE(t.is_ok()) << t.status().to_string();
    if (t.is_ok()) cached = std::make_shared<const Tokenizer>(std::move(t).value());
  }
  return cached;
}

#define STRATA_REQUIRE_VOCAB(var, name)                                              \
  STRATA_REQUIRE_TESTDATA(testing::testdata_path("vocab/ggml-vocab-" name ".gguf")); \
  std::shared_ptr<const Tokenizer> var = real_vocab(name);                           \
  ASSERT_NE(var, nullptr)

// ---- SentencePiece ----------------------------------------------------------------------

// Ids of the toy SentencePiece vocabulary below.
constexpr int32_t kSpace = kToyFirstNormalId;  // "▁"
constexpr int32_t kA = kToyFirstNormalId + 1;
constexpr int32_t kB = kToyFirstNormalId + 2;
constexpr int32_t kC = kToyFirstNormalId + 3;
constexpr int32_t kAB = kToyFirstNormalId + 4;
constexpr int32_t kBC = kToyFirstNormalId + 5;

Tokenizer toy_spm_tokenizer(float score_ab, float score_bc) {
  return build(toy_spm({{"\xE2\x96\x81", -10},
                        {"a", -20},
                        {"b", -20},
                        {"c", -20},
                        {"ab", score_ab},
                        {"bc", score_bc}}));
}

TEST(SentencePiece, MergesHighestScoringPairFirst) {
  EXPECT_EQ(toy_spm_tokenizer(-1, -2).encode("abc", false, false), (Ids{kSpace, kAB, kC}));
  EXPECT_EQ(toy_spm_tokenizer(-2, -1).encode("abc", false, false), (Ids{kSpace, kA, kBC}));
}

TEST(SentencePiece, EqualScoresMergeLeftmostPairFirst) {
  EXPECT_EQ(toy_spm_tokenizer(-1, -1).encode("abc", false, false), (Ids{kSpace, kAB, kC}));
}

TEST(SentencePiece, SpacesBecomeMarkersAndTextGetsOneInFront) {
  const Tokenizer t = toy_spm_tokenizer(-1, -2);
  EXPECT_EQ(t.encode("a b", false, false), (Ids{kSpace, kA, kSpace, kB}));
  EXPECT_EQ(t.encode("", false, false), Ids{});
}

TEST(SentencePiece, CharactersWithoutTokenFallBackToBytes) {
  const Tokenizer t = toy_spm_tokenizer(-1, -2);
  const Ids ids = t.encode("\xC3\xA9", false, false);  // é
  EXPECT_EQ(ids, (Ids{kSpace, toy_byte_id(0xC3), toy_byte_id(0xA9)}));
  EXPECT_EQ(t.decode(ids), "\xC3\xA9");
}

TEST(SentencePiece, AddsBosOnlyWithAddSpecial) {
  const Tokenizer t = toy_spm_tokenizer(-1, -2);
  EXPECT_EQ(t.encode("a", true, false), (Ids{1, kSpace, kA}));
  EXPECT_EQ(t.encode("a", false, false), (Ids{kSpace, kA}));
  TokenizerMetadata m = toy_spm({{"\xE2\x96\x81", -10}, {"a", -20}});
  m.add_eos = true;
  m.add_bos = false;
  EXPECT_EQ(build(std::move(m)).encode("a", true, false), (Ids{kSpace, kA, 2}));
}

TEST(SentencePiece, TextAfterSpecialTokenGetsSpacePrefix) {
  const Tokenizer t = toy_spm_tokenizer(-1, -2);
  EXPECT_EQ(t.encode("<s>ab</s>c", false, true), (Ids{1, kSpace, kAB, 2, kSpace, kC}));
}

TEST(SentencePiece, DecodeDropsTheSpaceItAddedInFront) {
  const Tokenizer t = toy_spm_tokenizer(-1, -2);
  EXPECT_EQ(t.decode(t.encode(" a b", false, false)), " a b");
  EXPECT_EQ(t.decode(Ids{1, kSpace, kA}), "<s> a");  // BOS is the first token, not ▁
  // As llama.cpp: once BOS is removed, the space after it stays.
  EXPECT_EQ(t.decode(Ids{1, kSpace, kA}, {.remove_special = true}), " a");
  EXPECT_EQ(t.decode(Ids{1, kSpace, kA}, {.render_special = false}), " a");
}

TEST(SentencePiece, RealVocabularyMatchesLlamaCppPrompt) {
  STRATA_REQUIRE_VOCAB(t, "llama-spm");
  // tiny-llama's manifest prompt: BOS + llama-tokenize --no-bos.
  EXPECT_EQ(t->encode("The quick brown fox jumps over the lazy dog, and then it runs back home.",
                      true, true),
            (Ids{1,     450,   4996,  17354, 1701, 29916, 432,  17204, 975,  278,
                 17366, 11203, 29892, 322,   769,  372,   6057, 1250,  3271, 29889}));
}

// ---- Byte-level BPE ---------------------------------------------------------------------

TEST(ByteLevelBpe, MergesLowestRankFirst) {
  const Ids ab_first =
      build(toy_bpe("qwen2", {"ab", "bc"}, {"a b", "b c"})).encode("abc", false, false);
  EXPECT_EQ(ab_first, (Ids{256, 'c'}));
  const Ids bc_first =
      build(toy_bpe("qwen2", {"ab", "bc"}, {"b c", "a b"})).encode("abc", false, false);
  EXPECT_EQ(bc_first, (Ids{'a', 257}));
}

TEST(ByteLevelBpe, Llama3KeepsWordsThatAreTokensWhole) {
  // "abc" is a token, but no merges lead to it.
  const std::vector<std::string> extra = {"ab", "abc"};
  EXPECT_EQ(build(toy_bpe("llama-bpe", extra, {"a b"})).encode("abc", false, false), (Ids{257}));
  EXPECT_EQ(build(toy_bpe("qwen2", extra, {"a b"})).encode("abc", false, false), (Ids{256, 'c'}));
}

TEST(ByteLevelBpe, SpacesAndBytesUseTheByteLevelAlphabet) {
  const Tokenizer t = build(toy_bpe("qwen2",
                                    {"\xC4\xA0"
                                     "a"},
                                    {"\xC4\xA0 a"}));  // "Ġa"
  EXPECT_EQ(t.encode("a a\n", false, false), (Ids{'a', 256, '\n'}));
  EXPECT_EQ(t.decode(Ids{'a', 256, '\n'}), "a a\n");
}

TEST(ByteLevelBpe, MalformedUtf8BecomesReplacementCharacter) {
  const Tokenizer t = build(toy_bpe("qwen2", {}, {"a b"}));
  EXPECT_EQ(t.decode(t.encode("a\xFF", false, false)), "a\xEF\xBF\xBD");
}

TEST(ByteLevelBpe, AddBosFollowsTheFamilyDefault) {
  STRATA_REQUIRE_VOCAB(llama3, "llama-bpe");
  STRATA_REQUIRE_VOCAB(qwen2, "qwen2");
  EXPECT_EQ(llama3->encode("Hello world", true, true), (Ids{128000, 9906, 1917}));
  EXPECT_EQ(qwen2->encode("Hello world", true, true), (Ids{9707, 1879}));
}

TEST(ByteLevelBpe, DigitsSplitByFamily) {
  STRATA_REQUIRE_VOCAB(llama3, "llama-bpe");
  STRATA_REQUIRE_VOCAB(qwen2, "qwen2");
  EXPECT_EQ(llama3->encode("1234567", false, false).size(), 3u);  // 123 456 7
  EXPECT_EQ(qwen2->encode("1234567", false, false).size(), 7u);   // one per digit
}

TEST(ByteLevelBpe, DecodeCleansSpacesLikeLlamaCpp) {
  STRATA_REQUIRE_VOCAB(llama3, "llama-bpe");
  STRATA_REQUIRE_VOCAB(qwen2, "qwen2");
  const std::string text = "Hello , world ! It 's a ' b don 't .";
  EXPECT_EQ(llama3->decode(llama3->encode(text, false, false)), "Hello, world! It's a'b don 't.");
  EXPECT_EQ(qwen2->decode(qwen2->encode(text, false, false)), text);  // qwen2: no clean-up
}

// ---- Special tokens ---------------------------------------------------------------------

TEST(SpecialTokens, ChatTemplateTextBecomesIdsWithParseSpecial) {
  STRATA_REQUIRE_VOCAB(t, "qwen2");
  const Ids ids = t->encode("<|im_start|>user\nhi<|im_end|>\n", false, true);
  Ids expected = {151644};
  for (int32_t id : t->encode("user\nhi", false, false)) expected.push_back(id);
  expected.push_back(151645);
  for (int32_t id : t->encode("\n", false, false)) expected.push_back(id);
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(t->decode(ids), "<|im_start|>user\nhi<|im_end|>\n");
}

TEST(SpecialTokens, WithoutParseSpecialTheirTextIsPlainText) {
  STRATA_REQUIRE_VOCAB(t, "qwen2");
  const Ids ids = t->encode("<|im_start|>user", false, false);
  EXPECT_GT(ids.size(), 2u);
  for (int32_t id : ids) EXPECT_NE(id, 151644);
  EXPECT_EQ(t->decode(ids), "<|im_start|>user");
}

TEST(SpecialTokens, UserDefinedTokensAreAlwaysParsed) {
  STRATA_REQUIRE_VOCAB(t, "qwen2");
  EXPECT_EQ(t->vocab().kind(151646), TokenKind::kUserDefined);  // [PAD151646]
  EXPECT_EQ(t->encode("[PAD151646]", false, false), (Ids{151646}));
}

TEST(SpecialTokens, LongestTextWins) {
  TokenizerMetadata m = toy_spm({{"\xE2\x96\x81", -10}, {"a", -20}});
  testing::add_token(&m, "<x>", 0, 3);
  testing::add_token(&m, "<x>a", 0, 3);
  const int32_t x = kToyFirstNormalId + 2;
  const int32_t xa = kToyFirstNormalId + 3;
  EXPECT_EQ(build(std::move(m)).encode("<x>a<x>", false, true), (Ids{xa, x}));
}

TEST(SpecialTokens, Llama3HeaderTokens) {
  STRATA_REQUIRE_VOCAB(t, "llama-bpe");
  EXPECT_EQ(t->encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>", false, true),
            (Ids{128000, 128006, 882, 128007}));
}

TEST(SpecialTokens, EndOfGenerationSet) {
  STRATA_REQUIRE_VOCAB(llama3, "llama-bpe");
  STRATA_REQUIRE_VOCAB(qwen2, "qwen2");
  STRATA_REQUIRE_VOCAB(spm, "llama-spm");
  EXPECT_TRUE(llama3->is_end_of_generation(128001));  // <|end_of_text|>
  EXPECT_TRUE(llama3->is_end_of_generation(128009));  // <|eot_id|>
  EXPECT_FALSE(llama3->is_end_of_generation(128000));
  EXPECT_EQ(llama3->eot_id(), 128009);
  EXPECT_TRUE(qwen2->is_end_of_generation(151643));   // <|endoftext|>
  EXPECT_TRUE(qwen2->is_end_of_generation(151645));   // <|im_end|>
  EXPECT_FALSE(qwen2->is_end_of_generation(151644));  // <|im_start|>
  EXPECT_TRUE(spm->is_end_of_generation(2));
  EXPECT_FALSE(spm->is_end_of_generation(1));
  EXPECT_FALSE(spm->is_end_of_generation(-1));
}

// ---- Decoding ---------------------------------------------------------------------------

TEST(Decode, TokenToPieceHidesControlTokensOnlyWhenAsked) {
  STRATA_REQUIRE_VOCAB(t, "qwen2");
  EXPECT_EQ(t->token_to_piece(151645), "<|im_end|>");
  EXPECT_EQ(t->token_to_piece(151645, /*render_special=*/false), "");
  EXPECT_EQ(t->token_to_piece(-5), "");
  EXPECT_EQ(t->token_to_piece(151936), "");
}

TEST(Decode, CheckIdsNamesTheFirstBadId) {
  const Tokenizer t = toy_spm_tokenizer(-1, -2);
  EXPECT_TRUE(t.check_ids(Ids{0, 1, kBC}).is_ok());
  const Status s = t.check_ids(Ids{1, 2, 999, -1});
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("999"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("position 2"), std::string::npos) << s.message();
  EXPECT_EQ(t.decode(Ids{kSpace, 999, kA}), "a");  // decode skips what check_ids rejects
}

// ---- Arbitrary input ---------------------------------------------------------------------

// Random bytes (malformed UTF-8, NULs, stray special-token texts) must encode and decode
// without trouble, and every id must be in range.
TEST(ArbitraryInput, RandomBytesEncodeAndDecode) {
  std::mt19937 rng(1234);
  const std::vector<std::string> fragments = {
      "<|im_start|>", "<s>", "</s>", "\xE2\x96\x81", " ",
      "\n",           "'s",  "123",  "\xF0\x9F",     "\xC3\xA9"};
  for (const char* name : {"llama-spm", "llama-bpe", "qwen2"}) {
    std::shared_ptr<const Tokenizer> t = real_vocab(name);
    if (t == nullptr) continue;
    for (int round = 0; round < 200; ++round) {
      std::string text;
      const int length = static_cast<int>(rng() % 64);
      for (int i = 0; i < length; ++i) {
        if (rng() % 4 == 0)
          text += fragments[rng() % fragments.size()];
        else
          text.push_back(static_cast<char>(rng() % 256));
      }
      const bool special = round % 2 == 0;
      const Ids ids = t->encode(text, special, special);
      ASSERT_TRUE(t->check_ids(ids).is_ok()) << name;
      const std::string decoded = t->decode(ids);
      // SentencePiece byte fallback keeps every byte of well-formed text (a literal U+2581
      // comes back as ' '; in malformed text a lead byte can swallow the marker of a space).
      if (t->vocab().type() == VocabType::kSentencePiece && !special &&
          text.find("\xE2\x96\x81") == std::string::npos && sanitize_utf8(text) == text) {
        EXPECT_EQ(decoded, text) << name;
      }
    }
  }
}

}  // namespace
}  // namespace strata
