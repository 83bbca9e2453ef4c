// The TOML config loader on arbitrary text: an error is a clear kInvalidArgument naming the source,
// never a crash; what it accepts is a config toolgate can serve (every connector has an address).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "toolgate/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = toolgate::ParseConfig(text, "fuzz.toml");
  if (!c.ok()) {
    if (c.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (std::string(c.status().message()).rfind("fuzz.toml", 0) != 0) std::abort();  // names the file
    return 0;
  }
  if (c->connectors.empty()) std::abort();
  for (const auto& [id, conn] : c->connectors) {
    if (!toolgate::IsValidToolName(id) && id.empty()) std::abort();
    if (conn.address.port <= 0 || conn.address.port > 65535) std::abort();
    if (conn.concurrency.max_in_flight < 1) std::abort();
  }
  return 0;
}
