// GgufBytes: builds GGUF files byte by byte in tests, including broken ones (wrong counts,
// offsets, types), which a real writer refuses to produce.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace strata::testing {

class GgufBytes {
 public:
  std::vector<uint8_t> bytes;

  template <typename T>
  GgufBytes& raw(T v) {
    const size_t at = bytes.size();
    bytes.resize(at + sizeof(T));
    std::memcpy(bytes.data() + at, &v, sizeof(T));
    return *this;
  }
  GgufBytes& str(const std::string& s) {
    raw<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  GgufBytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    bytes.insert(bytes.end(), {'G', 'G', 'U', 'F'});
    return raw<uint32_t>(version).raw<uint64_t>(n_tensors).raw<uint64_t>(n_kv);
  }
  GgufBytes& kv_u32(const std::string& key, uint32_t v) { return str(key).raw<uint32_t>(4).raw(v); }
  GgufBytes& kv_f32(const std::string& key, float v) { return str(key).raw<uint32_t>(6).raw(v); }
  GgufBytes& kv_str(const std::string& key, const std::string& v) {
    return str(key).raw<uint32_t>(8).str(v);
  }
  // Tensor info: name, dims (ggml order), ggml type id, offset within the data section.
  GgufBytes& tensor(const std::string& name, const std::vector<int64_t>& ne, uint32_t type,
                    uint64_t offset) {
    str(name).raw<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (int64_t d : ne) raw<int64_t>(d);
    return raw<uint32_t>(type).raw<uint64_t>(offset);
  }
  GgufBytes& pad_to(uint64_t alignment) {
    while (bytes.size() % alignment != 0) bytes.push_back(0);
    return *this;
  }
  GgufBytes& zeros(size_t n) {
    bytes.insert(bytes.end(), n, 0);
    return *this;
  }
};

}  // namespace strata::testing
