// Request bodies as the gateway reads them: the depth and value checks run before the parser, and
// whatever passes them parses without exceptions and re-serialises to JSON that parses to the same
// value. The values the scan counts are never fewer than the parsed tree holds (the bound on values
// is a bound on the tree), and exactly as many for text with no repeated key, such as the tree's own
// dump (a difference is how a repeated key is found).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/json_limits.h"
#include "nlohmann/json.hpp"

namespace {

// The values of a parsed tree: itself, and each element and member, recursively.
int64_t TreeValues(const nlohmann::json& j) {
  int64_t n = 1;
  if (j.is_structured()) {
    for (const auto& child : j) n += TreeValues(child);
  }
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using toolgate::api::CheckJsonText;
  using toolgate::api::JsonTextFault;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (CheckJsonText(text, toolgate::api::kMaxJsonDepth, toolgate::api::kMaxJsonValues) != JsonTextFault::kNone) {
    return 0;
  }
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  const int64_t tree_values = TreeValues(j);
  if (tree_values > toolgate::api::kMaxJsonValues) std::abort();
  if (tree_values > 1 && CheckJsonText(text, toolgate::api::kMaxJsonDepth, tree_values - 1) == JsonTextFault::kNone) {
    std::abort();  // the scan counted fewer values than the tree holds
  }
  // The gateway dumps with replacement of invalid UTF-8 (never throws) and stores that text.
  const std::string dumped = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const nlohmann::json again = nlohmann::json::parse(dumped, nullptr, false);
  if (again.is_discarded()) std::abort();
  if (!toolgate::api::JsonDepthWithin(dumped, toolgate::api::kMaxJsonDepth + 1)) std::abort();
  if (toolgate::JsonValueCount(j) != tree_values) std::abort();
  int64_t counted = -1;
  if (CheckJsonText(dumped, toolgate::api::kMaxJsonDepth + 1, toolgate::api::kMaxJsonValues, &counted) !=
          JsonTextFault::kNone ||
      counted != TreeValues(again)) {
    std::abort();  // text with no repeated key counted otherwise than its tree
  }
  return 0;
}
