// The KV cache the executors build from ExecutorOptions (kv_cache_config): one tier without a hot
// window; with one, a hot pool of sinks + window + one chunk per sequence, the size the planner
// reserves in VRAM for it (Policy::hot_kv_reserved_tokens), and a cold pool of full lengths.
// Bad values are errors naming the key. (Logits under tiering: golden_forward_test.cpp.)
#include <gtest/gtest.h>

#include "offload/exec/executor.h"
#include "offload/model/synthesize.h"
#include "policies/policy.h"

namespace strata {
namespace {

HyperParams llama3_8b() {
  auto spec = synth_spec("llama3-8b", DType::kQ4_0);
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
  return spec->hp;
}

TEST(KvTiers, NoWindowIsOneTierOfFullLengths) {
  ExecutorOptions o;
  o.max_context = 4096;
  o.max_sequences = 3;
  const KvCacheConfig c = o.kv_cache_config(llama3_8b());
  EXPECT_EQ(c.tiering.cold_max_blocks, 0);
  EXPECT_EQ(c.max_blocks, 3 * 4096 / 16);
}

TEST(KvTiers, HotPoolIsWhatThePlannerReserves) {
  const HyperParams hp = llama3_8b();
  for (const int64_t window : {1, 16, 100, 4096}) {
    for (const int64_t chunk : {1, 7, 512}) {
      for (const int64_t bt : {4, 16}) {
        SCOPED_TRACE("window " + std::to_string(window) + " chunk " + std::to_string(chunk) +
                     " block " + std::to_string(bt));
        ExecutorOptions o;
        o.max_context = 131072;
        o.max_sequences = 2;
        o.max_batch_tokens = chunk;
        o.kv_block_tokens = bt;
        o.kv_hot_window_tokens = window;
        o.kv_sink_blocks = 2;
        const KvCacheConfig c = o.kv_cache_config(hp);
        Policy p;
        p.context_tokens = o.max_context;
        p.prefill_tokens = chunk;
        p.block_tokens = bt;
        p.hot_window_tokens = window;
        p.sink_blocks = 2;
        EXPECT_EQ(c.max_blocks * bt, 2 * p.hot_kv_reserved_tokens());
        EXPECT_EQ(c.tiering.cold_max_blocks, 2 * 131072 / bt);
        EXPECT_EQ(c.tiering.hot_window_tokens, window);
        EXPECT_EQ(c.tiering.sink_blocks, 2);
      }
    }
  }
}

TEST(KvTiers, AWindowCoveringTheContextIsOneTier) {
  ExecutorOptions o;
  o.max_context = 256;
  o.max_batch_tokens = 64;
  o.kv_hot_window_tokens = 200;
  const KvCacheConfig c = o.kv_cache_config(llama3_8b());
  EXPECT_EQ(c.tiering.cold_max_blocks, 0);
  EXPECT_EQ(c.max_blocks, 256 / 16);
}

TEST(KvTiers, NegativeValuesAreErrorsNamingTheKey) {
  const HyperParams hp = llama3_8b();
  ExecutorOptions o;
  o.kv_hot_window_tokens = -1;
  Status st = o.validate(hp);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("hot_window"), std::string::npos) << st.to_string();
  o.kv_hot_window_tokens = 0;
  o.kv_sink_blocks = -2;
  st = o.validate(hp);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("sink_blocks"), std::string::npos) << st.to_string();
}

}  // namespace
}  // namespace strata
