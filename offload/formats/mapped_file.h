// MappedFile: a read-only mmap of a whole file. The only place in formats/ that talks to the OS.
// Owns the mapping; move-only. Model weights are read through it and never copied more than once.
//
// When the file changes under the mapping: a file deleted (unlinked) while mapped stays readable
// (the mapping holds the inode), so a run goes on. A file truncated while mapped makes every read
// past its new end a SIGBUS, which no return value can report; a handler installed with the first
// mapping recognises a fault inside a mapped model file, prints one line naming the file
// ("strata: <path> was truncated while mapped ...") and exits with kMappedFileTruncatedExitCode
// instead of dumping core. Faults anywhere else get the default action.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "offload/core/status.h"

namespace strata {

// The exit status of a run whose mapped model file was truncated under it.
inline constexpr int kMappedFileTruncatedExitCode = 3;

class MappedFile {
 public:
  // Maps `path` read-only. An empty file maps to an empty span.
  static StatusOr<std::shared_ptr<const MappedFile>> open(const std::string& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::string& path() const { return path_; }
  std::span<const uint8_t> bytes() const { return {data_, size_bytes_}; }
  size_t size_bytes() const { return size_bytes_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size_bytes)
      : path_(std::move(path)), data_(data), size_bytes_(size_bytes) {}

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_bytes_ = 0;
};

// Reads a whole (small) file into a string, e.g. config.json or a tokenizer test vector.
StatusOr<std::string> read_text_file(const std::string& path);

}  // namespace strata
