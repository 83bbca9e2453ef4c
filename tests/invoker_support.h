#pragma once

// The invocation path as the gateway wires it — ToolInvoker over the real services — on a store and
// clock a test chooses, for tests that hand in the downstream's answer themselves.

#include <string>
#include <utility>

#include "toolgate/config.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/tool_invoker.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/intent_store.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/ledger.h"

namespace toolgate::testing {

struct InvokerStack {
  InvokerStack(store::ItemStore& store, const Clock& clock, Config c)
      : config(std::move(c)),
        breakers(store, clock, "test-instance"),
        slots(store, clock),
        kill_switches(store, clock, 200),
        ledger(store, clock, LedgerRetention{config.ledger.retention_s, config.ledger.deferred_retention_s}),
        executions(store, clock),
        intents(store, clock, config.idempotency_retention_h),
        invoker(ToolInvoker::Services{store, clock, config, breakers, slots, kill_switches, ledger, executions, intents,
                                      metrics}) {}

  Config config;
  Metrics metrics;
  CircuitBreakerService breakers;
  ConnectorConcurrencyService slots;
  KillSwitchService kill_switches;
  Ledger ledger;
  ExecutionStore executions;
  IntentStore intents;
  ToolInvoker invoker;
};

}  // namespace toolgate::testing
