#include "offload/tokenizer/tokenizer_metadata.h"

#include <limits>
#include <string_view>

namespace strata {
namespace {

class MetadataReader {
 public:
  explicit MetadataReader(const GgufFile& file) : file_(file) {}

  Status error(std::string_view key, const std::string& what) const {
    return Status::invalid_data(file_.path() + ": " + std::string(key) + " " + what);
  }
  std::string type_of(const GgufValue& v) const {
    if (!v.is_array()) return gguf_type_name(v.type());
    return std::string("array of ") + gguf_type_name(v.array_type());
  }

  Status read_string(std::string_view key, std::optional<std::string>* out) const {
    const GgufValue* v = file_.find(key);
    if (v == nullptr) return Status::ok();
    if (v->to_string() == nullptr) return error(key, "must be a string, not " + type_of(*v));
    *out = *v->to_string();
    return Status::ok();
  }
  Status read_strings(std::string_view key, std::vector<std::string>* out) const {
    const GgufValue* v = file_.find(key);
    if (v == nullptr) return Status::ok();
    if (v->strings() == nullptr) {
      return error(key, "must be an array of strings, not " + type_of(*v));
    }
    *out = *v->strings();
    return Status::ok();
  }
  Status read_floats(std::string_view key, std::vector<float>* out) const {
    const GgufValue* v = file_.find(key);
    if (v == nullptr) return Status::ok();
    if (v->floats() == nullptr) return error(key, "must be an array of floats, not " + type_of(*v));
    out->assign(v->floats()->begin(), v->floats()->end());
    return Status::ok();
  }
  Status read_ints(std::string_view key, std::vector<int64_t>* out) const {
    const GgufValue* v = file_.find(key);
    if (v == nullptr) return Status::ok();
    if (v->ints() == nullptr || v->array_type() == GgufType::kBool) {
      return error(key, "must be an array of integers, not " + type_of(*v));
    }
    *out = *v->ints();
    return Status::ok();
  }
  Status read_int(std::string_view key, std::optional<int64_t>* out) const {
    const GgufValue* v = file_.find(key);
    if (v == nullptr) return Status::ok();
    if (v->is_array() || v->type() == GgufType::kBool || v->type() == GgufType::kString ||
        v->type() == GgufType::kFloat32 || v->type() == GgufType::kFloat64) {
      return error(key, "must be an integer, not " + type_of(*v));
    }
    std::optional<int64_t> value = v->to_int();
    // A uint64 too large for int64 is out of range anyway; keep it visibly out of range.
    *out = value.has_value() ? *value : std::numeric_limits<int64_t>::max();
    return Status::ok();
  }
  Status read_bool(std::string_view key, std::optional<bool>* out) const {
    const GgufValue* v = file_.find(key);
    if (v == nullptr) return Status::ok();
    if (v->is_array() || v->type() != GgufType::kBool) {
      return error(key, "must be a bool, not " + type_of(*v));
    }
    *out = v->to_bool();
    return Status::ok();
  }

 private:
  const GgufFile& file_;
};

}  // namespace

StatusOr<TokenizerMetadata> read_tokenizer_metadata(const GgufFile& file) {
  const MetadataReader r(file);
  TokenizerMetadata m;
  std::optional<std::string> model;
  STRATA_RETURN_IF_ERROR(r.read_string("tokenizer.ggml.model", &model));
  if (!model.has_value()) {
    return Status::not_found(file.path() +
                             ": no tokenizer in this file (tokenizer.ggml.model is missing)");
  }
  m.model = *model;
  STRATA_RETURN_IF_ERROR(r.read_string("tokenizer.ggml.pre", &m.pre));
  if (file.find("tokenizer.ggml.tokens") == nullptr) {
    return Status::not_found(file.path() + ": tokenizer.ggml.tokens is missing");
  }
  STRATA_RETURN_IF_ERROR(r.read_strings("tokenizer.ggml.tokens", &m.tokens));
  STRATA_RETURN_IF_ERROR(r.read_floats("tokenizer.ggml.scores", &m.scores));
  STRATA_RETURN_IF_ERROR(r.read_ints("tokenizer.ggml.token_type", &m.token_types));
  STRATA_RETURN_IF_ERROR(r.read_strings("tokenizer.ggml.merges", &m.merges));

  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.bos_token_id", &m.bos_id));
  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.eos_token_id", &m.eos_id));
  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.eot_token_id", &m.eot_id));
  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.eom_token_id", &m.eom_id));
  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.unknown_token_id", &m.unknown_id));
  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.seperator_token_id", &m.separator_id));
  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.padding_token_id", &m.padding_id));
  STRATA_RETURN_IF_ERROR(r.read_int("tokenizer.ggml.mask_token_id", &m.mask_id));

  STRATA_RETURN_IF_ERROR(r.read_bool("tokenizer.ggml.add_bos_token", &m.add_bos));
  STRATA_RETURN_IF_ERROR(r.read_bool("tokenizer.ggml.add_eos_token", &m.add_eos));
  STRATA_RETURN_IF_ERROR(r.read_bool("tokenizer.ggml.add_space_prefix", &m.add_space_prefix));
  return m;
}

}  // namespace strata
