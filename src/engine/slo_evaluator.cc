#include "toolgate/engine/slo_evaluator.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
                           const Clock& clock, AlarmNotifier* notifier, std::string instance_id)
    : config_(config),
      counters_(counters),
      ledger_(ledger),
      metrics_(metrics),
      clock_(clock),
      notifier_(notifier),
      instance_id_(std::move(instance_id)) {}

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

absl::Status SloEvaluator::Reconcile(SloView& view, const std::map<std::string, SloAlarmState>& stored, int64_t now_ms,
                                     int64_t hold_ms) {
  for (SloAlarmView& a : view.alarms) {
    const std::string key = AlarmKey(view.sli, a.tier->name);
    const std::string claim_key = absl::StrCat(view.connector, "#", key);
    const auto it = stored.find(key);
    const SloAlarmState state = it != stored.end() ? it->second : SloAlarmState{};
    a.since_ms = state.since_ms;
    a.seq = state.seq;
    // A change made within the clock skew of this clock's now is not reversed: an instance whose
    // clock runs ahead (within max_clock_skew_s) cuts its windows at the next minute first, and
    // an instance behind it, whose windows still hold that minute, would otherwise change the
    // alarm back (a page on a resolve, or a resolve on a page) until its own clock caught up. A
    // change further off than the skew is not trusted to have come from a skewed clock.
    const bool held =
        a.verdict.firing != state.firing && state.since_ms != 0 && state.since_ms > now_ms - hold_ms &&
        state.since_ms < now_ms + hold_ms;  // compared, not subtracted: an edited since_ms cannot overflow
    if (held) a.firing = state.firing;      // the fleet's state stands, and is claimed below if unannounced
    if (!state.damage.empty()) {
      // Nothing could change a damaged item again (its conditions and its ADD fail): rewritten as
      // the verdict, by one instance, and announced as any change when it is news.
      if (a.verdict.firing && !alarmed_.contains(view.connector)) {  // findable should it leave the config
        RETURN_IF_ERROR(counters_.RememberAlarmed(view.connector));
        alarmed_.insert(view.connector);
      }
      ASSIGN_OR_RETURN(std::optional<SloAlarmState> repaired,
                       counters_.RepairAlarm(view.connector, view.sli, a.tier->name, a.verdict.firing, state));
      a.firing = a.verdict.firing;
      a.since_ms = repaired ? repaired->since_ms : clock_.now_epoch_ms();
      if (repaired) a.seq = repaired->seq;
      // Repaired by another instance (which announces it, or the next tick claims it), or no news.
      if (!repaired || repaired->announced) continue;
    } else if (a.verdict.firing != state.firing && !held) {
      if (a.verdict.firing && !alarmed_.contains(view.connector)) {  // findable should it leave the config
        RETURN_IF_ERROR(counters_.RememberAlarmed(view.connector));
        alarmed_.insert(view.connector);
      }
      ASSIGN_OR_RETURN(std::optional<SloAlarmState> changed,
                       counters_.SetAlarm(view.connector, view.sli, a.tier->name, a.verdict.firing));
      // Whoever changed it, the fleet-wide state is now the verdict's. The change is announced by
      // the one instance that claims it: usually this one, now; should this one fail or die before
      // its claim, the next instance (or tick) that finds the change unclaimed.
      a.since_ms = changed ? changed->since_ms : clock_.now_epoch_ms();
      if (!changed) continue;
      a.seq = changed->seq;
    } else if (state.announced) {
      // A claim of ours whose answer was lost: when it did go in, the announcement is ours to make.
      const auto unsure = unsure_claims_.find(claim_key);
      if (unsure == unsure_claims_.end()) continue;
      const bool ours = unsure->second == state.seq && state.announced_by == instance_id_;
      unsure_claims_.erase(unsure);
      if (ours) Announce(view, a);
      continue;
    }
    absl::StatusOr<bool> claimed =
        counters_.ClaimAnnouncement(view.connector, view.sli, a.tier->name, a.seq, instance_id_);
    if (!claimed.ok()) {
      unsure_claims_[claim_key] = a.seq;
      return claimed.status();
    }
    unsure_claims_.erase(claim_key);
    if (*claimed) Announce(view, a);
  }
  return absl::OkStatus();
}

namespace {

// What names an alarm in its audit event and notification: the connector, the SLO and the tier's rule.
json AlarmIdentity(const std::string& connector, slo::Sli sli, const slo::Tier& tier) {
  return {{"connector_id", connector},
          {"slo", std::string(slo::ToString(sli))},
          {"tier", std::string(tier.name)},
          {"severity", std::string(slo::ToString(tier.severity))},
          {"factor", tier.factor},
          {"long_window", std::string(tier.long_window)},
          {"short_window", std::string(tier.short_window)}};
}

// The announcement of a removed connector's alarm: no burn rates, nothing evaluates it any more.
json RemovedAlarmData(const std::string& connector, slo::Sli sli, const slo::Tier& tier) {
  json data = AlarmIdentity(connector, sli, tier);
  data["reason"] = "connector_removed";
  return data;
}

}  // namespace

void SloEvaluator::Announce(const SloView& view, const SloAlarmView& a) {
  json data = AlarmIdentity(view.connector, view.sli, *a.tier);
  data["target"] = view.target;
  if (a.firing == a.verdict.firing) {
    data["long_burn_rate"] = a.verdict.long_burn;
    data["short_burn_rate"] = a.verdict.short_burn;
    data["long_window_events"] = a.verdict.long_events;
  } else {
    // A change another instance made, held (its clock ahead within the skew) and claimed here
    // unannounced: this instance's windows do not agree yet, and its burn rates would say the
    // opposite of the change they came with.
    data["reason"] = "clock_skew";
  }
  data["error_budget_remaining"] = view.budget_remaining;
  if (view.sli == slo::Sli::kToolLatency) data["latency_threshold_ms"] = view.latency_threshold_ms;
  Publish(a.firing, data, a.seq, a.since_ms);
}

void SloEvaluator::Publish(bool firing, const json& data, int64_t seq, int64_t changed_at_ms) {
  const std::string type = firing ? "SLO_ALARM_FIRING" : "SLO_ALARM_RESOLVED";
  const std::string connector = data["connector_id"].get<std::string>();
  const std::string key =
      absl::StrCat(connector, "#", data["slo"].get<std::string>(), "#", data["tier"].get<std::string>());
  const std::string text = data.dump();
  LogEvent(firing ? spdlog::level::warn : spdlog::level::info, firing ? "slo_alarm_firing" : "slo_alarm_resolved",
           std::string(firing ? "SLO alarm firing: " : "SLO alarm resolved: ") + key, data);
  if (auto e = ledger_.Audit(type, "system", text); !e.ok()) {
    spdlog::warn("audit of {} for {} not written: {}", type, connector, e.status().ToString());
  }
  if (notifier_ != nullptr) {
    json payload = data;
    payload["event"] = type;
    payload["at"] = Rfc3339(clock_.now_epoch_ms());
    // What a receiver orders one alarm's notifications by: deliveries from different instances (or
    // a retry) may arrive in any order, the alarm's sequence never goes back.
    payload["seq"] = seq;
    payload["changed_at_ms"] = changed_at_ms;
    notifier_->Notify(key, payload.dump());
  }
}

absl::Status SloEvaluator::ResolveRemovedConnectors(std::vector<std::string>& damaged, bool& settled) {
  settled = false;
  ASSIGN_OR_RETURN(std::vector<std::string> alarmed, counters_.AlarmedConnectors());
  absl::Status first_error;
  settled = true;  // every alarm of every removed connector resolved and announced
  auto note = [&](const absl::Status& s) {
    if (first_error.ok()) first_error = s;
  };
  for (const std::string& id : alarmed) {
    if (config_.connectors.contains(id)) continue;
    absl::StatusOr<std::map<std::string, SloAlarmState>> stored = counters_.ReadAlarms(id);
    if (!stored.ok()) {  // the others are still resolved
      note(stored.status());
      continue;
    }
    for (slo::Sli sli : slo::kSlis) {
      for (const slo::Tier& tier : slo::kTiers) {
        const std::string claim_key = absl::StrCat(id, "#", AlarmKey(sli, tier.name));
        const auto it = stored->find(AlarmKey(sli, tier.name));
        if (it == stored->end()) continue;
        SloAlarmState state = it->second;
        const bool damaged_item = !state.damage.empty();
        if (damaged_item) {
          damaged.push_back(absl::StrCat("SLO#", id, "/ALARM#", AlarmKey(sli, tier.name), ": ", state.damage));
        } else if (!state.firing && state.announced) {
          // Announced; or a claim of ours whose answer was lost, which is ours to announce if it went in.
          const auto unsure = unsure_claims_.find(claim_key);
          if (unsure == unsure_claims_.end()) continue;
          const bool ours = unsure->second == state.seq && state.announced_by == instance_id_;
          unsure_claims_.erase(unsure);
          if (ours) Publish(false, RemovedAlarmData(id, sli, tier), state.seq, state.since_ms);
          continue;
        }
        if (damaged_item || state.firing) {  // resolved; a damaged item by a rewrite, a change when it is news
          absl::StatusOr<std::optional<SloAlarmState>> changed =
              damaged_item ? counters_.RepairAlarm(id, sli, tier.name, false, state)
                           : counters_.SetAlarm(id, sli, tier.name, false);
          if (!changed.ok()) {
            note(changed.status());
            continue;
          }
          if (!*changed) {  // another instance changed it: the next pass reads its sequence and claims
            settled = false;
            continue;
          }
          if ((*changed)->announced) continue;  // a repair of an alarm resolved already: nothing to announce
          state = **changed;
        }
        // Resolved, unclaimed: by this pass, or by an instance that lost its answer or died first.
        absl::StatusOr<bool> claimed = counters_.ClaimAnnouncement(id, sli, tier.name, state.seq, instance_id_);
        if (!claimed.ok()) {
          unsure_claims_[claim_key] = state.seq;
          note(claimed.status());
          continue;
        }
        unsure_claims_.erase(claim_key);
        if (*claimed) Publish(false, RemovedAlarmData(id, sli, tier), state.seq, state.since_ms);
      }
    }
  }
  if (!first_error.ok()) settled = false;
  return first_error;
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

absl::Status SloEvaluator::EvaluateConnector(const ConnectorConfig& connector, int64_t now_ms, SloSnapshot& next,
                                             std::vector<std::string>& damaged) {
  ASSIGN_OR_RETURN(SloSeries series, counters_.Read(connector.id, connector.concurrency.max_clock_skew_s));
  damaged.insert(damaged.end(), series.damaged.begin(), series.damaged.end());
  ASSIGN_OR_RETURN(auto stored, counters_.ReadAlarms(connector.id));
  for (const auto& [key, state] : stored) {
    if (!state.damage.empty())
      damaged.push_back(absl::StrCat("SLO#", connector.id, "/ALARM#", key, ": ", state.damage));
  }
  std::vector<SloView> views = Evaluate(connector, series, now_ms);
  const int64_t hold_ms = int64_t{connector.concurrency.max_clock_skew_s} * 1000;
  for (SloView& v : views) RETURN_IF_ERROR(Reconcile(v, stored, now_ms, hold_ms));
  for (SloView& v : views) {
    Export(v);
    next.slos.push_back(std::move(v));
  }
  std::vector<SloMinute>& minutes = next.last_hour[connector.id];
  const int64_t now_minute = now_ms / 60'000;
  for (int64_t m = now_minute - 59; m <= now_minute; ++m) {
    SloMinute point;
    point.epoch_minute = m;
    if (auto it = series.minutes.find(m); it != series.minutes.end()) {
      point.counts = it->second.counts;
      point.p50_ms = Percentile(it->second.latency, 0.50);
      point.p95_ms = Percentile(it->second.latency, 0.95);
      point.p99_ms = Percentile(it->second.latency, 0.99);
    }
    minutes.push_back(point);
  }
  return absl::OkStatus();
}

absl::Status SloEvaluator::Tick() {
  absl::Status flushed = counters_.Flush();
  if (!flushed.ok()) spdlog::warn("SLO counts not flushed (kept for the next try): {}", flushed.ToString());
  const int64_t now_ms = clock_.now_epoch_ms();
  const SloSnapshot last = Snapshot();
  SloSnapshot next;
  next.evaluated_at_ms = now_ms;
  absl::Status result = flushed;
  std::vector<std::string> errors;
  if (!flushed.ok()) {
    errors.push_back(absl::StrCat("counts not flushed: ", flushed.message()));
    metrics_.SloEvaluationError("store_error");
  }
  // At start, then every kRemovedPassIntervalMs once settled (every evaluation until then): an
  // instance still on an older config (a rolling or surge deployment) may fire a removed connector's
  // alarm again after this one resolved it, and then nothing configured would ever resolve it.
  // On the monotonic clock: a wall clock stepped back must not put the next pass off by the step.
  std::vector<std::string> damaged;
  const int64_t now_monotonic_ms = clock_.now_monotonic_ms();
  if (now_monotonic_ms >= next_removed_pass_ms_) {
    bool settled = false;
    const size_t damaged_before = damaged.size();
    const absl::Status s = ResolveRemovedConnectors(damaged, settled);
    if (damaged.size() > damaged_before) metrics_.SloEvaluationError("damaged_item");
    // Not settled (a resolve another instance made is not announced yet, or an error): again at the
    // next evaluation.
    next_removed_pass_ms_ = settled ? now_monotonic_ms + kRemovedPassIntervalMs : 0;
    if (!s.ok()) {
      spdlog::warn("SLO alarms of connectors no longer configured not resolved yet (next evaluation tries again): {}",
                   s.ToString());
      errors.push_back(absl::StrCat("alarms of removed connectors: ", s.message()));
      metrics_.SloEvaluationError(s.code() == absl::StatusCode::kDataLoss ? "damaged_item" : "store_error");
      if (result.ok()) result = s;
    }
  }
  // Every connector is evaluated: one whose counters or alarms cannot be read (or whose alarm write
  // failed) keeps its last good views and is named in the error, and never blinds the others.
  for (const auto& [id, connector] : config_.connectors) {
    const size_t damaged_before = damaged.size();
    const absl::Status s = EvaluateConnector(connector, now_ms, next, damaged);
    if (damaged.size() > damaged_before) metrics_.SloEvaluationError("damaged_item");
    if (s.ok()) continue;
    spdlog::warn("SLO evaluation of connector {} failed (its last good evaluation is kept): {}", id, s.ToString());
    errors.push_back(absl::StrCat("connector ", id, ": ", s.message()));
    // kDataLoss: an item the store could not decode at all (an attribute of a type toolgate never
    // writes fails its whole read), damage as much as a count that is not a count.
    metrics_.SloEvaluationError(s.code() == absl::StatusCode::kDataLoss ? "damaged_item" : "store_error");
    if (result.ok()) result = s;
    for (const SloView& v : last.slos) {
      if (v.connector == id) next.slos.push_back(v);
    }
    if (auto it = last.last_hour.find(id); it != last.last_hour.end()) next.last_hour[id] = it->second;
  }
  // A damaged item is left out of the counts (or rewritten) at every evaluation, and named in the
  // snapshot's error each time; logged once per process. It is no failure of the evaluation (Tick's
  // caller logs failures at every evaluation, and this one would be logged every 10 s for as long as
  // the item is kept: 31 days for an hour item).
  if (damage_logged_.size() > 10'000) damage_logged_.clear();  // bounded; at worst logged again
  for (const std::string& d : damaged) {
    if (damage_logged_.insert(d).second) {
      spdlog::error("SLO item not as toolgate writes it, left out of the SLO counts or rewritten: {}", d);
    }
  }
  if (!damaged.empty()) {
    constexpr size_t kNamed = 3;
    std::vector<std::string> named(damaged.begin(), damaged.begin() + std::min(damaged.size(), kNamed));
    errors.push_back(absl::StrCat(damaged.size(), " damaged SLO item(s) left out of the counts or rewritten: ",
                                  absl::StrJoin(named, "; "), damaged.size() > kNamed ? "; ..." : ""));
  }
  next.error = absl::StrJoin(errors, "; ");
  absl::MutexLock lock(&mu_);
  snapshot_ = std::move(next);
  return result;
}

SloSnapshot SloEvaluator::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return snapshot_;
}

}  // namespace toolgate
