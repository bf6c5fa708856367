// load_model: the one entry from a path on the command line to a ModelSpec.
//
// A folder is an HF checkpoint (config.json + safetensors, see hf_checkpoint.h); a file is
// GGUF, recognised by its magic, and anything else is one clear error naming the path. For GGUF
// the parsed file is kept as well: the tokenizer is built from its `tokenizer.ggml.*` metadata.
// The spec's tensors point into the mappings that `spec.storage` keeps alive, so a LoadedModel
// may be moved freely and outlive nothing else.
//
// Example:
//   STRATA_ASSIGN_OR_RETURN(LoadedModel model, load_model(argv[1]));
//   if (model.gguf) build_tokenizer(*model.gguf);
#pragma once

#include <optional>
#include <string>

#include "offload/core/status.h"
#include "offload/formats/gguf_file.h"
#include "offload/model/model_spec.h"

namespace strata {

struct LoadedModel {
  ModelSpec spec;
  std::optional<GgufFile> gguf;  // set when the model came from a GGUF file
};

StatusOr<LoadedModel> load_model(const std::string& path);

}  // namespace strata
