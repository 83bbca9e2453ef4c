#pragma once

// The HTTP/1.1 client of toolgate (Beast over Asio, coroutines): downstream calls through a pool of
// kept-alive connections, plain or TLS (HTTPS), webhooks, health checks, the CLI. Free of Beast
// types in its interface.

#include <utility>  // before Asio: g++ 12 with Boost 1.74 needs std::exchange declared first

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "toolgate/domain/host_port.h"
#include "toolgate/net/tls_client_context.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace toolgate::net {

namespace asio = boost::asio;

// An HTTP/1.1 client call: one connection, one request, with a deadline over connect, TLS
// handshake, send and receive. `connected` and `sent` tell how far it got when it failed.
struct ClientResult {
  bool ok = false;
  bool timed_out = false;
  // The TCP connection was established (for TLS: whether or not the handshake then succeeded).
  bool connected = false;
  // Request bytes may have reached the downstream's HTTP layer: it may have acted on the request.
  bool sent = false;
  bool too_large = false;
  // TLS only: the TLS layer refused the connection before any request reached the downstream —
  // the server's certificate failed verification (untrusted issuer, expired, not for
  // `server_name`), the peer sent a TLS alert or closed the connection during the handshake (for
  // example it requires a client certificate), or it does not speak TLS at all. Always with
  // `connected` true, `sent` false, `ok` false and `timed_out` false (a handshake cut off by the
  // deadline is `timed_out`, not this). `error` says what, from OpenSSL: "TLS handshake:
  // certificate verify failed: unable to get local issuer certificate". Under TLS 1.3 a server
  // rejects a client certificate only after the client finished its side of the handshake; that
  // rejection arrives as the server's alert in place of the response and is reported here too:
  // the server's TLS layer refused before reading the request.
  bool tls_error = false;
  // The failure is this host's, not the downstream's: opening or connecting the socket failed for
  // want of descriptors, buffers or memory (IsLocalResourceError). Nothing was sent; `connected`
  // is false.
  bool local_resource_error = false;
  std::string error;
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
  // The body went to ClientRequest::on_body_data, not into `body` (which stays empty).
  bool body_streamed = false;
  // on_body_data ended the read before the body's end: the rest was never read and the connection
  // was closed. `ok` stays true: the response arrived, the caller chose to stop.
  bool stopped_early = false;
};

struct ClientRequest {
  HostPort address;
  std::string method = "GET";
  std::string target = "/";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{5000};
  int64_t max_response_bytes = 4 << 20;
  // HTTPS when set: the connection is TLS made with this context (the connector's, see
  // MakeTlsClientContext); null: plain HTTP. The request shares ownership until the call ends.
  std::shared_ptr<const TlsClientContext> tls;
  // TLS only: the name the server's certificate must be valid for, and the SNI sent (SNI is left
  // out for an IP address, as RFC 6066 wants; the certificate must then hold it as a SAN IP
  // entry). Empty: `address.host`. Set it when connecting to an address other than the name in
  // the URL.
  std::string server_name;
  // Reading the body as it arrives (a server-sent event stream). When `stream_body` is set and
  // answers true for the response's status and headers (names lowercased), the body is not gathered
  // into ClientResult::body: each piece goes to `on_body_data` (required then) as it arrives, with
  // any chunked coding removed, and the call ends when the body ends (`ok`) or when `on_body_data`
  // answers false (`ok` and `stopped_early`). `max_response_bytes` (`max_streamed_bytes` when set)
  // and `timeout` hold over the whole body, the time spent inside `on_body_data` included; a failure
  // part-way is reported as without streaming (`timed_out`, `too_large`, ...), after the pieces that
  // came before it were handed on.
  // A connection whose body was not read to its end is closed, never pooled. Both run on the call's
  // executor, for one response only: a request re-sent on a new connection (see AsyncHttpCall) is
  // re-sent before any of its response arrived.
  // Whether the request may be sent again on a new connection when a kept-alive connection it was
  // written to closes without a byte of answer. The downstream may have closed it while idle — or
  // may have taken the request and died: only a request that is safe to repeat is sent again. (One
  // whose write failed did not go out whole, and is sent again either way.)
  bool idempotent = false;
  std::function<bool(int status, const std::vector<std::pair<std::string, std::string>>& headers)> stream_body;
  std::function<asio::awaitable<bool>(std::string_view data)> on_body_data;
  // A body handed to `on_body_data` may be this long (0: max_response_bytes), for a caller that
  // holds what it keeps of a long stream to a limit of its own.
  int64_t max_streamed_bytes = 0;
};

// Idle keep-alive connections to downstreams, per destination: the address, and for TLS the
// context and server name too, so a plain request never gets a TLS connection, and a connection
// verified under one connector's CAs (or made with its client certificate) never serves another
// context. An idle TLS connection keeps its session: reusing it costs no handshake. A connection
// idle longer than `max_idle` is closed, not reused; closing an idle TLS connection closes the
// socket without waiting for the peer's close_notify. Thread-safe. Idle connections belong to the
// io_context that opened them, and serve only calls running on it (one pool serves several event
// loops as if each had its own; `max_idle_per_address` holds per loop): destroy the pool before
// those io_contexts.
class ConnectionPool {
 public:
  explicit ConnectionPool(size_t max_idle_per_address = 64, std::chrono::seconds max_idle = std::chrono::seconds(10));
  ~ConnectionPool();

  // Counts over the calls made with this pool, since it was made (monotonic, read atomically one
  // by one: a snapshot taken during calls need not be consistent across fields).
  struct Stats {
    uint64_t connections_opened = 0;  // TCP connections established (plain and TLS)
    uint64_t tls_handshakes = 0;      // TLS handshakes started, failed ones included (each costs the same)
    uint64_t reused = 0;              // attempts served by an idle pooled connection
  };
  Stats stats() const;
  uint64_t handshakes() const { return stats().tls_handshakes; }

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// With a pool, the call reuses an idle connection when there is one and returns the connection
// afterwards if both sides keep it alive. A request that fails on a reused connection before any
// response byte arrives (the downstream had closed it) is sent again once on a new connection
// (for TLS: with a new handshake): every downstream call carries an Idempotency-Key, so the
// downstream can tell a repeat. `request.timeout` bounds the whole call, retry included.
asio::awaitable<ClientResult> AsyncHttpCall(ClientRequest request, ConnectionPool* pool = nullptr);
// Runs AsyncHttpCall on a private io_context (CLI, tests).
ClientResult HttpCall(ClientRequest request);

// AsyncHttpCall for a caller that blocks its thread on each call (the DynamoDB store: ItemStore is
// synchronous), with kept-alive connections: an io_context of its own and a ConnectionPool on it,
// so the connection a call leaves idle serves the next call, from whichever thread makes it. A
// pool's idle connections belong to the io_context that opened them; this class keeps the two
// together (and destroys the pool first).
//
// One call at a time: not thread-safe. A caller with many threads keeps several of these — a free
// list that a thread takes one from for a call and gives it back to afterwards, or one per thread.
// Destroying it closes its idle connections.
class BlockingHttpClient {
 public:
  // Since a client makes one call at a time, one idle connection per address is usually all it keeps.
  explicit BlockingHttpClient(size_t max_idle_per_address = 1,
                              std::chrono::seconds max_idle = std::chrono::seconds(10));
  ~BlockingHttpClient();
  BlockingHttpClient(const BlockingHttpClient&) = delete;
  BlockingHttpClient& operator=(const BlockingHttpClient&) = delete;

  // AsyncHttpCall(request, &pool) run to its end on this client's io_context, on the calling
  // thread. Never throws: a failure to even start the call (out of memory) is a ClientResult with
  // `error` set and `connected` false.
  ClientResult Call(ClientRequest request);

  ConnectionPool::Stats stats() const { return pool_.stats(); }

 private:
  std::unique_ptr<asio::io_context> io_;
  ConnectionPool pool_;  // after io_: destroyed before it
};

// EMFILE, ENFILE, ENOBUFS or ENOMEM (asio's no_descriptors, no_buffer_space, no_memory): errors
// that say this host ran short, whatever the peer would have answered.
bool IsLocalResourceError(const boost::system::error_code& ec);

}  // namespace toolgate::net
