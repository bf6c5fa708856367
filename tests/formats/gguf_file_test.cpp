// GgufFile: reading real files, and one clear error for every kind of bad input (the reader
// never crashes and never reads past the bytes it was given; the fuzz target checks the rest).
#include "offload/formats/gguf_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/gguf_bytes.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using testing::GgufBytes;

StatusOr<GgufFile> parse(const GgufBytes& b) {
  return GgufFile::parse(std::span<const uint8_t>(b.bytes), "test.gguf");
}

// Expects an error whose message names the input and contains `what`.
void expect_error(const StatusOr<GgufFile>& f, const std::string& what) {
  ASSERT_FALSE(f.is_ok()) << "expected an error about: " << what;
  EXPECT_NE(f.status().message().find("test.gguf"), std::string::npos) << f.status().message();
  EXPECT_NE(f.status().message().find(what), std::string::npos) << f.status().message();
}

// A valid file: two F32 tensors of 8 elements, alignment 32.
GgufBytes two_tensor_file() {
  GgufBytes b;
  b.header(2, 1).kv_str("general.architecture", "llama");
  b.tensor("a", {8}, 0, 0).tensor("b", {4, 2}, 0, 32);
  b.pad_to(32).zeros(64);
  return b;
}

TEST(GgufFile, ReadsTinyLlamaHeader) {
  const std::string path = testing::testdata_path("models/tiny-llama/tiny-llama-F32.gguf");
  STRATA_REQUIRE_TESTDATA(path);
  auto f = GgufFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 3);
  const GgufTensorInfo* emb = f->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->ne, (std::vector<int64_t>{32, 32000}));
  EXPECT_EQ(emb->size_bytes, 32u * 32000u * 4u);
}

TEST(GgufFile, ParsesValidBuiltFile) {
  auto f = parse(two_tensor_file());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_EQ(f->find_tensor("b")->offset, 32u);
  EXPECT_EQ(f->find_tensor("b")->num_rows(), 2);
}

TEST(GgufFile, AcceptsVersion2) {
  GgufBytes b;
  b.header(0, 1, 2).kv_u32("x", 5);
  auto f = parse(b);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->get_int("x"), 5);
}

TEST(GgufFile, RejectsWrongMagic) {
  GgufBytes b = two_tensor_file();
  b.bytes[0] = 'X';
  expect_error(parse(b), "wrong magic");
}

TEST(GgufFile, RejectsUnknownVersion) {
  GgufBytes b;
  b.header(0, 0, 7);
  auto f = parse(b);
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(f.status().message().find("version 7"), std::string::npos);
}

TEST(GgufFile, RejectsEveryTruncation) {
  const GgufBytes full = two_tensor_file();
  // Cutting the file anywhere must give an error, never a crash or a read past the end.
  for (size_t n = 0; n < full.bytes.size(); ++n) {
    std::vector<uint8_t> cut(full.bytes.begin(), full.bytes.begin() + n);
    auto f = GgufFile::parse(std::span<const uint8_t>(cut), "test.gguf");
    ASSERT_FALSE(f.is_ok()) << "truncated to " << n << " bytes parsed";
    EXPECT_NE(f.status().message().find("test.gguf"), std::string::npos);
  }
}

TEST(GgufFile, RejectsAbsurdCounts) {
  GgufBytes b;
  b.header(0, 1ull << 60);
  expect_error(parse(b), "metadata count");
  GgufBytes c;
  c.header(1ull << 62, 0);
  expect_error(parse(c), "tensor count");
}

TEST(GgufFile, RejectsAbsurdStringLength) {
  GgufBytes b;
  b.header(0, 1).raw<uint64_t>(1ull << 50).zeros(16);
  expect_error(parse(b), "runs past the end");
}

TEST(GgufFile, RejectsAbsurdArrayLength) {
  GgufBytes b;
  b.header(0, 1).str("arr").raw<uint32_t>(9).raw<uint32_t>(5).raw<uint64_t>(1ull << 61);
  expect_error(parse(b), "runs past the end");
}

TEST(GgufFile, RejectsUnknownValueType) {
  GgufBytes b;
  b.header(0, 1).str("k").raw<uint32_t>(99).raw<uint32_t>(0);
  expect_error(parse(b), "unknown value type 99");
}

TEST(GgufFile, RejectsNestedArrays) {
  GgufBytes b;
  b.header(0, 1).str("k").raw<uint32_t>(9).raw<uint32_t>(9).raw<uint64_t>(0);
  expect_error(parse(b), "arrays of arrays");
}

TEST(GgufFile, RejectsDuplicateKey) {
  GgufBytes b;
  b.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
  expect_error(parse(b), "appears twice");
}

TEST(GgufFile, RejectsBadAlignment) {
  GgufBytes b;
  b.header(0, 1).kv_u32("general.alignment", 24);
  expect_error(parse(b), "power of two");
}

TEST(GgufFile, RejectsUnknownTensorType) {
  GgufBytes b;
  b.header(1, 0).tensor("a", {8}, 77, 0).pad_to(32).zeros(32);
  auto f = parse(b);
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(f.status().message().find("unknown type id 77"), std::string::npos);
}

TEST(GgufFile, RejectsTooManyDimensions) {
  GgufBytes b;
  b.header(1, 0).tensor("a", {1, 1, 1, 1, 1}, 0, 0).pad_to(32).zeros(32);
  expect_error(parse(b), "5 dimensions");
}

TEST(GgufFile, RejectsNegativeAndOverflowingDimensions) {
  GgufBytes b;
  b.header(1, 0).tensor("a", {-4}, 0, 0).pad_to(32).zeros(32);
  expect_error(parse(b), "negative dimension");
  GgufBytes c;
  c.header(1, 0).tensor("a", {1ll << 40, 1ll << 40}, 0, 0).pad_to(32).zeros(32);
  expect_error(parse(c), "overflows");
}

TEST(GgufFile, RejectsRowLengthNotMultipleOfBlock) {
  GgufBytes b;
  b.header(1, 0).tensor("q", {40}, 8 /*Q8_0*/, 0).pad_to(32).zeros(64);
  expect_error(parse(b), "not a multiple of the Q8_0 block size 32");
}

TEST(GgufFile, RejectsMisalignedOffset) {
  GgufBytes b;
  b.header(1, 0).tensor("a", {8}, 0, 4).pad_to(32).zeros(64);
  expect_error(parse(b), "not a multiple of the alignment");
}

TEST(GgufFile, RejectsOffsetPastTheEnd) {
  GgufBytes b;
  b.header(1, 0).tensor("a", {8}, 0, 1ull << 40).pad_to(32).zeros(32);
  expect_error(parse(b), "ends past the end of the file");
  GgufBytes c;  // starts inside, ends outside
  c.header(1, 0).tensor("a", {16}, 0, 32).pad_to(32).zeros(64);
  expect_error(parse(c), "ends past the end of the file");
}

TEST(GgufFile, RejectsOverlappingTensors) {
  GgufBytes b;
  b.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {8}, 0, 32).pad_to(32).zeros(96);
  expect_error(parse(b), "overlap");
}

TEST(GgufFile, RejectsDuplicateTensorName) {
  GgufBytes b;
  b.header(2, 0).tensor("a", {8}, 0, 0).tensor("a", {8}, 0, 32).pad_to(32).zeros(64);
  expect_error(parse(b), "appears twice");
}

TEST(GgufFile, OpenNamesMissingFile) {
  auto f = GgufFile::open("/nonexistent/model.gguf");
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().code(), StatusCode::kIoError);
  EXPECT_NE(f.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

TEST(GgufFile, OpenRejectsDirectoryAndEmptyFile) {
  const auto dir = std::filesystem::temp_directory_path() / "strata_gguf_test_dir";
  std::filesystem::create_directories(dir);
  EXPECT_FALSE(GgufFile::open(dir.string()).is_ok());
  const auto empty = dir / "empty.gguf";
  std::ofstream(empty).close();
  auto f = GgufFile::open(empty.string());
  ASSERT_FALSE(f.is_ok());
  EXPECT_NE(f.status().message().find("truncated"), std::string::npos) << f.status().message();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace strata
