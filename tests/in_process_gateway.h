#pragma once

// toolgate's gateway in the test's own process, on a clock the test holds: what `toolgate serve`
// runs (api::Gateway over the config's store, both listeners on loopback), for tests whose subject
// is a wait — a breaker's cooldown, a Retry-After — so they advance a ManualClock instead of sleeping
// through it. Event-loop timers (kill-switch refresh, idle timeouts) still run on real time; a test
// that needs those runs the binary (gateway_harness.h).

#include <stdlib.h>

#include <memory>
#include <string>
#include <thread>

#include "api/gateway.h"
#include "api/http.h"
#include "gateway_harness.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/config.h"

namespace toolgate::testing {

class InProcessGateway : public LoopbackGatewayClient<InProcessGateway> {
 public:
  // `clock` must outlive the gateway; start it at the real time so tokens' `exp` mean what they say.
  // `options`: e.g. a fault-injecting store between the store and the engine (GatewayOptions::wrap_store).
  InProcessGateway(std::string config_text, const Clock& clock, api::GatewayOptions options = {})
      : config_text_(std::move(config_text)), clock_(clock), options_(std::move(options)) {}
  InProcessGateway(const InProcessGateway&) = delete;
  InProcessGateway& operator=(const InProcessGateway&) = delete;
  ~InProcessGateway() {
    if (!runner_.joinable()) return;
    gateway_->Stop();
    runner_.join();
  }

  // Parses the config, opens the store, binds both listeners and serves on a thread of its own.
  bool Start() {
    setenv("TOOLGATE_JWT_SECRET", kJwtSecret, 1);
    absl::StatusOr<Config> config = ParseConfig(config_text_, "in-process.toml");
    if (!config.ok()) {
      ADD_FAILURE() << config.status();
      return false;
    }
    absl::StatusOr<std::unique_ptr<api::Gateway>> made = api::Gateway::Create(std::move(*config), clock_, options_);
    if (!made.ok()) {
      ADD_FAILURE() << made.status();
      return false;
    }
    gateway_ = std::move(*made);
    if (absl::Status started = gateway_->Start(); !started.ok()) {
      ADD_FAILURE() << started;
      return false;
    }
    runner_ = std::thread([this] { gateway_->Run(); });
    return true;
  }

  int public_port() const { return gateway_->public_port(); }
  int admin_port() const { return gateway_->admin_port(); }

 private:
  std::string config_text_;
  const Clock& clock_;
  api::GatewayOptions options_;
  std::unique_ptr<api::Gateway> gateway_;
  std::thread runner_;
};

}  // namespace toolgate::testing
