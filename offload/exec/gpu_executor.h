// GpuExecutor: the Llama-family decoder with the whole model in VRAM (`strata run --device gpu`).
// It is the GPU twin of Executor (executor.h): the same forward pass, top to bottom in
// `forward_chunk`, over gpu_backend's kernels, with the same answers (float32 decode GEMVs over
// the weights as stored; prefill GEMMs in float32 or, with GemmPrecision::kF16, on the tensor
// cores).
//
// Memory: every device byte comes from one DeviceArena with a hard budget (weights, KV blocks,
// the staging ring, activations, cuBLAS and attention workspace); the KV cache is the same paged
// KvCache as on the CPU, its blocks carved from the arena as tokens arrive.
//
// Where the weights live (models larger than VRAM, DESIGN.md "Weight tiers"): by default every
// matrix is resident, uploaded once at create() in the GPU layout of its stored type
// (gpu_backend/gpu_weight.h). With `placements` (a Plan from policies/planner.h) each matrix is,
// per phase (decode: chunks of at most kGpuGemvMaxTokens tokens; prefill: longer ones),
//   kVram    resident (when either phase says so: residency does not change between phases),
//   kStream  held in pinned host memory in the GPU layout and copied into a staging slot of the
//            WeightStream ring ahead of its layer, overlapped with the compute of earlier layers,
//   kCpu     multiplied on the CPU by cpu_backend from the mapped file: its input goes down and
//            its output comes up (a few KiB per token); the GPU runs norms, RoPE and attention.
// The KV cache of every layer stays in VRAM. The embedding table may stay on the host (its rows
// are dequantized there and copied up). Decode steps run as CUDA graphs when the phase has every
// layer matrix and the head resident.
//
// Example:
//   GpuExecutorOptions options;                // whole free VRAM minus a margin
//   STRATA_ASSIGN_OR_RETURN(auto gpu, GpuExecutor::create(spec, options));
//   STRATA_RETURN_IF_ERROR(gpu->add_sequence(0));
//   STRATA_RETURN_IF_ERROR(gpu->forward(0, prompt_ids, /*all_logits=*/false, &logits));
//
// In a build without CUDA, create() answers unsupported (gpu_executor_nocuda.cpp).
// Not thread-safe: one caller drives it.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <span>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpu_backend/attention.h"
#include "gpu_backend/cublas.h"
#include "gpu_backend/cuda_api.h"
#include "gpu_backend/gpu_weight.h"
#include "gpu_backend/matmul.h"
#include "memory/device_arena.h"
#include "memory/kv_cache.h"
#include "memory/pinned_host_pool.h"
#include "offload/exec/cold_split.h"
#include "offload/exec/engine.h"
#include "offload/exec/executor.h"
#include "offload/exec/host_worker.h"
#include "offload/exec/weight_stream.h"
#include "offload/model/llama_weights.h"
#include "offload/model/model_spec.h"
#include "policies/plan.h"

namespace strata {

struct GpuExecutorOptions {
  // Context, sequences, chunk size, KV block size and type: as on the CPU. max_batch_tokens is
  // the prefill chunk (GEMM rows); gemm_attention_min_tokens and attention_tile_tokens choose
  // the GEMM attention path and its query tile.
  ExecutorOptions base;
  int device = 0;
  // The hard VRAM budget; 0: the device's free memory minus kDefaultVramMarginBytes.
  int64_t vram_budget_bytes = 0;
  // Prefill GEMMs (and GEMM attention): kF32 exact, or kF16 tensor cores.
  gpu::GemmPrecision gemm_precision = gpu::GemmPrecision::kF16;
  // Print weight upload progress (bytes, rate, time left) to stderr.
  bool show_progress = false;
  // Time the GPU work per op family with events between ops (GpuProfile); costs a little, and
  // turns off the CUDA graphs (events cannot sit inside them).
  bool profile = false;
  // Decode steps (chunks of at most kGpuGemvMaxTokens tokens) are captured once per shape as a
  // CUDA graph and replayed: one launch per step instead of a few hundred.
  bool cuda_graphs = true;
  // Decode steps whose matrices all run on the GPU fold every RMSNorm into the GEMVs around it
  // (gemv.h, GemvNorm): the residual's accumulating GEMV leaves the next norm's inputs, the GEMV
  // after it applies the scale; two kernels a layer fewer. Off: rms_norm kernels, as prefill.
  bool fold_norms = true;
  // Decode steps of one sequence with adjacent-pair RoPE, no q/k/v biases and an F32 or F16
  // cache rotate q and k and store k and v in the QKV GEMV's epilogue (gemv_qkv_rope_store)
  // instead of a rope_store_kv kernel per layer.
  bool fuse_rope_store = true;
  // Decode GEMVs of Q8_0 and Q4_0 weights read their input quantized to 8 bits per block of 32
  // (activation_q8.h: one small kernel per input) and multiply by dp4a: llama.cpp's arithmetic,
  // so decode logits meet the golden `like_llama_cpp` tier instead of `exact`. Off: float32
  // activations, the exact path. CPU-run matrices (placements) then take the CPU's integer GEMV
  // (cpu::MatmulOptions::int8_gemv) for Q8_0/Q4_0/Q4_K/Q6_K as well.
  bool int8_activations = false;
  // With int8_activations and folded norms: the GEMV before each such GEMV quantizes its own
  // output (gemv.h, GemvInt8::out8), so only layer 0's QKV input and each attention output take
  // a quantize kernel; off: a quantize kernel before every integer GEMV. Off by default: on the
  // H200 (e7037a1, same call) it was slower, Q4_0 387.0 against 401.2 tok/s, Q8_0 297.4 against
  // 310.5: the fence, count and last block's quantization at the end of every short-lived CUDA
  // block cost more than the 96 quantize kernels it removes (bench/NOTES.md, tenth session).
  bool int8_quantize_in_gemv = false;
  // Chunks and batched steps of at most this many rows run with the decode placement (the
  // plan's split of host bytes between streaming and CPU-run matrices); longer ones with the
  // prefill placement (stream everything to the GPU). 0: 2 x kGpuGemvMaxTokens (16) where the
  // CPU multiplies a few rows on the AMX tiles at the weights' read rate (decode_rows_on_tiles()),
  // else kGpuGemvMaxTokens: there a float32 GEMV of 16 rows is compute-bound, and a batched step
  // that streams everything was the faster (bench/NOTES.md, "Batched decode on the tiles").
  int64_t decode_phase_max_tokens = 0;
  // The CPU's products of a few rows (batched decode steps) over Q8_0 and Q4_0 weights on the
  // AMX int8 tiles with x quantized per 32 (cpu::MatmulOptions::amx_int8); off: the bf16 tiles.
  // Both are the like_llama_cpp tier.
  bool cpu_amx_int8 = true;
  // Decode steps ask L2 to fetch this many bytes of the matrices after attention (the output
  // projection, then gate and up) just before each layer's attention runs (gpu::prefetch_l2):
  // at short contexts attention leaves HBM idle for microseconds a layer. -1: half the device's
  // L2 cache; 0: off. Off by default: on the H100 (2026-12-08) it made decode 2-6 % slower
  // (F16 0.784 vs 0.801 of B/H, Q4_0 0.380 vs 0.399; bench/NOTES.md, "H100 (2026-12-07, second
  // session)").
  int64_t l2_prefetch_bytes = 0;
  // Where each weight tensor lives and runs, by name (Plan::tensors); empty: all resident.
  // Tensors it does not name are resident; norms and biases are resident whatever it says (a few
  // KiB per layer). Only layer matrices may stream (a staging slot holds one layer).
  std::vector<TensorPlacement> placements;
  // Bytes the arena asks cudaMalloc for at a time (0: DeviceArenaOptions' default).
  int64_t arena_chunk_bytes = 0;
  // Staging slots beyond the one being computed: copies run this many layers ahead.
  int prefetch_depth = 2;
  // Pins the host copies of streamed weights; null: cudaMallocHost. When pinning is refused the
  // weights stay in pageable memory (with a warning): correct, but streamed at pageable speed.
  std::function<std::unique_ptr<HostPinner>()> make_host_pinner;
  // The default pinner's pages: 2 MiB pages registered with CUDA instead of cudaMallocHost's
  // 4 KiB ones (cuda::HostPages::kHuge; cudaMallocHost where that is refused). On the H200 a
  // 32k prefill past the hot window ran 9.1-10.5k tok/s with them against 7.5-8.4k without
  // (three calls, b79c054 to 50b83b7); decode was mixed in two, faster in the third.
  bool host_huge_pages = true;
  // Tiered KV (base.kv_hot_window_tokens > 0): decode steps attend the cold blocks on the CPU
  // where they lie (cpu::attention_ranges, OpenMP) while the GPU attends the hot ones, merged
  // through their log-sum-exps (issue 6's cold_attention = cpu). Off: the GPU reads cold blocks
  // in place over PCIe (or staged, cold_stage_blocks). Prefill chunks are never split.
  bool cold_attention_on_cpu = false;
  // Tiered KV: blocks of one layer's cold KV that a VRAM staging slot holds (two slots, so the
  // next layer's copy overlaps this layer's work): cold_attention = prefetch. A chunk's cold
  // blocks the GPU attends are copied by DMA (runs of adjacent blocks, on the KV copy stream)
  // into the slot of their layer before its attention, which then reads them from VRAM; blocks
  // past the capacity are read in place. 0: every cold block is read in place over PCIe, which
  // for a prefill chunk means once per 64-query tile (the flash kernel's grid), too slow past a
  // few thousand cold tokens. Costs 2 * cold_stage_blocks * 2 * layer_block_bytes of the arena.
  int64_t cold_stage_blocks = 0;
  // With cold_attention_on_cpu: the share of cold blocks the CPU attends; the GPU reads the
  // others in place over PCIe at the same time. Balanced when the CPU's part takes as long as
  // the link's: (S - P) / S, the CPU's share of host memory while PCIe streams (0.59 for S 135,
  // P 55 GB/s). Blocks are dealt by index in groups of cold_deal_blocks (Bresenham), so a
  // block's owner never changes and the CPU gets ranges of whole groups, all of a layer's
  // attended in one cpu::attention_ranges call (one OpenMP region). Groups of 32 blocks (512
  // tokens): with 256 a 32k context had ~6.5 groups, so a share of 0.42 gave the CPU 2 of them
  // and left the split unbalanced (CPU 24 ms, link 49 ms a step on the H200).
  double cold_cpu_fraction = 1.0;
  int64_t cold_deal_blocks = 32;
  // With cold_attention_on_cpu and staging: cold_cpu_fraction is only where the share starts;
  // after every decode step the share follows the rates measured on each side (the CPU's
  // attention time, the staging copies' event times), so that both end together (ColdSplit,
  // cold_split.h). The CPU's attention rate is not C: on the H200's host it ran at half of it.
  bool balance_cold_split = false;
  // With cold_attention_on_cpu: which threads attend the CPU's share of each layer. >= 0: a
  // worker thread with an OpenMP team of its own, this many threads (0: one per core but one)
  // pinned to the last cores, while the calling thread queues the GPU's work behind a flag
  // (gpu_backend/host_flag.h); -1: the calling thread's team, the GPU's work queued after it.
  // The default is what measured faster on the H200 (bench/NOTES.md, 2026-12-03).
  int cold_worker_threads = -1;

  static constexpr int64_t kDefaultVramMarginBytes = int64_t{1} << 30;
};

// GPU time per op family, when GpuExecutorOptions::profile is set: milliseconds between events
// recorded around the ops (gaps between kernels count to the op that follows them).
struct GpuProfile {
  double matmul_ms = 0;     // GEMV / GEMM (with tile dequantization and input rounding)
  double attention_ms = 0;  // attention over the paged KV cache
  double other_ms = 0;      // norms, rope, KV stores, embedding, elementwise
  double logits_ms = 0;     // final norm, output head, copy to the host
  double total() const { return matmul_ms + attention_ms + other_ms + logits_ms; }
};

// Host-side time of CPU-run matrices, summed over the executor's life: waiting for the GPU work
// before them (and so for any weight copy that work waits on), the CPU matmuls themselves, and
// the whole CPU part including queuing the uploads.
struct OffloadTimes {
  double host_wait_s = 0;
  double cpu_matmul_s = 0;
  double cpu_s = 0;
  int64_t cpu_weight_bytes = 0;
};

class GpuExecutor final : public Engine {
 public:
  // REQUIRES: `spec` outlives the executor. unsupported when there is no usable GPU or no CUDA in
  // this build (the message says which), invalid_argument for a weight type the GPU kernels do
  // not read, out_of_memory naming the tensor and the budget when the model does not fit.
  static StatusOr<std::unique_ptr<GpuExecutor>> create(const ModelSpec& spec,
                                                       const GpuExecutorOptions& options);
  ~GpuExecutor() override;
  GpuExecutor(const GpuExecutor&) = delete;
  GpuExecutor& operator=(const GpuExecutor&) = delete;

  Status add_sequence(SeqId seq) override;
  Status remove_sequence(SeqId seq) override;
  int64_t num_tokens(SeqId seq) const override { return kv_->num_tokens(seq); }
  bool has_sequence(SeqId seq) const override { return kv_->has_sequence(seq); }
  Status forward(SeqId seq, std::span<const int32_t> tokens, bool all_logits,
                 std::vector<float>* logits) override;
  // Batched decode: one row per sequence through one pass over the weights (each row's RoPE, KV
  // store and attention on its own sequence). REQUIRES: seqs.size() <= max_batch_tokens.
  Status forward_batch(std::span<const SeqId> seqs, std::span<const int32_t> tokens,
                       std::vector<float>* logits) override;

  const HyperParams& hp() const override { return spec_.hp; }
  int64_t max_context() const override { return options_.base.max_context; }
  KvCacheStats kv_stats() const override { return kv_->stats(); }
  // The CPU's share of cold blocks now, and the rates it was balanced on (0: not measured).
  const ColdSplit& cold_split() const { return cold_split_; }
  // Host seconds of the last forward_chunk, for telling a step's serial part apart (tiered KV):
  // before run_model (tables, staging plan, inputs), queue_stage_copy calls, run_model, and the
  // whole chunk.
  struct HostTimes {
    double prepare_s = 0, stage_enqueue_s = 0, run_s = 0, total_s = 0;
  };
  const HostTimes& last_host_times() const { return host_times_; }
  const char* kv_tier() const override { return "device"; }
  int64_t host_activation_bytes() const override;
  std::optional<DeviceArenaStats> device_stats() const override { return arena_->stats(); }
  std::string device_description() const override { return "gpu: " + device_name_; }

  // Device memory the executor holds outside its arena (the CUDA stream, cuBLAS's handle),
  // measured at creation and taken off the arena's budget, so that all of it fits the budget.
  int64_t outside_arena_bytes() const { return outside_arena_bytes_; }
  const OffloadTimes& offload_times() const { return offload_times_; }

  // Blocks until queued GPU work is done (benchmarks time with it).
  Status synchronize() const { return stream_.synchronize(); }
  const GpuProfile& profile() const { return profile_; }
  // Copies and slot hits of the staging ring (zero when nothing streams).
  WeightStreamStats stream_stats() const {
    return weight_stream_ ? weight_stream_->stats() : WeightStreamStats{};
  }
  // The host tier: pinned and pageable bytes of the streamed weights' host copies.
  PinnedHostPoolStats host_pool_stats() const {
    return host_pool_ ? host_pool_->stats() : PinnedHostPoolStats{};
  }

 private:
  enum Phase { kDecode = 0, kPrefill = 1 };
  // A weight matrix wherever it lives: resident (`resident` set), streamed in some phase (its
  // planes at `image_offset` in its layer's host image and staging slot) and/or run on the CPU.
  struct Matrix {
    const TensorSpec* spec = nullptr;
    Placement where[2] = {Placement::kVram, Placement::kVram};  // by Phase
    gpu::GpuWeight resident;                                    // data is null unless resident
    gpu::GpuWeightLayout layout;
    int64_t image_offset = -1;  // -1: never streamed
  };
  // What one matmul of a forward chunk reads: a device weight, or a tensor the CPU multiplies.
  struct Operand {
    gpu::GpuWeight gpu;
    const TensorSpec* cpu = nullptr;
  };
  // A layer's weights; norms and biases as float32 device arrays.
  struct Layer {
    const float* attn_norm = nullptr;
    Matrix wq, wk, wv, wo;
    const float* bq = nullptr;
    const float* bk = nullptr;
    const float* bv = nullptr;
    const float* ffn_norm = nullptr;
    Matrix w_gate, w_up, w_down;
    HostBuffer image;           // host copy of the matrices streamed in some phase
    StreamedLayer streamed[2];  // by Phase: what the phase copies (no ranges: not streamed)
  };
  // The device copy of one sequence's block table (gpu_backend/gpu_kv_view.h layout).
  struct SequenceTable {
    DeviceBuffer table;
    std::vector<void*> host;  // mirror of what was uploaded
    // cold_attention_on_cpu: the same table with the cold blocks' entries null, and its mirror.
    DeviceBuffer hot_table;
    std::vector<void*> hot_host;
    int64_t uploaded_blocks = 0;
    int64_t blocks_moved = 0;  // KvCache::blocks_moved when `host` was last brought up to date
  };

  GpuExecutor(const ModelSpec& spec, const GpuExecutorOptions& options)
      : spec_(spec), options_(options) {}
  Status init();
  Status upload_weights();
  StatusOr<gpu::GpuWeight> upload_matrix(const TensorSpec* t,
                                         const cuda::PinnedHostBuffer& staging);
  StatusOr<const float*> upload_small(const TensorSpec* t);  // norm or bias, as float32
  // Placement of a tensor by name from options_.placements (resident when not named).
  void place(const TensorSpec* t, Matrix* m) const;
  // Builds the host images of the streamed layers and the staging ring.
  // `progress` is told the bytes of each matrix copied into a host image.
  Status prepare_streaming(const std::function<void(int64_t)>& progress);
  Phase phase_of(int64_t n_tokens) const {  // the placement a chunk of n_tokens rows runs with
    return n_tokens <= decode_phase_max_tokens_ ? kDecode : kPrefill;
  }
  bool phase_on_gpu(Phase phase) const;  // every layer matrix and the head resident
  // The operand of `m` in `phase`; `slot` is the layer's staging slot when it streams.
  Operand operand(const Matrix& m, Phase phase, const uint8_t* slot) const;
  // Whether every weight product of `phase` runs on the GPU (none is CPU-run).
  bool all_on_gpu(Phase phase) const;
  // Y = W X for several weights over the same x: GPU operands are queued first (they run while
  // the CPU works), then x goes down once for the CPU operands and their outputs come up.
  // kAccumulate adds into outs (CPU results go through xb_, which must be dead here).
  Status matmuls(std::span<const Operand> ops, const float* x, int64_t n_tokens,
                 std::span<float* const> outs, gpu::GemvOutput output = gpu::GemvOutput::kStore);
  // Queues gpu::prefetch_l2 of the GPU-run matrices of `next` (payload, then scales), in order,
  // up to l2_prefetch_bytes_.
  Status prefetch_after_attention(std::initializer_list<Operand> next);
  // Host-side embedding: rows dequantized on the CPU, copied up into x_.
  Status embed_on_host(std::span<const int32_t> tokens);
  // Queues the upload of the first n staged ids and positions (step_inputs_).
  Status upload_step_inputs(int64_t n);
  // Uploads the block-table entries of blocks the sequence gained since the last call.
  Status sync_block_table(SeqId seq);
  gpu::GpuKvView kv_view(SeqId seq) const;
  Status forward_chunk(SeqId seq, std::span<const int32_t> tokens, bool all_logits, float* logits);
  // Queues the model on the stream for n tokens at pos0..pos0+n-1 (ids and positions already on
  // the device): embedding, every layer and, when head_rows > 0, the final norm and the output
  // head for the last head_rows tokens into logits_ (head_rows <= kLogitRows).
  // When the embedding is on the host, x_ holds the embedded tokens already. `segments` split the
  // rows by sequence (one segment for a chunk of one sequence; one per sequence in a batch):
  // RoPE, the KV store and attention run per segment, everything else over all n rows.
  struct Segment {
    int64_t row0 = 0;
    int64_t n = 0;
    int64_t pos0 = 0;
    gpu::GpuKvView kv;  // positions point at the segment's first row
    // With cold_attention_on_cpu: the sequence, its view with cold blocks masked (null), and
    // its cold key ranges [begin, end); no ranges: attention as usual.
    SeqId seq = 0;
    gpu::GpuKvView hot_kv;
    std::vector<std::pair<int64_t, int64_t>> cold_ranges;
  };
  // Buffers of cold_attention_on_cpu (tiered KV only).
  Status init_cold_attention();
  // True for the cold blocks (by index) the CPU attends (the share cold_split_ holds).
  bool cpu_attends(int64_t block) const;
  // balance_cold_split: folds the last step's staging copy times into cold_split_; when the
  // share moves, every sequence's tables go up again (their hot entries depend on it).
  Status rebalance_cold_split();
  // Fills s->seq, hot_kv and cold_ranges for a decode segment of `seq` (see Segment).
  void describe_cold(SeqId seq, Segment* s) const;
  // Attention of segment s in layer l split between the GPU (hot blocks) and the CPU (cold).
  // staging: the GPU's part reads this layer's staging slot (waits for its copy, frees it).
  // stage_layer >= 0: queues that layer's staging copies once the GPU's part is queued.
  Status split_attention(const Segment& s, int64_t layer, const float* q, float* out, bool staging,
                         int64_t stage_layer);
  // cold_stage_blocks: buffers and events (tiered KV only).
  Status init_cold_stage();
  // For a chunk of `seq` (segment *s, after describe_cold): picks the cold blocks the GPU
  // attends, up to the capacity, builds the table whose entries for them point into the layer's
  // staging slot, uploads it and points s's views at it. No cold blocks: nothing changes.
  Status prepare_stage(SeqId seq, Segment* s);
  // Queues the copies of layer l's staged blocks into slot l & 1 (after that slot's previous
  // attention, two layers back), then records the slot's ready event.
  Status queue_stage_copy(int64_t layer);
  Status run_model(int64_t n, std::span<const Segment> segments, int64_t head_rows);
  // run_model through a CUDA graph captured for this shape (and re-captured when the number of
  // decode attention pieces changes).
  Status run_model_graph(SeqId seq, int64_t n, int64_t pos0, const gpu::GpuKvView& kv,
                         int64_t head_rows);
  Status matmul(const gpu::GpuWeight& w, const float* x, int64_t n_tokens, float* y,
                gpu::GemvOutput output = gpu::GemvOutput::kStore);
  float* act(const DeviceBuffer& b) const { return static_cast<float*>(b.data()); }
  // Profiling: marks the end of an op of `family` (0 matmul, 1 attention, 2 other, 3 logits).
  enum Family { kMatmul, kAttention, kOther, kLogits };
  Status mark(Family family);
  Status collect_profile();  // REQUIRES: the stream is synchronized

  const ModelSpec& spec_;
  GpuExecutorOptions options_;
  std::string device_name_;
  int sm_count_ = 1;
  int64_t l2_prefetch_bytes_ = 0;  // options_.l2_prefetch_bytes resolved for this device
  int64_t outside_arena_bytes_ = 0;
  OffloadTimes offload_times_;
  // host_x_ and host_y_ under their device addresses, when both are pinned (else null).
  const float* host_x_device_ = nullptr;
  const float* host_y_device_ = nullptr;
  const int32_t* step_inputs_device_ = nullptr;  // step_inputs_ under its device address, or null
  LlamaWeights bound_;

  // Declaration order is destruction order reversed: everything holding arena memory is declared
  // after the arena so that it is destroyed first.
  cuda::Stream stream_;
  std::unique_ptr<DeviceArena> arena_;
  std::unique_ptr<PinnedHostPool> host_pool_;  // the host tier of streamed weights, host buffers
  std::vector<DeviceBuffer> weight_buffers_;
  Matrix token_embd_, output_;
  const float* output_norm_ = nullptr;
  std::vector<Layer> layers_;
  std::unique_ptr<gpu::Cublas> blas_;
  std::unique_ptr<gpu::GpuMatmul> matmul_;
  std::unique_ptr<gpu::GpuAttention> attention_;
  cuda::Stream kv_copy_stream_;  // demotions of KV blocks to the cold tier (tiered KV only)
  std::unique_ptr<KvCache> kv_;
  std::unordered_map<SeqId, SequenceTable> tables_;
  std::unique_ptr<WeightStream> weight_stream_;  // null when nothing streams

  // The CPU side of CPU-run matrices.
  std::unique_ptr<cpu::CpuMatmul> cpu_matmul_;
  HostBuffer host_x_, host_y_;  // matmul inputs going down, outputs coming up
  cuda::Event host_ready_;      // host_x_ holds what was copied down
  bool host_embedding_ = false;
  bool graphable_[2] = {true, true};                          // by Phase
  int64_t decode_phase_max_tokens_ = gpu::kGpuGemvMaxTokens;  // options_' resolved at init

  // Activations [max_batch_tokens][width] (device), allocated once.
  DeviceBuffer x_, xb_, q_, k_, v_, att_, gate_, up_;
  // Folded RMSNorms (fold_norms): each token's scale, and the GEMVs' scratch for making it.
  DeviceBuffer norm_scale_, norm_scratch_;
  // int8_activations: xb, the SwiGLU output and the attention output quantized
  // (kGpuGemvMaxTokens rows each), and the GEMVs' counters for quantizing their outputs.
  DeviceBuffer x8_xb_, x8_h_, x8_att_, x8_counters_;
  DeviceBuffer ids_, positions_;  // int32 [max_batch_tokens]
  DeviceBuffer rope_table_;       // (cos, sin) [max_batch_tokens][rope_dims / 2][2]
  DeviceBuffer logits_;           // [kLogitRows][n_vocab]
  static constexpr int64_t kLogitRows = 64;

  // Decode-step graphs by (sequence, tokens, head rows); each remembers the attention pieces it
  // was captured for.
  struct GraphKey {
    SeqId seq;
    int64_t n_tokens;
    int64_t head_rows;
    bool operator<(const GraphKey& o) const {
      return std::tie(seq, n_tokens, head_rows) < std::tie(o.seq, o.n_tokens, o.head_rows);
    }
  };
  struct CapturedStep {
    int64_t attention_pieces = 0;
    cuda::Graph graph;
  };
  std::map<GraphKey, CapturedStep> graphs_;
  int64_t attention_split_tokens_ = 0;
  cuda::PinnedHostBuffer step_inputs_;  // ids then positions, [2][max_batch_tokens] int32

  // cold_attention_on_cpu: q going down and the CPU's part coming up (pinned, read and written
  // by kernels under their device addresses), the GPU part's log-sum-exps, host scratch.
  int64_t cold_max_tokens_ = 0;
  cuda::PinnedHostBuffer cold_q_, cold_out_, cold_lse_;
  float* cold_q_device_ = nullptr;
  const float* cold_out_device_ = nullptr;
  const float* cold_lse_device_ = nullptr;
  DeviceBuffer gpu_lse_;
  cuda::Event cold_q_ready_;
  std::vector<float> cold_scratch_;
  // The CPU's part is done: a counter in pinned memory the stream waits on before the merge
  // (gpu::wait_host_flag), raised by the attender's job; the last value queued.
  cuda::PinnedHostBuffer cold_done_;
  const int64_t* cold_done_device_ = nullptr;
  int64_t cold_done_count_ = 0;
  int cpu_threads_ = 0;           // the OpenMP threads of the creating thread's team
  bool attender_placed_ = false;  // the attender's team is sized and pinned (its first job)

  // cold_stage_blocks: two slots of [K: cap][V: cap] layer blocks, the chunk's table with
  // staged entries and its mirror, the staged blocks' indices of this chunk (empty: no staging),
  // the sequence they belong to, the slots' ready (copy done) and free (attention done) events.
  DeviceBuffer stage_, stage_table_;
  std::vector<void*> stage_host_;
  std::vector<int64_t> staged_blocks_;
  SeqId staged_seq_ = 0;
  cuda::Event stage_ready_[2], stage_free_[2];
  std::vector<void*> stage_dsts_;  // queue_stage_copy's batch, kept to reuse their room
  std::vector<const void*> stage_srcs_;
  std::vector<size_t> stage_sizes_;

  // The CPU's share of the cold blocks (fixed, or balanced per step) and, when balanced, each
  // layer's staging copy start and end (timed events) of the last step and the bytes it copied.
  ColdSplit cold_split_{1.0};
  HostTimes host_times_;
  // Runs the CPU's part of each layer's split attention (split_attention) while this thread
  // queues the layer's remaining GPU work and the next layer's behind a wait for it. Declared
  // after the buffers its jobs use, so it is gone (its job waited for) before they are.
  HostWorker attender_;
  std::vector<cuda::Event> stage_copy_start_, stage_copy_end_;
  int64_t stage_copy_layers_ = 0;
  double stage_copy_bytes_ = 0;

  GpuProfile profile_;
  std::vector<cuda::Event> marks_;  // recorded this forward call, in order
  std::vector<Family> mark_families_;
  size_t num_marks_ = 0;
};

}  // namespace strata
