// The CPU's compute-side rates that the planner's cost model needs (policies/caps.h), measured
// with the kernels the runtime runs: the decode GEMV's weight bytes/s per weight type, and the
// prefill matmul's FLOP/s. `strata calibrate` caches them; `bench/offload_bench` measures them
// again in its own run, so that its plan and its roofline see the same machine.
//
// Example usage:
//   STRATA_ASSIGN_OR_RETURN(double f16, cpu::measure_gemv_bytes_per_s(DType::kF16, 512 << 20));
//   caps.cpu_gemv_efficiency_dense = f16 / caps.cpu_read_bytes_per_s;
#pragma once

#include <cstdint>
#include <span>

#include "cpu_backend/gemv.h"
#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata::cpu {

// Best of three passes of gemv over copies of a 4096 x 4096 matrix of `type` filling
// `working_set_bytes` (far larger than the last-level cache, so every call streams its weights
// from DRAM, as decode does), on the current OpenMP threads.
StatusOr<double> measure_gemv_bytes_per_s(DType type, int64_t working_set_bytes);

// Best of three passes of gemv over `matrices` in turn (weight bytes / time). Given a model's own
// mapped tensors, this is the rate its CPU-run layers will see: on the GPU machine the synthetic
// 4096 x 4096 copies above read 47.6 GB/s of Q4_0 where the executor read the 70B's own layers
// at 103 (2026-12-02).
StatusOr<double> measure_gemv_bytes_per_s(std::span<const WeightMatrix> matrices);

// Best of three runs of CpuMatmul (bf16 inputs) on a 4096 x 4096 F16 matrix and 512 tokens.
StatusOr<double> measure_prefill_gemm_flop_per_s();

}  // namespace strata::cpu
