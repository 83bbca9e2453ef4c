#include "api/webhook_notifier.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "api/http.h"
#include "spdlog/spdlog.h"

namespace toolgate::api {

void WebhookNotifier::Notify(std::string payload) {
  if (outstanding_.fetch_add(1) >= 100) {
    --outstanding_;
    spdlog::error("alert webhook: 100 deliveries outstanding, dropping: {}", payload);
    return;
  }
  asio::co_spawn(io_, Deliver(std::move(payload)), asio::detached);
}

asio::awaitable<void> WebhookNotifier::Deliver(std::string payload) {
  asio::steady_timer timer(io_);
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (attempt > 0) {
      timer.expires_after(std::chrono::seconds(1 << (attempt - 1)));
      co_await timer.async_wait(asio::use_awaitable);
    }
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
      --outstanding_;
      co_return;
    }
    spdlog::warn("alert webhook: attempt {} failed ({})", attempt + 1,
                 r.ok          ? "HTTP " + std::to_string(r.status)
                 : r.timed_out ? "timeout"
                               : "no connection");
  }
  spdlog::error("alert webhook: gave up after 5 attempts: {}", payload);
  --outstanding_;
}

}  // namespace toolgate::api
