// libFuzzer target: any byte string given to the GGUF reader must give a file or a clear
// Status, never a crash, an out-of-bounds read (ASan) or undefined behaviour (UBSan). Parsed
// files also go through the ModelSpec builder and have every tensor byte touched.
#include <cstddef>
#include <cstdint>
#include <span>

#include "offload/formats/gguf_file.h"
#include "offload/model/model_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = strata::GgufFile::parse(std::span<const uint8_t>(data, size), "fuzz-input");
  if (!file.is_ok()) {
    // Every failure must explain itself.
    if (file.status().message().empty()) __builtin_trap();
    return 0;
  }
  uint8_t sum = 0;
  for (const auto& t : file->tensors()) {
    for (uint8_t b : t.data) sum ^= b;  // ASan flags any view past the input
  }
  asm volatile("" : : "r"(sum));  // keep the reads
  auto spec = strata::model_spec_from_gguf(*file);
  (void)spec;
  return 0;
}
