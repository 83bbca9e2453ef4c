// MCP JSON-RPC messages as /mcp reads them (api/mcp_protocol.h): whatever the bytes, the parser
// answers a message or an error without throwing, and every answer built from it is valid JSON that
// carries the request's id unchanged — the raw number text for a numeric id (big integers keep
// their digits), the same string for a string id.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "api/mcp_protocol.h"
#include "nlohmann/json.hpp"

namespace {

using nlohmann::json;
namespace mcp = toolgate::api::mcp;

void Check(const std::string& response, const std::string& id_json) {
  const json r = json::parse(response, nullptr, false);
  if (r.is_discarded() || !r.is_object() || r.value("jsonrpc", "") != "2.0") std::abort();
  const json id = json::parse(id_json, nullptr, false);
  if (id.is_discarded() || !(id.is_null() || id.is_string() || id.is_number())) std::abort();
  if (id.is_string() && r["id"] != id) std::abort();
  if (response.find("\"id\":" + id_json + ",") == std::string::npos) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = mcp::ParseJsonRpc(text);
  if (auto* e = std::get_if<mcp::JsonRpcError>(&parsed)) {
    if (e->code != mcp::kParseError && e->code != mcp::kInvalidRequest) std::abort();
    Check(mcp::ErrorResponse(e->id_json, e->code, e->message), e->id_json);
    return 0;
  }
  const mcp::JsonRpcMessage& m = std::get<mcp::JsonRpcMessage>(parsed);
  if (!m.params.is_object() && !m.params.is_array()) std::abort();
  if (m.kind == mcp::JsonRpcMessage::Kind::kRequest) {
    Check(mcp::ResultResponse(m.id_json, json::object()), m.id_json);
    const json data = {{"method", m.method}};
    Check(mcp::ErrorResponse(m.id_json, mcp::kMethodNotFound, m.method, &data), m.id_json);
  }
  return 0;
}
