#include "api/views.h"

#include "toolgate/services/kill_switch_service.h"  // Rfc3339
#include "toolgate/domain/json_depth.h"

namespace toolgate::api {

using json = nlohmann::json;

namespace {

json Optional(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

json EventJson(const LedgerEvent& e) {
  json data = ParseJsonWithin(e.data);
  if (data.is_discarded()) data = e.data;
  return {{"seq", e.seq}, {"type", e.type}, {"at", e.at}, {"actor", e.actor}, {"data", data}, {"hash", e.hash}};
}

json ExecutionJson(const ExecutionRecord& r) {
  json j = {{"execution_id", r.execution_id},
            {"tool_name", r.tool_name},
            {"connector_id", r.connector_id},
            {"outcome", r.outcome},
            {"created_at", Rfc3339(r.created_at_ms)}};
  if (!r.reason.empty()) j["reason"] = r.reason;
  if (!r.replay_of.empty()) j["replay_of"] = r.replay_of;
  if (r.latency_ms >= 0) j["latency_ms"] = r.latency_ms;
  if (r.downstream_status) j["downstream_status"] = r.downstream_status;
  if (!r.idempotency_key.empty()) j["idempotency_key"] = r.idempotency_key;
  if (r.unguarded) j["unguarded"] = true;
  if (r.expires_at_s > 0) j["expires_at"] = Rfc3339(r.expires_at_s * 1000);
  return j;
}

json BreakerJson(const breaker::Snapshot& b) {
  return {{"state", std::string(breaker::ToString(b.state))},
          {"open_until_epoch_sec", b.open_until_epoch_sec},
          {"half_open_probe_in_flight", b.half_open_probe_in_flight},
          {"generation", b.generation}};
}

json SloViewJson(const SloView& v) {
  json burn = json::object();
  json events = json::object();
  for (const auto& [w, rate] : v.burn_rates) burn[w] = rate;
  for (const auto& [w, c] : v.windows) events[w] = {{"total", c.total}, {"bad", c.bad}};
  json alarms = json::array();
  for (const auto& a : v.alarms) {
    alarms.push_back({{"tier", std::string(a.tier->name)},
                      {"severity", std::string(slo::ToString(a.tier->severity))},
                      {"factor", a.tier->factor},
                      {"long_window", std::string(a.tier->long_window)},
                      {"short_window", std::string(a.tier->short_window)},
                      {"firing", a.firing},
                      {"since", a.since_ms > 0 ? json(Rfc3339(a.since_ms)) : json(nullptr)},
                      {"long_burn_rate", a.verdict.long_burn},
                      {"short_burn_rate", a.verdict.short_burn},
                      {"long_window_events", a.verdict.long_events}});
  }
  json out = {{"connector", v.connector},
              {"slo", std::string(slo::ToString(v.sli))},
              {"target", v.target},
              {"error_budget_remaining", v.budget_remaining},
              {"budget_exhausted_in_s", v.seconds_to_exhaustion ? json(*v.seconds_to_exhaustion) : json(nullptr)},
              {"period_events", {{"total", v.period.total}, {"bad", v.period.bad}}},
              {"burn_rates", burn},
              {"window_events", events},
              {"alarms", alarms}};
  if (v.sli == slo::Sli::kToolLatency) out["latency_threshold_ms"] = v.latency_threshold_ms;
  return out;
}

json SloSnapshotJson(const SloSnapshot& s) {
  json list = json::array();
  for (const auto& v : s.slos) list.push_back(SloViewJson(v));
  return {{"evaluated_at", s.evaluated_at_ms > 0 ? json(Rfc3339(s.evaluated_at_ms)) : json(nullptr)},
          {"error", s.error.empty() ? json(nullptr) : json(s.error)},
          {"slos", list}};
}

json ConnectorSloJson(const SloSnapshot& snapshot, const std::string& id) {
  json out = json::object();
  for (const auto& v : snapshot.slos) {
    if (v.connector != id) continue;
    json firing = json::array();
    for (const auto& a : v.alarms) {
      if (a.firing)
        firing.push_back(
            {{"tier", std::string(a.tier->name)}, {"severity", std::string(slo::ToString(a.tier->severity))}});
    }
    out[std::string(slo::ToString(v.sli))] = {{"target", v.target},
                                              {"error_budget_remaining", v.budget_remaining},
                                              {"burn_rate_1h", v.burn_rates.at("1h")},
                                              {"firing", firing}};
  }
  if (snapshot.evaluated_at_ms == 0) out["status"] = "not_evaluated_yet";
  return out;
}

json SeriesJson(const SloSnapshot& snapshot) {
  json connectors = json::object();
  for (const auto& [id, minutes] : snapshot.last_hour) {
    json points = json::array();
    for (const auto& m : minutes) {
      points.push_back({{"minute", Rfc3339(m.epoch_minute * 60'000)},
                        {"calls", m.counts.total},
                        {"errors", m.counts.error_bad},
                        {"slow", m.counts.latency_bad},
                        {"error_ratio", m.counts.total > 0 ? json(static_cast<double>(m.counts.error_bad) /
                                                                  static_cast<double>(m.counts.total))
                                                           : json(nullptr)},
                        {"p50_ms", Optional(m.p50_ms)},
                        {"p95_ms", Optional(m.p95_ms)},
                        {"p99_ms", Optional(m.p99_ms)}});
    }
    connectors[id] = points;
  }
  return {{"evaluated_at", snapshot.evaluated_at_ms > 0 ? json(Rfc3339(snapshot.evaluated_at_ms)) : json(nullptr)},
          {"connectors", connectors}};
}

json ExecutionViewJson(const ExecutionRecord& r, const std::vector<LedgerEvent>& events) {
  json j = ExecutionJson(r);
  j["events"] = json::array();
  j["replays"] = json::array();
  for (const auto& e : events) {
    j["events"].push_back(EventJson(e));
    if (e.type == "REPLAY_REQUESTED") j["replays"].push_back(j["events"].back()["data"]["execution_id"]);
  }
  if (r.outcome == Outcome::kSucceeded) j["result"] = ParseJsonWithin(r.result_json);
  return j;
}

}  // namespace toolgate::api
