// The CPU executor's bf16 prefill with the AMX prefill attention (cpu_backend/attention_amx.h)
// against the same executor with oneDNN's float32 attention: same bf16 matmuls, so the logits
// differ only by the attention's bf16 rounding. The golden tiny models have 8-dim heads, which
// the AMX attention does not take, so the model is the synthetic `tiny` shape (64-dim heads)
// with fresh random weights. Runs where the CPU has AMX-BF16; skipped elsewhere, saying so (the
// kernel itself is tested everywhere through its emulated tile unit in cpu_backend).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "cpu_backend/gemm_amx.h"
#include "offload/exec/executor.h"
#include "offload/model/model_loader.h"
#include "offload/model/synthesize.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

TEST(AmxPrefill, AttentionOnTilesMatchesFloat32Attention) {
  if (!cpu::amx_bf16_available()) GTEST_SKIP() << "this CPU or kernel has no AMX-BF16 tiles";
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("strata_amx_prefill_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  SynthOptions o;
  o.shape = "tiny";
  o.type = DType::kF16;
  o.out_path = (dir / "tiny.gguf").string();
  o.seed = std::random_device{}();
  o.sync_before_rename = false;
  ASSERT_TRUE(synthesize(o).is_ok());
  auto model = load_model(o.out_path);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  std::mt19937 rng(o.seed);
  std::vector<int32_t> prompt(150);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % model->spec.hp.n_vocab);

  for (const DType kv_type : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    std::vector<float> logits[2];
    for (int amx = 0; amx < 2; ++amx) {
      ExecutorOptions opts;
      opts.prefill_precision = cpu::MatmulPrecision::kBF16;
      opts.amx_attention = amx == 1;
      opts.kv_type = kv_type;
      opts.max_context = 512;
      opts.max_batch_tokens = 75;  // two chunks: the second attends to the first's keys
      auto exec = Executor::create(model->spec, opts);
      ASSERT_TRUE(exec.is_ok()) << exec.status().to_string();
      ASSERT_TRUE((*exec)->add_sequence(0).is_ok());
      logits[amx].assign(5, NAN);  // poisoned: forward must replace them
      ASSERT_TRUE((*exec)->forward(0, prompt, true, &logits[amx]).is_ok());
    }
    ASSERT_EQ(logits[0].size(), logits[1].size());
    double d2 = 0, r2 = 0;
    for (size_t i = 0; i < logits[0].size(); ++i) {
      ASSERT_TRUE(std::isfinite(logits[1][i])) << "logit " << i;
      d2 += (logits[1][i] - logits[0][i]) * static_cast<double>(logits[1][i] - logits[0][i]);
      r2 += logits[0][i] * static_cast<double>(logits[0][i]);
    }
    // bf16 attention inputs: ~1e-3 relative; a wrong mask or key range is O(0.1).
    EXPECT_LT(std::sqrt(d2 / r2), 1e-2) << dtype_name(kv_type) << ", seed " << o.seed;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace strata
