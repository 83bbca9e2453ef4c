#pragma once

// The one invocation path of the api layer (design §5): what `POST /v1/tools/{t}/invoke`, a replay
// and MCP `tools/call` all run once they have a validated InvokeRequest — admission on the store
// pool, the connector call on the event loop, the outcome recorded on the pool.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <string_view>

#include "api/gateway_context.h"
#include "toolgate/engine/tool_invoker.h"

namespace toolgate::api {

// Admit → connector Call → Complete for `request`. The answer is the engine's: its HTTP status and
// JSON body (§5 table), Retry-After, and `reached_tool` (the ledger has TOOL_INVOKED or
// REPLAY_DEDUPED). While the gateway drains, 503 shutting_down without running anything.
// REQUIRES: `request` passed the caller's validation (tool name, input JSON, idempotency key).
asio::awaitable<InvokeResponse> RunInvocation(GatewayContext& context, InvokeRequest request);

// A client's idempotency key (§5): 1..255 printable ASCII characters.
bool IsValidIdempotencyKey(std::string_view key);

}  // namespace toolgate::api
