#pragma once

// Every route each listener answers, as one table (design §6): the OpenAPI document lists exactly
// these (tests/openapi_test.cc checks both ways), and metrics and the access log name a request by
// its pattern from here, so label values stay a small fixed set.

#include <span>
#include <string_view>

namespace toolgate::api {

struct RouteSpec {
  std::string_view listener;  // "public" | "admin"
  std::string_view method;    // "GET", "POST", ...
  std::string_view pattern;   // OpenAPI path template: "/v1/executions/{execution_id}"
  // The last parameter may span several segments (a tenant_action kill-switch key "tenant/action").
  bool tail_spans_segments = false;
};

std::span<const RouteSpec> Routes();

// The pattern of the table's route matching (listener, method, path); "other" when none does.
std::string_view MatchRoute(std::string_view listener, std::string_view method, std::string_view path);

}  // namespace toolgate::api
