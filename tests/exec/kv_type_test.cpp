// KV element types on the CPU executor: f16 and q8_0 caches against the f32 cache (the golden
// `exact` path, tests in golden_forward_test.cpp) on the same model and prompt. The golden tiny
// models have 8-dim heads, too short for q8_0's 32-element blocks, so the model here is the
// synthetic `tiny` shape (64-dim heads, 2 layers, 512 tokens) with random weights.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "offload/exec/executor.h"
#include "offload/model/model_loader.h"
#include "offload/model/synthesize.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class KvTypeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("strata_kv_type_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    SynthOptions o;
    o.shape = "tiny";
    o.type = DType::kF16;
    o.out_path = (dir_ / "tiny.gguf").string();
    o.seed = std::random_device{}();
    o.sync_before_rename = false;
    ASSERT_TRUE(synthesize(o).is_ok());
    auto loaded = load_model(o.out_path);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
    model_ = std::make_unique<LoadedModel>(std::move(loaded).value());
    std::mt19937 rng(std::random_device{}());
    prompt_.resize(70);  // 5 blocks of 16, the last one partial
    for (int32_t& t : prompt_) t = static_cast<int32_t>(rng() % model_->spec.hp.n_vocab);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Logits of the prompt (prefill, every position) and of 10 greedy tokens decoded one by one
  // after it, with a cache of `kv_type`; the cache's bytes per block in *block_bytes.
  // hot_window > 0: tiered. chunk: tokens per prefill chunk.
  std::vector<float> run(DType kv_type, int64_t* block_bytes, int64_t hot_window = 0,
                         int64_t chunk = 2048, int64_t* cold_blocks = nullptr) {
    ExecutorOptions opts;
    opts.kv_type = kv_type;
    opts.kv_block_tokens = 16;
    opts.max_context = 512;
    opts.kv_hot_window_tokens = hot_window;
    opts.max_batch_tokens = chunk;
    auto exec = Executor::create(model_->spec, opts);
    EXPECT_TRUE(exec.is_ok()) << exec.status().to_string();
    if (!exec.is_ok()) return {};
    EXPECT_TRUE((*exec)->add_sequence(0).is_ok());
    std::vector<float> all, step;
    EXPECT_TRUE((*exec)->forward(0, prompt_, true, &all).is_ok());
    const int64_t n_vocab = model_->spec.hp.n_vocab;
    std::vector<float> last(all.end() - n_vocab, all.end());
    for (int i = 0; i < 10; ++i) {
      // The f32 run's greedy tokens for every type, so that the positions compared line up.
      if (greedy_.size() <= static_cast<size_t>(i)) {
        greedy_.push_back(
            static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin()));
      }
      EXPECT_TRUE((*exec)->forward(0, std::span(&greedy_[i], 1), false, &step).is_ok());
      all.insert(all.end(), step.begin(), step.end());
      last = step;
    }
    *block_bytes = (*exec)->kv_stats().block_bytes;
    if (cold_blocks != nullptr) *cold_blocks = (*exec)->kv_stats().cold_used_blocks;
    return all;
  }

  static double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
    double d2 = 0, w2 = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (!std::isfinite(got[i])) return INFINITY;
      d2 += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
      w2 += static_cast<double>(want[i]) * want[i];
    }
    return std::sqrt(d2 / w2);
  }

  fs::path dir_;
  std::unique_ptr<LoadedModel> model_;
  std::vector<int32_t> prompt_, greedy_;
};

TEST_F(KvTypeTest, F16AndQ8_0CachesStayCloseToF32AtTheirSizes) {
  int64_t f32_bytes = 0, f16_bytes = 0, q8_bytes = 0;
  const std::vector<float> f32 = run(DType::kF32, &f32_bytes);
  const std::vector<float> f16 = run(DType::kF16, &f16_bytes);
  const std::vector<float> q8 = run(DType::kQ8_0, &q8_bytes);
  ASSERT_FALSE(f32.empty());
  ASSERT_EQ(f16.size(), f32.size());
  ASSERT_EQ(q8.size(), f32.size());
  const double e16 = rel_l2(f16, f32), e8 = rel_l2(q8, f32);
  std::printf("logits vs the f32 cache: f16 rel L2 %.3g, q8_0 rel L2 %.3g\n", e16, e8);
  // Rounding K and V: f16 keeps 11 bits, q8_0 about 8 per block of 32 (llama.cpp's q8_0 cache
  // is the same format). Both change the logits (the caches are really used) and stay close.
  EXPECT_GT(e16, 0.0);
  EXPECT_LT(e16, 2e-3);
  EXPECT_GT(e8, e16);
  EXPECT_LT(e8, 3e-2);
  // Sizes: f16 half of f32, q8_0 34 bytes per 32 elements.
  EXPECT_EQ(f16_bytes * 2, f32_bytes);
  EXPECT_EQ(q8_bytes * 128, f32_bytes * 34);
  // The greedy continuation agrees at most positions.
  const int64_t n_vocab = model_->spec.hp.n_vocab;
  int agree = 0;
  const size_t positions = f32.size() / static_cast<size_t>(n_vocab);
  for (size_t p = 0; p < positions; ++p) {
    auto at = [&](const std::vector<float>& v) {
      return std::max_element(v.begin() + p * n_vocab, v.begin() + (p + 1) * n_vocab) -
             (v.begin() + p * n_vocab);
    };
    agree += at(q8) == at(f32);
  }
  EXPECT_GE(agree, static_cast<int>(positions * 9 / 10)) << agree << " of " << positions;
}

TEST_F(KvTypeTest, EveryKvTypeGivesTheSameLogitsTiered) {
  // A 16-token hot window and 24-token prefill chunks: most blocks of the 80-token sequence move
  // to the cold tier between chunks. Rows move as stored (q8_0 blocks with their scales, f16
  // halves), so the logits are those of the one-tier run with the same chunks, to the last bit.
  for (DType type : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    SCOPED_TRACE(dtype_name(type));
    int64_t bytes = 0, cold = 0;
    const std::vector<float> one_tier = run(type, &bytes, /*hot_window=*/0, /*chunk=*/24);
    const std::vector<float> tiered = run(type, &bytes, /*hot_window=*/16, /*chunk=*/24, &cold);
    ASSERT_EQ(tiered.size(), one_tier.size());
    EXPECT_GE(cold, 3);
    EXPECT_EQ(tiered, one_tier);
  }
}

TEST_F(KvTypeTest, Q8_0NeedsHeadsOfWholeBlocks) {
  // The golden tiny-llama shape has 8-dim heads; a q8_0 cache is refused naming the head size.
  HyperParams hp = model_->spec.hp;
  hp.head_dim = 8;
  ExecutorOptions opts;
  opts.kv_type = DType::kQ8_0;
  const Status s = opts.validate(hp);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("multiple of 32"), std::string::npos) << s.to_string();
}

}  // namespace
}  // namespace strata
