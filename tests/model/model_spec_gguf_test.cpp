// ModelSpec from GGUF: small GGUF files built byte by byte in the test (a minimal emitter, so
// that these tests depend on nothing but the reader), then one change each: a missing tensor, a
// wrong shape, an unsupported type, a bad hyper-parameter... Every error is one Status naming
// the input and what was wrong.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "offload/formats/gguf_file.h"
#include "offload/model/model_spec.h"
#include "tests/model/hf_folder_builder.h"  // EXPECT_CONTAINS

namespace strata {
namespace {

// Emits GGUF v3 bytes: header, metadata, tensor infos, padding to 32, then each tensor's data
// (zeros) at the next multiple of 32.
class GgufBytes {
 public:
  struct Tensor {
    std::string name;
    uint32_t type_id = 0;  // ggml type id (F32 = 0)
    std::vector<int64_t> ne;
  };

  void kv_string(const std::string& key, const std::string& value) {
    key_(key, GgufType::kString);
    str_(&kv_, value);
    ++n_kv_;
  }
  void kv_u32(const std::string& key, uint32_t value) {
    key_(key, GgufType::kUint32);
    pod_(&kv_, value);
    ++n_kv_;
  }
  void kv_f32(const std::string& key, float value) {
    key_(key, GgufType::kFloat32);
    pod_(&kv_, value);
    ++n_kv_;
  }

  std::vector<Tensor> tensors;

  std::vector<uint8_t> bytes() const {
    constexpr uint64_t kAlign = 32;
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
    pod_(&out, uint32_t{3});
    pod_(&out, static_cast<uint64_t>(tensors.size()));
    pod_(&out, n_kv_);
    out.insert(out.end(), kv_.begin(), kv_.end());
    uint64_t offset = 0;
    std::vector<uint64_t> sizes;
    for (const Tensor& t : tensors) {
      str_(&out, t.name);
      pod_(&out, static_cast<uint32_t>(t.ne.size()));
      for (int64_t d : t.ne) pod_(&out, d);
      pod_(&out, t.type_id);
      pod_(&out, offset);
      const DTypeTraits tr = *dtype_traits(t.type_id);
      int64_t n = 1;
      for (int64_t d : t.ne) n *= d;
      sizes.push_back(static_cast<uint64_t>(n / tr.block_elems * tr.block_bytes));
      offset += (sizes.back() + kAlign - 1) / kAlign * kAlign;
    }
    out.resize((out.size() + kAlign - 1) / kAlign * kAlign, 0);
    out.resize(out.size() + offset, 0);
    return out;
  }

 private:
  template <typename T>
  static void pod_(std::vector<uint8_t>* out, T v) {
    const size_t at = out->size();
    out->resize(at + sizeof(T));
    std::memcpy(out->data() + at, &v, sizeof(T));
  }
  static void str_(std::vector<uint8_t>* out, const std::string& s) {
    pod_(out, static_cast<uint64_t>(s.size()));
    out->insert(out->end(), s.begin(), s.end());
  }
  void key_(const std::string& key, GgufType type) {
    str_(&kv_, key);
    pod_(&kv_, static_cast<uint32_t>(type));
  }

  std::vector<uint8_t> kv_;
  uint64_t n_kv_ = 0;
};

// A toy model: embd 32, 4 heads of 8 (2 kv heads), ff 64, vocab 8, 1 layer; all F32.
struct Toy {
  std::string arch = "llama";
  int64_t embd = 32, heads = 4, kv_heads = 2, head_dim = 8, ff = 64, vocab = 8, layers = 1;
  bool bias = false, head = true;
};

std::vector<GgufBytes::Tensor> toy_tensors(const Toy& m) {
  std::vector<GgufBytes::Tensor> t;
  t.push_back({"token_embd.weight", 0, {m.embd, m.vocab}});
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_norm.weight", 0, {m.embd}});
    t.push_back({p + "attn_q.weight", 0, {m.embd, m.heads * m.head_dim}});
    t.push_back({p + "attn_k.weight", 0, {m.embd, m.kv_heads * m.head_dim}});
    t.push_back({p + "attn_v.weight", 0, {m.embd, m.kv_heads * m.head_dim}});
    if (m.bias) {
      t.push_back({p + "attn_q.bias", 0, {m.heads * m.head_dim}});
      t.push_back({p + "attn_k.bias", 0, {m.kv_heads * m.head_dim}});
      t.push_back({p + "attn_v.bias", 0, {m.kv_heads * m.head_dim}});
    }
    t.push_back({p + "attn_output.weight", 0, {m.heads * m.head_dim, m.embd}});
    t.push_back({p + "ffn_norm.weight", 0, {m.embd}});
    t.push_back({p + "ffn_gate.weight", 0, {m.embd, m.ff}});
    t.push_back({p + "ffn_up.weight", 0, {m.embd, m.ff}});
    t.push_back({p + "ffn_down.weight", 0, {m.ff, m.embd}});
  }
  t.push_back({"output_norm.weight", 0, {m.embd}});
  if (m.head) t.push_back({"output.weight", 0, {m.embd, m.vocab}});
  return t;
}

// The toy's bytes; `edit` may change metadata (by skipping a key) or tensors before emission.
struct ToyOptions {
  std::string skip_key;
  std::function<void(GgufBytes&)> extra_kv;
  std::function<void(std::vector<GgufBytes::Tensor>&)> edit_tensors;
};

std::vector<uint8_t> toy_gguf(const Toy& m, const ToyOptions& opt = {}) {
  GgufBytes g;
  const std::string& a = m.arch;
  auto u32 = [&](const std::string& key, int64_t v) {
    if (key != opt.skip_key) g.kv_u32(key, static_cast<uint32_t>(v));
  };
  if (opt.skip_key != "general.architecture") g.kv_string("general.architecture", a);
  g.kv_string("general.name", "toy");
  u32(a + ".block_count", m.layers);
  u32(a + ".context_length", 128);
  u32(a + ".embedding_length", m.embd);
  u32(a + ".feed_forward_length", m.ff);
  u32(a + ".attention.head_count", m.heads);
  u32(a + ".attention.head_count_kv", m.kv_heads);
  u32(a + ".vocab_size", m.vocab);
  if (opt.skip_key != "freq_base") g.kv_f32(a + ".rope.freq_base", 10000.0f);
  g.kv_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  if (opt.extra_kv) opt.extra_kv(g);
  g.tensors = toy_tensors(m);
  if (opt.edit_tensors) opt.edit_tensors(g.tensors);
  return g.bytes();
}

constexpr const char* kName = "toy.gguf";

StatusOr<ModelSpec> spec_of(const std::vector<uint8_t>& bytes) {
  auto f = GgufFile::parse(bytes, kName);
  if (!f.is_ok()) return f.status();
  return model_spec_from_gguf(*f);
}

void expect_spec_error(const std::vector<uint8_t>& bytes, StatusCode code,
                       const std::string& phrase) {
  auto spec = spec_of(bytes);
  ASSERT_FALSE(spec.is_ok()) << "accepted";
  EXPECT_EQ(spec.status().code(), code) << spec.status().to_string();
  EXPECT_CONTAINS(spec.status().message(), kName);
  EXPECT_CONTAINS(spec.status().message(), phrase);
}

void erase_tensor(std::vector<GgufBytes::Tensor>& t, const std::string& name) {
  std::erase_if(t, [&](const GgufBytes::Tensor& x) { return x.name == name; });
}

GgufBytes::Tensor& tensor(std::vector<GgufBytes::Tensor>& t, const std::string& name) {
  for (auto& x : t) {
    if (x.name == name) return x;
  }
  ADD_FAILURE() << "no tensor " << name;
  return t.front();
}

TEST(ModelSpecFromGguf, BuildsSpecOfValidToy) {
  const std::vector<uint8_t> bytes = toy_gguf(Toy{});
  auto spec = spec_of(bytes);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->arch, Arch::kLlama);
  EXPECT_EQ(spec->name, "toy");
  EXPECT_EQ(spec->hp.n_vocab, 8);
  EXPECT_EQ(spec->hp.n_embd, 32);
  EXPECT_EQ(spec->hp.head_dim, 8);  // no key_length: embd / heads
  EXPECT_EQ(spec->hp.rope_dims, 8);
  EXPECT_EQ(spec->hp.n_ctx_train, 128);
  EXPECT_EQ(spec->hp.rope_style, RopeStyle::kAdjacentPairs);
  EXPECT_FALSE(spec->hp.tied_embeddings);
  EXPECT_FALSE(spec->hp.qkv_bias);
  EXPECT_EQ(spec->tensors.size(), 12u);
  const TensorSpec* k = spec->find("blk.0.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->ne, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(k->size_bytes, 32u * 16 * 4);
  EXPECT_GE(k->data.data(), bytes.data());
  EXPECT_LE(k->data.data() + k->data.size(), bytes.data() + bytes.size());
}

TEST(ModelSpecFromGguf, Qwen2IsNeoxTiedAndBiased) {
  Toy m;
  m.arch = "qwen2";
  m.bias = true;
  m.head = false;
  auto spec = spec_of(toy_gguf(m));
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->arch, Arch::kQwen2);
  EXPECT_EQ(spec->hp.rope_style, RopeStyle::kNeoxHalves);
  EXPECT_TRUE(spec->hp.tied_embeddings);
  EXPECT_TRUE(spec->hp.qkv_bias);
}

TEST(ModelSpecFromGguf, MissingTensorIsNamed) {
  ToyOptions opt;
  opt.edit_tensors = [](auto& t) { erase_tensor(t, "blk.0.ffn_up.weight"); };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                    "missing tensor 'blk.0.ffn_up.weight'");
}

TEST(ModelSpecFromGguf, MissingBiasInALaterLayerIsNamed) {
  Toy m;
  m.arch = "qwen2";
  m.bias = true;
  m.layers = 2;
  ToyOptions opt;
  opt.edit_tensors = [](auto& t) { erase_tensor(t, "blk.1.attn_v.bias"); };
  expect_spec_error(toy_gguf(m, opt), StatusCode::kInvalidData,
                    "missing tensor 'blk.1.attn_v.bias'");
}

TEST(ModelSpecFromGguf, WrongShapeIsNamedWithBothShapes) {
  ToyOptions opt;
  opt.edit_tensors = [](auto& t) { tensor(t, "blk.0.attn_k.weight").ne = {32, 32}; };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                    "tensor 'blk.0.attn_k.weight' has shape [32, 32], expected [32, 16]");
}

TEST(ModelSpecFromGguf, TransposedShapeIsAnError) {
  ToyOptions opt;
  opt.edit_tensors = [](auto& t) { tensor(t, "blk.0.ffn_down.weight").ne = {32, 64}; };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                    "tensor 'blk.0.ffn_down.weight' has shape [32, 64], expected [64, 32]");
}

TEST(ModelSpecFromGguf, TrailingUnitDimensionIsAccepted) {
  ToyOptions opt;
  opt.edit_tensors = [](auto& t) { tensor(t, "blk.0.attn_norm.weight").ne = {32, 1}; };
  auto spec = spec_of(toy_gguf(Toy{}, opt));
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
}

TEST(ModelSpecFromGguf, UnsupportedTensorTypeIsUnsupported) {
  ToyOptions opt;
  opt.edit_tensors = [](auto& t) { tensor(t, "blk.0.attn_q.weight").type_id = 3; };  // Q4_1
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kUnsupported,
                    "tensor 'blk.0.attn_q.weight' has type Q4_1");
}

TEST(ModelSpecFromGguf, UnknownTensorTypeIdIsUnsupported) {
  std::vector<uint8_t> bytes = toy_gguf(Toy{});
  // Patch the type id of the first tensor info (token_embd.weight: name, 2 dims) to 99.
  const std::string name = "token_embd.weight";
  auto it = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  ASSERT_NE(it, bytes.end());
  const size_t type_at = static_cast<size_t>(it - bytes.begin()) + name.size() + 4 + 2 * 8;
  const uint32_t bad = 99;
  std::memcpy(bytes.data() + type_at, &bad, 4);
  expect_spec_error(bytes, StatusCode::kUnsupported, "unknown type id 99");
}

TEST(ModelSpecFromGguf, UnexpectedTensorIsNamed) {
  ToyOptions opt;
  opt.edit_tensors = [](auto& t) { t.push_back({"blk.1.attn_q.weight", 0, {32, 32}}); };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                    "unexpected tensor 'blk.1.attn_q.weight' for architecture llama");
}

TEST(ModelSpecFromGguf, UnsupportedArchitecture) {
  Toy m;
  m.arch = "gpt2";
  expect_spec_error(toy_gguf(m), StatusCode::kUnsupported, "architecture 'gpt2' is not supported");
}

TEST(ModelSpecFromGguf, MissingArchitecture) {
  ToyOptions opt;
  opt.skip_key = "general.architecture";
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData, "missing general.architecture");
}

TEST(ModelSpecFromGguf, MissingRequiredHyperParameter) {
  for (const char* key : {"llama.block_count", "llama.embedding_length",
                          "llama.feed_forward_length", "llama.attention.head_count"}) {
    ToyOptions opt;
    opt.skip_key = key;
    SCOPED_TRACE(key);
    expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                      std::string("missing metadata key ") + key);
  }
}

TEST(ModelSpecFromGguf, HyperParameterOfWrongType) {
  ToyOptions opt;
  opt.skip_key = "llama.block_count";
  opt.extra_kv = [](GgufBytes& g) { g.kv_string("llama.block_count", "one"); };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                    "llama.block_count must be an integer scalar (it is string)");
}

TEST(ModelSpecFromGguf, HeadsNotAMultipleOfKvHeads) {
  Toy m;
  m.kv_heads = 3;
  expect_spec_error(toy_gguf(m), StatusCode::kInvalidData,
                    "head_count 4 is not a multiple of head_count_kv 3");
}

TEST(ModelSpecFromGguf, ZeroHeadsIsAnError) {
  Toy m;
  m.heads = 0;
  expect_spec_error(toy_gguf(m), StatusCode::kInvalidData, "head_count must be positive");
}

TEST(ModelSpecFromGguf, RopeDimensionsLargerThanTheHead) {
  ToyOptions opt;
  opt.extra_kv = [](GgufBytes& g) { g.kv_u32("llama.rope.dimension_count", 16); };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                    "rope dimension count 16 must be even and at most the head size 8");
}

TEST(ModelSpecFromGguf, KeyAndValueLengthsMustAgree) {
  ToyOptions opt;
  opt.extra_kv = [](GgufBytes& g) {
    g.kv_u32("llama.attention.key_length", 8);
    g.kv_u32("llama.attention.value_length", 16);
  };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kUnsupported,
                    "key_length 8 differs from value_length 16");
}

TEST(ModelSpecFromGguf, UnsupportedRopeScaling) {
  ToyOptions opt;
  opt.extra_kv = [](GgufBytes& g) { g.kv_string("llama.rope.scaling.type", "yarn"); };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kUnsupported, "rope scaling 'yarn'");
}

TEST(ModelSpecFromGguf, LinearRopeScalingOnlyAsANoOp) {
  ToyOptions scaled;
  scaled.extra_kv = [](GgufBytes& g) {
    g.kv_string("llama.rope.scaling.type", "linear");
    g.kv_f32("llama.rope.scaling.factor", 4.0f);
  };
  expect_spec_error(toy_gguf(Toy{}, scaled), StatusCode::kUnsupported,
                    "linear rope scaling with factor 4");
  ToyOptions old_key;
  old_key.extra_kv = [](GgufBytes& g) { g.kv_f32("llama.rope.scale_linear", 2.0f); };
  expect_spec_error(toy_gguf(Toy{}, old_key), StatusCode::kUnsupported,
                    "linear rope scaling with factor 2");
  ToyOptions unit;
  unit.extra_kv = [](GgufBytes& g) {
    g.kv_string("llama.rope.scaling.type", "linear");
    g.kv_f32("llama.rope.scaling.factor", 1.0f);
  };
  auto spec = spec_of(toy_gguf(Toy{}, unit));
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
}

TEST(ModelSpecFromGguf, ZeroContextLengthIsAnError) {
  ToyOptions opt;
  opt.skip_key = "llama.context_length";
  opt.extra_kv = [](GgufBytes& g) { g.kv_u32("llama.context_length", 0); };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData, "context 0");
}

TEST(ModelSpecFromGguf, Qwen2WithoutBiases) {
  Toy m;
  m.arch = "qwen2";
  m.head = false;
  expect_spec_error(toy_gguf(m), StatusCode::kInvalidData, "qwen2 model without attn_q.bias");
}

TEST(ModelSpecFromGguf, VocabSizeDisagreeingWithEmbeddings) {
  ToyOptions opt;
  opt.skip_key = "llama.vocab_size";
  opt.extra_kv = [](GgufBytes& g) { g.kv_u32("llama.vocab_size", 9); };
  expect_spec_error(toy_gguf(Toy{}, opt), StatusCode::kInvalidData,
                    "tensor 'token_embd.weight' has shape [32, 8], expected [32, 9]");
}

TEST(ModelSpecFromGguf, VocabSizeFallsBackToTokenizerThenEmbeddings) {
  ToyOptions opt;
  opt.skip_key = "llama.vocab_size";
  auto spec = spec_of(toy_gguf(Toy{}, opt));
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->hp.n_vocab, 8);  // token_embd rows
}

// validate_model_spec on its own: a spec put together by hand.
TEST(ValidateModelSpec, ReportsImplausibleHyperParameters) {
  ModelSpec spec;
  spec.path = "hand-made";
  spec.hp.n_vocab = 8;
  spec.hp.n_embd = 32;
  spec.hp.n_layer = 1;
  spec.hp.n_head = 4;
  spec.hp.n_head_kv = 2;
  spec.hp.head_dim = 8;
  spec.hp.n_ff = 0;
  spec.hp.rope_dims = 8;
  spec.hp.n_ctx_train = 128;
  Status s = validate_model_spec(spec);
  EXPECT_EQ(s.code(), StatusCode::kInvalidData);
  EXPECT_CONTAINS(s.message(), "hand-made: hyper-parameters must be positive");
  spec.hp.n_ff = 64;
  spec.hp.n_layer = 100000;
  s = validate_model_spec(spec);
  EXPECT_CONTAINS(s.message(), "implausible hyper-parameters");
  spec.hp.n_layer = 1;
  spec.hp.rms_eps = 0;
  s = validate_model_spec(spec);
  EXPECT_CONTAINS(s.message(), "rms epsilon and rope base must be positive");
  spec.hp.rms_eps = 1e-5;
  s = validate_model_spec(spec);
  EXPECT_CONTAINS(s.message(), "missing tensor 'token_embd.weight'");
}

TEST(ExpectedTensors, ListsBiasesOnlyWhenPresentAndHeadOnlyWhenUntied) {
  HyperParams hp;
  hp.n_vocab = 8;
  hp.n_embd = 32;
  hp.n_layer = 2;
  hp.n_head = 4;
  hp.n_head_kv = 2;
  hp.head_dim = 8;
  hp.n_ff = 64;
  EXPECT_EQ(expected_tensors(Arch::kLlama, hp).size(), 1u + 2 * 9 + 2);
  hp.qkv_bias = true;
  hp.tied_embeddings = true;
  EXPECT_EQ(expected_tensors(Arch::kQwen2, hp).size(), 1u + 2 * 12 + 1);
}

}  // namespace
}  // namespace strata
