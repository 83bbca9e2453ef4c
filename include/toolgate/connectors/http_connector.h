#pragma once

#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/connectors/credentials.h"
#include "toolgate/engine/connector.h"
#include "toolgate/net/http_client.h"

namespace toolgate {

// `kind = "http"` (design §5, §13): `POST {base_url}/{tool_name}` with the input as the JSON body and
// `Idempotency-Key`, `X-Toolgate-Execution-Id`, `X-Toolgate-Tenant-Id`, over the shared pool of
// kept-alive connections, bounded by the connector's `timeout_ms` and `max_response_bytes`.
// A connection that could not be opened for want of local descriptors, buffers or memory is
// kLocalResource (this host's trouble, not the downstream's). Thread-safe.
class HttpConnector final : public Connector {
 public:
  // `config`, `pool` and `clock` must outlive it. InvalidArgument when the connector's TLS files
  // cannot be used (naming the file).
  static absl::StatusOr<std::unique_ptr<HttpConnector>> Create(const ConnectorConfig& config, net::ConnectionPool& pool,
                                                               const Clock& clock);
  // `tls`: for an https:// base_url (and token URL): verifies the server, presents the client
  // certificate. Null for plain http.
  HttpConnector(const ConnectorConfig& config, net::ConnectionPool& pool, const Clock& clock,
                std::shared_ptr<const net::TlsClientContext> tls);
  // Retries what design §13 calls safe (DecideRetry), with the same Idempotency-Key, inside the
  // connector's timeout_ms; the result lists the attempts that were followed by another.
  boost::asio::awaitable<DownstreamResult> Call(const DownstreamRequest& request) override;
  // GET {base_url}{health_path}, 2xx is healthy (at most 5 s).
  boost::asio::awaitable<HealthReport> CheckHealth() override;

 private:
  // One attempt, bounded by `timeout`: a request, and after a 401 to a fetched token one re-send
  // with a fresh token.
  boost::asio::awaitable<DownstreamResult> Attempt(const DownstreamRequest& request, std::chrono::milliseconds timeout);
  // One request with the connector's credentials, and the Authorization it carried (to drop that
  // token after a 401; never logged or returned further).
  struct Sent {
    DownstreamResult result;
    std::string authorization;
  };
  boost::asio::awaitable<Sent> Send(const DownstreamRequest& request, std::chrono::milliseconds timeout);
  // The wait before attempt `failed_attempts` + 1.
  std::chrono::milliseconds Backoff(int failed_attempts);

  const ConnectorConfig& config_;
  net::ConnectionPool& pool_;
  const Clock& clock_;
  const std::shared_ptr<const net::TlsClientContext> tls_;
  ConnectorCredentials credentials_;
  absl::Mutex jitter_mu_;
  absl::BitGen jitter_ ABSL_GUARDED_BY(jitter_mu_);
};

// What the HTTP client's result says happened, in the engine's vocabulary (the Retry-After read from
// the headers, RetryAfterSeconds at the wall clock's now).
DownstreamResult FromClientResult(net::ClientResult r);

// A Retry-After header's wait in whole seconds (RFC 9110 §10.2.3): delay-seconds (any number of
// digits; a huge one saturates, and the classification caps it), or an HTTP-date in any of the three
// forms a recipient must accept — its distance from `now_epoch_s`, rounded up, 0 when it has passed.
// nullopt for anything else (then the header is as good as absent).
std::optional<int64_t> RetryAfterSeconds(std::string_view value, int64_t now_epoch_s);

}  // namespace toolgate
