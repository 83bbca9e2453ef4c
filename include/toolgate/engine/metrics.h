#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/services/circuit_breaker_service.h"

namespace toolgate {

// toolgate's Prometheus metrics (design §8). Thread-safe. Tool names are caller-chosen, so each
// connector reports at most kMaxToolsPerConnector distinct `tool` labels; the rest are "other".
class Metrics final : public BreakerTransitionListener {
 public:
  static constexpr size_t kMaxToolsPerConnector = 200;

  Metrics();

  void ToolCall(const std::string& connector, const std::string& tool, const std::string& outcome,
                double latency_seconds, bool reached_downstream);
  void ToolError(const std::string& connector, const std::string& tool, const std::string& reason);
  void Deferred(const std::string& connector, const std::string& reason);
  void Blocked(const std::string& scope);
  void Replay(const std::string& result);
  void StoreOperation(const std::string& backend, const std::string& op, double seconds);
  // A store request retried by the backend (reason: "throttled", "server_error", "connection").
  void StoreRetry(const std::string& backend, const std::string& op, const std::string& reason);
  void BreakerState(const std::string& connector, breaker::State state);
  void InFlight(const std::string& connector, double in_flight, double limit);
  // Queued calls of the connector, fleet-wide (§15), and the age of the oldest.
  void Queue(const std::string& connector, double depth, double oldest_age_s);
  void OnTransition(const BreakerTransition& t) override;
  // One call counted by an SLI (design §8): the counters `toolgate slo rules` builds its rules on.
  void SloEvent(const std::string& connector, const std::string& slo, bool bad);
  void SloBurnRate(const std::string& connector, const std::string& slo, const std::string& window, double rate);
  void SloAlarm(const std::string& connector, const std::string& slo, const std::string& severity, bool firing);
  void SloBudgetRemaining(const std::string& connector, const std::string& slo, double fraction);

  // The text exposition format.
  std::string Serialize() const;

 private:
  std::string ToolLabel(const std::string& connector, const std::string& tool);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Gauge>& breaker_state_;
  prometheus::Family<prometheus::Counter>& transitions_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Gauge>& in_flight_limit_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& queue_oldest_age_;
  prometheus::Family<prometheus::Counter>& deferred_;
  prometheus::Family<prometheus::Counter>& blocked_;
  prometheus::Family<prometheus::Counter>& replays_;
  prometheus::Family<prometheus::Histogram>& store_ops_;
  prometheus::Family<prometheus::Counter>& store_retries_;
  prometheus::Family<prometheus::Counter>& store_throttles_;
  prometheus::Family<prometheus::Counter>& slo_events_;
  prometheus::Family<prometheus::Counter>& slo_bad_events_;
  prometheus::Family<prometheus::Gauge>& slo_burn_rate_;
  prometheus::Family<prometheus::Gauge>& slo_alarm_;
  prometheus::Family<prometheus::Gauge>& slo_budget_;
  absl::Mutex tools_mu_;
  std::map<std::string, std::set<std::string>> tools_ ABSL_GUARDED_BY(tools_mu_);
};

}  // namespace toolgate
