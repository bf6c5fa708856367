#include "offload/exec/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace strata {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Every filter off: the draw is exactly softmax(logits / temperature).
SamplerConfig plain_config(float temperature, uint32_t seed = 1234) {
  SamplerConfig config;
  config.temperature = temperature;
  config.top_k = 0;
  config.top_p = 1.0f;
  config.min_p = 0.0f;
  config.repeat_penalty = 1.0f;
  config.seed = seed;
  return config;
}

Sampler make_sampler(const SamplerConfig& config) {
  auto sampler = Sampler::create(config);
  EXPECT_TRUE(sampler.is_ok()) << sampler.status().to_string();
  return std::move(sampler).value();
}

int32_t sample_ok(Sampler& sampler, const std::vector<float>& logits) {
  auto token = sampler.sample(logits);
  EXPECT_TRUE(token.is_ok()) << token.status().to_string();
  return token.is_ok() ? *token : -1;
}

// The tokens seen in `draws` samples (a fresh sampler state each time is not needed: the filters
// do not depend on history when the penalty is off).
std::set<int32_t> tokens_seen(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::set<int32_t> seen;
  for (int i = 0; i < draws; ++i) seen.insert(sample_ok(sampler, logits));
  return seen;
}

std::vector<float> log_probs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

TEST(SamplerConfigTest, DefaultsAreLlamaCpps) {
  const SamplerConfig config;
  EXPECT_FLOAT_EQ(config.temperature, 0.8f);
  EXPECT_EQ(config.top_k, 40);
  EXPECT_FLOAT_EQ(config.top_p, 0.95f);
  EXPECT_FLOAT_EQ(config.min_p, 0.05f);
  EXPECT_FLOAT_EQ(config.repeat_penalty, 1.0f);
  EXPECT_EQ(config.repeat_last_n, 64);
  EXPECT_EQ(config.seed, SamplerConfig::kRandomSeed);
  EXPECT_TRUE(config.validate().is_ok());
}

TEST(SamplerConfigTest, InvalidValuesGiveAnErrorNamingTheFlagAndTheValue) {
  struct Case {
    std::function<void(SamplerConfig&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](SamplerConfig& c) { c.temperature = -1.0f; },
       "--temp must be a finite number >= 0 (0 = greedy), got -1"},
      {[](SamplerConfig& c) { c.temperature = NAN; },
       "--temp must be a finite number >= 0 (0 = greedy), got nan"},
      {[](SamplerConfig& c) { c.temperature = kInf; },
       "--temp must be a finite number >= 0 (0 = greedy), got inf"},
      {[](SamplerConfig& c) { c.top_k = -3; }, "--top-k must be >= 0 (0 = off), got -3"},
      {[](SamplerConfig& c) { c.top_p = 1.5f; }, "--top-p must be in (0, 1], got 1.5"},
      {[](SamplerConfig& c) { c.top_p = 0.0f; }, "--top-p must be in (0, 1], got 0"},
      {[](SamplerConfig& c) { c.top_p = NAN; }, "--top-p must be in (0, 1], got nan"},
      {[](SamplerConfig& c) { c.min_p = -0.1f; }, "--min-p must be in [0, 1], got -0.1"},
      {[](SamplerConfig& c) { c.min_p = 2.0f; }, "--min-p must be in [0, 1], got 2"},
      {[](SamplerConfig& c) { c.repeat_penalty = 0.0f; },
       "--repeat-penalty must be a finite number > 0 (1 = off), got 0"},
      {[](SamplerConfig& c) { c.repeat_penalty = -1.1f; },
       "--repeat-penalty must be a finite number > 0 (1 = off), got -1.1"},
      {[](SamplerConfig& c) { c.repeat_last_n = -2; },
       "--repeat-last-n must be >= -1 (0 = off, -1 = all), got -2"},
  };
  for (const Case& c : cases) {
    SamplerConfig config;
    c.change(config);
    const Status status = config.validate();
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(status.message(), c.message);
    auto sampler = Sampler::create(config);  // create validates too
    ASSERT_FALSE(sampler.is_ok());
    EXPECT_EQ(sampler.status().message(), c.message);
  }
}

TEST(SamplerConfigTest, BoundaryValuesAreValid) {
  SamplerConfig config;
  config.temperature = 0.0f;
  config.top_k = 0;
  config.top_p = 1.0f;
  config.min_p = 1.0f;
  config.repeat_last_n = -1;
  EXPECT_TRUE(config.validate().is_ok());
  config.min_p = 0.0f;
  config.repeat_last_n = 0;
  EXPECT_TRUE(config.validate().is_ok());
}

TEST(SamplerTest, GreedyPicksTheArgmax) {
  Sampler sampler = make_sampler(plain_config(0.0f));
  EXPECT_EQ(sample_ok(sampler, {0.1f, 2.5f, -3.0f, 2.4f}), 1);
  EXPECT_EQ(sample_ok(sampler, {-5.0f, -4.0f, -4.5f}), 1);
  EXPECT_EQ(sample_ok(sampler, {7.0f}), 0);
  EXPECT_EQ(sample_ok(sampler, {-kInf, -kInf, 1.0f}), 2);
}

TEST(SamplerTest, GreedyTiesGoToTheLowestId) {
  Sampler sampler = make_sampler(plain_config(0.0f));
  EXPECT_EQ(sample_ok(sampler, {1.0f, 3.0f, 3.0f, 3.0f}), 1);
  EXPECT_EQ(sample_ok(sampler, {0.0f, 0.0f}), 0);

  SamplerConfig with_filters;  // defaults, greedy: the same answer through the filtered path
  with_filters.temperature = 0.0f;
  with_filters.repeat_penalty = 1.1f;
  Sampler filtered = make_sampler(with_filters);
  EXPECT_EQ(sample_ok(filtered, {1.0f, 3.0f, 3.0f, 3.0f}), 1);
}

TEST(SamplerTest, TopKOneEqualsGreedyAtAnyTemperature) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float temperature : {0.0f, 0.1f, 1.0f, 5.0f, 1000.0f}) {
    SamplerConfig config = plain_config(temperature, /*seed=*/99);
    config.top_k = 1;
    Sampler sampler = make_sampler(config);
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<float> logits(500);
      for (float& x : logits) x = normal(rng);
      logits[trial * 7] = logits[trial * 7 + 3] = 20.0f;  // a tie at the top: lowest id wins
      int32_t argmax = 0;
      for (size_t i = 1; i < logits.size(); ++i) {
        if (logits[i] > logits[argmax]) argmax = static_cast<int32_t>(i);
      }
      EXPECT_EQ(sample_ok(sampler, logits), argmax) << "temperature " << temperature;
    }
  }
}

TEST(SamplerTest, FixedSeedIsReproducible) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i)) * 4.0f;
  SamplerConfig config;  // llama.cpp defaults, all filters on
  config.seed = 42;
  config.repeat_penalty = 1.1f;
  Sampler first = make_sampler(config);
  Sampler second = make_sampler(config);
  std::vector<int32_t> first_tokens, second_tokens;
  for (int i = 0; i < 300; ++i) {
    first_tokens.push_back(sample_ok(first, logits));
    second_tokens.push_back(sample_ok(second, logits));
  }
  EXPECT_EQ(first_tokens, second_tokens);
  EXPECT_GT(std::set<int32_t>(first_tokens.begin(), first_tokens.end()).size(), 3u);

  first.reset();  // same seed, empty history: the same tokens again
  std::vector<int32_t> again;
  for (int i = 0; i < 300; ++i) again.push_back(sample_ok(first, logits));
  EXPECT_EQ(again, first_tokens);

  config.seed = 43;
  Sampler other = make_sampler(config);
  std::vector<int32_t> other_tokens;
  for (int i = 0; i < 300; ++i) other_tokens.push_back(sample_ok(other, logits));
  EXPECT_NE(other_tokens, first_tokens);
}

TEST(SamplerTest, RandomSeedIsDrawnAndReportedSoARunCanBeRepeated) {
  SamplerConfig config = plain_config(1.0f, SamplerConfig::kRandomSeed);
  Sampler random = make_sampler(config);
  config.seed = random.seed();
  Sampler replay = make_sampler(config);
  EXPECT_EQ(replay.seed(), random.seed());
  const std::vector<float> logits = {0.0f, 0.5f, 1.0f, 0.2f, 0.9f};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sample_ok(random, logits), sample_ok(replay, logits));
}

TEST(SamplerTest, TemperatureSamplingMatchesSoftmaxOfLogitsOverTemperature) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f};
  constexpr int kDraws = 100000;
  // Chi-square with 5 degrees of freedom: P(chi2 > 20.52) = 0.001 for a correct sampler.
  constexpr double kChiSquareBound = 20.52;
  for (float temperature : {0.5f, 1.0f, 2.5f}) {
    Sampler sampler = make_sampler(plain_config(temperature, /*seed=*/2024));
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < kDraws; ++i) ++counts[sample_ok(sampler, logits)];

    double z = 0.0;
    for (float l : logits) z += std::exp(l / temperature);
    double chi_square = 0.0;
    for (size_t id = 0; id < logits.size(); ++id) {
      const double expected = kDraws * std::exp(logits[id] / temperature) / z;
      chi_square += (counts[id] - expected) * (counts[id] - expected) / expected;
    }
    EXPECT_LT(chi_square, kChiSquareBound) << "temperature " << temperature;
  }
}

TEST(SamplerTest, NegativeInfinityLogitsAreNeverPicked) {
  Sampler sampler = make_sampler(plain_config(5.0f));
  EXPECT_EQ(tokens_seen(sampler, {-kInf, 0.0f, -kInf, -30.0f}, 2000), (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, TopKKeepsTheKHighestLogitsTiesByLowestId) {
  SamplerConfig config = plain_config(100.0f);  // nearly uniform over what is kept
  config.top_k = 2;
  Sampler sampler = make_sampler(config);
  EXPECT_EQ(tokens_seen(sampler, {1.0f, 5.0f, 3.0f, 5.0f, 2.0f}, 2000), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(tokens_seen(sampler, {4.0f, 3.0f, 3.0f, 3.0f, 1.0f}, 2000), (std::set<int32_t>{0, 1}));
}

TEST(SamplerTest, TopPKeepsTheFewestTokensWhoseProbabilityReachesP) {
  // Probabilities 0.5, 0.25, 0.15, 0.1 (ids 2, 0, 3, 1).
  const std::vector<float> logits = log_probs({0.25, 0.1, 0.5, 0.15});
  for (auto [top_p, kept] : std::vector<std::pair<float, std::set<int32_t>>>{
           {0.3f, {2}}, {0.7f, {2, 0}}, {0.8f, {2, 0, 3}}, {0.95f, {2, 0, 3, 1}}}) {
    // Temperature is applied after top-p (llama.cpp's order), so a high temperature changes how
    // often each kept token is drawn but not which tokens are kept.
    SamplerConfig config = plain_config(50.0f);
    config.top_p = top_p;
    Sampler sampler = make_sampler(config);
    EXPECT_EQ(tokens_seen(sampler, logits, 3000), kept) << "top_p " << top_p;
  }
}

TEST(SamplerTest, MinPDropsTokensLessLikelyThanMinPTimesTheMostLikely) {
  // Probabilities 0.4, 0.3, 0.2, 0.06, 0.04: with min_p 0.2 the bar is 0.08.
  const std::vector<float> logits = log_probs({0.06, 0.4, 0.2, 0.04, 0.3});
  SamplerConfig config = plain_config(50.0f);
  config.min_p = 0.2f;
  Sampler sampler = make_sampler(config);
  EXPECT_EQ(tokens_seen(sampler, logits, 3000), (std::set<int32_t>{1, 2, 4}));

  config.min_p = 1.0f;  // only the most likely token
  Sampler strict = make_sampler(config);
  EXPECT_EQ(tokens_seen(strict, logits, 500), (std::set<int32_t>{1}));
}

TEST(SamplerTest, FiltersCombineInLlamaCppOrder) {
  // top-k 3 keeps ids 4, 1, 0 (p 0.55, 0.3, 0.1); top-p 0.99 over their renormalised
  // probabilities (0.58, 0.32, 0.11) keeps all three; min-p 0.3 then drops id 0 (0.1 < 0.3 * 0.55).
  const std::vector<float> logits = log_probs({0.1, 0.3, 0.02, 0.03, 0.55});
  SamplerConfig config = plain_config(50.0f);
  config.top_k = 3;
  config.top_p = 0.99f;
  config.min_p = 0.3f;
  Sampler sampler = make_sampler(config);
  EXPECT_EQ(tokens_seen(sampler, logits, 3000), (std::set<int32_t>{1, 4}));
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplerConfig config = plain_config(0.0f);
  config.repeat_penalty = 1.2f;
  Sampler sampler = make_sampler(config);
  EXPECT_EQ(sample_ok(sampler, {2.0f, 1.8f, -1.0f}), 0);  // history empty so far; 0 joins it
  // 2.0 / 1.2 = 1.67 < 1.8: the repeated token loses.
  EXPECT_EQ(sample_ok(sampler, {2.0f, 1.8f, -1.0f}), 1);

  Sampler negative = make_sampler(config);
  negative.accept(0);
  // -0.5 * 1.2 = -0.6 < -0.55.
  EXPECT_EQ(sample_ok(negative, {-0.5f, -0.55f}), 1);
}

TEST(SamplerTest, RepetitionPenaltyCountsEachTokenOnce) {
  SamplerConfig config = plain_config(0.0f);
  config.repeat_penalty = 1.2f;
  Sampler sampler = make_sampler(config);
  for (int i = 0; i < 3; ++i) sampler.accept(0);
  // Once: 2.0 / 1.2 = 1.67 > 1.6. Three times (if counted): 2.0 / 1.728 = 1.16 < 1.6.
  EXPECT_EQ(sample_ok(sampler, {2.0f, 1.6f}), 0);
}

TEST(SamplerTest, RepetitionPenaltyLooksOnlyAtTheLastNTokens) {
  SamplerConfig config = plain_config(0.0f);
  config.repeat_penalty = 2.0f;
  config.repeat_last_n = 2;
  Sampler sampler = make_sampler(config);
  for (int32_t token : {0, 5, 6}) sampler.accept(token);  // 0 has left the window
  EXPECT_EQ(sample_ok(sampler, {2.0f, 1.5f, 0, 0, 0, 0, 0}), 0);
  // History is now {6, 0}: token 0 is in the window.
  EXPECT_EQ(sample_ok(sampler, {2.0f, 1.5f, 0, 0, 0, 0, 0}), 1);

  // Long histories keep working (the window is trimmed in place).
  for (int i = 0; i < 1000; ++i) sampler.accept(3);
  EXPECT_EQ(sample_ok(sampler, {2.0f, 1.5f, 0, 1.9f, 0, 0, 0}), 0);

  config.repeat_last_n = -1;  // the whole history
  Sampler all = make_sampler(config);
  all.accept(0);
  for (int i = 0; i < 500; ++i) all.accept(4);
  EXPECT_EQ(sample_ok(all, {2.0f, 1.5f, 0, 0, 0}), 1);

  config.repeat_last_n = 0;  // off
  Sampler off = make_sampler(config);
  off.accept(0);
  EXPECT_EQ(sample_ok(off, {2.0f, 1.5f}), 0);
}

TEST(SamplerTest, HistoryTokenOutsideTheVocabularyIsAnError) {
  SamplerConfig config = plain_config(0.0f);
  config.repeat_penalty = 1.1f;
  Sampler sampler = make_sampler(config);
  sampler.accept(10);
  auto token = sampler.sample(std::vector<float>{1.0f, 2.0f});
  ASSERT_FALSE(token.is_ok());
  EXPECT_EQ(token.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(token.status().message().find(
                "token 10 in the repetition history is outside the vocabulary of 2 tokens"),
            std::string::npos)
      << token.status().message();
}

TEST(SamplerTest, NonFiniteLogitsAreAnErrorNotASilentPick) {
  for (float temperature : {0.0f, 0.8f}) {
    SamplerConfig config;
    config.temperature = temperature;
    config.seed = 1;
    Sampler sampler = make_sampler(config);

    auto nan = sampler.sample(std::vector<float>{1.0f, NAN, 3.0f});
    ASSERT_FALSE(nan.is_ok());
    EXPECT_EQ(nan.status().code(), StatusCode::kInvalidData);
    EXPECT_NE(nan.status().message().find("the logit of token 1 is NaN"), std::string::npos)
        << nan.status().message();

    auto inf = sampler.sample(std::vector<float>{1.0f, 2.0f, kInf});
    ASSERT_FALSE(inf.is_ok());
    EXPECT_NE(inf.status().message().find("the logit of token 2 is +inf"), std::string::npos);

    auto all_masked = sampler.sample(std::vector<float>{-kInf, -kInf});
    ASSERT_FALSE(all_masked.is_ok());
    EXPECT_NE(all_masked.status().message().find("every one of the 2 logits is -inf"),
              std::string::npos);

    auto empty = sampler.sample(std::vector<float>{});
    EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(SamplerTest, LargeVocabularyWithDefaultFilters) {
  // Qwen2-sized vocabulary; one clear favourite and a long tail.
  std::vector<float> logits(152064);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : logits) x = normal(rng);
  logits[123456] = 30.0f;
  SamplerConfig config;
  config.seed = 5;
  Sampler sampler = make_sampler(config);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_ok(sampler, logits), 123456);

  config.top_k = 0;  // top-p over the whole vocabulary (full sort)
  Sampler no_top_k = make_sampler(config);
  EXPECT_EQ(sample_ok(no_top_k, logits), 123456);
}

}  // namespace
}  // namespace strata
