#include "offload/exec/engine.h"

#include <algorithm>

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

}  // namespace strata
