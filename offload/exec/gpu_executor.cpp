#include "offload/exec/gpu_executor.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>

#include "cpu_backend/attention.h"
#include "cpu_backend/thread_placement.h"
#include "gpu_backend/cuda_device_allocator.h"
#include "gpu_backend/cuda_host_pinner.h"
#include "gpu_backend/device_probe.h"
#include "gpu_backend/elementwise.h"
#include "gpu_backend/gemv.h"
#include "gpu_backend/host_flag.h"
#include "gpu_backend/l2_prefetch.h"
#include "memory/kv_slab_allocator.h"
#include "offload/core/dequantize.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Adds the seconds from its construction to its destruction to *sum (host time of a scope with
// early returns).
struct AddSecondsOnExit {
  double* sum;
  Clock::time_point begin = Clock::now();
  ~AddSecondsOnExit() { *sum += seconds_since(begin); }
};

using gpu::GemvOutput;

int64_t aligned(int64_t bytes) {
  return (bytes + kDeviceArenaAlignmentBytes - 1) / kDeviceArenaAlignmentBytes *
         kDeviceArenaAlignmentBytes;
}

// Demotes KV blocks (KvBlockMover) from VRAM to the pinned cold tier by DMA on its own stream.
// KvCache calls it between steps, after the step's synchronize: nothing writes the block then,
// and the copy is finished before the hot block is handed out again.
class DeviceToHostMover final : public KvBlockMover {
 public:
  explicit DeviceToHostMover(const cuda::Stream& stream) : stream_(stream) {}
  Status copy(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch, int64_t row_bytes,
              int64_t rows) override {
    return cuda::memcpy_2d_async(dst, dst_pitch, src, src_pitch, row_bytes, rows,
                                 cuda::CopyKind::kDeviceToHost, stream_);
  }
  Status wait() override { return stream_.synchronize(); }

 private:
  const cuda::Stream& stream_;
};

// Bytes of the pinned staging buffer that weights go up through.
constexpr int64_t kStagingBytes = int64_t{64} << 20;
// CPU-run outputs up to this size go up by a kernel reading pinned memory (see matmuls).
constexpr int64_t kZeroCopyMaxBytes = int64_t{4} << 20;

// "weights 3.2 / 15.0 GiB, 11.8 GB/s, 1 s left" on one terminal line, at most 5 times a second.
class UploadProgress {
 public:
  UploadProgress(bool enabled, int64_t total_bytes)
      : enabled_(enabled && isatty(STDERR_FILENO)), total_(total_bytes) {}
  void add(int64_t bytes) {
    done_ += bytes;
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200) && done_ < total_) return;
    last_ = now;
    const double s = std::chrono::duration<double>(now - start_).count();
    const double rate = s > 0 ? static_cast<double>(done_) / s : 0.0;
    const double left = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0.0;
    std::fprintf(stderr, "\rstrata: loading weights %.2f / %.2f GiB, %.1f GB/s, %.0f s left   ",
                 static_cast<double>(done_) / (1 << 30), static_cast<double>(total_) / (1 << 30),
                 rate / 1e9, left);
    if (done_ >= total_) std::fprintf(stderr, "\n");
  }

 private:
  bool enabled_;
  int64_t total_;
  int64_t done_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace

StatusOr<std::unique_ptr<GpuExecutor>> GpuExecutor::create(const ModelSpec& spec,
                                                           const GpuExecutorOptions& options) {
  STRATA_RETURN_IF_ERROR(options.base.validate(spec.hp));
  if (options.vram_budget_bytes < 0) {
    return Status::invalid_argument("--vram-budget must not be negative");
  }
  if (options.prefetch_depth < 0) {
    return Status::invalid_argument("prefetch_depth must not be negative");
  }
  std::unique_ptr<GpuExecutor> exec(new GpuExecutor(spec, options));
  if (exec->options_.base.max_context == 0) exec->options_.base.max_context = spec.hp.n_ctx_train;
  STRATA_RETURN_IF_ERROR(exec->init());
  return exec;
}

GpuExecutor::~GpuExecutor() {
  // Kernels may still read buffers that are about to go back to the arena.
  (void)stream_.synchronize();
}

Status GpuExecutor::init() {
  const HyperParams& hp = spec_.hp;
  const ExecutorOptions& base = options_.base;
  const GpuProbe probe = probe_gpu(options_.device);
  if (!probe.usable) return Status::unsupported("--device gpu: " + probe.reason);
  device_name_ = probe.caps.name;
  sm_count_ = std::max(1, probe.caps.sm_count);
  l2_prefetch_bytes_ =
      options_.l2_prefetch_bytes >= 0 ? options_.l2_prefetch_bytes : probe.caps.l2_cache_bytes / 2;
  STRATA_ASSIGN_OR_RETURN(bound_, LlamaWeights::bind(spec_));
  // The stream and cuBLAS's handle take device memory of their own, outside any arena (tens of
  // MiB for the handle on Hopper): measured here and taken off the arena's budget, so that the
  // executor as a whole stays within --vram-budget.
  STRATA_ASSIGN_OR_RETURN(const cuda::MemoryInfo before, cuda::memory_info());
  STRATA_ASSIGN_OR_RETURN(stream_, cuda::Stream::create());
  STRATA_ASSIGN_OR_RETURN(blas_, gpu::Cublas::create_handle(stream_));
  STRATA_ASSIGN_OR_RETURN(const cuda::MemoryInfo after, cuda::memory_info());
  outside_arena_bytes_ = std::max<int64_t>(0, before.free_bytes - after.free_bytes);

  DeviceArenaOptions arena_options;
  arena_options.budget_bytes = options_.vram_budget_bytes > 0
                                   ? options_.vram_budget_bytes - outside_arena_bytes_
                                   : after.free_bytes - GpuExecutorOptions::kDefaultVramMarginBytes;
  if (options_.arena_chunk_bytes > 0) arena_options.chunk_bytes = options_.arena_chunk_bytes;
  if (arena_options.budget_bytes <= 0) {
    return Status::out_of_memory("--device gpu: the VRAM budget leaves nothing for the arena: " +
                                 std::to_string(after.free_bytes) +
                                 " bytes are free and the CUDA stream and cuBLAS take " +
                                 std::to_string(outside_arena_bytes_) + " bytes of the budget");
  }
  STRATA_ASSIGN_OR_RETURN(
      arena_, DeviceArena::create(arena_options, make_cuda_device_allocator(options_.device)));
  STRATA_ASSIGN_OR_RETURN(
      host_pool_,
      PinnedHostPool::create({}, options_.make_host_pinner
                                     ? options_.make_host_pinner()
                                     : make_cuda_host_pinner(options_.host_huge_pages)));
  STRATA_RETURN_IF_ERROR(upload_weights());

  STRATA_RETURN_IF_ERROR(blas_->use_workspace(*arena_));
  gpu::GpuMatmulOptions mm;
  mm.precision = options_.gemm_precision;
  mm.max_tokens = base.max_batch_tokens;
  mm.max_cols = std::max(hp.n_embd, std::max(hp.n_ff, hp.q_dim()));
  // One dequantized tile per layer matrix when it fits in 256 MiB: whole-matrix GEMMs run near
  // cuBLAS's peak, slices of a few thousand rows do not.
  mm.tile_bytes = std::min<int64_t>(int64_t{256} << 20, hp.n_ff * hp.n_embd * 2);
  STRATA_ASSIGN_OR_RETURN(matmul_, gpu::GpuMatmul::create(*arena_, *blas_, mm));
  gpu::GpuAttentionOptions att;
  att.shape = gpu::AttentionShape{hp.n_head, hp.n_head_kv, hp.head_dim};
  att.max_context = base.max_context;
  att.max_tokens = base.max_batch_tokens;
  att.gemm_min_tokens = base.gemm_attention_min_tokens;
  att.query_tile_tokens = base.attention_tile_tokens;
  att.precision = options_.gemm_precision;
  attention_split_tokens_ = att.split_tokens;
  STRATA_ASSIGN_OR_RETURN(attention_, gpu::GpuAttention::create(*arena_, *blas_, att));

  const KvCacheConfig kv_config = base.kv_cache_config(hp);
  if (kv_config.tiering.cold_max_blocks == 0) {
    STRATA_ASSIGN_OR_RETURN(kv_,
                            KvCache::create(kv_config, make_device_kv_slab_allocator(*arena_)));
  } else {
    // Cold blocks lie in pinned host memory and the attention kernels read them there, over
    // PCIe, through the same block table as the hot ones: that needs a host address to be the
    // device address (unified addressing), checked here once on a pinned buffer.
    STRATA_ASSIGN_OR_RETURN(cuda::PinnedHostBuffer probe, cuda::PinnedHostBuffer::allocate(64));
    StatusOr<void*> mapped = cuda::device_pointer_of_host(probe.data());
    if (!mapped.is_ok() || *mapped != probe.data()) {
      return Status::unsupported(
          "hot_window: this GPU does not see pinned host memory at its host address (no unified "
          "addressing), which the cold KV tier needs; run without a hot window");
    }
    STRATA_ASSIGN_OR_RETURN(kv_copy_stream_, cuda::Stream::create());
    STRATA_ASSIGN_OR_RETURN(kv_,
                            KvCache::create(kv_config, make_device_kv_slab_allocator(*arena_),
                                            make_pinned_host_kv_slab_allocator(*host_pool_),
                                            std::make_unique<DeviceToHostMover>(kv_copy_stream_)));
    cold_split_ = ColdSplit(options_.cold_attention_on_cpu ? options_.cold_cpu_fraction : 0.0);
    if (options_.cold_attention_on_cpu) STRATA_RETURN_IF_ERROR(init_cold_attention());
    if (options_.cold_stage_blocks > 0) STRATA_RETURN_IF_ERROR(init_cold_stage());
  }

  const int64_t n = base.max_batch_tokens;
  auto activations = [&](int64_t bytes, DeviceBuffer* out) -> Status {
    STRATA_ASSIGN_OR_RETURN(*out, arena_->allocate(bytes, DeviceMemoryTag::kActivations));
    return Status::ok();
  };
  STRATA_RETURN_IF_ERROR(activations(n * hp.n_embd * 4, &x_));
  STRATA_RETURN_IF_ERROR(activations(n * hp.n_embd * 4, &xb_));
  STRATA_RETURN_IF_ERROR(activations(n * hp.q_dim() * 4, &q_));
  STRATA_RETURN_IF_ERROR(activations(n * hp.kv_dim() * 4, &k_));
  STRATA_RETURN_IF_ERROR(activations(n * hp.kv_dim() * 4, &v_));
  STRATA_RETURN_IF_ERROR(activations(n * hp.q_dim() * 4, &att_));
  STRATA_RETURN_IF_ERROR(activations(n * hp.n_ff * 4, &gate_));
  STRATA_RETURN_IF_ERROR(activations(n * hp.n_ff * 4, &up_));
  STRATA_RETURN_IF_ERROR(activations(n * 4, &ids_));
  STRATA_RETURN_IF_ERROR(activations(n * 4, &positions_));
  STRATA_RETURN_IF_ERROR(activations(std::max<int64_t>(1, n * hp.rope_dims * 4), &rope_table_));
  STRATA_RETURN_IF_ERROR(activations(kLogitRows * hp.n_vocab * 4, &logits_));
  STRATA_RETURN_IF_ERROR(activations(gpu::kGpuGemvMaxTokens * 4, &norm_scale_));
  // The accumulating GEMVs that leave a folded norm's inputs write the residual: n_embd rows.
  STRATA_RETURN_IF_ERROR(activations(gpu::gemv_norm_scratch_bytes(hp.n_embd), &norm_scratch_));
  STRATA_RETURN_IF_ERROR(cuda::memset_async(norm_scratch_.data(), 0, norm_scratch_.size_bytes(),
                                            stream_));  // the counter starts at zero
  if (options_.int8_activations) {
    const int64_t t = gpu::kGpuGemvMaxTokens;
    STRATA_RETURN_IF_ERROR(activations(gpu::activations_q8_bytes(t, hp.n_embd), &x8_xb_));
    STRATA_RETURN_IF_ERROR(activations(gpu::activations_q8_bytes(t, hp.n_ff), &x8_h_));
    STRATA_RETURN_IF_ERROR(activations(gpu::activations_q8_bytes(t, hp.q_dim()), &x8_att_));
    const int64_t counters = gpu::gemv_out8_counter_bytes(std::max(hp.n_embd, hp.n_ff));
    STRATA_RETURN_IF_ERROR(activations(counters, &x8_counters_));
    STRATA_RETURN_IF_ERROR(cuda::memset_async(x8_counters_.data(), 0, counters, stream_));
  }
  STRATA_ASSIGN_OR_RETURN(step_inputs_, cuda::PinnedHostBuffer::allocate(2 * n * 4));
  if (StatusOr<void*> mapped = cuda::device_pointer_of_host(step_inputs_.data()); mapped.is_ok()) {
    step_inputs_device_ = static_cast<const int32_t*>(*mapped);
  }

  // The host side of CPU-run matrices and of a host embedding: inputs down, outputs up. Sized for
  // the longest chunk of a phase that uses them.
  bool cpu_in[2] = {false, false};
  auto note = [&](const Matrix& m) {
    for (int p = 0; p < 2; ++p) cpu_in[p] = cpu_in[p] || m.where[p] == Placement::kCpu;
  };
  for (const Layer& l : layers_) {
    for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) note(*m);
  }
  note(output_);
  // The CPU's products round to bf16 where the GPU's many-row products round to f16 (the same
  // like_llama_cpp tier): prefill on the AMX tiles, and batched decode steps there too.
  const cpu::MatmulPrecision cpu_precision = options_.gemm_precision == gpu::GemmPrecision::kF16
                                                 ? cpu::MatmulPrecision::kBF16
                                                 : base.prefill_precision;
  const bool rows_on_tiles =
      cpu_precision == cpu::MatmulPrecision::kBF16 && cpu::amx_bf16_available();
  decode_phase_max_tokens_ = options_.decode_phase_max_tokens > 0
                                 ? options_.decode_phase_max_tokens
                                 : (rows_on_tiles ? 2 : 1) * gpu::kGpuGemvMaxTokens;
  if (cpu_in[kDecode] || cpu_in[kPrefill] || host_embedding_) {
    const int64_t rows = cpu_in[kPrefill] ? n : std::min<int64_t>(n, decode_phase_max_tokens_);
    const int64_t x_rows = host_embedding_ ? n : rows;
    const int64_t x_floats = x_rows * std::max({hp.n_embd, hp.n_ff, hp.q_dim()});
    const int64_t y_floats =
        std::max(rows * std::max({hp.q_dim() + 2 * hp.kv_dim(), 2 * hp.n_ff, hp.n_embd}),
                 kLogitRows * hp.n_vocab);
    STRATA_ASSIGN_OR_RETURN(host_x_, host_pool_->allocate(x_floats * 4));
    STRATA_ASSIGN_OR_RETURN(host_y_, host_pool_->allocate(y_floats * 4));
    STRATA_ASSIGN_OR_RETURN(host_ready_, cuda::Event::create(cuda::EventTiming::kDisabled));
    // Pinned buffers under their device addresses, for uploads by kernel (see matmuls); when
    // either is pageable, uploads go by copy.
    if (host_x_.pinned() && host_y_.pinned()) {
      StatusOr<void*> x_mapped = cuda::device_pointer_of_host(host_x_.data());
      StatusOr<void*> y_mapped = cuda::device_pointer_of_host(host_y_.data());
      if (x_mapped.is_ok() && y_mapped.is_ok()) {
        host_x_device_ = static_cast<const float*>(*x_mapped);
        host_y_device_ = static_cast<const float*>(*y_mapped);
      }
    }
    cpu::MatmulOptions cpu_options;
    cpu_options.precision = cpu_precision;
    cpu_options.int8_gemv = options_.int8_activations;  // the CPU-run layers' GEMVs too
    cpu_options.amx_int8 = options_.cpu_amx_int8;
    STRATA_ASSIGN_OR_RETURN(cpu_matmul_, cpu::CpuMatmul::create(cpu_options));
  }
  if (!host_pool_->warning().empty()) {
    std::fprintf(stderr, "strata: %s\n", host_pool_->warning().c_str());
  }
  return Status::ok();
}

int64_t GpuExecutor::host_activation_bytes() const {
  // Pinned ids and positions, and the buffers of CPU-run matrices; the rest lives in VRAM.
  return step_inputs_.size_bytes() + host_x_.size_bytes() + host_y_.size_bytes();
}

Status GpuExecutor::upload_weights() {
  int64_t total = 0;
  for (const TensorSpec& t : spec_.tensors) total += static_cast<int64_t>(t.size_bytes);
  UploadProgress progress(options_.show_progress, total);
  // Two pinned halves: the CPU repacks rows into one while the other is being copied up.
  STRATA_ASSIGN_OR_RETURN(cuda::PinnedHostBuffer staging,
                          cuda::PinnedHostBuffer::allocate(2 * kStagingBytes));
  // A matrix goes up now when it is resident; otherwise it waits for prepare_streaming (a host
  // image) or stays in the mapped file (CPU-run, and the host embedding).
  auto matrix = [&](const TensorSpec* t, Matrix* m, bool in_layer) -> Status {
    place(t, m);
    if (m->where[kDecode] == Placement::kVram) {
      STRATA_ASSIGN_OR_RETURN(m->resident, upload_matrix(t, staging));
      progress.add(static_cast<int64_t>(t->size_bytes));
      return Status::ok();
    }
    for (const Placement p : m->where) {
      if (p == Placement::kStream && !in_layer) {
        return Status::invalid_argument(t->name +
                                        ": only layer tensors can be streamed (a "
                                        "staging slot holds one layer); place it on vram or cpu");
      }
      if (p == Placement::kCpu && !gemv_supports(t->type)) {
        return Status::invalid_argument(t->name + ": the CPU kernels do not read " +
                                        std::string(dtype_name(t->type)));
      }
    }
    StatusOr<gpu::GpuWeightLayout> layout =
        gpu::gpu_weight_layout(t->type, t->num_rows(), t->row_length());
    if (!layout.is_ok()) {
      return Status(layout.status().code(), t->name + ": " + layout.status().message());
    }
    m->layout = *layout;
    const bool streams =
        m->where[kDecode] == Placement::kStream || m->where[kPrefill] == Placement::kStream;
    if (!streams) progress.add(static_cast<int64_t>(t->size_bytes));  // streamed: when repacked
    return Status::ok();
  };
  auto small = [&](const TensorSpec* t, const float** out) -> Status {
    if (t == nullptr) return Status::ok();
    STRATA_ASSIGN_OR_RETURN(*out, upload_small(t));
    progress.add(static_cast<int64_t>(t->size_bytes));
    return Status::ok();
  };
  STRATA_RETURN_IF_ERROR(matrix(bound_.token_embd, &token_embd_, false));
  host_embedding_ = token_embd_.resident.data == nullptr;
  if (bound_.output == bound_.token_embd) {
    output_ = token_embd_;
  } else {
    STRATA_RETURN_IF_ERROR(matrix(bound_.output, &output_, false));
  }
  STRATA_RETURN_IF_ERROR(small(bound_.output_norm, &output_norm_));
  layers_.resize(bound_.layers.size());
  for (size_t i = 0; i < bound_.layers.size(); ++i) {
    const LayerWeights& w = bound_.layers[i];
    Layer& l = layers_[i];
    STRATA_RETURN_IF_ERROR(small(w.attn_norm, &l.attn_norm));
    STRATA_RETURN_IF_ERROR(matrix(w.wq, &l.wq, true));
    STRATA_RETURN_IF_ERROR(matrix(w.wk, &l.wk, true));
    STRATA_RETURN_IF_ERROR(matrix(w.wv, &l.wv, true));
    STRATA_RETURN_IF_ERROR(small(w.bq, &l.bq));
    STRATA_RETURN_IF_ERROR(small(w.bk, &l.bk));
    STRATA_RETURN_IF_ERROR(small(w.bv, &l.bv));
    STRATA_RETURN_IF_ERROR(matrix(w.wo, &l.wo, true));
    STRATA_RETURN_IF_ERROR(small(w.ffn_norm, &l.ffn_norm));
    STRATA_RETURN_IF_ERROR(matrix(w.w_gate, &l.w_gate, true));
    STRATA_RETURN_IF_ERROR(matrix(w.w_up, &l.w_up, true));
    STRATA_RETURN_IF_ERROR(matrix(w.w_down, &l.w_down, true));
  }
  STRATA_RETURN_IF_ERROR(stream_.synchronize());
  STRATA_RETURN_IF_ERROR(prepare_streaming([&](int64_t bytes) { progress.add(bytes); }));

  for (int p = 0; p < 2; ++p) {
    bool resident = output_.where[p] == Placement::kVram;
    for (const Layer& l : layers_) {
      for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
        resident = resident && m->where[p] == Placement::kVram;
      }
    }
    graphable_[p] = resident;
  }
  return Status::ok();
}

void GpuExecutor::place(const TensorSpec* t, Matrix* m) const {
  m->spec = t;
  for (const TensorPlacement& p : options_.placements) {
    if (p.name == t->name) {
      m->where[kDecode] = p.decode;
      m->where[kPrefill] = p.prefill;
      break;
    }
  }
  // Residency does not change between phases: VRAM in one phase is VRAM in both.
  if (m->where[kDecode] == Placement::kVram || m->where[kPrefill] == Placement::kVram) {
    m->where[kDecode] = m->where[kPrefill] = Placement::kVram;
  }
}

Status GpuExecutor::prepare_streaming(const std::function<void(int64_t)>& progress) {
  int64_t slot_bytes = 0;
  size_t streamed_layers[2] = {0, 0};
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    Matrix* ms[] = {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down};
    // The image: every matrix that streams in some phase, each at a 256-byte boundary (the
    // slot keeps the same offsets, so a matrix's planes are aligned there as in the arena).
    int64_t bytes = 0;
    for (Matrix* m : ms) {
      if (m->where[kDecode] != Placement::kStream && m->where[kPrefill] != Placement::kStream) {
        continue;
      }
      m->image_offset = bytes;
      bytes += aligned(m->layout.total_bytes);
    }
    if (bytes == 0) continue;
    StatusOr<HostBuffer> image = host_pool_->allocate(bytes);
    if (!image.is_ok()) {
      return Status(image.status().code(), "host copy of layer " + std::to_string(i) +
                                               " (streamed): " + image.status().message());
    }
    l.image = std::move(image).value();
    auto* base = static_cast<uint8_t*>(l.image.data());
    for (Matrix* m : ms) {
      if (m->image_offset < 0) continue;
      const TensorSpec* t = m->spec;
      gpu::repack_rows(
          t->type, t->row_length(), t->data.data(), t->num_rows(), base + m->image_offset,
          reinterpret_cast<uint16_t*>(base + m->image_offset + m->layout.scale_offset_bytes));
      progress(static_cast<int64_t>(t->size_bytes));
    }
    for (int p = 0; p < 2; ++p) {
      StreamedLayer& s = l.streamed[p];
      s.layer = static_cast<int64_t>(i);
      s.host = base;
      for (Matrix* m : ms) {
        if (m->where[p] != Placement::kStream) continue;
        const int64_t b = aligned(m->layout.total_bytes);
        if (!s.ranges.empty() &&
            s.ranges.back().offset + s.ranges.back().bytes == m->image_offset) {
          s.ranges.back().bytes += b;  // adjacent: one larger copy
        } else {
          s.ranges.push_back({m->image_offset, b});
        }
      }
      if (!s.ranges.empty()) ++streamed_layers[p];
    }
    slot_bytes = std::max(slot_bytes, bytes);
  }
  if (slot_bytes == 0) return Status::ok();  // nothing streams
  // Slots beyond the pass length would never be used.
  const size_t most = std::max(streamed_layers[kDecode], streamed_layers[kPrefill]);
  const int slots =
      static_cast<int>(std::min<size_t>(static_cast<size_t>(options_.prefetch_depth) + 1, most));
  STRATA_ASSIGN_OR_RETURN(weight_stream_,
                          WeightStream::create(*arena_, slots, slot_bytes, stream_));
  return Status::ok();
}

StatusOr<gpu::GpuWeight> GpuExecutor::upload_matrix(const TensorSpec* t,
                                                    const cuda::PinnedHostBuffer& staging) {
  const int64_t rows = t->num_rows();
  const int64_t cols = t->row_length();
  StatusOr<gpu::GpuWeightLayout> layout_or = gpu::gpu_weight_layout(t->type, rows, cols);
  if (!layout_or.is_ok()) {
    return Status(layout_or.status().code(), t->name + ": " + layout_or.status().message());
  }
  const gpu::GpuWeightLayout layout = *layout_or;
  StatusOr<DeviceBuffer> buffer_or =
      arena_->allocate(layout.total_bytes, DeviceMemoryTag::kWeights);
  if (!buffer_or.is_ok()) {
    return Status(buffer_or.status().code(), "the model does not fit in VRAM (loading " + t->name +
                                                 "): " + buffer_or.status().message());
  }
  DeviceBuffer buffer = std::move(buffer_or).value();
  auto* payload = static_cast<uint8_t*>(buffer.data());
  auto* scales = reinterpret_cast<uint16_t*>(payload + layout.scale_offset_bytes);

  STRATA_ASSIGN_OR_RETURN(cuda::Event copied0, cuda::Event::create(cuda::EventTiming::kDisabled));
  STRATA_ASSIGN_OR_RETURN(cuda::Event copied1, cuda::Event::create(cuda::EventTiming::kDisabled));
  const cuda::Event* copied[2] = {&copied0, &copied1};
  bool pending[2] = {false, false};
  const int64_t src_row = row_bytes(t->type, cols);
  const int64_t scale_row_bytes = layout.scale_row_elems * 2;
  const int64_t chunk_rows =
      std::max<int64_t>(1, kStagingBytes / (layout.payload_row_bytes + scale_row_bytes));
  int half = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows, half ^= 1) {
    const int64_t n = std::min(chunk_rows, rows - r0);
    if (pending[half]) STRATA_RETURN_IF_ERROR(copied[half]->synchronize());
    auto* stage = static_cast<uint8_t*>(staging.data()) + half * kStagingBytes;
    auto* stage_scales = reinterpret_cast<uint16_t*>(stage + n * layout.payload_row_bytes);
    gpu::repack_rows(t->type, cols, t->data.data() + r0 * src_row, n, stage, stage_scales);
    STRATA_RETURN_IF_ERROR(cuda::memcpy_async(payload + r0 * layout.payload_row_bytes, stage,
                                              n * layout.payload_row_bytes,
                                              cuda::CopyKind::kHostToDevice, stream_));
    if (scale_row_bytes > 0) {
      STRATA_RETURN_IF_ERROR(cuda::memcpy_async(scales + r0 * layout.scale_row_elems, stage_scales,
                                                n * scale_row_bytes, cuda::CopyKind::kHostToDevice,
                                                stream_));
    }
    STRATA_RETURN_IF_ERROR(copied[half]->record(stream_));
    pending[half] = true;
  }
  STRATA_RETURN_IF_ERROR(stream_.synchronize());  // before the staging buffer is reused

  gpu::GpuWeight w;
  w.type = t->type;
  w.rows = rows;
  w.cols = cols;
  w.data = payload;
  w.scales = layout.scale_row_elems > 0 ? scales : nullptr;
  weight_buffers_.push_back(std::move(buffer));
  return w;
}

StatusOr<const float*> GpuExecutor::upload_small(const TensorSpec* t) {
  std::vector<float> host(static_cast<size_t>(t->num_elements()));
  STRATA_RETURN_IF_ERROR(dequantize_row(t->type, t->data.data(), host.data(), t->num_elements()));
  const int64_t bytes = t->num_elements() * 4;
  STRATA_ASSIGN_OR_RETURN(DeviceBuffer buffer, arena_->allocate(bytes, DeviceMemoryTag::kWeights));
  STRATA_RETURN_IF_ERROR(cuda::memcpy_async(buffer.data(), host.data(), bytes,
                                            cuda::CopyKind::kHostToDevice, stream_));
  STRATA_RETURN_IF_ERROR(stream_.synchronize());  // `host` dies here
  const auto* p = static_cast<const float*>(buffer.data());
  weight_buffers_.push_back(std::move(buffer));
  return p;
}

Status GpuExecutor::add_sequence(SeqId seq) {
  STRATA_RETURN_IF_ERROR(kv_->add_sequence(seq));
  const KvLayout& layout = kv_->layout();
  const int64_t entries = layout.blocks_for_tokens(options_.base.max_context) * layout.n_layer * 2;
  // One block table in VRAM and its host mirror (every entry null until synced).
  auto allocate_table = [&](DeviceBuffer* device, std::vector<void*>* host) -> Status {
    StatusOr<DeviceBuffer> buffer =
        arena_->allocate(entries * static_cast<int64_t>(sizeof(void*)), DeviceMemoryTag::kKv);
    if (!buffer.is_ok()) return buffer.status();
    *device = std::move(buffer).value();
    host->assign(static_cast<size_t>(entries), nullptr);
    return Status::ok();
  };
  SequenceTable table;
  Status st = allocate_table(&table.table, &table.host);
  // The hot table: the same entries with the CPU's cold blocks left out (split_attention).
  if (st.is_ok() && cold_max_tokens_ > 0) st = allocate_table(&table.hot_table, &table.hot_host);
  if (!st.is_ok()) {
    (void)kv_->remove_sequence(seq);
    return st;
  }
  tables_[seq] = std::move(table);
  return Status::ok();
}

Status GpuExecutor::remove_sequence(SeqId seq) {
  STRATA_RETURN_IF_ERROR(kv_->remove_sequence(seq));
  // Kernels queued for this sequence may still read its table and blocks.
  STRATA_RETURN_IF_ERROR(stream_.synchronize());
  tables_.erase(seq);
  for (auto it = graphs_.begin(); it != graphs_.end();) {
    it = it->first.seq == seq ? graphs_.erase(it) : std::next(it);
  }
  return Status::ok();
}

Status GpuExecutor::sync_block_table(SeqId seq) {
  SequenceTable& t = tables_.at(seq);
  const int64_t n_layer = kv_->layout().n_layer;
  const int64_t num_blocks = kv_->block_table(seq).num_blocks();
  int64_t first = t.uploaded_blocks;  // the first block whose entries change
  if (const int64_t moved = kv_->blocks_moved(seq); moved != t.blocks_moved) {
    // demote_cold replaced uploaded blocks by cold ones (all layers of a block move together,
    // so layer 0 shows which); everything from the first of them goes up again.
    const KvLayerView view = kv_->layer_view(seq, 0);
    for (int64_t b = 0; b < t.uploaded_blocks; ++b) {
      if (t.host[static_cast<size_t>(b * n_layer * 2)] != view.k_blocks[b]) {
        first = b;
        break;
      }
    }
    t.blocks_moved = moved;
  }
  if (first >= num_blocks) return Status::ok();
  for (int64_t l = 0; l < n_layer; ++l) {
    const KvLayerView view = kv_->layer_view(seq, l);
    for (int64_t b = first; b < num_blocks; ++b) {
      t.host[static_cast<size_t>((b * n_layer + l) * 2)] = view.k_blocks[b];
      t.host[static_cast<size_t>((b * n_layer + l) * 2 + 1)] = view.v_blocks[b];
    }
  }
  const int64_t offset = first * n_layer * 2;
  const int64_t count = (num_blocks - first) * n_layer * 2;
  // From pageable memory: the copy is staged before the call returns, so `host` may change later.
  STRATA_RETURN_IF_ERROR(cuda::memcpy_async(
      static_cast<void**>(t.table.data()) + offset, t.host.data() + offset,
      count * static_cast<int64_t>(sizeof(void*)), cuda::CopyKind::kHostToDevice, stream_));
  if (!t.hot_host.empty()) {  // the same entries, null for the CPU's cold blocks (split_attention)
    for (int64_t b = first; b < num_blocks; ++b) {
      const bool cold = kv_->block_tier(seq, b) == KvTier::kHost && cpu_attends(b);
      for (int64_t e = 0; e < n_layer * 2; ++e) {
        const auto i = static_cast<size_t>(b * n_layer * 2 + e);
        t.hot_host[i] = cold ? nullptr : t.host[i];
      }
    }
    STRATA_RETURN_IF_ERROR(cuda::memcpy_async(
        static_cast<void**>(t.hot_table.data()) + offset, t.hot_host.data() + offset,
        count * static_cast<int64_t>(sizeof(void*)), cuda::CopyKind::kHostToDevice, stream_));
  }
  t.uploaded_blocks = num_blocks;
  return Status::ok();
}

gpu::GpuKvView GpuExecutor::kv_view(SeqId seq) const {
  const KvLayout& layout = kv_->layout();
  gpu::GpuKvView view;
  view.block_table = static_cast<void* const*>(tables_.at(seq).table.data());
  view.n_layer = layout.n_layer;
  view.num_tokens = kv_->num_tokens(seq);
  view.block_tokens = layout.block_tokens;
  view.kv_dim = layout.kv_dim;
  view.dtype = layout.dtype;
  view.positions = static_cast<const int32_t*>(positions_.data());
  return view;
}

Status GpuExecutor::matmul(const gpu::GpuWeight& w, const float* x, int64_t n_tokens, float* y,
                           GemvOutput output) {
  return matmul_->run(w, x, n_tokens, y, output);
}

GpuExecutor::Operand GpuExecutor::operand(const Matrix& m, Phase phase, const uint8_t* slot) const {
  Operand op;
  switch (m.where[phase]) {
    case Placement::kVram:
      op.gpu = m.resident;
      break;
    case Placement::kStream: {
      // REQUIRES: slot is the acquired slot of m's layer (m streams in this phase).
      const uint8_t* base = slot + m.image_offset;
      op.gpu.type = m.spec->type;
      op.gpu.rows = m.spec->num_rows();
      op.gpu.cols = m.spec->row_length();
      op.gpu.data = base;
      op.gpu.scales = m.layout.scale_row_elems > 0
                          ? reinterpret_cast<const uint16_t*>(base + m.layout.scale_offset_bytes)
                          : nullptr;
      break;
    }
    case Placement::kCpu:
      op.cpu = m.spec;
      break;
  }
  return op;
}

Status GpuExecutor::prefetch_after_attention(std::initializer_list<Operand> next) {
  gpu::DeviceRange ranges[gpu::kMaxPrefetchRanges];
  int count = 0;
  for (const Operand& op : next) {
    if (op.cpu != nullptr || op.gpu.data == nullptr) continue;  // CPU-run: nothing to fetch
    STRATA_ASSIGN_OR_RETURN(const gpu::GpuWeightLayout layout,
                            gpu::gpu_weight_layout(op.gpu.type, op.gpu.rows, op.gpu.cols));
    ranges[count++] = {op.gpu.data, layout.payload_bytes};
    if (op.gpu.scales != nullptr) {
      ranges[count++] = {op.gpu.scales, op.gpu.rows * layout.scale_row_elems * 2};
    }
  }
  return gpu::prefetch_l2(std::span(ranges, static_cast<size_t>(count)), l2_prefetch_bytes_,
                          sm_count_, stream_);
}

Status GpuExecutor::matmuls(std::span<const Operand> ops, const float* x, int64_t n_tokens,
                            std::span<float* const> outs, GemvOutput output) {
  const TensorSpec* first_cpu = nullptr;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].cpu != nullptr) {
      if (first_cpu == nullptr) first_cpu = ops[i].cpu;
      continue;
    }
    STRATA_RETURN_IF_ERROR(matmul(ops[i].gpu, x, n_tokens, outs[i], output));
  }
  if (first_cpu == nullptr) return Status::ok();

  // x goes down once; the host waits for it (and so for the GPU work queued before it).
  const int64_t cols = first_cpu->row_length();
  if (n_tokens * cols * 4 > host_x_.size_bytes()) {
    return Status::internal("CPU matmul input larger than its host buffer");
  }
  auto* hx = static_cast<float*>(host_x_.data());
  auto* hy = static_cast<float*>(host_y_.data());
  const auto* hy_end = hy + host_y_.size_bytes() / 4;
  STRATA_RETURN_IF_ERROR(
      cuda::memcpy_async(hx, x, n_tokens * cols * 4, cuda::CopyKind::kDeviceToHost, stream_));
  STRATA_RETURN_IF_ERROR(host_ready_.record(stream_));
  const auto t0 = Clock::now();
  STRATA_RETURN_IF_ERROR(host_ready_.synchronize());
  const auto t1 = Clock::now();
  offload_times_.host_wait_s += std::chrono::duration<double>(t1 - t0).count();
  for (size_t i = 0; i < ops.size(); ++i) {
    const TensorSpec* t = ops[i].cpu;
    if (t == nullptr) continue;
    const WeightMatrix w{t->type, t->num_rows(), t->row_length(), t->data.data()};
    const int64_t floats = n_tokens * w.rows;
    if (hy + floats > hy_end) return Status::internal("CPU matmul output larger than its buffer");
    const auto c0 = Clock::now();
    STRATA_RETURN_IF_ERROR(cpu_matmul_->run(w, hx, n_tokens, hy));
    offload_times_.cpu_matmul_s += std::chrono::duration<double>(Clock::now() - c0).count();
    offload_times_.cpu_weight_bytes += static_cast<int64_t>(t->size_bytes);
    // Each output has its own part of host_y_: the uploads may still be running when the CPU
    // writes the next one. A small output goes up through a kernel that reads the pinned buffer
    // itself: a copy would queue on the host-to-device copy engine behind whatever weight copy
    // the copy stream is running (milliseconds), stalling the whole layer chain.
    const float* src = hy;
    if (host_y_device_ != nullptr && floats * 4 <= kZeroCopyMaxBytes) {
      src = host_y_device_ + (hy - static_cast<float*>(host_y_.data()));
    } else {
      float* dst = output == GemvOutput::kStore ? outs[i] : act(xb_);
      STRATA_RETURN_IF_ERROR(
          cuda::memcpy_async(dst, hy, floats * 4, cuda::CopyKind::kHostToDevice, stream_));
      src = dst;
    }
    if (output == GemvOutput::kAccumulate) {
      STRATA_RETURN_IF_ERROR(gpu::add_inplace(outs[i], src, floats, stream_));
    } else if (src != outs[i]) {
      STRATA_RETURN_IF_ERROR(gpu::copy_floats(outs[i], src, floats, stream_));
    }
    hy += floats;
  }
  offload_times_.cpu_s += std::chrono::duration<double>(Clock::now() - t1).count();
  return Status::ok();
}

bool GpuExecutor::all_on_gpu(Phase phase) const {
  if (output_.where[phase] == Placement::kCpu) return false;
  for (const Layer& l : layers_) {
    for (const Matrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      if (m->where[phase] == Placement::kCpu) return false;
    }
  }
  return true;
}

Status GpuExecutor::embed_on_host(std::span<const int32_t> tokens) {
  const TensorSpec* t = token_embd_.spec;
  const int64_t E = spec_.hp.n_embd;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t stride = row_bytes(t->type, E);
  auto* hx = static_cast<float*>(host_x_.data());
  for (int64_t i = 0; i < n; ++i) {
    STRATA_RETURN_IF_ERROR(
        dequantize_row(t->type, t->data.data() + tokens[i] * stride, hx + i * E, E));
  }
  if (host_x_device_ != nullptr && n * E * 4 <= kZeroCopyMaxBytes) {  // see matmuls
    return gpu::copy_floats(act(x_), host_x_device_, n * E, stream_);
  }
  return cuda::memcpy_async(x_.data(), hx, n * E * 4, cuda::CopyKind::kHostToDevice, stream_);
}

Status GpuExecutor::upload_step_inputs(int64_t n) {
  const int64_t max_n = options_.base.max_batch_tokens;
  // By kernel from the pinned buffer when it is mapped, for the reason in matmuls: a copy would
  // wait on the copy engine behind the copy stream's prefetch of the next streamed layer.
  if (step_inputs_device_ != nullptr) {
    STRATA_RETURN_IF_ERROR(
        gpu::copy_int32(static_cast<int32_t*>(ids_.data()), step_inputs_device_, n, stream_));
    return gpu::copy_int32(static_cast<int32_t*>(positions_.data()), step_inputs_device_ + max_n, n,
                           stream_);
  }
  const auto* staged = static_cast<const int32_t*>(step_inputs_.data());
  STRATA_RETURN_IF_ERROR(
      cuda::memcpy_async(ids_.data(), staged, n * 4, cuda::CopyKind::kHostToDevice, stream_));
  return cuda::memcpy_async(positions_.data(), staged + max_n, n * 4, cuda::CopyKind::kHostToDevice,
                            stream_);
}

Status GpuExecutor::init_cold_attention() {
  const HyperParams& hp = spec_.hp;
  const ExecutorOptions& base = options_.base;
  // Decode-path segments only: the GEMM attention of prefill chunks reads cold blocks in place.
  cold_max_tokens_ = std::max<int64_t>(
      1, std::min({base.max_batch_tokens, base.gemm_attention_min_tokens - 1, kLogitRows}));
  const int64_t q_floats = cold_max_tokens_ * hp.q_dim();
  const int64_t rows = cold_max_tokens_ * hp.n_head;
  STRATA_ASSIGN_OR_RETURN(cold_q_, cuda::PinnedHostBuffer::allocate(q_floats * 4));
  STRATA_ASSIGN_OR_RETURN(cold_out_, cuda::PinnedHostBuffer::allocate(q_floats * 4));
  STRATA_ASSIGN_OR_RETURN(cold_lse_, cuda::PinnedHostBuffer::allocate(rows * 4));
  STRATA_ASSIGN_OR_RETURN(void* q_dev, cuda::device_pointer_of_host(cold_q_.data()));
  STRATA_ASSIGN_OR_RETURN(void* out_dev, cuda::device_pointer_of_host(cold_out_.data()));
  STRATA_ASSIGN_OR_RETURN(void* lse_dev, cuda::device_pointer_of_host(cold_lse_.data()));
  cold_q_device_ = static_cast<float*>(q_dev);
  cold_out_device_ = static_cast<const float*>(out_dev);
  cold_lse_device_ = static_cast<const float*>(lse_dev);
  STRATA_ASSIGN_OR_RETURN(gpu_lse_, arena_->allocate(rows * 4, DeviceMemoryTag::kActivations));
  STRATA_ASSIGN_OR_RETURN(cold_q_ready_, cuda::Event::create(cuda::EventTiming::kDisabled));
  STRATA_ASSIGN_OR_RETURN(cold_done_, cuda::PinnedHostBuffer::allocate(8));
  *static_cast<int64_t*>(cold_done_.data()) = 0;
  cold_done_count_ = 0;
  STRATA_ASSIGN_OR_RETURN(void* done_dev, cuda::device_pointer_of_host(cold_done_.data()));
  cold_done_device_ = static_cast<const int64_t*>(done_dev);
  cpu_threads_ = omp_get_max_threads();
  cold_scratch_.resize(static_cast<size_t>(
      cpu::attention_scratch_floats(base.max_context > 0 ? base.max_context : hp.n_ctx_train,
                                    cpu::AttentionShape{hp.n_head, hp.n_head_kv, hp.head_dim})));
  return Status::ok();
}

Status GpuExecutor::init_cold_stage() {
  const KvLayout& layout = kv_->layout();
  const int64_t cap = options_.cold_stage_blocks;
  STRATA_ASSIGN_OR_RETURN(
      stage_, arena_->allocate(2 * 2 * cap * layout.layer_block_bytes(), DeviceMemoryTag::kKv));
  const int64_t entries = layout.blocks_for_tokens(options_.base.max_context) * layout.n_layer * 2;
  STRATA_ASSIGN_OR_RETURN(
      stage_table_,
      arena_->allocate(entries * static_cast<int64_t>(sizeof(void*)), DeviceMemoryTag::kKv));
  stage_host_.resize(static_cast<size_t>(entries), nullptr);
  for (int i = 0; i < 2; ++i) {
    STRATA_ASSIGN_OR_RETURN(stage_ready_[i], cuda::Event::create(cuda::EventTiming::kDisabled));
    STRATA_ASSIGN_OR_RETURN(stage_free_[i], cuda::Event::create(cuda::EventTiming::kDisabled));
  }
  if (options_.balance_cold_split && options_.cold_attention_on_cpu) {
    for (int64_t l = 0; l < layout.n_layer; ++l) {
      STRATA_ASSIGN_OR_RETURN(cuda::Event a, cuda::Event::create(cuda::EventTiming::kEnabled));
      STRATA_ASSIGN_OR_RETURN(cuda::Event b, cuda::Event::create(cuda::EventTiming::kEnabled));
      stage_copy_start_.push_back(std::move(a));
      stage_copy_end_.push_back(std::move(b));
    }
  }
  return Status::ok();
}

Status GpuExecutor::prepare_stage(SeqId seq, Segment* s) {
  staged_blocks_.clear();
  if (stage_.size_bytes() == 0) return Status::ok();
  const KvLayout& layout = kv_->layout();
  const int64_t n_layer = layout.n_layer, lbb = layout.layer_block_bytes();
  const int64_t cap = options_.cold_stage_blocks;
  const SequenceTable& t = tables_.at(seq);
  const bool split = !s->cold_ranges.empty();  // the CPU attends some cold blocks
  const std::vector<void*>& base = split ? t.hot_host : t.host;
  const int64_t blocks = kv_->block_table(seq).num_blocks();
  for (int64_t b = 0; b < blocks && static_cast<int64_t>(staged_blocks_.size()) < cap; ++b) {
    if (kv_->block_tier(seq, b) != KvTier::kHost) continue;
    if (split && base[static_cast<size_t>(b * n_layer * 2)] == nullptr) continue;  // the CPU's
    staged_blocks_.push_back(b);
  }
  if (staged_blocks_.empty()) return Status::ok();
  // Slots in the order of the blocks' host addresses: blocks adjacent in a cold slab are then
  // adjacent in the slot for every layer (a slab strides all its blocks' layers alike) and go
  // up as one copy. In table order they would not: recycled blocks come back in any order, and
  // 32 KiB copies ran at ~10 of PCIe's 55 GB/s (32k decode 2.7 tok/s).
  std::sort(staged_blocks_.begin(), staged_blocks_.end(), [&](int64_t a, int64_t b) {
    return std::less<>()(t.host[static_cast<size_t>(a * n_layer * 2)],
                         t.host[static_cast<size_t>(b * n_layer * 2)]);
  });
  staged_seq_ = seq;
  const auto count = static_cast<size_t>(blocks * n_layer * 2);
  std::copy(base.begin(), base.begin() + static_cast<std::ptrdiff_t>(count), stage_host_.begin());
  auto* stage = static_cast<std::byte*>(stage_.data());
  for (size_t i = 0; i < staged_blocks_.size(); ++i) {
    const int64_t b = staged_blocks_[i];
    for (int64_t l = 0; l < n_layer; ++l) {
      std::byte* slot = stage + (l & 1) * 2 * cap * lbb;
      const auto e = static_cast<size_t>((b * n_layer + l) * 2);
      stage_host_[e] = slot + static_cast<int64_t>(i) * lbb;
      stage_host_[e + 1] = slot + (cap + static_cast<int64_t>(i)) * lbb;
    }
  }
  STRATA_RETURN_IF_ERROR(cuda::memcpy_async(stage_table_.data(), stage_host_.data(),
                                            static_cast<int64_t>(count * sizeof(void*)),
                                            cuda::CopyKind::kHostToDevice, stream_));
  s->kv.block_table = static_cast<void* const*>(stage_table_.data());
  if (split) s->hot_kv.block_table = static_cast<void* const*>(stage_table_.data());
  return Status::ok();
}

Status GpuExecutor::queue_stage_copy(int64_t layer) {
  const AddSecondsOnExit timed_enqueue{&host_times_.stage_enqueue_s};
  const KvLayout& layout = kv_->layout();
  const int64_t n_layer = layout.n_layer, lbb = layout.layer_block_bytes();
  const int64_t cap = options_.cold_stage_blocks;
  const int slot = static_cast<int>(layer & 1);
  if (layer >= 2) STRATA_RETURN_IF_ERROR(kv_copy_stream_.wait(stage_free_[slot]));
  const bool timed = !stage_copy_start_.empty();
  if (timed) STRATA_RETURN_IF_ERROR(stage_copy_start_[layer].record(kv_copy_stream_));
  const SequenceTable& t = tables_.at(staged_seq_);
  std::byte* dst = static_cast<std::byte*>(stage_.data()) + slot * 2 * cap * lbb;
  // K into [0, cap), V into [cap, 2 cap): runs of adjacent blocks, all in one batch.
  stage_dsts_.clear();
  stage_srcs_.clear();
  stage_sizes_.clear();
  for (int kv = 0; kv < 2; ++kv) {
    std::byte* to = dst + kv * cap * lbb;
    for (const int64_t b : staged_blocks_) {
      const auto* src = static_cast<const std::byte*>(
          t.host[static_cast<size_t>((b * n_layer + layer) * 2 + kv)]);
      if (!stage_sizes_.empty() && b != staged_blocks_.front() &&
          src == static_cast<const std::byte*>(stage_srcs_.back()) + stage_sizes_.back()) {
        stage_sizes_.back() += static_cast<size_t>(lbb);
      } else {
        stage_dsts_.push_back(to);
        stage_srcs_.push_back(src);
        stage_sizes_.push_back(static_cast<size_t>(lbb));
      }
      to += lbb;
    }
  }
  STRATA_RETURN_IF_ERROR(
      cuda::memcpy_batch_to_device_async(stage_dsts_, stage_srcs_, stage_sizes_, kv_copy_stream_));
  if (timed) {
    STRATA_RETURN_IF_ERROR(stage_copy_end_[layer].record(kv_copy_stream_));
    stage_copy_layers_ = layer + 1;
    stage_copy_bytes_ += static_cast<double>(2 * lbb) * static_cast<double>(staged_blocks_.size());
  }
  return stage_ready_[slot].record(kv_copy_stream_);
}

bool GpuExecutor::cpu_attends(int64_t block) const {
  const double f = cold_split_.share();
  const auto group = static_cast<double>(block / std::max<int64_t>(1, options_.cold_deal_blocks));
  return std::floor((group + 1) * f) > std::floor(group * f);
}

Status GpuExecutor::rebalance_cold_split() {
  // The last step's copies are done: the step ended with a synchronize of the compute stream,
  // whose last attention waited for them.
  double copy_s = 0;
  for (int64_t l = 0; l < stage_copy_layers_; ++l) {
    STRATA_ASSIGN_OR_RETURN(const float ms,
                            cuda::elapsed_ms(stage_copy_start_[static_cast<size_t>(l)],
                                             stage_copy_end_[static_cast<size_t>(l)]));
    copy_s += ms * 1e-3;
  }
  cold_split_.add_link(stage_copy_bytes_, copy_s);
  stage_copy_layers_ = 0;
  stage_copy_bytes_ = 0;
  if (!cold_split_.end_step()) return Status::ok();
  for (auto& [seq, t] : tables_) t.uploaded_blocks = 0;  // hot entries follow the new share
  return Status::ok();
}

void GpuExecutor::describe_cold(SeqId seq, Segment* s) const {
  s->seq = seq;
  s->cold_ranges.clear();
  if (cold_max_tokens_ == 0 || s->n > cold_max_tokens_) return;
  const int64_t bt = kv_->layout().block_tokens;
  const int64_t blocks = kv_->block_table(seq).num_blocks();
  for (int64_t b = 0; b < blocks; ++b) {
    if (kv_->block_tier(seq, b) != KvTier::kHost || !cpu_attends(b)) continue;
    const int64_t begin = b * bt, end = std::min((b + 1) * bt, s->kv.num_tokens);
    if (!s->cold_ranges.empty() && s->cold_ranges.back().second == begin) {
      s->cold_ranges.back().second = end;  // one range over adjacent cold blocks
    } else {
      s->cold_ranges.emplace_back(begin, end);
    }
  }
  if (s->cold_ranges.empty()) return;
  s->hot_kv = s->kv;
  s->hot_kv.block_table = static_cast<void* const*>(tables_.at(seq).hot_table.data());
}

Status GpuExecutor::split_attention(const Segment& s, int64_t layer, const float* q, float* out,
                                    bool staging, int64_t stage_layer) {
  const HyperParams& hp = spec_.hp;
  const int64_t q_floats = s.n * hp.q_dim();
  const int64_t rows = s.n * hp.n_head;
  auto* lse = static_cast<float*>(gpu_lse_.data());
  // The previous layer's (or segment's) CPU part first: its job waits on cold_q_ready_, recorded
  // again below, and it writes cold_out_ and cold_lse_. By the time it is done the GPU has this
  // layer's work up to here queued, so the wait costs the GPU nothing.
  STRATA_RETURN_IF_ERROR(attender_.wait());
  // q goes down by a kernel writing the pinned buffer (a copy would queue behind the copy
  // stream's weight prefetch), before the wait for this layer's staged blocks: the CPU's part
  // needs none of them, and waiting there made the CPU start each layer only once the link had
  // finished it, the two readers in lockstep layer by layer. The GPU then attends the hot and
  // staged blocks; their slot is free again after that kernel (the merge reads no KV), so the
  // next copy into it need not wait for the CPU.
  STRATA_RETURN_IF_ERROR(gpu::copy_floats(cold_q_device_, q, q_floats, stream_));
  STRATA_RETURN_IF_ERROR(cold_q_ready_.record(stream_));
  if (staging) STRATA_RETURN_IF_ERROR(stream_.wait(stage_ready_[layer & 1]));
  STRATA_RETURN_IF_ERROR(
      attention_->run_decode_partial(q, s.n, s.pos0, s.hot_kv, layer, out, lse, stream_));
  if (staging) STRATA_RETURN_IF_ERROR(stage_free_[layer & 1].record(stream_));

  // The CPU part over the cold ranges, where the blocks lie (pinned host memory). cold_out_ and
  // cold_lse_ are free to write once q has arrived: the previous merge is queued before it. It
  // raises the flag the merge waits for on every path, errors too.
  const int64_t done = ++cold_done_count_;
  auto cpu_part = [this, n = s.n, pos0 = s.pos0, seq = s.seq, ranges = s.cold_ranges, layer,
                   done]() -> Status {
    struct Raise {
      int64_t* counter;
      int64_t value;
      ~Raise() { gpu::release_host_flag(counter, value); }
    } raise{static_cast<int64_t*>(cold_done_.data()), done};
    const HyperParams& hp = spec_.hp;
    const Clock::time_point wait0 = Clock::now();
    STRATA_RETURN_IF_ERROR(cold_q_ready_.synchronize());
    cold_split_.add_cpu_wait(seconds_since(wait0));
    std::vector<int32_t> positions(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      positions[static_cast<size_t>(i)] = static_cast<int32_t>(pos0 + i);
    const KvLayerView view = kv_->layer_view(seq, layer);
    const cpu::AttentionShape shape{hp.n_head, hp.n_head_kv, hp.head_dim};
    const Clock::time_point t0 = Clock::now();
    cpu::attention_ranges(static_cast<const float*>(cold_q_.data()), n, positions.data(), view,
                          shape, ranges, static_cast<float*>(cold_out_.data()),
                          static_cast<float*>(cold_lse_.data()), cold_scratch_.data());
    int64_t keys = 0;
    for (const auto& [begin, end] : ranges) keys += end - begin;
    cold_split_.add_cpu(static_cast<double>(2 * keys * kv_bytes(view.dtype, view.kv_dim)),
                        seconds_since(t0));
    return Status::ok();
  };
  if (options_.cold_worker_threads >= 0) {
    // On the attender: meanwhile this thread queues the later layer's staging copies (~0.7 ms
    // of host time a layer at 128k), the merge behind the CPU's flag, then (the caller) the rest
    // of this layer and the next one's work up to its attention, which otherwise wait for the
    // CPU's part (~0.3 ms of launches a layer).
    attender_.start([this, cpu_part = std::move(cpu_part)]() -> Status {
      if (!attender_placed_) {
        // Its own OpenMP team, on the last cores (see cold_worker_threads).
        const int threads = options_.cold_worker_threads > 0
                                ? std::min(options_.cold_worker_threads, cpu_threads_)
                                : std::max(1, cpu_threads_ - 1);
        (void)apply_thread_placement(threads, cpu_threads_ - threads);
        attender_placed_ = true;
      }
      return cpu_part();
    });
    if (stage_layer >= 0) STRATA_RETURN_IF_ERROR(queue_stage_copy(stage_layer));
  } else {
    // On this thread's team; the attender queues the staging copies meanwhile.
    if (stage_layer >= 0) {
      attender_.start([this, stage_layer] {
        STRATA_RETURN_IF_ERROR(cuda::set_device(options_.device));  // a thread's own device
        return queue_stage_copy(stage_layer);
      });
    }
    const Status cpu = cpu_part();
    STRATA_RETURN_IF_ERROR(attender_.wait());
    STRATA_RETURN_IF_ERROR(cpu);
  }
  STRATA_RETURN_IF_ERROR(gpu::wait_host_flag(cold_done_device_, done, stream_));
  return gpu::merge_attention_parts(out, lse, cold_out_device_, cold_lse_device_, rows, hp.head_dim,
                                    stream_);
}

Status GpuExecutor::mark(Family family) {
  if (!options_.profile) return Status::ok();
  if (num_marks_ == marks_.size()) {
    STRATA_ASSIGN_OR_RETURN(cuda::Event e, cuda::Event::create(cuda::EventTiming::kEnabled));
    marks_.push_back(std::move(e));
    mark_families_.push_back(family);
  }
  mark_families_[num_marks_] = family;
  return marks_[num_marks_++].record(stream_);
}

Status GpuExecutor::collect_profile() {
  for (size_t i = 1; i < num_marks_; ++i) {
    STRATA_ASSIGN_OR_RETURN(const float ms, cuda::elapsed_ms(marks_[i - 1], marks_[i]));
    double* sink[] = {&profile_.matmul_ms, &profile_.attention_ms, &profile_.other_ms,
                      &profile_.logits_ms};
    *sink[mark_families_[i]] += ms;
  }
  num_marks_ = 0;
  return Status::ok();
}

Status GpuExecutor::forward(SeqId seq, std::span<const int32_t> tokens, bool all_logits,
                            std::vector<float>* logits) {
  return forward_in_chunks(spec_.hp, *kv_, options_.base.share_prefixes, options_.base.max_context,
                           options_.base.max_batch_tokens, seq, tokens, all_logits, logits,
                           [&](std::span<const int32_t> chunk, float* out) {
                             return forward_chunk(seq, chunk, all_logits, out);
                           });
}

Status GpuExecutor::forward_batch(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                                  std::vector<float>* logits) {
  STRATA_RETURN_IF_ERROR(check_batch(*this, seqs, tokens, logits));
  const int64_t n = static_cast<int64_t>(seqs.size());
  const int64_t max_n = options_.base.max_batch_tokens;
  if (n > max_n || n > kLogitRows) {
    return Status::invalid_argument("forward_batch: " + std::to_string(n) +
                                    " sequences, more than the chunk of " +
                                    std::to_string(std::min(max_n, kLogitRows)) + " rows");
  }
  std::vector<Segment> segments(static_cast<size_t>(n));
  auto* staged = static_cast<int32_t*>(step_inputs_.data());
  for (int64_t i = 0; i < n; ++i) {
    const SeqId seq = seqs[static_cast<size_t>(i)];
    STRATA_ASSIGN_OR_RETURN(const int64_t pos, kv_->reserve_slots(seq, 1));
    STRATA_RETURN_IF_ERROR(sync_block_table(seq));
    Segment& s = segments[static_cast<size_t>(i)];
    s.row0 = i;
    s.n = 1;
    s.pos0 = pos;
    s.kv = kv_view(seq);
    s.kv.positions += i;  // this row's position
    describe_cold(seq, &s);
    staged[i] = tokens[static_cast<size_t>(i)];
    staged[max_n + i] = static_cast<int32_t>(pos);
  }
  STRATA_RETURN_IF_ERROR(upload_step_inputs(n));
  if (host_embedding_) STRATA_RETURN_IF_ERROR(embed_on_host(tokens));
  STRATA_RETURN_IF_ERROR(run_model(n, segments, /*head_rows=*/n));  // every row's logits
  STRATA_RETURN_IF_ERROR(cuda::memcpy_async(logits->data(), logits_.data(),
                                            n * spec_.hp.n_vocab * 4, cuda::CopyKind::kDeviceToHost,
                                            stream_));
  STRATA_RETURN_IF_ERROR(stream_.synchronize());  // logits is pageable host memory
  for (int64_t i = 0; i < n; ++i) {
    STRATA_RETURN_IF_ERROR(finish_chunk(*kv_, seqs[static_cast<size_t>(i)], segments[i].pos0,
                                        tokens.subspan(static_cast<size_t>(i), 1)));
  }
  return options_.profile ? collect_profile() : Status::ok();
}

Status GpuExecutor::forward_chunk(SeqId seq, std::span<const int32_t> tokens, bool all_logits,
                                  float* logits) {
  const HyperParams& hp = spec_.hp;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const Clock::time_point t_begin = Clock::now();
  host_times_ = HostTimes{};
  if (!stage_copy_start_.empty()) STRATA_RETURN_IF_ERROR(rebalance_cold_split());
  STRATA_ASSIGN_OR_RETURN(const int64_t pos0, kv_->reserve_slots(seq, n));
  STRATA_RETURN_IF_ERROR(sync_block_table(seq));
  const gpu::GpuKvView kv = kv_view(seq);
  // The previous step ended with a synchronize, so nothing still reads the staging buffer.
  auto* staged = static_cast<int32_t*>(step_inputs_.data());
  const int64_t max_n = options_.base.max_batch_tokens;
  std::memcpy(staged, tokens.data(), static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) staged[max_n + i] = static_cast<int32_t>(pos0 + i);
  STRATA_RETURN_IF_ERROR(upload_step_inputs(n));
  if (host_embedding_) STRATA_RETURN_IF_ERROR(embed_on_host(tokens));

  const int64_t first = all_logits ? 0 : n - 1;  // the first row that needs logits
  // The head runs inside run_model (and its graph) when its rows fit in one logits_ chunk.
  const int64_t head_rows = logits != nullptr && n - first <= kLogitRows ? n - first : 0;
  const bool decode = n <= gpu::kGpuGemvMaxTokens;
  Segment one;
  one.n = n;
  one.pos0 = pos0;
  one.kv = kv;
  describe_cold(seq, &one);
  STRATA_RETURN_IF_ERROR(prepare_stage(seq, &one));
  // A split attention needs the host in the middle of every layer, and staged cold blocks
  // change the copies and the table with every step: no graph for such a step. Steps with no
  // cold blocks to attend (a context within the hot window) replay their graph as usual.
  const bool cold_work = !one.cold_ranges.empty() || !staged_blocks_.empty();
  const bool graph =
      options_.cuda_graphs && !options_.profile && decode && graphable_[kDecode] && !cold_work;
  host_times_.prepare_s = seconds_since(t_begin);
  const auto t_run = Clock::now();
  if (graph) {
    STRATA_RETURN_IF_ERROR(run_model_graph(seq, n, pos0, kv, head_rows));
  } else {
    const Status ran = run_model(n, std::span(&one, 1), head_rows);
    staged_blocks_.clear();  // forward_batch steps read cold blocks in place (or on the CPU)
    STRATA_RETURN_IF_ERROR(ran);
  }
  host_times_.run_s = seconds_since(t_run);
  const AddSecondsOnExit timed_total{&host_times_.total_s, t_begin};  // total_s was reset above
  if (logits == nullptr) {
    STRATA_RETURN_IF_ERROR(stream_.synchronize());
    return options_.profile ? collect_profile() : Status::ok();
  }
  const int64_t E = hp.n_embd;
  const float eps = static_cast<float>(hp.rms_eps);
  for (int64_t r0 = first; r0 < n; r0 += kLogitRows) {
    const int64_t rows = std::min(kLogitRows, n - r0);
    if (head_rows == 0) {  // all logits of a long chunk: kLogitRows rows at a time
      STRATA_RETURN_IF_ERROR(
          gpu::rms_norm(act(x_) + r0 * E, output_norm_, act(xb_), rows, E, eps, stream_));
      const Operand head[1] = {operand(output_, phase_of(n), nullptr)};
      float* const outs[1] = {act(logits_)};
      STRATA_RETURN_IF_ERROR(matmuls(head, act(xb_), rows, outs));
    }
    STRATA_RETURN_IF_ERROR(cuda::memcpy_async(logits + (r0 - first) * hp.n_vocab, logits_.data(),
                                              rows * hp.n_vocab * 4, cuda::CopyKind::kDeviceToHost,
                                              stream_));
    STRATA_RETURN_IF_ERROR(stream_.synchronize());  // logits is pageable host memory
  }
  return options_.profile ? collect_profile() : Status::ok();
}

Status GpuExecutor::run_model_graph(SeqId seq, int64_t n, int64_t pos0, const gpu::GpuKvView& kv,
                                    int64_t head_rows) {
  // The graph bakes in every kernel argument; what changes from step to step is read from device
  // memory (positions, block table) except the decode attention's grid, one piece per
  // attention_split_tokens_ keys: a new piece count means a new capture.
  const int64_t pieces = (kv.num_tokens + attention_split_tokens_ - 1) / attention_split_tokens_;
  CapturedStep& step = graphs_[GraphKey{seq, n, head_rows}];
  if (step.graph.empty() || step.attention_pieces != pieces) {
    STRATA_RETURN_IF_ERROR(cuda::Graph::begin_capture(stream_));
    Segment one;
    one.n = n;
    one.pos0 = pos0;
    one.kv = kv;
    const Status queued = run_model(n, std::span(&one, 1), head_rows);
    StatusOr<cuda::Graph> captured = cuda::Graph::end_capture(stream_);  // always end it
    STRATA_RETURN_IF_ERROR(queued);
    if (!captured.is_ok()) return captured.status();
    step.graph = std::move(captured).value();
    step.attention_pieces = pieces;
  }
  return step.graph.launch(stream_);
}

// The model, as in Executor::forward_chunk: x is the residual stream; every sub-layer reads a
// normed copy of it and adds its output back. Shapes per token: n_embd E, q_dim Q, kv_dim K, n_ff
// F. All of it is queued on one stream; the host waits only for the logits.
Status GpuExecutor::run_model(int64_t n, std::span<const Segment> segments, int64_t head_rows) {
  const HyperParams& hp = spec_.hp;
  const int64_t E = hp.n_embd, Q = hp.q_dim(), K = hp.kv_dim(), F = hp.n_ff;
  const float eps = static_cast<float>(hp.rms_eps);
  float *x = act(x_), *xb = act(xb_), *q = act(q_), *k = act(k_), *v = act(v_);
  float *att = act(att_), *gate = act(gate_), *up = act(up_);
  const auto* positions = static_cast<const int32_t*>(positions_.data());
  const auto* ids = static_cast<const int32_t*>(ids_.data());

  const gpu::AttentionShape shape{hp.n_head, hp.n_head_kv, hp.head_dim};
  auto* rope_table = static_cast<float*>(rope_table_.data());

  const bool decode = n <= gpu::kGpuGemvMaxTokens;  // the GEMV kernels and their fusions
  const Phase phase = phase_of(n);
  if (weight_stream_) {  // the layers this phase streams, in order: their copies start now
    std::vector<const StreamedLayer*> pass;
    for (const Layer& l : layers_) {
      if (!l.streamed[phase].ranges.empty()) pass.push_back(&l.streamed[phase]);
    }
    if (!pass.empty()) STRATA_RETURN_IF_ERROR(weight_stream_->begin_pass(std::move(pass)));
  }

  STRATA_RETURN_IF_ERROR(mark(kOther));  // the start
  if (!host_embedding_) {                // x [n][E]
    STRATA_RETURN_IF_ERROR(gpu::embed_rows(token_embd_.resident, ids, n, x, stream_));
  }
  // cos/sin of every token's rotation, shared by all layers: [n][rope_dims / 2][2]
  STRATA_RETURN_IF_ERROR(
      gpu::rope_table(positions, n, hp.rope_dims, hp.rope_theta, rope_table, stream_));

  // RMSNorm folded into the GEMVs (fold_norms): xb holds x o g rather than the normed x, and
  // norm_scale the per-token scale the GEMV reading it applies. Only where every product of the
  // step is a GPU GEMV, since the accumulating GEMV of each sub-layer prepares the next norm.
  const bool fold = decode && options_.fold_norms && all_on_gpu(phase);
  auto* norm_scale = static_cast<float*>(norm_scale_.data());
  auto folded_in = [&](int64_t row0) {
    gpu::GemvNorm f;
    if (fold) f.in_scale = norm_scale + row0;
    return f;
  };
  auto folded_out = [&](const float* next_weight) {
    gpu::GemvNorm f;
    f.out_weight = next_weight;
    f.out_eps = eps;
    f.out_xg = xb;
    f.out_scale = norm_scale;
    f.scratch = gpu::gemv_norm_scratch_at(norm_scratch_.data(), E);
    return f;
  };

  // The integer GEMV path (int8_activations) for the decode GEMVs of Q8_0 / Q4_0 weights: xb,
  // the SwiGLU output h and the attention output quantized into their own buffers (x8_xb / x8_h
  // / x8_att). A GEMV never reads and writes the same one, and the writers of each wait for the
  // kernel before them (programmatic launches), so its readers are done.
  auto integer = [&](const Operand& op) {
    return decode && options_.int8_activations && op.cpu == nullptr &&
           (op.gpu.type == DType::kQ8_0 || op.gpu.type == DType::kQ4_0);
  };
  const gpu::ActivationsQ8 x8_xb = gpu::activations_q8_at(x8_xb_.data(), n, E);
  const gpu::ActivationsQ8 x8_h = gpu::activations_q8_at(x8_h_.data(), n, F);
  const gpu::ActivationsQ8 x8_att = gpu::activations_q8_at(x8_att_.data(), n, Q);
  bool xb_quantized = false;  // x8_xb holds xb: the GEMV before left it (GemvInt8::out8)
  bool h_quantized = false;
  // The GemvInt8 of a GEMV of `op` over `in` (x8: its quantized copy, made now unless `ready`).
  auto int8_in = [&](const Operand& op, const float* in, const gpu::ActivationsQ8& x8,
                     bool ready) -> StatusOr<gpu::GemvInt8> {
    gpu::GemvInt8 g;
    if (!integer(op)) return g;
    if (!ready) STRATA_RETURN_IF_ERROR(gpu::quantize_activations_q8(in, x8.n_tokens, x8, stream_));
    g.x8 = &x8;
    return g;
  };
  // ... and its output quantized into `out8` for `next`, an integer GEMV after it.
  auto with_out8 = [&](gpu::GemvInt8 g, const Operand& next, const gpu::ActivationsQ8& out8) {
    if (fold && integer(next) && options_.int8_quantize_in_gemv) {
      g.out8 = out8;
      g.out8_counters = static_cast<unsigned*>(x8_counters_.data());
    }
    return g;
  };

  // RoPE and the KV store in the QKV GEMV's epilogue (fuse_rope_store): one sequence, adjacent
  // pairs, no biases between the product and the rotation, a cache the epilogue writes.
  const bool rope_in_epilogue =
      decode && options_.fuse_rope_store && segments.size() == 1 && segments[0].row0 == 0 &&
      segments[0].n == n && hp.rope_style == RopeStyle::kAdjacentPairs && !hp.qkv_bias &&
      (segments[0].kv.dtype == DType::kF32 || segments[0].kv.dtype == DType::kF16);

  const bool staging = !staged_blocks_.empty();
  const bool cpu_split = std::any_of(segments.begin(), segments.end(),
                                     [](const Segment& s) { return !s.cold_ranges.empty(); });
  // Layers whose staging copies are queued ahead of their compute: one, or two where the CPU
  // attends a share. There the host queues copies only between the CPU's layers, and with one
  // ahead the next copy went in when the CPU finished the previous layer: whenever the link had
  // finished first it stood idle until then (the 128k step ran ~16 ms over its slower reader).
  // Two slots, so the copy two layers ahead waits for the GPU's kernel on the slot's last layer.
  const int64_t ahead = cpu_split ? 2 : 1;
  if (staging) {
    for (int64_t l = 0; l < std::min<int64_t>(ahead, hp.n_layer); ++l)
      STRATA_RETURN_IF_ERROR(queue_stage_copy(l));
  }
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const Layer& w = layers_[static_cast<size_t>(l)];
    // Later layers' cold blocks come up while this one computes. Where the CPU attends, the
    // host waits for each layer's q, so split_attention queues them once the GPU has its work up
    // to there: queued here, their calls (~2 per 32 blocks: the cold slabs stride layers)
    // delayed every layer's GPU work and so the CPU's start.
    int64_t stage_next = staging && l + ahead < hp.n_layer ? l + ahead : -1;
    if (stage_next >= 0 && !cpu_split) {
      STRATA_RETURN_IF_ERROR(queue_stage_copy(stage_next));
      stage_next = -1;
    }
    // A streamed layer's matrices are read from its staging slot (the compute waits for the copy).
    const bool streamed = !w.streamed[phase].ranges.empty();
    const uint8_t* slot = nullptr;
    if (streamed) {
      STRATA_ASSIGN_OR_RETURN(slot, weight_stream_->acquire());
    }
    const Operand wq = operand(w.wq, phase, slot), wk = operand(w.wk, phase, slot),
                  wv = operand(w.wv, phase, slot), wo = operand(w.wo, phase, slot),
                  w_gate = operand(w.w_gate, phase, slot), w_up = operand(w.w_up, phase, slot),
                  w_down = operand(w.w_down, phase, slot);

    // Attention block. Folded, the layer before left xb = x o attn_norm and its scale.
    if (!fold) {
      STRATA_RETURN_IF_ERROR(gpu::rms_norm(x, w.attn_norm, xb, n, E, eps, stream_));
    } else if (l == 0) {
      STRATA_RETURN_IF_ERROR(
          gpu::rms_norm_unapplied(x, w.attn_norm, xb, norm_scale, n, E, eps, stream_));
    }
    STRATA_RETURN_IF_ERROR(mark(kOther));
    const bool qkv_on_gpu = decode && !wq.cpu && !wk.cpu && !wv.cpu;
    const bool rope_in_gemv = qkv_on_gpu && rope_in_epilogue;
    if (rope_in_gemv) {  // q [n][Q] rotated; k rotated and v into the cache
      STRATA_ASSIGN_OR_RETURN(const gpu::GemvInt8 i8, int8_in(wq, xb, x8_xb, xb_quantized));
      STRATA_RETURN_IF_ERROR(gpu::gemv_qkv_rope_store(wq.gpu, wk.gpu, wv.gpu, xb, n, q, rope_table,
                                                      hp.rope_dims, hp.head_dim, segments[0].kv, l,
                                                      stream_, folded_in(0), i8));
    } else if (qkv_on_gpu) {  // q [n][Q], k [n][K], v [n][K] in one pass
      const gpu::GpuWeight qkv[3] = {wq.gpu, wk.gpu, wv.gpu};
      float* const outs[3] = {q, k, v};
      STRATA_ASSIGN_OR_RETURN(const gpu::GemvInt8 i8, int8_in(wq, xb, x8_xb, xb_quantized));
      STRATA_RETURN_IF_ERROR(gpu::gemv_multi(qkv, xb, n, outs, stream_, folded_in(0), i8));
    } else {
      const Operand qkv[3] = {wq, wk, wv};
      float* const outs[3] = {q, k, v};
      STRATA_RETURN_IF_ERROR(matmuls(qkv, xb, n, outs));
    }
    STRATA_RETURN_IF_ERROR(mark(kMatmul));
    if (hp.qkv_bias) {
      STRATA_RETURN_IF_ERROR(gpu::add_bias(q, w.bq, n, Q, stream_));
      STRATA_RETURN_IF_ERROR(gpu::add_bias(k, w.bk, n, K, stream_));
      STRATA_RETURN_IF_ERROR(gpu::add_bias(v, w.bv, n, K, stream_));
    }
    if (decode && l2_prefetch_bytes_ > 0) {
      // HBM fetches the matrices after attention into L2 while it runs (l2_prefetch.h).
      STRATA_RETURN_IF_ERROR(prefetch_after_attention({wo, w_gate, w_up}));
    }
    for (const Segment& s : segments) {
      // q rotated in place; k rotated and v stored into the segment's cache at its positions.
      if (!rope_in_gemv) {
        STRATA_RETURN_IF_ERROR(gpu::rope_store_kv(q + s.row0 * Q, k + s.row0 * K, v + s.row0 * K,
                                                  s.n, rope_table + s.row0 * hp.rope_dims, shape,
                                                  hp.rope_dims, hp.rope_style, s.kv, l, stream_));
      }
      STRATA_RETURN_IF_ERROR(mark(kOther));
      if (!s.cold_ranges.empty()) {  // cold blocks attended by the CPU
        STRATA_RETURN_IF_ERROR(
            split_attention(s, l, q + s.row0 * Q, att + s.row0 * Q, staging, stage_next));
        stage_next = -1;
      } else {
        if (staging) STRATA_RETURN_IF_ERROR(stream_.wait(stage_ready_[l & 1]));
        STRATA_RETURN_IF_ERROR(attention_->run(q + s.row0 * Q, s.n, s.pos0, s.kv, l,
                                               att + s.row0 * Q, stream_));  // att [n][Q]
        if (staging) STRATA_RETURN_IF_ERROR(stage_free_[l & 1].record(stream_));
      }
      STRATA_RETURN_IF_ERROR(mark(kAttention));
    }
    if (stage_next >= 0) STRATA_RETURN_IF_ERROR(queue_stage_copy(stage_next));
    if (fold) {  // x += Wo att, leaving xb = x o ffn_norm and its scale
      STRATA_ASSIGN_OR_RETURN(const gpu::GemvInt8 i8, int8_in(wo, att, x8_att, false));
      const gpu::GemvInt8 o8 = with_out8(i8, w_gate, x8_xb);  // xb for gate+up
      STRATA_RETURN_IF_ERROR(gpu::gemv(wo.gpu, att, n, x, GemvOutput::kAccumulate, stream_,
                                       folded_out(w.ffn_norm), o8));
      xb_quantized = o8.out8.q != nullptr;
    } else {
      const Operand ops[1] = {wo};
      float* const outs[1] = {x};
      STRATA_RETURN_IF_ERROR(matmuls(ops, att, n, outs, GemvOutput::kAccumulate));  // x += Wo att
    }
    STRATA_RETURN_IF_ERROR(mark(kMatmul));

    // Feed-forward block (SwiGLU).
    if (!fold) {
      STRATA_RETURN_IF_ERROR(gpu::rms_norm(x, w.ffn_norm, xb, n, E, eps, stream_));
      xb_quantized = false;
    }
    STRATA_RETURN_IF_ERROR(mark(kOther));
    if (decode && !w_gate.cpu && !w_up.cpu) {  // gate [n][F] = silu(W_gate xb) * (W_up xb)
      STRATA_ASSIGN_OR_RETURN(const gpu::GemvInt8 i8, int8_in(w_gate, xb, x8_xb, xb_quantized));
      const gpu::GemvInt8 o8 = with_out8(i8, w_down, x8_h);  // h for down
      STRATA_RETURN_IF_ERROR(
          gpu::gemv_swiglu(w_gate.gpu, w_up.gpu, xb, n, gate, stream_, folded_in(0), o8));
      h_quantized = o8.out8.q != nullptr;
    } else {
      const Operand ops[2] = {w_gate, w_up};
      float* const outs[2] = {gate, up};
      STRATA_RETURN_IF_ERROR(matmuls(ops, xb, n, outs));
      STRATA_RETURN_IF_ERROR(gpu::swiglu(gate, up, gate, n * F, stream_));
    }
    if (fold) {  // x += W h, leaving the next norm's inputs (the output norm after the last)
      const float* next_norm =
          l + 1 < hp.n_layer ? layers_[static_cast<size_t>(l + 1)].attn_norm : output_norm_;
      // Its xg feeds the next layer's QKV, or the head after the last layer.
      const Operand next = l + 1 < hp.n_layer
                               ? operand(layers_[static_cast<size_t>(l + 1)].wq, phase, nullptr)
                               : operand(output_, phase, nullptr);
      STRATA_ASSIGN_OR_RETURN(const gpu::GemvInt8 i8, int8_in(w_down, gate, x8_h, h_quantized));
      const gpu::GemvInt8 o8 = with_out8(i8, next, x8_xb);
      STRATA_RETURN_IF_ERROR(gpu::gemv(w_down.gpu, gate, n, x, GemvOutput::kAccumulate, stream_,
                                       folded_out(next_norm), o8));
      xb_quantized = o8.out8.q != nullptr;
      h_quantized = false;
    } else {
      const Operand ops[1] = {w_down};
      float* const outs[1] = {x};
      STRATA_RETURN_IF_ERROR(matmuls(ops, gate, n, outs, GemvOutput::kAccumulate));  // x += W h
    }
    STRATA_RETURN_IF_ERROR(mark(kMatmul));
    if (streamed) STRATA_RETURN_IF_ERROR(weight_stream_->release());  // its kernels are queued
  }
  // The last layer's CPU part (split_attention): after the head is queued, and before the step's
  // counters are read.
  if (head_rows == 0) return attender_.wait();

  // Final norm and the output head of the last head_rows tokens: logits_ [head_rows][n_vocab].
  const int64_t r0 = n - head_rows;
  const Operand head[1] = {operand(output_, phase, nullptr)};
  float* const logits[1] = {act(logits_)};
  if (fold) {  // the last down GEMV left xb = x o output_norm for every row
    // The head's rows of xb quantized: those of x8_xb if the last down GEMV left them.
    gpu::ActivationsQ8 head8 = gpu::activations_q8_at(x8_xb_.data(), head_rows, E);
    if (xb_quantized) {
      head8 = x8_xb;
      head8.q += r0 * E;
      head8.blocks += r0 * (E / gpu::kActivationBlock);
      head8.n_tokens -= r0;
    }
    STRATA_ASSIGN_OR_RETURN(const gpu::GemvInt8 i8,
                            int8_in(head[0], xb + r0 * E, head8, xb_quantized));
    STRATA_RETURN_IF_ERROR(gpu::gemv(head[0].gpu, xb + r0 * E, head_rows, logits[0],
                                     GemvOutput::kStore, stream_, folded_in(r0), i8));
  } else {
    STRATA_RETURN_IF_ERROR(gpu::rms_norm(x + r0 * E, output_norm_, xb, head_rows, E, eps, stream_));
    STRATA_RETURN_IF_ERROR(matmuls(head, xb, head_rows, logits));
  }
  STRATA_RETURN_IF_ERROR(mark(kLogits));
  return attender_.wait();
}

}  // namespace strata
