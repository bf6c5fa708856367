// The text-level building blocks of the tokenizer: UTF-8 helpers, the byte-level alphabet and
// the regex pre-tokenizers.
#include <gtest/gtest.h>

#include "offload/tokenizer/byte_level.h"
#include "offload/tokenizer/pre_tokenizer.h"
#include "offload/tokenizer/utf8.h"

namespace strata {
namespace {

using Pieces = std::vector<std::string>;

TEST(Utf8, SanitizeKeepsWellFormedText) {
  const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
  EXPECT_EQ(sanitize_utf8(text), text);
}

TEST(Utf8, SanitizeReplacesEachBadByte) {
  EXPECT_EQ(sanitize_utf8("a\xFF"
                          "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(sanitize_utf8("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(sanitize_utf8("x\xE2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated €
  // llama.cpp decodes overlong forms and writes them back in their shortest form.
  EXPECT_EQ(sanitize_utf8("\xC1\x81"), "A");
}

TEST(Utf8, IncompleteSuffixLength) {
  EXPECT_EQ(incomplete_utf8_suffix_length(""), 0u);
  EXPECT_EQ(incomplete_utf8_suffix_length("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix_length("a\xE2"), 1u);
  EXPECT_EQ(incomplete_utf8_suffix_length("a\xE2\x82"), 2u);
  EXPECT_EQ(incomplete_utf8_suffix_length("a\xE2\x82\xAC"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix_length("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(incomplete_utf8_suffix_length("\xF0\x9F\x98\x80"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix_length("\x80\x80"), 0u);  // no lead byte: malformed
  EXPECT_EQ(incomplete_utf8_suffix_length("\xFF"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix_length("\xC3\xA9\xC3"), 1u);
}

TEST(ByteLevel, SpaceAndNewlineHavePrintableSpellings) {
  std::string out;
  byte_level_encode(" \n!", &out);
  EXPECT_EQ(out, "\xC4\xA0\xC4\x8A!");  // Ġ Ċ !
  EXPECT_EQ(byte_level_decode(out), " \n!");
}

TEST(ByteLevel, EveryByteRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string encoded;
  byte_level_encode(all, &encoded);
  EXPECT_EQ(sanitize_utf8(encoded), encoded);
  EXPECT_EQ(byte_level_decode(encoded), all);
}

Pieces split(PreTokenizerKind kind, const std::string& text) {
  StatusOr<PreTokenizer> pre = PreTokenizer::create(kind);
  EXPECT_TRUE(pre.is_ok()) << pre.status().to_string();
  std::vector<std::string_view> views;
  pre->split(text, &views);
  return Pieces(views.begin(), views.end());
}

TEST(PreTokenizer, Llama3GroupsDigitsInThrees) {
  EXPECT_EQ(split(PreTokenizerKind::kLlama3, "Hello world 1234567"),
            (Pieces{"Hello", " world", " ", "123", "456", "7"}));
}

TEST(PreTokenizer, Qwen2SplitsEveryDigit) {
  EXPECT_EQ(split(PreTokenizerKind::kQwen2, "x 123"), (Pieces{"x", " ", "1", "2", "3"}));
}

TEST(PreTokenizer, ContractionsAndPunctuation) {
  EXPECT_EQ(split(PreTokenizerKind::kLlama3, "It'S ok!!\n\n  yes"),
            (Pieces{"It", "'S", " ok", "!!\n\n", " ", " yes"}));
}

TEST(PreTokenizer, CountsNextLineAsWhitespace) {
  // U+0085 is whitespace for llama.cpp (and Python's regex), so the run splits before "b".
  EXPECT_EQ(split(PreTokenizerKind::kLlama3,
                  "a\xC2\x85\xC2\x85"
                  "b"),
            (Pieces{"a", "\xC2\x85",
                    "\xC2\x85"
                    "b"}));
}

TEST(PreTokenizer, DefaultAppliesItsPatternsInTurn) {
  EXPECT_EQ(split(PreTokenizerKind::kDefault, "ab, 12345"), (Pieces{"ab", ",", " ", "123", "45"}));
}

TEST(PreTokenizer, PiecesCoverMalformedInput) {
  const std::string text = "ok \xED\xA0\x80 fine";  // a UTF-16 surrogate: PCRE2 never matches it
  std::string joined;
  for (const std::string& p : split(PreTokenizerKind::kQwen2, text)) joined += p;
  EXPECT_EQ(joined, text);
  EXPECT_TRUE(split(PreTokenizerKind::kQwen2, "").empty());
}

}  // namespace
}  // namespace strata
