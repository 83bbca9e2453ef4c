#pragma once

// The invocation path exactly as the gateway wires it (Engine::Over: the real services over a
// metered store), on a store and clock a test chooses, for tests that hand in the downstream's
// answer themselves.

#include <memory>
#include <string>
#include <utility>

#include "toolgate/config.h"
#include "toolgate/domain/downstream_outcome.h"
#include "toolgate/engine/engine.h"

namespace toolgate::testing {

struct InvokerStack {
  InvokerStack(store::ItemStore& store, const Clock& clock, Config c)
      : engine(Engine::Over(store, Unhurried(std::move(c)), clock, EngineOptions{"test-instance", nullptr, {}})),
        config(engine->config()),
        metrics(engine->metrics()),
        breakers(engine->breakers()),
        slots(engine->slots()),
        kill_switches(engine->kill_switches()),
        ledger(engine->ledger()),
        executions(engine->executions()),
        intents(engine->intents()),
        invoker(engine->invoker()) {}

  // Tests read the store right after writing it: no breaker answered from memory, kill switches
  // re-read every 200 ms of the test's clock.
  static Config Unhurried(Config c) {
    c.server.breaker_cache_ms = 0;
    c.kill_switch_refresh_ms = 200;
    return c;
  }

  std::unique_ptr<Engine> engine;
  const Config& config;
  Metrics& metrics;
  CircuitBreakerService& breakers;
  ConnectorConcurrencyService& slots;
  KillSwitchService& kill_switches;
  Ledger& ledger;
  ExecutionStore& executions;
  IntentStore& intents;
  ToolInvoker& invoker;
};

// The downstream's answer a test hands in: `{"ok":true}` for 200, an error body otherwise, 3 ms.
inline DownstreamResult DownstreamAnswer(int status) {
  DownstreamResult d;
  d.status = status;
  d.body = status == 200 ? R"({"ok":true})" : R"({"error":"down"})";
  d.latency_ms = 3;
  return d;
}

}  // namespace toolgate::testing
