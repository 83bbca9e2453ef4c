#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <future>

#include "api/http.h"

namespace toolgate::api {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

asio::awaitable<ClientResult> AsyncHttpCall(ClientRequest request) {
  ClientResult out;
  auto executor = co_await asio::this_coro::executor;
  beast::tcp_stream stream(executor);
  stream.expires_after(request.timeout);
  beast::error_code ec;
  tcp::endpoint endpoint;
  {
    boost::system::error_code addr_ec;
    const auto addr = asio::ip::make_address(request.address.host, addr_ec);
    if (!addr_ec) {
      endpoint = tcp::endpoint(addr, static_cast<unsigned short>(request.address.port));
    } else {
      tcp::resolver resolver(executor);
      auto results = co_await resolver.async_resolve(request.address.host, std::to_string(request.address.port),
                                                     asio::redirect_error(asio::use_awaitable, ec));
      if (ec || results.empty()) {
        out.error = "cannot resolve " + request.address.host + ": " + ec.message();
        co_return out;
      }
      endpoint = *results.begin();
    }
  }
  co_await stream.async_connect(endpoint, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.timed_out = ec == beast::error::timeout;
    out.error = "connect: " + ec.message();
    co_return out;
  }
  out.connected = true;

  http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
  req.set(http::field::host, request.address.ToString());
  req.set(http::field::user_agent, "toolgate");
  for (const auto& [k, v] : request.headers) req.set(k, v);
  req.keep_alive(false);
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    req.body() = request.body;
    req.prepare_payload();
  }
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.timed_out = ec == beast::error::timeout;
    out.error = "send: " + ec.message();
    co_return out;
  }
  out.sent = true;

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(static_cast<std::uint64_t>(request.max_response_bytes));
  parser.header_limit(64 * 1024);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.timed_out = ec == beast::error::timeout;
    out.too_large = ec == http::error::body_limit;
    out.error = "receive: " + ec.message();
    co_return out;
  }
  auto res = parser.release();
  out.ok = true;
  out.status = static_cast<int>(res.result_int());
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers.emplace_back(std::move(name), std::string(f.value()));
  }
  out.body = std::move(res.body());
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  co_return out;
}

ClientResult HttpCall(ClientRequest request) {
  asio::io_context io;
  std::future<ClientResult> f = asio::co_spawn(io, AsyncHttpCall(std::move(request)), asio::use_future);
  io.run();
  return f.get();
}

}  // namespace toolgate::api
