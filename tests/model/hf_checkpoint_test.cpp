// HF checkpoint folder -> ModelSpec: the golden tiny-llama folder, toy folders for the cases
// it does not cover (qwen2 biases, tied heads, shards, transformers-4 configs), and one clear
// error naming the file for each kind of bad folder.
#include "offload/model/hf_checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "offload/formats/gguf_file.h"
#include "offload/formats/safetensors_file.h"
#include "tests/model/hf_folder_builder.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

using testing::StTensor;
using testing::TempFolder;
using testing::ToyDims;

std::vector<StTensor> without(std::vector<StTensor> tensors, const std::string& name) {
  std::erase_if(tensors, [&](const StTensor& t) { return t.name == name; });
  return tensors;
}

StTensor* find(std::vector<StTensor>& tensors, const std::string& name) {
  for (StTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// Loads a toy folder that must fail; checks code and that the message names `names` and
// contains `phrase`.
void expect_folder_error(const std::string& dir, StatusCode code, const std::string& names,
                         const std::string& phrase) {
  auto spec = model_spec_from_hf_folder(dir);
  ASSERT_FALSE(spec.is_ok()) << "accepted " << dir;
  EXPECT_EQ(spec.status().code(), code) << spec.status().to_string();
  EXPECT_CONTAINS(spec.status().message(), names);
  EXPECT_CONTAINS(spec.status().message(), phrase);
}

TEST(HfTensorNames, MapToLlamaCppNames) {
  const std::pair<const char*, const char*> cases[] = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
      {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
      {"model.layers.12.self_attn.q_proj.weight", "blk.12.attn_q.weight"},
      {"model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight"},
      {"model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"},
      {"model.layers.3.self_attn.q_proj.bias", "blk.3.attn_q.bias"},
      {"model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"},
      {"model.layers.3.self_attn.v_proj.bias", "blk.3.attn_v.bias"},
      {"model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"},
      {"model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight"},
      {"model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight"},
      {"model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight"},
      {"model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"},
  };
  for (const auto& [hf, gguf] : cases) EXPECT_EQ(hf_to_gguf_tensor_name(hf), gguf) << hf;
}

TEST(HfTensorNames, RejectsNamesOutsideTheModel) {
  for (const char* name :
       {"model.layers.01.mlp.up_proj.weight", "model.layers.x.mlp.up_proj.weight",
        "model.layers..mlp.up_proj.weight", "model.layers.3", "model.layers.3.",
        "model.layers.3.self_attn.o_proj.bias", "model.layers.-1.mlp.up_proj.weight",
        "model.layers.1234567890.mlp.up_proj.weight", "lm_head.bias", "score.weight", ""}) {
    EXPECT_EQ(hf_to_gguf_tensor_name(name), std::nullopt) << name;
  }
}

TEST(HfCheckpoint, ReadsTinyLlamaFolder) {
  const std::string dir = testing::testdata_path("models/tiny-llama/hf");
  STRATA_REQUIRE_TESTDATA(dir);
  auto spec = model_spec_from_hf_folder(dir);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->format, SourceFormat::kSafetensors);
  EXPECT_EQ(spec->arch, Arch::kLlama);
  const HyperParams& hp = spec->hp;
  EXPECT_EQ(hp.n_vocab, 32000);
  EXPECT_EQ(hp.n_embd, 32);
  EXPECT_EQ(hp.n_layer, 3);
  EXPECT_EQ(hp.n_head, 4);
  EXPECT_EQ(hp.n_head_kv, 2);
  EXPECT_EQ(hp.head_dim, 8);
  EXPECT_EQ(hp.rope_dims, 8);
  EXPECT_EQ(hp.n_ff, 512);
  EXPECT_EQ(hp.n_ctx_train, 512);
  EXPECT_EQ(hp.rope_theta, 10000.0);  // from rope_parameters (transformers 5)
  EXPECT_EQ(hp.rms_eps, 1e-5);
  EXPECT_EQ(hp.rope_style, RopeStyle::kNeoxHalves);  // HF Q/K are not permuted
  EXPECT_FALSE(hp.tied_embeddings);
  EXPECT_FALSE(hp.qkv_bias);
  EXPECT_EQ(spec->tensors.size(), 30u);

  // Zero-copy: each tensor is the shard's bytes, in ggml order.
  auto st = SafetensorsFile::open(dir + "/model.safetensors");
  ASSERT_TRUE(st.is_ok()) << st.status().to_string();
  const TensorSpec* q = spec->find("blk.1.attn_q.weight");
  const SafetensorsTensorInfo* hf_q = st->find_tensor("model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  ASSERT_NE(hf_q, nullptr);
  EXPECT_EQ(q->type, DType::kBF16);
  EXPECT_EQ(q->ne, (std::vector<int64_t>{32, 32}));
  ASSERT_EQ(q->data.size(), hf_q->data.size());
  EXPECT_EQ(std::memcmp(q->data.data(), hf_q->data.data(), q->data.size()), 0);
  const TensorSpec* head = spec->find("output.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->ne, (std::vector<int64_t>{32, 32000}));
  EXPECT_EQ(spec->find("blk.2.ffn_down.weight")->ne, (std::vector<int64_t>{512, 32}));
}

TEST(HfCheckpoint, ShardedFolderGivesTheSameSpec) {
  const std::string dir = testing::testdata_path("models/tiny-llama/hf");
  STRATA_REQUIRE_TESTDATA(dir);
  auto single = model_spec_from_hf_folder(dir);
  ASSERT_TRUE(single.is_ok()) << single.status().to_string();
  auto st = SafetensorsFile::open(dir + "/model.safetensors");
  ASSERT_TRUE(st.is_ok());
  std::vector<StTensor> tensors;
  for (const auto& t : st->tensors()) {
    tensors.push_back({t.name, "BF16", t.shape, {t.data.begin(), t.data.end()}});
  }
  TempFolder folder("sharded");
  auto config = testing::read_text_file_for_test(dir + "/config.json");
  testing::write_sharded_hf_folder(folder, nlohmann::json::parse(config), tensors, 3);
  auto sharded = model_spec_from_hf_folder(folder.path());
  ASSERT_TRUE(sharded.is_ok()) << sharded.status().to_string();
  EXPECT_EQ(sharded->storage.size(), 3u);
  ASSERT_EQ(sharded->tensors.size(), single->tensors.size());
  for (const TensorSpec& t : single->tensors) {
    const TensorSpec* s = sharded->find(t.name);
    ASSERT_NE(s, nullptr) << t.name;
    EXPECT_EQ(s->ne, t.ne) << t.name;
    EXPECT_EQ(s->type, t.type) << t.name;
    ASSERT_EQ(s->data.size(), t.data.size());
    EXPECT_EQ(std::memcmp(s->data.data(), t.data.data(), t.data.size()), 0) << t.name;
  }
}

// tiny-qwen2 has no HF folder: write one from its F16 GGUF (qwen2 is not permuted, so the bytes
// carry over as they are) and check the two specs agree.
TEST(HfCheckpoint, Qwen2FolderMatchesTheGgufItWasWrittenFrom) {
  const std::string path = testing::testdata_path("models/tiny-qwen2/tiny-qwen2-F16.gguf");
  STRATA_REQUIRE_TESTDATA(path);
  auto gguf = GgufFile::open(path);
  ASSERT_TRUE(gguf.is_ok()) << gguf.status().to_string();
  auto gguf_spec = model_spec_from_gguf(*gguf);
  ASSERT_TRUE(gguf_spec.is_ok()) << gguf_spec.status().to_string();

  // Reverse name map from the toy checkpoint's names.
  ToyDims d;
  d.layers = gguf_spec->hp.n_layer;
  std::map<std::string, std::string> hf_of;
  for (const StTensor& t : testing::toy_tensors(d, /*with_bias=*/true, /*with_head=*/false)) {
    hf_of[*hf_to_gguf_tensor_name(t.name)] = t.name;
  }
  std::vector<StTensor> tensors;
  for (const TensorSpec& t : gguf_spec->tensors) {
    ASSERT_EQ(hf_of.count(t.name), 1u) << t.name;
    tensors.push_back({hf_of[t.name],
                       dtype_name(t.type),
                       {t.ne.rbegin(), t.ne.rend()},
                       {t.data.begin(), t.data.end()}});
  }
  const HyperParams& hp = gguf_spec->hp;
  nlohmann::json config = {{"architectures", {"Qwen2ForCausalLM"}},
                           {"model_type", "qwen2"},
                           {"hidden_size", hp.n_embd},
                           {"intermediate_size", hp.n_ff},
                           {"num_hidden_layers", hp.n_layer},
                           {"num_attention_heads", hp.n_head},
                           {"num_key_value_heads", hp.n_head_kv},
                           {"max_position_embeddings", hp.n_ctx_train},
                           {"rms_norm_eps", 1e-6},
                           {"rope_parameters", {{"rope_theta", 1e6}, {"rope_type", "default"}}},
                           {"tie_word_embeddings", true},
                           {"vocab_size", hp.n_vocab},
                           {"use_sliding_window", false},
                           {"sliding_window", nullptr},
                           {"hidden_act", "silu"}};
  TempFolder folder("qwen2");
  testing::write_hf_folder(folder, config, tensors);

  auto spec = model_spec_from_hf_folder(folder.path());
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->arch, Arch::kQwen2);
  EXPECT_TRUE(spec->hp.qkv_bias);
  EXPECT_TRUE(spec->hp.tied_embeddings);
  EXPECT_EQ(spec->hp.rope_style, RopeStyle::kNeoxHalves);
  EXPECT_EQ(spec->hp.head_dim, 8);  // hidden / heads: no head_dim in this config
  EXPECT_EQ(spec->hp.n_ctx_train, 512);
  EXPECT_EQ(spec->hp.rope_theta, 1e6);
  EXPECT_EQ(spec->find("output.weight"), nullptr);
  ASSERT_EQ(spec->tensors.size(), gguf_spec->tensors.size());
  for (const TensorSpec& t : gguf_spec->tensors) {
    const TensorSpec* s = spec->find(t.name);
    ASSERT_NE(s, nullptr) << t.name;
    EXPECT_EQ(s->ne, t.ne) << t.name;
    EXPECT_EQ(s->type, t.type) << t.name;
    EXPECT_EQ(std::memcmp(s->data.data(), t.data.data(), t.data.size()), 0) << t.name;
  }
}

TEST(HfCheckpoint, ReadsTransformers4ConfigWithDefaults) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "llama");
  config.erase("rope_parameters");
  config.erase("head_dim");                 // default hidden / heads = 4
  config.erase("rms_norm_eps");             // default 1e-6
  config.erase("tie_word_embeddings");      // default false
  config.erase("max_position_embeddings");  // llama default 2048
  config["rope_theta"] = 123456.0;
  config["rope_scaling"] = nullptr;
  config["num_key_value_heads"] = nullptr;  // default: heads
  d.kv_heads = d.heads;
  TempFolder folder("v4");
  testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
  auto spec = model_spec_from_hf_folder(folder.path());
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->hp.rope_theta, 123456.0);
  EXPECT_EQ(spec->hp.head_dim, 4);
  EXPECT_EQ(spec->hp.n_head_kv, 2);
  EXPECT_EQ(spec->hp.rms_eps, 1e-6);
  EXPECT_EQ(spec->hp.n_ctx_train, 2048);
  EXPECT_FALSE(spec->hp.tied_embeddings);
}

TEST(HfCheckpoint, ReadsMistralAsLlamaWithItsWindowCappingTheContext) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "mistral");
  config["sliding_window"] = 64;
  TempFolder folder("mistral");
  testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
  auto spec = model_spec_from_hf_folder(folder.path());
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->arch, Arch::kLlama);
  EXPECT_EQ(spec->hp.n_ctx_train, 64);
  EXPECT_EQ(spec->hp.rope_theta, 500000.0);
}

TEST(HfCheckpoint, TiedHeadIdenticalToEmbeddingsIsDropped) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "llama");
  config["tie_word_embeddings"] = true;
  std::vector<StTensor> tensors = testing::toy_tensors(d, false, true);
  find(tensors, "lm_head.weight")->bytes = find(tensors, "model.embed_tokens.weight")->bytes;
  TempFolder folder("tied");
  testing::write_hf_folder(folder, config, tensors);
  auto spec = model_spec_from_hf_folder(folder.path());
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_TRUE(spec->hp.tied_embeddings);
  EXPECT_EQ(spec->find("output.weight"), nullptr);
}

TEST(HfCheckpoint, TiedHeadDifferentFromEmbeddingsIsAnError) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "llama");
  config["tie_word_embeddings"] = true;
  TempFolder folder("tied_diff");
  testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("model.safetensors"),
                      "lm_head.weight differs from model.embed_tokens.weight");
}

TEST(HfCheckpoint, SkipsStoredRopeInverseFrequencies) {
  ToyDims d;
  std::vector<StTensor> tensors = testing::toy_tensors(d, false, true);
  tensors.push_back(
      {"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {2}, std::vector<uint8_t>(8, 0)});
  TempFolder folder("inv_freq");
  testing::write_hf_folder(folder, testing::toy_config(d, "llama"), tensors);
  auto spec = model_spec_from_hf_folder(folder.path());
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
}

// ---- errors ---------------------------------------------------------------------------------

TEST(HfCheckpointErrors, NotAFolder) {
  expect_folder_error("/nonexistent/strata/folder", StatusCode::kNotFound,
                      "/nonexistent/strata/folder", "not a folder");
}

TEST(HfCheckpointErrors, MissingConfigJson) {
  ToyDims d;
  TempFolder folder("no_config");
  testing::write_bytes(folder.file("model.safetensors"),
                       testing::safetensors_bytes(testing::toy_tensors(d, false, true)));
  expect_folder_error(folder.path(), StatusCode::kNotFound, folder.file("config.json"), "missing");
}

TEST(HfCheckpointErrors, ConfigThatIsNotJson) {
  TempFolder folder("bad_config");
  testing::write_text(folder.file("config.json"), "{\"model_type\": \"llama\",");
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("config.json"),
                      "not valid JSON");
}

TEST(HfCheckpointErrors, ConfigNestedTooDeeply) {
  TempFolder folder("deep_config");
  testing::write_text(folder.file("config.json"), "{\"model_type\": " + std::string(100000, '[') +
                                                      std::string(100000, ']') + "}");
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("config.json"),
                      "nests deeper than 64 levels");
}

TEST(HfCheckpointErrors, UnsupportedModelType) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "llama");
  config["model_type"] = "gpt2";
  config.erase("architectures");
  TempFolder folder("gpt2");
  testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
  expect_folder_error(folder.path(), StatusCode::kUnsupported, folder.file("config.json"),
                      "model_type 'gpt2' is not supported");
}

TEST(HfCheckpointErrors, UnsupportedArchitectureClass) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "llama");
  config["architectures"] = {"LlamaForSequenceClassification"};
  TempFolder folder("cls");
  testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
  expect_folder_error(folder.path(), StatusCode::kUnsupported, folder.file("config.json"),
                      "LlamaForSequenceClassification");
}

TEST(HfCheckpointErrors, MissingRequiredConfigKey) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "llama");
  config.erase("hidden_size");
  TempFolder folder("no_hidden");
  testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("config.json"),
                      "missing hidden_size");
}

TEST(HfCheckpointErrors, BadConfigValues) {
  ToyDims d;
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"num_attention_heads", 0},
                                                           {"num_hidden_layers", -2},
                                                           {"hidden_size", 8.5},
                                                           {"intermediate_size", "16"},
                                                           {"rms_norm_eps", "small"},
                                                           {"tie_word_embeddings", 1}}) {
    SCOPED_TRACE(key);
    nlohmann::json config = testing::toy_config(d, "llama");
    config[key] = value;
    TempFolder folder("bad_value");
    testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
    expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("config.json"), key);
  }
}

TEST(HfCheckpointErrors, UnsupportedRopeScaling) {
  ToyDims d;
  nlohmann::json v5 = testing::toy_config(d, "llama");
  v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 5e5}, {"factor", 8.0}};
  TempFolder folder5("rope5");
  testing::write_hf_folder(folder5, v5, testing::toy_tensors(d, false, true));
  expect_folder_error(folder5.path(), StatusCode::kUnsupported, folder5.file("config.json"),
                      "rope_type 'llama3' is not supported");

  nlohmann::json v4 = testing::toy_config(d, "llama");
  v4.erase("rope_parameters");
  v4["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  TempFolder folder4("rope4");
  testing::write_hf_folder(folder4, v4, testing::toy_tensors(d, false, true));
  expect_folder_error(folder4.path(), StatusCode::kUnsupported, folder4.file("config.json"),
                      "rope_scaling rope_type 'linear' is not supported");
}

TEST(HfCheckpointErrors, QuantizedCheckpointIsUnsupported) {
  ToyDims d;
  nlohmann::json config = testing::toy_config(d, "llama");
  config["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}};
  TempFolder folder("gptq");
  testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
  expect_folder_error(folder.path(), StatusCode::kUnsupported, folder.file("config.json"),
                      "quant_method 'gptq'");
}

TEST(HfCheckpointErrors, LlamaBiasesAreUnsupported) {
  ToyDims d;
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    nlohmann::json config = testing::toy_config(d, "llama");
    config[key] = true;
    TempFolder folder(key);
    testing::write_hf_folder(folder, config, testing::toy_tensors(d, false, true));
    expect_folder_error(folder.path(), StatusCode::kUnsupported, folder.file("config.json"), key);
  }
}

TEST(HfCheckpointErrors, NoWeights) {
  ToyDims d;
  TempFolder folder("no_weights");
  testing::write_text(folder.file("config.json"), testing::toy_config(d, "llama").dump());
  testing::write_text(folder.file("pytorch_model.bin"), "x");
  expect_folder_error(folder.path(), StatusCode::kNotFound, folder.path(),
                      "no model.safetensors or model.safetensors.index.json");
}

TEST(HfCheckpointErrors, MissingTensorIsNamedTheHfWay) {
  ToyDims d;
  TempFolder folder("missing");
  testing::write_hf_folder(
      folder, testing::toy_config(d, "llama"),
      without(testing::toy_tensors(d, false, true), "model.layers.1.mlp.up_proj.weight"));
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.path(),
                      "missing tensor 'model.layers.1.mlp.up_proj.weight' (blk.1.ffn_up.weight)");
}

TEST(HfCheckpointErrors, MissingHeadWhenUntied) {
  ToyDims d;
  TempFolder folder("no_head");
  testing::write_hf_folder(folder, testing::toy_config(d, "llama"),
                           testing::toy_tensors(d, false, /*with_head=*/false));
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.path(),
                      "missing tensor 'lm_head.weight'");
}

TEST(HfCheckpointErrors, Qwen2WithoutBiases) {
  ToyDims d;
  TempFolder folder("qwen_no_bias");
  testing::write_hf_folder(folder, testing::toy_config(d, "qwen2"),
                           testing::toy_tensors(d, /*with_bias=*/false, false));
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.path(),
                      "missing tensor 'model.layers.0.self_attn.q_proj.bias'");
}

TEST(HfCheckpointErrors, WrongShapeIsNamedTheHfWay) {
  ToyDims d;
  std::vector<StTensor> tensors = testing::toy_tensors(d, false, true);
  StTensor* k = find(tensors, "model.layers.0.self_attn.k_proj.weight");
  k->shape = {8, 8};  // should be [kv_heads * head_dim = 4, 8]
  k->bytes = testing::random_bf16(64, 99);
  TempFolder folder("shape");
  testing::write_hf_folder(folder, testing::toy_config(d, "llama"), tensors);
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("model.safetensors"),
                      "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [8, 8], "
                      "expected [4, 8] from config.json");
}

TEST(HfCheckpointErrors, UnexpectedTensor) {
  ToyDims d;
  for (const char* name :
       {"model.layers.0.self_attn.o_proj.bias", "model.layers.7.mlp.up_proj.weight"}) {
    std::vector<StTensor> tensors = testing::toy_tensors(d, false, true);
    tensors.push_back({name, "BF16", {8}, testing::random_bf16(8, 5)});
    TempFolder folder("unexpected");
    testing::write_hf_folder(folder, testing::toy_config(d, "llama"), tensors);
    expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("model.safetensors"),
                        std::string("unexpected tensor '") + name + "'");
  }
}

TEST(HfCheckpointErrors, UnsupportedDtypeInShard) {
  ToyDims d;
  std::vector<StTensor> tensors = testing::toy_tensors(d, false, true);
  StTensor* norm = find(tensors, "model.norm.weight");
  norm->dtype = "I16";
  TempFolder folder("i16");
  testing::write_hf_folder(folder, testing::toy_config(d, "llama"), tensors);
  expect_folder_error(folder.path(), StatusCode::kUnsupported, folder.file("model.safetensors"),
                      "dtype I16");
}

TEST(HfCheckpointErrors, BadSafetensorsFileIsNamed) {
  ToyDims d;
  TempFolder folder("bad_st");
  testing::write_text(folder.file("config.json"), testing::toy_config(d, "llama").dump());
  testing::write_text(folder.file("model.safetensors"), "not a safetensors file");
  expect_folder_error(folder.path(), StatusCode::kInvalidData, folder.file("model.safetensors"),
                      "header length");
}

TEST(HfCheckpointErrors, IndexNamesMissingShard) {
  ToyDims d;
  TempFolder folder("missing_shard");
  testing::write_sharded_hf_folder(folder, testing::toy_config(d, "llama"),
                                   testing::toy_tensors(d, false, true), 2);
  std::filesystem::remove(folder.file("model-00002-of-00002.safetensors"));
  expect_folder_error(folder.path(), StatusCode::kNotFound,
                      folder.file("model-00002-of-00002.safetensors"), "missing");
}

TEST(HfCheckpointErrors, IndexListsTensorTheShardLacks) {
  ToyDims d;
  TempFolder folder("index_lies");
  std::vector<StTensor> tensors = testing::toy_tensors(d, false, true);
  testing::write_sharded_hf_folder(folder, testing::toy_config(d, "llama"), tensors, 2);
  nlohmann::json index = nlohmann::json::parse(
      testing::read_text_file_for_test(folder.file("model.safetensors.index.json")));
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  index["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors";
  testing::write_text(folder.file("model.safetensors.index.json"), index.dump());
  expect_folder_error(folder.path(), StatusCode::kInvalidData,
                      folder.file("model.safetensors.index.json"), "which does not hold it");
}

TEST(HfCheckpointErrors, ShardOutsideTheFolder) {
  ToyDims d;
  TempFolder folder("escape");
  testing::write_text(folder.file("config.json"), testing::toy_config(d, "llama").dump());
  testing::write_text(folder.file("model.safetensors.index.json"),
                      R"({"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}})");
  expect_folder_error(folder.path(), StatusCode::kInvalidData,
                      folder.file("model.safetensors.index.json"),
                      "must be a file inside the checkpoint folder");
}

TEST(HfCheckpointErrors, TensorInTwoShards) {
  ToyDims d;
  TempFolder folder("twice");
  std::vector<StTensor> tensors = testing::toy_tensors(d, false, true);
  testing::write_sharded_hf_folder(folder, testing::toy_config(d, "llama"), tensors, 2);
  // Rewrite shard 2 with a copy of a tensor that shard 1 holds.
  std::vector<StTensor> second;
  for (size_t i = 1; i < tensors.size(); i += 2) second.push_back(tensors[i]);
  second.push_back(tensors[0]);
  testing::write_bytes(folder.file("model-00002-of-00002.safetensors"),
                       testing::safetensors_bytes(second));
  expect_folder_error(folder.path(), StatusCode::kInvalidData, tensors[0].name, "appears in both");
}

}  // namespace
}  // namespace strata
