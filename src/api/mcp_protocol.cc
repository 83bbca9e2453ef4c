#include "api/mcp_protocol.h"

#include <cctype>

#include "api/json_limits.h"

namespace toolgate::api::mcp {

namespace {

using json = nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SkipSpace(std::string_view t, size_t& i) {
  while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
}

// Past the string starting at t[i] == '"'.
void SkipString(std::string_view t, size_t& i) {
  for (++i; i < t.size(); ++i) {
    if (t[i] == '\\')
      ++i;
    else if (t[i] == '"') {
      ++i;
      return;
    }
  }
}

// Past one JSON value starting at t[i] (valid JSON assumed; bounded by t's size either way).
void SkipValue(std::string_view t, size_t& i) {
  if (i >= t.size()) return;
  if (t[i] == '"') return SkipString(t, i);
  if (t[i] == '{' || t[i] == '[') {
    int depth = 0;
    while (i < t.size()) {
      const char c = t[i];
      if (c == '"') {
        SkipString(t, i);
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) {
          ++i;
          return;
        }
      }
      ++i;
    }
    return;
  }
  while (i < t.size() && t[i] != ',' && t[i] != '}' && t[i] != ']' && !std::isspace(static_cast<unsigned char>(t[i])))
    ++i;
}

bool IsId(const json& id) { return id.is_string() || id.is_number(); }

// The id's JSON text: a number as the client wrote it, a string re-encoded (the same value).
std::string IdJson(std::string_view body, const json& id) {
  if (id.is_number()) {
    if (auto raw = RawTopLevelMember(body, "id")) return *raw;
  }
  return Dump(id);
}

JsonRpcError Invalid(std::string message, std::string id_json = "null") {
  return JsonRpcError{kInvalidRequest, std::move(message), std::move(id_json)};
}

}  // namespace

namespace {

// RawTopLevelMember's text, as a view into `t`.
std::optional<std::string_view> RawMemberView(std::string_view t, std::string_view key) {
  size_t i = 0;
  SkipSpace(t, i);
  if (i >= t.size() || t[i] != '{') return std::nullopt;
  ++i;
  std::optional<std::string_view> found;
  while (i < t.size()) {
    SkipSpace(t, i);
    if (i >= t.size() || t[i] == '}') break;
    if (t[i] == ',') {
      ++i;
      continue;
    }
    if (t[i] != '"') return found;  // not valid JSON after all
    const size_t key_start = i;
    SkipString(t, i);
    const json name = json::parse(t.substr(key_start, i - key_start), nullptr, false);  // decodes escapes
    SkipSpace(t, i);
    if (i >= t.size() || t[i] != ':') return found;
    ++i;
    SkipSpace(t, i);
    const size_t value_start = i;
    SkipValue(t, i);
    if (name.is_string() && name.get<std::string>() == key) found = t.substr(value_start, i - value_start);
  }
  return found;
}

// The progress token in `params._meta` as JSON text: a number as the client wrote it (one beyond
// 64 bits, or written with an exponent, would come back otherwise as a double's digits), a string
// re-encoded; empty when there is none, or it is neither.
std::string ProgressTokenJson(std::string_view body, const json& params) {
  const auto meta = params.find("_meta");
  if (meta == params.end() || !meta->is_object()) return "";
  const auto token = meta->find("progressToken");
  if (token == meta->end() || !(token->is_string() || token->is_number())) return "";
  if (token->is_number()) {
    std::optional<std::string_view> raw = RawMemberView(body, "params");
    if (raw) raw = RawMemberView(*raw, "_meta");
    if (raw) raw = RawMemberView(*raw, "progressToken");
    if (raw) return std::string(*raw);
  }
  return Dump(*token);
}

}  // namespace

std::optional<std::string> RawTopLevelMember(std::string_view t, std::string_view key) {
  std::optional<std::string_view> found = RawMemberView(t, key);
  return found ? std::optional<std::string>(std::string(*found)) : std::nullopt;
}

std::variant<JsonRpcMessage, JsonRpcError> ParseJsonRpc(std::string_view body) {
  int64_t values = 0;
  switch (CheckJsonText(body, kMaxMessageDepth, kMaxJsonValues, &values)) {
    case JsonTextFault::kTooDeep:
      return JsonRpcError{kParseError, "the message nests deeper than " + std::to_string(kMaxMessageDepth) + " levels"};
    case JsonTextFault::kTooManyValues:
      return JsonRpcError{kParseError, "the message holds more than " + std::to_string(kMaxJsonValues) +
                                           " JSON values (array elements and object members)"};
    case JsonTextFault::kNone:
      break;
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return JsonRpcError{kParseError, "the body is not valid JSON"};
  // The parser keeps the last of a repeated key, where a proxy in front may read the first (of
  // "name", "id", "method"): a message that means two things is refused, with no id (which one?).
  if (JsonValueCount(j) != values) return Invalid("a JSON-RPC message must not repeat a key within an object");
  if (j.is_array()) return Invalid("JSON-RPC batches are not supported (removed from MCP in 2025-06-18)");
  if (!j.is_object()) return Invalid("a JSON-RPC message must be an object");

  std::string id_json = "null";
  const auto id = j.find("id");
  const bool has_id = id != j.end();
  if (has_id && IsId(*id)) id_json = IdJson(body, *id);

  const auto version = j.find("jsonrpc");
  if (version == j.end() || !version->is_string() || version->get<std::string>() != "2.0") {
    return Invalid("\"jsonrpc\" must be \"2.0\"", id_json);
  }
  if (has_id && !IsId(*id)) return Invalid("\"id\" must be a string or a number");

  const auto method = j.find("method");
  if (method == j.end()) {
    if (has_id && (j.contains("result") || j.contains("error"))) {
      JsonRpcMessage m;
      m.kind = JsonRpcMessage::Kind::kResponse;
      m.id_json = id_json;
      return m;
    }
    return Invalid("a JSON-RPC request needs \"method\"", id_json);
  }
  if (!method->is_string()) return Invalid("\"method\" must be a string", id_json);
  if (j.contains("result") || j.contains("error")) {
    return Invalid("a JSON-RPC message is a request or a response, not both (\"method\" with \"result\" or \"error\")",
                   id_json);
  }

  JsonRpcMessage m;
  m.kind = has_id ? JsonRpcMessage::Kind::kRequest : JsonRpcMessage::Kind::kNotification;
  m.id_json = id_json;
  m.method = method->get<std::string>();
  if (const auto params = j.find("params"); params != j.end()) {
    if (!params->is_object() && !params->is_array()) return Invalid("\"params\" must be an object", id_json);
    if (params->is_object()) m.progress_token_json = ProgressTokenJson(body, *params);
    m.params = std::move(*params);  // moved, not copied: it holds a call's arguments
  }
  return m;
}

std::string ResultResponse(const std::string& id_json, const json& result) {
  return "{\"jsonrpc\":\"2.0\",\"id\":" + id_json + ",\"result\":" + Dump(result) + "}";
}

std::string ErrorResponse(const std::string& id_json, int code, std::string_view message, const json* data) {
  json error = {{"code", code}, {"message", std::string(message)}};
  if (data != nullptr) error["data"] = *data;
  return "{\"jsonrpc\":\"2.0\",\"id\":" + id_json + ",\"error\":" + Dump(error) + "}";
}

}  // namespace toolgate::api::mcp
