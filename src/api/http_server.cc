#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <array>

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

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
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

namespace {

std::string ErrorBody(std::string_view code, std::string_view message) {
  return nlohmann::json{{"error", std::string(code)}, {"message", std::string(message)}}.dump();
}

HttpRequest Translate(const http::request<http::string_body>& r) {
  HttpRequest out;
  out.method = std::string(r.method_string());
  out.target = std::string(r.target());
  const std::string_view target(r.target().data(), r.target().size());
  const auto q = target.find('?');
  out.path = PercentDecode(target.substr(0, q));
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      const std::string_view pair = rest.substr(0, amp);
      const auto eq = pair.find('=');
      if (!pair.empty()) {
        out.query.emplace(PercentDecode(pair.substr(0, eq)),
                          eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1)));
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
  out.body = r.body();
  return out;
}

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, ServerLimits l, Handler h) : io(io), acceptor(io), limits(l), handler(std::move(h)) {}

  asio::awaitable<void> Accept() {
    auto self = shared_from_this();
    for (;;) {
      beast::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        continue;  // e.g. too many open files: keep serving the connections we have
      }
      asio::co_spawn(io, Serve(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  asio::awaitable<void> Respond(beast::tcp_stream& stream, unsigned version, bool keep_alive, HttpResponse& r) {
    http::response<http::string_body> res{static_cast<http::status>(r.status), version};
    res.set(http::field::server, "toolgate");
    res.set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) res.set(k, v);
    res.keep_alive(keep_alive);
    res.body() = std::move(r.body);
    res.prepare_payload();
    beast::error_code ec;
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  }

  // After refusing a request whose body is still arriving: stop sending, then read and discard what
  // the client still sends (bounded in time and bytes) so that closing does not reset the connection
  // and destroy the refusal before the client has read it (nginx's lingering close).
  asio::awaitable<void> LingeringClose(beast::tcp_stream& stream) {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream.expires_after(std::chrono::seconds(2));
    std::array<char, 64 * 1024> sink;
    size_t drained = 0;
    while (!ec && drained < (64u << 20)) {
      drained += co_await stream.async_read_some(asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  asio::awaitable<void> Serve(beast::tcp_stream stream) {
    auto self = shared_from_this();
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
      parser.body_limit(static_cast<std::uint64_t>(limits.max_body_bytes));
      stream.expires_after(limits.request_timeout);
      beast::error_code ec;
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof ||
          ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
        break;
      }
      // Responses are named locals, never temporaries inside co_await: g++ 12 destroys such
      // temporaries twice.
      if (ec) {
        HttpResponse refusal;
        if (ec == http::error::body_limit) {
          refusal = {413, ErrorBody("body_too_large", "the request body exceeds max_body_bytes"), "application/json", {}};
        } else if (ec == http::error::header_limit) {
          refusal = {431, ErrorBody("headers_too_large", "the request headers are too large"), "application/json", {}};
        } else {
          refusal = {400, ErrorBody("bad_request", "malformed HTTP request"), "application/json", {}};
        }
        co_await Respond(stream, 11, false, refusal);
        co_await LingeringClose(stream);
        break;
      }
      http::request<http::string_body> req = parser.release();
      const bool keep_alive = req.keep_alive();
      const unsigned version = req.version();
      stream.expires_never();  // the handler has its own timeouts
      HttpResponse response;
      HttpRequest translated = Translate(req);
      try {
        response = co_await handler(std::move(translated));
      } catch (const std::exception& e) {
        spdlog::error("handler failed on {} {}: {}", std::string(req.method_string()), std::string(req.target()), e.what());
        response = {500, ErrorBody("internal", "internal error"), "application/json", {}};
      }
      stream.expires_after(limits.request_timeout);
      co_await Respond(stream, version, keep_alive, response);
      if (!keep_alive) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  asio::io_context& io;
  tcp::acceptor acceptor;
  ServerLimits limits;
  Handler handler;
};

HttpServer::HttpServer(asio::io_context& io, ServerLimits limits, Handler handler)
    : impl_(std::make_shared<Impl>(io, limits, std::move(handler))) {}

HttpServer::~HttpServer() { StopAccepting(); }

int HttpServer::Start(const HostPort& address) {
  tcp::endpoint ep(asio::ip::make_address(address.host), static_cast<unsigned short>(address.port));
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  const int port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->io, impl_->Accept(), asio::detached);
  return port;
}

void HttpServer::StopAccepting() {
  asio::post(impl_->io, [impl = impl_] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
}

}  // namespace toolgate::api
