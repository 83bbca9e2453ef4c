#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/engine/metered_item_store.h"
#include "toolgate/engine/mcp_tool_registry.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/queued_calls.h"
#include "toolgate/engine/replayer.h"
#include "toolgate/engine/slo_evaluator.h"
#include "toolgate/engine/store_write_health.h"
#include "toolgate/engine/tool_invoker.h"
#include "toolgate/engine/transition_auditor.h"
#include "toolgate/engine/unrecorded_outcomes.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/intent_store.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/callback_outbox.h"
#include "toolgate/services/queue_service.h"
#include "toolgate/services/slo_counters.h"
#include "toolgate/store_factory.h"

namespace toolgate {

// The engine core: the store, the services over it, the invocation path and replay, wired once
// from a Config (design §2 layers 2–4). The gateway, the CLI and the tests build it the same way,
// so what a test exercises is what `toolgate serve` runs.
//
// Every store operation goes through a MeteredItemStore (toolgate_store_operation_seconds); breaker
// transitions this instance wins are counted and audited (TransitionAuditor).
//
// The services are thread-safe; the Engine itself is immutable after Open/Over. It must outlive every
// caller of its parts; the store passed to Over must outlive the Engine.
// How an Engine is built beyond its Config (at namespace scope: a nested struct with member
// initializers cannot be a default argument).
struct EngineOptions {
  std::string instance_id;                  // names this process in probe claims; empty: a new UUIDv7
  AlarmNotifier* alarm_notifier = nullptr;  // SLO alarm changes (the webhook), or none
  StoreOpenOptions store;                   // Open only
  // Open only, for tests: the store to build over instead of the one opened, made from it (a
  // fault-injecting wrapper). The opened store outlives what this returns. The engine then has no
  // asynchronous port (async_port() is null): every write goes through the wrapper.
  std::function<std::unique_ptr<store::ItemStore>(store::ItemStore& opened)> wrap_store;
};

class Engine {
 public:
  using Options = EngineOptions;

  // Opens the backend `config.store` names and builds everything over it.
  static absl::StatusOr<std::unique_ptr<Engine>> Open(const Config& config, const Clock& clock, Options options = {});
  // Builds everything over a store the caller owns (tests; a store opened read-only).
  static std::unique_ptr<Engine> Over(store::ItemStore& store, const Config& config, const Clock& clock,
                                      Options options = {});
  ~Engine();

  // Writes a small item of this instance's (HEALTH / WRITE#<instance id>, expiring after
  // kWriteProbeTtlS) to learn whether the store takes writes (again); the outcome is recorded in
  // write_health() like any write's, and a failure with any code marks the writes failing (the put
  // is unconditional: only the store can refuse it). Blocking (one store write). The caller rate-limits it
  // (StoreWriteHealth::ClaimProbe).
  absl::Status ProbeStoreWrite();
  static constexpr int64_t kWriteProbeTtlS = 300;

  // Creates each configured connector's semaphore, or brings a config-owned limit in line with the
  // config (an operator's limit stands). kUnavailable naming the connector when the store fails.
  absl::Status PrepareConnectors();

  const Config& config() const { return config_; }
  const std::string& instance_id() const { return instance_id_; }
  Metrics& metrics() { return metrics_; }
  // What this process last learned about the store's writes (every write is recorded there).
  StoreWriteHealth& write_health() { return write_health_; }
  store::ItemStore& store() { return *metered_; }
  // The adapter under the metering (e.g. to find the memory store's sweeper).
  store::ItemStore& base_store() { return *base_; }
  // The adapter's own asynchronous port (design §16: SQLite, DynamoDB), or nullptr when it has none.
  store::AsyncItemStore* async_port() { return dynamic_cast<store::AsyncItemStore*>(base_); }
  CircuitBreakerService& breakers() { return *breakers_; }
  ConnectorConcurrencyService& slots() { return *slots_; }
  KillSwitchService& kill_switches() { return *kill_switches_; }
  Ledger& ledger() { return *ledger_; }
  ExecutionStore& executions() { return *executions_; }
  IntentStore& intents() { return *intents_; }
  QueueService& queue() { return *queue_; }
  QueuedCalls& queued_calls() { return *queued_calls_; }
  CallbackOutbox& callbacks() { return *callbacks_; }
  SloCounters& slo_counters() { return *slo_counters_; }
  SloEvaluator& slo_evaluator() { return *slo_evaluator_; }
  ToolInvoker& invoker() { return *invoker_; }
  // The tools MCP connectors expose (they publish their lists here).
  McpToolRegistry& mcp_tools() { return *mcp_tools_; }
  Replayer& replayer() { return *replayer_; }
  // Outcomes the store did not take, held to be written again (the gateway retries them every second).
  UnrecordedOutcomes& unrecorded_outcomes() { return *unrecorded_; }

 private:
  Engine(const Config& config, const Clock& clock, Options options);
  void Build(store::ItemStore& base);

  const Config config_;
  const Clock& clock_;
  Options options_;
  std::string instance_id_;
  Metrics metrics_;
  TransitionAuditor auditor_{metrics_};
  StoreWriteHealth write_health_{clock_};
  std::unique_ptr<store::ItemStore> owned_store_;    // set by Open
  std::unique_ptr<store::ItemStore> wrapped_store_;  // Options::wrap_store's, over owned_store_
  store::ItemStore* base_ = nullptr;
  std::unique_ptr<MeteredItemStore> metered_;
  std::unique_ptr<CircuitBreakerService> breakers_;
  std::unique_ptr<ConnectorConcurrencyService> slots_;
  std::unique_ptr<KillSwitchService> kill_switches_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<ExecutionStore> executions_;
  std::unique_ptr<IntentStore> intents_;
  std::unique_ptr<QueueService> queue_;
  std::unique_ptr<CallbackOutbox> callbacks_;
  std::unique_ptr<QueuedCalls> queued_calls_;
  std::unique_ptr<SloCounters> slo_counters_;
  std::unique_ptr<SloEvaluator> slo_evaluator_;
  std::unique_ptr<McpToolRegistry> mcp_tools_;
  std::unique_ptr<UnrecordedOutcomes> unrecorded_;
  std::unique_ptr<ToolInvoker> invoker_;
  std::unique_ptr<Replayer> replayer_;
};

}  // namespace toolgate
