// Test helper: writes small HF checkpoint folders (config.json + safetensors, single or
// sharded) into a temp folder, so that hf_checkpoint tests can build exactly the bad input
// they need. Header-only; used by tests/model only.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "offload/core/dtype.h"
#include "tests/testing/expect_contains.h"

namespace strata::testing {

struct StTensor {
  std::string name;
  std::string dtype;           // "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;  // torch order ([out, in])
  std::vector<uint8_t> bytes;  // numel * element size
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline std::string read_text_file_for_test(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// Safetensors bytes: tensors laid out in the given order, header padded with spaces to 8.
inline std::vector<uint8_t> safetensors_bytes(const std::vector<StTensor>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const StTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::vector<uint8_t> out(8);
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), text.begin(), text.end());
  for (const StTensor& t : tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

// Random bf16 values (exact in float32), `seed` chosen by the caller.
inline std::vector<uint8_t> random_bf16(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<uint8_t> out(static_cast<size_t>(n) * 2);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t b = f32_to_bf16(dist(rng));
    std::memcpy(out.data() + 2 * i, &b, 2);
  }
  return out;
}

// Dimensions of a toy checkpoint.
struct ToyDims {
  int64_t vocab = 10, embd = 8, layers = 2, heads = 2, kv_heads = 1, head_dim = 4, ff = 16;
};

// The tensors of a toy LlamaForCausalLM (with_bias: Qwen2's q/k/v biases; with_head: lm_head).
inline std::vector<StTensor> toy_tensors(const ToyDims& d, bool with_bias, bool with_head) {
  std::vector<StTensor> out;
  uint32_t seed = 1;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    out.push_back({std::move(name), "BF16", shape, random_bf16(n, seed++)});
  };
  add("model.embed_tokens.weight", {d.vocab, d.embd});
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {d.embd});
    add(p + "self_attn.q_proj.weight", {d.heads * d.head_dim, d.embd});
    add(p + "self_attn.k_proj.weight", {d.kv_heads * d.head_dim, d.embd});
    add(p + "self_attn.v_proj.weight", {d.kv_heads * d.head_dim, d.embd});
    if (with_bias) {
      add(p + "self_attn.q_proj.bias", {d.heads * d.head_dim});
      add(p + "self_attn.k_proj.bias", {d.kv_heads * d.head_dim});
      add(p + "self_attn.v_proj.bias", {d.kv_heads * d.head_dim});
    }
    add(p + "self_attn.o_proj.weight", {d.embd, d.heads * d.head_dim});
    add(p + "post_attention_layernorm.weight", {d.embd});
    add(p + "mlp.gate_proj.weight", {d.ff, d.embd});
    add(p + "mlp.up_proj.weight", {d.ff, d.embd});
    add(p + "mlp.down_proj.weight", {d.embd, d.ff});
  }
  add("model.norm.weight", {d.embd});
  if (with_head) add("lm_head.weight", {d.vocab, d.embd});
  return out;
}

// A config.json for the toy dims, in transformers 5's spelling.
inline nlohmann::json toy_config(const ToyDims& d, const std::string& model_type) {
  nlohmann::json c = {
      {"architectures",
       {model_type == "qwen2"     ? "Qwen2ForCausalLM"
        : model_type == "mistral" ? "MistralForCausalLM"
                                  : "LlamaForCausalLM"}},
      {"model_type", model_type},
      {"hidden_size", d.embd},
      {"intermediate_size", d.ff},
      {"num_hidden_layers", d.layers},
      {"num_attention_heads", d.heads},
      {"num_key_value_heads", d.kv_heads},
      {"head_dim", d.head_dim},
      {"max_position_embeddings", 256},
      {"rms_norm_eps", 1e-6},
      {"rope_parameters", {{"rope_theta", 500000.0}, {"rope_type", "default"}}},
      {"tie_word_embeddings", model_type == "qwen2"},
      {"vocab_size", d.vocab},
      {"hidden_act", "silu"},
      {"dtype", "bfloat16"},
  };
  return c;
}

// A fresh, empty folder under the test temp dir, removed by the destructor.
class TempFolder {
 public:
  explicit TempFolder(const std::string& tag) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::path(::testing::TempDir()) /
            ("strata_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" + tag);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempFolder() { std::filesystem::remove_all(path_); }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;

  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Writes config.json and model.safetensors into `folder`.
inline void write_hf_folder(const TempFolder& folder, const nlohmann::json& config,
                            const std::vector<StTensor>& tensors) {
  write_text(folder.file("config.json"), config.dump(2));
  write_bytes(folder.file("model.safetensors"), safetensors_bytes(tensors));
}

// Writes config.json, the shards (tensor i goes to shard i % num_shards) and the index.
inline void write_sharded_hf_folder(const TempFolder& folder, const nlohmann::json& config,
                                    const std::vector<StTensor>& tensors, int num_shards) {
  write_text(folder.file("config.json"), config.dump(2));
  std::vector<std::vector<StTensor>> shards(num_shards);
  nlohmann::json weight_map = nlohmann::json::object();
  auto shard_name = [&](int s) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", s + 1, num_shards);
    return std::string(buf);
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    shards[i % num_shards].push_back(tensors[i]);
    weight_map[tensors[i].name] = shard_name(static_cast<int>(i % num_shards));
  }
  for (int s = 0; s < num_shards; ++s) {
    write_bytes(folder.file(shard_name(s)), safetensors_bytes(shards[s]));
  }
  const nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_text(folder.file("model.safetensors.index.json"), index.dump(2));
}

}  // namespace strata::testing
