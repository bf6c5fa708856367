#include "offload/model/synthesize.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "offload/core/dequantize.h"
#include "offload/exec/executor.h"
#include "offload/formats/gguf_file.h"
#include "offload/model/model_spec.h"
#include "offload/tokenizer/tokenizer.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

const DType kAllTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                           DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};

class SynthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    dir_ = fs::path(::testing::TempDir()) /
           ("strata_synth_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  SynthOptions options(const std::string& shape, DType type, const std::string& file) const {
    SynthOptions o;
    o.shape = shape;
    o.type = type;
    o.out_path = path(file);
    o.seed = 7;
    o.sync_before_rename = false;
    return o;
  }

  fs::path dir_;
};

std::vector<uint8_t> read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string read_text(const std::string& p) {
  std::vector<uint8_t> b = read_all(p);
  return std::string(b.begin(), b.end());
}

// ---- every type, both architectures --------------------------------------------------------

struct TinyCase {
  const char* shape;
  DType type;
};

class SynthTinyTest : public SynthTest, public ::testing::WithParamInterface<TinyCase> {};

TEST_P(SynthTinyTest, ParsesValidatesAndHoldsFiniteWeights) {
  const TinyCase& c = GetParam();
  const std::string p = path("tiny.gguf");
  auto r = synthesize(options(c.shape, c.type, "tiny.gguf"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->file_bytes, fs::file_size(p));
  EXPECT_FALSE(fs::exists(p + ".tmp"));

  auto f = GgufFile::open(p);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  auto spec = model_spec_from_gguf(*f);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  const SynthShape& shape = *find_synth_shape(c.shape);
  EXPECT_EQ(spec->arch, shape.arch);
  EXPECT_EQ(spec->hp.n_layer, shape.hp.n_layer);
  EXPECT_EQ(spec->hp.n_vocab, shape.hp.n_vocab);
  EXPECT_EQ(spec->hp.head_dim, shape.hp.head_dim);
  EXPECT_EQ(spec->hp.tied_embeddings, shape.hp.tied_embeddings);
  EXPECT_EQ(spec->hp.qkv_bias, shape.hp.qkv_bias);
  EXPECT_FLOAT_EQ(spec->hp.rope_theta, shape.hp.rope_theta);
  EXPECT_FLOAT_EQ(spec->hp.rms_eps, shape.hp.rms_eps);
  EXPECT_EQ(f->get_int("general.file_type"), static_cast<int64_t>(*llama_file_type(c.type)));
  EXPECT_EQ(f->get_int("general.quantization_version"), 2);
  EXPECT_EQ(r->num_tensors, static_cast<int64_t>(f->tensors().size()));

  for (const GgufTensorInfo& t : f->tensors()) {
    SCOPED_TRACE(t.name);
    // The tiny shapes' rows are multiples of 256: every 2-D weight has the requested type.
    EXPECT_EQ(t.type, t.ne.size() >= 2 ? c.type : DType::kF32);
    std::vector<float> x(static_cast<size_t>(t.num_elements()));
    ASSERT_TRUE(dequantize_row(t.type, t.data.data(), x.data(), t.num_elements()).is_ok());
    double sum_sq = 0;
    for (float v : x) {
      ASSERT_TRUE(std::isfinite(v));
      sum_sq += static_cast<double>(v) * v;
    }
    const double rms = std::sqrt(sum_sq / static_cast<double>(x.size()));
    if (t.name.find("_norm.") != std::string::npos) {
      for (float v : x) ASSERT_EQ(v, 1.0f);
    } else {
      // sigma <= 1/sqrt(fan_in) <= 0.1 here, and never zero.
      EXPECT_GT(rms, 1e-3);
      EXPECT_LT(rms, 0.2);
    }
  }
}

std::vector<TinyCase> tiny_cases() {
  std::vector<TinyCase> v;
  for (const char* shape : {"tiny", "tiny-qwen2"}) {
    for (DType t : kAllTypes) v.push_back({shape, t});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(EveryType, SynthTinyTest, ::testing::ValuesIn(tiny_cases()),
                         [](const ::testing::TestParamInfo<TinyCase>& info) {
                           std::string s =
                               std::string(info.param.shape) + "_" + dtype_name(info.param.type);
                           for (char& ch : s) {
                             if (ch == '-') ch = '_';
                           }
                           return s;
                         });

// ---- determinism --------------------------------------------------------------------------

TEST_F(SynthTest, SameSeedGivesIdenticalBytes) {
  ASSERT_TRUE(synthesize(options("tiny-qwen2", DType::kQ4_K, "a.gguf")).is_ok());
  ASSERT_TRUE(synthesize(options("tiny-qwen2", DType::kQ4_K, "b.gguf")).is_ok());
  EXPECT_TRUE(read_all(path("a.gguf")) == read_all(path("b.gguf")));
}

TEST_F(SynthTest, DifferentSeedGivesDifferentWeights) {
  SynthOptions a = options("tiny", DType::kF16, "a.gguf");
  SynthOptions b = options("tiny", DType::kF16, "b.gguf");
  b.seed = a.seed + 1;
  ASSERT_TRUE(synthesize(a).is_ok());
  ASSERT_TRUE(synthesize(b).is_ok());
  auto fa = GgufFile::open(a.out_path);
  auto fb = GgufFile::open(b.out_path);
  ASSERT_TRUE(fa.is_ok() && fb.is_ok());
  const auto& ta = fa->find_tensor("blk.0.attn_q.weight")->data;
  const auto& tb = fb->find_tensor("blk.0.attn_q.weight")->data;
  EXPECT_FALSE(std::equal(ta.begin(), ta.end(), tb.begin()));
}

TEST_F(SynthTest, ThreadCountAndChunkSizeDoNotChangeTheBytes) {
  for (DType type : {DType::kF32, DType::kQ6_K}) {
    SCOPED_TRACE(dtype_name(type));
    SynthOptions one = options("tiny", type, "one.gguf");
    one.num_threads = 1;
    SynthOptions three = options("tiny", type, "three.gguf");
    three.num_threads = 3;
    three.chunk_bytes = 5000;  // many chunks, cut inside tensors
    ASSERT_TRUE(synthesize(one).is_ok());
    ASSERT_TRUE(synthesize(three).is_ok());
    EXPECT_TRUE(read_all(one.out_path) == read_all(three.out_path));
  }
}

TEST_F(SynthTest, LayersOverrideKeepsTheOtherTensorsValues) {
  SynthOptions full = options("tiny", DType::kF32, "full.gguf");
  SynthOptions one = options("tiny", DType::kF32, "one.gguf");
  one.n_layer = 1;
  ASSERT_TRUE(synthesize(full).is_ok());
  ASSERT_TRUE(synthesize(one).is_ok());
  auto ff = GgufFile::open(full.out_path);
  auto fo = GgufFile::open(one.out_path);
  ASSERT_TRUE(ff.is_ok() && fo.is_ok());
  EXPECT_EQ(fo->get_int("llama.block_count"), 1);
  EXPECT_EQ(fo->find_tensor("blk.1.attn_q.weight"), nullptr);
  ASSERT_TRUE(model_spec_from_gguf(*fo).is_ok());
  const auto& a = ff->find_tensor("blk.0.attn_q.weight")->data;
  const auto& b = fo->find_tensor("blk.0.attn_q.weight")->data;
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
}

TEST_F(SynthTest, DeepModelsKeepLogitsFiniteAndOrderOne) {
  // The weight scales keep the residual stream O(1) however many layers there are: run 48 layers
  // (qwen2.5-14b's depth) of each architecture through the CPU executor.
  for (const char* shape : {"tiny", "tiny-qwen2"}) {
    SCOPED_TRACE(shape);
    SynthOptions o = options(shape, DType::kQ8_0, std::string(shape) + ".gguf");
    o.n_layer = 48;
    ASSERT_TRUE(synthesize(o).is_ok());
    auto f = GgufFile::open(o.out_path);
    ASSERT_TRUE(f.is_ok());
    auto spec = model_spec_from_gguf(*f);
    ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
    ExecutorOptions eo;
    eo.max_context = 64;
    auto exec = Executor::create(*spec, eo);
    ASSERT_TRUE(exec.is_ok()) << exec.status().to_string();
    ASSERT_TRUE((*exec)->add_sequence(0).is_ok());
    std::vector<int32_t> prompt;
    for (int i = 0; i < 16; ++i) prompt.push_back((i * 37 + 11) % 512);
    std::vector<float> logits;
    ASSERT_TRUE((*exec)->forward(0, prompt, /*all_logits=*/true, &logits).is_ok());
    ASSERT_EQ(logits.size(), 16u * 512u);
    double sum_sq = 0;
    for (float v : logits) {
      ASSERT_TRUE(std::isfinite(v));
      sum_sq += static_cast<double>(v) * v;
    }
    const double rms = std::sqrt(sum_sq / static_cast<double>(logits.size()));
    std::printf("[          ] %s, 48 layers: logits rms %.3f\n", shape, rms);
    EXPECT_GT(rms, 0.1);
    EXPECT_LT(rms, 10.0);
  }
}

// ---- types and metadata ---------------------------------------------------------------------

TEST(SynthTensorType, FallsBackWhereRowsDoNotFitTheBlock) {
  EXPECT_EQ(synth_tensor_type(DType::kQ4_K, {4096, 4096}), DType::kQ4_K);
  EXPECT_EQ(synth_tensor_type(DType::kQ4_K, {896, 896}), DType::kQ4_0);
  EXPECT_EQ(synth_tensor_type(DType::kQ6_K, {896, 4864}), DType::kQ8_0);
  EXPECT_EQ(synth_tensor_type(DType::kQ8_0, {48, 2}), DType::kF16);
  EXPECT_EQ(synth_tensor_type(DType::kQ4_K, {48, 2}), DType::kF16);
  EXPECT_EQ(synth_tensor_type(DType::kQ8_0, {4096}), DType::kF32);
  EXPECT_EQ(synth_tensor_type(DType::kBF16, {4096}), DType::kF32);
  EXPECT_EQ(synth_tensor_type(DType::kBF16, {6, 3}), DType::kBF16);
}

TEST(SynthFileType, UsesLlamaFtypeNumbers) {
  EXPECT_EQ(llama_file_type(DType::kF32), 0u);
  EXPECT_EQ(llama_file_type(DType::kF16), 1u);
  EXPECT_EQ(llama_file_type(DType::kQ4_0), 2u);
  EXPECT_EQ(llama_file_type(DType::kQ8_0), 7u);
  EXPECT_EQ(llama_file_type(DType::kQ4_K), 14u);
  EXPECT_EQ(llama_file_type(DType::kQ6_K), 18u);
  EXPECT_EQ(llama_file_type(DType::kBF16), 32u);
  EXPECT_EQ(llama_file_type(DType::kQ5_0), std::nullopt);
}

TEST_F(SynthTest, SmallRowsFallBackInTheFile) {
  // tiny-llama3 has n_embd 64: no 2-D weight can be Q4_K.
  SynthOptions o = options("tiny-llama3", DType::kQ4_K, "x.gguf");
  o.n_layer = 1;
  ASSERT_TRUE(synthesize(o).is_ok());
  auto f = GgufFile::open(o.out_path);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->find_tensor("token_embd.weight")->type, DType::kQ4_0);
  EXPECT_EQ(f->find_tensor("blk.0.ffn_down.weight")->type, DType::kQ4_K);  // rows of 256
  EXPECT_TRUE(model_spec_from_gguf(*f).is_ok());
}

TEST_F(SynthTest, WritesTheStandardKeysWithConverterTypes) {
  ASSERT_TRUE(synthesize(options("tiny", DType::kQ8_0, "l.gguf")).is_ok());
  ASSERT_TRUE(synthesize(options("tiny-qwen2", DType::kQ8_0, "q.gguf")).is_ok());
  auto l = GgufFile::open(path("l.gguf"));
  auto q = GgufFile::open(path("q.gguf"));
  ASSERT_TRUE(l.is_ok() && q.is_ok());
  auto type_of = [](const GgufFile& f, const std::string& k) {
    const GgufValue* v = f.find(k);
    return v ? v->type() : GgufType::kArray;
  };
  for (const char* k : {"block_count", "context_length", "embedding_length", "feed_forward_length",
                        "attention.head_count", "attention.head_count_kv"}) {
    EXPECT_EQ(type_of(*l, std::string("llama.") + k), GgufType::kUint32) << k;
    EXPECT_EQ(type_of(*q, std::string("qwen2.") + k), GgufType::kUint32) << k;
  }
  for (const char* k : {"rope.freq_base", "attention.layer_norm_rms_epsilon"}) {
    EXPECT_EQ(type_of(*l, std::string("llama.") + k), GgufType::kFloat32) << k;
    EXPECT_EQ(type_of(*q, std::string("qwen2.") + k), GgufType::kFloat32) << k;
  }
  for (const char* k :
       {"vocab_size", "rope.dimension_count", "attention.key_length", "attention.value_length"}) {
    EXPECT_EQ(type_of(*l, std::string("llama.") + k), GgufType::kUint32) << k;
    EXPECT_EQ(q->find(std::string("qwen2.") + k), nullptr) << k;  // as the converter writes qwen2
  }
  EXPECT_EQ(l->get_string("general.architecture"), "llama");
  EXPECT_EQ(q->get_string("general.architecture"), "qwen2");
  EXPECT_EQ(l->get_string("general.name"), "synth-tiny");
  EXPECT_EQ(type_of(*l, "general.file_type"), GgufType::kUint32);
  EXPECT_EQ(l->get_int("llama.context_length"), 512);
  EXPECT_EQ(l->find("general.alignment"), nullptr);
  EXPECT_EQ(l->alignment(), 32u);
}

TEST_F(SynthTest, SyntheticVocabIsByteLevelBpe) {
  SynthOptions o = options("tiny-llama3", DType::kQ8_0, "v.gguf");
  o.n_layer = 1;
  ASSERT_TRUE(synthesize(o).is_ok());
  auto f = GgufFile::open(o.out_path);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f->get_string("tokenizer.ggml.pre"), "llama-bpe");
  const auto* tokens = f->find("tokenizer.ggml.tokens")->strings();
  const auto* types = f->find("tokenizer.ggml.token_type")->ints();
  ASSERT_NE(tokens, nullptr);
  ASSERT_NE(types, nullptr);
  ASSERT_EQ(tokens->size(), 128256u);
  ASSERT_EQ(types->size(), 128256u);
  EXPECT_EQ(f->find("tokenizer.ggml.token_type")->array_type(), GgufType::kInt32);
  EXPECT_EQ((*tokens)[0], "!");
  EXPECT_EQ((*tokens)[93], "~");
  EXPECT_EQ((*tokens)[188], "\xC4\x80");       // byte 0 -> U+0100 'Ā'
  EXPECT_EQ((*tokens)[188 + 32], "\xC4\xA0");  // byte 0x20 (space) -> U+0120 'Ġ'
  std::set<std::string> bytes(tokens->begin(), tokens->begin() + 256);
  EXPECT_EQ(bytes.size(), 256u);
  for (int i = 0; i < 256; ++i) EXPECT_EQ((*types)[i], 1);
  EXPECT_EQ(f->get_int("tokenizer.ggml.bos_token_id"), 128000);
  EXPECT_EQ(f->get_int("tokenizer.ggml.eos_token_id"), 128001);
  EXPECT_EQ((*tokens)[128000], "<|begin_of_text|>");
  EXPECT_EQ((*tokens)[128001], "<|end_of_text|>");
  EXPECT_EQ((*tokens)[300], "<|reserved_300|>");
  EXPECT_EQ((*types)[300], 3);
  const auto* merges = f->find("tokenizer.ggml.merges")->strings();
  ASSERT_NE(merges, nullptr);
  ASSERT_EQ(merges->size(), 32u);
  EXPECT_EQ((*merges)[0], "\xC4\xA0 t");   // "Ġ t"
  EXPECT_EQ((*tokens)[256], "\xC4\xA0t");  // the first merged token
  EXPECT_EQ((*types)[256], 1);
  EXPECT_EQ((*tokens)[287], "\xC4\xA0i");  // the last one

  ASSERT_TRUE(synthesize(options("tiny-qwen2", DType::kF16, "q.gguf")).is_ok());
  auto q = GgufFile::open(path("q.gguf"));
  ASSERT_TRUE(q.is_ok());
  EXPECT_EQ(q->get_string("tokenizer.ggml.pre"), "qwen2");
  EXPECT_EQ(q->get_int("tokenizer.ggml.bos_token_id"), 256);
  EXPECT_EQ(q->get_int("tokenizer.ggml.eos_token_id"), 256);
  EXPECT_EQ(q->find("tokenizer.ggml.tokens")->strings()->at(256), "<|endoftext|>");
  EXPECT_EQ(q->find("tokenizer.ggml.tokens")->strings()->at(257), "\xC4\xA0t");
}

TEST_F(SynthTest, SyntheticVocabLoadsInStrataTokenizerAndRoundTrips) {
  for (const char* shape : {"tiny", "tiny-qwen2"}) {
    SCOPED_TRACE(shape);
    SynthOptions o = options(shape, DType::kQ8_0, std::string(shape) + ".gguf");
    o.n_layer = 1;
    ASSERT_TRUE(synthesize(o).is_ok());
    auto f = GgufFile::open(o.out_path);
    ASSERT_TRUE(f.is_ok());
    auto tok = Tokenizer::from_gguf(*f);
    ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
    const std::string text = "Hello there, the world is on! \xC3\xA9\xE2\x82\xAC\n";
    std::vector<int32_t> ids = tok->encode(text, /*add_special=*/false, /*parse_special=*/false);
    EXPECT_LT(ids.size(), text.size());  // some pairs merged
    for (int32_t id : ids) EXPECT_LT(id, 512);
    EXPECT_EQ(tok->decode(ids), text);
  }
}

TEST(SynthShapes, MatchPublishedParameterCounts) {
  // Totals of the HF checkpoints (safetensors metadata / model cards).
  EXPECT_EQ(find_synth_shape("llama3-8b")->num_params(), 8030261248);
  EXPECT_EQ(find_synth_shape("llama3.2-1b")->num_params(), 1235814400);
  EXPECT_EQ(find_synth_shape("qwen2.5-0.5b")->num_params(), 494032768);
  EXPECT_EQ(find_synth_shape("llama3-70b")->num_params(), 70553706496);
  EXPECT_EQ(find_synth_shape("nope"), nullptr);
  for (const SynthShape& s : synth_shapes()) {
    SCOPED_TRACE(s.name);
    EXPECT_EQ(s.hp.n_head % s.hp.n_head_kv, 0);
    if (s.arch == Arch::kQwen2) {
      EXPECT_EQ(s.hp.head_dim * s.hp.n_head, s.hp.n_embd);
    }
  }
}

TEST(SynthShapes, Llama3RopeFreqsRunFromOneToTheFactor) {
  const SynthShape& s = *find_synth_shape("llama3.2-1b");
  std::vector<float> f = llama3_rope_freqs(s);
  ASSERT_EQ(f.size(), 32u);
  EXPECT_EQ(f.front(), 1.0f);
  EXPECT_EQ(f.back(), 32.0f);
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);
  EXPECT_TRUE(llama3_rope_freqs(*find_synth_shape("llama3-8b")).empty());
}

TEST_F(SynthTest, Llama3ScalingShapeWritesRopeFreqsFirst) {
  // tiny-llama3 has llama3.2-1b's layout: tied embeddings, rope scaling factor 32.
  SynthOptions o = options("tiny-llama3", DType::kQ4_0, "r.gguf");
  ASSERT_TRUE(synthesize(o).is_ok());
  auto f = GgufFile::open(o.out_path);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->tensors().front().name, "rope_freqs.weight");
  EXPECT_EQ(f->tensors().front().type, DType::kF32);
  EXPECT_EQ(f->tensors().front().ne, (std::vector<int64_t>{8}));
  std::vector<float> freqs(8);
  std::memcpy(freqs.data(), f->tensors().front().data.data(), 32);
  EXPECT_EQ(freqs, llama3_rope_freqs(*find_synth_shape("tiny-llama3")));
  EXPECT_EQ(f->find_tensor("output.weight"), nullptr);  // tied
  auto spec = model_spec_from_gguf(*f);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->hp.head_dim, 16);
  EXPECT_EQ(spec->hp.n_ctx_train, 8192);
}

// ---- --vocab ----------------------------------------------------------------------------------

TEST_F(SynthTest, CopiesVocabKeyByKeyWithTheirTypes) {
  const std::string vocab = testing::testdata_path("vocab/ggml-vocab-llama-bpe.gguf");
  STRATA_REQUIRE_TESTDATA(vocab);
  SynthOptions o = options("tiny-llama3", DType::kQ8_0, "v.gguf");
  o.vocab_path = vocab;
  o.n_layer = 1;
  auto r = synthesize(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto f = GgufFile::open(o.out_path);
  auto v = GgufFile::open(vocab);
  ASSERT_TRUE(f.is_ok() && v.is_ok());
  int copied = 0;
  for (const auto& [key, want] : v->metadata()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    SCOPED_TRACE(key);
    const GgufValue* got = f->find(key);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->type(), want.type());
    if (want.is_array()) {
      EXPECT_EQ(got->array_type(), want.array_type());
      EXPECT_EQ(got->array_size(), want.array_size());
      if (want.strings()) {
        EXPECT_TRUE(*got->strings() == *want.strings());
      }
      if (want.ints()) {
        EXPECT_TRUE(*got->ints() == *want.ints());
      }
    } else {
      EXPECT_EQ(got->to_int(), want.to_int());
      EXPECT_EQ(got->to_string() ? *got->to_string() : "",
                want.to_string() ? *want.to_string() : "");
    }
    ++copied;
  }
  EXPECT_EQ(copied, 7);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 1);  // the vocab file's llama.* keys are not copied
  EXPECT_TRUE(model_spec_from_gguf(*f).is_ok());
}

TEST_F(SynthTest, PadsASmallerVocabLikeHfConverters) {
  const std::string vocab = testing::testdata_path("vocab/ggml-vocab-llama-spm.gguf");
  STRATA_REQUIRE_TESTDATA(vocab);
  SynthOptions o = options("tiny-llama3", DType::kQ4_0, "p.gguf");
  o.vocab_path = vocab;
  o.n_layer = 1;
  auto r = synthesize(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto f = GgufFile::open(o.out_path);
  auto v = GgufFile::open(vocab);
  ASSERT_TRUE(f.is_ok() && v.is_ok());
  const auto& tokens = *f->find("tokenizer.ggml.tokens")->strings();
  const auto& types = *f->find("tokenizer.ggml.token_type")->ints();
  const auto& scores = *f->find("tokenizer.ggml.scores")->floats();
  ASSERT_EQ(tokens.size(), 128256u);
  ASSERT_EQ(types.size(), 128256u);
  ASSERT_EQ(scores.size(), 128256u);
  EXPECT_EQ(f->find("tokenizer.ggml.scores")->array_type(),
            v->find("tokenizer.ggml.scores")->array_type());
  EXPECT_EQ(tokens[31999], v->find("tokenizer.ggml.tokens")->strings()->at(31999));
  EXPECT_EQ(tokens[32000], "[PAD32000]");
  EXPECT_EQ(tokens[128255], "[PAD128255]");
  EXPECT_EQ(types[32000], 5);
  EXPECT_EQ(scores[32000], -1000.0);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "llama");
  auto spec = model_spec_from_gguf(*f);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->hp.n_vocab, 128256);
}

TEST_F(SynthTest, RefusesAVocabLargerThanTheShape) {
  const std::string vocab = testing::testdata_path("vocab/ggml-vocab-qwen2.gguf");
  STRATA_REQUIRE_TESTDATA(vocab);
  SynthOptions o = options("tiny-llama3", DType::kQ8_0, "big.gguf");
  o.vocab_path = vocab;
  auto r = synthesize(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("151936 tokens, more than the 128256"), std::string::npos)
      << r.status().message();
  EXPECT_FALSE(fs::exists(o.out_path));
  EXPECT_FALSE(fs::exists(o.out_path + ".tmp"));
}

// ---- bad arguments and failures ---------------------------------------------------------------

TEST_F(SynthTest, BadArgumentsGetClearErrors) {
  auto expect_error = [&](SynthOptions o, StatusCode code, const std::string& needle) {
    auto r = synthesize(o);
    ASSERT_FALSE(r.is_ok()) << needle;
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
    EXPECT_FALSE(fs::exists(o.out_path));
  };
  expect_error(options("llama9-1t", DType::kF16, "x.gguf"), StatusCode::kInvalidArgument,
               "unknown --shape 'llama9-1t' (known: tiny, tiny-qwen2");
  expect_error(options("tiny", DType::kQ5_0, "x.gguf"), StatusCode::kInvalidArgument,
               "--type Q5_0 is not one synth writes");
  SynthOptions no_out = options("tiny", DType::kF16, "x.gguf");
  no_out.out_path.clear();
  expect_error(no_out, StatusCode::kInvalidArgument, "--out is required");
  SynthOptions layers = options("tiny", DType::kF16, "x.gguf");
  layers.n_layer = -1;
  expect_error(layers, StatusCode::kInvalidArgument, "--layers -1");
  const std::string unwritable = path("missing/dir/x.gguf");
  SynthOptions bad_path = options("tiny", DType::kF16, "x.gguf");
  bad_path.out_path = unwritable;
  expect_error(bad_path, StatusCode::kIoError, "cannot create '" + unwritable + ".tmp'");
  SynthOptions bad_vocab = options("tiny", DType::kF16, "x.gguf");
  bad_vocab.vocab_path = path("no-such-vocab.gguf");
  auto r = synthesize(bad_vocab);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--vocab"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("no-such-vocab.gguf"), std::string::npos)
      << r.status().message();

  EXPECT_TRUE(parse_synth_type("q4_k").is_ok());
  EXPECT_EQ(*parse_synth_type("bf16"), DType::kBF16);
  auto bad_type = parse_synth_type("Q5_0");
  ASSERT_FALSE(bad_type.is_ok());
  EXPECT_NE(bad_type.status().message().find("unknown --type 'Q5_0'"), std::string::npos);
  EXPECT_FALSE(parse_synth_type("int4").is_ok());
}

TEST_F(SynthTest, CancelledSynthLeavesTheOldFileAndNoTemp) {
  SynthOptions o = options("tiny", DType::kF32, "keep.gguf");
  { std::ofstream(o.out_path) << "old contents"; }
  o.chunk_bytes = 64 * 1024;
  int calls = 0;
  o.on_progress = [&](const SynthProgress&) { return ++calls < 3; };
  auto r = synthesize(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("cancelled"), std::string::npos) << r.status().message();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(read_text(o.out_path), "old contents");
  EXPECT_FALSE(fs::exists(o.out_path + ".tmp"));
}

TEST_F(SynthTest, WriteErrorLeavesNoPartialFile) {
  // A file-size limit makes write(2) fail with EFBIG part-way through the data.
  SynthOptions o = options("tiny", DType::kF32, "efbig.gguf");
  o.chunk_bytes = 256 * 1024;
  struct rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old_limit;
  small.rlim_cur = 1 << 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  auto r = synthesize(o);
  setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIoError) << r.status().to_string();
  EXPECT_FALSE(fs::exists(o.out_path));
  EXPECT_FALSE(fs::exists(o.out_path + ".tmp"));
}

TEST_F(SynthTest, ReportsProgressUpToTheTotal) {
  SynthOptions o = options("tiny", DType::kQ8_0, "p.gguf");
  o.chunk_bytes = 128 * 1024;
  std::vector<SynthProgress> seen;
  o.on_progress = [&](const SynthProgress& p) {
    seen.push_back(p);
    return true;
  };
  auto r = synthesize(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_GT(seen.size(), 2u);
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GT(seen[i].data_bytes_written, seen[i - 1].data_bytes_written);
  }
  EXPECT_EQ(seen.back().data_bytes_written, seen.back().data_bytes_total);
}

}  // namespace
}  // namespace strata
