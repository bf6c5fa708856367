#include "offload/exec/engine.h"

#include <algorithm>
#include <set>

namespace strata {

Status forward_in_chunks(const HyperParams& hp, bool has_sequence, int64_t held_tokens,
                         int64_t max_context, int64_t max_batch_tokens, SeqId seq,
                         std::span<const int32_t> tokens, bool all_logits,
                         std::vector<float>* logits, const ChunkRunner& run_chunk) {
  if (!has_sequence) return Status::not_found("unknown sequence " + std::to_string(seq));
  if (tokens.empty()) return Status::invalid_argument("no tokens to run");
  for (int32_t id : tokens) {
    if (id < 0 || id >= hp.n_vocab) {
      return Status::invalid_argument("token id " + std::to_string(id) +
                                      " is outside the vocabulary (0.." +
                                      std::to_string(hp.n_vocab - 1) + ")");
    }
  }
  const int64_t total = held_tokens + static_cast<int64_t>(tokens.size());
  if (total > max_context) {
    return Status::invalid_argument("the sequence would hold " + std::to_string(total) +
                                    " tokens, more than the context of " +
                                    std::to_string(max_context) + " (--ctx)");
  }
  logits->resize(static_cast<size_t>((all_logits ? tokens.size() : 1) * hp.n_vocab));
  const auto chunk = static_cast<size_t>(max_batch_tokens);
  for (size_t start = 0; start < tokens.size(); start += chunk) {
    const size_t n = std::min(chunk, tokens.size() - start);
    const bool last_chunk = start + n == tokens.size();
    float* out = all_logits ? logits->data() + start * hp.n_vocab : logits->data();
    STRATA_RETURN_IF_ERROR(
        run_chunk(tokens.subspan(start, n), all_logits || last_chunk ? out : nullptr));
  }
  return Status::ok();
}

Status check_prompt(const HyperParams& hp, std::span<const int32_t> tokens, int64_t max_context) {
  for (int32_t id : tokens) {
    if (id < 0 || id >= hp.n_vocab) {
      return Status::invalid_argument("token id " + std::to_string(id) +
                                      " is outside the vocabulary (0.." +
                                      std::to_string(hp.n_vocab - 1) + ")");
    }
  }
  if (static_cast<int64_t>(tokens.size()) > max_context) {
    return Status::invalid_argument("the sequence would hold " + std::to_string(tokens.size()) +
                                    " tokens, more than the context of " +
                                    std::to_string(max_context) + " (--ctx)");
  }
  return Status::ok();
}

Status check_batch(const Engine& engine, std::span<const SeqId> seqs,
                   std::span<const int32_t> tokens, std::vector<float>* logits) {
  if (seqs.empty()) return Status::invalid_argument("forward_batch: no sequences");
  if (seqs.size() != tokens.size()) {
    return Status::invalid_argument("forward_batch: " + std::to_string(seqs.size()) +
                                    " sequences but " + std::to_string(tokens.size()) + " tokens");
  }
  const HyperParams& hp = engine.hp();
  std::set<SeqId> seen;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqId seq = seqs[i];
    if (!engine.has_sequence(seq))
      return Status::not_found("unknown sequence " + std::to_string(seq));
    if (!seen.insert(seq).second) {
      return Status::invalid_argument("forward_batch: sequence " + std::to_string(seq) +
                                      " appears twice");
    }
    if (tokens[i] < 0 || tokens[i] >= hp.n_vocab) {
      return Status::invalid_argument("token id " + std::to_string(tokens[i]) +
                                      " is outside the vocabulary (0.." +
                                      std::to_string(hp.n_vocab - 1) + ")");
    }
    if (engine.num_tokens(seq) + 1 > engine.max_context()) {
      return Status::invalid_argument("sequence " + std::to_string(seq) +
                                      " would pass the context of " +
                                      std::to_string(engine.max_context()) + " (--ctx)");
    }
  }
  logits->resize(seqs.size() * static_cast<size_t>(hp.n_vocab));
  return Status::ok();
}

Status Engine::forward_batch(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                             std::vector<float>* logits) {
  STRATA_RETURN_IF_ERROR(check_batch(*this, seqs, tokens, logits));
  std::vector<float> row;
  const auto n_vocab = static_cast<size_t>(hp().n_vocab);
  for (size_t i = 0; i < seqs.size(); ++i) {
    STRATA_RETURN_IF_ERROR(forward(seqs[i], tokens.subspan(i, 1), false, &row));
    std::copy(row.begin(), row.end(), logits->begin() + static_cast<std::ptrdiff_t>(i * n_vocab));
  }
  return Status::ok();
}

}  // namespace strata
