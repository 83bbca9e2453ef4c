#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/domain/slo.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/slo_counters.h"

namespace toolgate {

// Receives a JSON document for every alarm that fires or resolves. Must not block: the evaluator
// calls it on its own thread, and delivery (with retries) is the implementation's business.
class AlarmNotifier {
 public:
  virtual ~AlarmNotifier() = default;
  virtual void Notify(std::string json_payload) = 0;
};

struct SloAlarmView {
  const slo::Tier* tier = nullptr;
  slo::TierVerdict verdict;  // firing: what the counts say now
  bool firing = false;       // the fleet-wide state after this evaluation
  int64_t since_ms = 0;      // when the fleet-wide state last changed (0: never fired)
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
// fleet-wide alarm state by conditional writes; the instance that wins a change writes the
// SLO_ALARM_FIRING / SLO_ALARM_RESOLVED audit event and notifies. Gauges follow every evaluation.
//
// Thread-safe: Tick from one thread at a time (a background loop), Snapshot from any.
class SloEvaluator {
 public:
  SloEvaluator(const Config& config, SloCounters& counters, Ledger& ledger, Metrics& metrics, const Clock& clock,
               AlarmNotifier* notifier);

  // Store errors (the snapshot keeps the last good views and names the error).
  absl::Status Tick();
  SloSnapshot Snapshot() const;

  // The views of one connector's series at `now_ms` (pure: no store, no alarm state).
  static std::vector<SloView> Evaluate(const ConnectorConfig& connector, const SloSeries& series, int64_t now_ms);
  // Prometheus-style estimate (linear within the bucket) of the p-quantile of a latency histogram.
  static std::optional<double> Percentile(const std::array<int64_t, kLatencyBucketCount>& histogram, double p);

 private:
  absl::Status Reconcile(SloView& view, const std::map<std::string, SloAlarmState>& stored);
  void Announce(const SloView& view, const SloAlarmView& alarm);
  void Export(const SloView& view);

  const Config& config_;
  SloCounters& counters_;
  Ledger& ledger_;
  Metrics& metrics_;
  const Clock& clock_;
  AlarmNotifier* notifier_;
  mutable absl::Mutex mu_;
  SloSnapshot snapshot_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate
