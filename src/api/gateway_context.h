#pragma once

// What the routes of both listeners share with the gateway that owns it (internal to the api layer).

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/thread_pool.hpp>
#include <atomic>
#include <string>

#include "api/http.h"
#include "api/recent_calls.h"
#include "toolgate/auth/jwt_verifier.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/engine/connector.h"
#include "toolgate/engine/engine.h"

namespace toolgate::api {

// Owned by the Gateway, which outlives every route and coroutine that uses it.
struct GatewayContext {
  const Config& config;
  const Clock& clock;
  Engine& engine;
  asio::thread_pool& pool;  // blocking store work, never on the event loop
  // /readyz's read and probe write, apart from `pool`: a held write lock fills `pool` with calls'
  // writes waiting out the busy timeout, and readiness must not queue behind them.
  asio::thread_pool& health_pool;
  ConnectionPool& downstream_pool;  // kept-alive connections to downstreams
  auth::JwtVerifier& verifier;
  const std::string& admin_token;  // empty: the admin listener needs no token (loopback only)
  RecentCalls& recent;
  std::atomic<int>& in_flight;  // invocations between admission and answer (drained on stop)
  std::atomic<bool>& draining;
  const Connectors& connectors;  // one per configured connector
};

}  // namespace toolgate::api
