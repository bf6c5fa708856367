// ModelSpec: what a model file says, independent of the file format. Both the GGUF and the
// safetensors readers produce one; everything downstream (planner, tiers, backends) reads only
// this. Tensor names are llama.cpp's (`token_embd.weight`, `blk.N.attn_q.weight`, ...), dims are
// in ggml order (ne[0] = row length), and `data` points into the file's mapping (never copied).
//
// RoPE layout: GGUF `llama` files store Q/K rows permuted so that rope rotates adjacent pairs;
// HF checkpoints store them unpermuted, which is the same model with rope rotating the two
// halves of each head (NEOX style). The spec records which one applies instead of copying and
// permuting the weights at load.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata {

class GgufFile;

enum class Arch { kLlama, kQwen2 };
const char* arch_name(Arch arch);

enum class RopeStyle {
  kAdjacentPairs,  // ggml "NORM": rotates (x[2i], x[2i+1])
  kNeoxHalves,     // ggml "NEOX" / HF rotate_half: rotates (x[i], x[i + rope_dims/2])
};

enum class SourceFormat { kGguf, kSafetensors };

struct HyperParams {
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;  // per head, for Q and K (and V)
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;  // the context the model was trained for (max usable --ctx)
  int64_t rope_dims = 0;    // leading dims of each head that rope rotates (= head_dim usually)
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
  RopeStyle rope_style = RopeStyle::kAdjacentPairs;
  bool tied_embeddings = false;  // no output.weight: the head reuses token_embd
  bool qkv_bias = false;         // attn_{q,k,v}.bias present (qwen2)

  int64_t q_dim() const { return n_head * head_dim; }
  int64_t kv_dim() const { return n_head_kv * head_dim; }
  // Bytes of K and V for one token over all layers with `bytes_per_elem` (2 for f16).
  int64_t kv_bytes_per_token(int64_t bytes_per_elem) const {
    return 2 * n_layer * kv_dim() * bytes_per_elem;
  }
  // The same for a KV cache of `kv_type`: f32, f16, or q8_0 (34 bytes per 32 elements).
  int64_t kv_bytes_per_token(DType kv_type) const {
    if (kv_type == DType::kQ8_0) return 2 * n_layer * (kv_dim() / 32 * 34);
    return kv_bytes_per_token(int64_t{kv_type == DType::kF16 ? 2 : 4});
  }
};

struct TensorSpec {
  std::string name;
  DType type = DType::kF32;
  std::vector<int64_t> ne;  // ggml order
  uint64_t size_bytes = 0;
  std::span<const uint8_t> data;  // into a file mapping held by ModelSpec::storage

  int64_t num_elements() const;
  int64_t row_length() const { return ne.empty() ? 0 : ne[0]; }
  int64_t num_rows() const { return ne.empty() ? 0 : num_elements() / ne[0]; }
};

struct ModelSpec {
  std::string path;  // the file or folder it came from
  SourceFormat format = SourceFormat::kGguf;
  Arch arch = Arch::kLlama;
  std::string name;  // general.name when present
  HyperParams hp;
  std::vector<TensorSpec> tensors;  // file order
  std::unordered_map<std::string, size_t> tensor_index;
  std::vector<std::shared_ptr<const void>> storage;  // keeps mappings alive

  const TensorSpec* find(const std::string& name) const;
  uint64_t total_weight_bytes() const;
};

// Builds a spec from a parsed GGUF file: architecture, hyper-parameters (keys as llama.cpp reads
// them) and the tensor table, then validates it (validate_model_spec).
StatusOr<ModelSpec> model_spec_from_gguf(const GgufFile& file);

// Checks that every tensor the architecture needs is present with the shape the
// hyper-parameters imply and a supported type, and that no unexpected tensor is there.
Status validate_model_spec(const ModelSpec& spec);

// The tensors an architecture expects: name -> ggml ne.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(Arch arch,
                                                                           const HyperParams& hp);

}  // namespace strata
