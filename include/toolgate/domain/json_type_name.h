#pragma once

// The JSON type of a value as JSON Schema names it ("object", "integer", ...): for messages that name a
// type and never the value (input schemas, request shapes).

#include <string_view>

#include "nlohmann/json.hpp"

namespace toolgate {

inline std::string_view TypeNameOf(const nlohmann::json& v) {
  using json = nlohmann::json;
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "number";
    default:
      return "binary";
  }
}

}  // namespace toolgate
