// A small downstream for trying toolgate by hand (`make run` starts two): answers POST /{tool} with
// JSON after a little latency, fails a share of calls with 503, and serves GET /health.
//
//   demo_downstream --port 9101 --name crm [--fail-percent 5] [--latency-ms 20]

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <random>
#include <string>

#include "CLI/CLI.hpp"
#include "api/http.h"
#include "nlohmann/json.hpp"

namespace asio = boost::asio;
using toolgate::api::HttpRequest;
using toolgate::api::HttpResponse;

int main(int argc, char** argv) {
  CLI::App app{"demo downstream for toolgate"};
  int port = 9101, fail_percent = 5, latency_ms = 20;
  std::string name = "demo";
  app.add_option("--port", port);
  app.add_option("--name", name);
  app.add_option("--fail-percent", fail_percent)->check(CLI::Range(0, 100));
  app.add_option("--latency-ms", latency_ms)->check(CLI::Range(0, 60000));
  CLI11_PARSE(app, argc, argv);

  asio::io_context io;
  std::mt19937 rng(std::random_device{}());
  toolgate::api::HttpServer server(io, {}, [&](HttpRequest req) -> asio::awaitable<HttpResponse> {
    if (req.method == "GET" && req.path == "/health")
      co_return HttpResponse{200, R"({"status":"ok"})", "application/json", {}, {}, {}};
    asio::steady_timer timer(io, std::chrono::milliseconds(latency_ms));
    co_await timer.async_wait(asio::use_awaitable);
    if (static_cast<int>(rng() % 100) < fail_percent) {
      co_return HttpResponse{503, R"({"error":"demo failure"})", "application/json", {}, {}, {}};
    }
    nlohmann::json input = nlohmann::json::parse(req.body, nullptr, false);
    nlohmann::json out = {{"connector", name},
                          {"tool", req.path.substr(1)},
                          {"idempotency_key", req.Header("idempotency-key")},
                          {"received", input.is_discarded() ? nlohmann::json(nullptr) : input}};
    co_return HttpResponse{200, out.dump(), "application/json", {}, {}, {}};
  });
  server.Start({"127.0.0.1", port});
  std::printf("demo downstream '%s' on http://127.0.0.1:%d\n", name.c_str(), port);
  std::fflush(stdout);
  io.run();
}
