// Sampler: turns the logits of one step into the next token, the way llama.cpp's default sampler
// chain does: repetition penalty, then top-k, top-p, min-p, then temperature, then a draw from the
// softmax with the sampler's own seeded RNG. Temperature 0 is greedy: the argmax of the penalised
// logits, ties going to the lowest token id.
//
// Like llama.cpp, top-p and min-p look at the probabilities before temperature (temperature is the
// last step), so temperature reshapes the kept tokens without changing which tokens are kept.
//
// Ownership and state: a Sampler owns its RNG, its repetition history and one scratch buffer of
// vocabulary size that is reused every step; it allocates nothing per token once that buffer has
// grown to the vocabulary. There is no global state: two samplers with the same config, seed and
// history pick the same tokens. Not thread-safe: one sampler per sequence.
//
// Example usage:
//   SamplerConfig config;                 // llama.cpp's defaults
//   config.seed = 42;
//   STRATA_ASSIGN_OR_RETURN(Sampler sampler, Sampler::create(config));  // validates the config
//   for (int32_t token : prompt) sampler.accept(token);                  // history for the penalty
//   STRATA_ASSIGN_OR_RETURN(int32_t next, sampler.sample(logits));       // also accepts `next`
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "offload/core/status.h"

namespace strata {

struct SamplerConfig {
  // A seed value that asks for a random seed (llama.cpp's LLAMA_DEFAULT_SEED).
  static constexpr uint32_t kRandomSeed = 0xFFFFFFFFu;

  // --temp: divides the logits before the draw. 0 = greedy. Default 0.8.
  float temperature = 0.8f;
  // --top-k: keep only the k highest logits. 0 = off. Default 40.
  int32_t top_k = 40;
  // --top-p: keep the fewest most likely tokens whose probabilities sum to at least p. 1 = off.
  // Default 0.95.
  float top_p = 0.95f;
  // --min-p: drop tokens whose probability is below min_p times that of the most likely. 0 = off.
  // Default 0.05.
  float min_p = 0.05f;
  // --repeat-penalty: for each distinct token among the last repeat_last_n, a positive logit is
  // divided by it and any other is multiplied by it. 1 = off (the default).
  float repeat_penalty = 1.0f;
  // --repeat-last-n: how many of the latest tokens the penalty looks at. 0 = none, -1 = all of the
  // history. Default 64.
  int32_t repeat_last_n = 64;
  // --seed: the RNG seed; kRandomSeed (the default) draws one from std::random_device.
  uint32_t seed = kRandomSeed;

  // invalid_argument naming the flag and the value for the first out-of-range field.
  Status validate() const;
};

class Sampler {
 public:
  // invalid_argument when config.validate() fails.
  static StatusOr<Sampler> create(const SamplerConfig& config);

  // Picks the next token from `logits` ([n_vocab], one per token id) and appends it to the
  // history. invalid_data when a logit is NaN or +inf or when every logit is -inf (the forward
  // pass went wrong: never a silent pick); invalid_argument when `logits` is empty or the history
  // holds a token id outside [0, n_vocab).
  StatusOr<int32_t> sample(std::span<const float> logits);

  // Appends a token the sampler did not pick (the prompt) to the repetition history.
  void accept(int32_t token);

  // Clears the history and restarts the RNG from seed(): the next samples repeat the first ones.
  void reset();

  // The seed in use: config().seed, or the one drawn when that asked for a random seed.
  uint32_t seed() const { return seed_; }
  const SamplerConfig& config() const { return config_; }

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };

  Sampler(const SamplerConfig& config, uint32_t seed);

  Status check_logits(std::span<const float> logits) const;
  // candidates_ = every token in id order with the repetition penalty applied.
  Status load_candidates(std::span<const float> logits);
  void keep_top_k();
  void keep_top_p();
  void keep_min_p();
  int32_t draw();
  double next_uniform();  // [0, 1) from 53 bits of the RNG: the same on every platform
  std::span<const int32_t> penalty_window() const;

  SamplerConfig config_;
  uint32_t seed_;
  std::mt19937 rng_;
  std::vector<Candidate> candidates_;  // scratch: grows to n_vocab once, then reused
  size_t num_candidates_ = 0;          // the live prefix of candidates_
  bool candidates_sorted_ = false;     // live prefix sorted by logit, descending, ties by id
  std::vector<int32_t> history_;       // accepted tokens, oldest first (trimmed to the window)
  std::vector<int32_t> penalized_;     // scratch: distinct tokens of the penalty window
};

}  // namespace strata
