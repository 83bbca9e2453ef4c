#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <iterator>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "api/http.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace toolgate::api {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

std::string HttpRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

std::string PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

bool ByteBudget::TryReserve(int64_t bytes) {
  int64_t used = in_use_.load(std::memory_order_relaxed);
  do {
    if (used + bytes > capacity_) return false;
  } while (!in_use_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  return true;
}

void ByteBudget::Release(int64_t bytes) { in_use_.fetch_sub(bytes, std::memory_order_relaxed); }

namespace {

using Parser = http::request_parser<http::string_body>;
using Clock = std::chrono::steady_clock;

// How long an over-cap client is given to read its 503; and how many such refusals may be under
// way at once per listener (each holds a descriptor): beyond that a client is closed unanswered.
constexpr std::chrono::seconds kRefusalTime{1};
constexpr int kMaxRefusalsInFlight = 64;
constexpr std::chrono::milliseconds kFirstAcceptBackoff{10};
constexpr std::chrono::milliseconds kLastAcceptBackoff{1000};
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// The most room a connection's read buffer is given for a request body (ReadRequest): larger bodies
// are read in parts of this size.
constexpr std::uint64_t kBodyReadRoom = 16 * 1024;
// The most read-buffer room a keep-alive connection keeps between requests: more (a large body's)
// is given back once the request is answered and nothing else waits in the buffer, so an idle
// client holds no more than this.
constexpr std::size_t kIdleReadRoom = 4 * 1024;

std::string ErrorBody(std::string_view code, std::string_view message) {
  return nlohmann::json{{"error", std::string(code)}, {"message", std::string(message)}}.dump();
}

HttpResponse Refusal(int status, std::string_view code, std::string_view message) {
  return {status, ErrorBody(code, message), "application/json", {}, {}, {}};
}

HttpResponse Overloaded(int status, std::string_view code, std::string_view message) {
  HttpResponse r = Refusal(status, code, message);
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

// The body is moved out of `r`, not copied: a large one would otherwise be held twice for as long as
// the handler runs.
HttpRequest Translate(http::request<http::string_body>& r) {
  HttpRequest out;
  out.method = std::string(r.method_string());
  out.target = std::string(r.target());
  out.version = r.version();
  const std::string_view target(r.target().data(), r.target().size());
  const auto q = target.find('?');
  out.path = PercentDecode(target.substr(0, q), /*plus_is_space=*/false);  // '+' is a space only in a query
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      const std::string_view pair = rest.substr(0, amp);
      const auto eq = pair.find('=');
      if (!pair.empty()) {
        out.query.emplace(
            PercentDecode(pair.substr(0, eq), /*plus_is_space=*/true),
            eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1), /*plus_is_space=*/true));
      }
      if (amp == std::string_view::npos) break;
      rest = rest.substr(amp + 1);
    }
  }
  for (const auto& f : r) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers.emplace_back(std::move(name), std::string(f.value()));
  }
  out.body = std::move(r.body());
  return out;
}

// ---- RFC 9112 checks on a request's header, before its body is read -------------------------

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The transfer codings of every Transfer-Encoding line, in order (several lines are one list).
std::vector<std::string> TransferCodings(const http::request_header<>& h) {
  std::vector<std::string> codings;
  for (const auto& f : h) {
    if (f.name() != http::field::transfer_encoding) continue;
    std::string_view rest(f.value().data(), f.value().size());
    while (true) {
      const auto comma = rest.find(',');
      const std::string_view item = TrimOws(rest.substr(0, comma));
      if (!item.empty()) {
        std::string lower(item);
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        codings.push_back(std::move(lower));
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return codings;
}

// The body's length must be known the same way by every hop, or a request can hide in another's
// body (request smuggling): a final `chunked` alone, or one Content-Length, never both.
std::optional<HttpResponse> CheckFraming(const http::request_header<>& h, int transfer_encodings, int content_lengths) {
  if (transfer_encodings > 0) {
    if (h.version() < 11) return Refusal(400, "invalid_framing", "HTTP/1.0 has no Transfer-Encoding");
    if (content_lengths > 0) return Refusal(400, "invalid_framing", "Transfer-Encoding and Content-Length together");
    const std::vector<std::string> codings = TransferCodings(h);
    if (codings.empty() || codings.back() != "chunked") {
      return Refusal(400, "invalid_framing", "the last transfer coding must be chunked");
    }
    for (size_t i = 0; i + 1 < codings.size(); ++i) {
      if (codings[i] == "chunked") return Refusal(400, "invalid_framing", "chunked may be applied only once");
    }
    if (codings.size() > 1)
      return Refusal(501, "unsupported_transfer_coding", "only the chunked transfer coding is supported");
  }
  if (content_lengths == 1) {
    const auto v = h[http::field::content_length];
    if (v.empty() || v.find_first_not_of("0123456789") != beast::string_view::npos) {
      return Refusal(400, "invalid_framing", "Content-Length must be one decimal number");
    }
  }
  return std::nullopt;
}

// %2F would become a '/' that routing never saw (/v1/tools/crm.x%2Finvoke); %00 ends strings; a
// "." or ".." segment, plain or encoded (%2e%2e), names another resource to any hop that normalizes
// the path (RFC 3986 §5.2.4) than to the router, which does not.
bool HasEncodedSlashNulOrDotSegment(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  for (size_t i = 0; i + 2 < path.size(); ++i) {
    if (path[i] != '%') continue;
    const char a = path[i + 1], b = static_cast<char>(std::tolower(static_cast<unsigned char>(path[i + 2])));
    if ((a == '2' && b == 'f') || (a == '0' && b == '0')) return true;
  }
  const std::string decoded = PercentDecode(path, /*plus_is_space=*/false);
  for (size_t start = 0; start <= decoded.size();) {
    const size_t end = std::min(decoded.find('/', start), decoded.size());
    const std::string_view segment = std::string_view(decoded).substr(start, end - start);
    if (segment == "." || segment == "..") return true;
    start = end + 1;
  }
  return false;
}

// Headers that toolgate decides by besides those of the switch below (Origin: the CSRF and DNS
// rebinding checks; MCP's: the revision, the session, the method and tool the 2026-07-28 revision
// checks against the body), lower case. Two of one are refused as two Hosts are.
constexpr const char* kSingleHeaders[] = {"origin", "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name"};

std::optional<HttpResponse> CheckHeader(const http::request_header<>& h) {
  int hosts = 0, authorizations = 0, content_lengths = 0, transfer_encodings = 0;
  int singles[std::size(kSingleHeaders)] = {};
  for (const auto& f : h) {
    if (f.name() == http::field::origin || f.name() == http::field::unknown) {
      const std::string name(f.name_string().data(), f.name_string().size());
      for (size_t i = 0; i < std::size(kSingleHeaders); ++i) {
        if (absl::EqualsIgnoreCase(name, kSingleHeaders[i]) && ++singles[i] == 2) {
          return Refusal(400, "duplicate_header", absl::StrCat("more than one ", name, " header"));
        }
      }
    }
    switch (f.name()) {
      case http::field::host:
        ++hosts;
        break;
      case http::field::authorization:
        ++authorizations;
        break;
      case http::field::content_length:
        ++content_lengths;
        break;
      case http::field::transfer_encoding:
        ++transfer_encodings;
        break;
      default:
        break;
    }
  }
  if (auto refusal = CheckFraming(h, transfer_encodings, content_lengths)) return refusal;
  // Two of a header that must be single is ambiguous (which one does each hop use?): refuse.
  if (hosts > 1) return Refusal(400, "duplicate_header", "more than one Host header");
  if (authorizations > 1) return Refusal(400, "duplicate_header", "more than one Authorization header");
  if (content_lengths > 1) return Refusal(400, "duplicate_header", "more than one Content-Length header");
  if (hosts == 0 && h.version() >= 11) return Refusal(400, "missing_host", "an HTTP/1.1 request needs a Host header");
  if (HasEncodedSlashNulOrDotSegment({h.target().data(), h.target().size()})) {
    return Refusal(400, "invalid_path",
                   "the path must not contain an encoded slash (%2F), NUL (%00) or a . or .. segment");
  }
  return std::nullopt;
}

bool ExpectsContinue(const http::request_header<>& h) {
  if (h.version() < 11) return false;  // RFC 9110 §10.1.1: ignored in HTTP/1.0
  const auto v = h[http::field::expect];
  const std::string_view expect = TrimOws({v.data(), v.size()});
  return beast::iequals(beast::string_view(expect.data(), expect.size()), "100-continue");
}

bool ClientWentAway(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::operation_aborted;
}

HttpResponse RefusalForParseError(const beast::error_code& ec) {
  if (ec == http::error::body_limit) return Refusal(413, "body_too_large", "the request body exceeds max_body_bytes");
  if (ec == http::error::header_limit) return Refusal(431, "headers_too_large", "the request headers are too large");
  if (ec == http::error::bad_transfer_encoding || ec == http::error::bad_content_length) {
    return Refusal(400, "invalid_framing", "conflicting or malformed Transfer-Encoding / Content-Length");
  }
  return Refusal(400, "bad_request", "malformed HTTP request");
}

// What reading one request came to: a request to handle, a client gone (or silent past the read
// timeout), or a refusal to send before closing.
struct ReadOutcome {
  enum class Kind { kRequest, kGone, kRefused };
  Kind kind = Kind::kRequest;
  HttpResponse refusal;
};

ReadOutcome FromReadError(const beast::error_code& ec) {
  if (ClientWentAway(ec)) return {ReadOutcome::Kind::kGone, {}};
  return {ReadOutcome::Kind::kRefused, RefusalForParseError(ec)};
}

// At most one line a second for a condition that may repeat thousands of times a second (accept
// errors, a full listener, a full budget), saying how many were held back. Thread-safe: a full
// budget is met on every connection loop.
class LogThrottle {
 public:
  // True when a line may be written now; `held_back` is then how many were suppressed before it.
  bool Allow(int64_t& held_back) {
    const auto now = Clock::now();
    absl::MutexLock lock(&mu_);
    if (now - last_ < std::chrono::seconds(1)) {
      ++held_back_;
      return false;
    }
    last_ = now;
    held_back = std::exchange(held_back_, 0);
    return true;
  }

 private:
  absl::Mutex mu_;
  Clock::time_point last_ ABSL_GUARDED_BY(mu_){};
  int64_t held_back_ ABSL_GUARDED_BY(mu_) = 0;
};

// One place in a count of open connections, given back when the connection's coroutine ends (also
// when the io_context is destroyed before it ran).
class CountedSlot {
 public:
  explicit CountedSlot(std::atomic<int>& count) : count_(&count) { count_->fetch_add(1); }
  CountedSlot(CountedSlot&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  CountedSlot& operator=(CountedSlot&&) = delete;
  ~CountedSlot() {
    if (count_ != nullptr) count_->fetch_sub(1);
  }

 private:
  std::atomic<int>* count_;
};

// Budget bytes held by one response until it has been written or its connection closed, or by one
// request's body while it is served.
class BudgetHold {
 public:
  BudgetHold() = default;
  BudgetHold(ByteBudget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}
  BudgetHold(BudgetHold&& o) noexcept : budget_(std::exchange(o.budget_, nullptr)), bytes_(o.bytes_) {}
  BudgetHold& operator=(BudgetHold&&) = delete;
  ~BudgetHold() { Release(); }
  void Release() {
    if (budget_ != nullptr) std::exchange(budget_, nullptr)->Release(bytes_);
  }
  bool held() const { return budget_ != nullptr; }

 private:
  ByteBudget* budget_ = nullptr;
  int64_t bytes_ = 0;
};

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, ServerLimits l, Handler h, std::vector<asio::io_context*> loops)
      : io(io), acceptor(io), limits(std::move(l)), handler(std::move(h)), connection_loops(std::move(loops)) {
    if (connection_loops.empty()) connection_loops.push_back(&io);
    // Each loop's reactor (an epoll, an eventfd and a timerfd) is made now, while there are
    // descriptors. Asio makes it at the first socket a loop gets, which is inside the initiation of
    // an accept onto that loop: out of descriptors there, it throws where nothing can catch, and
    // the process ends in std::terminate instead of backing off.
    for (asio::io_context* loop : connection_loops) tcp::socket reactor_made_here(*loop);
  }

  // The loop the next connection is served on: each in turn. Only the accepting coroutine calls it.
  asio::any_io_executor NextLoop() {
    asio::io_context* loop = connection_loops[next_loop];
    next_loop = (next_loop + 1) % connection_loops.size();
    return loop->get_executor();
  }

  // ---- accepting ---------------------------------------------------------------------------------

  asio::awaitable<void> Accept() {
    auto self = shared_from_this();
    asio::steady_timer backoff_timer(io);
    std::chrono::milliseconds backoff{0};
    for (;;) {
      beast::error_code ec;
      // Accepted straight onto the loop that will serve it (see HttpServer).
      tcp::socket socket = co_await acceptor.async_accept(NextLoop(), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        // Out of descriptors (or buffers, or memory) the failed connection stays in the backlog and
        // the next accept fails at once: retrying without a pause would spin a core and starve the
        // connections being served. Wait, longer each time, until one succeeds.
        backoff = std::clamp(backoff * 2, kFirstAcceptBackoff, kLastAcceptBackoff);
        if (int64_t held_back = 0; accept_errors_log.Allow(held_back)) {
          spdlog::warn("{}: accept failed: {} ({} more since the last report); retrying in {} ms", name, ec.message(),
                       held_back, backoff.count());
        }
        backoff_timer.expires_after(backoff);
        co_await backoff_timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      backoff = std::chrono::milliseconds{0};
      Dispatch(std::move(socket));
    }
  }

  // Serves the new connection on its loop, or answers it 503 when the listener is at its cap. The
  // client is answered rather than left in the backlog so that it gets a reason and a time to come
  // back instead of a hang; past kMaxRefusalsInFlight refusals it is closed at once.
  void Dispatch(tcp::socket socket) {
    const asio::any_io_executor loop = socket.get_executor();
    if (open_connections.load() < limits.max_connections) {
      CountedSlot slot(open_connections);
      asio::co_spawn(loop, Serve(std::move(slot), beast::tcp_stream(std::move(socket))), asio::detached);
      return;
    }
    if (int64_t held_back = 0; full_log.Allow(held_back)) {
      spdlog::warn("{}: at max_connections ({}): new connections are answered 503 ({} more since the last report)",
                   name, limits.max_connections, held_back);
    }
    if (refusals_in_flight.load() >= kMaxRefusalsInFlight) return;  // closing the socket is the answer
    CountedSlot slot(refusals_in_flight);
    asio::co_spawn(loop, RefuseOverCap(std::move(slot), beast::tcp_stream(std::move(socket))), asio::detached);
  }

  asio::awaitable<void> RefuseOverCap([[maybe_unused]] CountedSlot slot, beast::tcp_stream stream) {
    auto self = shared_from_this();
    HttpResponse refusal = Overloaded(503, "too_many_connections", "too many open connections; retry shortly");
    CountOwn(refusal.status);
    stream.expires_after(kRefusalTime);
    const beast::error_code ec = co_await Respond(stream, 11, false, refusal);
    if (!ec) co_await LingeringClose(stream, kRefusalTime);
  }

  // ---- one connection ------------------------------------------------------------------------------

  // REQUIRES: `r.body` is not used afterwards (it is moved into the message).
  asio::awaitable<beast::error_code> Respond(beast::tcp_stream& stream, unsigned version, bool keep_alive,
                                             HttpResponse& r) {
    http::response<http::string_body> res{static_cast<http::status>(r.status), version};
    res.set(http::field::server, "toolgate");
    res.set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) res.set(k, v);
    res.keep_alive(keep_alive);
    res.body() = std::move(r.body);
    res.prepare_payload();
    beast::error_code ec;
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }

  // A streamed response: the header, then each piece `r.stream` produces as one chunk (each within
  // the write timeout; none between pieces), then the last chunk. An error ends it: the connection
  // is closed by the caller, and the stream is not asked again. A piece larger than
  // kBudgetedResponseBytes holds its size of the response budget until the client has acknowledged
  // it, as a whole response would; when the budget has no room for it (or the client does not take
  // it in time) the connection is reset instead — the status was sent with the header.
  asio::awaitable<beast::error_code> RespondStreamed(beast::tcp_stream& stream, unsigned version, bool keep_alive,
                                                     const HttpResponse& r) {
    http::response<http::empty_body> res{static_cast<http::status>(r.status), version};
    res.set(http::field::server, "toolgate");
    res.set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) res.set(k, v);
    res.keep_alive(keep_alive);
    res.chunked(true);
    http::response_serializer<http::empty_body> serializer{res};
    beast::error_code ec;
    stream.expires_after(limits.write_timeout);
    co_await http::async_write_header(stream, serializer, asio::redirect_error(asio::use_awaitable, ec));
    while (!ec) {
      stream.expires_never();        // the producer bounds the wait for its next piece
      auto next = r.stream->Next();  // named: see Serve
      const std::optional<std::string> piece = co_await std::move(next);
      stream.expires_after(limits.write_timeout);
      if (!piece) {
        const auto last = http::make_chunk_last();
        co_await asio::async_write(stream, last, asio::redirect_error(asio::use_awaitable, ec));
        break;
      }
      if (piece->empty()) continue;  // an empty chunk would end the body
      const bool budgeted = Budgeted(piece->size());
      BudgetHold hold = budgeted ? TryHold(*limits.response_budget, piece->size(), "response",
                                           "streamed piece was not sent, its connection reset")
                                 : BudgetHold();
      if (budgeted && !hold.held()) {
        CloseWithReset(stream, true);
        co_return beast::error_code(asio::error::no_buffer_space);
      }
      const auto write_deadline = Clock::now() + limits.write_timeout;
      if (hold.held()) CloseWithReset(stream, true);
      const auto chunk = http::make_chunk(asio::buffer(*piece));
      co_await asio::async_write(stream, chunk, asio::redirect_error(asio::use_awaitable, ec));
      if (!ec && hold.held()) {
        const bool delivered = co_await AwaitDelivery(stream, write_deadline);
        if (!delivered) co_return beast::error_code(asio::error::timed_out);  // closed with a reset
        CloseWithReset(stream, false);
      }
    }
    co_return ec;
  }

  // After refusing a request whose body is still arriving: stop sending, then read and discard what
  // the client still sends (bounded in time and bytes) so that closing does not reset the connection
  // and destroy the refusal before the client has read it (nginx's lingering close).
  asio::awaitable<void> LingeringClose(beast::tcp_stream& stream, std::chrono::seconds linger) {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream.expires_after(linger);
    std::array<char, 64 * 1024> sink;
    size_t drained = 0;
    while (!ec && drained < (64u << 20)) {
      drained += co_await stream.async_read_some(asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // The header first, checked (CheckHeader) before a body byte is read — and before `100 Continue`
  // invites the client to send it; then the body. Reading the header alone also makes Beast report
  // the body limit reliably (its one-shot read was seen to let an oversized body through).
  asio::awaitable<ReadOutcome> ReadRequest(beast::tcp_stream& stream, beast::flat_buffer& buffer, Parser& parser) {
    beast::error_code ec;
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return FromReadError(ec);
    if (std::optional<HttpResponse> refusal = CheckHeader(parser.get())) {
      co_return ReadOutcome{ReadOutcome::Kind::kRefused, std::move(*refusal)};
    }
    if (!parser.is_done() && ExpectsContinue(parser.get())) {
      co_await asio::async_write(stream, asio::buffer(kContinue.data(), kContinue.size()),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return ReadOutcome{ReadOutcome::Kind::kGone, {}};
    }
    if (!parser.is_done()) {
      // Beast reads as much as the buffer has room for, at least 512 bytes, and the parser takes
      // each read's body bytes out of it at once: a buffer that never had to hold more than 512 bytes
      // reads a body 512 bytes per system call (an 8 KB input: 16 of them). Room for the body, up to
      // a bound, is made before it is read; the connection keeps it for its next requests.
      if (auto length = parser.content_length()) {
        buffer.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*length, kBodyReadRoom)));
      }
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) co_return FromReadError(ec);
    co_return ReadOutcome{};
  }

  void CountOwn(int status) const {
    if (limits.own_answer) limits.own_answer(status);
  }

  asio::awaitable<HttpResponse> Handle(http::request<http::string_body>& req) {
    HttpResponse response;
    HttpRequest translated = Translate(req);
    try {
      response = co_await handler(std::move(translated));
    } catch (const std::exception& e) {
      spdlog::error("handler failed on {} {}: {}", std::string(req.method_string()), std::string(req.target()),
                    e.what());
      response = Refusal(500, "internal", "internal error");
      CountOwn(response.status);
    }
    co_return response;
  }

  // Takes a large response's size from the process's budget for as long as the returned hold lives
  // (Serve keeps it until the client has acknowledged the response); a response the budget cannot
  // hold is replaced by 503 gateway_overloaded (the client may come back in a second).
  BudgetHold HoldForWriting(HttpResponse& response) {
    const size_t size = response.body.size();
    if (!Budgeted(size)) return {};
    BudgetHold hold = TryHold(*limits.response_budget, size, "response", "response answered 503");
    if (!hold.held()) {
      response =
          Overloaded(503, "gateway_overloaded", "too many large responses are waiting to be written; retry shortly");
    }
    return hold;
  }

  // Whether `size` bytes of an answer take their share of the budget.
  bool Budgeted(size_t size) const {
    return limits.response_budget != nullptr && static_cast<int64_t>(size) > kBudgetedResponseBytes;
  }
  // `size` bytes of `budget` (of the budget for `what`: "response", "request body"), or nothing held
  // (logged, saying what became of the bytes: `fate`).
  BudgetHold TryHold(ByteBudget& budget, size_t size, std::string_view what, std::string_view fate) {
    const auto bytes = static_cast<int64_t>(size);
    if (budget.TryReserve(bytes)) return BudgetHold(&budget, bytes);
    if (int64_t held_back = 0; overload_log.Allow(held_back)) {
      spdlog::warn("{}: {} buffer budget full ({} of {} bytes held): a {}-byte {} ({} more since the last report)",
                   name, what, budget.in_use(), budget.capacity(), bytes, fate, held_back);
    }
    return {};
  }

  // Waits until the client has acknowledged every byte written (the socket's send queue is empty)
  // or `deadline` passes, or the connection failed (reset by the client): false then. A completed
  // write proves little: the kernel's send buffer (autotuned up to tcp_wmem's maximum, 4 MiB by
  // default) takes a whole 1 MB response from a client that never reads, and holds it for as long as
  // the connection lives. After a reset SIOCOUTQ still counts what was never acknowledged (it is
  // write_seq - snd_una, not the queue the reset emptied): the socket's own state says the client is
  // gone (POLLERR, POLLHUP; a client that only half-closed still reads and is waited for). Polled:
  // 5 ms, doubling to 100 ms.
  asio::awaitable<bool> AwaitDelivery(beast::tcp_stream& stream, Clock::time_point deadline) {
    asio::steady_timer timer(stream.get_executor());
    const int fd = stream.socket().native_handle();
    std::chrono::milliseconds pause{5};
    for (;;) {
      int unacknowledged = 0;
      if (ioctl(fd, SIOCOUTQ, &unacknowledged) != 0 || unacknowledged == 0) co_return true;
      pollfd state{fd, 0, 0};  // POLLERR and POLLHUP are reported whatever is asked
      if (::poll(&state, 1, 0) > 0 && (state.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) co_return false;
      const auto now = Clock::now();
      if (now >= deadline) co_return false;
      timer.expires_after(std::min<Clock::duration>(pause, deadline - now));
      beast::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      pause = std::min(pause * 2, std::chrono::milliseconds(100));
    }
  }

  // While on, closing the socket resets the connection, so that the kernel drops what the client
  // never read instead of keeping it for an orphaned connection — also when the stream's own write
  // timeout closes it.
  static void CloseWithReset(beast::tcp_stream& stream, bool on) {
    beast::error_code ignored;
    stream.socket().set_option(asio::socket_base::linger(on, 0), ignored);
  }

  // Requests one after another on a keep-alive connection. Responses are named locals, never
  // temporaries inside co_await: g++ 12 destroys such temporaries twice.
  asio::awaitable<void> Serve([[maybe_unused]] CountedSlot slot, beast::tcp_stream stream) {
    auto self = shared_from_this();
    beast::flat_buffer buffer;
    for (;;) {
      Parser parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
      parser.body_limit(static_cast<std::uint64_t>(limits.max_body_bytes));
      stream.expires_after(limits.request_timeout);
      ReadOutcome read = co_await ReadRequest(stream, buffer, parser);
      if (read.kind == ReadOutcome::Kind::kGone) break;
      if (read.kind == ReadOutcome::Kind::kRefused) {
        CountOwn(read.refusal.status);
        stream.expires_after(limits.write_timeout);
        const beast::error_code ec = co_await Respond(stream, 11, false, read.refusal);
        if (!ec) co_await LingeringClose(stream, std::chrono::seconds(2));
        break;
      }
      http::request<http::string_body> req = parser.release();
      // From here until the answer is delivered (or given up): a stop waits for it (RequestsInProgress).
      struct InProgress {
        std::atomic<int>& n;
        explicit InProgress(std::atomic<int>& count) : n(count) { ++n; }
        ~InProgress() { --n; }
        InProgress(const InProgress&) = delete;
        InProgress& operator=(const InProgress&) = delete;
      } in_progress(requests_in_progress);
      const bool keep_alive = req.keep_alive();
      const unsigned version = req.version();
      stream.expires_never();  // the handler has its own timeouts
      // A large body holds its size of the request budget while it is served: a call in flight keeps
      // its input until the downstream answers. One the budget has no room for is not served.
      const bool body_budgeted =
          limits.request_budget != nullptr && static_cast<int64_t>(req.body().size()) > kBudgetedRequestBytes;
      BudgetHold body_hold = body_budgeted ? TryHold(*limits.request_budget, req.body().size(), "request body",
                                                     "request answered 503, not served")
                                           : BudgetHold();
      HttpResponse response;
      if (body_budgeted && !body_hold.held()) {
        response = Overloaded(503, "gateway_overloaded", "too many large requests are being served; retry shortly");
        CountOwn(response.status);
      } else {
        response = co_await Handle(req);
      }
      if (response.stream && version < 11) {  // HTTP/1.0 knows no chunks: a handler's mistake
        spdlog::error("{}: a streamed answer to an HTTP/1.0 request to {} was not sent", name,
                      std::string(req.target()).substr(0, 200));
        response = Refusal(500, "internal", "internal error");
        CountOwn(response.status);
      }
      if (response.stream) {
        const beast::error_code ec = co_await RespondStreamed(stream, version, keep_alive, response);
        if (ec || !keep_alive) break;
        continue;
      }
      body_hold.Release();  // answered: the response budget covers what is left to write
      // A client that does not read keeps its response in memory (toolgate's or the kernel's): a
      // large one holds the budget until delivered, and the write timeout ends either kind.
      BudgetHold hold = HoldForWriting(response);
      const auto write_deadline = Clock::now() + limits.write_timeout;
      stream.expires_after(limits.write_timeout);
      if (hold.held()) CloseWithReset(stream, true);
      const beast::error_code ec = co_await Respond(stream, version, keep_alive, response);
      if (ec) break;
      if (hold.held()) {
        const bool delivered = co_await AwaitDelivery(stream, write_deadline);
        if (!delivered) break;  // closed with a reset below
        CloseWithReset(stream, false);
      }
      if (!keep_alive) break;
      if (buffer.size() == 0 && buffer.capacity() > kIdleReadRoom) buffer.shrink_to_fit();
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  asio::io_context& io;
  tcp::acceptor acceptor;
  ServerLimits limits;
  Handler handler;
  std::string name = "listener";                    // "listener 127.0.0.1:8080" once bound, for logs
  std::vector<asio::io_context*> connection_loops;  // never empty
  size_t next_loop = 0;
  std::atomic<int> open_connections{0};
  std::atomic<int> refusals_in_flight{0};
  std::atomic<int> requests_in_progress{0};  // read whole, not yet answered and delivered
  LogThrottle accept_errors_log, full_log, overload_log;
};

HttpServer::HttpServer(asio::io_context& io, ServerLimits limits, Handler handler,
                       std::vector<asio::io_context*> connection_loops)
    : impl_(std::make_shared<Impl>(io, std::move(limits), std::move(handler), std::move(connection_loops))) {}

HttpServer::~HttpServer() { StopAccepting(); }

int HttpServer::Start(const HostPort& address) {
  tcp::endpoint ep(asio::ip::make_address(address.host), static_cast<unsigned short>(address.port));
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  const int port = impl_->acceptor.local_endpoint().port();
  impl_->name = "listener " + address.host + ":" + std::to_string(port);
  asio::co_spawn(impl_->io, impl_->Accept(), asio::detached);
  return port;
}

int HttpServer::RequestsInProgress() const { return impl_->requests_in_progress.load(); }

void HttpServer::StopAccepting() {
  asio::post(impl_->io, [impl = impl_] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
}

}  // namespace toolgate::api
