#pragma once

#include <memory>

#include "api/gateway_context.h"
#include "api/http.h"

namespace toolgate::api {

// The public listener's routes (design §5, §6): /healthz, /readyz, and under /v1 (bearer JWT) invoke,
// executions and replay. Translates HTTP to the engine's requests and its answers back.
class PublicRoutes {
 public:
  explicit PublicRoutes(GatewayContext& context);
  ~PublicRoutes();
  asio::awaitable<HttpResponse> Handle(HttpRequest request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace toolgate::api
