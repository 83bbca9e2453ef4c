#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json_fwd.hpp"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/domain/slo.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/slo_counters.h"

namespace toolgate {

// Receives a JSON document for every alarm that fires or resolves. Must not block: the evaluator
// calls it on its own thread, and delivery (with retries) is the implementation's business.
// `alarm_key` names the alarm ("<connector>#<slo>#<tier>"): a notification makes every earlier one
// of the same alarm stale, and a stale one must not be delivered after it.
class AlarmNotifier {
 public:
  virtual ~AlarmNotifier() = default;
  virtual void Notify(std::string alarm_key, std::string json_payload) = 0;
};

struct SloAlarmView {
  const slo::Tier* tier = nullptr;
  slo::TierVerdict verdict;  // firing: what the counts say now
  bool firing = false;       // the fleet-wide state after this evaluation
  int64_t since_ms = 0;      // when the fleet-wide state last changed (0: never fired)
  int64_t seq = 0;           // the fleet-wide state's change count (SloAlarmState::seq)
};

struct SloView {
  std::string connector;
  slo::Sli sli = slo::Sli::kToolError;
  double target = 0;
  int latency_threshold_ms = 0;                // tool_latency_ms only
  std::map<std::string, double> burn_rates;    // by window label
  std::map<std::string, slo::Counts> windows;  // the counts behind them
  slo::Counts period;                          // the 30-day budget period
  double budget_remaining = 1;
  std::optional<int64_t> seconds_to_exhaustion;  // at the 1 h burn rate
  std::vector<SloAlarmView> alarms;              // one per tier, in slo::kTiers order
};

// One minute of a connector's calls, fleet-wide, for the dashboard's sparklines.
struct SloMinute {
  int64_t epoch_minute = 0;
  slo::BucketCounts counts;
  std::optional<double> p50_ms, p95_ms, p99_ms;  // estimated from the latency histogram
};

struct SloSnapshot {
  int64_t evaluated_at_ms = 0;  // 0: not evaluated yet
  std::string error;            // set when the last evaluation failed (the views are the last good ones)
  std::vector<SloView> slos;
  std::map<std::string, std::vector<SloMinute>> last_hour;  // by connector, oldest first, 60 minutes
};

// Evaluates every connector's SLOs from the fleet-wide counts (design §8): flushes this instance's
// counts, reads the counters back, computes burn rates, budget and tier verdicts, and moves the
// fleet-wide alarm state by conditional writes. Each change is announced (the SLO_ALARM_FIRING /
// SLO_ALARM_RESOLVED audit event and the notification) by the one instance that claims it with a
// conditional write: the instance that made the change, right after it, or — when that one lost
// the answer of its write or died before claiming — the next instance that finds the change
// unclaimed. A change superseded before anyone claimed it is not announced. Gauges follow every
// evaluation.
//
// Thread-safe: Tick from one thread at a time (a background loop), Snapshot from any.
class SloEvaluator {
 public:
  // `instance_id` names this process in announcement claims (unique across the fleet).
  SloEvaluator(const Config& config, SloCounters& counters, Ledger& ledger, Metrics& metrics, const Clock& clock,
               AlarmNotifier* notifier, std::string instance_id);

  // Evaluates every configured connector. Returns the first store error (kUnavailable, ...) after
  // evaluating all of them: a connector that fails keeps its last good views in the snapshot, which
  // names every failure in `error`; the others are evaluated as usual. A damaged SLO item is no
  // failure: a damaged counter is left out of the counts, a damaged alarm item is rewritten
  // (SloCounters::RepairAlarm); each is named in `error` (the first three), logged once per process
  // and counted in toolgate_slo_evaluation_errors_total{kind="damaged_item"}. (An item the store
  // cannot decode at all fails its connector's read: kDataLoss, counted as damaged_item too.)
  absl::Status Tick();
  SloSnapshot Snapshot() const;

  // The views of one connector's series at `now_ms` (pure: no store, no alarm state).
  static std::vector<SloView> Evaluate(const ConnectorConfig& connector, const SloSeries& series, int64_t now_ms);
  // Prometheus-style estimate (linear within the bucket) of the p-quantile of a latency histogram.
  static std::optional<double> Percentile(const std::array<int64_t, kLatencyBucketCount>& histogram, double p);

 private:
  // Reads, evaluates and reconciles one connector, adding its views to `next` only when all succeed.
  // The damaged items it met (and left out, or repaired) are added to `damaged`.
  absl::Status EvaluateConnector(const ConnectorConfig& connector, int64_t now_ms, SloSnapshot& next,
                                 std::vector<std::string>& damaged);
  // Writes the verdicts that differ from the fleet's stored state (except a change made within
  // `hold_ms`, the connector's clock skew, of `now_ms`) and claims and announces unannounced changes.
  absl::Status Reconcile(SloView& view, const std::map<std::string, SloAlarmState>& stored, int64_t now_ms,
                         int64_t hold_ms);
  void Announce(const SloView& view, const SloAlarmView& alarm);
  // Audits, logs and notifies one alarm change described by `data` (connector_id, slo, tier, ...).
  void Publish(bool firing, const nlohmann::json& data, int64_t seq, int64_t changed_at_ms);
  // Resolves (and announces, reason connector_removed) the firing alarms of connectors that are no
  // longer configured: nothing evaluates them any more, and their items have no TTL. Run at start
  // and every kRemovedPassIntervalMs (every Tick while it has not settled).
  // `settled`: every such alarm resolved and announced; damaged alarm items met are added to `damaged`.
  absl::Status ResolveRemovedConnectors(std::vector<std::string>& damaged, bool& settled);
  void Export(const SloView& view);

  const Config& config_;
  SloCounters& counters_;
  Ledger& ledger_;
  Metrics& metrics_;
  const Clock& clock_;
  AlarmNotifier* notifier_;
  const std::string instance_id_;
  // Claims whose answer was lost ("<connector>#<slo>#<tier>" -> seq): Tick's thread only.
  std::map<std::string, int64_t> unsure_claims_;
  std::set<std::string> alarmed_;        // connectors this process has RememberAlarmed: Tick's thread only
  std::set<std::string> damage_logged_;  // damaged items this process has logged: Tick's thread only
  // How often ResolveRemovedConnectors runs again once it has settled everything.
  static constexpr int64_t kRemovedPassIntervalMs = 60'000;
  // When ResolveRemovedConnectors runs next, on the monotonic clock (now_monotonic_ms): Tick's thread only.
  int64_t next_removed_pass_ms_ = 0;
  mutable absl::Mutex mu_;
  SloSnapshot snapshot_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate
