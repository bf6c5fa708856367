#include "offload/formats/gguf_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "offload/formats/mapped_file.h"

namespace strata {

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "unknown";
}

// ---- GgufValue ---------------------------------------------------------------------------------

GgufValue GgufValue::integer(GgufType type, int64_t v) {
  GgufValue out;
  out.type_ = type;
  out.data_ = v;
  return out;
}
GgufValue GgufValue::uint64(uint64_t v) {
  GgufValue out;
  out.type_ = GgufType::kUint64;
  out.data_ = v;
  return out;
}
GgufValue GgufValue::floating(GgufType type, double v) {
  GgufValue out;
  out.type_ = type;
  out.data_ = v;
  return out;
}
GgufValue GgufValue::boolean(bool v) {
  GgufValue out;
  out.type_ = GgufType::kBool;
  out.data_ = v;
  return out;
}
GgufValue GgufValue::string(std::string v) {
  GgufValue out;
  out.type_ = GgufType::kString;
  out.data_ = std::move(v);
  return out;
}
GgufValue GgufValue::int_array(GgufType elem_type, std::vector<int64_t> v) {
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = elem_type;
  out.data_ = std::move(v);
  return out;
}
GgufValue GgufValue::uint64_array(std::vector<uint64_t> v) {
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = GgufType::kUint64;
  out.data_ = std::move(v);
  return out;
}
GgufValue GgufValue::float_array(GgufType elem_type, std::vector<double> v) {
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = elem_type;
  out.data_ = std::move(v);
  return out;
}
GgufValue GgufValue::string_array(std::vector<std::string> v) {
  GgufValue out;
  out.type_ = GgufType::kArray;
  out.elem_type_ = GgufType::kString;
  out.data_ = std::move(v);
  return out;
}

size_t GgufValue::array_size() const {
  if (auto* v = ints()) return v->size();
  if (auto* v = uints()) return v->size();
  if (auto* v = floats()) return v->size();
  if (auto* v = strings()) return v->size();
  return 0;
}

std::optional<int64_t> GgufValue::to_int() const {
  if (type_ == GgufType::kBool || is_array()) return std::nullopt;
  if (auto* v = std::get_if<int64_t>(&data_)) return *v;
  if (auto* v = std::get_if<uint64_t>(&data_)) {
    if (*v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(*v);
    }
  }
  return std::nullopt;
}
std::optional<double> GgufValue::to_float() const {
  if (auto* v = std::get_if<double>(&data_)) return *v;
  if (auto i = to_int()) return static_cast<double>(*i);
  return std::nullopt;
}
std::optional<bool> GgufValue::to_bool() const {
  if (auto* v = std::get_if<bool>(&data_)) return *v;
  return std::nullopt;
}
const std::string* GgufValue::to_string() const { return std::get_if<std::string>(&data_); }
const std::vector<int64_t>* GgufValue::ints() const {
  return std::get_if<std::vector<int64_t>>(&data_);
}
const std::vector<uint64_t>* GgufValue::uints() const {
  return std::get_if<std::vector<uint64_t>>(&data_);
}
const std::vector<double>* GgufValue::floats() const {
  return std::get_if<std::vector<double>>(&data_);
}
const std::vector<std::string>* GgufValue::strings() const {
  return std::get_if<std::vector<std::string>>(&data_);
}

int64_t GgufTensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// ---- parser ------------------------------------------------------------------------------------

// Reads little-endian values from a byte span, checking every read against the end.
class GgufParser {
 public:
  GgufParser(std::span<const uint8_t> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {}

  StatusOr<GgufFile> parse(std::shared_ptr<const void> keep_alive);

 private:
  Status fail(const std::string& what) const { return Status::invalid_data(name_ + ": " + what); }
  size_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  Status read(T* out, const char* what) {
    if (remaining() < sizeof(T)) {
      return fail(std::string("truncated file: ends inside ") + what + " at byte " +
                  std::to_string(pos_));
    }
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }

  Status read_string(std::string* out, const char* what) {
    uint64_t len = 0;
    STRATA_RETURN_IF_ERROR(read(&len, what));
    if (len > remaining()) {
      return fail(std::string("length of ") + what + " (" + std::to_string(len) +
                  " bytes) runs past the end of the file");
    }
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return Status::ok();
  }

  static size_t scalar_size(GgufType t) {
    switch (t) {
      case GgufType::kUint8:
      case GgufType::kInt8:
      case GgufType::kBool:
        return 1;
      case GgufType::kUint16:
      case GgufType::kInt16:
        return 2;
      case GgufType::kUint32:
      case GgufType::kInt32:
      case GgufType::kFloat32:
        return 4;
      case GgufType::kUint64:
      case GgufType::kInt64:
      case GgufType::kFloat64:
        return 8;
      default:
        return 0;
    }
  }

  static bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

  // Reads one scalar of type t, widened.
  Status read_scalar(GgufType t, const std::string& key, GgufValue* out);
  Status read_value(GgufType t, const std::string& key, GgufValue* out);

  std::span<const uint8_t> bytes_;
  std::string name_;
  size_t pos_ = 0;
};

Status GgufParser::read_scalar(GgufType t, const std::string& key, GgufValue* out) {
  const char* what = "a metadata value";
  switch (t) {
    case GgufType::kUint8: {
      uint8_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::integer(t, v);
      break;
    }
    case GgufType::kInt8: {
      int8_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::integer(t, v);
      break;
    }
    case GgufType::kUint16: {
      uint16_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::integer(t, v);
      break;
    }
    case GgufType::kInt16: {
      int16_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::integer(t, v);
      break;
    }
    case GgufType::kUint32: {
      uint32_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::integer(t, v);
      break;
    }
    case GgufType::kInt32: {
      int32_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::integer(t, v);
      break;
    }
    case GgufType::kInt64: {
      int64_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::integer(t, v);
      break;
    }
    case GgufType::kUint64: {
      uint64_t v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::uint64(v);
      break;
    }
    case GgufType::kFloat32: {
      float v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::floating(t, v);
      break;
    }
    case GgufType::kFloat64: {
      double v = 0;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      *out = GgufValue::floating(t, v);
      break;
    }
    case GgufType::kBool: {
      uint8_t v;
      STRATA_RETURN_IF_ERROR(read(&v, what));
      if (v > 1)
        return fail("metadata key '" + key + "': bool value " + std::to_string(v) +
                    " is not 0 or 1");
      *out = GgufValue::boolean(v != 0);
      break;
    }
    case GgufType::kString: {
      std::string s;
      STRATA_RETURN_IF_ERROR(read_string(&s, "a metadata string"));
      *out = GgufValue::string(std::move(s));
      break;
    }
    default:
      return fail("metadata key '" + key + "': unexpected value type " +
                  std::to_string(static_cast<uint32_t>(t)));
  }
  return Status::ok();
}

Status GgufParser::read_value(GgufType t, const std::string& key, GgufValue* out) {
  if (t != GgufType::kArray) return read_scalar(t, key, out);
  uint32_t elem_raw = 0;
  uint64_t n = 0;
  STRATA_RETURN_IF_ERROR(read(&elem_raw, "an array element type"));
  STRATA_RETURN_IF_ERROR(read(&n, "an array length"));
  if (!valid_type(elem_raw)) {
    return fail("metadata key '" + key + "': unknown array element type " +
                std::to_string(elem_raw));
  }
  const GgufType elem = static_cast<GgufType>(elem_raw);
  if (elem == GgufType::kArray)
    return fail("metadata key '" + key + "': arrays of arrays are not supported");
  // Every element takes at least its scalar size (8 for a string's length): bound n before
  // reserving so that an absurd count cannot allocate.
  const size_t min_elem = elem == GgufType::kString ? 8 : scalar_size(elem);
  if (n > remaining() / min_elem) {
    return fail("metadata key '" + key + "': array of " + std::to_string(n) + " " +
                gguf_type_name(elem) + " values runs past the end of the file");
  }
  if (elem == GgufType::kString) {
    std::vector<std::string> v(n);
    for (auto& s : v) STRATA_RETURN_IF_ERROR(read_string(&s, "an array string"));
    *out = GgufValue::string_array(std::move(v));
  } else if (elem == GgufType::kFloat32 || elem == GgufType::kFloat64) {
    std::vector<double> v(n);
    for (uint64_t i = 0; i < n; ++i) {
      if (elem == GgufType::kFloat32) {
        float f;
        STRATA_RETURN_IF_ERROR(read(&f, "an array value"));
        v[i] = f;
      } else {
        STRATA_RETURN_IF_ERROR(read(&v[i], "an array value"));
      }
    }
    *out = GgufValue::float_array(elem, std::move(v));
  } else if (elem == GgufType::kUint64) {
    std::vector<uint64_t> v(n);
    for (auto& x : v) STRATA_RETURN_IF_ERROR(read(&x, "an array value"));
    *out = GgufValue::uint64_array(std::move(v));
  } else {
    std::vector<int64_t> v(n);
    GgufValue scalar;
    for (uint64_t i = 0; i < n; ++i) {
      STRATA_RETURN_IF_ERROR(read_scalar(elem, key, &scalar));
      v[i] = elem == GgufType::kBool ? (*scalar.to_bool() ? 1 : 0) : *scalar.to_int();
    }
    *out = GgufValue::int_array(elem, std::move(v));
  }
  return Status::ok();
}

StatusOr<GgufFile> GgufParser::parse(std::shared_ptr<const void> keep_alive) {
  GgufFile f;
  f.path_ = name_;
  f.file_bytes_ = bytes_;
  f.keep_alive_ = std::move(keep_alive);

  char magic[4];
  if (bytes_.size() < 4)
    return fail("truncated file: " + std::to_string(bytes_.size()) + " bytes, no GGUF header");
  std::memcpy(magic, bytes_.data(), 4);
  pos_ = 4;
  if (std::memcmp(magic, "GGUF", 4) != 0)
    return fail("not a GGUF file (wrong magic; expected \"GGUF\")");
  STRATA_RETURN_IF_ERROR(read(&f.version_, "the header"));
  if (f.version_ == 1)
    return Status::unsupported(name_ + ": GGUF version 1 is not supported (only 2 and 3)");
  if (f.version_ != 2 && f.version_ != 3) {
    return Status::unsupported(name_ + ": unknown GGUF version " + std::to_string(f.version_) +
                               " (expected 2 or 3; a big-endian file also reads this way)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  STRATA_RETURN_IF_ERROR(read(&n_tensors, "the header"));
  STRATA_RETURN_IF_ERROR(read(&n_kv, "the header"));
  // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least
  // 8 + 4 + 8 + 4 + 8. Bound the counts by what the file can hold before allocating.
  if (n_kv > remaining() / 13)
    return fail("metadata count " + std::to_string(n_kv) + " is larger than the file can hold");
  if (n_tensors > remaining() / 32)
    return fail("tensor count " + std::to_string(n_tensors) + " is larger than the file can hold");

  f.metadata_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    STRATA_RETURN_IF_ERROR(read_string(&key, "a metadata key"));
    uint32_t type_raw = 0;
    STRATA_RETURN_IF_ERROR(read(&type_raw, "a metadata type"));
    if (!valid_type(type_raw)) {
      return fail("metadata key '" + key + "': unknown value type " + std::to_string(type_raw));
    }
    GgufValue value;
    STRATA_RETURN_IF_ERROR(read_value(static_cast<GgufType>(type_raw), key, &value));
    if (!f.metadata_index_.emplace(key, f.metadata_.size()).second) {
      return fail("metadata key '" + key + "' appears twice");
    }
    f.metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* a = f.find("general.alignment")) {
    auto v = a->to_int();
    if (a->type() != GgufType::kUint32 || !v || *v == 0 || (*v & (*v - 1)) != 0) {
      return fail("general.alignment must be a uint32 power of two");
    }
    f.alignment_ = static_cast<uint64_t>(*v);
  }

  f.tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    STRATA_RETURN_IF_ERROR(read_string(&t.name, "a tensor name"));
    uint32_t n_dims = 0;
    STRATA_RETURN_IF_ERROR(read(&n_dims, "a tensor's dimension count"));
    if (n_dims == 0 || n_dims > GgufFile::kMaxDims) {
      return fail("tensor '" + t.name + "': " + std::to_string(n_dims) +
                  " dimensions (expected 1 to 4)");
    }
    t.ne.resize(n_dims);
    int64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      STRATA_RETURN_IF_ERROR(read(&t.ne[d], "a tensor's dimensions"));
      if (t.ne[d] < 0)
        return fail("tensor '" + t.name + "': negative dimension " + std::to_string(t.ne[d]));
      if (t.ne[d] != 0 && n_elems > std::numeric_limits<int64_t>::max() / t.ne[d]) {
        return fail("tensor '" + t.name + "': element count overflows");
      }
      n_elems *= t.ne[d];
    }
    uint32_t type_raw = 0;
    STRATA_RETURN_IF_ERROR(read(&type_raw, "a tensor's type"));
    auto tr = dtype_traits(type_raw);
    if (!tr) {
      return Status::unsupported(name_ + ": tensor '" + t.name + "' has unknown type id " +
                                 std::to_string(type_raw));
    }
    t.type = tr->type;
    if (t.ne[0] % tr->block_elems != 0) {
      return fail("tensor '" + t.name + "': row length " + std::to_string(t.ne[0]) +
                  " is not a multiple of the " + tr->name + " block size " +
                  std::to_string(tr->block_elems));
    }
    const int64_t n_blocks = n_elems / tr->block_elems;
    if (n_blocks > std::numeric_limits<int64_t>::max() / tr->block_bytes) {
      return fail("tensor '" + t.name + "': byte size overflows");
    }
    t.size_bytes = static_cast<uint64_t>(n_blocks * tr->block_bytes);
    STRATA_RETURN_IF_ERROR(read(&t.offset, "a tensor's offset"));
    if (t.offset % f.alignment_ != 0) {
      return fail("tensor '" + t.name + "': offset " + std::to_string(t.offset) +
                  " is not a multiple of the alignment " + std::to_string(f.alignment_));
    }
    if (!f.tensor_index_.emplace(t.name, f.tensors_.size()).second) {
      return fail("tensor '" + t.name + "' appears twice");
    }
    f.tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  const uint64_t header_end = pos_;
  f.data_offset_ = (header_end + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  const uint64_t file_size = bytes_.size();
  if (!f.tensors_.empty() && f.data_offset_ > file_size) {
    return fail("truncated file: the data section would start at byte " +
                std::to_string(f.data_offset_) + " but the file has " + std::to_string(file_size));
  }
  const uint64_t data_size = f.data_offset_ <= file_size ? file_size - f.data_offset_ : 0;
  for (GgufTensorInfo& t : f.tensors_) {
    if (t.offset > data_size || t.size_bytes > data_size - t.offset) {
      return fail("tensor '" + t.name + "' (" + std::to_string(t.size_bytes) +
                  " bytes at data offset " + std::to_string(t.offset) +
                  ") ends past the end of the file (truncated?)");
    }
    t.data = bytes_.subspan(f.data_offset_ + t.offset, t.size_bytes);
  }
  // Tensors must not share bytes.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : f.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo* prev = by_offset[i - 1];
    if (prev->size_bytes > 0 && by_offset[i]->size_bytes > 0 &&
        prev->offset + prev->size_bytes > by_offset[i]->offset) {
      return fail("tensors '" + prev->name + "' and '" + by_offset[i]->name + "' overlap");
    }
  }
  return f;
}

// ---- GgufFile ----------------------------------------------------------------------------------

StatusOr<GgufFile> GgufFile::open(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::open(path));
  std::span<const uint8_t> bytes = file->bytes();
  return parse(bytes, path, std::move(file));
}

StatusOr<GgufFile> GgufFile::parse(std::span<const uint8_t> bytes, std::string display_name,
                                   std::shared_ptr<const void> keep_alive) {
  GgufParser parser(bytes, std::move(display_name));
  return parser.parse(std::move(keep_alive));
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  return v ? v->to_int() : std::nullopt;
}
std::optional<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  return v ? v->to_float() : std::nullopt;
}
std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  return v ? v->to_bool() : std::nullopt;
}
std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr || v->to_string() == nullptr) return std::nullopt;
  return *v->to_string();
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace strata
