// load_model: a folder is an HF checkpoint, a file is GGUF by its magic, anything else is one
// clear error naming the path.
#include "offload/model/model_loader.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <utility>

#include "tests/model/hf_folder_builder.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using testing::TempFolder;

TEST(LoadModel, GgufFileKeepsItsMetadataForTheTokenizer) {
  const std::string path = testing::testdata_path("models/tiny-qwen2/tiny-qwen2-Q8_0.gguf");
  STRATA_REQUIRE_TESTDATA(path);
  auto model = load_model(path);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  EXPECT_EQ(model->spec.format, SourceFormat::kGguf);
  EXPECT_EQ(model->spec.arch, Arch::kQwen2);
  EXPECT_EQ(model->spec.path, path);
  ASSERT_TRUE(model->gguf.has_value());
  EXPECT_EQ(model->gguf->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(model->spec.find("blk.0.attn_q.weight")->type, DType::kQ8_0);
}

TEST(LoadModel, FolderIsAnHfCheckpoint) {
  const std::string dir = testing::testdata_path("models/tiny-llama/hf");
  STRATA_REQUIRE_TESTDATA(dir);
  auto model = load_model(dir);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  EXPECT_EQ(model->spec.format, SourceFormat::kSafetensors);
  EXPECT_EQ(model->spec.hp.rope_style, RopeStyle::kNeoxHalves);
  EXPECT_FALSE(model->gguf.has_value());
}

// The spec's spans point into mappings that the spec itself keeps alive: moving the loaded
// model (and dropping everything else) leaves them readable.
TEST(LoadModel, TensorDataOutlivesMoves) {
  const std::string path = testing::testdata_path("models/tiny-llama/tiny-llama-F32.gguf");
  STRATA_REQUIRE_TESTDATA(path);
  std::vector<LoadedModel> models;
  {
    auto model = load_model(path);
    ASSERT_TRUE(model.is_ok()) << model.status().to_string();
    models.push_back(std::move(model).value());
  }
  models.emplace_back(std::move(models[0]));
  const TensorSpec* norm = models.back().spec.find("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  float first = 0;
  std::memcpy(&first, norm->data.data(), 4);
  EXPECT_TRUE(std::isfinite(first));
  EXPECT_EQ(models.back().gguf->find_tensor("output_norm.weight")->data.data(), norm->data.data());
}

TEST(LoadModel, MissingPathIsNotFound) {
  auto model = load_model("/nonexistent/strata/model.gguf");
  ASSERT_FALSE(model.is_ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(model.status().message(), "/nonexistent/strata/model.gguf");
}

TEST(LoadModel, FileWithoutGgufMagicIsAnError) {
  TempFolder folder("not_gguf");
  for (const std::string& content :
       {std::string("hello world, not a model"), std::string("GG"), std::string()}) {
    const std::string path = folder.file("model.bin");
    testing::write_text(path, content);
    auto model = load_model(path);
    ASSERT_FALSE(model.is_ok()) << content;
    EXPECT_EQ(model.status().code(), StatusCode::kInvalidData);
    EXPECT_CONTAINS(model.status().message(), path);
    EXPECT_CONTAINS(model.status().message(), "not a GGUF file");
  }
}

TEST(LoadModel, SafetensorsFilePointsToItsFolder) {
  const std::string path = testing::testdata_path("models/tiny-llama/hf/model.safetensors");
  STRATA_REQUIRE_TESTDATA(path);
  auto model = load_model(path);
  ASSERT_FALSE(model.is_ok());
  EXPECT_CONTAINS(model.status().message(), path);
  EXPECT_CONTAINS(model.status().message(), "pass the folder");
}

TEST(LoadModel, BrokenGgufIsNamed) {
  TempFolder folder("broken");
  const std::string path = folder.file("broken.gguf");
  testing::write_text(path, std::string("GGUF\x03\x00\x00\x00", 8) + "trunc");
  auto model = load_model(path);
  ASSERT_FALSE(model.is_ok());
  EXPECT_EQ(model.status().code(), StatusCode::kInvalidData);
  EXPECT_CONTAINS(model.status().message(), path);
  EXPECT_CONTAINS(model.status().message(), "truncated");
}

TEST(LoadModel, BrokenFolderIsNamed) {
  TempFolder folder("empty");
  auto model = load_model(folder.path());
  ASSERT_FALSE(model.is_ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(model.status().message(), folder.file("config.json"));
}

}  // namespace
}  // namespace strata
