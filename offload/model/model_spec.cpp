#include "offload/model/model_spec.h"

#include <set>

#include "offload/formats/gguf_file.h"

namespace strata {

const char* arch_name(Arch arch) {
  switch (arch) {
    case Arch::kLlama:
      return "llama";
    case Arch::kQwen2:
      return "qwen2";
  }
  return "unknown";
}

int64_t TensorSpec::num_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

const TensorSpec* ModelSpec::find(const std::string& tensor_name) const {
  auto it = tensor_index.find(tensor_name);
  return it == tensor_index.end() ? nullptr : &tensors[it->second];
}

uint64_t ModelSpec::total_weight_bytes() const {
  uint64_t total = 0;
  for (const TensorSpec& t : tensors) total += t.size_bytes;
  return total;
}

namespace {

std::string blk(int64_t layer, const char* suffix) {
  return "blk." + std::to_string(layer) + "." + suffix;
}

std::string shape_string(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// Optional tensors that llama.cpp accepts for these architectures and that change nothing
// we compute (rope_freqs: llama-3.1 rope scaling factors, checked but handled by the forward
// pass when present).
bool is_optional_tensor(const std::string& name) { return name == "rope_freqs.weight"; }

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(Arch arch,
                                                                           const HyperParams& hp) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"token_embd.weight", {hp.n_embd, hp.n_vocab}});
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    out.push_back({blk(l, "attn_norm.weight"), {hp.n_embd}});
    out.push_back({blk(l, "attn_q.weight"), {hp.n_embd, hp.q_dim()}});
    out.push_back({blk(l, "attn_k.weight"), {hp.n_embd, hp.kv_dim()}});
    out.push_back({blk(l, "attn_v.weight"), {hp.n_embd, hp.kv_dim()}});
    if (hp.qkv_bias) {
      out.push_back({blk(l, "attn_q.bias"), {hp.q_dim()}});
      out.push_back({blk(l, "attn_k.bias"), {hp.kv_dim()}});
      out.push_back({blk(l, "attn_v.bias"), {hp.kv_dim()}});
    }
    out.push_back({blk(l, "attn_output.weight"), {hp.q_dim(), hp.n_embd}});
    out.push_back({blk(l, "ffn_norm.weight"), {hp.n_embd}});
    out.push_back({blk(l, "ffn_gate.weight"), {hp.n_embd, hp.n_ff}});
    out.push_back({blk(l, "ffn_up.weight"), {hp.n_embd, hp.n_ff}});
    out.push_back({blk(l, "ffn_down.weight"), {hp.n_ff, hp.n_embd}});
  }
  out.push_back({"output_norm.weight", {hp.n_embd}});
  if (!hp.tied_embeddings) out.push_back({"output.weight", {hp.n_embd, hp.n_vocab}});
  (void)arch;  // llama and qwen2 differ only through hp.qkv_bias and hp.tied_embeddings
  return out;
}

Status validate_model_spec(const ModelSpec& spec) {
  const HyperParams& hp = spec.hp;
  auto bad = [&](const std::string& what) { return Status::invalid_data(spec.path + ": " + what); };
  if (hp.n_vocab <= 0 || hp.n_embd <= 0 || hp.n_layer <= 0 || hp.n_head <= 0 || hp.n_head_kv <= 0 ||
      hp.head_dim <= 0 || hp.n_ff <= 0 || hp.n_ctx_train <= 0) {
    return bad("hyper-parameters must be positive (vocab " + std::to_string(hp.n_vocab) +
               ", embd " + std::to_string(hp.n_embd) + ", layers " + std::to_string(hp.n_layer) +
               ", heads " + std::to_string(hp.n_head) + "/" + std::to_string(hp.n_head_kv) +
               ", head dim " + std::to_string(hp.head_dim) + ", ff " + std::to_string(hp.n_ff) +
               ", context " + std::to_string(hp.n_ctx_train) + ")");
  }
  if (hp.n_layer > 4096 || hp.n_head > 4096 || hp.head_dim > 4096) {
    return bad("implausible hyper-parameters (layers " + std::to_string(hp.n_layer) + ", heads " +
               std::to_string(hp.n_head) + ", head dim " + std::to_string(hp.head_dim) + ")");
  }
  if (hp.n_head % hp.n_head_kv != 0) {
    return bad("head_count " + std::to_string(hp.n_head) + " is not a multiple of head_count_kv " +
               std::to_string(hp.n_head_kv));
  }
  if (hp.rope_dims <= 0 || hp.rope_dims > hp.head_dim || hp.rope_dims % 2 != 0) {
    return bad("rope dimension count " + std::to_string(hp.rope_dims) +
               " must be even and at most the head size " + std::to_string(hp.head_dim));
  }
  if (!(hp.rms_eps > 0) || !(hp.rope_theta > 0)) {
    return bad("rms epsilon and rope base must be positive");
  }
  std::set<std::string> expected_names;
  for (const auto& [name, ne] : expected_tensors(spec.arch, hp)) {
    expected_names.insert(name);
    const TensorSpec* t = spec.find(name);
    if (t == nullptr) return bad("missing tensor '" + name + "'");
    // ggml drops trailing 1-dims in some writers; compare with those padded away.
    std::vector<int64_t> got = t->ne;
    while (got.size() > ne.size() && got.back() == 1) got.pop_back();
    if (got != ne) {
      return bad("tensor '" + name + "' has shape " + shape_string(t->ne) + ", expected " +
                 shape_string(ne) + " from the hyper-parameters");
    }
    if (!dtype_supported(t->type)) {
      return Status::unsupported(spec.path + ": tensor '" + name + "' has type " +
                                 dtype_name(t->type) +
                                 ", which Strata does not support (F32, F16, BF16, Q8_0, Q4_0, "
                                 "Q4_K, Q6_K)");
    }
  }
  for (const TensorSpec& t : spec.tensors) {
    if (expected_names.count(t.name) == 0 && !is_optional_tensor(t.name)) {
      return bad("unexpected tensor '" + t.name + "' for architecture " + arch_name(spec.arch));
    }
  }
  return Status::ok();
}

StatusOr<ModelSpec> model_spec_from_gguf(const GgufFile& file) {
  ModelSpec spec;
  spec.path = file.path();
  spec.format = SourceFormat::kGguf;
  spec.storage.push_back(file.storage());
  auto bad = [&](const std::string& what) {
    return Status::invalid_data(file.path() + ": " + what);
  };

  std::optional<std::string> arch = file.get_string("general.architecture");
  if (!arch) return bad("missing general.architecture");
  if (*arch == "llama") {
    spec.arch = Arch::kLlama;
  } else if (*arch == "qwen2") {
    spec.arch = Arch::kQwen2;
  } else {
    return Status::unsupported(file.path() + ": architecture '" + *arch +
                               "' is not supported (llama, qwen2)");
  }
  spec.name = file.get_string("general.name").value_or("");
  const std::string& a = *arch;

  auto need_int = [&](const std::string& key, int64_t* out) -> Status {
    const GgufValue* v = file.find(key);
    if (v == nullptr) return bad("missing metadata key " + key);
    auto i = v->to_int();
    if (!i)
      return bad("metadata key " + key + " must be an integer scalar (it is " +
                 gguf_type_name(v->type()) + ")");
    *out = *i;
    return Status::ok();
  };
  auto opt_int = [&](const std::string& key, int64_t fallback, int64_t* out) -> Status {
    if (file.find(key) == nullptr) {
      *out = fallback;
      return Status::ok();
    }
    return need_int(key, out);
  };
  auto opt_float = [&](const std::string& key, double fallback, double* out) -> Status {
    const GgufValue* v = file.find(key);
    if (v == nullptr) {
      *out = fallback;
      return Status::ok();
    }
    auto f = v->to_float();
    if (!f) return bad("metadata key " + key + " must be a number");
    *out = *f;
    return Status::ok();
  };

  HyperParams& hp = spec.hp;
  STRATA_RETURN_IF_ERROR(need_int(a + ".block_count", &hp.n_layer));
  STRATA_RETURN_IF_ERROR(need_int(a + ".embedding_length", &hp.n_embd));
  STRATA_RETURN_IF_ERROR(need_int(a + ".feed_forward_length", &hp.n_ff));
  STRATA_RETURN_IF_ERROR(need_int(a + ".attention.head_count", &hp.n_head));
  STRATA_RETURN_IF_ERROR(opt_int(a + ".attention.head_count_kv", hp.n_head, &hp.n_head_kv));
  STRATA_RETURN_IF_ERROR(opt_int(a + ".context_length", 2048, &hp.n_ctx_train));
  if (hp.n_head <= 0) return bad(a + ".attention.head_count must be positive");
  STRATA_RETURN_IF_ERROR(opt_int(a + ".attention.key_length", hp.n_embd / hp.n_head, &hp.head_dim));
  int64_t value_length = 0;
  STRATA_RETURN_IF_ERROR(opt_int(a + ".attention.value_length", hp.head_dim, &value_length));
  if (value_length != hp.head_dim) {
    return Status::unsupported(file.path() + ": key_length " + std::to_string(hp.head_dim) +
                               " differs from value_length " + std::to_string(value_length));
  }
  STRATA_RETURN_IF_ERROR(opt_int(a + ".rope.dimension_count", hp.head_dim, &hp.rope_dims));
  STRATA_RETURN_IF_ERROR(opt_float(a + ".rope.freq_base", 10000.0, &hp.rope_theta));
  STRATA_RETURN_IF_ERROR(opt_float(a + ".attention.layer_norm_rms_epsilon", 1e-5, &hp.rms_eps));
  // Rope scaling changes every rotation angle, and HyperParams has no field for it: accept only
  // files whose scaling is a no-op (none, or linear with factor 1), as llama.cpp reads them.
  if (const GgufValue* type = file.find(a + ".rope.scaling.type")) {
    if (type->to_string() == nullptr) return bad(a + ".rope.scaling.type must be a string");
    const std::string& s = *type->to_string();
    if (s != "none" && s != "linear") {
      return Status::unsupported(file.path() + ": rope scaling '" + s + "' is not supported");
    }
    double factor = 1.0;
    STRATA_RETURN_IF_ERROR(opt_float(a + ".rope.scaling.factor", 1.0, &factor));
    if (s == "linear" && factor != 0.0 && factor != 1.0) {
      return Status::unsupported(file.path() + ": linear rope scaling with factor " +
                                 std::to_string(factor) + " is not supported");
    }
  }
  double scale_linear = 1.0;  // the older key for the same factor
  STRATA_RETURN_IF_ERROR(opt_float(a + ".rope.scale_linear", 1.0, &scale_linear));
  if (scale_linear != 1.0) {
    return Status::unsupported(file.path() + ": linear rope scaling with factor " +
                               std::to_string(scale_linear) + " is not supported");
  }

  // n_vocab: the explicit key, else the tokenizer's token count, else token_embd's rows (the
  // converter writes no qwen2.vocab_size).
  const GgufTensorInfo* embd = file.find_tensor("token_embd.weight");
  if (file.find(a + ".vocab_size") != nullptr) {
    STRATA_RETURN_IF_ERROR(need_int(a + ".vocab_size", &hp.n_vocab));
  } else if (const GgufValue* toks = file.find("tokenizer.ggml.tokens");
             toks != nullptr && toks->strings() != nullptr) {
    hp.n_vocab = static_cast<int64_t>(toks->array_size());
  } else if (embd != nullptr && embd->ne.size() >= 2) {
    hp.n_vocab = embd->ne[1];
  }
  hp.rope_style = spec.arch == Arch::kLlama ? RopeStyle::kAdjacentPairs : RopeStyle::kNeoxHalves;
  hp.tied_embeddings = file.find_tensor("output.weight") == nullptr;
  hp.qkv_bias = file.find_tensor("blk.0.attn_q.bias") != nullptr;
  if (spec.arch == Arch::kQwen2 && !hp.qkv_bias) return bad("qwen2 model without attn_q.bias");

  spec.tensors.reserve(file.tensors().size());
  for (const GgufTensorInfo& t : file.tensors()) {
    TensorSpec ts;
    ts.name = t.name;
    ts.type = t.type;
    ts.ne = t.ne;
    ts.size_bytes = t.size_bytes;
    ts.data = t.data;
    spec.tensor_index.emplace(ts.name, spec.tensors.size());
    spec.tensors.push_back(std::move(ts));
  }
  STRATA_RETURN_IF_ERROR(validate_model_spec(spec));
  return spec;
}

}  // namespace strata
