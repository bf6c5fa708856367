// Where `strata calibrate` caches the machine's Caps and how the commands find them: the XDG cache
// folder ($XDG_CACHE_HOME/strata/caps.json, else ~/.cache/strata/caps.json). Read here, at the
// command line's edge, never deeper in the code.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "policies/caps.h"

namespace strata::cli {

inline std::string default_caps_path() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/strata/caps.json";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return std::string(home) + "/.cache/strata/caps.json";
  }
  return "strata-caps.json";
}

// The Caps in `path` (a --caps flag), else in the default cache file, else Caps::reference().
// A --caps file that cannot be read is an error; a broken cache file is too (it names the file:
// re-run strata calibrate).
inline StatusOr<Caps> load_caps(const std::string& path) {
  if (!path.empty()) return Caps::load(path);
  const std::string cached = default_caps_path();
  if (!std::filesystem::exists(cached)) return Caps::reference();
  return Caps::load(cached);
}

}  // namespace strata::cli
