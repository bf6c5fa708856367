// measure_gemm_flops: oneDNN's own matmul rate on a shape, the weights already in the layout it
// prefers (blocked for AMX), so no dequantization or reorder is timed: the best oneDNN can do,
// for comparison with the kernels the executor runs (cpu_e2e_bench, cpu_gemm_bench).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <dnnl.hpp>
#include <random>
#include <vector>

#include "offload/core/dtype.h"

namespace strata::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// FLOP/s of one oneDNN matmul [m x k] x [k x n] in `dt` (f32 out), median of a few runs.
inline double measure_gemm_flops(int64_t m, int64_t k, int64_t n, dnnl::memory::data_type dt) {
  using dnnl::memory;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  memory::desc a({m, k}, dt, memory::format_tag::ab);
  // The weights in the layout the matmul prefers (blocked for AMX), as the executor gives them.
  memory::desc b({k, n}, dt, memory::format_tag::any);
  memory::desc c({m, n}, memory::data_type::f32, memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
  dnnl::matmul mm(pd);
  memory am(a, eng), bm(pd.weights_desc(), eng), cm(c, eng);
  // Random (not zero) inputs: bf16/f32 bit patterns of small normals.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto fill = [&](memory& mem, int64_t count) {
    if (dt == memory::data_type::f32) {
      auto* p = static_cast<float*>(mem.get_data_handle());
      for (int64_t i = 0; i < count; ++i) p[i] = nd(rng);
    } else {
      auto* p = static_cast<uint16_t*>(mem.get_data_handle());
      for (int64_t i = 0; i < count; ++i) p[i] = f32_to_bf16(nd(rng));
    }
  };
  fill(am, m * k);
  fill(bm,
       static_cast<int64_t>(pd.weights_desc().get_size() / (dt == memory::data_type::f32 ? 4 : 2)));
  std::vector<double> times;
  for (int r = 0; r < 6; ++r) {
    const double t0 = now_s();
    mm.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    strm.wait();
    if (r > 0) times.push_back(now_s() - t0);  // the first run includes JIT and first touch
  }
  std::sort(times.begin(), times.end());
  return 2.0 * m * k * n / times[times.size() / 2];
}


}  // namespace strata::bench
