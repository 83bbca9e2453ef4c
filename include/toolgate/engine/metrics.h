#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/domain/outcome.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/store/item.h"

namespace toolgate {

// The kind of item a store key names, from the services' key layout: "execution" (TENANT#/EXEC#),
// "event" (EXEC#/EVENT#), "audit_event" (AUDIT#), "concurrency" (CONNECTOR#/CONCURRENCY…),
// "breaker", "intent", "slo", "queue", "callback", else "other". A small fixed set (a metric label).
std::string_view StoreItemKind(const store::ItemKey& key);

// toolgate's Prometheus metrics (design §8). Thread-safe. Tool names are caller-chosen, so each
// connector reports at most kMaxToolsPerConnector distinct `tool` labels of names the config does not
// list, first come first served; the rest are "other". A tool the config lists ([tools],
// KnownTool) always has its own label: no tenant calling made-up names crowds it out.
//
// Every family is in Serialize()'s text from the start, with its HELP and TYPE, sample or not. The
// counters whose label values are all known in advance start at 0, so that a query reads 0 rather
// than nothing and rate() sees the first increment: from construction those of this instance
// (replays, held outcomes ended, downstream connections, by their fixed results), and from
// KnownConnector a connector's (deferred by reason, blocked by scope, breaker transitions, SLO
// events, callbacks). Never per tool: tool names are the callers'.
class Metrics final : public BreakerTransitionListener {
 public:
  static constexpr size_t kMaxToolsPerConnector = 200;

  Metrics();

  // `tool` of `connector` is listed by the config: it keeps its own label past the cap, and does
  // not count toward it. Call before serving.
  void KnownTool(const std::string& connector, const std::string& tool);
  // `connector` is configured: its counters of fixed label values start at 0 (toolgate_deferred_total
  // per DeferReason, toolgate_blocked_total per kill switch scope, toolgate_breaker_transitions_total
  // per breaker::kTransitions, toolgate_slo_events_total and toolgate_slo_bad_events_total per SLI,
  // and toolgate_callback_attempts_total per result when `callbacks` — the config allows callbacks).
  // Call before serving; the updates later find these series as they would their own.
  void KnownConnector(const std::string& connector, bool callbacks);

  void ToolCall(const std::string& connector, const std::string& tool, Outcome outcome, double latency_seconds,
                bool reached_downstream);
  void ToolError(const std::string& connector, const std::string& tool, const std::string& reason);
  void Deferred(const std::string& connector, const std::string& reason);
  void Blocked(const std::string& connector, const std::string& scope);
  void Replay(const std::string& result);
  void StoreOperation(const std::string& backend, const std::string& op, double seconds);
  // A store request retried by the backend (reason: "throttled", "server_error", "connection").
  void StoreRetry(const std::string& backend, const std::string& op, const std::string& reason);
  // One store write and the write units it consumed (DynamoDB), by the kind of item written
  // (StoreItemKind): toolgate_store_writes_total and toolgate_store_write_units_total.
  void StoreWriteUnits(const std::string& backend, const store::ItemKey& key, double units);
  void BreakerState(const std::string& connector, breaker::State state);
  void InFlight(const std::string& connector, double in_flight, double limit);
  // The downstream connection pool's lifetime counts (set at scrape time): connections opened, TLS
  // handshakes among them, and calls served on a kept-alive connection.
  void DownstreamPool(uint64_t opened, uint64_t tls_handshakes, uint64_t reused);
  // Seconds until an OPEN breaker allows a probe (0 otherwise), fleet-wide as last read.
  void BreakerCooldownRemaining(const std::string& connector, double seconds);
  // Kill switches in force per scope (every scope is exported, 0 when none).
  void KillSwitchesActive(const std::map<std::string, int>& per_scope);
  // One answer of a listener ("public" | "admin"); `route` is a route pattern from the fixed table
  // (api/routes.h) or "other", so the label set stays small.
  void HttpResponse(const std::string& listener, const std::string& route, int code);
  // toolgate_build_info{version, revision} 1.
  void BuildInfo(const std::string& version, const std::string& revision);
  // Queued calls of the connector, fleet-wide (§15), and the age of the oldest.
  void Queue(const std::string& connector, double depth, double oldest_age_s);
  // A callback POST's result (§15): "delivered", "retried" or "failed" (given up).
  void CallbackAttempt(const std::string& connector, const std::string& result);
  // Outcomes the store did not take, held to be written again (UnrecordedOutcomes), and how each ended.
  void UnrecordedOutcomesHeld(double held);
  void UnrecordedOutcomeEnded(const std::string& result);
  // This host's clock ahead of the store's (DynamoDB's Date; negative: behind).
  void StoreClockAhead(double seconds);
  // Whether this instance's last store write that reached a verdict failed (StoreWriteHealth).
  void StoreWritesFailing(bool failing);
  // The store's requests under way against its cap (DynamoDB: store.max_requests_in_flight).
  void StoreRequests(const std::string& backend, double in_flight, double waiting, double limit);
  void OnTransition(const BreakerTransition& t) override;
  // One call counted by an SLI (design §8): the counters `toolgate slo rules` builds its rules on.
  void SloEvent(const std::string& connector, const std::string& slo, bool bad);
  void SloBurnRate(const std::string& connector, const std::string& slo, const std::string& window, double rate);
  void SloAlarm(const std::string& connector, const std::string& slo, const std::string& severity, bool firing);
  void SloBudgetRemaining(const std::string& connector, const std::string& slo, double fraction);
  // One SLO evaluation problem: `kind` "store_error" (a connector's evaluation, the flush or the pass
  // over removed connectors failed on the store: those alarms are not being evaluated) or
  // "damaged_item" (a connector's evaluation met SLO items not as toolgate writes them and left them
  // out or rewrote them). Both start at 0.
  void SloEvaluationError(std::string_view kind);

  // The text exposition format: every family once, in the order the constructor makes them, those
  // without a sample as their HELP and TYPE lines alone.
  std::string Serialize() const;

 private:
  std::string ToolLabel(const std::string& connector, const std::string& tool);
  // A family registered in registry_, its header remembered in families_. Constructor only.
  template <class M>
  prometheus::Family<M>& NewFamily(const std::string& name, const std::string& help);

  // Which Metrics this is, for the per-thread memory of metrics already added (metrics.cc): never
  // reused, so a Metrics made later at the same address never finds an earlier one's metrics.
  const uint64_t instance_;

  std::shared_ptr<prometheus::Registry> registry_;
  // Each family's name, help and type (no metrics), in the order made; written by the constructor
  // only. prometheus-cpp's Collect() leaves out a family with no metric: Serialize lists it from here.
  std::vector<prometheus::MetricFamily> families_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Gauge>& breaker_state_;
  prometheus::Family<prometheus::Counter>& transitions_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Gauge>& in_flight_limit_;
  prometheus::Family<prometheus::Counter>& downstream_connections_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& queue_oldest_age_;
  prometheus::Family<prometheus::Counter>& callback_attempts_;
  prometheus::Gauge& unrecorded_held_;
  prometheus::Family<prometheus::Counter>& unrecorded_ended_;
  prometheus::Family<prometheus::Gauge>& store_clock_ahead_;
  prometheus::Gauge& store_writes_failing_;
  prometheus::Family<prometheus::Gauge>& store_requests_in_flight_;
  prometheus::Family<prometheus::Gauge>& store_requests_waiting_;
  prometheus::Family<prometheus::Gauge>& store_max_requests_in_flight_;
  prometheus::Family<prometheus::Counter>& deferred_;
  prometheus::Family<prometheus::Counter>& blocked_;
  prometheus::Family<prometheus::Counter>& replays_;
  prometheus::Family<prometheus::Histogram>& store_ops_;
  prometheus::Family<prometheus::Counter>& store_retries_;
  prometheus::Family<prometheus::Counter>& store_throttles_;
  prometheus::Family<prometheus::Counter>& store_write_units_;
  prometheus::Family<prometheus::Counter>& store_writes_;
  prometheus::Family<prometheus::Counter>& slo_events_;
  prometheus::Family<prometheus::Counter>& slo_bad_events_;
  prometheus::Family<prometheus::Gauge>& slo_burn_rate_;
  prometheus::Family<prometheus::Gauge>& slo_alarm_;
  prometheus::Family<prometheus::Gauge>& slo_budget_;
  prometheus::Family<prometheus::Counter>& slo_evaluation_errors_;
  prometheus::Family<prometheus::Gauge>& cooldown_;
  prometheus::Family<prometheus::Gauge>& kill_switches_;
  prometheus::Family<prometheus::Counter>& http_responses_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  absl::Mutex tools_mu_;
  std::map<std::string, std::set<std::string>> tools_ ABSL_GUARDED_BY(tools_mu_);        // by ToolLabel, capped
  std::map<std::string, std::set<std::string>> known_tools_ ABSL_GUARDED_BY(tools_mu_);  // KnownTool
};

}  // namespace toolgate
