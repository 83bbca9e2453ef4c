#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/store/item_store.h"

namespace toolgate::api {

// How a Gateway is built beyond its Config (at namespace scope, for a default argument).
struct GatewayOptions {
  // For tests: Engine::Options::wrap_store (a fault-injecting store between the opened store and
  // everything over it).
  std::function<std::unique_ptr<store::ItemStore>(store::ItemStore& opened)> wrap_store;
};

// The `toolgate serve` process: the store, the services, the invoker, the public and admin
// listeners (design §6). Create, Start, then Run until Stop (`toolgate serve` calls Stop on
// SIGINT/SIGTERM).
class Gateway {
 public:
  // kInvalidArgument for a config it cannot serve (e.g. a non-loopback admin listener without a token).
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(Config config, const Clock& clock,
                                                         GatewayOptions options = {});
  ~Gateway();

  // Opens the store and binds both listeners.
  absl::Status Start();
  int public_port() const;
  int admin_port() const;

  // Serves until Stop(); then stops accepting, lets in-flight invocations finish (their slots are
  // released and their outcomes recorded), and returns. Process signals are the caller's business:
  // the library installs no handler.
  void Run();
  // Thread-safe; a second call does nothing.
  void Stop();

  struct Impl;

 private:
  explicit Gateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace toolgate::api
