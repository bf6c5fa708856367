#include "policies/policy.h"

#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "offload/core/units.h"

namespace strata {
namespace {

std::string where(const std::string& origin, const toml::node& node) {
  return origin + ":" + std::to_string(node.source().begin.line);
}

Status bad(const std::string& origin, const toml::node& node, const std::string& key,
           const std::string& what) {
  return Status::invalid_argument(where(origin, node) + ": " + key + ": " + what);
}

// A parser's error (it names the key already) at the node's line.
Status at(const std::string& origin, const toml::node& node, const Status& error) {
  return Status::invalid_argument(where(origin, node) + ": " + error.message());
}

StatusOr<int64_t> integer(const std::string& origin, const toml::node& node,
                          const std::string& key) {
  if (!node.is_integer()) return bad(origin, node, key, "expected an integer");
  return node.as_integer()->get();
}

StatusOr<std::string> string(const std::string& origin, const toml::node& node,
                             const std::string& key) {
  if (!node.is_string()) return bad(origin, node, key, "expected a string");
  return node.as_string()->get();
}

}  // namespace

const char* policy_kind_name(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kAuto:
      return "auto";
    case PolicyKind::kGpuFirst:
      return "gpu-first";
    case PolicyKind::kStream:
      return "stream";
    case PolicyKind::kCpu:
      return "cpu";
  }
  return "?";
}

const char* placement_name(Placement placement) {
  switch (placement) {
    case Placement::kVram:
      return "vram";
    case Placement::kStream:
      return "stream";
    case Placement::kCpu:
      return "cpu";
  }
  return "?";
}

const char* cold_attention_name(ColdAttention mode) {
  switch (mode) {
    case ColdAttention::kAuto:
      return "auto";
    case ColdAttention::kPrefetch:
      return "prefetch";
    case ColdAttention::kCpu:
      return "cpu";
  }
  return "?";
}

StatusOr<ColdAttention> parse_cold_attention(std::string_view name) {
  for (ColdAttention m : {ColdAttention::kAuto, ColdAttention::kPrefetch, ColdAttention::kCpu}) {
    if (name == cold_attention_name(m)) return m;
  }
  return Status::invalid_argument("cold_attention: '" + std::string(name) +
                                  "' is not one of auto, prefetch, cpu");
}

const char* kv_type_name(DType kv_type) {
  switch (kv_type) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kQ8_0:
      return "q8_0";
    default:
      return "?";
  }
}

StatusOr<DType> parse_kv_type(std::string_view name) {
  for (DType t : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    if (name == kv_type_name(t)) return t;
  }
  return Status::invalid_argument("kv_type: '" + std::string(name) + "' is not f16, f32 or q8_0");
}

int64_t Policy::hot_kv_tokens() const {
  if (hot_window_tokens <= 0) return context_tokens;
  const int64_t bt = block_tokens;
  const int64_t window_blocks = (hot_window_tokens + bt - 1) / bt + 1;  // + the one being written
  return std::min(context_tokens, (sink_blocks + window_blocks) * bt);
}

int64_t Policy::hot_kv_reserved_tokens() const {
  if (hot_window_tokens <= 0) return context_tokens;
  const int64_t bt = block_tokens;
  const int64_t blocks = sink_blocks + (hot_window_tokens + prefill_tokens + bt - 1) / bt + 1;
  return std::min(context_tokens, blocks * bt);
}

StatusOr<PolicyKind> parse_policy_kind(std::string_view name) {
  for (PolicyKind k :
       {PolicyKind::kAuto, PolicyKind::kGpuFirst, PolicyKind::kStream, PolicyKind::kCpu}) {
    if (name == policy_kind_name(k)) return k;
  }
  return Status::invalid_argument("policy: '" + std::string(name) +
                                  "' is not one of auto, gpu-first, stream, cpu");
}

StatusOr<Placement> parse_placement(std::string_view name) {
  for (Placement p : {Placement::kVram, Placement::kStream, Placement::kCpu}) {
    if (name == placement_name(p)) return p;
  }
  return Status::invalid_argument("place: '" + std::string(name) +
                                  "' is not one of vram, stream, cpu");
}

Status Policy::validate() const {
  if (vram_budget_bytes < 0) return Status::invalid_argument("vram_budget: must not be negative");
  if (prefetch_depth < 1 || prefetch_depth > 8) {
    return Status::invalid_argument("prefetch_depth: " + std::to_string(prefetch_depth) +
                                    " is not in 1..8");
  }
  if (context_tokens < 1) return Status::invalid_argument("context: must be at least 1");
  if (batch < 1) return Status::invalid_argument("batch: must be at least 1");
  if (prefill_tokens < 1) return Status::invalid_argument("prefill_tokens: must be at least 1");
  if (kv_type != DType::kF16 && kv_type != DType::kF32 && kv_type != DType::kQ8_0) {
    return Status::invalid_argument("kv_type: must be f16, f32 or q8_0");
  }
  if (hot_window_tokens < 0) return Status::invalid_argument("hot_window: must not be negative");
  if (sink_blocks < 0) return Status::invalid_argument("sink_blocks: must not be negative");
  if (block_tokens < 1 || block_tokens > 1024) {
    return Status::invalid_argument("block_tokens: " + std::to_string(block_tokens) +
                                    " is not in 1..1024");
  }
  for (const PlacementRule& r : rules) {
    try {
      std::regex re(r.match);
    } catch (const std::regex_error& e) {
      return Status::invalid_argument("rule match '" + r.match + "': not a regular expression (" +
                                      e.what() + ")");
    }
  }
  return Status::ok();
}

Caps Policy::apply_caps(Caps caps) const {
  for (const auto& [key, value] : caps_overrides) {
    for (const CapsField& f : caps_fields()) {
      if (key == f.key) caps.*(f.rate) = value;
    }
  }
  if (!caps_overrides.empty()) caps.source += " + [caps] overrides";
  return caps;
}

StatusOr<Policy> parse_policy_toml(std::string_view text, const std::string& origin) {
  toml::table doc;
  try {
    doc = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return Status::invalid_argument(origin + ":" + std::to_string(e.source().begin.line) + ": " +
                                    std::string(e.description()));
  }
  Policy p;
  for (auto&& [key_node, node] : doc) {
    const std::string key(key_node.str());
    if (key == "policy") {
      STRATA_ASSIGN_OR_RETURN(const std::string s, string(origin, node, key));
      StatusOr<PolicyKind> kind = parse_policy_kind(s);
      if (!kind.is_ok()) return bad(origin, node, key, kind.status().message());
      p.kind = *kind;
    } else if (key == "vram_budget") {
      if (node.is_integer()) {
        p.vram_budget_bytes = node.as_integer()->get();
      } else {
        STRATA_ASSIGN_OR_RETURN(const std::string s, string(origin, node, key));
        if (!s.empty()) {
          StatusOr<int64_t> bytes = parse_byte_size(key, s);
          if (!bytes.is_ok()) return bad(origin, node, key, "'" + s + "' is not a size");
          p.vram_budget_bytes = *bytes;
        }
      }
    } else if (key == "prefetch_depth") {
      STRATA_ASSIGN_OR_RETURN(p.prefetch_depth, integer(origin, node, key));
    } else if (key == "context") {
      STRATA_ASSIGN_OR_RETURN(p.context_tokens, integer(origin, node, key));
    } else if (key == "batch") {
      STRATA_ASSIGN_OR_RETURN(p.batch, integer(origin, node, key));
    } else if (key == "prefill_tokens") {
      STRATA_ASSIGN_OR_RETURN(p.prefill_tokens, integer(origin, node, key));
    } else if (key == "kv_type") {
      STRATA_ASSIGN_OR_RETURN(const std::string s, string(origin, node, key));
      StatusOr<DType> type = parse_kv_type(s);
      if (!type.is_ok()) return at(origin, node, type.status());
      p.kv_type = *type;
    } else if (key == "hot_window") {
      STRATA_ASSIGN_OR_RETURN(p.hot_window_tokens, integer(origin, node, key));
    } else if (key == "sink_blocks") {
      STRATA_ASSIGN_OR_RETURN(p.sink_blocks, integer(origin, node, key));
    } else if (key == "block_tokens") {
      STRATA_ASSIGN_OR_RETURN(p.block_tokens, integer(origin, node, key));
    } else if (key == "cold_attention") {
      STRATA_ASSIGN_OR_RETURN(const std::string s, string(origin, node, key));
      StatusOr<ColdAttention> mode = parse_cold_attention(s);
      if (!mode.is_ok()) return at(origin, node, mode.status());
      p.cold_attention = *mode;
    } else if (key == "rule") {
      const toml::array* rules = node.as_array();
      if (rules == nullptr) return bad(origin, node, key, "expected [[rule]] tables");
      for (const toml::node& r : *rules) {
        const toml::table* t = r.as_table();
        if (t == nullptr) return bad(origin, r, key, "expected a table");
        PlacementRule rule;
        bool has_match = false, has_place = false;
        for (auto&& [rk, rv] : *t) {
          const std::string rkey = "rule." + std::string(rk.str());
          if (rk.str() == "match") {
            STRATA_ASSIGN_OR_RETURN(rule.match, string(origin, rv, rkey));
            has_match = true;
          } else if (rk.str() == "place") {
            STRATA_ASSIGN_OR_RETURN(const std::string s, string(origin, rv, rkey));
            StatusOr<Placement> place = parse_placement(s);
            if (!place.is_ok()) return bad(origin, rv, rkey, place.status().message());
            rule.place = *place;
            has_place = true;
          } else {
            return bad(origin, rv, rkey, "unknown key (rules take match and place)");
          }
        }
        if (!has_match || !has_place) return bad(origin, r, key, "needs both match and place");
        p.rules.push_back(std::move(rule));
      }
    } else if (key == "caps") {
      const toml::table* t = node.as_table();
      if (t == nullptr) return bad(origin, node, key, "expected a [caps] table");
      for (auto&& [ck, cv] : *t) {
        const std::string ckey = "caps." + std::string(ck.str());
        bool known = false;
        for (const CapsField& f : caps_fields()) known = known || ck.str() == f.key;
        if (!known) return bad(origin, cv, ckey, "unknown rate");
        if (!cv.is_number()) return bad(origin, cv, ckey, "expected a number");
        const double v = cv.is_integer() ? static_cast<double>(cv.as_integer()->get())
                                         : cv.as_floating_point()->get();
        if (!(v > 0)) return bad(origin, cv, ckey, "must be positive");
        p.caps_overrides.emplace_back(std::string(ck.str()), v);
      }
    } else {
      return bad(origin, node, key, "unknown key");
    }
  }
  const Status valid = p.validate();
  if (!valid.is_ok()) return Status::invalid_argument(origin + ": " + valid.message());
  return p;
}

StatusOr<Policy> load_policy_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::io_error(path + ": cannot open the policy file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_policy_toml(text.str(), path);
}

}  // namespace strata
