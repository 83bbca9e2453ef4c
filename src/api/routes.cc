#include "api/routes.h"

#include <array>

namespace toolgate::api {

namespace {

constexpr std::array kRoutes = {
    RouteSpec{"public", "GET", "/healthz"},
    RouteSpec{"public", "GET", "/readyz"},
    RouteSpec{"public", "GET", "/openapi.json"},
    RouteSpec{"public", "POST", "/v1/tools/{tool_name}/invoke"},
    RouteSpec{"public", "GET", "/v1/executions"},
    RouteSpec{"public", "GET", "/v1/executions/{execution_id}"},
    RouteSpec{"public", "DELETE", "/v1/executions/{execution_id}"},
    RouteSpec{"public", "POST", "/v1/executions/{execution_id}/replay"},
    RouteSpec{"public", "POST", "/mcp"},
    RouteSpec{"public", "GET", "/mcp"},
    RouteSpec{"public", "DELETE", "/mcp"},
    RouteSpec{"public", "GET", "/.well-known/oauth-protected-resource"},
    RouteSpec{"public", "GET", "/.well-known/oauth-protected-resource/mcp"},
    RouteSpec{"admin", "GET", "/"},
    RouteSpec{"admin", "GET", "/metrics"},
    RouteSpec{"admin", "GET", "/openapi.json"},
    RouteSpec{"admin", "GET", "/admin/status"},
    RouteSpec{"admin", "GET", "/admin/connectors"},
    RouteSpec{"admin", "POST", "/admin/connectors/{connector_id}/breaker/close"},
    RouteSpec{"admin", "POST", "/admin/connectors/{connector_id}/breaker/open"},
    RouteSpec{"admin", "PUT", "/admin/connectors/{connector_id}/limits"},
    RouteSpec{"admin", "DELETE", "/admin/connectors/{connector_id}/limits"},
    RouteSpec{"admin", "DELETE", "/admin/connectors/{connector_id}/queue"},
    RouteSpec{"admin", "GET", "/admin/kill-switches"},
    RouteSpec{"admin", "PUT", "/admin/kill-switches"},
    RouteSpec{"admin", "DELETE", "/admin/kill-switches/{scope}/{key}", true},
    RouteSpec{"admin", "GET", "/admin/slo"},
    RouteSpec{"admin", "GET", "/admin/series"},
    RouteSpec{"admin", "GET", "/admin/audit"},
    RouteSpec{"admin", "GET", "/admin/executions"},
    RouteSpec{"admin", "GET", "/admin/executions/{execution_id}"},
    RouteSpec{"admin", "POST", "/admin/executions/{execution_id}/replay"},
    RouteSpec{"admin", "POST", "/admin/replays"},
    RouteSpec{"admin", "GET", "/admin/replays"},
    RouteSpec{"admin", "GET", "/admin/replays/{job_id}"},
    RouteSpec{"admin", "DELETE", "/admin/replays/{job_id}"},
};

// The next '/'-separated segment of `s` after position `pos` (pos at a '/').
bool Matches(const RouteSpec& r, std::string_view path) {
  std::string_view p = r.pattern;
  size_t i = 0, j = 0;  // i in pattern, j in path
  while (i < p.size() && j < path.size()) {
    if (p[i] == '{') {
      const size_t close = p.find('}', i);
      const bool last = close + 1 == p.size();
      size_t end = path.find('/', j);
      if (last && r.tail_spans_segments) end = path.size();
      if (end == std::string_view::npos) end = path.size();
      if (end == j) return false;  // an empty parameter
      i = close + 1;
      j = end;
      continue;
    }
    if (p[i] != path[j]) return false;
    ++i;
    ++j;
  }
  return i == p.size() && j == path.size();
}

}  // namespace

std::span<const RouteSpec> Routes() { return kRoutes; }

std::string_view MatchRoute(std::string_view listener, std::string_view method, std::string_view path) {
  for (const RouteSpec& r : kRoutes) {
    if (r.listener == listener && r.method == method && Matches(r, path)) return r.pattern;
  }
  return "other";
}

}  // namespace toolgate::api
