// One keep-alive HTTP call through the net layer's client to an in-process loopback server: plain
// HTTP, HTTPS on a pooled connection, and HTTPS without a pool (a handshake every call, the cost
// pooling avoids). The counter handshakes_per_1000_calls is the client pool's own count.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <filesystem>
#include <future>
#include <memory>
#include <string>

#include "tls_test_support.h"
#include "toolgate/net/http_client.h"
#include "toolgate/net/tls_client_context.h"

namespace {

using namespace toolgate;  // NOLINT: benchmark program

// A PKI and two servers (plain, TLS) for the whole run.
struct Env {
  std::string dir;
  std::string error;
  std::unique_ptr<testing::TestHttpServer> plain;
  std::unique_ptr<testing::TestHttpServer> tls;
  std::shared_ptr<const net::TlsClientContext> context;

  Env() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "toolgate-bench-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      error = "mkdtemp failed";
      return;
    }
    dir = tmpl;
    error = testing::MakeTestPki(dir);
    if (!error.empty()) return;
    plain = std::make_unique<testing::TestHttpServer>(testing::TestHttpServer::Options{});
    tls = std::make_unique<testing::TestHttpServer>(
        testing::TestHttpServer::Options{.cert_file = dir + "/server.pem", .key_file = dir + "/server.key"});
    auto made = net::MakeTlsClientContext({.ca_file = dir + "/ca.pem"});
    if (!made.ok()) {
      error = std::string(made.status().message());
      return;
    }
    context = *made;
  }
  ~Env() {
    plain.reset();
    tls.reset();
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
  }
};

Env& Shared() {
  static Env env;
  return env;
}

// range(0): 1 for HTTPS; range(1): 1 to keep connections in a pool.
void BM_KeepAliveCall(benchmark::State& state) {
  Env& env = Shared();
  if (!env.error.empty()) {
    state.SkipWithError(env.error.c_str());
    return;
  }
  const bool tls = state.range(0) == 1;
  const bool pooled = state.range(1) == 1;
  boost::asio::io_context io;  // outlives the pool's connections
  // Unpooled: a pool that keeps no idle connection, so every call connects (and handshakes) anew
  // and the pool still counts them.
  net::ConnectionPool pool(pooled ? 64 : 0);
  net::ClientRequest request;
  request.address = {"127.0.0.1", tls ? env.tls->port() : env.plain->port()};
  request.target = "/bench";
  if (tls) request.tls = env.context;
  uint64_t calls = 0;
  for (auto _ : state) {
    auto call = net::AsyncHttpCall(request, &pool);
    std::future<net::ClientResult> f = boost::asio::co_spawn(io, std::move(call), boost::asio::use_future);
    io.restart();
    io.run();
    net::ClientResult r = f.get();
    if (!r.ok) {
      state.SkipWithError(r.error.c_str());
      break;
    }
    ++calls;
  }
  if (calls > 0) {
    state.counters["handshakes_per_1000_calls"] = static_cast<double>(pool.handshakes()) * 1000.0 / calls;
    state.counters["connections_per_1000_calls"] =
        static_cast<double>(pool.stats().connections_opened) * 1000.0 / calls;
  }
}

}  // namespace

BENCHMARK(BM_KeepAliveCall)->ArgNames({"tls", "pooled"})->Args({0, 1})->Args({1, 1})->Args({1, 0})->UseRealTime();

BENCHMARK_MAIN();
