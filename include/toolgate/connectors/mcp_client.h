#pragma once

// toolgate as an MCP client (design §14 "MCP connectors"): JSON-RPC 2.0 over a transport —
// Streamable HTTP (`kind = "mcp"`) or a child process's stdin/stdout (`kind = "mcp_stdio"`) — with
// the MCP lifecycle on top: `initialize` once per session (then `notifications/initialized`), and
// once more when a session went stale.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/domain/downstream_outcome.h"
#include "toolgate/net/http_client.h"

namespace toolgate::mcp {

// Protocol revisions toolgate speaks as a client, preferred first.
inline constexpr char kClientProtocolVersion[] = "2025-11-25";
inline constexpr char kFallbackProtocolVersion[] = "2025-06-18";

// What one JSON-RPC exchange gave.
struct RpcOutcome {
  // kResponse: the server answered. With `message` set: the JSON-RPC response (`result` or
  // `error`); without: an HTTP answer that held none (`http_status`, e.g. a 4xx or 5xx). Any other
  // kind is a transport failure, as for an HTTP connector (kConnectFailed, kTimeout, ...).
  DownstreamResult::Kind kind = DownstreamResult::Kind::kResponse;
  int http_status = 0;  // HTTP transport: the answer's status; stdio: 0
  std::optional<nlohmann::json> message;
  std::optional<int64_t> retry_after_s;
  std::string error;  // for the operator; never a secret
  // HTTP: a request that carried an Mcp-Session-Id was answered 404 or 400 (the server forgot the
  // session, or never had it): initialize again.
  bool stale_session = false;
};

// Gets the notifications the server sends about one request, whole, on the transport's event loop:
// each `notifications/progress` naming the request's `params._meta.progressToken` and, over
// Streamable HTTP, each `notifications/message` (a log message) on the request's own stream (a stdio
// server's log messages name no request: they are dropped). True when it took one on (relayed: it
// then does not count toward max_response_bytes). Empty: dropped.
using NotificationSink = std::function<bool(nlohmann::json message)>;

// One way of exchanging JSON-RPC messages with a server. Not thread-safe: every call runs on one
// single-threaded executor (the gateway's event loop).
class McpTransport {
 public:
  virtual ~McpTransport() = default;
  // Makes the server reachable: stdio (re)starts the child when it is not running (unless its
  // restart backoff has not passed: kConnectFailed). HTTP: nothing.
  virtual boost::asio::awaitable<RpcOutcome> Connect(std::chrono::milliseconds timeout) = 0;
  // Sends a request (it has an `id`) and waits at most `timeout` for the response with that id;
  // other responses the server sends meanwhile are skipped, notifications dropped but for the
  // request's own (to `notify`, see NotificationSink), and requests of the
  // server's own answered (never relayed; see MakeHttpTransport, MakeStdioTransport). `text` is the
  // message as sent, on one line; `request` what the transport reads of it (id, method,
  // params._meta.progressToken), which may leave out members `text` has (a call's arguments, sent
  // as the caller's text without being parsed again: see McpClient::Call).
  virtual boost::asio::awaitable<RpcOutcome> Request(const nlohmann::json& request, std::string text,
                                                     std::chrono::milliseconds timeout, NotificationSink notify) = 0;
  // Sends a notification (no id); no answer is awaited beyond the HTTP status.
  virtual boost::asio::awaitable<RpcOutcome> Notify(const nlohmann::json& notification,
                                                    std::chrono::milliseconds timeout) = 0;
  // Changes whenever the server must be initialized again: a new child process, a dropped session.
  virtual uint64_t generation() const = 0;
  // `initialize` succeeded under `protocol_version` (HTTP: sent as MCP-Protocol-Version from now).
  virtual void Initialized(const std::string& protocol_version) = 0;
  // Forgets the session (HTTP: the Mcp-Session-Id); bumps the generation.
  virtual void DropSession() = 0;
  // Ends the transport's background work (stdio: stops the child). Idempotent.
  virtual void Stop() {}
  // A transport to the same server for another single-threaded event loop, with a session of its own
  // and nothing shared with this one but what is thread-safe (HTTP: the connection pool, the TLS
  // context and the credentials, so one OAuth2 token serves them all); null when the server can only
  // be reached through this one (stdio: the child's pipes belong to this transport's loop).
  virtual std::unique_ptr<McpTransport> ForAnotherLoop() const { return nullptr; }
  // Called (on the event loop) when the server sends notifications/tools/list_changed.
  void OnToolsChanged(std::function<void()> handler) { tools_changed_ = std::move(handler); }

 protected:
  void ToolsChanged() {
    if (tools_changed_) tools_changed_();
  }

 private:
  std::function<void()> tools_changed_;
};

// Streamable HTTP: POST <url> with `Accept: application/json, text/event-stream`, the connector's
// credentials (a 401 to a fetched OAuth2 token: one re-send with a fresh one), the Mcp-Session-Id the
// server gave in answer to `initialize`, and MCP-Protocol-Version once initialized. A JSON answer
// is read whole; an SSE stream (net::EventStreamParser) event by event as it arrives, until the
// event holding the response with the request's id — the rest is not read and that connection is
// closed, not pooled. On the way, the server's notifications are dropped (tools/list_changed calls
// the OnToolsChanged handler) and its requests are answered by a POST under the request's session —
// `ping` with an empty result, anything else (sampling/createMessage, elicitation/create,
// roots/list, ...) with JSON-RPC error -32601, as toolgate declares no client capabilities. More
// than 16 such requests during one request end it kResponseInvalid (the server misbehaves). Every
// answer counts against max_response_bytes and the request's timeout. `tls` is the connector's
// context for an https:// url.
std::unique_ptr<McpTransport> MakeHttpTransport(const ConnectorConfig& config, net::ConnectionPool& pool,
                                                const Clock& clock, std::shared_ptr<const net::TlsClientContext> tls);

// stdio: runs `config.command` as a child process (the environment: PATH, HOME, USER, LOGNAME,
// SHELL, TERM, LANG, TZ of toolgate's own, plus `config.env`; nothing else of toolgate's, so no
// secret leaks into it; stderr shared with toolgate's; killed when toolgate dies), writes one JSON
// message per line to its stdin and matches the lines of its stdout to requests by id, so any number
// of requests may be in flight. When the child exits (or closes stdout), every request in flight
// ends kConnectionLost, the child is reaped, and the next Connect starts a new one after a backoff
// (200 ms doubling to 30 s; back to 200 ms once a child lived 60 s). Requests the server sends are
// answered -32601. A line longer than max_response_bytes (an answer too big, or bytes without end
// and no newline: never more than that is held), or a request of the server's while more than
// max_response_bytes wait to be written to its stdin (it asks without reading the answers), ends
// the child: every request in flight ends kResponseInvalid (FAILED downstream_error).
std::unique_ptr<McpTransport> MakeStdioTransport(const ConnectorConfig& config, const Clock& clock,
                                                 boost::asio::any_io_executor executor);

// `message[key]` when `message` is an object holding a string there, else "": a server's message read
// without trusting its types (nlohmann's value() throws when the member is of another type).
std::string StringMember(const nlohmann::json& message, const char* key);
// A request's `params._meta.progressToken` (a string or an integer), or null.
nlohmann::json ProgressTokenOf(const nlohmann::json& request);
// `message` is a `notifications/progress` whose `params` (an object) name `token`.
bool IsProgressFor(const nlohmann::json& message, const nlohmann::json& token);

// The MCP lifecycle over a transport. Request ids are unique per client (one per session). Not
// thread-safe: one single-threaded executor, as the transport.
class McpClient {
 public:
  struct ServerInfo {
    std::string name;
    std::string version;
    std::string protocol_version;
  };

  McpClient(std::string connector_id, std::unique_ptr<McpTransport> transport, const Clock& clock);
  ~McpClient();

  // `method` with `params` (null: none), at most `timeout` in all. Initializes first when the
  // session needs it (one `initialize` at a time: concurrent callers wait for it and share its
  // result); when the answer says the session went stale, initializes once more and re-sends once.
  // A failed `initialize` is the call's outcome (a transport failure, an HTTP status, or a JSON-RPC
  // error as kResponse with `message`).
  // (By value: a coroutine outlives its caller's temporaries.)
  // `notify` gets the request's own notifications (see NotificationSink). `arguments`, when not empty:
  // the text of a JSON object on one line, sent as `params.arguments` as it is (a tool's input may be
  // a megabyte: parsed into a tree it would be held many times its size while the call runs); it
  // must outlive the call.
  boost::asio::awaitable<RpcOutcome> Call(std::string method, nlohmann::json params, std::chrono::milliseconds timeout,
                                          NotificationSink notify = {}, std::string_view arguments = {});
  // The transport generation the session was last initialized under (see McpTransport::generation).
  std::optional<uint64_t> session() const { return initialized_generation_; }
  McpTransport& transport() { return *transport_; }
  // What the server said about itself in its last `initialize` answer.
  std::optional<ServerInfo> server_info() const { return server_info_; }
  void Stop();

 private:
  boost::asio::awaitable<RpcOutcome> EnsureInitialized(std::chrono::steady_clock::time_point deadline);
  boost::asio::awaitable<RpcOutcome> Initialize(std::chrono::steady_clock::time_point deadline);
  nlohmann::json NewRequest(const std::string& method, const nlohmann::json& params);
  std::chrono::milliseconds Left(std::chrono::steady_clock::time_point deadline) const;

  struct InitFlight;
  const std::string connector_id_;
  std::unique_ptr<McpTransport> transport_;
  const Clock& clock_;
  int64_t next_id_ = 1;
  std::optional<uint64_t> initialized_generation_;
  std::shared_ptr<InitFlight> init_;  // the initialize under way, if any
  std::optional<ServerInfo> server_info_;
};

}  // namespace toolgate::mcp
