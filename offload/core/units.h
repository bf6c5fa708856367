// Byte sizes as people write them in flags and config files.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "offload/core/status.h"

namespace strata {

// "8GiB", "8G", "8 gb", "512MiB", "1.5g" or a plain byte count: binary units (G = GiB), as
// llama.cpp and most tools mean them for memory. invalid_argument naming `flag` otherwise.
inline StatusOr<int64_t> parse_byte_size(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  std::string unit(end == nullptr ? "" : end);
  std::string u;
  for (char c : unit) {
    if (c != ' ') u += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  double scale = 0;
  if (u.empty() || u == "b")
    scale = 1;
  else if (u == "k" || u == "kb" || u == "kib")
    scale = 1024.0;
  else if (u == "m" || u == "mb" || u == "mib")
    scale = 1024.0 * 1024;
  else if (u == "g" || u == "gb" || u == "gib")
    scale = 1024.0 * 1024 * 1024;
  else if (u == "t" || u == "tb" || u == "tib")
    scale = 1024.0 * 1024 * 1024 * 1024;
  if (end == text.c_str() || scale == 0 || !(v > 0) || v * scale > 9.0e18) {
    return Status::invalid_argument(flag + ": '" + text +
                                    "' is not a size (e.g. 8GiB, 512MiB or a byte count)");
  }
  return static_cast<int64_t>(v * scale);
}

}  // namespace strata
