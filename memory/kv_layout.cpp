#include "memory/kv_layout.h"

#include <string>

#include "memory/kv_view.h"
#include "offload/model/model_spec.h"

namespace strata {

KvLayout KvLayout::for_model(const HyperParams& hp, int64_t block_tokens, DType dtype) {
  KvLayout layout;
  layout.n_layer = hp.n_layer;
  layout.kv_dim = hp.kv_dim();
  layout.block_tokens = block_tokens;
  layout.dtype = dtype;
  return layout;
}

Status KvLayout::validate() const {
  if (n_layer <= 0) {
    return Status::invalid_argument("KV layout: n_layer must be > 0, got " +
                                    std::to_string(n_layer));
  }
  if (kv_dim <= 0) {
    return Status::invalid_argument("KV layout: kv_dim must be > 0, got " + std::to_string(kv_dim));
  }
  if (block_tokens <= 0 || block_tokens > (1 << 20)) {
    return Status::invalid_argument("KV layout: --kv-block-tokens must be in [1, 1048576], got " +
                                    std::to_string(block_tokens));
  }
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kQ8_0) {
    return Status::invalid_argument(
        std::string("KV layout: --kv-type must be f32, f16 or q8_0, got ") + dtype_name(dtype));
  }
  if (dtype == DType::kQ8_0 && kv_dim % 32 != 0) {
    return Status::invalid_argument(
        "KV layout: --kv-type q8_0 needs kv_dim a multiple of 32, got " + std::to_string(kv_dim));
  }
  return Status::ok();
}

int64_t KvLayout::row_bytes() const { return kv_bytes(dtype, kv_dim); }

}  // namespace strata
