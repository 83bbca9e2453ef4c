#pragma once

// The HTTP vocabulary of the api layer, free of Beast types so that only two translation units
// compile Beast (it is slow to build).

#include <utility>  // before Asio: g++ 12 with Boost 1.74 needs std::exchange declared first

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "toolgate/config.h"
#include "toolgate/net/http_client.h"

namespace toolgate::api {

namespace asio = boost::asio;

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ...
  std::string target;                                        // as sent: path and query
  std::string path;                                          // percent-decoded path
  std::multimap<std::string, std::string> query;             // percent-decoded
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
  unsigned version = 11;  // HTTP/1.1; 10: HTTP/1.0, which knows no chunked body (no streamed answer)
  std::string Header(std::string_view name) const;  // "" when absent
};

// A response body written as it is produced, in chunks (an MCP call's event stream while the call
// runs). Used on the connection's event loop only.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  // The next piece of the body, or nullopt once the body is complete. The server asks again only
  // after the piece before was written; a client gone, it stops asking (whatever produces the
  // pieces must not depend on being asked).
  virtual asio::awaitable<std::optional<std::string>> Next() = 0;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string tenant_id;  // for the access log only (never sent): the caller's tenant when known
  // Set: `body` is ignored, and the body is what `stream` produces, sent chunked (each piece within
  // the write timeout; no timeout between pieces: the producer bounds its own time). Never to an
  // HTTP/1.0 request (no chunked coding there): the server answers 500 instead.
  std::shared_ptr<ResponseStream> stream;
  // Never sent: the body is an execution's outcome (ToHttp of an answer that is not a refusal), so
  // its status, a 403 BLOCKED among them, is what became of the call, not a refusal of the request.
  bool execution_outcome = false;
};

using Handler = std::function<asio::awaitable<HttpResponse>(HttpRequest)>;

// Bytes held for large messages, bounded for the whole process. Two budgets: responses that
// clients have not taken yet (a client that does not read keeps its response in memory, toolgate's
// or its socket's send queue in the kernel, until the write timeout, so many slow readers of large
// responses would otherwise hold their sum), and the bodies of requests being served (a call in
// flight holds its input until the downstream answers). Thread-safe (one atomic counter).
class ByteBudget {
 public:
  explicit ByteBudget(int64_t capacity_bytes) : capacity_(capacity_bytes) {}
  // Takes `bytes` from the budget: true, or false (taking nothing) when fewer than `bytes` are left.
  bool TryReserve(int64_t bytes);
  // Gives back bytes a successful TryReserve took.
  void Release(int64_t bytes);
  int64_t capacity() const { return capacity_; }
  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }

 private:
  const int64_t capacity_;
  std::atomic<int64_t> in_use_{0};
};

// Responses up to this size are written without asking the budget: they are what most routes
// answer, and the connection cap bounds their sum.
inline constexpr int64_t kBudgetedResponseBytes = 64 * 1024;
// The same for request bodies: smaller ones are bounded by the connection cap times 64 KiB.
inline constexpr int64_t kBudgetedRequestBytes = 64 * 1024;

struct ServerLimits {
  int64_t max_body_bytes = 1 << 20;
  int max_header_bytes = 16 * 1024;
  std::chrono::milliseconds request_timeout{30'000};  // reading one request, header and body
  std::chrono::milliseconds write_timeout{10'000};    // writing one response; then the connection closes
  // Open connections at most; a client over it is answered 503 too_many_connections and closed.
  int max_connections = 1024;
  // Shared by every listener of the process; null: responses are not budgeted.
  std::shared_ptr<ByteBudget> response_budget;
  // Bodies over kBudgetedRequestBytes take their size from it while their request is served (until
  // the handler has answered; a streamed answer, until it ends): one it cannot hold is answered 503
  // gateway_overloaded before the handler sees it. Shared by every listener; null: not budgeted.
  std::shared_ptr<ByteBudget> request_budget;
  // Told the status of each answer the server gives without the handler's (the refusals below,
  // 503 too_many_connections, 500 when the handler threw), for the metrics; on a connection's loop.
  std::function<void(int status)> own_answer;
};

// Accepts connections on one address and serves each with a coroutine: keep-alive, limits
// (413 for a large body, 431 for large headers, 400 for a malformed request — all JSON), a read
// timeout and a write timeout. Handlers must not block.
//
// Event loops: the listener accepts on `io`. Each connection is served on one of `connection_loops`
// (taken in turn; empty: `io`) from its first byte to its close, so a connection's stream, timers and
// coroutine never run on two threads — no strand is needed as long as each loop's io_context is run
// by one thread. The handler therefore runs concurrently on every loop's thread and must be
// thread-safe when there is more than one.
//
// What it refuses before a handler runs (RFC 9112), each as JSON with `Connection: close`:
//   400 invalid_framing      a Transfer-Encoding whose last coding is not chunked, Transfer-Encoding
//                            together with Content-Length, Transfer-Encoding in HTTP/1.0, a
//                            Content-Length that is not one number
//   501 unsupported_transfer_coding  codings other than chunked before the final chunked
//   400 missing_host         an HTTP/1.1 request without Host
//   400 duplicate_header     more than one Host, Authorization, Content-Length, Origin,
//                            MCP-Protocol-Version, Mcp-Session-Id, Mcp-Method or Mcp-Name
//   400 invalid_path         %2F, %2f or %00 in the path (an encoded slash must not route)
// `Expect: 100-continue` is answered `100 Continue` once the header has passed these checks and
// the body limit (413 otherwise, without the 100).
//
// Connections: at most `max_connections` open; beyond it a client gets 503 too_many_connections
// (`Retry-After: 1`) at once and is closed. Accept errors (EMFILE, ENFILE, ENOBUFS, ...) are retried
// after a back-off (10 ms doubling to 1 s, reset by a success), logged at most once a second.
// Slow readers: a response must be written within `write_timeout`, or the connection is closed. A
// response larger than kBudgetedResponseBytes takes its size from `response_budget` and keeps it
// until the client has acknowledged every byte (a completed write only means the kernel took it);
// not delivered within `write_timeout`, the connection is reset, dropping what the kernel still
// holds. When the budget has no room, the client gets 503 gateway_overloaded (`Retry-After: 1`).
class HttpServer {
 public:
  HttpServer(asio::io_context& io, ServerLimits limits, Handler handler,
             std::vector<asio::io_context*> connection_loops = {});
  ~HttpServer();
  // Binds and starts accepting; the bound port (useful with port 0). Throws boost::system_error
  // when it cannot bind.
  int Start(const HostPort& address);
  // Stops accepting new connections; open connections finish their current request.
  void StopAccepting();
  // Requests read whole whose answer is not yet delivered (written, and for a budgeted answer
  // acknowledged) or given up: what a stop waits for before it ends the event loops.
  int RequestsInProgress() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// The HTTP client lives in the net library (downstreams, webhooks, the CLI); the api layer uses it
// under its old names.
using net::AsyncHttpCall;
using net::ClientRequest;
using net::ClientResult;
using net::ConnectionPool;
using net::HttpCall;
using net::IsLocalResourceError;

// %XX escapes decoded; '+' becomes a space only when `plus_is_space` (a query's form encoding, not a path).
std::string PercentDecode(std::string_view s, bool plus_is_space);
std::string PercentEncode(std::string_view s);

}  // namespace toolgate::api
