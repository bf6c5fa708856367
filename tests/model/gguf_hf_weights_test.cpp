// Loader check without running the model (README "What a test should assert", item 2): the
// tensors of tiny-llama's F32, F16 and BF16 GGUF files, converted to float32, equal
// hf/model.safetensors bit for bit once llama's Q/K row permutation is undone; and the spec
// read from the HF folder agrees with each GGUF spec on names, ne and hyper-parameters (all
// but the rope style, which is how the two layouts of Q/K show up in the spec).
#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "offload/core/dtype.h"
#include "offload/formats/gguf_file.h"
#include "offload/model/hf_checkpoint.h"
#include "offload/model/model_spec.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

// The tensor's values as float32 (F32, F16 and BF16 only).
std::vector<float> to_f32(const TensorSpec& t) {
  const int64_t n = t.num_elements();
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (t.type == DType::kF32) {
      std::memcpy(&out[i], t.data.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      out[i] = t.type == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
  return out;
}

// Undoes llama.cpp's `LlamaModel.permute` of Q/K rows. GGUF row (h, j, t) of head h, pair j,
// element t holds HF row (h, t, j): w.reshape(n_heads, d/2, 2, in).swapaxes(1, 2).
std::vector<float> unpermute_rows(const std::vector<float>& gguf, int64_t row_length,
                                  int64_t n_heads) {
  const int64_t n_rows = static_cast<int64_t>(gguf.size()) / row_length;
  const int64_t rows_per_head = n_rows / n_heads;
  const int64_t half = rows_per_head / 2;
  std::vector<float> hf(gguf.size());
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t t = 0; t < 2; ++t) {
        const int64_t src = h * rows_per_head + j * 2 + t;
        const int64_t dst = h * rows_per_head + t * half + j;
        std::memcpy(&hf[dst * row_length], &gguf[src * row_length], row_length * sizeof(float));
      }
    }
  }
  return hf;
}

void expect_same_hparams_but_rope_style(const HyperParams& a, const HyperParams& b) {
  EXPECT_EQ(a.n_vocab, b.n_vocab);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.n_head, b.n_head);
  EXPECT_EQ(a.n_head_kv, b.n_head_kv);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.n_ff, b.n_ff);
  EXPECT_EQ(a.n_ctx_train, b.n_ctx_train);
  EXPECT_EQ(a.rope_dims, b.rope_dims);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  // GGUF stores the epsilon as float32, config.json as a decimal.
  EXPECT_EQ(static_cast<float>(a.rms_eps), static_cast<float>(b.rms_eps));
  EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
}

class TinyLlamaGgufVsHf : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string hf_dir = testing::testdata_path("models/tiny-llama/hf");
    const std::string gguf_path =
        testing::testdata_path("models/tiny-llama/tiny-llama-" + GetParam() + ".gguf");
    STRATA_REQUIRE_TESTDATA(hf_dir);
    STRATA_REQUIRE_TESTDATA(gguf_path);
    auto hf = model_spec_from_hf_folder(hf_dir);
    ASSERT_TRUE(hf.is_ok()) << hf.status().to_string();
    hf_ = std::move(hf).value();
    auto file = GgufFile::open(gguf_path);
    ASSERT_TRUE(file.is_ok()) << file.status().to_string();
    auto gguf = model_spec_from_gguf(*file);
    ASSERT_TRUE(gguf.is_ok()) << gguf.status().to_string();
    gguf_ = std::move(gguf).value();
  }

  ModelSpec hf_;
  ModelSpec gguf_;
};

TEST_P(TinyLlamaGgufVsHf, WeightsEqualBitForBitAfterUndoingQkPermutation) {
  int checked = 0;
  for (const TensorSpec& g : gguf_.tensors) {
    SCOPED_TRACE(g.name);
    const TensorSpec* h = hf_.find(g.name);
    ASSERT_NE(h, nullptr);
    ASSERT_EQ(g.ne, h->ne);
    std::vector<float> gv = to_f32(g);
    const std::vector<float> hv = to_f32(*h);
    if (g.name.ends_with("attn_q.weight")) {
      gv = unpermute_rows(gv, g.ne[0], gguf_.hp.n_head);
    } else if (g.name.ends_with("attn_k.weight")) {
      gv = unpermute_rows(gv, g.ne[0], gguf_.hp.n_head_kv);
    }
    ASSERT_EQ(gv.size(), hv.size());
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < gv.size(); ++i) {
      if (std::bit_cast<uint32_t>(gv[i]) != std::bit_cast<uint32_t>(hv[i])) {
        if (mismatches++ == 0) first = i;
      }
    }
    EXPECT_EQ(mismatches, 0u) << "first at element " << first << ": gguf " << gv[first] << " vs hf "
                              << hv[first];
    ++checked;
  }
  EXPECT_EQ(checked, 30);
}

// Without the un-permutation Q and K differ: the check above is not vacuous.
TEST_P(TinyLlamaGgufVsHf, QkRowsArePermutedInGguf) {
  const TensorSpec* g = gguf_.find("blk.0.attn_q.weight");
  const TensorSpec* h = hf_.find("blk.0.attn_q.weight");
  ASSERT_NE(g, nullptr);
  ASSERT_NE(h, nullptr);
  EXPECT_NE(to_f32(*g), to_f32(*h));
}

TEST_P(TinyLlamaGgufVsHf, SpecsAgreeOnNamesShapesAndHyperParams) {
  std::set<std::string> gguf_names, hf_names;
  for (const TensorSpec& t : gguf_.tensors) gguf_names.insert(t.name);
  for (const TensorSpec& t : hf_.tensors) hf_names.insert(t.name);
  EXPECT_EQ(gguf_names, hf_names);
  for (const TensorSpec& t : gguf_.tensors) {
    const TensorSpec* h = hf_.find(t.name);
    ASSERT_NE(h, nullptr) << t.name;
    EXPECT_EQ(h->ne, t.ne) << t.name;
  }
  EXPECT_EQ(gguf_.arch, hf_.arch);
  expect_same_hparams_but_rope_style(gguf_.hp, hf_.hp);
  EXPECT_EQ(gguf_.hp.rope_style, RopeStyle::kAdjacentPairs);
  EXPECT_EQ(hf_.hp.rope_style, RopeStyle::kNeoxHalves);
}

INSTANTIATE_TEST_SUITE_P(DenseFiles, TinyLlamaGgufVsHf, ::testing::Values("F32", "F16", "BF16"));

}  // namespace
}  // namespace strata
