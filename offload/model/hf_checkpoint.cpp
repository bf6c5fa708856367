#include "offload/model/hf_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>
#include <vector>

#include "offload/formats/json_text.h"
#include "offload/formats/mapped_file.h"
#include "offload/formats/safetensors_file.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kConfigName = "config.json";
constexpr const char* kSingleFileName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";

std::string shape_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Real config files nest a few levels; anything much deeper is refused before parsing.
constexpr int kMaxJsonDepth = 64;

StatusOr<Json> read_json_file(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  if (json_nesting_depth(text) > kMaxJsonDepth) {
    return Status::invalid_data(path + ": JSON nests deeper than " + std::to_string(kMaxJsonDepth) +
                                " levels");
  }
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::invalid_data(path + ": not valid JSON");
  if (!j.is_object()) return Status::invalid_data(path + ": must hold a JSON object");
  return j;
}

// ---- config.json ----------------------------------------------------------------------------

// Reads typed fields of one JSON object; a null field counts as absent (transformers writes
// `"head_dim": null` and the like for "use the default").
class ConfigFields {
 public:
  ConfigFields(const Json& object, std::string path, std::string prefix = "")
      : object_(object), path_(std::move(path)), prefix_(std::move(prefix)) {}

  const Json* get(const char* key) const {
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  // A positive integer; `fallback` when absent (nullopt: the key is required).
  Status positive_int(const char* key, std::optional<int64_t> fallback, int64_t* out) const {
    const Json* v = get(key);
    if (v == nullptr) {
      if (!fallback) return bad("missing " + name(key));
      *out = *fallback;
      return Status::ok();
    }
    if (!v->is_number_integer() ||
        (v->is_number_unsigned() &&
         v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) ||
        v->get<int64_t>() <= 0) {
      return bad(name(key) + " must be a positive integer, found " + json_excerpt(*v));
    }
    *out = v->get<int64_t>();
    return Status::ok();
  }

  Status number(const char* key, double fallback, double* out) const {
    const Json* v = get(key);
    if (v == nullptr) {
      *out = fallback;
      return Status::ok();
    }
    if (!v->is_number()) return bad(name(key) + " must be a number, found " + json_excerpt(*v));
    *out = v->get<double>();
    return Status::ok();
  }

  Status boolean(const char* key, bool fallback, bool* out) const {
    const Json* v = get(key);
    if (v == nullptr) {
      *out = fallback;
      return Status::ok();
    }
    if (!v->is_boolean())
      return bad(name(key) + " must be true or false, found " + json_excerpt(*v));
    *out = v->get<bool>();
    return Status::ok();
  }

  Status string(const char* key, std::string fallback, std::string* out) const {
    const Json* v = get(key);
    if (v == nullptr) {
      *out = std::move(fallback);
      return Status::ok();
    }
    if (!v->is_string()) return bad(name(key) + " must be a string, found " + json_excerpt(*v));
    *out = v->get<std::string>();
    return Status::ok();
  }

  std::string name(const char* key) const { return prefix_ + key; }
  Status bad(const std::string& what) const { return Status::invalid_data(path_ + ": " + what); }
  Status unsupported(const std::string& what) const {
    return Status::unsupported(path_ + ": " + what);
  }

 private:
  const Json& object_;
  std::string path_;
  std::string prefix_;
};

struct ArchInfo {
  const char* model_type;
  const char* class_name;
  Arch arch;
  int64_t default_max_positions;  // transformers' default max_position_embeddings
};
constexpr ArchInfo kArchInfos[] = {
    {"llama", "LlamaForCausalLM", Arch::kLlama, 2048},
    {"mistral", "MistralForCausalLM", Arch::kLlama, 4096 * 32},
    {"qwen2", "Qwen2ForCausalLM", Arch::kQwen2, 32768},
};

const ArchInfo* find_arch(const std::string& model_type) {
  for (const ArchInfo& a : kArchInfos) {
    if (model_type == a.model_type) return &a;
  }
  return nullptr;
}

// Rope: transformers 5 writes `rope_parameters` {rope_type, rope_theta, ...}; transformers 4
// writes a top-level `rope_theta` and an optional `rope_scaling` {type | rope_type, factor, ...}.
Status read_rope(const ConfigFields& config, const std::string& path, HyperParams* hp) {
  double theta = 10000.0;
  STRATA_RETURN_IF_ERROR(config.number("rope_theta", theta, &theta));
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    const Json* params = config.get(key);
    if (params == nullptr) continue;
    if (!params->is_object()) {
      return config.bad(std::string(key) + " must be an object, found " + json_excerpt(*params));
    }
    ConfigFields fields(*params, path, std::string(key) + ".");
    std::string rope_type;
    STRATA_RETURN_IF_ERROR(fields.string("rope_type", "", &rope_type));
    if (rope_type.empty()) STRATA_RETURN_IF_ERROR(fields.string("type", "default", &rope_type));
    if (rope_type != "default") {
      return config.unsupported(std::string(key) + " rope_type '" + rope_type +
                                "' is not supported (only \"default\" rope)");
    }
    STRATA_RETURN_IF_ERROR(fields.number("rope_theta", theta, &theta));
    double partial = 1.0;
    STRATA_RETURN_IF_ERROR(fields.number("partial_rotary_factor", 1.0, &partial));
    if (partial != 1.0) {
      return config.unsupported(fields.name("partial_rotary_factor") + " " +
                                std::to_string(partial) + " is not supported (only 1)");
    }
  }
  double partial = 1.0;
  STRATA_RETURN_IF_ERROR(config.number("partial_rotary_factor", 1.0, &partial));
  if (partial != 1.0) {
    return config.unsupported("partial_rotary_factor " + std::to_string(partial) +
                              " is not supported (only 1)");
  }
  hp->rope_theta = theta;
  hp->rope_dims = hp->head_dim;
  hp->rope_style = RopeStyle::kNeoxHalves;  // HF Q/K rows are in rotate-half order
  return Status::ok();
}

struct HfConfig {
  Arch arch = Arch::kLlama;
  std::string name;
  HyperParams hp;
};

StatusOr<HfConfig> read_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / kConfigName).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return Status::not_found(path + ": missing (an HF checkpoint folder needs its config.json)");
  }
  STRATA_ASSIGN_OR_RETURN(Json json, read_json_file(path));
  ConfigFields config(json, path);
  HfConfig out;

  // The model class: model_type names it; `architectures` must agree when it is there.
  std::string model_type;
  STRATA_RETURN_IF_ERROR(config.string("model_type", "", &model_type));
  const ArchInfo* info = find_arch(model_type);
  if (model_type.empty()) return config.bad("missing model_type");
  if (info == nullptr) {
    return config.unsupported("model_type '" + model_type +
                              "' is not supported (llama, mistral, qwen2)");
  }
  if (const Json* archs = config.get("architectures")) {
    if (!archs->is_array()) return config.bad("architectures must be a list of class names");
    for (const Json& a : *archs) {
      if (!a.is_string() || a.get<std::string>() != info->class_name) {
        return config.unsupported("architectures " + json_excerpt(*archs) + " is not supported (" +
                                  info->class_name + " for model_type " + model_type + ")");
      }
    }
  }
  out.arch = info->arch;
  if (const Json* quant = config.get("quantization_config")) {
    std::string method = "unknown";
    if (quant->is_object() && quant->contains("quant_method") &&
        (*quant)["quant_method"].is_string()) {
      method = (*quant)["quant_method"].get<std::string>();
    }
    return config.unsupported("quantized checkpoints (quantization_config, quant_method '" +
                              method +
                              "') are not supported; use an F32/F16/BF16 checkpoint "
                              "or a GGUF file");
  }

  HyperParams& hp = out.hp;
  STRATA_RETURN_IF_ERROR(config.positive_int("hidden_size", std::nullopt, &hp.n_embd));
  STRATA_RETURN_IF_ERROR(config.positive_int("intermediate_size", std::nullopt, &hp.n_ff));
  STRATA_RETURN_IF_ERROR(config.positive_int("num_hidden_layers", std::nullopt, &hp.n_layer));
  STRATA_RETURN_IF_ERROR(config.positive_int("num_attention_heads", std::nullopt, &hp.n_head));
  STRATA_RETURN_IF_ERROR(config.positive_int("vocab_size", std::nullopt, &hp.n_vocab));
  STRATA_RETURN_IF_ERROR(config.positive_int("num_key_value_heads", hp.n_head, &hp.n_head_kv));
  if (config.get("head_dim") == nullptr && hp.n_embd % hp.n_head != 0) {
    return config.bad("hidden_size " + std::to_string(hp.n_embd) +
                      " is not a multiple of num_attention_heads " + std::to_string(hp.n_head) +
                      " and there is no head_dim");
  }
  STRATA_RETURN_IF_ERROR(config.positive_int("head_dim", hp.n_embd / hp.n_head, &hp.head_dim));
  STRATA_RETURN_IF_ERROR(config.number("rms_norm_eps", 1e-6, &hp.rms_eps));
  STRATA_RETURN_IF_ERROR(
      config.positive_int("max_position_embeddings", info->default_max_positions, &hp.n_ctx_train));
  STRATA_RETURN_IF_ERROR(config.boolean("tie_word_embeddings", false, &hp.tied_embeddings));
  STRATA_RETURN_IF_ERROR(read_rope(config, path, &hp));

  std::string act;
  STRATA_RETURN_IF_ERROR(config.string("hidden_act", "silu", &act));
  if (act != "silu") return config.unsupported("hidden_act '" + act + "' is not supported (silu)");

  if (out.arch == Arch::kQwen2) {
    hp.qkv_bias = true;  // Qwen2Attention: q/k/v Linear layers always carry a bias, o_proj none
  } else {
    bool attention_bias = false;
    STRATA_RETURN_IF_ERROR(config.boolean("attention_bias", false, &attention_bias));
    if (attention_bias) {
      return config.unsupported(
          "attention_bias true (biases on q/k/v and o_proj) is not supported for " + model_type);
    }
  }
  bool mlp_bias = false;
  STRATA_RETURN_IF_ERROR(config.boolean("mlp_bias", false, &mlp_bias));
  if (mlp_bias) return config.unsupported("mlp_bias true is not supported");

  // Sliding-window attention equals full attention for contexts up to the window, so a window
  // shorter than the trained context caps the context we offer instead of changing the graph.
  bool sliding = out.arch != Arch::kQwen2;  // qwen2 slides only with use_sliding_window
  if (out.arch == Arch::kQwen2) {
    STRATA_RETURN_IF_ERROR(config.boolean("use_sliding_window", false, &sliding));
  }
  if (sliding && config.get("sliding_window") != nullptr) {
    int64_t window = 0;
    STRATA_RETURN_IF_ERROR(config.positive_int("sliding_window", std::nullopt, &window));
    hp.n_ctx_train = std::min(hp.n_ctx_train, window);
  }

  STRATA_RETURN_IF_ERROR(config.string("_name_or_path", "", &out.name));
  if (out.name.empty()) out.name = fs::path(dir).lexically_normal().filename().string();
  if (out.name.empty())
    out.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  return out;
}

// ---- weights --------------------------------------------------------------------------------

// HF suffix after "model.layers.N." -> llama.cpp suffix after "blk.N.".
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
constexpr std::pair<std::string_view, std::string_view> kTopNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// The inverse of hf_to_gguf_tensor_name, for messages about tensors that are missing.
std::string gguf_to_hf_tensor_name(const std::string& gguf_name) {
  for (const auto& [hf, gguf] : kTopNames) {
    if (gguf_name == gguf) return std::string(hf);
  }
  const size_t dot = gguf_name.find('.', 4);
  if (gguf_name.starts_with("blk.") && dot != std::string::npos) {
    const std::string_view suffix = std::string_view(gguf_name).substr(dot + 1);
    for (const auto& [hf, gguf] : kLayerNames) {
      if (suffix == gguf) {
        return "model.layers." + gguf_name.substr(4, dot - 4) + "." + std::string(hf);
      }
    }
  }
  return gguf_name;
}

// The shard files of a checkpoint: the single file, or those the index lists.
struct ShardList {
  std::vector<std::string> paths;                               // in order of first mention
  std::string index_path;                                       // empty for a single file
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard path
};

StatusOr<ShardList> list_shards(const std::string& dir) {
  std::error_code ec;
  ShardList out;
  const std::string single = (fs::path(dir) / kSingleFileName).string();
  if (fs::exists(single, ec)) {  // transformers looks for the single file first, too
    out.paths.push_back(single);
    return out;
  }
  out.index_path = (fs::path(dir) / kIndexName).string();
  if (!fs::exists(out.index_path, ec)) {
    return Status::not_found(dir + ": no " + kSingleFileName + " or " + kIndexName +
                             " (only safetensors checkpoints are read, not PyTorch .bin)");
  }
  STRATA_ASSIGN_OR_RETURN(Json index, read_json_file(out.index_path));
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object() || map_it->empty()) {
    return Status::invalid_data(out.index_path + ": needs a non-empty \"weight_map\" object");
  }
  std::set<std::string> seen;
  for (const auto& [tensor, file] : map_it->items()) {
    if (!file.is_string()) {
      return Status::invalid_data(out.index_path + ": weight_map entry '" + tensor +
                                  "' must name a file, found " + json_excerpt(file));
    }
    const std::string name = file.get<std::string>();
    const fs::path rel(name);
    bool escapes = name.empty() || rel.is_absolute();
    for (const fs::path& part : rel) escapes = escapes || part == "..";
    if (escapes) {
      return Status::invalid_data(out.index_path + ": shard name '" + name +
                                  "' must be a file inside the checkpoint folder");
    }
    const std::string path = (fs::path(dir) / rel).string();
    if (seen.insert(path).second) out.paths.push_back(path);
    out.weight_map.emplace_back(tensor, path);
  }
  return out;
}

// One tensor found in a shard, with its HF name.
struct FoundTensor {
  std::string hf_name;
  const SafetensorsFile* shard = nullptr;
  const SafetensorsTensorInfo* info = nullptr;
};

// Checks the tensors against the config with HF names and shapes in the messages (the user
// knows the checkpoint by those), before validate_model_spec sees the llama.cpp names.
Status check_against_config(const std::string& dir, Arch arch, const HyperParams& hp,
                            const std::map<std::string, FoundTensor>& found) {
  const auto expected = expected_tensors(arch, hp);  // in model order: the first gap is named
  std::set<std::string> expected_names;
  for (const auto& [name, ne] : expected) expected_names.insert(name);
  for (const auto& [gguf_name, t] : found) {
    if (expected_names.count(gguf_name) == 0) {
      return Status::invalid_data(t.shard->path() + ": unexpected tensor '" + t.hf_name +
                                  "' for a " + arch_name(arch) + " model with the dimensions in " +
                                  kConfigName);
    }
  }
  for (const auto& [gguf_name, ne] : expected) {
    auto it = found.find(gguf_name);
    if (it == found.end()) {
      return Status::invalid_data(dir + ": missing tensor '" + gguf_to_hf_tensor_name(gguf_name) +
                                  "' (" + gguf_name + "), which " + kConfigName + " implies");
    }
    const FoundTensor& t = it->second;
    if (t.info->ggml_ne() != ne) {
      const std::vector<int64_t> hf_shape(ne.rbegin(), ne.rend());
      return Status::invalid_data(t.shard->path() + ": tensor '" + t.hf_name + "' has shape " +
                                  shape_string(t.info->shape) + ", expected " +
                                  shape_string(hf_shape) + " from " + kConfigName);
    }
  }
  return Status::ok();
}

}  // namespace

std::optional<std::string> hf_to_gguf_tensor_name(std::string_view hf_name) {
  for (const auto& [hf, gguf] : kTopNames) {
    if (hf_name == hf) return std::string(gguf);
  }
  constexpr std::string_view kLayers = "model.layers.";
  if (!hf_name.starts_with(kLayers)) return std::nullopt;
  const std::string_view rest = hf_name.substr(kLayers.size());
  size_t digits = 0;
  while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
  // A layer index: 1 to 9 digits, no leading zero (so "01" cannot alias "1").
  if (digits == 0 || digits > 9 || (digits > 1 && rest[0] == '0') || digits == rest.size() ||
      rest[digits] != '.') {
    return std::nullopt;
  }
  const std::string_view suffix = rest.substr(digits + 1);
  for (const auto& [hf, gguf] : kLayerNames) {
    if (suffix == hf) return "blk." + std::string(rest.substr(0, digits)) + "." + std::string(gguf);
  }
  return std::nullopt;
}

StatusOr<ModelSpec> model_spec_from_hf_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::not_found(dir + ": not a folder");
  STRATA_ASSIGN_OR_RETURN(HfConfig config, read_config(dir));
  STRATA_ASSIGN_OR_RETURN(ShardList list, list_shards(dir));

  std::vector<SafetensorsFile> shards;
  shards.reserve(list.paths.size());  // FoundTensor points into it: no reallocation below
  std::unordered_map<std::string, const SafetensorsFile*> shard_by_path;
  for (const std::string& path : list.paths) {
    if (!fs::exists(path, ec))
      return Status::not_found(path + ": missing (listed in " + kIndexName + ")");
    STRATA_ASSIGN_OR_RETURN(SafetensorsFile shard, SafetensorsFile::open(path));
    shards.push_back(std::move(shard));
    shard_by_path.emplace(path, &shards.back());
  }
  for (const auto& [tensor, path] : list.weight_map) {
    if (shard_by_path.at(path)->find_tensor(tensor) == nullptr) {
      return Status::invalid_data(list.index_path + ": lists tensor '" + tensor + "' in " + path +
                                  ", which does not hold it");
    }
  }

  // Map every shard tensor (transformers loads them all, listed or not) to its llama.cpp name.
  std::map<std::string, FoundTensor> found;  // by llama.cpp name
  std::vector<std::string> file_order;       // llama.cpp names, shard by shard, header order
  const char* class_name = config.arch == Arch::kQwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  for (const SafetensorsFile& shard : shards) {
    for (const SafetensorsTensorInfo& t : shard.tensors()) {
      // Older checkpoints store rope's inverse frequencies; transformers recomputes them.
      if (t.name.ends_with(".rotary_emb.inv_freq")) continue;
      std::optional<std::string> gguf_name = hf_to_gguf_tensor_name(t.name);
      if (!gguf_name) {
        return Status::invalid_data(shard.path() + ": unexpected tensor '" + t.name +
                                    "' (not a weight of " + class_name + ")");
      }
      auto [it, inserted] = found.emplace(*gguf_name, FoundTensor{t.name, &shard, &t});
      if (!inserted) {
        return Status::invalid_data(dir + ": tensor '" + t.name + "' appears in both " +
                                    it->second.shard->path() + " and " + shard.path());
      }
      file_order.push_back(*gguf_name);
    }
  }

  // Tied embeddings: transformers reuses embed_tokens as the head and ignores lm_head. Accept a
  // stored copy only when it holds the same bytes, so that a different head never disappears.
  if (config.hp.tied_embeddings) {
    auto head = found.find("output.weight");
    if (head != found.end()) {
      auto embd = found.find("token_embd.weight");
      const SafetensorsTensorInfo* h = head->second.info;
      if (embd == found.end() || embd->second.info->type != h->type ||
          embd->second.info->shape != h->shape ||
          std::memcmp(embd->second.info->data.data(), h->data.data(), h->size_bytes) != 0) {
        return Status::invalid_data(head->second.shard->path() +
                                    ": tie_word_embeddings is true in " + kConfigName +
                                    ", but lm_head.weight differs from "
                                    "model.embed_tokens.weight");
      }
      found.erase(head);
      std::erase(file_order, std::string("output.weight"));
    }
  }
  STRATA_RETURN_IF_ERROR(check_against_config(dir, config.arch, config.hp, found));

  ModelSpec spec;
  spec.path = dir;
  spec.format = SourceFormat::kSafetensors;
  spec.arch = config.arch;
  spec.name = config.name;
  spec.hp = config.hp;
  for (const SafetensorsFile& shard : shards) spec.storage.push_back(shard.storage());
  spec.tensors.reserve(file_order.size());
  for (const std::string& name : file_order) {
    const SafetensorsTensorInfo& t = *found.at(name).info;
    TensorSpec ts;
    ts.name = name;
    ts.type = t.type;
    ts.ne = t.ggml_ne();  // HF [out, in] row-major is ggml ne [in, out]: the same bytes
    ts.size_bytes = t.size_bytes;
    ts.data = t.data;
    spec.tensor_index.emplace(name, spec.tensors.size());
    spec.tensors.push_back(std::move(ts));
  }
  STRATA_RETURN_IF_ERROR(validate_model_spec(spec));
  return spec;
}

}  // namespace strata
