#include "toolgate/connectors/http_connector.h"

#include <algorithm>

namespace toolgate {

namespace {

// What the HTTP client's result says happened, as the engine's vocabulary.
DownstreamResult FromClient(net::ClientResult r) {
  using Kind = DownstreamResult::Kind;
  DownstreamResult result;
  if (r.ok) {
    result.kind = Kind::kResponse;
    result.status = r.status;
    result.body = std::move(r.body);
    for (const auto& [k, v] : r.headers) {
      // Retry-After in seconds (the HTTP-date form is not honoured: it falls back to one second).
      if (k == "retry-after" && !v.empty() && v.size() < 8 && v.find_first_not_of("0123456789") == std::string::npos) {
        result.retry_after_s = std::stoll(v);
      }
    }
  } else if (r.local_resource_error) {
    result.kind = Kind::kLocalResource;
  } else if (r.timed_out) {
    result.kind = Kind::kTimeout;
  } else if (r.too_large) {
    result.kind = Kind::kResponseInvalid;
  } else if (!r.connected) {
    result.kind = Kind::kConnectFailed;
  } else {
    result.kind = Kind::kConnectionLost;
  }
  return result;
}

}  // namespace

HttpConnector::HttpConnector(const ConnectorConfig& config, net::ConnectionPool& pool, const Clock& clock)
    : config_(config), pool_(pool), clock_(clock) {}

boost::asio::awaitable<DownstreamResult> HttpConnector::Call(const DownstreamRequest& request) {
  net::ClientRequest call;
  call.address = config_.address;
  call.method = "POST";
  call.target = request.path;
  call.headers = {{"Content-Type", "application/json"},
                  {"Idempotency-Key", request.idempotency_key},
                  {"X-Toolgate-Execution-Id", request.execution_id},
                  {"X-Toolgate-Tenant-Id", request.tenant_id}};
  call.body = request.body;
  call.timeout = std::chrono::milliseconds(config_.timeout_ms);
  call.max_response_bytes = config_.max_response_bytes;
  const auto start = clock_.now_monotonic();
  // Named: g++ 12 mishandles non-trivial temporaries inside co_await.
  auto call_op = net::AsyncHttpCall(std::move(call), &pool_);
  net::ClientResult r = co_await std::move(call_op);
  DownstreamResult result = FromClient(std::move(r));
  result.latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now_monotonic() - start).count();
  co_return result;
}

boost::asio::awaitable<HealthReport> HttpConnector::CheckHealth() {
  net::ClientRequest check;
  check.address = config_.address;
  check.target = config_.path_prefix + config_.health_path;
  check.timeout = std::chrono::milliseconds(std::min(config_.timeout_ms, 5000));
  HealthReport report;
  report.target = "http://" + config_.address.ToString() + check.target;
  auto check_op = net::AsyncHttpCall(std::move(check));
  net::ClientResult r = co_await std::move(check_op);
  report.status = r.status;
  report.error = r.error;
  report.healthy = r.ok && r.status >= 200 && r.status < 300;
  co_return report;
}

Connectors MakeConnectors(const Config& config, net::ConnectionPool& pool, const Clock& clock) {
  Connectors out;
  for (const auto& [id, c] : config.connectors) out.emplace(id, std::make_unique<HttpConnector>(c, pool, clock));
  return out;
}

}  // namespace toolgate
