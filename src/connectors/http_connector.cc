#include "toolgate/connectors/http_connector.h"

#include <algorithm>
#include <chrono>
#include <ctime>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace toolgate {

std::optional<int64_t> RetryAfterSeconds(std::string_view value, int64_t now_epoch_s) {
  const std::string v(absl::StripAsciiWhitespace(absl::string_view(value.data(), value.size())));
  if (v.empty()) return std::nullopt;
  if (v.find_first_not_of("0123456789") == std::string::npos) {
    constexpr int64_t kSaturated = int64_t{1} << 40;  // far beyond any cap; never overflows
    int64_t seconds = 0;
    for (char c : v) seconds = std::min(kSaturated, seconds * 10 + (c - '0'));
    return seconds;
  }
  // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT") and
  // asctime ("Sun Nov  6 08:49:37 1994"), always in GMT.
  for (const char* format : {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    std::tm tm{};
    const char* end = strptime(v.c_str(), format, &tm);
    if (end == nullptr || *end != '\0') continue;
    const int64_t at = timegm(&tm);
    return std::max<int64_t>(0, at - now_epoch_s);
  }
  return std::nullopt;
}

DownstreamResult FromClientResult(net::ClientResult r) {
  using Kind = DownstreamResult::Kind;
  DownstreamResult result;
  if (r.ok) {
    result.kind = Kind::kResponse;
    result.status = r.status;
    result.body = std::move(r.body);
    for (const auto& [k, v] : r.headers) {
      if (k == "retry-after") {
        const auto now = std::chrono::system_clock::now().time_since_epoch();
        result.retry_after_s = RetryAfterSeconds(v, std::chrono::duration_cast<std::chrono::seconds>(now).count());
      }
    }
  } else if (r.local_resource_error) {
    result.kind = Kind::kLocalResource;
  } else if (r.tls_error) {
    result.kind = Kind::kTlsError;
  } else if (r.timed_out) {
    result.kind = Kind::kTimeout;
  } else if (r.too_large) {
    result.kind = Kind::kResponseInvalid;
  } else if (!r.connected) {
    result.kind = Kind::kConnectFailed;
  } else {
    result.kind = Kind::kConnectionLost;
  }
  if (!r.ok) result.error = std::move(r.error);
  return result;
}

absl::StatusOr<std::unique_ptr<HttpConnector>> HttpConnector::Create(const ConnectorConfig& config,
                                                                     net::ConnectionPool& pool, const Clock& clock) {
  std::shared_ptr<const net::TlsClientContext> tls;
  // One context serves the connector and its token endpoint: the system trust store, or the
  // connector's ca_file when its operator runs a private CA.
  if (config.tls || config.auth.token_tls) {
    net::TlsOptions options{config.tls_options.ca_file, config.tls_options.client_cert_file,
                            config.tls_options.client_key_file};
    absl::StatusOr<std::shared_ptr<const net::TlsClientContext>> made = net::MakeTlsClientContext(options);
    if (!made.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("connectors.", config.id, ".tls: ", made.status().message()));
    }
    tls = *std::move(made);
  }
  return std::make_unique<HttpConnector>(config, pool, clock, std::move(tls));
}

HttpConnector::HttpConnector(const ConnectorConfig& config, net::ConnectionPool& pool, const Clock& clock,
                             std::shared_ptr<const net::TlsClientContext> tls)
    : config_(config),
      pool_(pool),
      clock_(clock),
      tls_(std::move(tls)),
      credentials_(config.id, config.auth, clock, &pool, config.auth.token_tls ? tls_ : nullptr) {}

boost::asio::awaitable<DownstreamResult> HttpConnector::Attempt(const DownstreamRequest& request,
                                                                std::chrono::milliseconds timeout) {
  const auto start = clock_.now_monotonic();
  auto left = [&] {
    return std::max(std::chrono::milliseconds(1),
                    timeout - std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now_monotonic() - start));
  };
  auto send_op = Send(request, left());
  Sent sent = co_await std::move(send_op);
  // A 401 to a fetched token: the token may have been revoked early. Drop it and send once more
  // with a fresh one (design §13: not an attempt; any method, as the request was refused).
  if (sent.result.kind == DownstreamResult::Kind::kResponse && sent.result.status == 401 &&
      credentials_.RefreshesOn401()) {
    credentials_.InvalidateToken(sent.authorization);
    auto resend_op = Send(request, left());
    sent = co_await std::move(resend_op);
  }
  DownstreamResult result = std::move(sent.result);
  result.latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now_monotonic() - start).count();
  co_return result;
}

boost::asio::awaitable<HttpConnector::Sent> HttpConnector::Send(const DownstreamRequest& request,
                                                                std::chrono::milliseconds timeout) {
  const auto start = clock_.now_monotonic();
  auto headers_op = credentials_.Headers(timeout);
  absl::StatusOr<ConnectorCredentials::HeaderList> credentials = co_await std::move(headers_op);
  if (!credentials.ok()) {
    spdlog::warn("connector {}: credentials unavailable: {}", config_.id, std::string(credentials.status().message()));
    Sent failed;
    failed.result.kind = DownstreamResult::Kind::kCredentialsUnavailable;
    failed.result.error = std::string(credentials.status().message());
    co_return failed;
  }
  timeout -= std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now_monotonic() - start);
  net::ClientRequest call;
  call.address = config_.address;
  if (config_.tls) call.tls = tls_;
  call.method = request.method;
  call.target = request.target;
  call.headers = {{"Idempotency-Key", request.idempotency_key},
                  {"X-Toolgate-Execution-Id", request.execution_id},
                  {"X-Toolgate-Tenant-Id", request.tenant_id}};
  if (!request.body.empty()) call.headers.emplace_back("Content-Type", "application/json");
  std::string authorization;
  for (auto& [name, value] : *credentials) {
    if (name == "Authorization") authorization = value;
    call.headers.emplace_back(std::move(name), std::move(value));
  }
  call.body = request.body;
  call.idempotent = request.idempotent;
  call.timeout = std::max(timeout, std::chrono::milliseconds(1));
  call.max_response_bytes = config_.max_response_bytes;
  // Named: g++ 12 mishandles non-trivial temporaries inside co_await.
  auto call_op = net::AsyncHttpCall(std::move(call), &pool_);
  net::ClientResult r = co_await std::move(call_op);
  co_return Sent{FromClientResult(std::move(r)), std::move(authorization)};
}

std::chrono::milliseconds HttpConnector::Backoff(int failed_attempts) {
  // Full jitter (uniform in [0, cap]), the cap doubling from backoff_ms up to max_backoff_ms.
  const int64_t cap = std::min<int64_t>(config_.retry.max_backoff_ms,
                                        int64_t{config_.retry.backoff_ms} << std::min(failed_attempts - 1, 20));
  absl::MutexLock lock(&jitter_mu_);
  return std::chrono::milliseconds(absl::Uniform<int64_t>(absl::IntervalClosed, jitter_, 0, cap));
}

boost::asio::awaitable<DownstreamResult> HttpConnector::Call(const DownstreamRequest& request) {
  using std::chrono::milliseconds;
  const auto start = clock_.now_monotonic();
  const auto deadline = start + milliseconds(config_.timeout_ms);
  auto left = [&] { return std::chrono::duration_cast<milliseconds>(deadline - clock_.now_monotonic()); };
  std::vector<DownstreamResult::FailedAttempt> failed;
  for (int attempt = 1;; ++attempt) {
    auto attempt_op = Attempt(request, std::max(left(), milliseconds(1)));
    DownstreamResult result = co_await std::move(attempt_op);
    const RetryVerdict verdict = DecideRetry(result, request.idempotent);
    const milliseconds wait = verdict.wait_ms ? milliseconds(*verdict.wait_ms) : Backoff(attempt);
    // The next attempt needs its wait and some time of its own inside the call's timeout.
    const bool again = verdict.retry && attempt < config_.retry.max_attempts && wait + milliseconds(1) < left();
    if (!again) {
      result.failed_attempts = std::move(failed);
      result.latency_ms = std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - start).count();
      co_return result;
    }
    failed.push_back(
        {attempt,
         ClassifyDownstream(result, /*body_is_json=*/true, config_.breaker, config_.slo.latency_threshold_ms).reason,
         result.kind == DownstreamResult::Kind::kResponse ? result.status : 0, result.latency_ms});
    spdlog::info("connector {}: {} {} attempt {} failed ({}), retrying in {} ms", config_.id, request.method,
                 request.tool_name, attempt, ToString(failed.back().reason), wait.count());
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, wait);
    auto wait_op = timer.async_wait(boost::asio::use_awaitable);
    co_await std::move(wait_op);
  }
}

boost::asio::awaitable<HealthReport> HttpConnector::CheckHealth() {
  net::ClientRequest check;
  check.address = config_.address;
  if (config_.tls) check.tls = tls_;
  check.target = config_.path_prefix + config_.health_path;
  check.timeout = std::chrono::milliseconds(std::min(config_.timeout_ms, 5000));
  HealthReport report;
  report.target = (config_.tls ? "https://" : "http://") + config_.address.ToString() + check.target;
  auto check_op = net::AsyncHttpCall(std::move(check));
  net::ClientResult r = co_await std::move(check_op);
  report.status = r.status;
  report.error = r.error;
  report.healthy = r.ok && r.status >= 200 && r.status < 300;
  co_return report;
}

}  // namespace toolgate
