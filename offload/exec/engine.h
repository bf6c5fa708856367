// Engine: what the commands (`run`, `eval`, `perplexity`) and the benchmarks drive: a model with
// per-sequence KV caches that turns tokens into logits. Two implementations today: Executor (the
// CPU, offload/exec/executor.h) and GpuExecutor (the whole model in VRAM, gpu_executor.h); both
// give the same greedy tokens.
//
// Example usage:
//   STRATA_RETURN_IF_ERROR(engine.add_sequence(0));
//   STRATA_RETURN_IF_ERROR(engine.forward(0, prompt_ids, /*all_logits=*/false, &logits));
//   ... sample from logits (n_vocab floats), forward(0, {next}, false, &logits), ...
//   STRATA_RETURN_IF_ERROR(engine.remove_sequence(0));
//
// Not thread-safe: one caller drives an engine.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "memory/device_arena.h"
#include "memory/kv_cache.h"
#include "offload/core/status.h"
#include "offload/model/model_spec.h"

namespace strata {

class Engine {
 public:
  virtual ~Engine() = default;

  // invalid_argument if `seq` is already there.
  virtual Status add_sequence(SeqId seq) = 0;
  // Frees the sequence's KV blocks. not_found if `seq` is not there.
  virtual Status remove_sequence(SeqId seq) = 0;
  virtual int64_t num_tokens(SeqId seq) const = 0;
  virtual bool has_sequence(SeqId seq) const = 0;

  // Appends `tokens` to `seq` and runs them through the model. `logits` receives the next-token
  // logits of the last token ([n_vocab]) or, with all_logits, of every token
  // ([tokens.size()][n_vocab]). invalid_argument for a token id out of range or a sequence that
  // would pass max_context() (nothing is appended then).
  virtual Status forward(SeqId seq, std::span<const int32_t> tokens, bool all_logits,
                         std::vector<float>* logits) = 0;

  // One decode step of several sequences together (batched decode): tokens[i] is appended to
  // seqs[i] (distinct sequences) and run through the model; `logits` receives their next-token
  // logits, [seqs.size()][n_vocab]. An engine that batches reads each weight once for the whole
  // step (Executor); this default runs the sequences one after another. Errors as forward's,
  // checked for every sequence before anything runs.
  virtual Status forward_batch(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                               std::vector<float>* logits);

  virtual const HyperParams& hp() const = 0;
  virtual int64_t max_context() const = 0;  // tokens per sequence
  virtual KvCacheStats kv_stats() const = 0;
  // Where KV blocks live: "host" or "device".
  virtual const char* kv_tier() const = 0;
  // Bytes of host activation buffers and scratch held by the engine.
  virtual int64_t host_activation_bytes() const = 0;
  // The VRAM arena's accounting (used and peak per tag), when the engine runs on a GPU.
  virtual std::optional<DeviceArenaStats> device_stats() const { return std::nullopt; }
  // What runs the model: "cpu", or "gpu: <device name>".
  virtual std::string device_description() const = 0;
};

// What every Engine::forward does around its forward pass, in one place: checks the input (a
// sequence that exists, no empty chunk, ids in the vocabulary, the context not passed), sizes
// `logits`, attaches the shared prefix of a new sequence's prompt (share_prefixes, not with
// all_logits: KvCache::attach_prefix), and runs the rest in chunks of at most max_batch_tokens
// through run_chunk(chunk, out), where out is where the chunk's logits go, or null when no
// logits of that chunk are wanted (only the last chunk's last token matters unless all_logits);
// each chunk is then finished (finish_chunk). run_chunk reserves the chunk's slots in `kv`.
using ChunkRunner = std::function<Status(std::span<const int32_t> chunk, float* logits)>;
// After a chunk of `seq` ran from position pos0: commits its tokens to `kv` (their full blocks
// become shareable) and moves the blocks that left the hot window to the cold tier (a no-op
// without tiers). REQUIRES: nothing still reads or writes the sequence's KV (the step is done).
Status finish_chunk(KvCache& kv, SeqId seq, int64_t pos0, std::span<const int32_t> tokens);
// forward_batch's checks: as many tokens as sequences (at least one), distinct sequences that
// exist, ids in the vocabulary, no sequence past max_context(); sizes `logits`.
Status check_batch(const Engine& engine, std::span<const SeqId> seqs,
                   std::span<const int32_t> tokens, std::vector<float>* logits);
Status forward_in_chunks(const HyperParams& hp, KvCache& kv, bool share_prefixes,
                         int64_t max_context, int64_t max_batch_tokens, SeqId seq,
                         std::span<const int32_t> tokens, bool all_logits,
                         std::vector<float>* logits, const ChunkRunner& run_chunk);

}  // namespace strata
