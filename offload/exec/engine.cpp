#include "offload/exec/engine.h"

#include <algorithm>
#include <set>

namespace strata {

namespace {

// Ids in the vocabulary, and a sequence holding `held_tokens` that stays within max_context.
Status check_tokens(const HyperParams& hp, std::span<const int32_t> tokens, int64_t held_tokens,
                    int64_t max_context) {
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
  return Status::ok();
}

}  // namespace

Status forward_in_chunks(const HyperParams& hp, KvCache& kv, bool share_prefixes,
                         int64_t max_context, int64_t max_batch_tokens, SeqId seq,
                         std::span<const int32_t> tokens, bool all_logits,
                         std::vector<float>* logits, const ChunkRunner& run_chunk) {
  if (!kv.has_sequence(seq)) return Status::not_found("unknown sequence " + std::to_string(seq));
  if (tokens.empty()) return Status::invalid_argument("no tokens to run");
  STRATA_RETURN_IF_ERROR(check_tokens(hp, tokens, kv.num_tokens(seq), max_context));
  logits->resize(static_cast<size_t>((all_logits ? tokens.size() : 1) * hp.n_vocab));
  // A prompt that starts like one another live sequence holds: its full blocks are shared, not
  // run (all_logits needs every position's logits, so it runs them all).
  if (share_prefixes && !all_logits && kv.num_tokens(seq) == 0) {
    STRATA_ASSIGN_OR_RETURN(const int64_t shared, kv.attach_prefix(seq, tokens));
    tokens = tokens.subspan(static_cast<size_t>(shared));
  }
  const auto chunk = static_cast<size_t>(max_batch_tokens);
  for (size_t start = 0; start < tokens.size(); start += chunk) {
    const size_t n = std::min(chunk, tokens.size() - start);
    const bool last_chunk = start + n == tokens.size();
    float* out = all_logits ? logits->data() + start * hp.n_vocab : logits->data();
    const int64_t pos0 = kv.num_tokens(seq);
    const std::span<const int32_t> part = tokens.subspan(start, n);
    STRATA_RETURN_IF_ERROR(run_chunk(part, all_logits || last_chunk ? out : nullptr));
    STRATA_RETURN_IF_ERROR(finish_chunk(kv, seq, pos0, part));
  }
  return Status::ok();
}

Status finish_chunk(KvCache& kv, SeqId seq, int64_t pos0, std::span<const int32_t> tokens) {
  STRATA_RETURN_IF_ERROR(kv.commit_tokens(seq, pos0, tokens));
  return kv.demote_cold(seq).status();
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
    STRATA_RETURN_IF_ERROR(
        check_tokens(hp, tokens.subspan(i, 1), engine.num_tokens(seq), engine.max_context()));
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
