#include "offload/formats/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

namespace strata {

static_assert(std::endian::native == std::endian::little, "the GGUF writer assumes little-endian");

int64_t GgufTensorDecl::num_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

uint64_t GgufTensorDecl::size_bytes() const {
  const DTypeTraits& t = traits(type);
  return static_cast<uint64_t>(num_elements() / t.block_elems * t.block_bytes);
}

namespace {

// llama.cpp refuses tensor names of GGML_MAX_NAME (64) bytes or more.
constexpr size_t kMaxTensorNameBytes = 63;
constexpr uint32_t kGgufVersion = 3;

uint64_t align_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

// Serializes the header into memory (it is small next to the data: at most a few MiB of
// tokenizer strings) while checking every value against its declared type.
class HeaderBuilder {
 public:
  template <typename T>
  void put(T v) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }

  Status put_value(const std::string& key, const GgufValue& value);
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  static Status bad(const std::string& key, const std::string& what) {
    return Status::invalid_argument("metadata key '" + key + "': " + what);
  }
  Status put_integer(const std::string& key, GgufType type, int64_t v);
  Status put_scalar(const std::string& key, const GgufValue& value);

  std::vector<uint8_t> bytes_;
};

bool is_integer_type(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

Status HeaderBuilder::put_integer(const std::string& key, GgufType type, int64_t v) {
  auto in_range = [&](int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
  auto out_of_range = [&] {
    return bad(key, "value " + std::to_string(v) + " does not fit " + gguf_type_name(type));
  };
  switch (type) {
    case GgufType::kUint8:
      if (!in_range(0, 0xff)) return out_of_range();
      put<uint8_t>(static_cast<uint8_t>(v));
      break;
    case GgufType::kInt8:
      if (!in_range(-128, 127)) return out_of_range();
      put<int8_t>(static_cast<int8_t>(v));
      break;
    case GgufType::kUint16:
      if (!in_range(0, 0xffff)) return out_of_range();
      put<uint16_t>(static_cast<uint16_t>(v));
      break;
    case GgufType::kInt16:
      if (!in_range(-32768, 32767)) return out_of_range();
      put<int16_t>(static_cast<int16_t>(v));
      break;
    case GgufType::kUint32:
      if (!in_range(0, 0xffffffffll)) return out_of_range();
      put<uint32_t>(static_cast<uint32_t>(v));
      break;
    case GgufType::kInt32:
      if (!in_range(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max())) {
        return out_of_range();
      }
      put<int32_t>(static_cast<int32_t>(v));
      break;
    case GgufType::kUint64:
      if (v < 0) return out_of_range();
      put<uint64_t>(static_cast<uint64_t>(v));
      break;
    case GgufType::kInt64:
      put<int64_t>(v);
      break;
    default:
      return bad(key, std::string("internal: ") + gguf_type_name(type) + " is not an integer type");
  }
  return Status::ok();
}

Status HeaderBuilder::put_scalar(const std::string& key, const GgufValue& value) {
  const GgufType type = value.type();
  if (is_integer_type(type)) {
    std::optional<int64_t> v = value.to_int();
    if (!v) {
      // GgufValue exposes uint64 scalars only through to_int(); one above 2^63-1 cannot be read
      // back exactly, so refuse rather than write a different number.
      return bad(key, std::string("the ") + gguf_type_name(type) +
                          " value is not an integer that fits int64");
    }
    return put_integer(key, type, *v);
  }
  switch (type) {
    case GgufType::kFloat32:
    case GgufType::kFloat64: {
      std::optional<double> v = value.to_float();
      if (!v) return bad(key, "the float value holds no number");
      if (type == GgufType::kFloat32) {
        put<float>(static_cast<float>(*v));
      } else {
        put<double>(*v);
      }
      return Status::ok();
    }
    case GgufType::kBool: {
      std::optional<bool> v = value.to_bool();
      if (!v) return bad(key, "the bool value holds no bool");
      put<uint8_t>(*v ? 1 : 0);
      return Status::ok();
    }
    case GgufType::kString: {
      const std::string* s = value.to_string();
      if (s == nullptr) return bad(key, "the string value holds no string");
      put_string(*s);
      return Status::ok();
    }
    default:
      return bad(key, "unknown value type " + std::to_string(static_cast<uint32_t>(type)));
  }
}

Status HeaderBuilder::put_value(const std::string& key, const GgufValue& value) {
  put<uint32_t>(static_cast<uint32_t>(value.type()));
  if (!value.is_array()) return put_scalar(key, value);

  const GgufType elem = value.array_type();
  put<uint32_t>(static_cast<uint32_t>(elem));
  if (elem == GgufType::kString) {
    const std::vector<std::string>* v = value.strings();
    if (v == nullptr) return bad(key, "a string array that holds no strings");
    put<uint64_t>(v->size());
    for (const std::string& s : *v) put_string(s);
  } else if (elem == GgufType::kFloat32 || elem == GgufType::kFloat64) {
    const std::vector<double>* v = value.floats();
    if (v == nullptr)
      return bad(key, std::string("a ") + gguf_type_name(elem) + " array that holds no floats");
    put<uint64_t>(v->size());
    for (double x : *v) {
      if (elem == GgufType::kFloat32) {
        put<float>(static_cast<float>(x));
      } else {
        put<double>(x);
      }
    }
  } else if (elem == GgufType::kBool) {
    const std::vector<int64_t>* v = value.ints();
    if (v == nullptr) return bad(key, "a bool array that holds no bools");
    put<uint64_t>(v->size());
    for (int64_t x : *v) {
      if (x != 0 && x != 1)
        return bad(key, "bool array element " + std::to_string(x) + " is not 0 or 1");
      put<uint8_t>(static_cast<uint8_t>(x));
    }
  } else if (elem == GgufType::kUint64 && value.uints() != nullptr) {
    const std::vector<uint64_t>* v = value.uints();
    put<uint64_t>(v->size());
    for (uint64_t x : *v) put<uint64_t>(x);
  } else if (is_integer_type(elem)) {
    const std::vector<int64_t>* v = value.ints();
    if (v == nullptr)
      return bad(key, std::string("a ") + gguf_type_name(elem) + " array that holds no integers");
    put<uint64_t>(v->size());
    for (int64_t x : *v) STRATA_RETURN_IF_ERROR(put_integer(key, elem, x));
  } else if (elem == GgufType::kArray) {
    return bad(key, "arrays of arrays are not supported (llama.cpp rejects them)");
  } else {
    return bad(key, "unknown array element type " + std::to_string(static_cast<uint32_t>(elem)));
  }
  return Status::ok();
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

StatusOr<std::unique_ptr<GgufWriter>> GgufWriter::create(const std::string& path,
                                                         GgufMetadata metadata,
                                                         std::vector<GgufTensorDecl> tensors,
                                                         GgufWriterOptions options) {
  auto bad = [&](const std::string& what) { return Status::invalid_argument(path + ": " + what); };
  if (path.empty()) return Status::invalid_argument("output path is empty");

  std::unique_ptr<GgufWriter> w(new GgufWriter());
  w->path_ = path;
  w->temp_path_ = path + ".tmp";
  w->options_ = options;
  w->buffer_.reserve(std::max<size_t>(options.write_buffer_bytes, 1));

  // ---- validate and serialize the header ----
  HeaderBuilder h;
  h.put<uint32_t>(0x46554747u);  // "GGUF"
  h.put<uint32_t>(kGgufVersion);
  h.put<uint64_t>(tensors.size());
  h.put<uint64_t>(metadata.size());

  std::set<std::string> keys;
  for (const auto& [key, value] : metadata) {
    if (!keys.insert(key).second) return bad("metadata key '" + key + "' is given twice");
    h.put_string(key);
    Status s = h.put_value(key, value);
    if (!s.is_ok()) return Status(s.code(), path + ": " + s.message());
    if (key == "general.alignment") {
      std::optional<int64_t> a = value.to_int();
      if (value.type() != GgufType::kUint32 || !a || *a == 0 || (*a & (*a - 1)) != 0) {
        return bad("general.alignment must be a uint32 power of two");
      }
      w->alignment_ = static_cast<uint64_t>(*a);
    }
  }

  std::set<std::string> names;
  uint64_t data_end = 0;
  for (const GgufTensorDecl& t : tensors) {
    const std::string what = "tensor '" + t.name + "'";
    if (t.name.empty()) return bad("a tensor has an empty name");
    if (t.name.size() > kMaxTensorNameBytes) {
      return bad(what + ": name longer than " + std::to_string(kMaxTensorNameBytes) +
                 " bytes (llama.cpp's limit)");
    }
    if (!names.insert(t.name).second) return bad(what + " is declared twice");
    if (t.ne.empty() || t.ne.size() > static_cast<size_t>(GgufFile::kMaxDims)) {
      return bad(what + ": " + std::to_string(t.ne.size()) + " dimensions (expected 1 to 4)");
    }
    int64_t n_elems = 1;
    for (int64_t d : t.ne) {
      if (d < 0) return bad(what + ": negative dimension " + std::to_string(d));
      if (d != 0 && n_elems > std::numeric_limits<int64_t>::max() / d) {
        return bad(what + ": element count overflows");
      }
      n_elems *= d;
    }
    if (!dtype_traits(static_cast<uint32_t>(t.type))) {
      return bad(what + ": unknown type id " + std::to_string(static_cast<uint32_t>(t.type)));
    }
    const DTypeTraits& tr = traits(t.type);
    if (t.ne[0] % tr.block_elems != 0) {
      return bad(what + ": row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                 tr.name + " block size " + std::to_string(tr.block_elems));
    }
    if (n_elems / tr.block_elems > std::numeric_limits<int64_t>::max() / tr.block_bytes) {
      return bad(what + ": byte size overflows");
    }
    const uint64_t offset = align_up(data_end, w->alignment_);
    w->offsets_.push_back(offset);
    data_end = offset + t.size_bytes();
    w->data_total_ += t.size_bytes();

    h.put_string(t.name);
    h.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) h.put<int64_t>(d);
    h.put<uint32_t>(static_cast<uint32_t>(t.type));
    h.put<uint64_t>(offset);
  }
  const uint64_t header_bytes = h.bytes().size();
  // As gguf-py writes it: no padding after the header of a file without tensors.
  w->data_offset_ = tensors.empty() ? header_bytes : align_up(header_bytes, w->alignment_);
  w->file_size_ =
      tensors.empty() ? header_bytes : w->data_offset_ + align_up(data_end, w->alignment_);
  w->tensors_ = std::move(tensors);

  // ---- create the temp file and write the header ----
  w->fd_ = ::open(w->temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd_ < 0) {
    return Status::io_error("cannot create '" + w->temp_path_ + "': " + errno_text());
  }
  STRATA_RETURN_IF_ERROR(w->write_raw(h.bytes().data(), h.bytes().size()));
  STRATA_RETURN_IF_ERROR(w->write_zeros(w->data_offset_ - header_bytes));
  // Zero-byte tensors at the start are complete already.
  while (w->current_tensor_ < w->tensors_.size() &&
         w->tensors_[w->current_tensor_].size_bytes() == 0) {
    ++w->current_tensor_;
  }
  return w;
}

GgufWriter::~GgufWriter() {
  if (!finished_) discard();
}

void GgufWriter::discard() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_path_.c_str());
  }
  buffer_.clear();
}

Status GgufWriter::fail(Status status) {
  failure_ = status;
  discard();
  return status;
}

Status GgufWriter::flush() {
  const uint8_t* p = buffer_.data();
  size_t left = buffer_.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Status::io_error("cannot write '" + temp_path_ + "': " + errno_text()));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  buffer_.clear();
  return Status::ok();
}

Status GgufWriter::write_raw(const uint8_t* data, size_t n) {
  const size_t cap = buffer_.capacity();
  if (buffer_.size() + n > cap) STRATA_RETURN_IF_ERROR(flush());
  if (n < cap) {
    buffer_.insert(buffer_.end(), data, data + n);
  } else {
    // Large chunk: straight to the file, no copy.
    while (n > 0) {
      const ssize_t w = ::write(fd_, data, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return fail(Status::io_error("cannot write '" + temp_path_ + "': " + errno_text()));
      }
      data += w;
      n -= static_cast<size_t>(w);
      file_pos_ += static_cast<uint64_t>(w);
    }
    return Status::ok();
  }
  file_pos_ += n;
  return Status::ok();
}

Status GgufWriter::write_zeros(size_t n) {
  static constexpr uint8_t kZeros[256] = {};
  while (n > 0) {
    const size_t k = std::min(n, sizeof(kZeros));
    STRATA_RETURN_IF_ERROR(write_raw(kZeros, k));
    n -= k;
  }
  return Status::ok();
}

Status GgufWriter::append(std::span<const uint8_t> bytes) {
  if (!failure_.is_ok()) return failure_;
  if (finished_ || fd_ < 0) return Status::internal(path_ + ": append after finish");
  while (!bytes.empty()) {
    if (current_tensor_ >= tensors_.size()) {
      return fail(Status::invalid_argument(
          path_ + ": " + std::to_string(bytes.size()) + " bytes of tensor data more than the " +
          std::to_string(tensors_.size()) + " declared tensors hold"));
    }
    const uint64_t size = tensors_[current_tensor_].size_bytes();
    const uint64_t take = std::min<uint64_t>(bytes.size(), size - current_written_);
    STRATA_RETURN_IF_ERROR(write_raw(bytes.data(), static_cast<size_t>(take)));
    bytes = bytes.subspan(static_cast<size_t>(take));
    current_written_ += take;
    data_appended_ += take;
    // Close every tensor that is now complete (zero-byte tensors complete at once).
    while (current_tensor_ < tensors_.size() &&
           current_written_ == tensors_[current_tensor_].size_bytes()) {
      const uint64_t end = offsets_[current_tensor_] + current_written_;
      STRATA_RETURN_IF_ERROR(write_zeros(static_cast<size_t>(align_up(end, alignment_) - end)));
      ++current_tensor_;
      current_written_ = 0;
    }
  }
  return Status::ok();
}

Status GgufWriter::finish() {
  if (!failure_.is_ok()) return failure_;
  if (finished_ || fd_ < 0) return Status::internal(path_ + ": finish called twice");
  if (current_tensor_ < tensors_.size()) {
    const GgufTensorDecl& t = tensors_[current_tensor_];
    return fail(Status::invalid_argument(
        path_ + ": tensor data ended early: tensor '" + t.name + "' got " +
        std::to_string(current_written_) + " of " + std::to_string(t.size_bytes()) + " bytes (" +
        std::to_string(data_appended_) + " of " + std::to_string(data_total_) + " bytes in all)"));
  }
  STRATA_RETURN_IF_ERROR(flush());
  assert(file_pos_ == file_size_);
  if (options_.sync_before_rename && ::fdatasync(fd_) != 0) {
    return fail(Status::io_error("cannot sync '" + temp_path_ + "': " + errno_text()));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(temp_path_.c_str());
    failure_ = Status::io_error("cannot close '" + temp_path_ + "': " + why);
    return failure_;
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(temp_path_.c_str());
    failure_ = Status::io_error("cannot rename '" + temp_path_ + "' to '" + path_ + "': " + why);
    return failure_;
  }
  finished_ = true;
  return Status::ok();
}

}  // namespace strata
