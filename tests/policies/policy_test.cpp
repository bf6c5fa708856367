// The policy file (policies/policy.h): every key parsed, every bad key or value an error that
// names the key and the line, and the examples shipped in policies/examples/ all valid.
#include "policies/policy.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

TEST(PolicyFile, ParsesEveryKey) {
  auto p = parse_policy_toml(R"(
policy = "stream"
vram_budget = "8GiB"
prefetch_depth = 3
context = 32768
batch = 4
prefill_tokens = 1024
kv_type = "f32"
[[rule]]
match = 'blk\.[0-9]+\.ffn_.*'
place = "cpu"
[caps]
hbm_bytes_per_s = 3.35e12
h2d_pinned_bytes_per_s = 25000000000
)",
                             "p.toml");
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->kind, PolicyKind::kStream);
  EXPECT_EQ(p->vram_budget_bytes, int64_t{8} << 30);
  EXPECT_EQ(p->prefetch_depth, 3);
  EXPECT_EQ(p->context_tokens, 32768);
  EXPECT_EQ(p->batch, 4);
  EXPECT_EQ(p->prefill_tokens, 1024);
  EXPECT_EQ(p->kv_type, DType::kF32);
  ASSERT_EQ(p->rules.size(), 1u);
  EXPECT_EQ(p->rules[0].place, Placement::kCpu);
  const Caps caps = p->apply_caps(Caps::reference());
  EXPECT_DOUBLE_EQ(caps.hbm_bytes_per_s, 3.35e12);
  EXPECT_DOUBLE_EQ(caps.h2d_pinned_bytes_per_s, 25e9);
}

TEST(PolicyFile, ParsesTheKvTierKeys) {
  auto p = parse_policy_toml(
      "context = 131072\nhot_window = 4096\nsink_blocks = 2\nblock_tokens = 32\n"
      "cold_attention = \"prefetch\"\n",
      "kv.toml");
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->hot_window_tokens, 4096);
  EXPECT_EQ(p->sink_blocks, 2);
  EXPECT_EQ(p->block_tokens, 32);
  EXPECT_EQ(p->cold_attention, ColdAttention::kPrefetch);
  // Two sinks and the window in whole blocks, plus the block being written: 2 + 128 + 1 blocks.
  EXPECT_EQ(p->hot_kv_tokens(), (2 + 128 + 1) * 32);
  EXPECT_EQ(p->cold_kv_tokens(), 131072 - (2 + 128 + 1) * 32);
  EXPECT_EQ(p->cold_kv_blocks(), 4096 - (2 + 128 + 1));  // whole blocks of 32 here
  Policy odd = *p;
  odd.context_tokens += 5;  // a part block counts as a block
  EXPECT_EQ(odd.cold_kv_blocks(), 4096 - (2 + 128 + 1) + 1);
  Policy no_window;
  EXPECT_EQ(no_window.hot_kv_tokens(), no_window.context_tokens);
}

TEST(PolicyFile, EmptyFileIsTheDefaults) {
  auto p = parse_policy_toml("", "empty.toml");
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->kind, PolicyKind::kAuto);
  EXPECT_EQ(p->vram_budget_bytes, 0);
  EXPECT_EQ(p->prefetch_depth, 2);
}

TEST(PolicyFile, BadInputNamesTheKeyAndLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"polcy = \"auto\"", "p.toml:1: polcy: unknown key"},
      {"policy = \"fast\"", "policy: 'fast' is not one of"},
      {"\n\nvram_budget = \"8 parsecs\"", "p.toml:3: vram_budget: '8 parsecs' is not a size"},
      {"prefetch_depth = \"two\"", "prefetch_depth: expected an integer"},
      {"prefetch_depth = 0", "prefetch_depth: 0 is not in 1..8"},
      {"kv_type = \"q4\"", "kv_type: 'q4' is not f16, f32 or q8_0"},
      {"[[rule]]\nmatch = \"x\"", "rule: needs both match and place"},
      {"[[rule]]\nmatch = \"x\"\nplace = \"disk\"", "rule.place: place: 'disk' is not one of"},
      {"[[rule]]\nmatch = \"(\"\nplace = \"cpu\"", "not a regular expression"},
      {"[[rule]]\nmatch = \"x\"\nplace = \"cpu\"\nwhere = 1", "rule.where: unknown key"},
      {"[caps]\nwarp_speed = 9", "caps.warp_speed: unknown rate"},
      {"[caps]\nhbm_bytes_per_s = -1.0", "caps.hbm_bytes_per_s: must be positive"},
      {"hot_window = -5", "hot_window: must not be negative"},
      {"block_tokens = 0", "block_tokens: 0 is not in 1..1024"},
      {"cold_attention = \"gpu\"", "cold_attention: 'gpu' is not one of auto, prefetch, cpu"},
      {"policy = ", "p.toml:1:"},  // not TOML at all
  };
  for (const Case& c : cases) {
    auto p = parse_policy_toml(c.text, "p.toml");
    ASSERT_FALSE(p.is_ok()) << c.text;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_CONTAINS(p.status().message(), c.message);
  }
}

TEST(PolicyFile, ShippedExamplesAreValid) {
  const std::filesystem::path dir = std::filesystem::path(STRATA_SOURCE_DIR) / "policies/examples";
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".toml") continue;
    auto p = load_policy_file(entry.path().string());
    EXPECT_TRUE(p.is_ok()) << entry.path() << ": " << p.status().to_string();
    ++n;
  }
  EXPECT_GE(n, 4);
}

TEST(PolicyFile, MissingFileIsAnIoError) {
  auto p = load_policy_file("/nonexistent/policy.toml");
  EXPECT_EQ(p.status().code(), StatusCode::kIoError);
  EXPECT_CONTAINS(p.status().message(), "/nonexistent/policy.toml");
}

}  // namespace
}  // namespace strata
