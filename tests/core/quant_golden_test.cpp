// Dequantize / quantize against the tiny-llama golden GGUF files (models/tiny-llama, see its
// README.md). The manifest pins no per-tensor values of the dequantized weights (its sha256 sums
// cover whole files, its `master_sha256` an undocumented serialization), so these tests check
// what the files do pin: the dense files hold identical numbers, every tensor decodes to finite
// values, the quantized files approximate the dense weights (a wrong layout would not), and
// ggml's Q8_0 / Q4_0 quantizers map the files' own numbers back onto their bytes.
//
// Not tested on purpose: quantize(dense weights) == quantized file. The quantized files were not
// made from the bf16-rounded dense numbers (about 0.8% of Q8_0 and 0.14% of Q4_0 quants differ
// from every float32/float64 variant of the reference formula applied to them, spread over all
// blocks, not only at rounding ties), so there is no byte-level oracle for that direction.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "offload/core/dequantize.h"
#include "offload/core/quantize.h"
#include "offload/formats/gguf_file.h"
#include "tests/core/quant_test_util.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using testing::count_bit_mismatches;
using testing::rel_rms_error;
using testing::testdata_path;

const std::string kModelDir = "models/tiny-llama";

GgufFile open_or_die(const std::string& file) {
  StatusOr<GgufFile> opened = GgufFile::open(testdata_path(kModelDir + "/" + file));
  EXPECT_TRUE(opened.is_ok()) << opened.status().to_string();
  return std::move(opened).value();
}

std::vector<float> dequantize_tensor(const GgufTensorInfo& tensor) {
  std::vector<float> out(static_cast<size_t>(tensor.num_elements()),
                         std::numeric_limits<float>::quiet_NaN());
  const Status status =
      dequantize_row(tensor.type, tensor.data.data(), out.data(), tensor.num_elements());
  EXPECT_TRUE(status.is_ok()) << tensor.name << ": " << status.to_string();
  return out;
}

std::vector<uint8_t> quantize_tensor(DType type, const std::vector<float>& values) {
  std::vector<uint8_t> out(
      static_cast<size_t>(row_bytes(type, static_cast<int64_t>(values.size()))));
  const Status status =
      quantize_row(type, values.data(), out.data(), static_cast<int64_t>(values.size()));
  EXPECT_TRUE(status.is_ok()) << status.to_string();
  return out;
}

size_t count_mismatched_blocks(const std::vector<uint8_t>& a, std::span<const uint8_t> b,
                               size_t block_bytes) {
  if (a.size() != b.size()) return std::max(a.size(), b.size()) / block_bytes;
  size_t mismatched = 0;
  for (size_t offset = 0; offset < a.size(); offset += block_bytes) {
    if (std::memcmp(a.data() + offset, b.data() + offset, block_bytes) != 0) ++mismatched;
  }
  return mismatched;
}

class QuantGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = testdata_path(kModelDir + "/manifest.json");
    STRATA_REQUIRE_TESTDATA(path);
    std::ifstream in(path);
    manifest_ = nlohmann::json::parse(in);
    for (const nlohmann::json& file : manifest_["files"]) {
      if (file.value("format", "") == "gguf") {
        // A partial copy of the data (the GPU machine's bundle) skips rather than fails.
        STRATA_REQUIRE_TESTDATA(testdata_path(kModelDir + "/" + file["file"].get<std::string>()));
        variants_[file["variant"]] = file;
      }
    }
  }

  nlohmann::json manifest_;
  std::map<std::string, nlohmann::json> variants_;  // "F32" -> its entry in manifest.files
};

TEST_F(QuantGolden, EveryTensorOfEveryFileDequantizesToFiniteValues) {
  ASSERT_EQ(variants_.size(), 7u);
  for (const auto& [variant, entry] : variants_) {
    SCOPED_TRACE(variant);
    const GgufFile file = open_or_die(entry["file"]);
    ASSERT_EQ(file.tensors().size(), entry["tensors"].size());
    for (const nlohmann::json& listed : entry["tensors"]) {
      const GgufTensorInfo* tensor = file.find_tensor(listed["name"].get<std::string>());
      ASSERT_NE(tensor, nullptr) << listed["name"];
      EXPECT_EQ(dtype_name(tensor->type), listed["type"].get<std::string>()) << tensor->name;
      EXPECT_EQ(tensor->ne, listed["ne"].get<std::vector<int64_t>>()) << tensor->name;
      const std::vector<float> values = dequantize_tensor(*tensor);
      size_t non_finite = 0;
      for (float v : values) non_finite += std::isfinite(v) ? 0 : 1;
      EXPECT_EQ(non_finite, 0u) << tensor->name;
    }
  }
}

TEST_F(QuantGolden, DenseFilesHoldBitIdenticalNumbers) {
  const GgufFile f32 = open_or_die(variants_.at("F32")["file"]);
  for (const char* variant : {"F16", "BF16"}) {
    SCOPED_TRACE(variant);
    const GgufFile other = open_or_die(variants_.at(variant)["file"]);
    ASSERT_EQ(other.tensors().size(), f32.tensors().size());
    for (const GgufTensorInfo& reference : f32.tensors()) {
      const GgufTensorInfo* tensor = other.find_tensor(reference.name);
      ASSERT_NE(tensor, nullptr) << reference.name;
      const std::vector<float> expected = dequantize_tensor(reference);
      const std::vector<float> actual = dequantize_tensor(*tensor);
      ASSERT_EQ(actual.size(), expected.size()) << reference.name;
      EXPECT_EQ(count_bit_mismatches(actual.data(), expected.data(), expected.size()), 0u)
          << reference.name << " (" << dtype_name(tensor->type) << ")";
    }
  }
}

// ggml's reference Q8_0 / Q4_0 quantizers map their own output back onto the same bytes; every
// Q8_0 / Q4_0 tensor of every quantized file is checked, block by block.
TEST_F(QuantGolden, Q8_0AndQ4_0TensorsRequantizeToTheirOwnBytes) {
  size_t tensors_checked = 0;
  for (const char* variant : {"Q8_0", "Q4_0", "Q4_K", "Q6_K"}) {
    SCOPED_TRACE(variant);
    const GgufFile file = open_or_die(variants_.at(variant)["file"]);
    for (const GgufTensorInfo& tensor : file.tensors()) {
      if (tensor.type != DType::kQ8_0 && tensor.type != DType::kQ4_0) continue;
      const std::vector<uint8_t> again = quantize_tensor(tensor.type, dequantize_tensor(tensor));
      EXPECT_EQ(count_mismatched_blocks(again, tensor.data, traits(tensor.type).block_bytes), 0u)
          << tensor.name;
      ++tensors_checked;
    }
  }
  EXPECT_EQ(tensors_checked, 23u + 23u + 20u + 20u);
}

// Each quantized tensor must approximate its dense original about as well as its type can: a
// wrong block layout or scale unpacking gives an error near 1.4, far above these bounds. For the
// K-quants, our quantizer's error on the same weights is printed and bounded next to the file's.
TEST_F(QuantGolden, QuantizedTensorsApproximateTheDenseWeights) {
  const GgufFile dense = open_or_die(variants_.at("F32")["file"]);
  const std::map<DType, double> max_rel_rms = {
      {DType::kQ8_0, 0.01}, {DType::kQ4_0, 0.15}, {DType::kQ4_K, 0.12}, {DType::kQ6_K, 0.03}};
  for (const char* variant : {"Q8_0", "Q4_0", "Q4_K", "Q6_K"}) {
    SCOPED_TRACE(variant);
    const GgufFile file = open_or_die(variants_.at(variant)["file"]);
    for (const GgufTensorInfo& tensor : file.tensors()) {
      if (tensor.type == DType::kF32) continue;
      const std::vector<float> exact = dequantize_tensor(*dense.find_tensor(tensor.name));
      const double file_err = rel_rms_error(dequantize_tensor(tensor), exact);
      EXPECT_LT(file_err, max_rel_rms.at(tensor.type)) << tensor.name;
      if (tensor.type == DType::kQ4_K || tensor.type == DType::kQ6_K) {
        const std::vector<uint8_t> ours = quantize_tensor(tensor.type, exact);
        std::vector<float> ours_back(exact.size());
        ASSERT_TRUE(dequantize_row(tensor.type, ours.data(), ours_back.data(),
                                   static_cast<int64_t>(exact.size()))
                        .is_ok());
        const double our_err = rel_rms_error(ours_back, exact);
        std::printf("[ measure  ] %s %s rel RMS error: file %.5f, ours %.5f\n",
                    dtype_name(tensor.type), tensor.name.c_str(), file_err, our_err);
        EXPECT_LT(our_err, file_err * 1.1) << tensor.name;
      }
    }
  }
}

}  // namespace
}  // namespace strata
