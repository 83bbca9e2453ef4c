#pragma once

#include <memory>

#include "api/gateway_context.h"
#include "api/http.h"

namespace toolgate::api {

class AdminReplays;

// The admin listener's routes (design §6): the dashboard, /metrics, connectors, breakers, limits, kill
// switches, SLOs and the audit. Every change is audited with its reason and requester.
class AdminRoutes {
 public:
  explicit AdminRoutes(GatewayContext& context);
  ~AdminRoutes();
  asio::awaitable<HttpResponse> Handle(HttpRequest request);
  // The operator replays and bulk replay jobs these routes serve (the gateway runs its jobs).
  AdminReplays& replays();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace toolgate::api
