// StreamingDecoder: text comes out one token at a time, never with half a UTF-8 character.
#include "offload/tokenizer/streaming_decoder.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>

#include "offload/tokenizer/utf8.h"
#include "tests/testing/testdata.h"
#include "tests/tokenizer/toy_vocab.h"

namespace strata {
namespace {

using Ids = std::vector<int32_t>;
using testing::kToyFirstNormalId;
using testing::toy_byte_id;
using testing::toy_spm;

Tokenizer toy() {
  StatusOr<Tokenizer> t = Tokenizer::from_metadata(toy_spm({{"\xE2\x96\x81", -1}, {"a", -2}}));
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  return std::move(t).value();
}

bool is_well_formed_utf8(const std::string& s) { return sanitize_utf8(s) == s; }

struct Streamed {
  std::string pushed;          // what push() returned, token after token
  std::string flushed;         // what flush() returned after the last token
  size_t most_held_bytes = 0;  // the most bytes the decoder held back at once
};

// Streams `ids` one token at a time, expecting every piece to be well-formed UTF-8.
Streamed stream_one_by_one(const Tokenizer& t, const Ids& ids) {
  StreamingDecoder stream(t);
  Streamed out;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_TRUE(is_well_formed_utf8(piece)) << "token " << id;
    out.most_held_bytes = std::max(out.most_held_bytes, stream.pending_bytes());
    out.pushed += piece;
  }
  out.flushed = stream.flush();
  return out;
}

TEST(StreamingDecoder, HoldsBackBytesUntilTheCharacterIsComplete) {
  const Tokenizer t = toy();
  StreamingDecoder stream(t);
  EXPECT_EQ(stream.push(kToyFirstNormalId + 1), "a");
  EXPECT_EQ(stream.push(toy_byte_id(0xE2)), "");  // € is E2 82 AC
  EXPECT_EQ(stream.pending_bytes(), 1u);
  EXPECT_EQ(stream.push(toy_byte_id(0x82)), "");
  EXPECT_EQ(stream.pending_bytes(), 2u);
  EXPECT_EQ(stream.push(toy_byte_id(0xAC)), "\xE2\x82\xAC");
  EXPECT_EQ(stream.pending_bytes(), 0u);
  EXPECT_EQ(stream.push(kToyFirstNormalId), " ");
}

TEST(StreamingDecoder, FourByteCharacterAcrossFourTokens) {
  const Tokenizer t = toy();
  StreamingDecoder stream(t);
  std::string out;
  for (uint8_t byte : {0xF0, 0x9F, 0x98, 0x80}) out += stream.push(toy_byte_id(byte));
  EXPECT_EQ(out, "\xF0\x9F\x98\x80");
}

TEST(StreamingDecoder, FlushReturnsAnUnfinishedCharacter) {
  const Tokenizer t = toy();
  StreamingDecoder stream(t);
  EXPECT_EQ(stream.push(toy_byte_id(0xC3)), "");
  EXPECT_EQ(stream.flush(), "\xC3");
  EXPECT_EQ(stream.pending_bytes(), 0u);
  EXPECT_EQ(stream.push(kToyFirstNormalId + 1), "a");
}

TEST(StreamingDecoder, MalformedBytesAreNotHeldForever) {
  const Tokenizer t = toy();
  StreamingDecoder stream(t);
  EXPECT_EQ(stream.push(toy_byte_id(0xFF)), "\xFF");  // can never start a character
  EXPECT_EQ(stream.push(toy_byte_id(0xE2)), "");
  EXPECT_EQ(stream.push(kToyFirstNormalId + 1),
            "\xE2"
            "a");  // 'a' cannot continue it
}

TEST(StreamingDecoder, ControlTokensFollowRenderSpecial) {
  const Tokenizer t = toy();
  StreamingDecoder shown(t);
  StreamingDecoder hidden(t, /*render_special=*/false);
  EXPECT_EQ(shown.push(2), "</s>");
  EXPECT_EQ(hidden.push(2), "");
}

// With a real byte-level vocabulary: emoji and CJK split across tokens still stream as whole
// characters, and the stream adds up to the decoded text.
TEST(StreamingDecoder, ByteLevelBpeStreamsWholeCharacters) {
  const std::string path = testing::testdata_path("vocab/ggml-vocab-qwen2.gguf");
  STRATA_REQUIRE_TESTDATA(path);
  StatusOr<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  StatusOr<Tokenizer> t = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();

  const std::string text =
      "Llamas \xF0\x9F\xA6\x99 and \xE1\x9E\x80\xE1\x9E\xB6 "
      "\xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F!";
  const Ids ids = t->encode(text, false, false);
  const Streamed streamed = stream_one_by_one(*t, ids);
  EXPECT_EQ(streamed.pushed + streamed.flushed, text);
  EXPECT_GT(streamed.most_held_bytes, 0u) << "no token split a character: the test checks nothing";
}

TEST(StreamingDecoder, SentencePieceByteFallbackStreamsWholeCharacters) {
  const std::string path = testing::testdata_path("vocab/ggml-vocab-llama-spm.gguf");
  STRATA_REQUIRE_TESTDATA(path);
  StatusOr<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  StatusOr<Tokenizer> t = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();

  const std::string text = "smile \xF0\x9F\x98\x81 \xF0\x9F\xA6\x99";
  const Ids ids = t->encode(text, false, false);
  const Streamed streamed = stream_one_by_one(*t, ids);
  EXPECT_EQ(streamed.flushed, "");
  EXPECT_EQ(streamed.pushed, " " + text);   // the stream keeps SentencePiece's leading space
  EXPECT_EQ(streamed.most_held_bytes, 3u);  // 4-byte characters come as <0xF0><0x9F>...
}

}  // namespace
}  // namespace strata
