#include "offload/model/model_loader.h"

#include <cstring>
#include <filesystem>

#include "offload/formats/mapped_file.h"
#include "offload/model/hf_checkpoint.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// True when `bytes` start like a safetensors file: a header length that fits, then '{'.
bool looks_like_safetensors(std::span<const uint8_t> bytes) {
  if (bytes.size() < 9) return false;
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data(), 8);
  return header_bytes <= bytes.size() - 8 && bytes[8] == '{';
}

}  // namespace

StatusOr<LoadedModel> load_model(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) return Status::not_found(path + ": no such file or folder");
  LoadedModel model;
  if (fs::is_directory(st)) {
    STRATA_ASSIGN_OR_RETURN(model.spec, model_spec_from_hf_folder(path));
    return model;
  }

  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::open(path));
  const std::span<const uint8_t> bytes = file->bytes();
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0) {
    if (looks_like_safetensors(bytes)) {
      return Status::invalid_argument(
          path + ": is a safetensors file; pass the folder that holds it with its config.json");
    }
    return Status::invalid_data(path +
                                ": not a GGUF file (no \"GGUF\" magic) and not a folder with an "
                                "HF checkpoint");
  }
  STRATA_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::parse(bytes, path, std::move(file)));
  STRATA_ASSIGN_OR_RETURN(model.spec, model_spec_from_gguf(gguf));
  model.gguf = std::move(gguf);
  return model;
}

}  // namespace strata
