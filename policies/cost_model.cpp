#include "policies/cost_model.h"

#include <algorithm>
#include <set>

namespace strata {
namespace {

bool four_bit(DType t) { return t == DType::kQ4_0 || t == DType::kQ4_K || t == DType::kQ6_K; }

// The time of CPU work that takes cpu_alone_s on an idle host when PCIe streams for pcie_s
// alongside it: while the link runs, the CPU's reads get at most S - P of the host memory (on the
// GPU machine the 8B F16's CPU matmuls read 73-77 GB/s under streaming against 86-98 alone, with S
// - P at 80-98; the model keeps (S - P) / C of the idle rate, e.g. 0.82 for the 14B's host).
// Charging the CPU its idle rate made every split whose total stayed under S look equally fast, and
// ties went to the CPU-heavy end: CPU-bound steps with an idle link.
double with_streaming(double cpu_alone_s, double pcie_s, const Caps& caps) {
  if (cpu_alone_s <= 0 || pcie_s <= 0) return cpu_alone_s;
  const double shared = caps.host_combined_bytes_per_s - caps.h2d_pinned_bytes_per_s;
  // The fraction of its idle rate the CPU keeps: the whole of it when S - P covers C.
  const double f = std::clamp(shared / caps.cpu_read_bytes_per_s, 0.0, 1.0);
  if (f <= 0) return pcie_s + cpu_alone_s;
  return cpu_alone_s <= pcie_s * f ? cpu_alone_s / f : pcie_s + (cpu_alone_s - pcie_s * f);
}

}  // namespace

double gpu_gemv_efficiency(DType type, const Caps& caps) {
  if (four_bit(type)) return caps.gpu_gemv_efficiency_4bit;
  if (type == DType::kQ8_0) return caps.gpu_gemv_efficiency_8bit;
  return caps.gpu_gemv_efficiency_dense;
}

double cpu_gemv_efficiency(DType type, const Caps& caps) {
  return four_bit(type) ? caps.cpu_gemv_efficiency_4bit : caps.cpu_gemv_efficiency_dense;
}

void set_cpu_gemv_rate(DType type, double bytes_per_s, Caps* caps) {
  (four_bit(type) ? caps->cpu_gemv_efficiency_4bit : caps->cpu_gemv_efficiency_dense) =
      bytes_per_s / caps->cpu_read_bytes_per_s;
}

bool streamed_layers_stay_in_ring(const std::vector<TensorCost>& costs,
                                  const std::vector<Placement>& placements, const Policy& policy) {
  std::set<int64_t> layers;
  for (size_t i = 0; i < costs.size(); ++i) {
    if (placements[i] == Placement::kStream) layers.insert(costs[i].layer);
  }
  return static_cast<int64_t>(layers.size()) <= policy.prefetch_depth + 1;
}

Prediction predict_decode(const HyperParams& hp, const std::vector<TensorCost>& costs,
                          const std::vector<Placement>& placements, const Policy& policy,
                          const Caps& caps) {
  Prediction p;
  double gpu_s = 0, cpu_s = 0;
  const bool in_ring = streamed_layers_stay_in_ring(costs, placements, policy);
  for (size_t i = 0; i < costs.size(); ++i) {
    const auto bytes = static_cast<double>(costs[i].bytes);
    switch (placements[i]) {
      case Placement::kVram:
        p.vram_bytes += bytes;
        gpu_s += bytes / (caps.hbm_bytes_per_s * gpu_gemv_efficiency(costs[i].type, caps));
        break;
      case Placement::kStream:
        (in_ring ? p.vram_bytes : p.stream_bytes) += bytes;
        gpu_s += bytes / (caps.hbm_bytes_per_s * gpu_gemv_efficiency(costs[i].type, caps));
        break;
      case Placement::kCpu:
        p.cpu_bytes += bytes;
        cpu_s += bytes / (caps.cpu_read_bytes_per_s * cpu_gemv_efficiency(costs[i].type, caps));
        break;
    }
  }
  cpu_s *= 1.0 + 0.5 * static_cast<double>(policy.batch - 1);
  // Attention reads the whole KV of every sequence once per step: the hot part from VRAM, the
  // cold part (tiered KV, policy.hot_window) over PCIe (prefetch) or by the CPU where it lies
  // (cpu); auto takes the faster. Under the cpu policy all of it is read by the CPU.
  const double per_token = static_cast<double>(hp.kv_bytes_per_token(policy.kv_type)) *
                           static_cast<double>(policy.batch);
  if (policy.kind == PolicyKind::kCpu) {
    const double kv = per_token * static_cast<double>(policy.context_tokens);
    cpu_s += kv / caps.cpu_read_bytes_per_s;
    p.kv_host_bytes = kv;
  } else {
    gpu_s += per_token * static_cast<double>(policy.hot_kv_tokens()) / caps.hbm_bytes_per_s;
    p.kv_host_bytes = per_token * static_cast<double>(policy.cold_kv_tokens());
  }
  // The step's time with the cold KV brought over PCIe (prefetch) or split between the CPU and
  // PCIe (cpu: the executor's CPU share, (S - P) / S to start with, balanced per step by
  // ColdSplit): the slowest of the PCIe link, the GPU then the CPU, and the host memory both
  // links read.
  struct Step {
    double seconds, pcie_s, cpu_s, host_s;
  };
  auto step = [&](double cpu_share) {
    const double cold = policy.kind == PolicyKind::kCpu ? 0.0 : p.kv_host_bytes;
    const double cold_cpu = cpu_share * cold;
    const double stream = p.stream_bytes + (cold - cold_cpu);
    const double pcie = stream / caps.h2d_pinned_bytes_per_s;
    const double cpu = with_streaming(cpu_s + cold_cpu / caps.cpu_read_bytes_per_s, pcie, caps);
    const double host = (stream + p.cpu_bytes + cold_cpu) / caps.host_combined_bytes_per_s;
    return Step{std::max({pcie, gpu_s + cpu, host}), pcie, cpu, host};
  };
  const Step on_cpu = step(caps.cpu_share_of_host_reads()), prefetched = step(0.0);
  const bool cold_on_cpu =
      policy.cold_attention == ColdAttention::kCpu ||
      (policy.cold_attention == ColdAttention::kAuto && on_cpu.seconds < prefetched.seconds);
  p.cold_attention = p.kv_host_bytes > 0 ? (cold_on_cpu ? "cpu" : "prefetch") : "";
  const Step& chosen = cold_on_cpu ? on_cpu : prefetched;
  p.seconds = chosen.seconds;
  const double pcie_s = chosen.pcie_s, host_s = chosen.host_s;
  cpu_s = chosen.cpu_s;
  if (p.seconds == pcie_s && pcie_s > 0) {
    p.bound = "pcie";
  } else if (p.seconds == host_s && host_s > gpu_s + cpu_s) {
    p.bound = "host memory (streaming and CPU together)";
  } else {
    p.bound = cpu_s > gpu_s ? "cpu" : "hbm";
  }
  p.flops = 0;
  for (const TensorCost& c : costs) p.flops += 2.0 * static_cast<double>(c.params);
  p.flops *= static_cast<double>(policy.batch);
  p.tokens_per_s = p.seconds > 0 ? static_cast<double>(policy.batch) / p.seconds : 0;
  return p;
}

Prediction predict_prefill(const HyperParams& hp, const std::vector<TensorCost>& costs,
                           const std::vector<Placement>& placements, const Policy& policy,
                           const Caps& caps) {
  Prediction p;
  const auto n = static_cast<double>(policy.prefill_tokens);
  double gpu_flops = 0, cpu_flops = 0;
  for (size_t i = 0; i < costs.size(); ++i) {
    const double flops = 2.0 * static_cast<double>(costs[i].params) * (costs[i].head ? 1.0 : n);
    const auto bytes = static_cast<double>(costs[i].bytes);
    if (placements[i] == Placement::kCpu) {
      cpu_flops += flops;
      p.cpu_bytes += bytes;
    } else {
      gpu_flops += flops;
      (placements[i] == Placement::kVram ? p.vram_bytes : p.stream_bytes) += bytes;
    }
  }
  // Attention over the causal triangle, on the GPU (on the CPU under the cpu policy).
  const double attention =
      4.0 * static_cast<double>(hp.n_layer * hp.n_head * hp.head_dim) * n * (n + 1) / 2;
  (policy.kind == PolicyKind::kCpu ? cpu_flops : gpu_flops) += attention;
  p.flops = gpu_flops + cpu_flops;
  const double pcie_s = p.stream_bytes / caps.h2d_pinned_bytes_per_s;
  const double gpu_s = gpu_flops / caps.gpu_gemm_flop_per_s;
  const double cpu_s = cpu_flops / caps.cpu_gemm_flop_per_s;
  p.seconds = std::max(pcie_s, gpu_s) + cpu_s;
  p.bound = cpu_s > std::max(pcie_s, gpu_s) ? "cpu compute"
            : pcie_s > gpu_s                ? "pcie"
                                            : "gpu compute";
  p.tokens_per_s = p.seconds > 0 ? n / p.seconds : 0;
  return p;
}

}  // namespace strata
