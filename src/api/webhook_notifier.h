#pragma once

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/config.h"
#include "toolgate/engine/slo_evaluator.h"

namespace toolgate::api {

namespace asio = boost::asio;

// Alarm changes POSTed as JSON to [alerts] webhook_url, on the event loop, never blocking a call:
// tried until delivered (a 2xx) or superseded, with backoff (`first_backoff`, doubling: 1, 2, 4, ...
// 64 s, then every 64 s). One alarm's notifications are delivered one at a time, in the order they
// were given: a notification given while an older one of the same alarm is still being tried
// supersedes it (the older one's retries stop, its backoff is cut short, and it is not delivered
// after the newer one). The loop must be run by one thread (the gateway's main loop). At most 100
// alarms with deliveries outstanding; beyond that an announcement is dropped (and logged) rather
// than queued without bound. One cut short by shutdown is logged. Thread-safe.
class WebhookNotifier final : public AlarmNotifier {
 public:
  WebhookNotifier(asio::io_context& io, HostPort address, std::string path,
                  std::chrono::milliseconds first_backoff = std::chrono::seconds(1))
      : io_(io), address_(std::move(address)), path_(std::move(path)), first_backoff_(first_backoff) {}
  void Notify(std::string alarm_key, std::string payload) override;
  // Alarms whose delivery has not ended (delivered or superseded) yet (tests).
  size_t alarms_outstanding() const {
    absl::MutexLock lock(&mu_);
    return queues_.size();
  }

 private:
  // One alarm's deliveries: the newest notification not yet taken, and how many were given.
  struct AlarmQueue {
    std::optional<std::string> next;
    uint64_t generation = 0;
    // The running delivery's backoff timer: a newer notification cancels its wait (on the loop), so
    // it goes out at once instead of at the end of an older one's backoff (up to 64 s).
    std::shared_ptr<asio::steady_timer> backoff;
  };
  asio::awaitable<void> Deliver(std::string alarm_key);
  bool Superseded(const std::string& alarm_key, uint64_t generation) const;

  asio::io_context& io_;
  HostPort address_;
  std::string path_;
  std::chrono::milliseconds first_backoff_;
  mutable absl::Mutex mu_;
  std::map<std::string, AlarmQueue> queues_ ABSL_GUARDED_BY(mu_);  // alarms with a delivery running
};

}  // namespace toolgate::api
