// GgufFile: a parsed GGUF v2/v3 file over a read-only mapping, read exactly as llama.cpp reads it.
//
// Never trusts the file: every count, length, type and offset is checked against the bytes that
// are really there before it is used, and the first problem is returned as one Status naming the
// file and what was wrong. Tensor data is not copied; `GgufTensorInfo::data` points into the
// mapping, which lives as long as any GgufFile (or copy) that refers to it.
//
// Example:
//   STRATA_ASSIGN_OR_RETURN(GgufFile f, GgufFile::open("model.gguf"));
//   std::optional<int64_t> layers = f.get_int("llama.block_count");
//   const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_type_name(GgufType type);

// One metadata value. Scalars are widened (integers to int64, uint64 kept apart, floats to
// double) but the stored GGUF type is kept, so a writer can copy a value with the same type.
// Arrays hold one element type; arrays of arrays are rejected (llama.cpp rejects them too).
class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue integer(GgufType type, int64_t v);  // kUint8..kInt32, kInt64
  static GgufValue uint64(uint64_t v);
  static GgufValue floating(GgufType type, double v);  // kFloat32 or kFloat64
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue int_array(GgufType elem_type, std::vector<int64_t> v);  // integer or bool elems
  static GgufValue uint64_array(std::vector<uint64_t> v);
  static GgufValue float_array(GgufType elem_type, std::vector<double> v);
  static GgufValue string_array(std::vector<std::string> v);

  GgufType type() const { return type_; }
  bool is_array() const { return type_ == GgufType::kArray; }
  GgufType array_type() const { return elem_type_; }  // REQUIRES: is_array()
  size_t array_size() const;

  std::optional<int64_t> to_int() const;   // any integer scalar that fits int64
  std::optional<double> to_float() const;  // a float or integer scalar
  std::optional<bool> to_bool() const;
  const std::string* to_string() const;  // nullptr unless a string scalar

  const std::vector<int64_t>* ints() const;         // integer (but uint64) or bool arrays
  const std::vector<uint64_t>* uints() const;       // uint64 arrays
  const std::vector<double>* floats() const;        // float arrays
  const std::vector<std::string>* strings() const;  // string arrays

 private:
  GgufType type_ = GgufType::kUint8;
  GgufType elem_type_ = GgufType::kUint8;
  std::variant<std::monostate, int64_t, uint64_t, double, bool, std::string, std::vector<int64_t>,
               std::vector<uint64_t>, std::vector<double>, std::vector<std::string>>
      data_;
};

struct GgufTensorInfo {
  std::string name;
  DType type = DType::kF32;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the row length (innermost); 1..4 dims
  uint64_t offset = 0;      // from the start of the data section; a multiple of the alignment
  uint64_t size_bytes = 0;
  std::span<const uint8_t> data;  // into the mapping

  int64_t num_elements() const;
  int64_t num_rows() const { return ne.empty() ? 0 : num_elements() / ne[0]; }
};

class GgufFile {
 public:
  static constexpr uint64_t kDefaultAlignment = 32;
  static constexpr int kMaxDims = 4;

  // Maps and parses `path`.
  static StatusOr<GgufFile> open(const std::string& path);
  // Parses bytes that stay valid as long as `keep_alive` does (nullptr: the caller keeps them).
  // `display_name` names the input in errors.
  static StatusOr<GgufFile> parse(std::span<const uint8_t> bytes, std::string display_name,
                                  std::shared_ptr<const void> keep_alive = nullptr);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  uint64_t file_size_bytes() const { return file_bytes_.size(); }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  // Keeps the mapping alive for views handed out elsewhere (e.g. a ModelSpec).
  const std::shared_ptr<const void>& storage() const { return keep_alive_; }

 private:
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::span<const uint8_t> file_bytes_;
  std::shared_ptr<const void> keep_alive_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;

  friend class GgufParser;
};

}  // namespace strata
