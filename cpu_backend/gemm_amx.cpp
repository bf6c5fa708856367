// AmxGemm (gemm_amx.h): argument checks, the slabs and units, the weights' dequantization into
// A tiles, and the emulated tile unit. The AMX instructions live in gemm_amx_tiles.cpp.
#include "cpu_backend/gemm_amx.h"

#include <cpuid.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_backend/aligned_array.h"
#include "cpu_backend/dequantize_bf16.h"
#include "cpu_backend/emulated_tiles.h"
#include "cpu_backend/gemm_amx_unit.h"

namespace strata::cpu {
namespace {

using amx_detail::EmulatedTiles;
using amx_detail::kTileElems;
using amx_detail::kTileFloats;
using amx_detail::pack_tokens_scalar;
using amx_detail::UnitArgs;

bool query_amx_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
  if (!amx_bf16 || !amx_tile) return false;
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  if (__get_cpuid(1, &a1, &b1, &c1, &d1) == 0 || ((c1 >> 27) & 1u) == 0) return false;  // OSXSAVE
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  const uint64_t xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  if ((xcr0 & (3ull << 17)) != (3ull << 17)) return false;  // XTILECFG, XTILEDATA
  // Linux hands out the 8 KiB tile state only on request (arch/x86/include/uapi/asm/prctl.h).
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

}  // namespace

bool amx_bf16_available() {
  static const bool available = query_amx_bf16();  // thread-safe once; never changes after
  return available;
}

bool amx_int8_available() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  // AMX-INT8 (CPUID 7.0 EDX bit 25); the tile state is granted with the bf16 check.
  static const bool available =
      amx_bf16_available() && __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && ((d >> 25) & 1u);
  return available;
}

namespace {

// Best of three: every OpenMP thread runs body() at once; ops_per_thread operations each.
template <class Body>
double best_all_thread_rate(const Body& body, double ops_per_thread) {
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    int threads = 1;
    std::chrono::steady_clock::time_point t0, t1;
#pragma omp parallel
    {
#pragma omp single
      threads = omp_get_num_threads();
#pragma omp barrier
#pragma omp master
      t0 = std::chrono::steady_clock::now();
#pragma omp barrier
      body();
#pragma omp barrier
#pragma omp master
      t1 = std::chrono::steady_clock::now();
    }
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    best = std::max(best, threads * ops_per_thread / secs);
  }
  return best;
}

constexpr int64_t kPeakIterations = 400000;  // x 6 instructions x 16 cycles: ~40 M cycles

}  // namespace

StatusOr<double> measure_amx_bf16_peak_flop_per_s() {
  if (!amx_bf16_available()) {
    return Status::unsupported("amx peak: this CPU or kernel offers no AMX-BF16 tiles");
  }
  constexpr double kFlopPerInstruction = 2.0 * 16 * 16 * 32;
  return best_all_thread_rate([] { amx_detail::run_peak_loop_amx(kPeakIterations); },
                              kPeakIterations * 6 * kFlopPerInstruction);
}

StatusOr<double> measure_amx_int8_peak_op_per_s(int64_t k_bytes) {
  if (k_bytes != 32 && k_bytes != 64) {
    return Status::invalid_argument("amx int8 peak: k_bytes must be 32 or 64");
  }
  if (!amx_int8_available()) {
    return Status::unsupported("amx int8 peak: this CPU or kernel offers no AMX-INT8 tiles");
  }
  const double ops_per_instruction = 2.0 * 16 * 16 * static_cast<double>(k_bytes);
  return best_all_thread_rate(
      [k_bytes] { amx_detail::run_peak_loop_amx_int8(kPeakIterations, k_bytes); },
      kPeakIterations * 6 * ops_per_instruction);
}

struct AmxGemm::Buffers {
  AlignedArray<uint16_t> a;  // one slab of weight tiles
  AlignedArray<uint16_t> b;  // all tokens' tiles
  AlignedArray<float> rows;  // dequantize_row_bf16 scratch, one row per thread
  AlignedArray<float> sums;  // one unit's C tiles per thread
};

AmxGemm::AmxGemm(const AmxGemmConfig& config)
    : config_(config), buffers_(std::make_unique<Buffers>()) {}

AmxGemm::~AmxGemm() = default;

Status AmxGemm::run(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y,
                    int64_t ldy) {
  const AmxGemmConfig& cfg = config_;
  if (cfg.unit_rows < 32 || cfg.unit_rows % 32 != 0 || cfg.unit_tokens < 32 ||
      cfg.unit_tokens % 32 != 0 || cfg.k_chunk < 32 || cfg.k_chunk % 32 != 0 ||
      cfg.tile_bytes <= 0) {
    return Status::invalid_argument(
        "amx gemm: unit_rows, unit_tokens and k_chunk must be positive multiples of 32 and "
        "tile_bytes positive (got " +
        std::to_string(cfg.unit_rows) + ", " + std::to_string(cfg.unit_tokens) + ", " +
        std::to_string(cfg.k_chunk) + ", " + std::to_string(cfg.tile_bytes) + ")");
  }
  if (cfg.skinny_max_tokens < 0 || cfg.skinny_max_tokens > 32 || cfg.skinny_k_chunk <= 0 ||
      cfg.skinny_k_chunk % 256 != 0) {
    return Status::invalid_argument(
        "amx gemm: skinny_max_tokens must be 0..32 and skinny_k_chunk a positive multiple of 256 "
        "(got " +
        std::to_string(cfg.skinny_max_tokens) + ", " + std::to_string(cfg.skinny_k_chunk) + ")");
  }
  if (cfg.unit == TileUnit::kAmx && !amx_bf16_available()) {
    return Status::unsupported("amx gemm: this CPU or kernel offers no AMX-BF16 tiles");
  }
  if (n_tokens < 0 || w.rows < 0 || w.cols <= 0 || ldy < w.rows) {
    return Status::invalid_argument("amx gemm: " + std::to_string(n_tokens) + " tokens, a " +
                                    std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                                    " matrix, ldy " + std::to_string(ldy));
  }
  if (n_tokens == 0 || w.rows == 0) return Status::ok();
  if (x == nullptr || y == nullptr || w.data == nullptr) {
    return Status::invalid_argument("amx gemm: null x, y or weights");
  }

  if (n_tokens <= cfg.skinny_max_tokens) return run_skinny(w, x, n_tokens, y, ldy);

  const int64_t cols = w.cols;
  const int64_t k_steps = (cols + 31) / 32, cols_pad = k_steps * 32;
  const int64_t tokens_pad = round_up(n_tokens, 32);
  const int64_t token_tiles = tokens_pad / 16;
  const int64_t threads = omp_get_max_threads();
  const bool amx = cfg.unit == TileUnit::kAmx;

  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  Clock::time_point t0 = Clock::now();
  uint16_t* b = buffers_->b.reserve(token_tiles * k_steps * kTileElems);
  if (b == nullptr) return Status::out_of_memory("amx gemm: token tiles");
#pragma omp parallel for schedule(static)
  for (int64_t tt = 0; tt < token_tiles; ++tt) {
    if (amx) {
      amx_detail::pack_tokens_avx512(x, cols, n_tokens, cols, k_steps, tt, tt + 1, b);
    } else {
      pack_tokens_scalar(x, cols, n_tokens, cols, k_steps, tt, tt + 1, b);
    }
  }

  times_.pack_s += seconds_since(t0);

  // A slab: as many weight rows (a multiple of 32) as tile_bytes of bf16 hold.
  const int64_t rows_pad = round_up(w.rows, 32);
  const int64_t slab_rows =
      std::min(rows_pad, std::max<int64_t>(32, cfg.tile_bytes / (cols_pad * 2) / 32 * 32));
  int64_t unit_rows = std::min(cfg.unit_rows, slab_rows);
  const int64_t unit_tokens = std::min(cfg.unit_tokens, tokens_pad);
  const int64_t token_units = (tokens_pad + unit_tokens - 1) / unit_tokens;
  // Enough units for every thread twice over, while a unit keeps a 32-row block.
  while (unit_rows > 32 && ((slab_rows + unit_rows - 1) / unit_rows) * token_units < 2 * threads) {
    unit_rows = std::max<int64_t>(32, unit_rows / 2 / 32 * 32);
  }
  uint16_t* a = buffers_->a.reserve(slab_rows / 16 * k_steps * kTileElems);
  float* row_f32 = buffers_->rows.reserve(threads * cols_pad);
  const int64_t sums_per_thread = (unit_rows / 16) * (unit_tokens / 16) * kTileFloats;
  float* sums = buffers_->sums.reserve(threads * sums_per_thread);
  if (a == nullptr || row_f32 == nullptr || sums == nullptr) {
    return Status::out_of_memory("amx gemm: weight tiles or scratch");
  }
  const int64_t row_bytes = w.row_stride_bytes();

  for (int64_t r0 = 0; r0 < w.rows; r0 += slab_rows) {
    const int64_t n = std::min(slab_rows, w.rows - r0), n_pad = round_up(n, 32);
    t0 = Clock::now();
    Status status;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_pad; ++r) {
      uint16_t* dst = a + (r / 16) * k_steps * kTileElems + (r % 16) * 32;
      if (r >= n) {  // padding rows of the last slab
        for (int64_t ks = 0; ks < k_steps; ++ks) std::fill_n(dst + ks * kTileElems, 32, 0);
        continue;
      }
      float* row = row_f32 + static_cast<int64_t>(omp_get_thread_num()) * cols_pad;
      const Status s =
          dequantize_row_bf16(w.type, w.data + (r0 + r) * row_bytes, cols, dst, kTileElems, row);
      if (!s.is_ok()) {
#pragma omp critical
        status = s;
      }
    }
    STRATA_RETURN_IF_ERROR(status);
    times_.dequant_s += seconds_since(t0);

    t0 = Clock::now();
    const int64_t row_units = (n_pad + unit_rows - 1) / unit_rows;
#pragma omp parallel
    {
      const amx_detail::ThreadTiles thread_tiles(amx);
      EmulatedTiles* const emulated = thread_tiles.emulated();
      float* scratch = sums + static_cast<int64_t>(omp_get_thread_num()) * sums_per_thread;
#pragma omp for schedule(dynamic, 1)
      for (int64_t unit = 0; unit < row_units * token_units; ++unit) {
        const int64_t ru = unit % row_units, tu = unit / row_units;
        UnitArgs u;
        u.a = a;
        u.b = b;
        u.k_steps = k_steps;
        u.k_chunk_steps = cfg.k_chunk / 32;
        u.row_tile0 = ru * unit_rows / 16;
        u.row_tiles = std::min(unit_rows, n_pad - ru * unit_rows) / 16;
        u.token_tile0 = tu * unit_tokens / 16;
        u.token_tiles = std::min(unit_tokens, tokens_pad - tu * unit_tokens) / 16;
        u.rows_valid = std::min(unit_rows, n - ru * unit_rows);
        u.tokens_valid = std::min(unit_tokens, n_tokens - tu * unit_tokens);
        u.scratch = scratch;
        u.y = y + tu * unit_tokens * ldy + r0 + ru * unit_rows;
        u.ldy = ldy;
        if (amx) {
          amx_detail::run_unit_amx(u);
        } else {
          amx_detail::run_unit(*emulated, u);
        }
      }
    }
    times_.units_s += seconds_since(t0);
  }
  return Status::ok();
}

// Bytes to move: the weights once (each block of 32 rows is read by one thread, chunk by chunk,
// and dequantized into that thread's tiles, 2 x skinny_k_chunk / 32 KiB); FLOPs: 2 x rows x cols
// x 16 or 32 tokens, at the tile unit's rate a few percent of the time the bytes take.
Status AmxGemm::run_skinny(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y,
                           int64_t ldy) {
  const AmxGemmConfig& cfg = config_;
  const int64_t cols = w.cols, k_steps = (cols + 31) / 32;
  const int64_t token_tiles = n_tokens > 16 ? 2 : 1;
  const int64_t chunk_steps = cfg.skinny_k_chunk / 32;
  const int64_t chunks = (k_steps + chunk_steps - 1) / chunk_steps;
  const int64_t blocks = (w.rows + 31) / 32;
  const int64_t threads = omp_get_max_threads();
  const bool amx = cfg.unit == TileUnit::kAmx;
  const DTypeTraits& traits_of_w = traits(w.type);
  const int64_t row_bytes = w.row_stride_bytes();

  uint16_t* b = buffers_->b.reserve(token_tiles * k_steps * kTileElems);
  const int64_t a_per_thread = 32 * chunk_steps * 32;
  uint16_t* a = buffers_->a.reserve(threads * a_per_thread);
  float* row_f32 = buffers_->rows.reserve(threads * cfg.skinny_k_chunk);
  float* sums = buffers_->sums.reserve(threads * 4 * kTileFloats);
  if (b == nullptr || a == nullptr || row_f32 == nullptr || sums == nullptr) {
    return Status::out_of_memory("amx gemm: token tiles or per-thread tiles");
  }

  using Clock = std::chrono::steady_clock;
  const Clock::time_point t0 = Clock::now();
  Status status;
#pragma omp parallel
  {
    // x into B tiles, a token tile and a chunk of columns per iteration.
#pragma omp for schedule(static)
    for (int64_t job = 0; job < token_tiles * chunks; ++job) {
      const int64_t tt = job / chunks, ks0 = (job % chunks) * chunk_steps;
      const int64_t steps = std::min(chunk_steps, k_steps - ks0), k0 = ks0 * 32;
      const float* xt = x + tt * 16 * cols + k0;
      const int64_t tokens = std::min<int64_t>(16, n_tokens - tt * 16);
      const int64_t valid_cols = std::min(cols - k0, steps * 32);
      uint16_t* bt = b + (tt * k_steps + ks0) * kTileElems;
      if (amx) {
        amx_detail::pack_tokens_avx512(xt, cols, tokens, valid_cols, steps, 0, 1, bt);
      } else {
        pack_tokens_scalar(xt, cols, tokens, valid_cols, steps, 0, 1, bt);
      }
    }  // implicit barrier: B is complete

    const amx_detail::ThreadTiles thread_tiles(amx);
    EmulatedTiles* const emulated = thread_tiles.emulated();
    const int64_t thread = omp_get_thread_num();
    uint16_t* tiles_a = a + thread * a_per_thread;
    float* row = row_f32 + thread * cfg.skinny_k_chunk;
    float* c = sums + thread * 4 * kTileFloats;
#pragma omp for schedule(static)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t r0 = block * 32, rows_valid = std::min<int64_t>(32, w.rows - r0);
      for (int64_t ks0 = 0; ks0 < k_steps; ks0 += chunk_steps) {
        const int64_t steps = std::min(chunk_steps, k_steps - ks0), k0 = ks0 * 32;
        const int64_t chunk_cols = std::min(cols - k0, steps * 32);
        // k0 is a multiple of 256, so of every block size: the chunk starts at a block.
        const int64_t src_offset = k0 / traits_of_w.block_elems * traits_of_w.block_bytes;
        // Plain rows (the tile loads take a stride), so that each row is written front to back:
        // with the weights in tile order, one row's runs lay 1 KiB apart and the stores, each to
        // a line of its own, took half of the dequantization's time (perf, 2-core VM).
        const int64_t lda = steps * 32;
        for (int64_t r = 0; r < 32; ++r) {
          uint16_t* dst = tiles_a + r * lda;
          if (r >= rows_valid) {  // rows past the matrix: zeros, their sums are dropped
            std::fill_n(dst, lda, 0);
            continue;
          }
          const Status st = dequantize_row_bf16(w.type, w.data + (r0 + r) * row_bytes + src_offset,
                                                chunk_cols, dst, 32, row);
          if (!st.is_ok()) {
#pragma omp critical
            status = st;
          }
        }
        amx_detail::SkinnyChunkArgs u;
        u.a = tiles_a;
        u.lda = lda;
        u.b = b;
        u.k_steps = k_steps;
        u.ks0 = ks0;
        u.steps = steps;
        u.token_tiles = token_tiles;
        u.first = ks0 == 0;
        u.last = ks0 + steps == k_steps;
        u.rows_valid = rows_valid;
        u.tokens_valid = n_tokens;
        u.c = c;
        u.y = y + r0;
        u.ldy = ldy;
        if (amx) {
          amx_detail::run_skinny_chunk_amx(u);
        } else {
          amx_detail::run_skinny_chunk(*emulated, u);
        }
      }
    }
  }
  times_.units_s += std::chrono::duration<double>(Clock::now() - t0).count();
  return status;
}

}  // namespace strata::cpu
