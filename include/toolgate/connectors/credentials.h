#pragma once

// Per-connector credentials (design §13 "Credentials"): the headers a downstream call carries to
// authenticate, read from an environment variable, from a file that may be rotated, or fetched with
// the OAuth2 client-credentials grant. Secrets never leave this component except in the headers it
// returns: no error message and no log line holds a secret or a token.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/domain/credential_options.h"
#include "toolgate/net/http_client.h"
#include "toolgate/net/tls_client_context.h"

namespace toolgate {

// One secret, from an environment variable or from a file (exactly one of `env` and `file` is
// non-empty).
//
// The environment variable is read on every Read() (getenv is cheap). The file is read on first use
// and then again at most once per `check_interval` of the Clock's monotonic time, so a rotated secret
// is seen within that interval; in between, the value read last is returned. Reading the whole
// (small) file rather than comparing mtimes means a rewrite within the file system's timestamp
// granularity is not missed. The read happens on the calling thread (an event-loop thread too): one
// open and read of a file of at most 64 KiB per interval. Leading and trailing whitespace (the usual
// trailing newline) is trimmed.
//
// Read() returns kFailedPrecondition — an operator must fix the environment — when the variable is
// unset or empty, the file cannot be opened or read, is empty, or is larger than 64 KiB, or the secret
// holds a control character (it would split a header). The message names the variable or the path,
// never the value. A failed read is not remembered: the next Read() tries again. A file that was
// readable and then disappears is an error at the next read, not the old value.
//
// Thread-safe.
class SecretSource {
 public:
  // `clock` must outlive it.
  SecretSource(std::string env, std::string file, std::chrono::milliseconds check_interval, const Clock& clock);

  absl::StatusOr<std::string> Read() const;
  // The next Read() reads the file whatever the interval (after a downstream refused the secret).
  void ForceRecheck() const;
  // "environment variable NAME" or "secret file PATH": for messages.
  std::string Describe() const;

 private:
  const std::string env_;
  const std::string file_;
  const std::chrono::milliseconds check_interval_;
  const Clock& clock_;
  mutable absl::Mutex mu_;
  mutable std::optional<std::string> file_value_ ABSL_GUARDED_BY(mu_);  // the last good read
  mutable std::chrono::steady_clock::time_point next_read_ ABSL_GUARDED_BY(mu_);
};

// The credentials of one connector on one instance: build one per connector at start and keep it
// as long as the connector. Thread-safe: Headers() and InvalidateToken() may be called concurrently
// from coroutines on any number of threads.
//
// kBearer and kHeader read the secret through a SecretSource on every call. kOAuth2ClientCredentials
// fetches an access token with the client-credentials grant (RFC 6749 §4.4):
//   POST <token_target> HTTP/1.1            (to token_address)
//   Content-Type: application/x-www-form-urlencoded
//   Authorization: Basic base64(form-urlencode(client_id) ":" form-urlencode(client_secret))
//   grant_type=client_credentials[&scope=...][&audience=...]     (empty ones are left out)
// Client authentication is HTTP Basic with both parts form-urlencoded first, as RFC 6749 §2.3.1
// says (so a secret holding ':' or '%' arrives intact). The answer must be 2xx JSON with a non-empty
// string `access_token`; `token_type`, when present, must be "bearer" in any case; `expires_in` (a
// number or a numeric string) is 3600 s when absent or unreadable and is clamped to [1 s, 1 year].
// The token is cached until 60 s before it expires, counted from when its request was sent; a token
// that lives 60 s or less is cached for half its life.
//
// Single flight: at most one token fetch is in flight per ConnectorCredentials. A caller that finds
// no valid token starts one (unless one is running) and waits for it; every caller waits at most its
// own timeout, and all callers waiting when the fetch ends get its result, success or failure. The
// fetch itself is bounded by `token_timeout` rather than by the caller that started it, so a caller
// with little time left does not doom the fetch for the others. After a failed fetch, calls get that
// failure without a new fetch for `failure_holdoff`; the first call after that fetches again.
class ConnectorCredentials {
 public:
  using HeaderList = std::vector<std::pair<std::string, std::string>>;

  // `clock` and `pool` (when not null, token requests reuse its kept-alive connections) must outlive
  // every fetch, i.e. run while the io_context runs the calls. The object itself may be destroyed
  // while a fetch is still in flight (the fetch keeps what it needs alive).
  // `token_tls` verifies an https:// token endpoint (required for one; see MakeConnectors).
  ConnectorCredentials(std::string connector_id, CredentialOptions options, const Clock& clock,
                       net::ConnectionPool* pool = nullptr,
                       std::shared_ptr<const net::TlsClientContext> token_tls = nullptr);
  ~ConnectorCredentials();
  ConnectorCredentials(const ConnectorCredentials&) = delete;
  ConnectorCredentials& operator=(const ConnectorCredentials&) = delete;

  // The headers the downstream call must carry, to be added to the request as they are: none for
  // kNone; {"Authorization", "Bearer <token>"} for kBearer and kOAuth2ClientCredentials;
  // {header_name, <value>} for kHeader. `timeout` bounds the whole of it — a token fetch, or the wait
  // for a fetch another caller started — and is meant to be the time left of the call's own timeout
  // (§17.10: obtaining the token is part of the call). Returns:
  //   kFailedPrecondition  the secret (the OAuth2 client secret too) cannot be read (SecretSource).
  //   kUnavailable         the token endpoint failed: connection failure, no answer within
  //                        token_timeout or within `timeout`, a non-2xx status, malformed JSON, no
  //                        access_token, a token_type other than bearer; or `timeout` was not
  //                        positive when a fetch was needed. The message names the token URL and the
  //                        status when one came ("token endpoint http://h:p/token answered 500").
  //   kUnimplemented       token_tls: the HTTP client has no TLS yet.
  // The HTTP connector maps any error to FAILED `credentials_unavailable`. No message ever holds a
  // secret or a token.
  boost::asio::awaitable<absl::StatusOr<HeaderList>> Headers(std::chrono::milliseconds timeout);

  // The downstream answered 401 to a call that carried `token_that_failed`: the access token, with or
  // without the "Bearer " prefix (the Authorization value Headers() returned may be passed as is).
  // For kOAuth2ClientCredentials the cached token is dropped only if it is still that one, so any
  // number of concurrent 401s for one token cause one new fetch, and a 401 for a token already
  // replaced changes nothing; the caller then re-sends once with a fresh Headers(). For kBearer and
  // kHeader the secret file (if any) is read again on the next Headers(), whatever the interval.
  void InvalidateToken(const std::string& token_that_failed);

  // Whether a re-send after a 401 can carry a different token (kOAuth2ClientCredentials): the HTTP
  // connector re-sends once only then (§13).
  bool RefreshesOn401() const;

  const std::string& connector_id() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with the fetch in flight
};

// application/x-www-form-urlencoded encoding of one name or value (RFC 6749 Appendix B): ASCII
// letters, digits and "*-._" as they are, space as '+', every other byte as %XX.
std::string FormUrlEncode(const std::string& s);

}  // namespace toolgate
