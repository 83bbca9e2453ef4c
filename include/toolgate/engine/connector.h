#pragma once

// The engine's port to downstreams (design §2 layer 5, §13): how a tool call reaches the system that
// serves it. Each connector kind is one class in src/connectors/ behind this interface; the engine
// and the API never know which kind they talk to.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "toolgate/domain/downstream_outcome.h"
#include "toolgate/services/circuit_breaker_service.h"

namespace toolgate {

struct ConnectorConfig;

// A caller that asked to hear from the downstream while its call runs (an MCP client, design §14):
// - with `token_json` (an MCP client's `_meta.progressToken`, JSON: a string or a number), the
//   downstream's `notifications/progress` about the call, with that token in place of the one
//   toolgate sent;
// - with `min_log_severity` ≥ 0 (the client's `logging/setLevel`: 0 debug … 7 emergency, see
//   LogSeverity), the `notifications/message` the downstream sends about the call at that level or
//   above.
// Each goes to `relay` as the JSON text of a whole JSON-RPC notification, with whether it is
// progress (a later one supersedes it; a log message is never superseded). `relay` may be called
// on any event loop, and after the call ended (it must be thread-safe, and outlive nothing it
// captures by reference).
struct NotificationRelay {
  std::string token_json;     // empty: no progress
  int min_log_severity = -1;  // -1: no log messages
  std::function<void(std::string notification_json, bool progress)> relay;
};

// An MCP logging level's severity (RFC 5424's order: "debug" 0 … "emergency" 7), or -1 for a name
// that is not one.
inline int LogSeverity(std::string_view level) {
  static constexpr std::string_view kLevels[] = {"debug", "info",     "notice", "warning",
                                                 "error", "critical", "alert",  "emergency"};
  for (int i = 0; i < 8; ++i) {
    if (kLevels[i] == level) return i;
  }
  return -1;
}

// The downstream call of an admitted invocation.
struct DownstreamRequest {
  const ConnectorConfig* connector = nullptr;
  std::string tool_name;
  std::string method = "POST";
  std::string target;           // path (with the base URL's prefix) and query string
  std::string body;             // JSON; empty for GET and DELETE
  bool idempotent = false;      // safe to retry after a timeout, a lost connection or a 502/503/504
  std::string idempotency_key;  // the intent key, the same on every attempt and replay
  std::string execution_id;
  std::string tenant_id;
  std::shared_ptr<const NotificationRelay> notifications;  // null: nobody listens (only MCP connectors report)
};

// The health check an operator's breaker close runs first ("never close blind").
struct HealthReport {
  bool healthy = false;
  std::string target;  // what was checked (e.g. the health URL), for the operator
  int status = 0;      // the answer's status, 0 when none came
  std::string error;   // why there was no answer
};

// What a connector's own traffic — an MCP server's session set-up, `tools/list` and `ping`, sent
// outside any call — does to its breaker (design §17.7): it takes no slot and is never the
// half-open probe; it goes only while the breaker lets calls through without one (CLOSED, not
// throttled), and its outcome counts like a call's (ClassifyDownstream: a transport failure, a 5xx,
// a timeout or a server-side JSON-RPC error is a failure; an answer, a 4xx or a caller-side
// JSON-RPC error is not). Blocking (store work): run off the event loop. Thread-safe.
class BackgroundTraffic {
 public:
  virtual ~BackgroundTraffic() = default;
  // The permit to send under, or nullopt: not now (the breaker is not CLOSED, the connector is
  // throttled, or the store cannot say).
  virtual std::optional<CircuitBreakerService::Permit> PermitBackground(const ConnectorConfig& connector) = 0;
  // What the exchange sent under `permit` gave (its latency counts for slow calls).
  virtual void RecordBackground(const ConnectorConfig& connector, const CircuitBreakerService::Permit& permit,
                                const DownstreamResult& result) = 0;
};

// Thread-safe: calls may run concurrently on the event loop. Never throws; every failure is a
// DownstreamResult kind. The connector's timeout_ms bounds each call, every attempt, backoff and
// credential fetch included (design §13, §17.10).
class Connector {
 public:
  virtual ~Connector() = default;
  virtual boost::asio::awaitable<DownstreamResult> Call(const DownstreamRequest& request) = 0;
  virtual boost::asio::awaitable<HealthReport> CheckHealth() = 0;
  // Background work of the connector (an MCP connector refreshes its tool list and keeps its
  // server process), started on the gateway's event loop once it runs, and ended by Stop() there.
  virtual void Start(boost::asio::any_io_executor /*event_loop*/) {}
  virtual void Stop() {}
};

// One Connector per configured connector id.
using Connectors = std::map<std::string, std::unique_ptr<Connector>, std::less<>>;

}  // namespace toolgate
