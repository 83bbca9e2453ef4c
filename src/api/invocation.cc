#include "api/invocation.h"

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <atomic>
#include <memory>

#include "api/api_support.h"

namespace toolgate::api {

asio::awaitable<InvokeResponse> RunInvocation(GatewayContext& g, InvokeRequest ir) {
  if (g.draining) {
    co_return InvokeResponse{
        503, ErrorJson("shutting_down", "toolgate is shutting down; retry on another instance"), {}};
  }
  ++g.in_flight;
  struct Done {
    std::atomic<int>& n;
    ~Done() { --n; }
  } done{g.in_flight};
  auto admit = [&g, &ir] { return g.engine.invoker().Admit(ir); };
  auto admitted = co_await RunBlocking(g.pool, admit);
  if (auto* answer = std::get_if<InvokeResponse>(&admitted)) co_return std::move(*answer);
  std::unique_ptr<ToolInvoker::Ticket> ticket = std::move(std::get<std::unique_ptr<ToolInvoker::Ticket>>(admitted));
  const DownstreamRequest& ds = ToolInvoker::Downstream(*ticket);
  const std::string connector_id = ds.connector->id;
  auto call_op = g.connectors.at(connector_id)->Call(ds);
  DownstreamResult result = co_await std::move(call_op);
  if (result.kind != DownstreamResult::Kind::kLocalResource) {  // this host's trouble says nothing of the connector
    g.recent.Add(connector_id, g.clock.now_epoch_ms(), result.latency_ms, IsDownstreamFailure(result));
  }
  // Named, with only reference captures: g++ 12 mishandles non-trivial temporaries inside co_await.
  auto complete = [&g, &ticket, &result] { return g.engine.invoker().Complete(std::move(ticket), result); };
  InvokeResponse answer = co_await RunBlocking(g.pool, complete);
  answer.reached_tool = true;  // TOOL_INVOKED was durable before the call
  co_return answer;
}

bool IsValidIdempotencyKey(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace toolgate::api
