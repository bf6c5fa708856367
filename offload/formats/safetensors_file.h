// SafetensorsFile: a parsed `.safetensors` file over a read-only mapping.
//
// Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
// N bytes of JSON `{"name": {"dtype": "BF16", "shape": [out, in], "data_offsets": [begin, end]},
// ..., "__metadata__": {"key": "value"}}`, then the data area; offsets are relative to the data
// area. Shapes are row-major as torch stores them (outermost first), so an HF Linear weight
// `[out, in]` has the same bytes as a ggml tensor with ne = [in, out].
//
// Never trusts the file: the header length is bounded by the file size, the JSON must be an
// object with unique keys, every tensor's dtype must be known, its byte range must lie inside
// the data area and equal numel * element size (computed without overflow), and no two tensors
// may share bytes. The first problem is returned as one Status naming the file and what was
// wrong. Strata reads F32, F16 and BF16 tensors; any other (valid) dtype is `unsupported`.
// Unlike the reference reader, gaps between tensors and trailing bytes are accepted: they are
// harmless, and rejecting them would buy nothing.
//
// Tensor data is not copied; `SafetensorsTensorInfo::data` points into the mapping, which lives
// as long as `storage()`. The data is not necessarily aligned to the element size (the format
// does not promise it): read it with memcpy or through a converting copy.
//
// Example:
//   STRATA_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open("model.safetensors"));
//   const SafetensorsTensorInfo* emb = f.find_tensor("model.embed_tokens.weight");
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "offload/core/dtype.h"
#include "offload/core/status.h"

namespace strata {

struct SafetensorsTensorInfo {
  std::string name;
  DType type = DType::kF32;       // F32, F16 or BF16
  std::vector<int64_t> shape;     // row-major, outermost first (torch order); may be empty (scalar)
  uint64_t offset = 0;            // data_offsets[0], from the start of the data area
  uint64_t size_bytes = 0;        // data_offsets[1] - data_offsets[0] == numel * element size
  std::span<const uint8_t> data;  // into the mapping

  int64_t num_elements() const;
  // The same shape in ggml order (innermost first): [out, in] -> [in, out].
  std::vector<int64_t> ggml_ne() const { return {shape.rbegin(), shape.rend()}; }
};

class SafetensorsFile {
 public:
  // Headers larger than this are refused before parsing (the reference reader uses 100 MB too).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  // Maps and parses `path`.
  static StatusOr<SafetensorsFile> open(const std::string& path);
  // Parses bytes that stay valid as long as `keep_alive` does (nullptr: the caller keeps them).
  // `display_name` names the input in errors.
  static StatusOr<SafetensorsFile> parse(std::span<const uint8_t> bytes, std::string display_name,
                                         std::shared_ptr<const void> keep_alive = nullptr);

  const std::string& path() const { return path_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data area: 8 + N
  uint64_t file_size_bytes() const { return file_bytes_.size(); }

  // `__metadata__` (string -> string), in file order; empty when absent.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }

  // Tensors in header order.
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const SafetensorsTensorInfo* find_tensor(std::string_view name) const;

  // Keeps the mapping alive for views handed out elsewhere (e.g. a ModelSpec).
  const std::shared_ptr<const void>& storage() const { return keep_alive_; }

 private:
  std::string path_;
  uint64_t data_offset_ = 0;
  std::span<const uint8_t> file_bytes_;
  std::shared_ptr<const void> keep_alive_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;

  friend class SafetensorsParser;
};

}  // namespace strata
