#pragma once

// The HTTP/1.1 client of toolgate (Beast over Asio, coroutines): downstream calls through a pool of
// kept-alive connections, webhooks, health checks, the CLI. Free of Beast types in its interface.

#include <utility>  // before Asio: g++ 12 with Boost 1.74 needs std::exchange declared first

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "toolgate/domain/host_port.h"

namespace toolgate::net {

namespace asio = boost::asio;

// An HTTP/1.1 client call: one connection, one request, with a deadline over connect, send and
// receive. `connected` and `sent` tell how far it got when it failed.
struct ClientResult {
  bool ok = false;
  bool timed_out = false;
  bool connected = false;
  bool sent = false;
  bool too_large = false;
  // The failure is this host's, not the downstream's: opening or connecting the socket failed for
  // want of descriptors, buffers or memory (IsLocalResourceError). Nothing was sent; `connected`
  // is false.
  bool local_resource_error = false;
  std::string error;
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
};

struct ClientRequest {
  HostPort address;
  std::string method = "GET";
  std::string target = "/";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{5000};
  int64_t max_response_bytes = 4 << 20;
};

// Idle keep-alive connections to downstreams, per address. A connection idle longer than
// `max_idle` is closed, not reused. Thread-safe.
class ConnectionPool {
 public:
  explicit ConnectionPool(size_t max_idle_per_address = 64, std::chrono::seconds max_idle = std::chrono::seconds(10));
  ~ConnectionPool();
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// With a pool, the call reuses an idle connection when there is one and returns the connection
// afterwards if both sides keep it alive. A request that fails on a reused connection before any
// response byte arrives (the downstream had closed it) is sent again once on a new connection:
// every downstream call carries an Idempotency-Key, so the downstream can tell a repeat.
asio::awaitable<ClientResult> AsyncHttpCall(ClientRequest request, ConnectionPool* pool = nullptr);
// Runs AsyncHttpCall on a private io_context (CLI, tests).
ClientResult HttpCall(ClientRequest request);

// EMFILE, ENFILE, ENOBUFS or ENOMEM (asio's no_descriptors, no_buffer_space, no_memory): errors
// that say this host ran short, whatever the peer would have answered.
bool IsLocalResourceError(const boost::system::error_code& ec);

}  // namespace toolgate::net
