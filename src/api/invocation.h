#pragma once

// The one invocation path of the api layer (design §5): what `POST /v1/tools/{t}/invoke`, a replay
// and MCP `tools/call` all run once they have a validated InvokeRequest — admission on the store
// pool, the connector call on the event loop, the outcome recorded on the pool.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <string_view>

#include "api/gateway_context.h"
#include "nlohmann/json.hpp"
#include "toolgate/engine/tool_invoker.h"

namespace toolgate::api {

// Admit → connector Call → Complete for `request`. The answer is the engine's typed result (outcome
// and reason, or a refusal) with `reached_tool` (the ledger has TOOL_INVOKED or REPLAY_DEDUPED).
// While the gateway drains, refused shutting_down without running anything.
// REQUIRES: `request` passed the caller's validation (tool name, input JSON, idempotency key).
asio::awaitable<InvokeResult> RunInvocation(GatewayContext& context, InvokeRequest request);

// The part after admission: the connector call on the event loop, then Complete on the pool. Shared
// by RunInvocation and the queue's dispatchers (a claimed item's ticket). The caller counts itself
// in `context.in_flight`.
asio::awaitable<InvokeResult> RunAdmitted(GatewayContext& context, std::unique_ptr<ToolInvoker::Ticket> ticket);

// The one table from an engine answer to HTTP (design §5, §15, S12), used by the public invoke and
// replay routes, the admin replay and MCP tools/call:
//   - an execution's answer: InvocationHttpStatus(outcome, reason) — SUCCEEDED 200; FAILED 502, 504
//     timeout, 503 store_unavailable; DEFERRED 503; BLOCKED 403; IN_PROGRESS, QUEUED, RUNNING 202;
//     EXPIRED 410 — with the body {execution_id, outcome, reason (when there is one), details...};
//   - a refusal: InvokeErrorHttpStatus(error) with the body {error, message};
//   - either way `Retry-After` in whole seconds when the result carries retry_after_s.
int InvokeErrorHttpStatus(InvokeError error);
int InvocationHttpStatus(const InvokeResult& answer);
nlohmann::json InvocationBody(const InvokeResult& answer);
HttpResponse ToHttp(const InvokeResult& answer);
// The same for an answer no longer needed: its details (a call's result among them) are moved into
// the body, not copied.
HttpResponse ToHttp(InvokeResult&& answer);

// A queued call (§15): ToolInvoker::Enqueue on the pool. Refused shutting_down while draining.
asio::awaitable<InvokeResult> RunEnqueue(GatewayContext& context, InvokeRequest request, QueueOrder order);

// What a request body (and `Prefer: respond-async`) asks of the queue (§15).
struct QueueRequest {
  bool queued = false;                 // "mode": "queued", or Prefer: respond-async
  QueueOrder order;                    // deadline and bound, for a queued call
  std::optional<QueueOrder> on_defer;  // "on_defer": "queue"
};
// Reads `mode` ("sync" | "queued"), `on_defer` ("defer" | "queue"), `deadline_s` (1..[queue]
// max_deadline_s; default [queue] default_deadline_s) and `callback_url` (CheckCallbackUrl; only
// with a queued call or on_defer queue). kInvalidArgument (400 invalid_request) naming the field.
absl::StatusOr<QueueRequest> ReadQueueRequest(const nlohmann::json& body, bool prefer_async, const QueueConfig& config);
// A callback URL (§15): http[s]://host[:port][/path], no credentials, query or fragment, at most
// 2048 characters, starting with a prefix of [queue] callback_allowlist that ends at a '/' boundary.
// kInvalidArgument saying why.
absl::Status CheckCallbackUrl(const std::string& url, const QueueConfig& config);
// True when a Prefer header value holds the respond-async preference (RFC 7240).
bool PrefersAsync(std::string_view prefer);

// A client's idempotency key (§5): 1..255 printable ASCII characters.
bool IsValidIdempotencyKey(std::string_view key);

}  // namespace toolgate::api
