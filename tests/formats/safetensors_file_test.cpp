// SafetensorsFile: reading the golden HF checkpoint, and one clear error naming the file for
// every kind of bad input (small files written to a temp folder). The reader never crashes and
// never reads past the bytes it was given.
#include "offload/formats/safetensors_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/testing/expect_contains.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

// 8-byte little-endian length, the header text, then `data`.
std::vector<uint8_t> st_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

class SafetensorsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("strata_st_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::vector<uint8_t>& bytes, const std::string& name = "t.safetensors") {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  // Opens a file holding `header` and `data_bytes` zero bytes; expects an error with `code`
  // whose message names the file and contains `phrase`.
  void expect_error(const std::string& header, size_t data_bytes, StatusCode code,
                    const std::string& phrase) {
    const std::string path = write(st_bytes(header, std::vector<uint8_t>(data_bytes, 0)));
    auto f = SafetensorsFile::open(path);
    ASSERT_FALSE(f.is_ok()) << "accepted header " << header;
    EXPECT_EQ(f.status().code(), code) << f.status().to_string();
    EXPECT_CONTAINS(f.status().message(), path);
    EXPECT_CONTAINS(f.status().message(), phrase);
  }

  std::filesystem::path dir_;
};

TEST_F(SafetensorsFileTest, ReadsTensorsInHeaderOrderWithMetadata) {
  std::vector<uint8_t> data(32);
  const float f32[6] = {1, 2, 3, 4, 5, 6};
  std::memcpy(data.data(), f32, 24);
  const uint16_t bf16[4] = {0x3f80, 0x4000, 0xbf80, 0};  // 1, 2, -1, 0
  std::memcpy(data.data() + 24, bf16, 8);
  // Padded with spaces to a multiple of 8, as the writer does.
  std::string header =
      R"({"__metadata__":{"format":"pt"},"z.w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("a.b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string path = write(st_bytes(header, data));

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->data_offset(), 8 + header.size());
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->metadata()[0], (std::pair<std::string, std::string>{"format", "pt"}));
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[0].name, "z.w");  // header order, not sorted
  EXPECT_EQ(f->tensors()[1].name, "a.b");

  const SafetensorsTensorInfo* w = f->find_tensor("z.w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->type, DType::kF32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->ggml_ne(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(w->num_elements(), 6);
  ASSERT_EQ(w->size_bytes, 24u);
  float got[6];
  std::memcpy(got, w->data.data(), 24);
  EXPECT_EQ(got[5], 6.0f);

  const SafetensorsTensorInfo* b = f->find_tensor("a.b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, DType::kBF16);
  EXPECT_EQ(b->offset, 24u);
  uint16_t raw;
  std::memcpy(&raw, b->data.data() + 4, 2);
  EXPECT_EQ(bf16_to_f32(raw), -1.0f);
  EXPECT_EQ(f->find_tensor("missing"), nullptr);
}

TEST_F(SafetensorsFileTest, AcceptsEmptyHeaderObjectAndZeroSizedTensors) {
  auto empty = SafetensorsFile::open(write(st_bytes("{}", {})));
  ASSERT_TRUE(empty.is_ok()) << empty.status().to_string();
  EXPECT_TRUE(empty->tensors().empty());

  auto zero = SafetensorsFile::open(
      write(st_bytes(R"({"e":{"dtype":"F16","shape":[0,4],"data_offsets":[0,0]},)"
                     R"("x":{"dtype":"F16","shape":[],"data_offsets":[0,2]}})",
                     {0, 0})));
  ASSERT_TRUE(zero.is_ok()) << zero.status().to_string();
  EXPECT_EQ(zero->find_tensor("e")->size_bytes, 0u);
  EXPECT_EQ(zero->find_tensor("x")->num_elements(), 1);  // a scalar
}

TEST_F(SafetensorsFileTest, ReadsTinyLlamaCheckpoint) {
  const std::string path = testing::testdata_path("models/tiny-llama/hf/model.safetensors");
  STRATA_REQUIRE_TESTDATA(path);
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->tensors().size(), 30u);
  const SafetensorsTensorInfo* head = f->find_tensor("lm_head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->type, DType::kBF16);
  EXPECT_EQ(head->shape, (std::vector<int64_t>{32000, 32}));
  EXPECT_EQ(head->size_bytes, 32000u * 32 * 2);
  const SafetensorsTensorInfo* k = f->find_tensor("model.layers.2.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->shape, (std::vector<int64_t>{16, 32}));
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->metadata()[0].second, "pt");
  uint64_t total = 0;
  for (const auto& t : f->tensors()) total += t.size_bytes;
  EXPECT_EQ(f->data_offset() + total, f->file_size_bytes());
}

TEST_F(SafetensorsFileTest, RejectsFileTooShortForHeaderLength) {
  const std::string path = write({1, 2, 3, 4, 5});
  auto f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidData);
  EXPECT_CONTAINS(f.status().message(), path);
  EXPECT_CONTAINS(f.status().message(), "truncated");
}

TEST_F(SafetensorsFileTest, RejectsTruncatedHeader) {
  std::vector<uint8_t> bytes =
      st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", {0, 0, 0, 0});
  bytes.resize(30);  // the length still claims the whole header
  const std::string path = write(bytes);
  auto f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.is_ok());
  EXPECT_CONTAINS(f.status().message(), path);
  EXPECT_CONTAINS(f.status().message(), "runs past the end");
}

TEST_F(SafetensorsFileTest, RejectsAbsurdHeaderLength) {
  for (uint64_t n : {uint64_t{1} << 63, ~uint64_t{0}, uint64_t{1} << 40}) {
    std::vector<uint8_t> bytes(64, ' ');
    std::memcpy(bytes.data(), &n, 8);
    const std::string path = write(bytes);
    auto f = SafetensorsFile::open(path);
    ASSERT_FALSE(f.is_ok());
    EXPECT_EQ(f.status().code(), StatusCode::kInvalidData);
    EXPECT_CONTAINS(f.status().message(), path);
    EXPECT_CONTAINS(f.status().message(), "header length " + std::to_string(n));
  }
}

TEST_F(SafetensorsFileTest, RejectsBadJson) {
  expect_error(R"({"a":{"dtype":"F32",)", 0, StatusCode::kInvalidData, "not valid JSON");
  expect_error("\x01\x02garbage", 0, StatusCode::kInvalidData, "not valid JSON");
  expect_error(std::string("{\"a\xff\":1}"), 0, StatusCode::kInvalidData, "not valid JSON");
}

TEST_F(SafetensorsFileTest, RejectsHeaderThatIsNotAnObject) {
  expect_error("[1,2]", 0, StatusCode::kInvalidData, "must be a JSON object");
  expect_error(R"({"a":[1]})", 0, StatusCode::kInvalidData, "tensor 'a' must be an object");
}

TEST_F(SafetensorsFileTest, SurvivesDeeplyNestedJson) {
  const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  expect_error(deep, 0, StatusCode::kInvalidData, "header nests JSON deeper than 8 levels");
  // Brackets inside strings do not count.
  const std::string quoted = R"({"[[[[[[[[[[[[":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  auto f = SafetensorsFile::open(write(st_bytes(quoted, {0, 0, 0, 0})));
  EXPECT_TRUE(f.is_ok()) << f.status().to_string();
}

TEST_F(SafetensorsFileTest, RejectsDuplicateTensorNames) {
  expect_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
               R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
               8, StatusCode::kInvalidData, "names 'a' twice");
}

TEST_F(SafetensorsFileTest, RejectsOffsetsPastTheEnd) {
  expect_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12,
               StatusCode::kInvalidData, "run past the end of the 12-byte data area");
  // An offset too large for uint64 parses as a float and is refused as not an integer.
  expect_error(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,99999999999999999999999]}})", 0,
               StatusCode::kInvalidData, "two non-negative integers");
}

TEST_F(SafetensorsFileTest, RejectsOverlappingTensors) {
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}})",
               12, StatusCode::kInvalidData, "tensors 'a' and 'b' overlap");
}

TEST_F(SafetensorsFileTest, RejectsSizeThatDisagreesWithShape) {
  expect_error(R"({"a":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,8]}})", 8,
               StatusCode::kInvalidData, "hold 8 bytes, but BF16 shape [3,2] needs 12");
}

TEST_F(SafetensorsFileTest, RejectsReversedOrMalformedOffsets) {
  expect_error(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8,
               StatusCode::kInvalidData, "end before they begin");
  expect_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 8,
               StatusCode::kInvalidData, "two non-negative integers");
  expect_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 8,
               StatusCode::kInvalidData, "two non-negative integers");
}

TEST_F(SafetensorsFileTest, RejectsUnknownDtype) {
  expect_error(R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", 4,
               StatusCode::kInvalidData, "unknown dtype 'F12'");
  expect_error(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4, StatusCode::kInvalidData,
               "dtype must be a string");
}

TEST_F(SafetensorsFileTest, ReportsOtherKnownDtypesAsUnsupported) {
  expect_error(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8,
               StatusCode::kUnsupported, "dtype I64, which Strata does not read");
  expect_error(R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1,
               StatusCode::kUnsupported, "F8_E4M3");
}

TEST_F(SafetensorsFileTest, RejectsBadShapes) {
  expect_error(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4,
               StatusCode::kInvalidData, "is not a non-negative integer");
  expect_error(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4,
               StatusCode::kInvalidData, "is not a non-negative integer");
  expect_error(R"({"a":{"dtype":"F32","shape":"[1]","data_offsets":[0,4]}})", 4,
               StatusCode::kInvalidData, "shape must be an array");
  expect_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4,
               StatusCode::kInvalidData, "overflows");
  expect_error(R"({"a":{"dtype":"F32","shape":[9223372036854775807],"data_offsets":[0,4]}})", 4,
               StatusCode::kInvalidData, "byte size of shape");
}

TEST_F(SafetensorsFileTest, RejectsMissingFieldsAndBadMetadata) {
  expect_error(R"({"a":{"dtype":"F32","shape":[1]}})", 4, StatusCode::kInvalidData,
               "needs \"dtype\", \"shape\" and \"data_offsets\"");
  expect_error(R"({"__metadata__":{"format":1}})", 0, StatusCode::kInvalidData,
               "__metadata__ key 'format' must be a string");
  expect_error(R"({"__metadata__":[1]})", 0, StatusCode::kInvalidData,
               "__metadata__ must be an object");
}

// Every prefix of a real file is an error naming the input, never a crash or an out-of-bounds
// read (the tensors at the end of the data area no longer fit).
TEST_F(SafetensorsFileTest, EveryTruncationOfTinyLlamaIsAnError) {
  const std::string path = testing::testdata_path("models/tiny-llama/hf/model.safetensors");
  STRATA_REQUIRE_TESTDATA(path);
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  std::vector<uint8_t> bytes(f->file_size_bytes());
  {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= f->data_offset() + 16; ++n) sizes.push_back(n);
  for (size_t n : {bytes.size() - 1, bytes.size() - 64, bytes.size() / 2}) sizes.push_back(n);
  for (size_t n : sizes) {
    auto g = SafetensorsFile::parse(std::span<const uint8_t>(bytes.data(), n), "cut.safetensors");
    ASSERT_FALSE(g.is_ok()) << "accepted the first " << n << " bytes";
    ASSERT_CONTAINS(g.status().message(), "cut.safetensors");
  }
}

// Random byte flips in the length and header: each result is an error naming the input, or a
// file whose every tensor lies inside the bytes.
TEST_F(SafetensorsFileTest, RandomHeaderCorruptionNeverCrashes) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})";
  const std::vector<uint8_t> good = st_bytes(header, std::vector<uint8_t>(32, 0));
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 5000; ++trial) {
    std::vector<uint8_t> bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < flips; ++i)
      bytes[rng() % (8 + header.size())] = static_cast<uint8_t>(rng());
    // Copy into an exactly-sized buffer so that sanitizers see any read past the end.
    auto exact = std::make_unique<uint8_t[]>(bytes.size());
    std::memcpy(exact.get(), bytes.data(), bytes.size());
    auto f = SafetensorsFile::parse(std::span<const uint8_t>(exact.get(), bytes.size()), "fuzz");
    if (f.is_ok()) {
      for (const auto& t : f->tensors()) {
        ASSERT_LE(f->data_offset() + t.offset + t.size_bytes, bytes.size());
      }
    } else {
      ASSERT_CONTAINS(f.status().message(), "fuzz");
    }
  }
}

}  // namespace
}  // namespace strata
