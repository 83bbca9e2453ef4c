#pragma once

// JSON-RPC 2.0 as MCP's Streamable HTTP transport carries it (design §14, §17.7): one message per
// POST body, read into a typed message or the error to answer. Pure functions (no I/O, no state),
// so they can be fuzzed (fuzz/fuzz_mcp_jsonrpc.cc).

#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "nlohmann/json.hpp"

namespace toolgate::api::mcp {

// JSON-RPC and MCP error codes.
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
inline constexpr int kHeaderMismatch = -32020;              // 2026-07-28
inline constexpr int kUnsupportedProtocolVersion = -32022;  // 2026-07-28

// Nesting deeper than this is refused before parsing (a hostile body must not make the parser recurse
// without bound).
inline constexpr int kMaxMessageDepth = 64;

struct JsonRpcMessage {
  enum class Kind { kRequest, kNotification, kResponse };
  Kind kind = Kind::kRequest;
  // The request's id as JSON text, exactly as the client wrote a number (a big integer or 1.0 keeps
  // its digits) or re-encoded for a string; "null" for notifications.
  std::string id_json = "null";
  std::string method;
  nlohmann::json params = nlohmann::json::object();  // absent: {}; an object or an array
  // `params._meta.progressToken` as JSON text, a number exactly as the client wrote it (as `id_json`);
  // empty when there is none or it is neither a string nor a number.
  std::string progress_token_json;
};

struct JsonRpcError {
  int code = kInvalidRequest;
  std::string message;
  std::string id_json = "null";  // the request's id when it could be read, else null
};

// Reads one POST body. Errors: kParseError (not JSON, too deep), kInvalidRequest (a batch — refused
// since MCP 2025-06-18 —, not an object, "jsonrpc" other than "2.0", a method that is not a string,
// an id that is not a string or a number, params that are not an object or array, or neither a
// request nor a response). Never throws.
std::variant<JsonRpcMessage, JsonRpcError> ParseJsonRpc(std::string_view body);

// The raw JSON text of member `key` of the top-level object in `text`, the last one when repeated.
// REQUIRES: `text` is valid JSON (parsed before). nullopt when it is not an object or has no such key.
std::optional<std::string> RawTopLevelMember(std::string_view text, std::string_view key);

// Response bodies. `id_json` is spliced in as given (JsonRpcMessage::id_json).
std::string ResultResponse(const std::string& id_json, const nlohmann::json& result);
std::string ErrorResponse(const std::string& id_json, int code, std::string_view message,
                          const nlohmann::json* data = nullptr);

}  // namespace toolgate::api::mcp
