#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <array>
#include <cerrno>
#include <cstdint>
#include <exception>
#include <future>
#include <map>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "net/tls_client_context_impl.h"
#include "toolgate/net/http_client.h"

namespace toolgate::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using asio::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

struct ConnectionPool::Impl {
  // An idle connection: a plain socket, or a TLS stream holding its established session.
  struct Idle {
    std::optional<tcp::socket> plain;
    std::unique_ptr<TlsStream> tls;
    // The context the TLS connection was made with. Held so that its address, part of the key,
    // cannot be taken by another context while this connection waits here.
    std::shared_ptr<const TlsClientContext> context;
    std::chrono::steady_clock::time_point since;

    bool is_open() const { return plain ? plain->is_open() : tls && beast::get_lowest_layer(*tls).socket().is_open(); }
    // Nothing arrived while it sat idle: no end of stream (the downstream closed it), no stray
    // bytes (a TLS close_notify, a late answer). One non-blocking peek.
    bool StillQuiet() {
      const int fd = plain ? plain->native_handle() : beast::get_lowest_layer(*tls).socket().native_handle();
      char byte = 0;
      const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
  };
  // Every idle connection is peeked at before it is reused (StillQuiet): a downstream's idle timeout,
  // or one that drops connections it announced as kept alive, would otherwise fail the request
  // written to them — which, unless it is safe to repeat, is not sent again (ClientRequest::idempotent).
  size_t max_per_address;
  std::chrono::seconds max_idle;
  absl::Mutex mu;
  std::map<std::string, std::vector<Idle>> idle ABSL_GUARDED_BY(mu);
  std::atomic<uint64_t> connections_opened{0};
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> reused{0};

  // Dropping an Idle closes its socket; a TLS one without close_notify (nothing waits on the peer).
  std::optional<Idle> Take(const std::string& key) {
    absl::MutexLock lock(&mu);
    auto& v = idle[key];
    while (!v.empty()) {
      Idle c = std::move(v.back());
      v.pop_back();
      if (std::chrono::steady_clock::now() - c.since < max_idle && c.is_open() && c.StillQuiet()) return c;
    }
    return std::nullopt;
  }
  void Give(const std::string& key, Idle c) {
    c.since = std::chrono::steady_clock::now();
    absl::MutexLock lock(&mu);
    auto& v = idle[key];
    if (v.size() >= max_per_address) return;  // dropping it closes it
    v.push_back(std::move(c));
  }
};

ConnectionPool::ConnectionPool(size_t max_idle_per_address, std::chrono::seconds max_idle)
    : impl_(std::make_unique<Impl>()) {
  impl_->max_per_address = max_idle_per_address;
  impl_->max_idle = max_idle;
}
ConnectionPool::~ConnectionPool() = default;

ConnectionPool::Stats ConnectionPool::stats() const {
  Stats s;
  s.connections_opened = impl_->connections_opened.load(std::memory_order_relaxed);
  s.tls_handshakes = impl_->tls_handshakes.load(std::memory_order_relaxed);
  s.reused = impl_->reused.load(std::memory_order_relaxed);
  return s;
}

bool IsLocalResourceError(const boost::system::error_code& ec) {
  namespace errc = boost::system::errc;
  return ec == errc::too_many_files_open || ec == errc::too_many_files_open_in_system || ec == errc::no_buffer_space ||
         ec == errc::not_enough_memory;
}

namespace {

// The room a response's read buffer starts with (see Exchange), and what is allowed beyond the
// body limit for the status line and headers when the limit is smaller.
constexpr int64_t kReadBufferBytes = 16 * 1024;
constexpr int64_t kResponseHeadRoom = 1024;

// At the deadline the stream may report the cancelled operation as another error than
// error::timeout; any failure at or after the deadline is a timeout.
bool TimedOut(const beast::error_code& ec, std::chrono::steady_clock::time_point deadline) {
  return ec == beast::error::timeout || std::chrono::steady_clock::now() >= deadline;
}

asio::awaitable<bool> Connect(beast::tcp_stream& stream, const HostPort& address, ClientResult& out,
                              std::chrono::steady_clock::time_point deadline) {
  auto executor = co_await asio::this_coro::executor;
  beast::error_code ec;
  tcp::endpoint endpoint;
  boost::system::error_code addr_ec;
  const auto addr = asio::ip::make_address(address.host, addr_ec);
  if (!addr_ec) {
    endpoint = tcp::endpoint(addr, static_cast<unsigned short>(address.port));
  } else {
    tcp::resolver resolver(executor);
    auto results = co_await resolver.async_resolve(address.host, std::to_string(address.port),
                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec || results.empty()) {
      out.error = "cannot resolve " + address.host + ": " + ec.message();
      co_return false;
    }
    endpoint = *results.begin();
  }
  co_await stream.async_connect(endpoint, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    // Opening the socket or connecting it can fail for want of descriptors or buffers here: that
    // says nothing about the downstream, and the caller must not count it against it.
    out.local_resource_error = IsLocalResourceError(ec);
    out.timed_out = !out.local_resource_error && TimedOut(ec, deadline);
    out.error = "connect: " + ec.message();
    co_return false;
  }
  // Without it, the last segment of a request longer than one segment waits for the peer's
  // delayed acknowledgement (Nagle's algorithm): tens of milliseconds on a kept-alive connection.
  stream.socket().set_option(tcp::no_delay(true), ec);
  co_return true;
}

// The server's certificate must be for `server_name` (OpenSSL checks it with the chain, so a
// mismatch reads "hostname mismatch" in the verify result), and SNI names it unless it is an IP
// address (RFC 6066 allows no literal addresses in SNI).
bool SetServerName(TlsStream& stream, std::string name) {
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
  SSL* ssl = stream.native_handle();
  boost::system::error_code addr_ec;
  asio::ip::make_address(name, addr_ec);
  if (!addr_ec) return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) == 1;
  if (name.empty() || SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) return false;
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return SSL_set1_host(ssl, name.c_str()) == 1;
}

asio::awaitable<bool> Handshake(TlsStream& stream, const std::string& server_name, ClientResult& out,
                                std::chrono::steady_clock::time_point deadline) {
  if (!SetServerName(stream, server_name)) {
    out.tls_error = true;
    out.error = "TLS: cannot use '" + server_name + "' as the server name";
    co_return false;
  }
  beast::error_code ec;
  co_await stream.async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) co_return true;
  if (TimedOut(ec, deadline)) {
    out.timed_out = true;
    out.error = "TLS handshake: " + ec.message();
    co_return false;
  }
  out.tls_error = true;
  // asio's error names only the last step ("certificate verify failed"); the verify result says why.
  const long verify = SSL_get_verify_result(stream.native_handle());
  if (verify != X509_V_OK) {
    out.error = std::string("TLS handshake: certificate verify failed: ") + X509_verify_cert_error_string(verify);
  } else if (ec == ssl::error::stream_truncated || ec == asio::error::eof || ec == asio::error::connection_reset) {
    out.error = "TLS handshake: the downstream closed the connection (" + ec.message() + ")";
  } else {
    out.error = "TLS handshake: " + ec.message();
  }
  co_return false;
}

// An alert the peer sends only while it processes the handshake: under TLS 1.3 the server checks the
// client certificate after the client has finished, so its refusal arrives where the response
// should. The server's TLS layer refused; the request never reached its HTTP layer.
bool IsHandshakeAlert(const beast::error_code& ec) {
  if (ec.category() != asio::error::get_ssl_category()) return false;
  const auto code = static_cast<unsigned long>(ec.value());
  if (ERR_GET_LIB(code) != ERR_LIB_SSL) return false;
  switch (ERR_GET_REASON(code)) {
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      return true;
    default:
      return false;
  }
}

// A connection the downstream closed while it sat idle: nothing of a response came back.
bool ClosedByPeer(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == ssl::error::stream_truncated;
}

enum class Step { kDone, kRetryOnNewConnection };

// Interim (1xx) answers skipped before a final one; a server that sends more ends the exchange.
constexpr int kMaxInterimAnswers = 16;

template <class Fields>
std::vector<std::pair<std::string, std::string>> LowercasedHeaders(const Fields& fields) {
  std::vector<std::pair<std::string, std::string>> headers;
  for (const auto& f : fields) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    headers.emplace_back(std::move(name), std::string(f.value()));
  }
  return headers;
}

// The body of a response whose header `parser` has read, handed to request.on_body_data piece by
// piece as it arrives (ClientRequest::stream_body). The deadline is the stream's, as for a whole
// read; the body limit is the parser's.
template <class Stream>
asio::awaitable<void> StreamBody(Stream& stream, beast::flat_buffer& buffer,
                                 http::response_parser<http::string_body>& header_parser, const ClientRequest& request,
                                 std::chrono::steady_clock::time_point deadline, ClientResult& out, bool& keep_alive) {
  out.body_streamed = true;
  std::optional<http::response_parser<http::buffer_body>> parser;
  try {
    // No body byte was parsed yet (the header was read alone), which is what the move needs.
    parser.emplace(std::move(header_parser));
  } catch (const std::exception& e) {
    out.error = std::string("receive: ") + e.what();
    out.status = 0;  // no response: only `ok` ones carry a status
    out.headers.clear();
    co_return;
  }
  parser->body_limit(static_cast<std::uint64_t>(request.max_streamed_bytes > 0 ? request.max_streamed_bytes
                                                                               : request.max_response_bytes));
  std::array<char, 16 * 1024> piece;
  beast::error_code ec;
  while (!parser->is_done()) {
    parser->get().body().data = piece.data();
    parser->get().body().size = piece.size();
    co_await http::async_read_some(stream, buffer, *parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    const size_t n = piece.size() - parser->get().body().size;
    if (n > 0) {
      auto deliver_op = request.on_body_data(std::string_view(piece.data(), n));
      if (!co_await std::move(deliver_op)) {
        // The caller has what it wanted. Bytes already read past that piece may finish the body (a
        // server that ends the stream right after its last event): parse them, waiting for nothing.
        for (int round = 0; round < 64 && !parser->is_done() && buffer.size() > 0; ++round) {
          parser->get().body().data = piece.data();
          parser->get().body().size = piece.size();
          beast::error_code put_ec;
          const size_t used = parser->put(buffer.data(), put_ec);
          buffer.consume(used);
          if (used == 0 || (put_ec && put_ec != http::error::need_buffer)) break;
        }
        out.ok = true;
        // Read to its end after all (the last piece held the end): the connection may serve again.
        out.stopped_early = !parser->is_done();
        keep_alive = parser->is_done() && parser->keep_alive();
        co_return;
      }
    }
    if (ec) {
      out.timed_out = TimedOut(ec, deadline);
      out.too_large = ec == http::error::body_limit;
      out.error = "receive: " + ec.message();
      out.status = 0;
      out.headers.clear();
      co_return;
    }
  }
  out.ok = true;
  keep_alive = parser->keep_alive();
}

// Sends the request and reads the response on an open connection (plain or TLS). `fresh_tls`: the
// connection's handshake happened in this attempt.
template <class Stream>
asio::awaitable<Step> Exchange(Stream& stream, http::request<http::string_body>& req, const ClientRequest& request,
                               bool reused, bool fresh_tls, std::chrono::steady_clock::time_point deadline,
                               ClientResult& out, bool& keep_alive) {
  beast::error_code ec;
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    // The request did not go out whole: the downstream cannot have acted on it.
    if (reused && !TimedOut(ec, deadline)) co_return Step::kRetryOnNewConnection;  // a stale idle connection
    if (fresh_tls && !TimedOut(ec, deadline)) {
      // Under TLS 1.3 a server checks the client certificate after the client has finished its
      // handshake; its refusal (an alert, then a reset) can meet the request's write instead of the
      // read of the answer.
      out.tls_error = true;
      out.error = "TLS: the downstream closed the connection right after the handshake (" + ec.message() +
                  "); a server that wants a client certificate refuses one this way";
      co_return Step::kDone;
    }
    out.timed_out = TimedOut(ec, deadline);
    out.sent = true;  // part of it may have gone out
    out.error = "send: " + ec.message();
    co_return Step::kDone;
  }
  out.sent = true;

  // Beast reads as much as the buffer has room for, and at least 512 bytes: from an empty buffer, a
  // response comes in 512 bytes per system call (a 10 KB answer: ~20 of them, each a few µs on a
  // virtual machine). Room for a typical answer is made at once, so it takes one or two.
  beast::flat_buffer buffer;
  buffer.reserve(
      static_cast<size_t>(std::min<int64_t>(request.max_response_bytes + kResponseHeadRoom, kReadBufferBytes)));
  // The header first, then the body: Boost 1.74's one-shot async_read was seen to let a body larger
  // than body_limit through when header and body arrive together (reproduced outside toolgate);
  // reading the header alone reports the limit reliably, and the length is checked here as well.
  // Interim answers (1xx: 100 Continue, 103 Early Hints) come before the final one and are skipped
  // (RFC 9110 §15.2): taken as the answer, they would leave the real one to be read as the next
  // request's. 101 is never asked for (no Upgrade is sent): it ends the exchange as a final answer.
  std::optional<http::response_parser<http::string_body>> reading;
  bool interim_seen = false;
  for (int interim = 0;; ++interim) {
    reading.emplace();
    reading->body_limit(static_cast<std::uint64_t>(request.max_response_bytes));
    reading->header_limit(64 * 1024);
    co_await http::async_read_header(stream, buffer, *reading, asio::redirect_error(asio::use_awaitable, ec));
    const unsigned status = ec ? 0 : reading->get().result_int();
    if (ec || status < 100 || status >= 200 || status == 101 || interim >= kMaxInterimAnswers) break;
    interim_seen = true;
  }
  http::response_parser<http::string_body>& parser = *reading;
  if (!ec && parser.content_length() &&
      *parser.content_length() > static_cast<std::uint64_t>(request.max_response_bytes)) {
    ec = http::error::body_limit;
  }
  if (!ec) {
    out.status = static_cast<int>(parser.get().result_int());
    out.headers = LowercasedHeaders(parser.get());
  }
  if (!ec && request.stream_body && request.on_body_data && request.stream_body(out.status, out.headers)) {
    auto stream_op = StreamBody(stream, buffer, parser, request, deadline, out, keep_alive);
    co_await std::move(stream_op);
    co_return Step::kDone;
  }
  if (!ec) co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec && parser.get().body().size() > static_cast<std::size_t>(request.max_response_bytes)) {
    ec = http::error::body_limit;
  }
  if (ec) {
    const bool nothing_came_back = buffer.size() == 0 && !parser.got_some() && !interim_seen;
    if (reused && nothing_came_back && !TimedOut(ec, deadline) && ClosedByPeer(ec) && request.idempotent) {
      // Most likely the downstream had closed the idle connection and never saw this request; it may
      // also have taken it and died. Only a request that is safe to repeat is sent again.
      co_return Step::kRetryOnNewConnection;
    }
    if (fresh_tls && nothing_came_back && IsHandshakeAlert(ec)) {
      out.tls_error = true;
      out.sent = false;
      out.error = "TLS: the downstream refused the handshake: " + ec.message();
      co_return Step::kDone;
    }
    out.timed_out = TimedOut(ec, deadline);
    out.too_large = ec == http::error::body_limit;
    out.error = "receive: " + ec.message();
    out.status = 0;  // no response: only `ok` ones carry a status
    out.headers.clear();
    co_return Step::kDone;
  }
  auto res = parser.release();
  out.ok = true;
  out.body = std::move(res.body());
  keep_alive = res.keep_alive() && out.status >= 200;  // after a final 1xx the stream is not HTTP's any more
  co_return Step::kDone;
}

// Plain and TLS connections to one address never share a key, nor do two TLS contexts or two
// server names: a pooled connection serves only requests that would have made the same one. Nor do
// two event loops: a connection is reused only on the io_context that opened it, so its I/O
// completes on the thread of the call that uses it (one pool, in effect, per event loop).
std::string PoolKey(const ClientRequest& request, const std::string& server_name, const asio::any_io_executor& ex) {
  const auto loop =
      reinterpret_cast<std::uintptr_t>(&asio::query(ex, asio::execution::context_as<asio::execution_context&>));
  if (!request.tls) return "http " + request.address.ToString() + " " + std::to_string(loop);
  return "https " + request.address.ToString() + " " + server_name + " " +
         std::to_string(reinterpret_cast<std::uintptr_t>(request.tls.get())) + " " + std::to_string(loop);
}

// One attempt on a plain connection: the pooled one in `idle`, else a new one, given back to the pool
// after a complete exchange the downstream keeps alive.
asio::awaitable<Step> PlainAttempt(asio::any_io_executor executor, const ClientRequest& request,
                                   http::request<http::string_body>& req, ConnectionPool::Impl* p,
                                   const std::string& key, std::optional<ConnectionPool::Impl::Idle> idle,
                                   std::chrono::steady_clock::time_point deadline, ClientResult& out) {
  const bool reused = idle.has_value();
  bool keep_alive = false;
  beast::tcp_stream stream = reused ? beast::tcp_stream(std::move(*idle->plain)) : beast::tcp_stream(executor);
  stream.expires_at(deadline);
  if (!reused) {
    auto connect_op = Connect(stream, request.address, out, deadline);
    if (!co_await std::move(connect_op)) co_return Step::kDone;
    if (p != nullptr) p->connections_opened.fetch_add(1, std::memory_order_relaxed);
  }
  out.connected = true;
  auto exchange_op = Exchange(stream, req, request, reused, false, deadline, out, keep_alive);
  const Step step = co_await std::move(exchange_op);
  if (step == Step::kDone && out.ok && p != nullptr && keep_alive) {
    stream.expires_never();
    ConnectionPool::Impl::Idle c;
    c.plain.emplace(stream.release_socket());
    p->Give(key, std::move(c));
  } else if (step == Step::kDone) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }
  co_return step;
}

// The same on a TLS connection (a new one does its handshake, verified against `server_name`).
asio::awaitable<Step> TlsAttempt(asio::any_io_executor executor, const ClientRequest& request,
                                 http::request<http::string_body>& req, ConnectionPool::Impl* p, const std::string& key,
                                 const std::string& server_name, std::optional<ConnectionPool::Impl::Idle> idle,
                                 std::chrono::steady_clock::time_point deadline, ClientResult& out) {
  const bool reused = idle.has_value();
  bool keep_alive = false;
  std::unique_ptr<TlsStream> stream =
      reused ? std::move(idle->tls) : std::make_unique<TlsStream>(executor, request.tls->native());
  beast::get_lowest_layer(*stream).expires_at(deadline);
  if (!reused) {
    auto connect_op = Connect(beast::get_lowest_layer(*stream), request.address, out, deadline);
    if (!co_await std::move(connect_op)) co_return Step::kDone;
    out.connected = true;
    if (p != nullptr) {
      p->connections_opened.fetch_add(1, std::memory_order_relaxed);
      p->tls_handshakes.fetch_add(1, std::memory_order_relaxed);
    }
    auto handshake_op = Handshake(*stream, server_name, out, deadline);
    if (!co_await std::move(handshake_op)) co_return Step::kDone;
  }
  out.connected = true;
  auto exchange_op = Exchange(*stream, req, request, reused, !reused, deadline, out, keep_alive);
  const Step step = co_await std::move(exchange_op);
  if (step == Step::kDone && out.ok && p != nullptr && keep_alive) {
    beast::get_lowest_layer(*stream).expires_never();
    ConnectionPool::Impl::Idle c;
    c.tls = std::move(stream);
    c.context = request.tls;
    p->Give(key, std::move(c));
  } else if (step == Step::kDone) {
    // No close_notify: nothing more is wanted from this peer, and waiting for its answer could block.
    beast::error_code ignored;
    beast::get_lowest_layer(*stream).socket().shutdown(tcp::socket::shutdown_both, ignored);
  }
  co_return step;
}

}  // namespace

asio::awaitable<ClientResult> AsyncHttpCall(ClientRequest request, ConnectionPool* pool) {
  auto executor = co_await asio::this_coro::executor;
  const auto deadline = std::chrono::steady_clock::now() + request.timeout;
  const std::string server_name = request.server_name.empty() ? request.address.host : request.server_name;
  const std::string key = PoolKey(request, server_name, executor);
  ConnectionPool::Impl* const p = pool != nullptr ? &pool->impl() : nullptr;

  http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
  req.set(http::field::host, request.address.ToString());
  req.set(http::field::user_agent, "toolgate");
  for (const auto& [k, v] : request.headers) req.set(k, v);
  req.keep_alive(pool != nullptr);
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    req.body() = std::move(request.body);  // not read again: a large body is not held twice
    req.prepare_payload();
  }

  for (int attempt = 0;; ++attempt) {
    ClientResult out;
    std::optional<ConnectionPool::Impl::Idle> idle;
    if (p != nullptr && attempt == 0) idle = p->Take(key);
    const bool reused = idle.has_value();
    if (reused) p->reused.fetch_add(1, std::memory_order_relaxed);
    Step step = Step::kDone;

    if (!request.tls) {
      auto attempt_op = PlainAttempt(executor, request, req, p, key, std::move(idle), deadline, out);
      step = co_await std::move(attempt_op);
    } else {
      auto attempt_op = TlsAttempt(executor, request, req, p, key, server_name, std::move(idle), deadline, out);
      step = co_await std::move(attempt_op);
    }
    if (step == Step::kRetryOnNewConnection) continue;
    co_return out;
  }
}

ClientResult HttpCall(ClientRequest request) {
  asio::io_context io;
  std::future<ClientResult> f = asio::co_spawn(io, AsyncHttpCall(std::move(request)), asio::use_future);
  io.run();
  return f.get();
}

BlockingHttpClient::BlockingHttpClient(size_t max_idle_per_address, std::chrono::seconds max_idle)
    : io_(std::make_unique<asio::io_context>(1)), pool_(max_idle_per_address, max_idle) {}
BlockingHttpClient::~BlockingHttpClient() = default;

ClientResult BlockingHttpClient::Call(ClientRequest request) {
  std::optional<ClientResult> result;
  std::string failure;
  try {
    // run() returns once the call and every handler it left (cancelled timers) have finished, so
    // the io_context holds no work between calls; restart() readies it for this one.
    io_->restart();
    asio::co_spawn(*io_, AsyncHttpCall(std::move(request), &pool_), [&](std::exception_ptr e, ClientResult r) {
      if (!e) {
        result = std::move(r);
        return;
      }
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        failure = ex.what();
      } catch (...) {
        failure = "unknown exception";
      }
    });
    io_->run();
  } catch (const std::exception& ex) {
    failure = ex.what();
  } catch (...) {
    failure = "unknown exception";
  }
  if (result) return std::move(*result);
  ClientResult out;
  out.error = "HTTP client: " + (failure.empty() ? std::string("the call did not finish") : failure);
  return out;
}

}  // namespace toolgate::net
