#include "toolgate/connectors/credentials.h"

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <functional>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

namespace {

constexpr size_t kMaxSecretBytes = 64 * 1024;
constexpr int64_t kMaxTokenResponseBytes = 64 * 1024;
constexpr int kMaxTokenJsonDepth = 16;
constexpr int64_t kDefaultExpiresInS = 3600;
constexpr int64_t kMaxExpiresInS = 365 * 24 * 3600;
constexpr int64_t kRefreshMarginS = 60;

std::string Trimmed(std::string s) { return std::string(absl::StripAsciiWhitespace(s)); }

bool HasControlCharacter(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// Checks a secret just read; `what` names where it came from.
absl::StatusOr<std::string> CheckedSecret(std::string raw, const std::string& what) {
  std::string s = Trimmed(std::move(raw));
  if (s.empty()) return absl::FailedPreconditionError(absl::StrCat(what, " is empty"));
  if (HasControlCharacter(s)) {
    return absl::FailedPreconditionError(absl::StrCat(what, " holds a control character a header cannot carry"));
  }
  return s;
}

// A short word from the token endpoint (an OAuth2 `error` code, a token_type) fit to quote in a
// message: letters, digits, '_', '-', '.', at most 40 of them. Anything else is not quoted, since the
// endpoint's text is not ours to vouch for.
bool Quotable(const std::string& s) {
  return !s.empty() && s.size() <= 40 && std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// `expires_in` in seconds: a number or a numeric string; the default when absent or unreadable;
// clamped to [1 s, 1 year].
int64_t ExpiresInSeconds(const nlohmann::json& answer) {
  int64_t seconds = kDefaultExpiresInS;
  const auto it = answer.find("expires_in");
  if (it != answer.end()) {
    if (it->is_number()) {
      const double d = it->get<double>();
      if (std::isfinite(d))
        seconds = d > static_cast<double>(kMaxExpiresInS) ? kMaxExpiresInS : static_cast<int64_t>(d);
    } else if (it->is_string()) {
      const std::string& s = it->get_ref<const std::string&>();
      if (!s.empty() && s.size() <= 12 && s.find_first_not_of("0123456789") == std::string::npos) {
        seconds = std::stoll(s);
      }
    }
  }
  return std::clamp<int64_t>(seconds, 1, kMaxExpiresInS);
}

// How long a token that lives `expires_in_s` is served from the cache.
milliseconds CacheLifetime(int64_t expires_in_s) {
  if (expires_in_s > kRefreshMarginS) return std::chrono::seconds(expires_in_s - kRefreshMarginS);
  return milliseconds(expires_in_s * 1000 / 2);
}

// One caller waiting for a flight: its completion handler, called once with whichever comes first,
// the flight's result or the caller's timeout. The timer runs on a strand of the caller's executor,
// so its handler and the cancel that follows a landing are never concurrent.
template <typename Handler>
struct FlightWait {
  FlightWait(Handler h, asio::any_io_executor caller)
      : handler(std::move(h)), executor(caller), timer(asio::make_strand(caller)) {}

  void Complete(absl::StatusOr<std::string> result) {
    std::optional<Handler> h;
    {
      absl::MutexLock lock(&mu);
      if (!handler.has_value()) return;
      h.emplace(std::move(*handler));
      handler.reset();
    }
    // The handler resumes the caller's coroutine: on its own executor, never on the thread that
    // happened to land the flight.
    auto ex = asio::get_associated_executor(*h, executor);
    asio::post(ex, [h = std::move(*h), r = std::move(result)]() mutable { std::move(h)(std::move(r)); });
  }

  absl::Mutex mu;
  std::optional<Handler> handler ABSL_GUARDED_BY(mu);
  asio::any_io_executor executor;
  asio::steady_timer timer;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// SecretSource

SecretSource::SecretSource(std::string env, std::string file, milliseconds check_interval, const Clock& clock)
    : env_(std::move(env)), file_(std::move(file)), check_interval_(check_interval), clock_(clock) {}

std::string SecretSource::Describe() const {
  return env_.empty() ? absl::StrCat("secret file ", file_) : absl::StrCat("environment variable ", env_);
}

void SecretSource::ForceRecheck() const {
  absl::MutexLock lock(&mu_);
  next_read_ = SteadyTime::min();
}

absl::StatusOr<std::string> SecretSource::Read() const {
  if (!env_.empty()) {
    const char* value = std::getenv(env_.c_str());
    if (value == nullptr) return absl::FailedPreconditionError(absl::StrCat(Describe(), " is not set"));
    return CheckedSecret(value, Describe());
  }
  if (file_.empty())
    return absl::FailedPreconditionError("no secret configured (neither an environment variable nor a file)");

  absl::MutexLock lock(&mu_);
  const SteadyTime now = clock_.now_monotonic();
  if (file_value_.has_value() && now < next_read_) return *file_value_;
  file_value_.reset();  // a failed read below is not served from the cache

  std::ifstream in(file_, std::ios::binary);
  if (!in) {
    const std::string why = std::error_code(errno, std::generic_category()).message();
    return absl::FailedPreconditionError(absl::StrCat(Describe(), " cannot be read: ", why));
  }
  std::string raw(kMaxSecretBytes + 1, '\0');
  in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  if (in.bad()) return absl::FailedPreconditionError(absl::StrCat(Describe(), " cannot be read"));
  raw.resize(static_cast<size_t>(in.gcount()));
  if (raw.size() > kMaxSecretBytes) {
    return absl::FailedPreconditionError(absl::StrCat(Describe(), " is larger than ", kMaxSecretBytes, " bytes"));
  }
  absl::StatusOr<std::string> secret = CheckedSecret(std::move(raw), Describe());
  if (!secret.ok()) return secret.status();
  file_value_ = *secret;
  next_read_ = now + check_interval_;
  return secret;
}

// ---------------------------------------------------------------------------------------------
// ConnectorCredentials

namespace {

// A fetch in progress and the callers waiting for it. Guarded by Impl::mu.
struct Flight {
  bool landed = false;
  absl::StatusOr<std::string> result;
  std::vector<std::function<void(const absl::StatusOr<std::string>&)>> waiters;
};

// What a token fetch produced.
struct FetchedToken {
  absl::StatusOr<std::string> token;
  SteadyTime refresh_at;
};

}  // namespace

struct ConnectorCredentials::Impl : std::enable_shared_from_this<Impl> {
  Impl(std::string id, CredentialOptions opts, const Clock& c, net::ConnectionPool* p,
       std::shared_ptr<const net::TlsClientContext> tls)
      : connector_id(std::move(id)),
        options(std::move(opts)),
        clock(c),
        pool(p),
        token_tls(std::move(tls)),
        secret(options.secret_env, options.secret_file, options.file_check_interval, c) {}

  using TokenResult = absl::StatusOr<std::string>;

  const std::string connector_id;
  const CredentialOptions options;
  const Clock& clock;
  net::ConnectionPool* const pool;
  const std::shared_ptr<const net::TlsClientContext> token_tls;
  const SecretSource secret;

  absl::Mutex mu;
  std::string token ABSL_GUARDED_BY(mu);  // empty: none cached
  SteadyTime token_refresh_at ABSL_GUARDED_BY(mu);
  std::shared_ptr<Flight> in_flight ABSL_GUARDED_BY(mu);
  absl::Status last_failure ABSL_GUARDED_BY(mu);
  SteadyTime failure_until ABSL_GUARDED_BY(mu);

  absl::Status Unavailable(const std::string& what) const {
    return absl::UnavailableError(absl::StrCat("token endpoint ", options.token_url, " ", what));
  }

  // The access token: the cached one, or the result of the flight in progress or of a new one.
  asio::awaitable<TokenResult> AccessToken(milliseconds timeout) {
    std::shared_ptr<Flight> flight;
    bool start = false;
    {
      absl::MutexLock lock(&mu);
      const SteadyTime now = clock.now_monotonic();
      if (!token.empty() && now < token_refresh_at) co_return token;
      if (!last_failure.ok() && now < failure_until) co_return last_failure;
      if (in_flight != nullptr) {
        flight = in_flight;
      } else if (timeout > milliseconds(0)) {
        flight = in_flight = std::make_shared<Flight>();
        start = true;
      }
    }
    if (flight == nullptr) co_return Unavailable("was not asked: the call had no time left to fetch a token");
    if (start) {
      auto executor = co_await asio::this_coro::executor;
      asio::co_spawn(executor, RunFlight(shared_from_this(), flight), asio::detached);
    }
    auto wait = WaitFor(flight, timeout);
    co_return co_await std::move(wait);
  }

  // Waits for `flight` to land, at most `timeout`.
  asio::awaitable<TokenResult> WaitFor(std::shared_ptr<Flight> flight, milliseconds timeout) {
    auto caller = co_await asio::this_coro::executor;
    timeout = std::min<milliseconds>(timeout, std::chrono::hours(24));  // no overflow in the timer
    const std::shared_ptr<Impl> self = shared_from_this();
    auto initiate = [self, flight, caller, timeout](auto handler) {
      using Wait = FlightWait<decltype(handler)>;
      auto wait = std::make_shared<Wait>(std::move(handler), caller);
      // The timer is armed before the wait is registered, so a landing that cancels it always finds
      // the wait under way.
      wait->timer.expires_after(timeout);
      wait->timer.async_wait([self, wait, timeout](const boost::system::error_code& ec) {
        if (ec == asio::error::operation_aborted) return;
        wait->Complete(
            self->Unavailable(absl::StrCat("gave no token within the call's timeout (", timeout.count(), " ms)")));
      });
      absl::MutexLock lock(&self->mu);
      if (flight->landed) {
        wait->Complete(flight->result);
        asio::post(wait->timer.get_executor(), [wait] { wait->timer.cancel(); });
        return;
      }
      flight->waiters.push_back([wait](const TokenResult& result) {
        wait->Complete(result);
        asio::post(wait->timer.get_executor(), [wait] { wait->timer.cancel(); });
      });
    };
    auto op = asio::async_initiate<decltype(asio::use_awaitable), void(TokenResult)>(std::move(initiate),
                                                                                     asio::use_awaitable);
    co_return co_await std::move(op);
  }

  // Fetches a token and lands `flight` with it. Keeps `self` alive while it runs.
  static asio::awaitable<void> RunFlight(std::shared_ptr<Impl> self, std::shared_ptr<Flight> flight) {
    // If the io_context is torn down mid-fetch, the flight still ends, so a later call can start one.
    struct Abandon {
      Impl* impl;
      Flight* flight;
      ~Abandon() {
        std::vector<std::function<void(const TokenResult&)>> dropped;  // destroyed after the unlock
        absl::MutexLock lock(&impl->mu);
        if (flight->landed) return;
        flight->landed = true;
        flight->result = absl::UnavailableError("token fetch abandoned: the gateway is stopping");
        if (impl->in_flight.get() == flight) impl->in_flight.reset();
        dropped.swap(flight->waiters);
      }
    } abandon{self.get(), flight.get()};
    auto fetch = self->Fetch();
    FetchedToken fetched = co_await std::move(fetch);
    self->Land(*flight, fetched);
  }

  void Land(Flight& flight, const FetchedToken& fetched) {
    std::vector<std::function<void(const TokenResult&)>> waiters;
    {
      absl::MutexLock lock(&mu);
      if (flight.landed) return;
      flight.landed = true;
      flight.result = fetched.token;
      if (in_flight.get() == &flight) in_flight.reset();
      if (fetched.token.ok()) {
        token = *fetched.token;
        token_refresh_at = fetched.refresh_at;
        last_failure = absl::OkStatus();
      } else {
        last_failure = fetched.token.status();
        failure_until = clock.now_monotonic() + options.failure_holdoff;
      }
      waiters.swap(flight.waiters);
    }
    for (auto& wake : waiters) wake(fetched.token);
  }

  // One token request and its answer (RFC 6749 §4.4).
  asio::awaitable<FetchedToken> Fetch() {
    FetchedToken out;
    absl::StatusOr<std::string> client_secret = secret.Read();
    if (!client_secret.ok()) {
      out.token = client_secret.status();
      spdlog::warn("connector {}: cannot read the OAuth2 client secret: {}", connector_id,
                   std::string(out.token.status().message()));
      co_return out;
    }
    net::ClientRequest request;
    request.address = options.token_address;
    request.method = "POST";
    request.target = options.token_target;
    request.timeout = options.token_timeout;
    request.max_response_bytes = kMaxTokenResponseBytes;
    const std::string basic = absl::StrCat(FormUrlEncode(options.client_id), ":", FormUrlEncode(*client_secret));
    request.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                       {"Accept", "application/json"},
                       {"Authorization", absl::StrCat("Basic ", absl::Base64Escape(basic))}};
    request.body = "grant_type=client_credentials";
    if (!options.scope.empty()) absl::StrAppend(&request.body, "&scope=", FormUrlEncode(options.scope));
    if (!options.audience.empty()) absl::StrAppend(&request.body, "&audience=", FormUrlEncode(options.audience));

    const SteadyTime sent_at = clock.now_monotonic();
    auto send = SendTokenRequest(std::move(request));
    absl::StatusOr<net::ClientResult> answer = co_await std::move(send);
    if (!answer.ok()) {
      out.token = answer.status();
    } else {
      int64_t expires_in_s = 0;
      out.token = TokenFrom(*answer, expires_in_s);
      if (out.token.ok()) {
        out.refresh_at = sent_at + CacheLifetime(expires_in_s);
        spdlog::info("connector {}: OAuth2 token from {} (expires in {} s)", connector_id, options.token_url,
                     expires_in_s);
      }
    }
    if (!out.token.ok()) spdlog::warn("connector {}: {}", connector_id, std::string(out.token.status().message()));
    co_return out;
  }

  // The one place a token request goes out.
  asio::awaitable<absl::StatusOr<net::ClientResult>> SendTokenRequest(net::ClientRequest request) {
    if (options.token_tls) {
      if (token_tls == nullptr) {
        co_return absl::FailedPreconditionError(
            absl::StrCat("token endpoint ", options.token_url, " is https:// but no TLS context was given"));
      }
      request.tls = token_tls;
    }
    request.idempotent = true;  // asking for a token again is harmless
    auto call = net::AsyncHttpCall(std::move(request), pool);
    net::ClientResult result = co_await std::move(call);
    co_return result;
  }

  // The access token in a token endpoint's answer; `expires_in_s` is set when there is one. The
  // answer's body is never quoted: an endpoint may echo what it was sent.
  TokenResult TokenFrom(const net::ClientResult& r, int64_t& expires_in_s) const {
    if (!r.ok) {
      if (r.timed_out) return Unavailable(absl::StrCat("did not answer within ", options.token_timeout.count(), " ms"));
      if (r.too_large) return Unavailable(absl::StrCat("answered with more than ", kMaxTokenResponseBytes, " bytes"));
      return Unavailable(absl::StrCat("failed: ", r.error));
    }
    nlohmann::json answer = JsonDepthWithin(r.body, kMaxTokenJsonDepth)
                                ? nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false)
                                : nlohmann::json(nlohmann::json::value_t::discarded);
    if (r.status < 200 || r.status > 299) {
      // RFC 6749 §5.2: the error code ("invalid_client", ...) helps an operator and holds no secret.
      std::string code;
      if (answer.is_object()) {
        const auto error = answer.find("error");
        if (error != answer.end() && error->is_string()) code = error->get<std::string>();
      }
      return Unavailable(Quotable(code) ? absl::StrCat("answered ", r.status, " (", code, ")")
                                        : absl::StrCat("answered ", r.status));
    }
    if (!answer.is_object()) return Unavailable(absl::StrCat("answered ", r.status, " without a JSON object"));
    const auto access = answer.find("access_token");
    if (access == answer.end() || !access->is_string() || access->get_ref<const std::string&>().empty()) {
      return Unavailable(absl::StrCat("answered ", r.status, " without an access_token"));
    }
    const std::string& token = access->get_ref<const std::string&>();
    if (HasControlCharacter(token) || token.find(' ') != std::string::npos) {
      return Unavailable(absl::StrCat("answered ", r.status, " with an access_token a header cannot carry"));
    }
    const auto type = answer.find("token_type");
    if (type != answer.end()) {
      const std::string t = type->is_string() ? type->get<std::string>() : std::string();
      if (!absl::EqualsIgnoreCase(t, "bearer")) {
        return Unavailable(Quotable(t) ? absl::StrCat("answered token_type ", t, ", not Bearer")
                                       : std::string("answered a token_type that is not Bearer"));
      }
    }
    expires_in_s = ExpiresInSeconds(answer);
    return token;
  }
};

ConnectorCredentials::ConnectorCredentials(std::string connector_id, CredentialOptions options, const Clock& clock,
                                           net::ConnectionPool* pool,
                                           std::shared_ptr<const net::TlsClientContext> token_tls)
    : impl_(std::make_shared<Impl>(std::move(connector_id), std::move(options), clock, pool, std::move(token_tls))) {}

ConnectorCredentials::~ConnectorCredentials() = default;

bool ConnectorCredentials::RefreshesOn401() const {
  return impl_->options.type == CredentialOptions::Type::kOAuth2ClientCredentials;
}

const std::string& ConnectorCredentials::connector_id() const { return impl_->connector_id; }

asio::awaitable<absl::StatusOr<ConnectorCredentials::HeaderList>> ConnectorCredentials::Headers(milliseconds timeout) {
  using Type = CredentialOptions::Type;
  const CredentialOptions& options = impl_->options;
  switch (options.type) {
    case Type::kNone:
      co_return HeaderList{};
    case Type::kBearer:
    case Type::kHeader: {
      absl::StatusOr<std::string> value = impl_->secret.Read();
      if (!value.ok()) co_return value.status();
      if (options.type == Type::kBearer) co_return HeaderList{{"Authorization", absl::StrCat("Bearer ", *value)}};
      co_return HeaderList{{options.header_name, *std::move(value)}};
    }
    case Type::kOAuth2ClientCredentials: {
      auto get = impl_->AccessToken(timeout);
      absl::StatusOr<std::string> token = co_await std::move(get);
      if (!token.ok()) co_return token.status();
      co_return HeaderList{{"Authorization", absl::StrCat("Bearer ", *token)}};
    }
  }
  co_return absl::InternalError("unknown credential type");
}

void ConnectorCredentials::InvalidateToken(const std::string& token_that_failed) {
  if (impl_->options.type != CredentialOptions::Type::kOAuth2ClientCredentials) {
    impl_->secret.ForceRecheck();
    return;
  }
  std::string failed = token_that_failed;
  if (failed.size() > 7 && absl::EqualsIgnoreCase(failed.substr(0, 7), "bearer ")) failed = Trimmed(failed.substr(7));
  absl::MutexLock lock(&impl_->mu);
  if (!failed.empty() && impl_->token == failed) {
    impl_->token.clear();
    spdlog::info("connector {}: the downstream refused the OAuth2 token; fetching a new one", impl_->connector_id);
  }
}

std::string FormUrlEncode(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (absl::ascii_isalnum(c) || c == '*' || c == '-' || c == '.' || c == '_') {
      out.push_back(ch);
    } else if (c == ' ') {
      out.push_back('+');
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

}  // namespace toolgate
