#include "toolgate/engine/slo_evaluator.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/engine/event_log.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using json = nlohmann::json;

namespace {

std::string AlarmKey(slo::Sli sli, std::string_view tier) {
  return std::string(slo::ToString(sli)) + "#" + std::string(tier);
}

}  // namespace

SloEvaluator::SloEvaluator(const Config& config, SloCounters& counters, Ledger& ledger, Metrics& metrics,
                           const Clock& clock, AlarmNotifier* notifier)
    : config_(config), counters_(counters), ledger_(ledger), metrics_(metrics), clock_(clock), notifier_(notifier) {}

std::optional<double> SloEvaluator::Percentile(const std::array<int64_t, kLatencyBucketCount>& histogram, double p) {
  int64_t total = 0;
  for (int64_t n : histogram) total += n;
  if (total == 0) return std::nullopt;
  const double rank = p * static_cast<double>(total);
  double below = 0;
  for (size_t i = 0; i < histogram.size(); ++i) {
    const double in_bucket = static_cast<double>(histogram[i]);
    if (in_bucket > 0 && below + in_bucket >= rank) {
      // Above the last bound there is nothing to interpolate towards: answer the last bound, as
      // Prometheus' histogram_quantile does for its +Inf bucket.
      if (i == kLatencyBucketsMs.size()) return static_cast<double>(kLatencyBucketsMs.back());
      const double lower = i == 0 ? 0.0 : static_cast<double>(kLatencyBucketsMs[i - 1]);
      const double upper = static_cast<double>(kLatencyBucketsMs[i]);
      return lower + (upper - lower) * ((rank - below) / in_bucket);
    }
    below += in_bucket;
  }
  return static_cast<double>(kLatencyBucketsMs.back());
}

std::vector<SloView> SloEvaluator::Evaluate(const ConnectorConfig& connector, const SloSeries& series, int64_t now_ms) {
  const int64_t now_minute = now_ms / 60'000;
  const int64_t now_hour = now_minute / 60;
  const slo::Buckets minutes = series.MinuteCounts();
  const slo::Buckets hours = series.HourCounts();
  std::vector<SloView> views;
  for (slo::Sli sli : slo::kSlis) {
    SloView v;
    v.connector = connector.id;
    v.sli = sli;
    v.target = sli == slo::Sli::kToolError ? connector.slo.error_target : connector.slo.latency_target;
    if (sli == slo::Sli::kToolLatency) v.latency_threshold_ms = connector.slo.latency_threshold_ms;
    for (const slo::Window& w : slo::kWindows) {
      // Up to 6 h at minute resolution; the 1 d and 3 d windows at hour resolution (the current,
      // partial hour included).
      const slo::Counts c = w.minutes <= slo::kMinuteResolutionUpToMinutes
                                ? slo::SumLast(minutes, now_minute, w.minutes, sli)
                                : slo::SumLast(hours, now_hour, w.minutes / 60, sli);
      v.windows[std::string(w.label)] = c;
      v.burn_rates[std::string(w.label)] = slo::BurnRate(c, v.target);
    }
    v.period = slo::SumLast(hours, now_hour, slo::kBudgetMinutes / 60, sli);
    v.budget_remaining = slo::BudgetRemaining(v.period, v.target);
    v.seconds_to_exhaustion = slo::SecondsToExhaustion(v.budget_remaining, v.burn_rates.at("1h"));
    for (const slo::Tier& t : slo::kTiers) {
      SloAlarmView a;
      a.tier = &t;
      a.verdict = slo::EvaluateTier(t, v.windows.at(std::string(t.long_window)),
                                    v.windows.at(std::string(t.short_window)), v.target, connector.slo.min_events);
      a.firing = a.verdict.firing;
      v.alarms.push_back(a);
    }
    views.push_back(std::move(v));
  }
  return views;
}

absl::Status SloEvaluator::Reconcile(SloView& view, const std::map<std::string, SloAlarmState>& stored) {
  for (SloAlarmView& a : view.alarms) {
    const auto it = stored.find(AlarmKey(view.sli, a.tier->name));
    const bool was_firing = it != stored.end() && it->second.firing;
    a.since_ms = it != stored.end() ? it->second.since_ms : 0;
    if (a.verdict.firing == was_firing) continue;
    ASSIGN_OR_RETURN(bool changed, counters_.SetAlarm(view.connector, view.sli, a.tier->name, a.verdict.firing));
    // Whoever changed it, the fleet-wide state is now the verdict's; only the winner announces it.
    a.since_ms = clock_.now_epoch_ms();
    if (changed) Announce(view, a);
  }
  return absl::OkStatus();
}

void SloEvaluator::Announce(const SloView& view, const SloAlarmView& a) {
  const std::string type = a.firing ? "SLO_ALARM_FIRING" : "SLO_ALARM_RESOLVED";
  json data = {{"connector_id", view.connector},
               {"slo", std::string(slo::ToString(view.sli))},
               {"tier", std::string(a.tier->name)},
               {"severity", std::string(slo::ToString(a.tier->severity))},
               {"factor", a.tier->factor},
               {"target", view.target},
               {"long_window", std::string(a.tier->long_window)},
               {"short_window", std::string(a.tier->short_window)},
               {"long_burn_rate", a.verdict.long_burn},
               {"short_burn_rate", a.verdict.short_burn},
               {"long_window_events", a.verdict.long_events},
               {"error_budget_remaining", view.budget_remaining}};
  if (view.sli == slo::Sli::kToolLatency) data["latency_threshold_ms"] = view.latency_threshold_ms;
  const std::string text = data.dump();
  LogEvent(a.firing ? spdlog::level::warn : spdlog::level::info, a.firing ? "slo_alarm_firing" : "slo_alarm_resolved",
           std::string(a.firing ? "SLO alarm firing: " : "SLO alarm resolved: ") + view.connector + " " +
               std::string(slo::ToString(view.sli)) + " tier " + std::string(a.tier->name),
           data);
  if (auto e = ledger_.Audit(type, "system", text); !e.ok()) {
    spdlog::warn("audit of {} for {} not written: {}", type, view.connector, e.status().ToString());
  }
  if (notifier_ != nullptr) {
    json payload = data;
    payload["event"] = type;
    payload["at"] = Rfc3339(clock_.now_epoch_ms());
    notifier_->Notify(payload.dump());
  }
}

void SloEvaluator::Export(const SloView& view) {
  const std::string sli(slo::ToString(view.sli));
  for (const auto& [window, rate] : view.burn_rates) metrics_.SloBurnRate(view.connector, sli, window, rate);
  for (slo::Severity sev : {slo::Severity::kPage, slo::Severity::kTicket}) {
    bool firing = false;
    for (const SloAlarmView& a : view.alarms) firing |= a.tier->severity == sev && a.firing;
    metrics_.SloAlarm(view.connector, sli, std::string(slo::ToString(sev)), firing);
  }
  metrics_.SloBudgetRemaining(view.connector, sli, view.budget_remaining);
}

absl::Status SloEvaluator::Tick() {
  absl::Status flushed = counters_.Flush();
  if (!flushed.ok()) spdlog::warn("SLO counts not flushed (kept for the next try): {}", flushed.ToString());
  const int64_t now_ms = clock_.now_epoch_ms();
  SloSnapshot next;
  next.evaluated_at_ms = now_ms;
  absl::Status result = flushed;
  for (const auto& [id, connector] : config_.connectors) {
    absl::StatusOr<SloSeries> series = counters_.Read(id);
    absl::StatusOr<std::map<std::string, SloAlarmState>> stored =
        series.ok() ? counters_.ReadAlarms(id) : absl::StatusOr<std::map<std::string, SloAlarmState>>(series.status());
    if (!stored.ok()) {
      absl::MutexLock lock(&mu_);
      snapshot_.error = absl::StrCat("connector ", id, ": ", stored.status().message());
      return stored.status();
    }
    for (SloView& v : Evaluate(connector, *series, now_ms)) {
      if (absl::Status s = Reconcile(v, *stored); !s.ok()) {
        absl::MutexLock lock(&mu_);
        snapshot_.error = absl::StrCat("connector ", id, ": ", s.message());
        return s;
      }
      Export(v);
      next.slos.push_back(std::move(v));
    }
    std::vector<SloMinute>& minutes = next.last_hour[id];
    const int64_t now_minute = now_ms / 60'000;
    for (int64_t m = now_minute - 59; m <= now_minute; ++m) {
      SloMinute point;
      point.epoch_minute = m;
      if (auto it = series->minutes.find(m); it != series->minutes.end()) {
        point.counts = it->second.counts;
        point.p50_ms = Percentile(it->second.latency, 0.50);
        point.p95_ms = Percentile(it->second.latency, 0.95);
        point.p99_ms = Percentile(it->second.latency, 0.99);
      }
      minutes.push_back(point);
    }
  }
  if (!flushed.ok()) next.error = absl::StrCat("counts not flushed: ", flushed.message());
  absl::MutexLock lock(&mu_);
  snapshot_ = std::move(next);
  return result;
}

SloSnapshot SloEvaluator::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return snapshot_;
}

}  // namespace toolgate
