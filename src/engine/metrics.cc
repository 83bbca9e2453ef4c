#include "toolgate/engine/metrics.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <unordered_map>

#include "absl/strings/match.h"
#include "prometheus/text_serializer.h"
#include "toolgate/domain/slo.h"
#include "toolgate/services/kill_switch_service.h"

namespace toolgate {

namespace {
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                                 1,     2.5,  5,     10,   30,  60};
const prometheus::Histogram::BucketBoundaries kStoreBuckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                               0.005,   0.01,   0.025,   0.05,   0.1,   1};

std::atomic<uint64_t> g_next_instance{1};

// Cached metrics per thread before it forgets them all (label sets are bounded: connectors, tools
// capped per connector, routes, outcomes; this only guards against a bug there).
constexpr size_t kMaxMemoPerThread = 4096;

// The metric of `family` for the label values `values` (in the family's label order; `add` makes it
// on first use with Family::Add), from this thread's memory after that: an update takes no lock and
// builds no label map (Family::Add takes the family's mutex and builds a std::map of strings every
// time). A family's metrics live as long as its registry and none is ever removed, so a remembered
// pointer stays valid while its Metrics lives; the key holds the Metrics' instance id, never reused.
template <class M, class Add>
M& Memo(uint64_t instance, const prometheus::Family<M>& family, std::initializer_list<std::string_view> values,
        Add add) {
  thread_local std::unordered_map<std::string, M*> memory;
  std::string key;
  key.reserve(64);
  key.append(reinterpret_cast<const char*>(&instance), sizeof instance);
  const void* f = &family;
  key.append(reinterpret_cast<const char*>(&f), sizeof f);
  for (std::string_view v : values) {  // each value after its length: no two lists make one key
    const uint32_t n = static_cast<uint32_t>(v.size());
    key.append(reinterpret_cast<const char*>(&n), sizeof n);
    key.append(v.data(), v.size());
  }
  if (auto it = memory.find(key); it != memory.end()) return *it->second;
  M& metric = add();
  if (memory.size() >= kMaxMemoPerThread) memory.clear();
  memory.emplace(std::move(key), &metric);
  return metric;
}

// The values of the fixed `result` and `event` labels of this instance's counters (what Replayer,
// ToolInvoker, UnrecordedOutcomes, the callback deliverer and DownstreamPool pass), each started at 0.
constexpr std::string_view kReplayResults[] = {"executed", "forced", "deduped", "refused"};
constexpr std::string_view kUnrecordedEnds[] = {"recorded", "refused", "expired", "full"};
constexpr std::string_view kSloEvaluationErrors[] = {"store_error", "damaged_item"};
constexpr std::string_view kCallbackResults[] = {"delivered", "retried", "failed"};
constexpr std::string_view kDownstreamConnectionEvents[] = {"opened", "tls_handshake", "reused"};

}  // namespace

template <class M>
prometheus::Family<M>& Metrics::NewFamily(const std::string& name, const std::string& help) {
  families_.push_back(prometheus::MetricFamily{name, help, M::metric_type, {}});
  return prometheus::detail::Builder<M>().Name(name).Help(help).Register(*registry_);
}

std::string_view StoreItemKind(const store::ItemKey& key) {
  const absl::string_view pk(key.pk), sk(key.sk);
  if (absl::StartsWith(pk, "TENANT#")) {
    if (absl::StartsWith(sk, "EXEC#")) return "execution";
    if (absl::StartsWith(sk, "INTENT#")) return "intent";
    return "other";
  }
  if (absl::StartsWith(pk, "EXEC#")) return absl::StartsWith(sk, "EVENT#") ? "event" : "other";
  if (absl::StartsWith(pk, "AUDIT#")) return "audit_event";
  if (absl::StartsWith(pk, "CONNECTOR#")) {
    if (absl::StartsWith(sk, "CONCURRENCY")) return "concurrency";
    if (sk == "BREAKER") return "breaker";
    return "other";
  }
  if (absl::StartsWith(pk, "SLO#") || pk == "SLO_ALARMED") return "slo";
  if (absl::StartsWith(pk, "QUEUE")) return "queue";
  if (pk == "CALLBACKS") return "callback";
  if (absl::StartsWith(pk, "MCP_SESSION#")) return "mcp_session";
  return "other";
}

Metrics::Metrics()
    : instance_(g_next_instance.fetch_add(1, std::memory_order_relaxed)),
      registry_(std::make_shared<prometheus::Registry>()),
      latency_(NewFamily<prometheus::Histogram>("toolgate_tool_latency_seconds",
                                                "Latency of tool calls that reached the downstream")),
      errors_(NewFamily<prometheus::Counter>("toolgate_tool_errors_total", "Failed tool calls by reason")),
      calls_(NewFamily<prometheus::Counter>("toolgate_tool_calls_total", "Tool calls by outcome")),
      breaker_state_(NewFamily<prometheus::Gauge>("toolgate_breaker_state", "1 for the breaker's current state")),
      transitions_(NewFamily<prometheus::Counter>("toolgate_breaker_transitions_total",
                                                  "Breaker transitions won by this instance")),
      in_flight_(NewFamily<prometheus::Gauge>("toolgate_in_flight", "Calls in flight to the connector, fleet-wide")),
      in_flight_limit_(NewFamily<prometheus::Gauge>("toolgate_in_flight_limit", "The connector's in-flight limit")),
      downstream_connections_(NewFamily<prometheus::Counter>(
          "toolgate_downstream_connections_total",
          "Downstream connections: opened, TLS handshakes, calls served on a kept-alive one")),
      queue_depth_(NewFamily<prometheus::Gauge>("toolgate_queue_depth",
                                                "Queued calls of the connector, fleet-wide (aggregate with max())")),
      queue_oldest_age_(NewFamily<prometheus::Gauge>("toolgate_queue_oldest_age_seconds",
                                                     "Age of the connector's oldest queued call")),
      callback_attempts_(NewFamily<prometheus::Counter>(
          "toolgate_callback_attempts_total",
          "Callback deliveries this instance attempted, by result: delivered, retried (to be "
          "tried again), failed (given up after callback_retry_s)")),
      unrecorded_held_(NewFamily<prometheus::Gauge>(
                           "toolgate_unrecorded_outcomes",
                           "Outcomes of calls that reached their downstream which the store did not take, held "
                           "by this instance to be written again")
                           .Add({})),
      unrecorded_ended_(NewFamily<prometheus::Counter>(
          "toolgate_unrecorded_outcomes_ended_total",
          "Held outcomes by how they ended: recorded (the store took them), refused (a replay "
          "or another call came first), expired (an hour of tries), full (not held)")),
      store_clock_ahead_(
          NewFamily<prometheus::Gauge>("toolgate_store_clock_ahead_seconds",
                                       "How far this host's clock is ahead of the store's (DynamoDB's Date header; "
                                       "negative: behind), 0 within the header's one-second resolution")),
      store_writes_failing_(
          NewFamily<prometheus::Gauge>("toolgate_store_writes_failing",
                                       "1 while this instance's last store write that reached a verdict failed with "
                                       "store trouble (a full disk, a read-only or unreachable store): /readyz then "
                                       "answers 503 store_unwritable")
              .Add({})),
      store_requests_in_flight_(
          NewFamily<prometheus::Gauge>("toolgate_store_requests_in_flight",
                                       "Store requests of this instance holding a place under the cap "
                                       "(DynamoDB: sent or being sent)")),
      store_requests_waiting_(NewFamily<prometheus::Gauge>(
          "toolgate_store_requests_waiting", "Store requests of this instance waiting for a place under the cap")),
      store_max_requests_in_flight_(NewFamily<prometheus::Gauge>("toolgate_store_max_requests_in_flight",
                                                                 "The cap on this instance's store requests in flight "
                                                                 "(store.max_requests_in_flight)")),
      deferred_(NewFamily<prometheus::Counter>("toolgate_deferred_total", "DEFERRED answers by reason")),
      blocked_(NewFamily<prometheus::Counter>("toolgate_blocked_total", "BLOCKED answers by kill switch scope")),
      replays_(NewFamily<prometheus::Counter>("toolgate_replays_total", "Replays by result")),
      store_ops_(NewFamily<prometheus::Histogram>("toolgate_store_operation_seconds", "Store operation latency")),
      store_retries_(NewFamily<prometheus::Counter>(
          "toolgate_store_retries_total", "Store requests retried, by reason (throttled, server_error, connection)")),
      store_throttles_(
          NewFamily<prometheus::Counter>("toolgate_store_throttles_total", "Store requests the backend throttled")),
      store_write_units_(NewFamily<prometheus::Counter>(
          "toolgate_store_write_units_total",
          "Write capacity units the store's writes consumed (DynamoDB), by kind of item")),
      store_writes_(NewFamily<prometheus::Counter>(
          "toolgate_store_writes_total",
          "Store writes whose consumed capacity was counted (DynamoDB), by kind of item")),
      slo_events_(NewFamily<prometheus::Counter>(
          "toolgate_slo_events_total", "Calls counted by an SLI (calls that reached the connector), this instance")),
      slo_bad_events_(NewFamily<prometheus::Counter>(
          "toolgate_slo_bad_events_total",
          "Calls that were bad for an SLI (error, or over the latency threshold), this instance")),
      slo_burn_rate_(NewFamily<prometheus::Gauge>(
          "toolgate_slo_burn_rate", "Error budget burn rate per window, fleet-wide (1 = spending the budget exactly)")),
      slo_alarm_(
          NewFamily<prometheus::Gauge>("toolgate_slo_alarm", "1 while a tier of this severity fires, fleet-wide")),
      slo_budget_(
          NewFamily<prometheus::Gauge>("toolgate_slo_error_budget_remaining",
                                       "Fraction of the 30-day error budget left, fleet-wide (negative: overspent)")),
      slo_evaluation_errors_(NewFamily<prometheus::Counter>(
          "toolgate_slo_evaluation_errors_total",
          "SLO evaluation problems, this instance: store_error (alarms not evaluated), damaged_item (SLO items "
          "not as toolgate writes them, left out of the counts or rewritten)")),
      cooldown_(NewFamily<prometheus::Gauge>(
          "toolgate_breaker_cooldown_remaining_seconds",
          "Seconds until an OPEN breaker lets a probe through (0 when not cooling down), fleet-wide")),
      kill_switches_(
          NewFamily<prometheus::Gauge>("toolgate_kill_switches_active", "Kill switches in force by scope, fleet-wide")),
      http_responses_(NewFamily<prometheus::Counter>(
          "toolgate_http_responses_total", "HTTP answers by listener, route pattern and status code, this instance")),
      build_info_(NewFamily<prometheus::Gauge>("toolgate_build_info",
                                               "1, labelled with the build's version and git revision")) {
  for (std::string_view result : kReplayResults) replays_.Add({{"result", std::string(result)}});
  for (std::string_view result : kUnrecordedEnds) unrecorded_ended_.Add({{"result", std::string(result)}});
  for (std::string_view kind : kSloEvaluationErrors) slo_evaluation_errors_.Add({{"kind", std::string(kind)}});
  for (std::string_view event : kDownstreamConnectionEvents) {
    downstream_connections_.Add({{"event", std::string(event)}});
  }
}

void Metrics::KnownConnector(const std::string& connector, bool callbacks) {
  for (DeferReason reason : kAllDeferReasons) {
    deferred_.Add({{"connector", connector}, {"reason", std::string(ToString(reason))}});
  }
  for (std::string_view scope : kKillSwitchScopes) {
    blocked_.Add({{"connector", connector}, {"scope", std::string(scope)}});
  }
  for (const breaker::Transition& t : breaker::kTransitions) {
    transitions_.Add({{"connector", connector},
                      {"from", std::string(breaker::ToString(t.from))},
                      {"to", std::string(breaker::ToString(t.to))}});
  }
  for (slo::Sli sli : slo::kSlis) {
    slo_events_.Add({{"connector", connector}, {"slo", std::string(slo::ToString(sli))}});
    slo_bad_events_.Add({{"connector", connector}, {"slo", std::string(slo::ToString(sli))}});
  }
  if (callbacks) {
    for (std::string_view result : kCallbackResults) {
      callback_attempts_.Add({{"connector", connector}, {"result", std::string(result)}});
    }
  }
}

void Metrics::KnownTool(const std::string& connector, const std::string& tool) {
  absl::MutexLock lock(&tools_mu_);
  known_tools_[connector].insert(tool);
}

std::string Metrics::ToolLabel(const std::string& connector, const std::string& tool) {
  absl::MutexLock lock(&tools_mu_);
  if (auto known = known_tools_.find(connector); known != known_tools_.end() && known->second.count(tool)) return tool;
  auto& seen = tools_[connector];
  if (seen.count(tool)) return tool;
  if (seen.size() >= kMaxToolsPerConnector) return "other";
  seen.insert(tool);
  return tool;
}

void Metrics::ToolCall(const std::string& connector, const std::string& tool, Outcome o, double latency_seconds,
                       bool reached_downstream) {
  const std::string_view outcome = ToString(o);
  // Keyed by the tool's own name: ToolLabel (a lock) runs once per thread and tool, and maps a tool
  // past the cap to "other" for good.
  Memo(instance_, calls_, {connector, tool, outcome}, [&]() -> prometheus::Counter& {
    return calls_.Add(
        {{"connector", connector}, {"tool", ToolLabel(connector, tool)}, {"outcome", std::string(outcome)}});
  }).Increment();
  if (reached_downstream) {
    Memo(instance_, latency_, {connector, tool, outcome}, [&]() -> prometheus::Histogram& {
      return latency_.Add(
          {{"connector", connector}, {"tool", ToolLabel(connector, tool)}, {"outcome", std::string(outcome)}},
          kLatencyBuckets);
    }).Observe(latency_seconds);
  }
}

void Metrics::ToolError(const std::string& connector, const std::string& tool, const std::string& reason) {
  Memo(instance_, errors_, {connector, tool, reason}, [&]() -> prometheus::Counter& {
    return errors_.Add({{"connector", connector}, {"tool", ToolLabel(connector, tool)}, {"reason", reason}});
  }).Increment();
}

void Metrics::Deferred(const std::string& connector, const std::string& reason) {
  Memo(instance_, deferred_, {connector, reason}, [&]() -> prometheus::Counter& {
    return deferred_.Add({{"connector", connector}, {"reason", reason}});
  }).Increment();
}

void Metrics::Blocked(const std::string& connector, const std::string& scope) {
  blocked_.Add({{"connector", connector}, {"scope", scope}}).Increment();
}

void Metrics::BreakerCooldownRemaining(const std::string& connector, double seconds) {
  cooldown_.Add({{"connector", connector}}).Set(seconds);
}

void Metrics::KillSwitchesActive(const std::map<std::string, int>& per_scope) {
  for (std::string_view scope : kKillSwitchScopes) {
    auto it = per_scope.find(std::string(scope));
    kill_switches_.Add({{"scope", std::string(scope)}}).Set(it == per_scope.end() ? 0 : it->second);
  }
}

void Metrics::HttpResponse(const std::string& listener, const std::string& route, int code) {
  char code_text[16];
  const int n = std::snprintf(code_text, sizeof code_text, "%d", code);
  const std::string_view code_view(code_text, n > 0 ? static_cast<size_t>(n) : 0);
  Memo(instance_, http_responses_, {listener, route, code_view}, [&]() -> prometheus::Counter& {
    return http_responses_.Add({{"listener", listener}, {"route", route}, {"code", std::string(code_view)}});
  }).Increment();
}

void Metrics::BuildInfo(const std::string& version, const std::string& revision) {
  build_info_.Add({{"version", version}, {"revision", revision}}).Set(1);
}

void Metrics::Replay(const std::string& result) { replays_.Add({{"result", result}}).Increment(); }

void Metrics::StoreOperation(const std::string& backend, const std::string& op, double seconds) {
  Memo(instance_, store_ops_, {backend, op}, [&]() -> prometheus::Histogram& {
    return store_ops_.Add({{"backend", backend}, {"op", op}}, kStoreBuckets);
  }).Observe(seconds);
}

void Metrics::SloEvent(const std::string& connector, const std::string& slo, bool bad) {
  Memo(instance_, slo_events_, {connector, slo}, [&]() -> prometheus::Counter& {
    return slo_events_.Add({{"connector", connector}, {"slo", slo}});
  }).Increment();
  auto& bad_counter = Memo(instance_, slo_bad_events_, {connector, slo}, [&]() -> prometheus::Counter& {
    return slo_bad_events_.Add({{"connector", connector}, {"slo", slo}});  // exported at 0 too
  });
  if (bad) bad_counter.Increment();
}

void Metrics::SloBurnRate(const std::string& connector, const std::string& slo, const std::string& window,
                          double rate) {
  slo_burn_rate_.Add({{"connector", connector}, {"slo", slo}, {"window", window}}).Set(rate);
}

void Metrics::SloAlarm(const std::string& connector, const std::string& slo, const std::string& severity, bool firing) {
  slo_alarm_.Add({{"connector", connector}, {"slo", slo}, {"severity", severity}}).Set(firing ? 1 : 0);
}

void Metrics::SloEvaluationError(std::string_view kind) {
  slo_evaluation_errors_.Add({{"kind", std::string(kind)}}).Increment();
}

void Metrics::SloBudgetRemaining(const std::string& connector, const std::string& slo, double fraction) {
  slo_budget_.Add({{"connector", connector}, {"slo", slo}}).Set(fraction);
}

void Metrics::StoreRetry(const std::string& backend, const std::string& op, const std::string& reason) {
  store_retries_.Add({{"backend", backend}, {"op", op}, {"reason", reason}}).Increment();
  if (reason == "throttled") store_throttles_.Add({{"backend", backend}, {"op", op}}).Increment();
}

void Metrics::StoreWriteUnits(const std::string& backend, const store::ItemKey& key, double units) {
  const std::string_view item = StoreItemKind(key);
  Memo(instance_, store_write_units_, {backend, item}, [&]() -> prometheus::Counter& {
    return store_write_units_.Add({{"backend", backend}, {"item", std::string(item)}});
  }).Increment(units);
  Memo(instance_, store_writes_, {backend, item}, [&]() -> prometheus::Counter& {
    return store_writes_.Add({{"backend", backend}, {"item", std::string(item)}});
  }).Increment();
}

void Metrics::BreakerState(const std::string& connector, breaker::State state) {
  for (auto s :
       {breaker::State::kClosed, breaker::State::kOpen, breaker::State::kHalfOpen, breaker::State::kForcedOpen}) {
    breaker_state_.Add({{"connector", connector}, {"state", std::string(breaker::ToString(s))}})
        .Set(s == state ? 1 : 0);
  }
}

void Metrics::Queue(const std::string& connector, double depth, double oldest_age_s) {
  queue_depth_.Add({{"connector", connector}}).Set(depth);
  queue_oldest_age_.Add({{"connector", connector}}).Set(oldest_age_s);
}

void Metrics::UnrecordedOutcomesHeld(double held) { unrecorded_held_.Set(held); }

void Metrics::UnrecordedOutcomeEnded(const std::string& result) {
  unrecorded_ended_.Add({{"result", result}}).Increment();
}

void Metrics::StoreClockAhead(double seconds) { store_clock_ahead_.Add({}).Set(seconds); }
void Metrics::StoreWritesFailing(bool failing) { store_writes_failing_.Set(failing ? 1 : 0); }

void Metrics::StoreRequests(const std::string& backend, double in_flight, double waiting, double limit) {
  store_requests_in_flight_.Add({{"backend", backend}}).Set(in_flight);
  store_requests_waiting_.Add({{"backend", backend}}).Set(waiting);
  store_max_requests_in_flight_.Add({{"backend", backend}}).Set(limit);
}

void Metrics::CallbackAttempt(const std::string& connector, const std::string& result) {
  callback_attempts_.Add({{"connector", connector}, {"result", result}}).Increment();
}

void Metrics::InFlight(const std::string& connector, double in_flight, double limit) {
  in_flight_.Add({{"connector", connector}}).Set(in_flight);
  in_flight_limit_.Add({{"connector", connector}}).Set(limit);
}

void Metrics::DownstreamPool(uint64_t opened, uint64_t tls_handshakes, uint64_t reused) {
  for (auto [event, value] :
       {std::pair{"opened", opened}, std::pair{"tls_handshake", tls_handshakes}, std::pair{"reused", reused}}) {
    prometheus::Counter& c = downstream_connections_.Add({{"event", event}});
    if (const double delta = static_cast<double>(value) - c.Value(); delta > 0) c.Increment(delta);
  }
}

void Metrics::OnTransition(const BreakerTransition& t) {
  transitions_
      .Add({{"connector", t.connector_id},
            {"from", std::string(breaker::ToString(t.from))},
            {"to", std::string(breaker::ToString(t.to))}})
      .Increment();
  BreakerState(t.connector_id, t.to);
}

std::string Metrics::Serialize() const {
  // Each family in the order made: its metrics where Collect() has any, else its header alone (the
  // text format allows a family with no sample; prometheus-cpp would leave it out).
  std::vector<prometheus::MetricFamily> all = families_;
  for (prometheus::MetricFamily& collected : registry_->Collect()) {
    auto it = std::find_if(all.begin(), all.end(),
                           [&](const prometheus::MetricFamily& f) { return f.name == collected.name; });
    if (it != all.end()) {
      *it = std::move(collected);
    } else {
      all.push_back(std::move(collected));  // a family not made by NewFamily: listed after the rest
    }
  }
  return prometheus::TextSerializer().Serialize(all);
}

}  // namespace toolgate
