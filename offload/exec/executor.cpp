#include "offload/exec/executor.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "cpu_backend/attention.h"
#include "cpu_backend/attention_amx.h"
#include "cpu_backend/elementwise.h"
#include "offload/core/dequantize.h"
#include "offload/core/quantize.h"

namespace strata {
namespace {

// Adds the wall time of its scope to *sink when sink is not null (profiling off: no clock reads).
class ScopedTimer {
 public:
  explicit ScopedTimer(double* sink) : sink_(sink) {
    if (sink_) start_ = std::chrono::steady_clock::now();
  }
  ~ScopedTimer() {
    if (sink_)
      *sink_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double* sink_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

Status ExecutorOptions::validate(const HyperParams& hp) const {
  if (max_context < 0) return Status::invalid_argument("--ctx must be positive");
  if (max_context > hp.n_ctx_train && !allow_beyond_trained_context) {
    return Status::invalid_argument("--ctx " + std::to_string(max_context) +
                                    " is larger than the model's trained context of " +
                                    std::to_string(hp.n_ctx_train) + " tokens");
  }
  if (max_sequences <= 0) return Status::invalid_argument("max_sequences must be positive");
  if (max_batch_tokens <= 0) return Status::invalid_argument("--batch must be positive");
  if (attention_tile_tokens <= 0)
    return Status::invalid_argument("attention tile must be positive");
  if (kv_type != DType::kF32 && kv_type != DType::kF16 && kv_type != DType::kQ8_0) {
    return Status::invalid_argument("--kv-type must be f32, f16 or q8_0");
  }
  if (kv_hot_window_tokens < 0) return Status::invalid_argument("hot_window must be >= 0");
  if (kv_sink_blocks < 0) return Status::invalid_argument("sink_blocks must be >= 0");
  // q8_0 rows are 32-element blocks; attention reads one KV head's slice at a time.
  if (kv_type == DType::kQ8_0 && hp.head_dim % 32 != 0) {
    return Status::invalid_argument(
        "--kv-type q8_0 needs a head size that is a multiple of 32; "
        "this model's is " +
        std::to_string(hp.head_dim));
  }
  return Status::ok();
}

KvCacheConfig ExecutorOptions::kv_cache_config(const HyperParams& hp) const {
  KvCacheConfig c;
  c.layout = KvLayout::for_model(hp, kv_block_tokens, kv_type);
  const int64_t context = max_context > 0 ? max_context : hp.n_ctx_train;
  const int64_t full = c.layout.blocks_for_tokens(context);
  c.max_blocks = max_sequences * full;
  if (kv_hot_window_tokens > 0) {
    // +1: the block a window's start falls in, partly outside the window. Policy::
    // hot_kv_reserved_tokens is the planner's copy of this count.
    const int64_t hot =
        kv_sink_blocks + c.layout.blocks_for_tokens(kv_hot_window_tokens + max_batch_tokens) + 1;
    if (hot < full) {
      c.max_blocks = max_sequences * hot;
      c.tiering.cold_max_blocks = max_sequences * full;
      c.tiering.hot_window_tokens = kv_hot_window_tokens;
      c.tiering.sink_blocks = kv_sink_blocks;
      // The cold tier grows 64 MiB at a time: a GPU run pins it, and one cudaMallocHost per
      // 2 MiB block would cost more than the copies.
      c.cold_blocks_per_slab = std::max<int64_t>(1, (int64_t{64} << 20) / c.layout.block_bytes());
    }
  }
  return c;
}

StatusOr<std::unique_ptr<Executor>> Executor::create(const ModelSpec& spec,
                                                     const ExecutorOptions& options) {
  STRATA_RETURN_IF_ERROR(options.validate(spec.hp));
  std::unique_ptr<Executor> exec(new Executor(spec, options));
  if (exec->options_.max_context == 0) exec->options_.max_context = spec.hp.n_ctx_train;
  STRATA_RETURN_IF_ERROR(exec->init());
  return exec;
}

Status Executor::init() {
  const HyperParams& hp = spec_.hp;
  STRATA_ASSIGN_OR_RETURN(weights_, LlamaWeights::bind(spec_));

  // Both tiers are host memory here: the tiers are the GPU run's mechanism, kept the same on the
  // CPU so that one code path (and its tests) covers both.
  const KvCacheConfig kv_config = options_.kv_cache_config(hp);
  STRATA_ASSIGN_OR_RETURN(
      kv_, KvCache::create(kv_config, make_host_kv_slab_allocator(), make_host_kv_slab_allocator(),
                           make_memcpy_kv_block_mover()));

  cpu::MatmulOptions mm;
  mm.precision = options_.prefill_precision;
  mm.int8_gemv = options_.int8_activations;
  mm.amx_tiles = options_.amx_matmul;
  STRATA_ASSIGN_OR_RETURN(matmul_, cpu::CpuMatmul::create(mm));
  if (options_.prefill_precision == cpu::MatmulPrecision::kBF16 && options_.amx_attention &&
      cpu::amx_bf16_available() && hp.head_dim % 32 == 0) {
    STRATA_ASSIGN_OR_RETURN(prefill_attention_, cpu::make_amx_prefill_attention({}));
  } else {
    STRATA_ASSIGN_OR_RETURN(prefill_attention_,
                            cpu::PrefillAttention::create(options_.attention_tile_tokens));
  }

  auto to_f32 = [&](const TensorSpec* t) -> Status {
    if (t == nullptr || small_f32_.count(t)) return Status::ok();
    std::vector<float> v(static_cast<size_t>(t->num_elements()));
    STRATA_RETURN_IF_ERROR(dequantize_row(t->type, t->data.data(), v.data(), t->num_elements()));
    small_f32_.emplace(t, std::move(v));
    return Status::ok();
  };
  STRATA_RETURN_IF_ERROR(to_f32(weights_.output_norm));
  for (const LayerWeights& l : weights_.layers) {
    for (const TensorSpec* t : {l.attn_norm, l.ffn_norm, l.bq, l.bk, l.bv}) {
      STRATA_RETURN_IF_ERROR(to_f32(t));
    }
  }

  const auto n = static_cast<size_t>(options_.max_batch_tokens);
  x_.resize(n * hp.n_embd);
  xb_.resize(n * hp.n_embd);
  q_.resize(n * hp.q_dim());
  k_.resize(n * hp.kv_dim());
  v_.resize(n * hp.kv_dim());
  att_.resize(n * hp.q_dim());
  gate_.resize(n * hp.n_ff);
  up_.resize(n * hp.n_ff);
  positions_.resize(n);
  att_scratch_.resize(static_cast<size_t>(cpu::attention_scratch_floats(
      options_.max_context, cpu::AttentionShape{hp.n_head, hp.n_head_kv, hp.head_dim})));
  return Status::ok();
}

int64_t Executor::host_activation_bytes() const {
  const size_t floats = x_.size() + xb_.size() + q_.size() + k_.size() + v_.size() + att_.size() +
                        gate_.size() + up_.size() + att_scratch_.size();
  return static_cast<int64_t>(floats * sizeof(float) + positions_.size() * sizeof(int32_t));
}

const float* Executor::small(const TensorSpec* t) const { return small_f32_.at(t).data(); }

Status Executor::matmul(const TensorSpec* w, const float* x, int64_t n_tokens, float* y) {
  ScopedTimer timer(options_.profile ? &profile_.matmul_s : nullptr);
  WeightMatrix m{w->type, w->num_rows(), w->row_length(), w->data.data()};
  return matmul_->run(m, x, n_tokens, y);
}

Status Executor::embed(std::span<const int32_t> tokens, float* x) {
  const TensorSpec* e = weights_.token_embd;
  const int64_t n_embd = spec_.hp.n_embd;
  const int64_t stride = row_bytes(e->type, n_embd);
  for (size_t i = 0; i < tokens.size(); ++i) {
    STRATA_RETURN_IF_ERROR(
        dequantize_row(e->type, e->data.data() + tokens[i] * stride, x + i * n_embd, n_embd));
  }
  return Status::ok();
}

void Executor::store_kv(SeqId seq, int64_t layer, int64_t pos0, int64_t row0, int64_t n_tokens) {
  const int64_t kv_dim = spec_.hp.kv_dim();
  const bool f16 = options_.kv_type == DType::kF16;
  // Rows are independent (rows() only reads the block table): serial, this was ~17 ms a layer
  // of a 2048-token 8B prefill, half of what is neither matmul nor attention.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n_tokens; ++i) {
    KvRowPtrs row = kv_->rows(seq, layer, pos0 + i);
    const float* k = k_.data() + (row0 + i) * kv_dim;
    const float* v = v_.data() + (row0 + i) * kv_dim;
    if (options_.kv_type == DType::kQ8_0) {  // as llama.cpp's q8_0 cache: a scale per 32
      // Cannot fail: the type is quantizable and kv_dim a multiple of 32 (checked at creation).
      (void)quantize_row(DType::kQ8_0, k, row.k, kv_dim);
      (void)quantize_row(DType::kQ8_0, v, row.v, kv_dim);
    } else if (f16) {
      cpu::to_f16(k, static_cast<uint16_t*>(row.k), kv_dim);
      cpu::to_f16(v, static_cast<uint16_t*>(row.v), kv_dim);
    } else {
      std::memcpy(row.k, k, kv_dim * sizeof(float));
      std::memcpy(row.v, v, kv_dim * sizeof(float));
    }
  }
}

Status Executor::forward(SeqId seq, std::span<const int32_t> tokens, bool all_logits,
                         std::vector<float>* logits) {
  return forward_in_chunks(spec_.hp, *kv_, options_.share_prefixes, options_.max_context,
                           options_.max_batch_tokens, seq, tokens, all_logits, logits,
                           [&](std::span<const int32_t> chunk, float* out) {
                             return forward_chunk(seq, chunk, all_logits, out);
                           });
}

Status Executor::forward_batch(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                               std::vector<float>* logits) {
  STRATA_RETURN_IF_ERROR(check_batch(*this, seqs, tokens, logits));
  if (static_cast<int64_t>(seqs.size()) > options_.max_batch_tokens) {
    return Status::invalid_argument("forward_batch: " + std::to_string(seqs.size()) +
                                    " sequences, more than the chunk of " +
                                    std::to_string(options_.max_batch_tokens) + " rows (--batch)");
  }
  std::vector<Segment> segments(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    segments[i] = Segment{seqs[i], static_cast<int64_t>(i), 1, 0};
  }
  STRATA_RETURN_IF_ERROR(
      forward_segments(segments, tokens, LogitRows::kLastOfEach, logits->data()));
  for (const Segment& s : segments) {
    STRATA_RETURN_IF_ERROR(finish_chunk(*kv_, s.seq, s.pos0, tokens.subspan(s.row0, 1)));
  }
  return Status::ok();
}

Status Executor::forward_chunk(SeqId seq, std::span<const int32_t> tokens, bool all_logits,
                               float* logits) {
  Segment segment{seq, 0, static_cast<int64_t>(tokens.size()), 0};
  const LogitRows which = logits == nullptr ? LogitRows::kNone
                          : all_logits      ? LogitRows::kAll
                                            : LogitRows::kLastOfEach;
  return forward_segments(std::span(&segment, 1), tokens, which, logits);
}

// The model. x is the residual stream; every sub-layer reads a normed copy of it and adds its
// output back. Shapes per row: n_embd E, q_dim Q = n_head * head_dim, kv_dim K, n_ff F. Rows are
// tokens; a segment is a run of rows of one sequence (attention and the KV cache are per
// segment, everything else is per row).
Status Executor::forward_segments(std::span<Segment> segments, std::span<const int32_t> tokens,
                                  LogitRows which, float* logits) {
  const HyperParams& hp = spec_.hp;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t E = hp.n_embd, Q = hp.q_dim(), K = hp.kv_dim(), F = hp.n_ff;
  const float eps = static_cast<float>(hp.rms_eps);
  const cpu::AttentionShape shape{hp.n_head, hp.n_head_kv, hp.head_dim};
  ScopedTimer chunk_timer(options_.profile ? &profile_.total_s : nullptr);

  for (Segment& s : segments) {
    STRATA_ASSIGN_OR_RETURN(s.pos0, kv_->reserve_slots(s.seq, s.n));
    for (int64_t i = 0; i < s.n; ++i) positions_[s.row0 + i] = static_cast<int32_t>(s.pos0 + i);
  }

  STRATA_RETURN_IF_ERROR(embed(tokens, x_.data()));  // x [n][E]

  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];

    // Attention block.
    cpu::rms_norm(x_.data(), small(w.attn_norm), xb_.data(), n, E, eps);
    STRATA_RETURN_IF_ERROR(matmul(w.wq, xb_.data(), n, q_.data()));  // q [n][Q]
    STRATA_RETURN_IF_ERROR(matmul(w.wk, xb_.data(), n, k_.data()));  // k [n][K]
    STRATA_RETURN_IF_ERROR(matmul(w.wv, xb_.data(), n, v_.data()));  // v [n][K]
    if (hp.qkv_bias) {
      cpu::add_bias(q_.data(), small(w.bq), n, Q);
      cpu::add_bias(k_.data(), small(w.bk), n, K);
      cpu::add_bias(v_.data(), small(w.bv), n, K);
    }
    cpu::rope(q_.data(), n, hp.n_head, hp.head_dim, hp.rope_dims, positions_.data(), hp.rope_theta,
              hp.rope_style);
    cpu::rope(k_.data(), n, hp.n_head_kv, hp.head_dim, hp.rope_dims, positions_.data(),
              hp.rope_theta, hp.rope_style);
    for (const Segment& s : segments) {
      store_kv(s.seq, l, s.pos0, s.row0, s.n);
      ScopedTimer timer(options_.profile ? &profile_.attention_s : nullptr);
      const float* q = q_.data() + s.row0 * Q;
      float* att = att_.data() + s.row0 * Q;  // att [n][Q]
      if (s.n >= options_.gemm_attention_min_tokens) {
        STRATA_RETURN_IF_ERROR(
            prefill_attention_->run(q, s.n, s.pos0, kv_->layer_view(s.seq, l), shape, att));
      } else {
        cpu::attention(q, s.n, positions_.data() + s.row0, kv_->layer_view(s.seq, l), shape, att,
                       att_scratch_.data());
      }
    }
    STRATA_RETURN_IF_ERROR(matmul(w.wo, att_.data(), n, xb_.data()));  // [n][E]
    cpu::add_inplace(x_.data(), xb_.data(), n * E);

    // Feed-forward block (SwiGLU).
    cpu::rms_norm(x_.data(), small(w.ffn_norm), xb_.data(), n, E, eps);
    STRATA_RETURN_IF_ERROR(matmul(w.w_gate, xb_.data(), n, gate_.data()));  // [n][F]
    STRATA_RETURN_IF_ERROR(matmul(w.w_up, xb_.data(), n, up_.data()));      // [n][F]
    cpu::swiglu(gate_.data(), up_.data(), gate_.data(), n * F);
    STRATA_RETURN_IF_ERROR(matmul(w.w_down, gate_.data(), n, xb_.data()));  // [n][E]
    cpu::add_inplace(x_.data(), xb_.data(), n * E);
  }

  if (which == LogitRows::kNone) return Status::ok();
  // Final norm and the output head, on every row or on the last row of each segment.
  int64_t rows = 0;
  const float* norm = small(weights_.output_norm);
  if (which == LogitRows::kAll) {
    rows = n;
    cpu::rms_norm(x_.data(), norm, xb_.data(), rows, E, eps);
  } else {
    for (const Segment& s : segments) {
      cpu::rms_norm(x_.data() + (s.row0 + s.n - 1) * E, norm, xb_.data() + rows * E, 1, E, eps);
      ++rows;
    }
  }
  return matmul(weights_.output, xb_.data(), rows, logits);  // [rows][n_vocab]
}

}  // namespace strata
