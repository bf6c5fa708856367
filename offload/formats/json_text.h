// Helpers for the formats that carry JSON (safetensors headers, HF config and index files):
// a nesting check to run before parsing untrusted text, and a short excerpt of a value for
// error messages. Both work for nlohmann::json and nlohmann::ordered_json.
#pragma once

#include <string>
#include <string_view>

namespace strata {

// How deeply `text` nests JSON arrays and objects (brackets inside strings do not count).
// Refusing deep input up front keeps nlohmann's recursive parser and serializer (used for
// messages) far from the stack limit.
int json_nesting_depth(std::string_view text);

// A JSON value as it appears in a message: short, one line (at most 60 characters).
template <class JsonT>
std::string json_excerpt(const JsonT& value) {
  std::string s = value.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace strata
