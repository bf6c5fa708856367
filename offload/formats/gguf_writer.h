// GgufWriter: writes a GGUF v3 file as llama.cpp's gguf writer lays it out, with the tensor data
// streamed: the caller declares metadata and tensor infos up front, then hands over the tensors'
// bytes in file order, in chunks of any size, and never needs the whole model in memory.
//
// Layout written (all little-endian):
//   header: "GGUF", version 3, tensor count, metadata count
//   metadata in the order given, each value with the GGUF type it carries (a GgufValue read from
//     one file is written back with the same type, so tokenizer keys copy key by key)
//   tensor infos in the order given: name, dims (ggml order, ne[0] innermost), type, offset
//   zero padding to the alignment, then the data section: each tensor at the next multiple of
//     the alignment, zero padding after each tensor (the last one too, as ggml writes it)
// The alignment is general.alignment when the metadata has it (a uint32 power of two), else 32.
//
// Atomicity: bytes go to "<path>.tmp"; finish() flushes, syncs and renames it over <path>. Any
// failure (a bad declaration, a write error, too few or too many bytes, a writer destroyed before
// finish) removes the temp file, so <path> is either the complete new file or left as it was.
//
// Not thread-safe: one thread calls append()/finish() (a pipeline may hand that thread chunks
// that other threads produced).
//
// Example:
//   STRATA_ASSIGN_OR_RETURN(auto w, GgufWriter::create("out.gguf", metadata, tensors));
//   for (chunk : data_in_file_order) STRATA_RETURN_IF_ERROR(w->append(chunk));
//   STRATA_RETURN_IF_ERROR(w->finish());
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "offload/core/dtype.h"
#include "offload/core/status.h"
#include "offload/formats/gguf_file.h"

namespace strata {

using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

// One tensor info as the header declares it.
struct GgufTensorDecl {
  std::string name;
  DType type = DType::kF32;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the row length; 1..4 dims

  int64_t num_elements() const;
  // REQUIRES: ne[0] % block_elems(type) == 0 (create() checks it).
  uint64_t size_bytes() const;
};

struct GgufWriterOptions {
  // fdatasync before the rename, so that after a crash <path> is the old file or the whole new
  // one. Default on; tests writing many small files may turn it off.
  bool sync_before_rename = true;
  // Appends smaller than this are gathered into one buffer before write(2); larger ones go
  // straight to the file. Default 4 MiB.
  size_t write_buffer_bytes = size_t{4} << 20;
};

class GgufWriter {
 public:
  // Validates the declaration (unique keys and names, value types consistent with their data,
  // integer values that fit their type, 1..4 dims, row lengths that fit the block size, a valid
  // alignment), creates "<path>.tmp" and writes the header.
  static StatusOr<std::unique_ptr<GgufWriter>> create(const std::string& path,
                                                      GgufMetadata metadata,
                                                      std::vector<GgufTensorDecl> tensors,
                                                      GgufWriterOptions options = {});

  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;
  // Removes the temp file unless finish() succeeded.
  ~GgufWriter();

  // Appends the next bytes of tensor data, in declaration order; a chunk may end inside a
  // tensor or span several. Padding between tensors is inserted here. Fails (and removes the temp
  // file) on a write error or when more bytes arrive than the tensors declare; after a failure
  // every call returns that failure.
  Status append(std::span<const uint8_t> bytes);

  // REQUIRES: every declared byte was appended. Writes the final padding, flushes, syncs,
  // renames "<path>.tmp" to <path>. On failure the temp file is removed and <path> untouched.
  Status finish();

  const std::string& path() const { return path_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }      // file offset of the data section
  uint64_t file_size_bytes() const { return file_size_; }    // size of the finished file
  uint64_t data_bytes_total() const { return data_total_; }  // sum of the tensors' sizes
  uint64_t data_bytes_appended() const { return data_appended_; }
  const std::vector<uint64_t>& tensor_offsets() const { return offsets_; }  // in the data section

 private:
  GgufWriter() = default;
  Status write_raw(const uint8_t* data, size_t n);  // buffered
  Status write_zeros(size_t n);
  Status flush();
  Status fail(Status status);  // records status, closes and removes the temp file
  void discard();

  std::string path_;
  std::string temp_path_;
  GgufWriterOptions options_;
  int fd_ = -1;
  bool finished_ = false;
  Status failure_;

  uint64_t alignment_ = GgufFile::kDefaultAlignment;
  uint64_t data_offset_ = 0;
  uint64_t file_size_ = 0;
  uint64_t data_total_ = 0;
  uint64_t data_appended_ = 0;
  std::vector<GgufTensorDecl> tensors_;
  std::vector<uint64_t> offsets_;
  size_t current_tensor_ = 0;     // the tensor the next appended byte belongs to
  uint64_t current_written_ = 0;  // bytes of it already appended
  uint64_t file_pos_ = 0;         // bytes handed to write_raw so far

  std::vector<uint8_t> buffer_;
};

}  // namespace strata
