#pragma once

// The one table from the engine's answer to an MCP `tools/call` answer (design §14, §17.7): a
// result (with `isError` for what toolgate decided) or a JSON-RPC error. Pure.

#include <string>

#include "nlohmann/json.hpp"
#include "toolgate/engine/tool_invoker.h"

namespace toolgate::api::mcp {

struct CallAnswer {
  bool is_rpc_error = false;  // true: `error_code` + `error_message` instead of `result`
  nlohmann::json result;      // CallToolResult: content, structuredContent, isError, _meta
  int error_code = 0;
  std::string error_message;
  nlohmann::json error_data;  // null: none
};

// SUCCEEDED → the downstream JSON as structuredContent (an object as is, anything else as
// {"result": …}) and as one text block; FAILED, DEFERRED, BLOCKED and toolgate's refusals
// (invalid_input, idempotency_key_reused, ...) → isError with one text block a model can act on and
// structuredContent {execution_id, outcome, reason, retry_after_ms (always for DEFERRED)}; an unknown
// tool → JSON-RPC -32602. Every result of an execution carries _meta["io.toolgate/execution_id"].
// `from_mcp_server`: the tool is an MCP connector's, whose own answers pass through (design §14): a
// SUCCEEDED result unchanged, a FAILED tool_error's isError result unchanged, a JSON-RPC error with
// its code and message and `data.execution_id` — each with the execution id added. The result is
// moved out of `response.details` (a caller done with the answer passes it with std::move).
CallAnswer ToCallAnswer(const std::string& tool_name, InvokeResult response, bool from_mcp_server = false);

}  // namespace toolgate::api::mcp
