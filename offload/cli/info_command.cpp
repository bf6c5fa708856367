// strata info MODEL: what a model is and what it will cost, before anything is loaded.
// Users of other runtimes are surprised that a long maximum context reserves tens of GiB of KV
// cache before the first token; this prints that cost per token and per context length.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "offload/cli/command.h"
#include "offload/cli/format_units.h"
#include "offload/model/model_loader.h"

namespace strata::cli {
namespace {

// Device bytes a full-GPU run needs beyond weights and KV: activations of one micro-batch of
// `ubatch_tokens` (residual, normed input, q/k/v, attention output, two FFN halves, kept in f32),
// the logits of the last token, and a cuBLAS workspace. An estimate, printed as such.
uint64_t compute_buffer_bytes(const HyperParams& hp, int64_t ubatch_tokens) {
  const int64_t per_token = 4 * (3 * hp.n_embd + hp.q_dim() + 2 * hp.kv_dim() + 2 * hp.n_ff);
  const uint64_t workspace = 32ull << 20;
  return static_cast<uint64_t>(per_token * ubatch_tokens + 4 * hp.n_vocab) + workspace;
}

int run_info(const std::string& path, bool as_json) {
  StatusOr<LoadedModel> loaded = load_model(path);
  if (!loaded.is_ok()) return report_error(loaded.status().message());
  const ModelSpec& spec = loaded->spec;
  const HyperParams& hp = spec.hp;

  struct TypeUse {
    int64_t count = 0;
    uint64_t bytes = 0;
  };
  std::map<std::string, TypeUse> by_type;
  int64_t n_params = 0;
  for (const TensorSpec& t : spec.tensors) {
    TypeUse& u = by_type[dtype_name(t.type)];
    ++u.count;
    u.bytes += t.size_bytes;
    n_params += t.num_elements();
  }
  const uint64_t weight_bytes = spec.total_weight_bytes();
  const uint64_t kv_per_token = static_cast<uint64_t>(hp.kv_bytes_per_token(2));
  const int64_t contexts[] = {1024, 32768, 131072};
  const int64_t ubatch = 512;
  const uint64_t compute_bytes = compute_buffer_bytes(hp, ubatch);
  const uint64_t full_ctx_kv = kv_per_token * static_cast<uint64_t>(hp.n_ctx_train);

  if (as_json) {
    nlohmann::json j;
    j["path"] = spec.path;
    j["format"] = spec.format == SourceFormat::kGguf ? "gguf" : "safetensors";
    j["architecture"] = arch_name(spec.arch);
    j["name"] = spec.name;
    j["hyper_parameters"] = {{"n_vocab", hp.n_vocab},     {"n_embd", hp.n_embd},
                             {"n_layer", hp.n_layer},     {"n_head", hp.n_head},
                             {"n_head_kv", hp.n_head_kv}, {"head_dim", hp.head_dim},
                             {"n_ff", hp.n_ff},           {"n_ctx_train", hp.n_ctx_train},
                             {"rope_dims", hp.rope_dims}, {"rope_theta", hp.rope_theta},
                             {"rms_eps", hp.rms_eps},     {"tied_embeddings", hp.tied_embeddings},
                             {"qkv_bias", hp.qkv_bias}};
    for (const auto& [name, u] : by_type)
      j["tensor_types"][name] = {{"count", u.count}, {"bytes", u.bytes}};
    j["n_params"] = n_params;
    j["weight_bytes"] = weight_bytes;
    j["kv_f16_bytes_per_token"] = kv_per_token;
    for (int64_t c : contexts) j["kv_f16_bytes"][std::to_string(c)] = kv_per_token * c;
    j["full_gpu_vram_bytes"] = {
        {"weights", weight_bytes},
        {"kv_at_train_context", full_ctx_kv},
        {"compute_estimate", compute_bytes},
        {"total_at_train_context", weight_bytes + full_ctx_kv + compute_bytes},
        {"total_at_4k_context", weight_bytes + kv_per_token * 4096 + compute_bytes}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  std::printf("model         %s\n", spec.path.c_str());
  std::printf("format        %s\n",
              spec.format == SourceFormat::kGguf ? "GGUF" : "safetensors (HF)");
  std::printf("architecture  %s%s%s\n", arch_name(spec.arch),
              spec.name.empty() ? "" : "  name: ", spec.name.c_str());
  std::printf("parameters    %s\n", format_count(n_params).c_str());
  std::printf("\nhyper-parameters\n");
  std::printf("  vocab %lld, embedding %lld, layers %lld, feed-forward %lld\n",
              (long long)hp.n_vocab, (long long)hp.n_embd, (long long)hp.n_layer,
              (long long)hp.n_ff);
  std::printf("  heads %lld (kv %lld, head dim %lld), rope %s dims %lld base %g, rms eps %g\n",
              (long long)hp.n_head, (long long)hp.n_head_kv, (long long)hp.head_dim,
              hp.rope_style == RopeStyle::kAdjacentPairs ? "adjacent-pairs" : "neox-halves",
              (long long)hp.rope_dims, hp.rope_theta, hp.rms_eps);
  std::printf("  trained context %lld, %s embeddings%s\n", (long long)hp.n_ctx_train,
              hp.tied_embeddings ? "tied" : "untied", hp.qkv_bias ? ", q/k/v biases" : "");
  std::printf("\ntensors       %zu\n", spec.tensors.size());
  for (const auto& [name, u] : by_type) {
    std::printf("  %-6s %5lld tensors  %s\n", name.c_str(), (long long)u.count,
                format_bytes(u.bytes).c_str());
  }
  std::printf("  weights total %s\n", format_bytes(weight_bytes).c_str());
  std::printf("\nKV cache (f16)  %s per token\n", format_bytes(kv_per_token).c_str());
  for (int64_t c : contexts) {
    std::printf("  %7lld tokens  %s\n", (long long)c, format_bytes(kv_per_token * c).c_str());
  }
  std::printf("\nfull-GPU run needs about\n");
  std::printf(
      "  %s at the trained context of %lld tokens if KV is reserved up front "
      "(weights %s + KV %s + compute %s)\n",
      format_bytes(weight_bytes + full_ctx_kv + compute_bytes).c_str(), (long long)hp.n_ctx_train,
      format_bytes(weight_bytes).c_str(), format_bytes(full_ctx_kv).c_str(),
      format_bytes(compute_bytes).c_str());
  std::printf("  %s for a 4k-token conversation (Strata allocates KV blocks as tokens arrive)\n",
              format_bytes(weight_bytes + kv_per_token * 4096 + compute_bytes).c_str());
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("info", "Print a model's architecture, sizes and memory needs");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("model", *path, "GGUF file or HF checkpoint folder")->required();
  cmd->add_flag("--json", *as_json, "Print one JSON object");
  cmd->callback([=] { *exit_code = run_info(*path, *as_json); });
}

}  // namespace strata::cli
