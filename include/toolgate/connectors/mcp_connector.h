#pragma once

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/connectors/mcp_client.h"
#include "toolgate/engine/connector.h"
#include "toolgate/engine/mcp_tool_registry.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// What an MCP connector needs beyond an HTTP connector's.
struct McpConnectorDeps {
  McpToolRegistry& tools;   // where the server's tool list is published
  store::ItemStore& store;  // where the last list is kept for every instance (design §17.7)
  // Runs blocking store work off the event loop (the gateway's store pool).
  std::function<void(std::function<void()>)> run_blocking;
  // The event loop the connector's calls run on (a stdio child's pipes are bound to it).
  boost::asio::any_io_executor event_loop;
  // The breaker's say over the tool-list refreshes and the health check's ping (design §17.7),
  // run with run_blocking. Null: they go unchecked and count for nothing (tests of the connector alone).
  BackgroundTraffic* background = nullptr;
};

// `kind = "mcp"` and `kind = "mcp_stdio"` (design §14): a tool call is the server's `tools/call`
// with `{name: <server's name>, arguments: <input>, _meta: {"io.toolgate/idempotency_key",
// "io.toolgate/execution_id"}}`. A result is kResponse 200 with the result as body; a result marked
// `isError: true` kToolError; a JSON-RPC error kRpcError; an HTTP status without a JSON-RPC answer
// kResponse with that status; transport failures as for an HTTP connector. Only a failure to connect
// is retried (nothing was sent), within timeout_ms and [retry] max_attempts.
//
// The tool list (`tools/list`, every page) is fetched when the connector starts and again every
// tools_ttl_s (every few seconds, with backoff, while the server cannot be reached), published to
// the McpToolRegistry as `<tool_prefix><name>` and saved in the store with what the server said
// about itself (McpServerRecord); at creation the saved list is loaded, so the last known list is
// served while the server is down. A refresh (with the session set-up it needs) takes no slot; it
// runs only while the breaker is CLOSED and its outcome counts toward the breaker like a call's
// (design §17.7, BackgroundTraffic): a dead server's refreshes open it, and while it is open the
// server is left alone until a call's probe closes it. The connector's own work (the tool list, the
// health check) runs on one single-threaded event loop (`deps.event_loop`, the gateway's main loop).
// A call is served on the loop it was made on: `kind = "mcp"` keeps a client (a session with the
// server) for each loop a call came from, made on that loop's first call, so a call never hops
// between threads; `kind = "mcp_stdio"` carries a call made on another loop over to the main loop
// (the child's pipes belong to it) and resumes its caller on the caller's own loop.
class McpConnector final : public Connector {
 public:
  // Loads the saved tool list (blocking: call at start). InvalidArgument when the TLS files cannot
  // be used.
  static absl::StatusOr<std::unique_ptr<McpConnector>> Create(const ConnectorConfig& config, net::ConnectionPool& pool,
                                                              const Clock& clock, McpConnectorDeps deps);
  McpConnector(const ConnectorConfig& config, const Clock& clock, McpConnectorDeps deps,
               std::unique_ptr<mcp::McpTransport> transport);
  ~McpConnector() override;

  boost::asio::awaitable<DownstreamResult> Call(const DownstreamRequest& request) override;
  // A JSON-RPC `ping` (initializing first when needed), at most 5 s: healthy when it is answered.
  boost::asio::awaitable<HealthReport> CheckHealth() override;
  void Start(boost::asio::any_io_executor event_loop) override;
  void Stop() override;

  // Fetches the whole tool list now and publishes it. kUnavailable (with the reason) when the
  // server could not give it, kFailedPrecondition when the breaker does not let it go now; the last
  // list stays published either way.
  boost::asio::awaitable<absl::Status> RefreshTools();
  std::optional<mcp::McpClient::ServerInfo> server_info() const { return client_.server_info(); }

 private:
  // A call through `client`, on the client's loop.
  boost::asio::awaitable<DownstreamResult> CallWith(mcp::McpClient& client, const DownstreamRequest& request);
  // CheckHealth, on deps_.event_loop.
  boost::asio::awaitable<HealthReport> CheckHealthOnLoop();
  // The client that serves `tenant`'s call made on `caller`: over HTTP, the tenant's own on that loop
  // (a session of its own: what a server keeps per session never crosses tenants); over stdio, the
  // main one on the main loop; the main one when there is no loop. Null when the call must be
  // carried over to the main loop (another kind of executor, or stdio on another loop). Kept alive
  // by the caller for as long as the call runs.
  std::shared_ptr<mcp::McpClient> ClientFor(const boost::asio::any_io_executor& caller, const std::string& tenant);
  // The client of `tenant` on the event loop `loop`, made on first use (HTTP only).
  std::shared_ptr<mcp::McpClient> TenantClient(const boost::asio::execution_context& loop, const std::string& tenant);
  // Publishes a list (Tool objects as the server gave them); false when it is not a list.
  bool Publish(const nlohmann::json& tools);
  // The breaker's permit for background traffic (off the event loop), or nullopt: not now. Without
  // deps_.background: an empty permit (unchecked).
  boost::asio::awaitable<std::optional<CircuitBreakerService::Permit>> BackgroundPermit();
  // Tells the breaker how a background exchange went (off the event loop; not awaited).
  void RecordBackground(const CircuitBreakerService::Permit& permit, DownstreamResult result);

  struct Shared;  // what the refresh loop shares with the connector
  // Refreshes the tool list every tools_ttl_s (sooner, with backoff, after a failure) until stopped.
  static boost::asio::awaitable<void> RefreshForever(McpConnector* self, std::shared_ptr<Shared> shared);
  const ConnectorConfig& config_;
  const Clock& clock_;
  McpConnectorDeps deps_;
  mcp::McpClient client_;  // the main loop's
  std::shared_ptr<Shared> shared_;
  std::string last_tools_json_;  // the last list fetched (RefreshTools, on the main loop alone)
  struct LoopClients;            // the tenants' clients on every loop (HTTP)
  std::unique_ptr<LoopClients> loop_clients_;
};

}  // namespace toolgate
