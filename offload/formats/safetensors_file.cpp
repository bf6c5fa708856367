#include "offload/formats/safetensors_file.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "offload/formats/json_text.h"
#include "offload/formats/mapped_file.h"

namespace strata {

int64_t SafetensorsTensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

using Json = nlohmann::ordered_json;  // keeps header order, so tensors() is in file order

// Every dtype the safetensors format names. Strata reads three of them; the others are known
// so that the error says "unsupported" rather than "unknown".
struct StDType {
  const char* name;
  std::optional<DType> strata_type;  // set for the types Strata reads
};
constexpr StDType kStDTypes[] = {
    {"F32", DType::kF32},      {"F16", DType::kF16},      {"BF16", DType::kBF16},
    {"F64", std::nullopt},     {"I64", std::nullopt},     {"U64", std::nullopt},
    {"I32", std::nullopt},     {"U32", std::nullopt},     {"I16", std::nullopt},
    {"U16", std::nullopt},     {"I8", std::nullopt},      {"U8", std::nullopt},
    {"BOOL", std::nullopt},    {"F8_E5M2", std::nullopt}, {"F8_E4M3", std::nullopt},
    {"F8_E8M0", std::nullopt}, {"F6_E2M3", std::nullopt}, {"F6_E3M2", std::nullopt},
    {"F4", std::nullopt},      {"C64", std::nullopt},
};

const StDType* find_st_dtype(const std::string& name) {
  for (const StDType& t : kStDTypes) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

// A safetensors header nests three levels; anything much deeper is refused before parsing.
constexpr int kMaxHeaderDepth = 8;

}  // namespace

// Turns the header JSON into tensor infos, checking each against the data area.
class SafetensorsParser {
 public:
  SafetensorsParser(std::span<const uint8_t> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {}

  StatusOr<SafetensorsFile> parse(std::shared_ptr<const void> keep_alive);

 private:
  Status fail(const std::string& what) const { return Status::invalid_data(name_ + ": " + what); }
  Status parse_metadata(const Json& value, SafetensorsFile* f) const;
  Status parse_tensor(const std::string& tensor_name, const Json& entry, uint64_t data_size,
                      SafetensorsTensorInfo* out) const;
  Status check_no_overlap(const std::vector<SafetensorsTensorInfo>& tensors) const;

  std::span<const uint8_t> bytes_;
  std::string name_;
};

StatusOr<SafetensorsFile> SafetensorsParser::parse(std::shared_ptr<const void> keep_alive) {
  SafetensorsFile f;
  f.path_ = name_;
  f.file_bytes_ = bytes_;
  f.keep_alive_ = std::move(keep_alive);

  const uint64_t file_size = bytes_.size();
  if (file_size < 8) {
    return fail("truncated file: " + std::to_string(file_size) +
                " bytes, too short for the 8-byte safetensors header length");
  }
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes_.data(), 8);  // little-endian, as the format requires
  if (header_bytes > file_size - 8) {
    return fail("header length " + std::to_string(header_bytes) + " runs past the end of the " +
                std::to_string(file_size) + "-byte file (truncated, or not a safetensors file)");
  }
  if (header_bytes > SafetensorsFile::kMaxHeaderBytes) {
    return fail("header length " + std::to_string(header_bytes) + " is larger than the " +
                std::to_string(SafetensorsFile::kMaxHeaderBytes) + "-byte limit");
  }
  f.data_offset_ = 8 + header_bytes;
  const uint64_t data_size = file_size - f.data_offset_;

  // Parse the JSON, noting the first key that repeats within one object: nlohmann keeps only
  // one of them, and a repeated tensor name would otherwise pass unnoticed.
  const char* header_begin = reinterpret_cast<const char*>(bytes_.data() + 8);
  if (json_nesting_depth({header_begin, header_bytes}) > kMaxHeaderDepth) {
    return fail("header nests JSON deeper than " + std::to_string(kMaxHeaderDepth) +
                " levels (a safetensors header needs 3)");
  }
  std::vector<std::set<std::string>> keys_per_object;
  std::optional<std::string> repeated_key;
  Json header;
  try {
    header = Json::parse(
        header_begin, header_begin + header_bytes,
        [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
          if (event == Json::parse_event_t::object_start) {
            keys_per_object.emplace_back();
          } else if (event == Json::parse_event_t::object_end) {
            if (!keys_per_object.empty()) keys_per_object.pop_back();
          } else if (event == Json::parse_event_t::key && !keys_per_object.empty()) {
            if (!keys_per_object.back().insert(parsed.get<std::string>()).second && !repeated_key) {
              repeated_key = parsed.get<std::string>();
            }
          }
          return true;
        });
  } catch (const Json::exception& e) {
    return fail(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) {
    return fail("header must be a JSON object, found " + std::string(header.type_name()));
  }
  if (repeated_key) return fail("header names '" + *repeated_key + "' twice");

  f.tensors_.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      STRATA_RETURN_IF_ERROR(parse_metadata(value, &f));
      continue;
    }
    SafetensorsTensorInfo t;
    STRATA_RETURN_IF_ERROR(parse_tensor(key, value, data_size, &t));
    t.data = bytes_.subspan(f.data_offset_ + t.offset, t.size_bytes);
    f.tensor_index_.emplace(t.name, f.tensors_.size());  // unique: repeated keys failed above
    f.tensors_.push_back(std::move(t));
  }
  STRATA_RETURN_IF_ERROR(check_no_overlap(f.tensors_));
  return f;
}

Status SafetensorsParser::parse_metadata(const Json& value, SafetensorsFile* f) const {
  if (value.is_null()) return Status::ok();
  if (!value.is_object()) return fail("__metadata__ must be an object of strings");
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      return fail("__metadata__ key '" + key + "' must be a string, found " + json_excerpt(v));
    }
    f->metadata_.emplace_back(key, v.get<std::string>());
  }
  return Status::ok();
}

Status SafetensorsParser::parse_tensor(const std::string& tensor_name, const Json& entry,
                                       uint64_t data_size, SafetensorsTensorInfo* out) const {
  const std::string where = "tensor '" + tensor_name + "'";
  if (!entry.is_object()) return fail(where + " must be an object, found " + json_excerpt(entry));
  const auto dtype_it = entry.find("dtype");
  const auto shape_it = entry.find("shape");
  const auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || shape_it == entry.end() || offsets_it == entry.end()) {
    return fail(where + " needs \"dtype\", \"shape\" and \"data_offsets\"");
  }

  if (!dtype_it->is_string()) return fail(where + ": dtype must be a string");
  const std::string dtype = dtype_it->get<std::string>();
  const StDType* st = find_st_dtype(dtype);
  if (st == nullptr) return fail(where + " has unknown dtype '" + dtype + "'");
  if (!st->strata_type) {
    return Status::unsupported(name_ + ": " + where + " has dtype " + dtype +
                               ", which Strata does not read (F32, F16, BF16)");
  }
  out->name = tensor_name;
  out->type = *st->strata_type;

  if (!shape_it->is_array()) return fail(where + ": shape must be an array of integers");
  int64_t n_elems = 1;
  for (const Json& dim : *shape_it) {
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail(where + ": shape entry " + json_excerpt(dim) + " is not a non-negative integer");
    }
    const int64_t d = static_cast<int64_t>(dim.get<uint64_t>());
    if (d != 0 && n_elems > std::numeric_limits<int64_t>::max() / d) {
      return fail(where + ": element count of shape " + json_excerpt(*shape_it) + " overflows");
    }
    n_elems *= d;
    out->shape.push_back(d);
  }
  const int64_t elem_bytes = traits(out->type).block_bytes;  // plain types: one element a block
  if (n_elems > std::numeric_limits<int64_t>::max() / elem_bytes) {
    return fail(where + ": byte size of shape " + json_excerpt(*shape_it) + " overflows");
  }
  const uint64_t expected_bytes = static_cast<uint64_t>(n_elems * elem_bytes);

  if (!offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return fail(where + ": data_offsets must be two non-negative integers [begin, end], found " +
                json_excerpt(*offsets_it));
  }
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end) {
    return fail(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                "] end before they begin");
  }
  if (end > data_size) {
    return fail(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                "] run past the end of the " + std::to_string(data_size) +
                "-byte data area (truncated file?)");
  }
  if (end - begin != expected_bytes) {
    return fail(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                "] hold " + std::to_string(end - begin) + " bytes, but " + dtype + " shape " +
                json_excerpt(*shape_it) + " needs " + std::to_string(expected_bytes));
  }
  out->offset = begin;
  out->size_bytes = end - begin;
  return Status::ok();
}

Status SafetensorsParser::check_no_overlap(
    const std::vector<SafetensorsTensorInfo>& tensors) const {
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const auto& t : tensors) {
    if (t.size_bytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensorInfo* prev = by_offset[i - 1];
    // Both ends are bounded by the data size, so the sum cannot overflow.
    if (prev->offset + prev->size_bytes > by_offset[i]->offset) {
      return fail("tensors '" + prev->name + "' and '" + by_offset[i]->name +
                  "' overlap in the data area");
    }
  }
  return Status::ok();
}

StatusOr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::open(path));
  std::span<const uint8_t> bytes = file->bytes();
  return parse(bytes, path, std::move(file));
}

StatusOr<SafetensorsFile> SafetensorsFile::parse(std::span<const uint8_t> bytes,
                                                 std::string display_name,
                                                 std::shared_ptr<const void> keep_alive) {
  SafetensorsParser parser(bytes, std::move(display_name));
  return parser.parse(std::move(keep_alive));
}

const SafetensorsTensorInfo* SafetensorsFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace strata
