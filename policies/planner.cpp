#include "policies/planner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <regex>

#include "policies/cost_model.h"

namespace strata {
namespace planner {

std::vector<Unit> units_of(const ModelSpec& spec, std::vector<TensorPlacement>* tensors) {
  std::vector<Unit> layers(static_cast<size_t>(spec.hp.n_layer));
  Unit head{"output", {}, 0}, embd{"token_embd", {}, 0};
  for (size_t l = 0; l < layers.size(); ++l) layers[l].name = "blk." + std::to_string(l);
  for (const TensorSpec& t : spec.tensors) {
    TensorPlacement tp;
    tp.name = t.name;
    tp.bytes = static_cast<int64_t>(t.size_bytes);
    const size_t index = tensors->size();
    Unit* unit = &head;
    if (t.name.rfind("blk.", 0) == 0) {
      tp.layer = std::stoll(t.name.substr(4));
      unit = &layers[static_cast<size_t>(tp.layer)];
    } else if (t.name == "token_embd.weight" && !spec.hp.tied_embeddings) {
      unit = &embd;
    }  // output.weight, output_norm.weight, rope_freqs, a tied token_embd: the head
    unit->tensors.push_back(index);
    unit->bytes += tp.bytes;
    tensors->push_back(std::move(tp));
  }
  std::vector<Unit> out = std::move(layers);
  out.push_back(std::move(head));
  if (!embd.tensors.empty()) out.push_back(std::move(embd));
  return out;
}

TierBytes fixed_vram(const ModelSpec& spec, const Policy& policy, int64_t largest_unit_bytes,
                     bool streams) {
  const HyperParams& hp = spec.hp;
  TierBytes b;
  if (policy.kind == PolicyKind::kCpu) {  // no GPU at all: the whole KV on the host
    b.host_kv = hp.kv_bytes_per_token(policy.kv_type) * policy.context_tokens * policy.batch;
    return b;
  }
  // KV: the hot window (and sinks) of every sequence in VRAM, the older part in pinned host.
  const int64_t per_token = hp.kv_bytes_per_token(policy.kv_type);
  b.vram_kv = per_token * policy.hot_kv_reserved_tokens() * policy.batch;
  b.host_kv = per_token * policy.cold_kv_tokens() * policy.batch;
  // Cold KV prefetched back for attention needs VRAM for two layers of it (one being read, one
  // arriving: GpuExecutorOptions::cold_stage_blocks); attended on the CPU, prefill chunks still
  // prefetch it, so the plan keeps the room either way.
  if (b.host_kv > 0) b.vram_staging += 2 * b.host_kv / std::max<int64_t>(1, hp.n_layer);
  // What GpuExecutor allocates besides weights and KV (gpu_executor.cpp, gpu_backend/matmul.cpp,
  // attention.cu), written out here because policies/ does not link the GPU code: activations of
  // a prefill chunk (x, xb, q, k, v, att, gate, up in float32), the logits of up to 64 rows,
  // cuBLAS's 32 MiB, one dequantized tile of the largest layer matrix and the chunk in f16, the
  // attention workspace (f16 K and V of a whole context, the chunk's f16 queries, float32 and f16
  // scores of a 512-query tile, at most 32 Mi floats), and 64 MiB for block tables, rope tables
  // and the arena's rounding; and what the executor holds outside its arena.
  const int64_t n = policy.prefill_tokens;
  const int64_t widest = std::max({hp.n_embd, hp.n_ff, hp.q_dim()});
  const int64_t act = n * 4 * (2 * hp.n_embd + 2 * hp.q_dim() + 2 * hp.kv_dim() + 2 * hp.n_ff);
  const int64_t tile = std::min<int64_t>(int64_t{256} << 20, hp.n_ff * hp.n_embd * 2);
  const int64_t ctx = policy.context_tokens;
  const int64_t scores =
      std::min<int64_t>(int64_t{32} << 20, hp.n_head * ctx * std::min<int64_t>(512, n));
  const int64_t attention = 2 * ctx * hp.kv_dim() * 2 + n * hp.q_dim() * 2 + scores * 6;
  b.vram_workspace = act + 64 * hp.n_vocab * 4 + (int64_t{32} << 20) + tile + n * widest * 2 +
                     attention + (int64_t{64} << 20) + kOutsideArenaBytes;
  if (streams) b.vram_staging += (policy.prefetch_depth + 1) * largest_unit_bytes;
  return b;
}

}  // namespace planner

namespace {

using planner::Unit;

std::vector<TensorCost> costs_of(const ModelSpec& spec) {
  std::vector<TensorCost> costs;
  for (const TensorSpec& t : spec.tensors) {
    TensorCost c;
    c.bytes = static_cast<int64_t>(t.size_bytes);
    c.type = t.type;
    // One multiply-add per weight per token; the embedding is a lookup; norms are noise.
    const bool lookup = t.name == "token_embd.weight" && !spec.hp.tied_embeddings;
    c.params = lookup || t.ne.size() < 2 ? 0 : t.num_elements();
    // The embedding is read one row per token.
    if (lookup) c.bytes = static_cast<int64_t>(t.size_bytes) / std::max<int64_t>(1, t.num_rows());
    if (t.name.rfind("blk.", 0) == 0) c.layer = std::stoll(t.name.substr(4));
    c.head =
        t.name == "output.weight" || (spec.hp.tied_embeddings && t.name == "token_embd.weight");
    costs.push_back(c);
  }
  return costs;
}

}  // namespace

Plan make_plan(const ModelSpec& spec, const Policy& policy, const Caps& caps) {
  Plan plan;
  plan.policy = policy_kind_name(policy.kind);
  plan.caps_source = caps.source;
  std::vector<Unit> units = planner::units_of(spec, &plan.tensors);
  const std::vector<TensorCost> costs = costs_of(spec);
  const int64_t budget =
      policy.kind == PolicyKind::kCpu
          ? 0
          : (policy.vram_budget_bytes > 0
                 ? policy.vram_budget_bytes
                 : std::max<int64_t>(0, caps.vram_free_bytes - Policy::kDefaultVramMarginBytes));
  plan.vram_budget_bytes = budget;

  // Pass 2: rules pin tensors; a unit with any pinned tensor keeps the rest free to move.
  // Each rule's expression is compiled once, not once per tensor.
  std::vector<std::regex> rule_res;
  for (const PlacementRule& rule : policy.rules) rule_res.emplace_back(rule.match);
  std::vector<bool> pinned(plan.tensors.size(), false);
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    for (size_t r = 0; r < policy.rules.size(); ++r) {
      if (std::regex_match(plan.tensors[i].name, rule_res[r])) {
        plan.tensors[i].decode = plan.tensors[i].prefill = policy.rules[r].place;
        plan.tensors[i].by_rule = true;
        pinned[i] = true;
      }
    }
  }
  auto unit_free_bytes = [&](const Unit& u) {
    int64_t b = 0;
    for (size_t t : u.tensors) b += pinned[t] ? 0 : plan.tensors[t].bytes;
    return b;
  };
  auto place_unit = [&](const Unit& u, Placement decode, Placement prefill) {
    for (size_t t : u.tensors) {
      if (pinned[t]) continue;
      plan.tensors[t].decode = decode;
      plan.tensors[t].prefill = prefill;
    }
  };
  int64_t pinned_vram = 0;
  bool pinned_stream = false;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    if (!pinned[i]) continue;
    if (plan.tensors[i].decode == Placement::kVram) pinned_vram += plan.tensors[i].bytes;
    if (plan.tensors[i].decode == Placement::kStream) pinned_stream = true;
  }

  // The embedding stays on the host: one row per token is copied up.
  const bool has_embd = units.back().name == "token_embd";
  if (has_embd) place_unit(units.back(), Placement::kCpu, Placement::kCpu);
  // Units that may become resident, in the order they are tried: layers in model order, the head
  // first or last (-ngl puts it last; a head first keeps the unit every token reads in VRAM, but
  // which order leaves fewer bytes on the host depends on the sizes, so auto tries both).
  const size_t n_layers = static_cast<size_t>(spec.hp.n_layer);
  const size_t head = n_layers;
  // Layers in model order for gpu-first (a prefix, as -ngl), else in spread order: bit-reversed
  // indices (van der Corput), so that any number of residents that fits lies evenly among the
  // host layers. A prefill pass then alternates resident and streamed layers, and the copy engine
  // fills the ring while the GPU runs the residents; with the residents first, the link would
  // idle through all of them and the streamed ones would run back to back at PCIe speed.
  std::vector<size_t> layer_order;
  if (policy.kind == PolicyKind::kGpuFirst) {
    for (size_t l = 0; l < n_layers; ++l) layer_order.push_back(l);
  } else {
    size_t bits = 0;
    while ((size_t{1} << bits) < n_layers) ++bits;
    for (size_t i = 0; i < (size_t{1} << bits); ++i) {
      size_t r = 0;
      for (size_t b = 0; b < bits; ++b) r |= ((i >> b) & 1) << (bits - 1 - b);
      if (r < n_layers) layer_order.push_back(r);
    }
  }
  auto order_of = [&](bool head_first) {
    std::vector<size_t> order;
    if (head_first) order.push_back(head);
    order.insert(order.end(), layer_order.begin(), layer_order.end());
    if (!head_first) order.push_back(head);
    return order;
  };
  const std::vector<size_t> order = order_of(policy.kind != PolicyKind::kGpuFirst);
  // Staging slots hold one layer; a head that does not fit in VRAM runs on the CPU instead of
  // needing slots of its own size (it is usually the largest unit by far).
  int64_t largest = 0;
  for (size_t l = 0; l < n_layers; ++l) largest = std::max(largest, unit_free_bytes(units[l]));

  // Sets one phase's placement of a unit (decode: true) without touching pinned tensors.
  auto place_phase = [&](const Unit& u, bool decode, Placement where) {
    for (size_t t : u.tensors) {
      if (!pinned[t]) (decode ? plan.tensors[t].decode : plan.tensors[t].prefill) = where;
    }
  };
  // Pass 3: residents while they fit, with or without the staging ring.
  auto fill = [&](bool with_ring, const std::vector<size_t>& order) {
    const TierBytes fixed = planner::fixed_vram(spec, policy, largest, with_ring);
    int64_t room = budget - fixed.vram_total() - pinned_vram;
    std::vector<bool> resident(units.size(), false);
    for (size_t u : order) {
      const int64_t b = unit_free_bytes(units[u]);
      if (b <= room) {
        resident[u] = true;
        room -= b;
      } else if (policy.kind == PolicyKind::kGpuFirst) {
        break;  // -ngl: a prefix of the layers
      }
    }
    return resident;
  };
  // Pass 4 for one phase: residents in VRAM, the rest streamed (`streamed` of the host layers;
  // the head never: staging slots hold one layer) or on the CPU. The streamed layers are spread
  // evenly among the CPU ones: the copy engine fills the ring while the CPU runs a layer, so
  // PCIe and the CPU are busy at the same time (a run of streamed layers followed by a run of CPU
  // layers would leave the link idle for most of the CPU's run).
  auto assign = [&](bool decode, const std::vector<bool>& resident, size_t streamed) {
    // In model order (the head is unit n_layers): the order the forward pass meets them.
    size_t host_layers = 0;
    for (size_t u = 0; u <= n_layers; ++u) host_layers += !resident[u] && u != head;
    const size_t k = std::min(streamed, host_layers);
    size_t h = 0;
    for (size_t u = 0; u <= n_layers; ++u) {
      if (resident[u]) {
        place_phase(units[u], decode, Placement::kVram);
      } else if (u == head) {
        place_phase(units[u], decode, Placement::kCpu);
      } else {
        // Host layer h streams when the k-th fraction passes a whole number at it (Bresenham).
        const bool stream = (h + 1) * k / host_layers > h * k / host_layers;
        ++h;
        place_phase(units[u], decode, stream ? Placement::kStream : Placement::kCpu);
      }
    }
  };
  auto decode_seconds = [&]() {
    std::vector<Placement> decode;
    for (const TensorPlacement& t : plan.tensors) decode.push_back(t.decode);
    return predict_decode(spec.hp, costs, decode, policy, caps).seconds;
  };
  const size_t all = units.size();

  if (policy.kind == PolicyKind::kCpu) {
    for (size_t u : order) place_unit(units[u], Placement::kCpu, Placement::kCpu);
  } else if (policy.kind == PolicyKind::kGpuFirst) {
    const std::vector<bool> resident = fill(false, order);
    assign(true, resident, 0);
    assign(false, resident, 0);
  } else {
    // Prefill: stream every non-resident layer (its FLOPs belong on the GPU); when everything
    // fits without the ring, nothing streams at all.
    const std::vector<bool> with_ring = fill(true, order), without_ring = fill(false, order);
    bool fits_without = !pinned_stream;
    for (size_t u : order) fits_without = fits_without && without_ring[u];
    if (fits_without || policy.kind == PolicyKind::kStream) {
      const std::vector<bool>& resident = fits_without ? without_ring : with_ring;
      assign(false, resident, all);
      assign(true, resident, all);
    } else {
      // auto, decode: stream k of the host layers (spread among the CPU ones) and run the rest
      // on the CPU, with the k the cost model predicts fastest (k up to the ring's slots: those
      // layers stay in the slots and cost no PCIe at all). Residency is the same in both phases
      // (the executor keeps one set), so the head-first and head-last fills are both tried.
      // Decode times within 0.1% are a tie, broken by the prefill time.
      // The head-last fill leaves the head on the CPU in every phase, where it also computes
      // every row of a batched step's logits (16 rows of a 789 MB head on the 14B: auto 81.9
      // against stream's 100.9 tok/s at 16 sequences, measured), which the batch-1 decode time
      // does not see; so it must win by kHeadLastMargin.
      constexpr double kHeadLastMargin = 0.05;
      double best_s = std::numeric_limits<double>::infinity(), best_prefill_s = best_s;
      size_t best_k = 0;
      std::vector<bool> best_resident = with_ring;
      const std::vector<bool> head_last = fill(true, order_of(false));
      for (const std::vector<bool>* candidate : {&with_ring, &head_last}) {
        const std::vector<bool>& resident = *candidate;
        const double handicap = candidate == &head_last ? 1.0 + kHeadLastMargin : 1.0;
        assign(false, resident, all);
        std::vector<Placement> prefill;
        for (const TensorPlacement& t : plan.tensors) prefill.push_back(t.prefill);
        const double prefill_s = predict_prefill(spec.hp, costs, prefill, policy, caps).seconds;
        for (size_t k = 0; k <= all; ++k) {
          assign(true, resident, k);
          const double seconds = decode_seconds() * handicap;
          const bool tie = std::abs(seconds - best_s) <= 1e-3 * best_s;
          if ((seconds < best_s && !tie) || (tie && prefill_s < best_prefill_s)) {
            best_s = seconds;  // with the handicap: later candidates compare against it
            best_prefill_s = prefill_s;
            best_k = k;
            best_resident = resident;
          }
        }
      }
      assign(false, best_resident, all);
      assign(true, best_resident, best_k);
    }
  }

  // Bytes per tier, per phase; the plan holds the larger of the two.
  auto phase_bytes = [&](bool decode) {
    bool streams = false;
    int64_t vram = 0;
    for (const TensorPlacement& t : plan.tensors) {
      const Placement where = decode ? t.decode : t.prefill;
      streams = streams || where == Placement::kStream;
      if (where == Placement::kVram) vram += t.bytes;
    }
    TierBytes b = planner::fixed_vram(spec, policy, largest, streams);
    b.vram_weights = vram;
    return b;
  };
  const TierBytes decode_bytes = phase_bytes(true), prefill_bytes = phase_bytes(false);
  plan.bytes =
      decode_bytes.vram_total() >= prefill_bytes.vram_total() ? decode_bytes : prefill_bytes;
  plan.bytes_decode = decode_bytes;
  plan.bytes_prefill = prefill_bytes;
  // Host copies hold every weight that is not resident in some phase.
  for (const TensorPlacement& t : plan.tensors) {
    if (t.decode != Placement::kVram || t.prefill != Placement::kVram) {
      plan.bytes.host_pinned_weights += t.bytes;
    }
  }
  // The smallest budget: everything but resident weights (pinned VRAM rules count).
  plan.min_vram_budget_bytes =
      std::max(decode_bytes.vram_kv + decode_bytes.vram_workspace + decode_bytes.vram_staging,
               prefill_bytes.vram_kv + prefill_bytes.vram_workspace + prefill_bytes.vram_staging) +
      pinned_vram;
  plan.fits = decode_bytes.vram_total() <= budget && prefill_bytes.vram_total() <= budget;

  // Pass 5: predictions.
  std::vector<Placement> decode, prefill;
  for (const TensorPlacement& t : plan.tensors) {
    decode.push_back(t.decode);
    prefill.push_back(t.prefill);
  }
  plan.decode = predict_decode(spec.hp, costs, decode, policy, caps);
  plan.prefill = predict_prefill(spec.hp, costs, prefill, policy, caps);
  return plan;
}

}  // namespace strata
