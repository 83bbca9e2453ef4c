#pragma once

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <atomic>
#include <string>

#include "toolgate/config.h"
#include "toolgate/engine/slo_evaluator.h"

namespace toolgate::api {

namespace asio = boost::asio;

// Alarm changes POSTed as JSON to [alerts] webhook_url, on the event loop, never blocking a call:
// up to 5 attempts with backoff (1, 2, 4, 8 s); at most 100 deliveries outstanding, beyond that an
// announcement is dropped (and logged) rather than queued without bound. Thread-safe.
class WebhookNotifier final : public AlarmNotifier {
 public:
  WebhookNotifier(asio::io_context& io, HostPort address, std::string path)
      : io_(io), address_(std::move(address)), path_(std::move(path)) {}
  void Notify(std::string payload) override;

 private:
  asio::awaitable<void> Deliver(std::string payload);

  asio::io_context& io_;
  HostPort address_;
  std::string path_;
  std::atomic<int> outstanding_{0};
};

}  // namespace toolgate::api
