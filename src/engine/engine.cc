#include "toolgate/engine/engine.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "toolgate/domain/ids.h"
#include "toolgate/status_macros.h"

namespace toolgate {

Engine::Engine(const Config& config, const Clock& clock, Options options)
    : config_(config), clock_(clock), options_(std::move(options)) {
  instance_id_ = options_.instance_id.empty() ? NewUuidV7(clock_) : options_.instance_id;
}

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(const Config& config, const Clock& clock, Options options) {
  std::unique_ptr<Engine> engine(new Engine(config, clock, std::move(options)));
  ASSIGN_OR_RETURN(engine->owned_store_, OpenConfiguredStore(config.store, clock, engine->options_.store));
  if (engine->options_.wrap_store) {
    engine->wrapped_store_ = engine->options_.wrap_store(*engine->owned_store_);
    engine->Build(*engine->wrapped_store_);
  } else {
    engine->Build(*engine->owned_store_);
  }
  return engine;
}

std::unique_ptr<Engine> Engine::Over(store::ItemStore& store, const Config& config, const Clock& clock,
                                     Options options) {
  std::unique_ptr<Engine> engine(new Engine(config, clock, std::move(options)));
  engine->Build(store);
  return engine;
}

void Engine::Build(store::ItemStore& base) {
  const Config& c = config_;
  base_ = &base;
  metered_ = std::make_unique<MeteredItemStore>(base, clock_, metrics_, write_health_);
  store::ItemStore& st = *metered_;
  breakers_ = std::make_unique<CircuitBreakerService>(st, clock_, instance_id_, &auditor_, c.server.breaker_cache_ms);
  slots_ = std::make_unique<ConnectorConcurrencyService>(st, clock_);
  kill_switches_ = std::make_unique<KillSwitchService>(st, clock_, c.kill_switch_refresh_ms);
  ledger_ = std::make_unique<Ledger>(st, clock_, LedgerRetention{c.ledger.retention_s, c.ledger.deferred_retention_s});
  auditor_.set_ledger(ledger_.get());
  executions_ = std::make_unique<ExecutionStore>(st, clock_);
  intents_ = std::make_unique<IntentStore>(st, clock_, c.idempotency_retention_h);
  slo_counters_ = std::make_unique<SloCounters>(st, clock_);
  queue_ = std::make_unique<QueueService>(st, clock_);
  slo_evaluator_ = std::make_unique<SloEvaluator>(c, *slo_counters_, *ledger_, metrics_, clock_,
                                                  options_.alarm_notifier, instance_id_);
  // Names [tools] gives to http connectors are theirs: an MCP server cannot take them over.
  std::set<std::string, std::less<>> reserved;
  for (const auto& [name, tool] : c.tools) {
    const std::string id = tool.connector_id.empty() ? name.substr(0, name.find('.')) : tool.connector_id;
    if (auto it = c.connectors.find(id); it != c.connectors.end() && !it->second.is_mcp()) reserved.insert(name);
    metrics_.KnownTool(id, name);
  }
  std::set<std::string, std::less<>> connector_ids;
  for (const auto& [id, connector] : c.connectors) {
    connector_ids.insert(id);
    metrics_.KnownConnector(id, /*callbacks=*/!c.queue.callback_allowlist.empty());
  }
  mcp_tools_ = std::make_unique<McpToolRegistry>(std::move(reserved), std::move(connector_ids));
  unrecorded_ = std::make_unique<UnrecordedOutcomes>(st, clock_, metrics_);
  invoker_ = std::make_unique<ToolInvoker>(ToolInvoker::Services{
      st, clock_, c, *breakers_, *slots_, *kill_switches_, *ledger_, *executions_, *intents_, metrics_,
      slo_counters_.get(), queue_.get(), mcp_tools_.get(), unrecorded_.get(), &write_health_});
  callbacks_ = std::make_unique<CallbackOutbox>(st, clock_, c.LargestClockSkewS());
  queued_calls_ = std::make_unique<QueuedCalls>(st, clock_, c, *queue_, *executions_, *ledger_, *intents_, metrics_);
  // An execution still IN_PROGRESS this long after it began was abandoned (Replayer): its call's
  // timeout and the intent's hold after it (30 s) have passed, with the clock skew allowed.
  std::map<std::string, int64_t> abandoned_after_ms;
  for (const auto& [id, connector] : c.connectors) {
    abandoned_after_ms[id] =
        int64_t{connector.timeout_ms} + 30'000 + int64_t{connector.concurrency.max_clock_skew_s} * 1000;
  }
  replayer_ = std::make_unique<Replayer>(*executions_, *ledger_, metrics_, clock_, c.max_replays_per_execution,
                                         std::move(abandoned_after_ms));
}

absl::Status Engine::ProbeStoreWrite() {
  const int64_t now_ms = clock_.now_epoch_ms();
  store::Item item;
  item["at_ms"] = store::AttributeValue(now_ms);
  item[std::string(store::kTtlAttribute)] = store::AttributeValue(now_ms / 1000 + kWriteProbeTtlS);
  absl::StatusOr<store::WriteResult> r =
      metered_->Put({"HEALTH", absl::StrCat("WRITE#", instance_id_)}, item, store::Condition::Always());
  // An unconditional put of toolgate's own item can only fail because the store would not take it:
  // whatever the code (a timeout, credentials the store no longer accepts, a table gone), the writes
  // are not confirmed, as a call's write failing so would not say (its code may name the call).
  if (!r.ok() && !StoreWriteHealth::IsStoreTrouble(r.status())) write_health_.ProbeFailed(r.status());
  return r.status();
}

absl::Status Engine::PrepareConnectors() {
  for (const auto& [id, c] : config_.connectors) {
    if (absl::Status s = slots_->EnsureConnector(id, c.concurrency); !s.ok()) {
      return absl::UnavailableError(absl::StrCat("store: cannot set up connector ", id, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace toolgate
