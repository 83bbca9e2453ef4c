#include "api/webhook_notifier.h"

#include <algorithm>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/cleanup/cleanup.h"
#include "api/http.h"
#include "spdlog/spdlog.h"

namespace toolgate::api {

namespace {
constexpr size_t kMaxAlarmsOutstanding = 100;
constexpr int kLoggedAttempts = 5;       // each failed attempt is logged up to here, then every 10th
constexpr int kMaxBackoffDoublings = 6;  // the wait between attempts stops growing at 64 first backoffs
}  // namespace

void WebhookNotifier::Notify(std::string alarm_key, std::string payload) {
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(alarm_key);
  if (it != queues_.end()) {  // a delivery of this alarm runs: it takes this one next, dropping any older
    it->second.next = std::move(payload);
    ++it->second.generation;
    // Cut short a backoff it is waiting out; the timer is the loop's, so cancelled on the loop (a
    // cancel that comes when no wait is pending does nothing: the delivery sees the newer
    // generation after its attempt).
    if (it->second.backoff) asio::post(io_, [timer = it->second.backoff] { timer->cancel(); });
    return;
  }
  if (queues_.size() >= kMaxAlarmsOutstanding) {
    spdlog::error("alert webhook: {} alarms' deliveries outstanding, dropping: {}", kMaxAlarmsOutstanding, payload);
    return;
  }
  queues_[alarm_key] = AlarmQueue{std::move(payload), 1, nullptr};
  asio::co_spawn(io_, Deliver(std::move(alarm_key)), asio::detached);
}

bool WebhookNotifier::Superseded(const std::string& alarm_key, uint64_t generation) const {
  absl::MutexLock lock(&mu_);
  return queues_.at(alarm_key).generation != generation;
}

asio::awaitable<void> WebhookNotifier::Deliver(std::string alarm_key) {
  // However this delivery ends (an exception too), its alarm's queue goes with it: left behind, every
  // later change of the alarm would wait for a delivery that no longer runs.
  bool forgotten = false;   // the queue was erased under the lock that found it empty
  std::string undelivered;  // the notification being tried, while it is not delivered
  absl::Cleanup forget = [this, &alarm_key, &forgotten, &undelivered] {
    if (forgotten) return;
    // Only a delivery cut short ends here (the loop stopped: the process is shutting down).
    if (!undelivered.empty()) spdlog::error("alert webhook: not delivered before shutdown: {}", undelivered);
    absl::MutexLock lock(&mu_);
    queues_.erase(alarm_key);
  };
  auto timer = std::make_shared<asio::steady_timer>(io_);
  {
    absl::MutexLock lock(&mu_);
    queues_.at(alarm_key).backoff = timer;
  }
  for (;;) {
    std::string payload;
    uint64_t generation = 0;
    {
      absl::MutexLock lock(&mu_);
      AlarmQueue& q = queues_.at(alarm_key);
      if (!q.next) {
        queues_.erase(alarm_key);
        forgotten = true;
        co_return;
      }
      payload = std::move(*q.next);
      q.next.reset();
      generation = q.generation;
    }
    // Until delivered or superseded: an alarm's last word is never dropped while the receiver is
    // down (the claim in the store says it was announced; nothing would send it again).
    undelivered = payload;
    for (int attempt = 0;; ++attempt) {
      if (attempt > 0) {
        if (Superseded(alarm_key, generation)) break;
        timer->expires_after(first_backoff_ * (1 << std::min(attempt - 1, kMaxBackoffDoublings)));
        boost::system::error_code cancelled;  // by a newer notification: checked just below
        co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, cancelled));
      }
      if (Superseded(alarm_key, generation)) break;
      ClientRequest req;
      req.address = address_;
      req.method = "POST";
      req.target = path_;
      req.headers = {{"Content-Type", "application/json"}};
      req.body = payload;
      req.timeout = std::chrono::seconds(5);
      req.max_response_bytes = 64 * 1024;
      auto call = AsyncHttpCall(std::move(req), nullptr);
      ClientResult r = co_await std::move(call);
      if (r.ok && r.status >= 200 && r.status < 300) {
        if (attempt >= kLoggedAttempts)
          spdlog::info("alert webhook: {} delivered at attempt {}", alarm_key, attempt + 1);
        break;
      }
      if (attempt < kLoggedAttempts || (attempt + 1) % 10 == 0) {
        spdlog::warn("alert webhook: {} attempt {} failed ({}); trying again until delivered or superseded", alarm_key,
                     attempt + 1,
                     r.ok          ? "HTTP " + std::to_string(r.status)
                     : r.timed_out ? "timeout"
                                   : "no connection");
      }
      if (Superseded(alarm_key, generation)) {
        spdlog::info("alert webhook: {} superseded by a newer change of the alarm, not retried", alarm_key);
      }
    }
    undelivered.clear();
  }
}

}  // namespace toolgate::api
