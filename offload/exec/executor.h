// Executor: runs the Llama-family decoder over a ModelSpec for one or more sequences, each with
// its own paged KV cache table. This is the CPU-fallback mode and the CPU half of every offload
// mix: `forward` below is the whole model, readable top to bottom (llama2.c's `forward` is the
// model for it). Activations are float32; weights stay in the mapped file in their stored type.
//
// Example:
//   STRATA_ASSIGN_OR_RETURN(auto exec, Executor::create(spec, ExecutorOptions{}));
//   STRATA_RETURN_IF_ERROR(exec->add_sequence(0));
//   std::vector<float> logits;
//   STRATA_RETURN_IF_ERROR(exec->forward(0, prompt_ids, /*all_logits=*/false, &logits));
//   ... sample from logits (n_vocab floats), then forward(0, {next}, false, &logits) ...
//
// Not thread-safe: one caller drives it; the kernels inside use all OpenMP threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "cpu_backend/attention_gemm.h"
#include "cpu_backend/matmul.h"
#include "memory/kv_cache.h"
#include "offload/core/status.h"
#include "offload/exec/engine.h"
#include "offload/model/llama_weights.h"
#include "offload/model/model_spec.h"

namespace strata {

struct ExecutorOptions {
  int64_t max_context = 0;  // tokens per sequence; 0: the model's trained context
  // Accept max_context > the trained context (llama.cpp warns and runs): for benchmarks of long
  // contexts on synthetic models, whose outputs mean nothing anyway.
  bool allow_beyond_trained_context = false;
  int64_t max_sequences = 1;        // the KV budget covers this many full-length sequences
  int64_t max_batch_tokens = 2048;  // tokens per forward chunk (longer inputs are split)
  // Chunks of at least this many tokens attend through GEMMs (PrefillAttention).
  int64_t gemm_attention_min_tokens = 32;
  int64_t attention_tile_tokens = 512;  // query tile of PrefillAttention
  int64_t kv_block_tokens = 16;
  DType kv_type = DType::kF32;  // kF32 (exact), kF16 or kQ8_0
  // Tiered KV (issue 6): each sequence keeps its last kv_hot_window_tokens tokens and its first
  // kv_sink_blocks blocks in the hot tier (VRAM in a GPU run); older blocks move to the cold tier
  // (host memory) after every chunk. 0: one tier, everything hot.
  int64_t kv_hot_window_tokens = 0;
  int64_t kv_sink_blocks = 1;
  cpu::MatmulPrecision prefill_precision = cpu::MatmulPrecision::kF32;
  // With kBF16 prefill on a CPU with AMX, the matmuls run on the AMX tiles (cpu::AmxGemm) and so
  // does the prefill attention for head dims that are multiples of 32 (cpu_backend/
  // attention_amx.h: bf16 Q, K, V and weights). false keeps oneDNN (bf16 matmuls; float32
  // attention), for A/B runs.
  bool amx_matmul = true;
  bool amx_attention = true;
  // GEMVs (chunks of at most 16 tokens) of Q8_0/Q4_0/Q4_K/Q6_K weights over 8-bit activations
  // (cpu::MatmulOptions::int8_gemv): the `like_llama_cpp` tier; off: float32, the `exact` tier.
  bool int8_activations = false;
  bool profile = false;  // accumulate per-op wall time (ExecutorProfile)
  // A new sequence whose prompt starts with full KV blocks another live sequence holds shares
  // those blocks and skips computing them (memory/prefix_cache.h); all_logits runs never do.
  bool share_prefixes = true;

  // invalid_argument naming the option ("--ctx ...") when a value is out of range for `hp`.
  Status validate(const HyperParams& hp) const;
  // The KV cache these options ask for: without a hot window, max_sequences full-length
  // sequences in one tier; with one, the hot tier holds each sequence's sinks, window and one
  // chunk (blocks move out only between chunks) and the cold tier the full lengths.
  KvCacheConfig kv_cache_config(const HyperParams& hp) const;
};

// Where forward time went, when ExecutorOptions::profile is set (seconds since create()).
struct ExecutorProfile {
  double matmul_s = 0;     // weight products (GEMV / oneDNN, including tile dequantization)
  double attention_s = 0;  // attention over the KV cache
  double total_s = 0;      // whole forward chunks
  // Norms, rope, KV stores, elementwise, embedding.
  double other_s() const { return total_s - matmul_s - attention_s; }
};

class Executor final : public Engine {
 public:
  // REQUIRES: `spec` outlives the executor.
  static StatusOr<std::unique_ptr<Executor>> create(const ModelSpec& spec,
                                                    const ExecutorOptions& options);
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  Status add_sequence(SeqId seq) override { return kv_->add_sequence(seq); }
  Status remove_sequence(SeqId seq) override { return kv_->remove_sequence(seq); }
  int64_t num_tokens(SeqId seq) const override { return kv_->num_tokens(seq); }
  bool has_sequence(SeqId seq) const override { return kv_->has_sequence(seq); }

  // Appends `tokens` to sequence `seq` and runs them through the model. `logits` receives the
  // next-token logits of the last token ([n_vocab]) or, with all_logits, of every token
  // ([tokens.size()][n_vocab]). invalid_argument for a token id out of range or a sequence that
  // would pass max_context (nothing is appended then).
  Status forward(SeqId seq, std::span<const int32_t> tokens, bool all_logits,
                 std::vector<float>* logits) override;
  // Batched decode: the sequences' tokens go through the model as one chunk of rows (each weight
  // read once), each row attending over its own sequence's cache.
  // REQUIRES: seqs.size() <= max_batch_tokens (invalid_argument otherwise).
  Status forward_batch(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                       std::vector<float>* logits) override;

  const HyperParams& hp() const override { return spec_.hp; }
  int64_t max_context() const override { return options_.max_context; }
  const ExecutorOptions& options() const { return options_; }
  KvCacheStats kv_stats() const override { return kv_->stats(); }
  const char* kv_tier() const override { return "host"; }
  std::string device_description() const override { return "cpu"; }
  const ExecutorProfile& profile() const { return profile_; }
  // Bytes of activation buffers and scratch held by the executor (the host compute tier).
  int64_t host_activation_bytes() const override;

 private:
  Executor(const ModelSpec& spec, const ExecutorOptions& options)
      : spec_(spec), options_(options) {}
  Status init();
  // Rows [row0, row0 + n) of a chunk: n tokens of one sequence, at positions pos0.. (set when
  // the slots are reserved).
  struct Segment {
    SeqId seq = 0;
    int64_t row0 = 0;
    int64_t n = 0;
    int64_t pos0 = 0;
  };
  // Which rows' logits a chunk returns: none, the last row of every segment, or every row.
  enum class LogitRows { kNone, kLastOfEach, kAll };
  Status forward_chunk(SeqId seq, std::span<const int32_t> tokens, bool all_logits, float* logits);
  // The model over a chunk of rows made of segments (one sequence's chunk, or one token of each
  // of several sequences); logits [rows][n_vocab] as `which` says.
  Status forward_segments(std::span<Segment> segments, std::span<const int32_t> tokens,
                          LogitRows which, float* logits);
  Status matmul(const TensorSpec* w, const float* x, int64_t n_tokens, float* y);
  Status embed(std::span<const int32_t> tokens, float* x);
  // K and V of rows [row0, row0 + n_tokens) into seq's cache at positions pos0...
  void store_kv(SeqId seq, int64_t layer, int64_t pos0, int64_t row0, int64_t n_tokens);
  const float* small(const TensorSpec* t) const;  // a norm weight or bias as float32

  const ModelSpec& spec_;
  ExecutorOptions options_;
  LlamaWeights weights_;
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<cpu::CpuMatmul> matmul_;
  std::unique_ptr<cpu::PrefillAttention> prefill_attention_;
  // Norm weights and biases converted to float32 once at load (a few KiB per layer).
  std::unordered_map<const TensorSpec*, std::vector<float>> small_f32_;

  // Activations, [max_batch_tokens][width], allocated once.
  std::vector<float> x_;     // residual stream [n_embd]
  std::vector<float> xb_;    // normed input / projection output [n_embd]
  std::vector<float> q_;     // [q_dim]
  std::vector<float> k_;     // [kv_dim]
  std::vector<float> v_;     // [kv_dim]
  std::vector<float> att_;   // attention output [q_dim]
  std::vector<float> gate_;  // [n_ff]
  std::vector<float> up_;    // [n_ff]
  std::vector<int32_t> positions_;
  ExecutorProfile profile_;
  std::vector<float> att_scratch_;
};

}  // namespace strata
