#pragma once

#include <memory>
#include <string>

#include "api/gateway_context.h"
#include "api/http.h"

namespace toolgate::api {

// The MCP front door on the public listener (design §14, §17.7): JSON-RPC over Streamable HTTP at
// /mcp (revisions 2025-06-18, 2025-11-25 and 2026-07-28) and the RFC 9728 protected-resource
// document at /.well-known/oauth-protected-resource[/mcp]. tools/call runs the same invocation path
// as POST /v1/tools/{t}/invoke (api/invocation.h).
//
// Thread-safe once SetListenPort has been called (before the listener serves).
class McpRoutes {
 public:
  // `session_key` signs Mcp-Session-Id values (McpSessionIds::DeriveKey).
  McpRoutes(GatewayContext& context, std::string session_key);
  ~McpRoutes();

  // The public listener's bound port: with [mcp] public_url unset, the public URL is
  // http://<server.listen host>:<port>. REQUIRES: called before the first Handle.
  void SetListenPort(int port);

  // True for the paths this class serves.
  static bool Serves(const std::string& path);
  asio::awaitable<HttpResponse> Handle(HttpRequest request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace toolgate::api
