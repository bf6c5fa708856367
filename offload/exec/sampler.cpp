#include "offload/exec/sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <string>

namespace strata {
namespace {

std::string format_value(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

// Logit descending, then token id ascending: a total order, so every step is deterministic.
bool more_likely(const auto& a, const auto& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

}  // namespace

Status SamplerConfig::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return Status::invalid_argument("--temp must be a finite number >= 0 (0 = greedy), got " +
                                    format_value(temperature));
  }
  if (top_k < 0) {
    return Status::invalid_argument("--top-k must be >= 0 (0 = off), got " + std::to_string(top_k));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return Status::invalid_argument("--top-p must be in (0, 1], got " + format_value(top_p));
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return Status::invalid_argument("--min-p must be in [0, 1], got " + format_value(min_p));
  }
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty)) {
    return Status::invalid_argument("--repeat-penalty must be a finite number > 0 (1 = off), got " +
                                    format_value(repeat_penalty));
  }
  if (repeat_last_n < -1) {
    return Status::invalid_argument("--repeat-last-n must be >= -1 (0 = off, -1 = all), got " +
                                    std::to_string(repeat_last_n));
  }
  return Status::ok();
}

StatusOr<Sampler> Sampler::create(const SamplerConfig& config) {
  STRATA_RETURN_IF_ERROR(config.validate());
  const uint32_t seed =
      config.seed == SamplerConfig::kRandomSeed ? std::random_device{}() : config.seed;
  return Sampler(config, seed);
}

Sampler::Sampler(const SamplerConfig& config, uint32_t seed)
    : config_(config), seed_(seed), rng_(seed) {
  if (config_.repeat_last_n > 0) {
    history_.reserve(2 * static_cast<size_t>(config_.repeat_last_n));
    penalized_.reserve(static_cast<size_t>(config_.repeat_last_n));
  }
}

void Sampler::reset() {
  history_.clear();
  rng_.seed(seed_);
}

void Sampler::accept(int32_t token) {
  if (config_.repeat_penalty == 1.0f || config_.repeat_last_n == 0)
    return;  // no penalty: no history
  if (config_.repeat_last_n > 0) {
    // Keep at most 2n tokens, dropping the oldest n at a time: amortised O(1), no reallocation.
    const auto window = static_cast<size_t>(config_.repeat_last_n);
    if (history_.size() >= 2 * window)
      history_.erase(history_.begin(), history_.end() - (window - 1));
  }
  history_.push_back(token);
}

std::span<const int32_t> Sampler::penalty_window() const {
  std::span<const int32_t> all(history_);
  if (config_.repeat_last_n < 0 || all.size() <= static_cast<size_t>(config_.repeat_last_n)) {
    return all;
  }
  return all.last(static_cast<size_t>(config_.repeat_last_n));
}

Status Sampler::check_logits(std::span<const float> logits) const {
  if (logits.empty()) return Status::invalid_argument("sampler: no logits to sample from");
  bool any_finite = false;
  for (size_t id = 0; id < logits.size(); ++id) {
    const float logit = logits[id];
    if (std::isnan(logit) || logit == INFINITY) {
      return Status::invalid_data("sampler: the logit of token " + std::to_string(id) + " is " +
                                  (std::isnan(logit) ? "NaN" : "+inf") +
                                  "; the forward pass produced a non-finite value");
    }
    any_finite = any_finite || logit != -INFINITY;
  }
  if (!any_finite) {
    return Status::invalid_data("sampler: every one of the " + std::to_string(logits.size()) +
                                " logits is -inf, so there is no token to pick");
  }
  return Status::ok();
}

Status Sampler::load_candidates(std::span<const float> logits) {
  candidates_.resize(logits.size());  // allocates only while the buffer grows to n_vocab
  for (size_t id = 0; id < logits.size(); ++id) {
    candidates_[id] = Candidate{static_cast<int32_t>(id), logits[id]};
  }
  num_candidates_ = logits.size();
  candidates_sorted_ = false;

  if (config_.repeat_penalty == 1.0f || config_.repeat_last_n == 0) return Status::ok();
  // Each distinct token of the window is penalised once, however often it occurs (llama.cpp).
  const std::span<const int32_t> window = penalty_window();
  penalized_.assign(window.begin(), window.end());
  std::sort(penalized_.begin(), penalized_.end());
  penalized_.erase(std::unique(penalized_.begin(), penalized_.end()), penalized_.end());
  for (int32_t id : penalized_) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) {
      return Status::invalid_argument("sampler: token " + std::to_string(id) +
                                      " in the repetition history is outside the vocabulary of " +
                                      std::to_string(logits.size()) + " tokens");
    }
    float& logit = candidates_[id].logit;
    logit = logit > 0.0f ? logit / config_.repeat_penalty : logit * config_.repeat_penalty;
    logit = std::min(logit, FLT_MAX);  // a tiny penalty must not turn a logit into +inf
  }
  return Status::ok();
}

void Sampler::keep_top_k() {
  const auto k = static_cast<size_t>(config_.top_k);
  if (k == 0 || k >= num_candidates_) return;
  auto begin = candidates_.begin();
  std::nth_element(begin, begin + static_cast<ptrdiff_t>(k), begin + num_candidates_,
                   more_likely<Candidate, Candidate>);
  std::sort(begin, begin + static_cast<ptrdiff_t>(k), more_likely<Candidate, Candidate>);
  num_candidates_ = k;
  candidates_sorted_ = true;
}

void Sampler::keep_top_p() {
  if (config_.top_p >= 1.0f) return;
  auto begin = candidates_.begin();
  if (!candidates_sorted_) {
    std::sort(begin, begin + static_cast<ptrdiff_t>(num_candidates_),
              more_likely<Candidate, Candidate>);
    candidates_sorted_ = true;
  }
  const double max_logit = candidates_[0].logit;
  double sum = 0.0;
  for (size_t i = 0; i < num_candidates_; ++i) sum += std::exp(candidates_[i].logit - max_logit);
  // Keep tokens in order of probability until their sum reaches top_p (the token that crosses it
  // is kept), as llama.cpp does.
  double cumulative = 0.0;
  for (size_t i = 0; i < num_candidates_; ++i) {
    cumulative += std::exp(candidates_[i].logit - max_logit) / sum;
    if (cumulative >= config_.top_p) {
      num_candidates_ = i + 1;
      return;
    }
  }
}

void Sampler::keep_min_p() {
  if (config_.min_p <= 0.0f) return;
  float max_logit = candidates_[0].logit;
  if (!candidates_sorted_) {
    for (size_t i = 1; i < num_candidates_; ++i)
      max_logit = std::max(max_logit, candidates_[i].logit);
  }
  // p_i >= min_p * p_max  <=>  logit_i >= max_logit + log(min_p). The most likely token stays.
  const float min_logit = max_logit + std::log(config_.min_p);
  size_t kept = 0;
  for (size_t i = 0; i < num_candidates_; ++i) {
    if (candidates_[i].logit >= min_logit) candidates_[kept++] = candidates_[i];
  }
  num_candidates_ = kept;  // order kept: a sorted prefix stays sorted
}

double Sampler::next_uniform() {
  const uint32_t high = rng_() >> 5;                      // 27 bits
  const uint32_t low = rng_() >> 6;                       // 26 bits
  return (high * 67108864.0 + low) / 9007199254740992.0;  // / 2^53
}

int32_t Sampler::draw() {
  float max_logit = candidates_[0].logit;
  for (size_t i = 1; i < num_candidates_; ++i)
    max_logit = std::max(max_logit, candidates_[i].logit);
  const double inv_temperature = 1.0 / config_.temperature;
  double total = 0.0;
  for (size_t i = 0; i < num_candidates_; ++i) {
    total += std::exp((static_cast<double>(candidates_[i].logit) - max_logit) * inv_temperature);
  }
  const double target = next_uniform() * total;
  double cumulative = 0.0;
  size_t last_possible = 0;
  for (size_t i = 0; i < num_candidates_; ++i) {
    const double weight =
        std::exp((static_cast<double>(candidates_[i].logit) - max_logit) * inv_temperature);
    if (weight <= 0.0) continue;
    cumulative += weight;
    last_possible = i;
    if (cumulative > target) return candidates_[i].id;
  }
  return candidates_[last_possible].id;  // rounding left target at the very end of the range
}

StatusOr<int32_t> Sampler::sample(std::span<const float> logits) {
  STRATA_RETURN_IF_ERROR(check_logits(logits));
  int32_t token = 0;
  const bool penalize = config_.repeat_penalty != 1.0f && config_.repeat_last_n != 0;
  if (config_.temperature == 0.0f && !penalize) {
    // Greedy without penalty: the argmax of the logits as they are; strict > keeps the lowest id.
    for (size_t id = 1; id < logits.size(); ++id) {
      if (logits[id] > logits[token]) token = static_cast<int32_t>(id);
    }
  } else {
    STRATA_RETURN_IF_ERROR(load_candidates(logits));
    if (config_.temperature == 0.0f) {
      // Greedy: the filters below never drop the most likely token, so they cannot change it.
      for (size_t i = 1; i < num_candidates_; ++i) {
        if (candidates_[i].logit > candidates_[token].logit) token = static_cast<int32_t>(i);
      }
    } else {
      keep_top_k();
      keep_top_p();
      keep_min_p();
      token = draw();
    }
  }
  accept(token);
  return token;
}

}  // namespace strata
