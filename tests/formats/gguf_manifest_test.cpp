// Every GGUF file of the golden models against its manifest.json (README "What a test should
// assert", item 1): tensor names, types and ne; data offsets on the alignment (64 in the BF16
// file, 32 elsewhere); the metadata the manifest and README describe; and the ModelSpec
// hyper-parameters against the manifest's `config`.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "offload/formats/gguf_file.h"
#include "offload/formats/mapped_file.h"
#include "offload/model/model_spec.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using Json = nlohmann::json;

class GgufManifestTest : public ::testing::TestWithParam<std::string> {
 protected:
  // The manifest of model folder GetParam() ("tiny-llama"), or a skip when the data is absent.
  void SetUp() override {
    dir_ = testing::testdata_path("models/" + GetParam());
    const std::string manifest_path = dir_ + "/manifest.json";
    if (!std::filesystem::exists(manifest_path)) {
      GTEST_SKIP() << "golden data missing: looked for " << manifest_path;
    }
    auto text = read_text_file(manifest_path);
    ASSERT_TRUE(text.is_ok()) << text.status().to_string();
    manifest_ = Json::parse(*text);
    for (const Json& f : manifest_["files"]) {
      if (f["format"] != "gguf") continue;
      // A partial copy of the data (the GPU machine's bundle) skips rather than fails.
      STRATA_REQUIRE_TESTDATA(dir_ + "/" + f["file"].get<std::string>());
      gguf_entries_.push_back(f);
    }
    ASSERT_FALSE(gguf_entries_.empty()) << "manifest lists no GGUF file";
  }

  std::string dir_;
  Json manifest_;
  std::vector<Json> gguf_entries_;
};

TEST_P(GgufManifestTest, EveryTensorMatchesManifest) {
  for (const Json& entry : gguf_entries_) {
    const std::string file = entry["file"];
    SCOPED_TRACE(file);
    auto f = GgufFile::open(dir_ + "/" + file);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    EXPECT_EQ(f->file_size_bytes(), entry["bytes"].get<uint64_t>());
    const Json& tensors = entry["tensors"];
    ASSERT_EQ(f->tensors().size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const std::string name = tensors[i]["name"];
      const GgufTensorInfo* t = f->find_tensor(name);
      ASSERT_NE(t, nullptr) << name;
      EXPECT_EQ(f->tensors()[i].name, name) << "file order";
      EXPECT_STREQ(dtype_name(t->type), tensors[i]["type"].get<std::string>().c_str()) << name;
      EXPECT_EQ(t->ne, tensors[i]["ne"].get<std::vector<int64_t>>()) << name;
      EXPECT_EQ(t->size_bytes, static_cast<uint64_t>(t->num_rows() * row_bytes(t->type, t->ne[0])));
    }
    // The per-type counts agree with the list (a second reading of the same manifest).
    std::map<std::string, int> counts;
    for (const GgufTensorInfo& t : f->tensors()) ++counts[dtype_name(t.type)];
    using Counts = std::map<std::string, int>;
    EXPECT_EQ(counts, entry["tensor_type_counts"].get<Counts>());
  }
}

TEST_P(GgufManifestTest, DataOffsetsHonourAlignment) {
  for (const Json& entry : gguf_entries_) {
    const std::string file = entry["file"];
    SCOPED_TRACE(file);
    auto f = GgufFile::open(dir_ + "/" + file);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    const uint64_t alignment = entry["alignment"];
    EXPECT_EQ(alignment, file.find("BF16") != std::string::npos ? 64u : 32u);
    EXPECT_EQ(f->alignment(), alignment);
    EXPECT_EQ(f->data_offset() % alignment, 0u);
    for (const GgufTensorInfo& t : f->tensors()) {
      EXPECT_EQ(t.offset % alignment, 0u) << t.name;
      EXPECT_EQ((f->data_offset() + t.offset) % alignment, 0u) << t.name;
    }
    // general.alignment is written only when it differs from the default.
    if (alignment != GgufFile::kDefaultAlignment) {
      const GgufValue* v = f->find("general.alignment");
      ASSERT_NE(v, nullptr);
      EXPECT_EQ(v->type(), GgufType::kUint32);
      EXPECT_EQ(v->to_int(), static_cast<int64_t>(alignment));
    }
  }
}

TEST_P(GgufManifestTest, MetadataMatchesManifest) {
  const std::string arch = manifest_["arch"];
  const Json& config = manifest_["config"];
  const Json& vocab = manifest_["vocab"];
  for (const Json& entry : gguf_entries_) {
    const std::string file = entry["file"];
    SCOPED_TRACE(file);
    auto f = GgufFile::open(dir_ + "/" + file);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    EXPECT_EQ(f->version(), 3u);
    EXPECT_EQ(f->get_string("general.architecture"), arch);
    EXPECT_EQ(f->get_int("general.file_type"), entry["general_file_type"].get<int64_t>());
    EXPECT_EQ(f->get_int("general.quantization_version"), 2);
    EXPECT_TRUE(f->get_string("general.name").has_value());
    EXPECT_TRUE(f->get_string("general.type").has_value());

    EXPECT_EQ(f->get_int(arch + ".block_count"), config["n_layer"].get<int64_t>());
    EXPECT_EQ(f->get_int(arch + ".context_length"), config["context_length"].get<int64_t>());
    EXPECT_EQ(f->get_int(arch + ".embedding_length"), config["n_embd"].get<int64_t>());
    EXPECT_EQ(f->get_int(arch + ".feed_forward_length"), config["n_ff"].get<int64_t>());
    EXPECT_EQ(f->get_int(arch + ".attention.head_count"), config["n_head"].get<int64_t>());
    EXPECT_EQ(f->get_int(arch + ".attention.head_count_kv"), config["n_head_kv"].get<int64_t>());
    // Floats are stored as float32, as the converter writes them.
    const GgufValue* theta = f->find(arch + ".rope.freq_base");
    ASSERT_NE(theta, nullptr);
    EXPECT_EQ(theta->type(), GgufType::kFloat32);
    EXPECT_EQ(theta->to_float(), static_cast<double>(config["rope_theta"].get<float>()));
    const GgufValue* eps = f->find(arch + ".attention.layer_norm_rms_epsilon");
    ASSERT_NE(eps, nullptr);
    EXPECT_EQ(eps->type(), GgufType::kFloat32);
    EXPECT_EQ(eps->to_float(), static_cast<double>(config["rms_norm_eps"].get<float>()));
    if (arch == "llama") {
      EXPECT_EQ(f->get_int("llama.attention.key_length"), config["head_dim"].get<int64_t>());
      EXPECT_EQ(f->get_int("llama.attention.value_length"), config["head_dim"].get<int64_t>());
      EXPECT_EQ(f->get_int("llama.vocab_size"), config["n_vocab"].get<int64_t>());
      EXPECT_EQ(f->get_int("llama.rope.dimension_count"), config["head_dim"].get<int64_t>());
    } else {
      // The converter writes none of these for qwen2 (README "Metadata").
      EXPECT_EQ(f->find(arch + ".vocab_size"), nullptr);
      EXPECT_EQ(f->find(arch + ".rope.dimension_count"), nullptr);
    }

    EXPECT_EQ(f->get_string("tokenizer.ggml.model"), vocab["tokenizer_model"].get<std::string>());
    EXPECT_EQ(f->get_string("tokenizer.ggml.pre"), vocab["tokenizer_pre"].get<std::string>());
    EXPECT_EQ(f->get_int("tokenizer.ggml.bos_token_id"), vocab["bos_token_id"].get<int64_t>());
    EXPECT_EQ(f->get_int("tokenizer.ggml.eos_token_id"), vocab["eos_token_id"].get<int64_t>());
    const GgufValue* tokens = f->find("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    ASSERT_NE(tokens->strings(), nullptr);
    EXPECT_EQ(tokens->array_size(), vocab["n_vocab"].get<size_t>());
    // The prompt ids the manifest gives are tokens of this vocabulary, BOS first.
    const std::vector<int64_t> ids = manifest_["prompt"]["ids"];
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], vocab["bos_token_id"].get<int64_t>());
    for (int64_t id : ids) EXPECT_LT(id, static_cast<int64_t>(tokens->array_size()));
  }
}

TEST_P(GgufManifestTest, HyperParamsMatchManifestConfig) {
  const Json& config = manifest_["config"];
  for (const Json& entry : gguf_entries_) {
    const std::string file = entry["file"];
    SCOPED_TRACE(file);
    auto f = GgufFile::open(dir_ + "/" + file);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    auto spec = model_spec_from_gguf(*f);
    ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
    const HyperParams& hp = spec->hp;
    EXPECT_STREQ(arch_name(spec->arch), manifest_["arch"].get<std::string>().c_str());
    EXPECT_EQ(spec->format, SourceFormat::kGguf);
    EXPECT_EQ(hp.n_vocab, config["n_vocab"].get<int64_t>());
    EXPECT_EQ(hp.n_embd, config["n_embd"].get<int64_t>());
    EXPECT_EQ(hp.n_layer, config["n_layer"].get<int64_t>());
    EXPECT_EQ(hp.n_head, config["n_head"].get<int64_t>());
    EXPECT_EQ(hp.n_head_kv, config["n_head_kv"].get<int64_t>());
    EXPECT_EQ(hp.head_dim, config["head_dim"].get<int64_t>());
    EXPECT_EQ(hp.rope_dims, config["head_dim"].get<int64_t>());
    EXPECT_EQ(hp.n_ff, config["n_ff"].get<int64_t>());
    EXPECT_EQ(hp.n_ctx_train, config["context_length"].get<int64_t>());
    EXPECT_EQ(static_cast<float>(hp.rope_theta), config["rope_theta"].get<float>());
    EXPECT_EQ(static_cast<float>(hp.rms_eps), config["rms_norm_eps"].get<float>());
    EXPECT_EQ(hp.tied_embeddings, config["tied_embeddings"].get<bool>());
    EXPECT_EQ(hp.qkv_bias, config["qkv_bias"].get<bool>());
    // "NORM (adjacent pairs; ...)" for llama, "NEOX (halves; ...)" for qwen2.
    const std::string rope = config["rope"];
    EXPECT_EQ(hp.rope_style,
              rope.starts_with("NEOX") ? RopeStyle::kNeoxHalves : RopeStyle::kAdjacentPairs);
    EXPECT_EQ(spec->tensors.size(), entry["tensors"].size());
    EXPECT_EQ(spec->find("output.weight") == nullptr, hp.tied_embeddings);
  }
}

INSTANTIATE_TEST_SUITE_P(GoldenModels, GgufManifestTest,
                         ::testing::Values("tiny-llama", "tiny-qwen2"), [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

}  // namespace
}  // namespace strata
