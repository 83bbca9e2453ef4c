#pragma once

// Nesting bounds for JSON from outside: checked on the text before parsing, so a hostile body cannot
// make the parser, or the parsed value's copy, dump or destructor, recurse without bound (nlohmann's
// are recursive: a downstream's answer nested 100,000 deep overflowed the stack).

#include <cstdint>
#include <string_view>

#include "nlohmann/json.hpp"

namespace toolgate {

// How deep JSON text from outside may nest: an answer from a downstream (an HTTP body, an MCP
// server's message), or text read back from the store (a hand may have edited a row). Far beyond any
// real tool result, far below what recursion over it can bear.
inline constexpr int kMaxDownstreamJsonDepth = 256;

// What a scan of JSON text before parsing may find wrong with it.
enum class JsonTextFault { kNone, kTooDeep, kTooManyValues };

// Scans `text` (brackets and commas inside strings do not count) for nesting deeper than `max_depth`
// and for more than `max_values` values, counted as a parse would make them: the text's own value,
// and one for each array element and object member. A parsed value costs far more than its text (a
// number written in two bytes is 16 in the tree, an empty array written in three is ~60), so the
// count, not the size, bounds what parsing a body takes. Stops at the first fault. With no fault,
// `*counted` (when given) is the count: for valid JSON, exactly what JsonValueCount finds in the
// parsed value unless an object repeats a key (the parser keeps one of them).
inline JsonTextFault CheckJsonText(std::string_view text, int max_depth, int64_t max_values,
                                   int64_t* counted = nullptr) {
  int depth = 0;
  int64_t values = 1;
  bool in_string = false;
  bool opened = false;  // a '{' or '[' seen, and nothing after it but whitespace yet
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (opened && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      opened = false;
      if (c != '}' && c != ']' && ++values > max_values) return JsonTextFault::kTooManyValues;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == ',') {
      if (++values > max_values) return JsonTextFault::kTooManyValues;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return JsonTextFault::kTooDeep;
      opened = true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  if (counted != nullptr) *counted = values;
  return JsonTextFault::kNone;
}

// The values of a parsed value, counted as CheckJsonText counts them in its text: itself, and each
// array element and object member, at every depth. REQUIRES: `value` nests no deeper than the
// caller's stack can recurse (parsed from text CheckJsonText bounded).
inline int64_t JsonValueCount(const nlohmann::json& value) {
  int64_t n = 1;
  if (value.is_structured()) {
    for (const auto& child : value) n += JsonValueCount(child);
  }
  return n;
}

// True when `text` nests objects and arrays at most `max_depth` deep. Brackets inside strings do not
// count.
inline bool JsonDepthWithin(std::string_view text, int max_depth) {
  return CheckJsonText(text, max_depth, INT64_MAX) != JsonTextFault::kTooDeep;
}

// `text` parsed when it nests at most `max_depth` deep and is JSON; a discarded value otherwise.
inline nlohmann::json ParseJsonWithin(std::string_view text, int max_depth = kMaxDownstreamJsonDepth) {
  if (!JsonDepthWithin(text, max_depth)) return nlohmann::json(nlohmann::json::value_t::discarded);
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

}  // namespace toolgate
