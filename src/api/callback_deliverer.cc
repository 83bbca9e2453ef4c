#include "api/callback_deliverer.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)
#include <vector>

#include "api/api_support.h"
#include "api/http.h"
#include "api/views.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"
#include "toolgate/net/tls_client_context.h"

namespace toolgate::api {

namespace {

constexpr int kMaxInFlight = 32;
// One tenant's deliveries in flight on this instance: a tenant whose receiver hangs holds at most this
// many of the kMaxInFlight, the rest stay for the others'.
constexpr int kMaxInFlightPerTenant = 8;
constexpr int64_t kNotFinalRetryMs = 500;  // the record is written just after the delivery (DynamoDB)
constexpr int64_t kFirstIdleMs = 50;

}  // namespace

std::string CallbackSignature(std::string_view secret, std::string_view delivery_id, std::string_view timestamp,
                              std::string_view body) {
  std::string signed_text;
  signed_text.reserve(delivery_id.size() + timestamp.size() + body.size() + 2);
  signed_text.append(delivery_id).append(".").append(timestamp).append(".").append(body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(signed_text.data()), signed_text.size(), mac, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[mac[i] >> 4]);
    out.push_back(kHex[mac[i] & 15]);
  }
  return out;
}

std::string ReadCallbackSecret(const QueueConfig& config) {
  if (!config.callback_secret_env.empty()) {
    const char* v = std::getenv(config.callback_secret_env.c_str());
    return v == nullptr ? "" : std::string(v);
  }
  if (!config.callback_secret_file.empty()) {
    std::ifstream in(config.callback_secret_file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  return "";
}

struct CallbackDeliverer::Impl : std::enable_shared_from_this<Impl> {
  // One claimed delivery and what to send.
  struct Job {
    CallbackDelivery delivery;
    std::string body;  // empty: nothing to send (see `drop` / `not_final`)
    bool not_final = false;
    bool gone = false;  // the execution's record is gone (retention): nothing to deliver
  };

  Impl(GatewayContext& context, asio::io_context& io_context, std::string s)
      : g(context), io(io_context), secret(std::move(s)) {
    absl::StatusOr<std::shared_ptr<const net::TlsClientContext>> t = net::MakeTlsClientContext({});
    if (t.ok())
      tls = *t;
    else
      spdlog::warn("callbacks: no TLS context ({}); https callbacks will fail", t.status().ToString());
  }

  const QueueConfig& qc() const { return g.config.queue; }
  int64_t LeaseMs() const { return int64_t{qc().callback_timeout_ms} + 30'000; }

  // Claims up to `room` due deliveries and prepares them (blocking: on the pool).
  std::vector<Job> Claim(int room) {
    std::vector<Job> jobs;
    std::map<std::string, int> taken;  // this claim's picks per tenant, beside those in flight
    auto wanted = [this, &taken](const CallbackDelivery& d) {
      int& n = taken[d.tenant_id];
      if (n + InFlightOf(d.tenant_id) >= kMaxInFlightPerTenant) return false;
      ++n;
      return true;
    };
    absl::StatusOr<std::vector<CallbackDelivery>> due = g.engine.callbacks().Due(room, wanted);
    if (!due.ok()) {
      spdlog::warn("callbacks: pending deliveries not read: {}", due.status().ToString());
      return jobs;
    }
    for (const CallbackDelivery& d : *due) {
      absl::StatusOr<std::optional<CallbackDelivery>> claimed =
          g.engine.callbacks().Claim(d, g.engine.instance_id(), LeaseMs());
      if (!claimed.ok() || !claimed->has_value()) continue;
      Job job;
      job.delivery = std::move(**claimed);
      AddInFlight(job.delivery.tenant_id, 1);
      absl::StatusOr<ExecutionRecord> rec =
          g.engine.executions().Get(job.delivery.tenant_id, job.delivery.execution_id);
      if (absl::IsNotFound(rec.status())) {
        job.gone = true;
      } else if (!rec.ok() || IsWaiting(rec->outcome)) {
        job.not_final = true;
      } else {
        absl::StatusOr<std::vector<LedgerEvent>> events = g.engine.ledger().ReadExecution(*rec);
        if (absl::IsDataLoss(events.status())) {
          // A damaged chain never heals: deliver the record's outcome without its events (and
          // `ledger verify` names the damage), rather than retry forever.
          spdlog::error("execution {}: its ledger cannot be read, its callback goes without events: {}",
                        rec->execution_id, events.status().ToString());
          job.body = ExecutionViewJson(*rec, {}).dump();
        } else if (!events.ok()) {
          job.not_final = true;
        } else {
          job.body = ExecutionViewJson(*rec, *events).dump();
        }
      }
      jobs.push_back(std::move(job));
    }
    return jobs;
  }

  int64_t BackoffMs(int64_t attempts) const {
    int64_t ms = qc().callback_backoff_ms;
    for (int64_t i = 1; i < attempts && ms < qc().callback_max_backoff_ms; ++i) ms *= 2;
    return std::min<int64_t>(ms, qc().callback_max_backoff_ms);
  }

  // After an attempt (blocking: on the pool).
  void Settle(const Job& job, bool delivered, int status, const std::string& error) {
    const CallbackDelivery& d = job.delivery;
    const int64_t now_ms = g.clock.now_epoch_ms();
    auto end = [&](std::string_view event, nlohmann::json data) {
      absl::StatusOr<bool> ended = g.engine.queued_calls().EndCallback(d, event, data);
      if (!ended.ok()) {
        spdlog::warn("callback of {}: {} not recorded: {}", d.execution_id, event, ended.status().ToString());
        if (auto r = g.engine.callbacks().Retry(d, now_ms + kNotFinalRetryMs, error); !r.ok()) {
          spdlog::warn("callback of {}: not rescheduled (its claim expires): {}", d.execution_id,
                       r.status().ToString());
        }
      }
    };
    if (delivered) {
      g.engine.metrics().CallbackAttempt(d.connector_id, "delivered");
      end("CALLBACK_DELIVERED",
          {{"delivery_id", d.delivery_id()}, {"attempts", d.attempts}, {"status", status}, {"url", d.url}});
      return;
    }
    if (d.first_attempt_ms + qc().callback_retry_s * 1000 <= now_ms) {
      spdlog::warn("callback of {}: giving up after {} attempts: {}", d.execution_id, d.attempts, error);
      g.engine.metrics().CallbackAttempt(d.connector_id, "failed");
      end("CALLBACK_FAILED",
          {{"delivery_id", d.delivery_id()}, {"attempts", d.attempts}, {"error", error}, {"url", d.url}});
      return;
    }
    g.engine.metrics().CallbackAttempt(d.connector_id, "retried");
    absl::StatusOr<bool> r = g.engine.callbacks().Retry(d, now_ms + BackoffMs(d.attempts), error);
    if (!r.ok())
      spdlog::warn("callback of {}: not rescheduled (its claim expires): {}", d.execution_id, r.status().ToString());
  }

  struct Attempt {
    bool delivered = false;
    int status = 0;  // the receiver's HTTP status, 0 when it did not answer
    std::string error;
  };

  // One signed POST of the callback to its URL; what the receiver answered, or why nothing was sent.
  asio::awaitable<Attempt> Post(const Job& job) {
    Attempt out;
    std::string& error = out.error;
    HostPort address;
    std::string path, why;
    bool https = false;
    if (secret.empty()) {
      error = "no [queue] callback secret configured";
    } else if (!ParseHttpUrl(job.delivery.url, address, path, https, why)) {
      error = "callback_url " + why;
    } else if (https && !tls) {
      error = "no TLS context for https";
    } else {
      const std::string timestamp = std::to_string(g.clock.now_epoch_ms() / 1000);
      const std::string delivery_id = job.delivery.delivery_id();
      ClientRequest req;
      req.address = address;
      req.method = "POST";
      req.target = path.empty() ? "/" : path;
      req.headers = {{"Content-Type", "application/json"},
                     {"User-Agent", "toolgate-callbacks"},
                     {"X-Toolgate-Delivery-Id", delivery_id},
                     {"X-Toolgate-Timestamp", timestamp},
                     {"X-Toolgate-Signature", CallbackSignature(secret, delivery_id, timestamp, job.body)},
                     {"X-Toolgate-Execution-Id", job.delivery.execution_id}};
      req.body = job.body;
      req.timeout = std::chrono::milliseconds(qc().callback_timeout_ms);
      req.max_response_bytes = 64 * 1024;
      if (https) req.tls = tls;
      auto call = AsyncHttpCall(std::move(req), nullptr);
      ClientResult r = co_await std::move(call);
      out.status = r.status;
      out.delivered = r.ok && r.status >= 200 && r.status < 300;
      if (!out.delivered) {
        error = r.ok ? "HTTP " + std::to_string(r.status) : r.timed_out ? "timeout" : ("no answer: " + r.error);
      }
    }
    co_return out;
  }

  // `self` keeps the counters alive while the frame lives (it may outlive the gateway's use of it).
  asio::awaitable<void> Deliver(std::shared_ptr<Impl> self, Job job) {
    struct Done {
      Impl& impl;
      std::string tenant;
      ~Done() {
        impl.AddInFlight(tenant, -1);
        --impl.in_flight;
      }
    } done{*self, job.delivery.tenant_id};
    if (job.gone) {
      auto drop = [this, &job] {
        absl::StatusOr<bool> ended = g.engine.queued_calls().EndCallback(job.delivery, "CALLBACK_FAILED", {});
        if (!ended.ok()) {
          spdlog::warn("callback of {} (execution gone): not ended (its claim expires): {}", job.delivery.execution_id,
                       ended.status().ToString());
        }
        return 0;
      };
      co_await RunBlocking(g.pool, drop);
      co_return;
    }
    if (job.not_final) {
      auto later = [this, &job] {
        absl::StatusOr<bool> r = g.engine.callbacks().Retry(job.delivery, g.clock.now_epoch_ms() + kNotFinalRetryMs,
                                                            "execution not final yet");
        if (!r.ok()) {
          spdlog::warn("callback of {}: not rescheduled (its claim expires): {}", job.delivery.execution_id,
                       r.status().ToString());
        }
        return 0;
      };
      co_await RunBlocking(g.pool, later);
      co_return;
    }
    auto post = Post(job);
    const Attempt attempt = co_await std::move(post);
    auto settle = [this, &job, &attempt] {
      Settle(job, attempt.delivered, attempt.status, attempt.error);
      return 0;
    };
    co_await RunBlocking(g.pool, settle);
  }

  asio::awaitable<void> Run() {
    auto self = shared_from_this();
    asio::steady_timer timer(io);
    int64_t idle_ms = kFirstIdleMs;
    const int64_t cap_ms = std::min<int64_t>(1000, qc().poll_interval_ms);
    while (!g.draining) {
      const int room = kMaxInFlight - in_flight.load();
      std::vector<Job> jobs;
      if (room > 0) {
        auto claim = [this, room] { return Claim(room); };
        jobs = co_await RunBlocking(g.pool, claim);
      }
      for (Job& job : jobs) {
        ++in_flight;
        asio::co_spawn(io, Deliver(self, std::move(job)), asio::detached);
      }
      idle_ms = jobs.empty() ? std::min(idle_ms * 2, cap_ms) : kFirstIdleMs;
      timer.expires_after(std::chrono::milliseconds(jobs.empty() ? idle_ms : 10));
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  int InFlightOf(const std::string& tenant) {
    absl::MutexLock lock(&tenants_mu);
    auto it = tenant_in_flight.find(tenant);
    return it == tenant_in_flight.end() ? 0 : it->second;
  }
  void AddInFlight(const std::string& tenant, int n) {
    absl::MutexLock lock(&tenants_mu);
    int& count = tenant_in_flight[tenant];
    count += n;
    if (count <= 0) tenant_in_flight.erase(tenant);
  }

  GatewayContext& g;
  asio::io_context& io;
  const std::string secret;
  std::shared_ptr<const net::TlsClientContext> tls;
  std::atomic<int> in_flight{0};
  absl::Mutex tenants_mu;
  std::map<std::string, int> tenant_in_flight ABSL_GUARDED_BY(tenants_mu);  // claimed here, not yet settled
};

CallbackDeliverer::CallbackDeliverer(GatewayContext& context, asio::io_context& io, std::string secret)
    : impl_(std::make_shared<Impl>(context, io, std::move(secret))) {}
CallbackDeliverer::~CallbackDeliverer() = default;

void CallbackDeliverer::Start() { asio::co_spawn(impl_->io, impl_->Run(), asio::detached); }

}  // namespace toolgate::api
