#pragma once

#include <string_view>

namespace toolgate::api {

inline constexpr int kMaxJsonDepth = 64;

// True when `text` nests objects and arrays at most `max_depth` deep. Checked before parsing, so a
// hostile body cannot make the parser (or the parsed value's destructor) recurse without bound.
// Brackets inside strings do not count.
inline bool JsonDepthWithin(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

}  // namespace toolgate::api
