#include "toolgate/engine/operator_status.h"

#include "toolgate/services/kill_switch_service.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using json = nlohmann::json;

json LimitNoteJson(const ConcurrencySnapshot& s) {
  if (!s.limit_set_by_operator) return nullptr;
  return {{"set_by", s.limit_set_by},
          {"reason", s.limit_reason},
          {"set_at", s.limit_set_at_ms > 0 ? json(Rfc3339(s.limit_set_at_ms)) : json(nullptr)}};
}

std::string_view ConnectorKindName(const ConnectorConfig& connector) {
  switch (connector.kind) {
    case ConnectorKind::kHttp:
      return "http";
    case ConnectorKind::kMcp:
      return "mcp";
    case ConnectorKind::kMcpStdio:
      return "mcp_stdio";
  }
  return "http";
}

absl::StatusOr<json> McpServerJson(Engine& engine, const ConnectorConfig& connector) {
  ASSIGN_OR_RETURN(std::optional<McpServerRecord> saved, McpToolRegistry::Load(engine.store(), connector.id));
  json out = {{"transport", connector.kind == ConnectorKind::kMcp ? "streamable_http" : "stdio"}};
  if (connector.kind == ConnectorKind::kMcp) {
    out["url"] = connector.url;
  } else {
    out["program"] = connector.command.empty() ? "" : connector.command.front();
  }
  auto text_or_null = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
  out["server_name"] = saved ? text_or_null(saved->server_name) : json(nullptr);
  out["server_version"] = saved ? text_or_null(saved->server_version) : json(nullptr);
  out["protocol_version"] = saved ? text_or_null(saved->protocol_version) : json(nullptr);
  out["tool_count"] = saved ? saved->tool_count : static_cast<int64_t>(engine.mcp_tools().ToolCount(connector.id));
  out["tools_refreshed_at"] =
      saved && saved->refreshed_at_ms > 0 ? json(Rfc3339(saved->refreshed_at_ms)) : json(nullptr);
  return out;
}

json StoreHealthJson(Engine& engine) {
  const StoreWriteHealth::Snapshot w = engine.write_health().snapshot();
  const bool seen = w.last_failure_ms > 0 || w.last_success_ms > 0;
  json failure = nullptr;
  if (w.last_failure_ms > 0) failure = {{"at", Rfc3339(w.last_failure_ms)}, {"message", w.last_failure_message}};
  return {{"backend", std::string(engine.store().backend_name())},
          {"writes_failing", seen ? json(w.failing) : json(nullptr)},
          {"last_write_failure", failure},
          {"last_write_success_at", w.last_success_ms > 0 ? json(Rfc3339(w.last_success_ms)) : json(nullptr)},
          {"instance_id", engine.instance_id()}};
}

absl::StatusOr<json> OperatorStatusJson(Engine& engine, const Clock& clock) {
  const int64_t now_ms = clock.now_epoch_ms();
  const int64_t now_s = now_ms / 1000;
  json connectors = json::array();
  for (const auto& [id, c] : engine.config().connectors) {
    ASSIGN_OR_RETURN(breaker::Snapshot b, engine.breakers().Read(id));
    ASSIGN_OR_RETURN(ConcurrencySnapshot s, engine.slots().Read(id, c.concurrency));
    ASSIGN_OR_RETURN(OutcomeCounts o, engine.slo_counters().ReadOutcomes(id, kStatusWindowMinutes));
    ASSIGN_OR_RETURN(QueueStats q, engine.queue().Stats(id));
    json breaker = {{"state", std::string(breaker::ToString(b.state))},
                    {"open_until_epoch_sec", b.open_until_epoch_sec},
                    {"cooldown_remaining_s", std::max<int64_t>(0, b.open_until_epoch_sec - now_s)},
                    {"generation", b.generation},
                    {"half_open_probe_in_flight", b.half_open_probe_in_flight}};
    if (b.state == breaker::State::kForcedOpen) {
      breaker["forced_by"] = b.forced_by;
      breaker["forced_reason"] = b.forced_reason;
      breaker["forced_at"] = b.forced_at_ms > 0 ? json(Rfc3339(b.forced_at_ms)) : json(nullptr);
    }
    json deferred = json::object();
    for (const auto& [reason, n] : o.deferred_by_reason) deferred[reason] = n;
    const int64_t queue_age_s =
        q.oldest_enqueued_ms == 0 ? 0 : std::max<int64_t>(0, (now_ms - q.oldest_enqueued_ms) / 1000);
    connectors.push_back({{"id", id},
                          {"breaker", breaker},
                          {"throttled_until_epoch_sec", b.throttled_until_epoch_sec},
                          {"throttled_remaining_s", std::max<int64_t>(0, b.throttled_until_epoch_sec - now_s)},
                          {"in_flight", s.in_flight},
                          {"expired_leases", s.expired_holders},
                          {"max_in_flight", s.max_in_flight},
                          {"config_max_in_flight", c.concurrency.max_in_flight},
                          {"max_in_flight_per_tenant", c.concurrency.max_in_flight_per_tenant},
                          {"tenants_in_flight", s.tenant_slots.size()},
                          {"busiest_tenant_in_flight", s.busiest_tenant()},
                          {"limit_set_by_operator", s.limit_set_by_operator},
                          {"limit", LimitNoteJson(s)},
                          {"last_5m",
                           {{"calls", o.calls},
                            {"succeeded", o.succeeded},
                            {"failed", o.failed},
                            {"deferred", o.deferred},
                            {"blocked", o.blocked},
                            {"deferred_by_reason", deferred}}},
                          {"queue_depth", q.depth},
                          {"queue_oldest_age_s", queue_age_s},
                          {"kind", std::string(ConnectorKindName(c))}});
    if (c.is_mcp()) {
      ASSIGN_OR_RETURN(json mcp, McpServerJson(engine, c));
      connectors.back()["mcp"] = std::move(mcp);
    }
  }
  ASSIGN_OR_RETURN(std::vector<KillSwitch> switches, engine.kill_switches().List());
  json kills = json::array();
  for (const auto& k : switches) {
    kills.push_back(
        {{"scope", k.scope}, {"key", k.key}, {"reason", k.reason}, {"requested_by", k.requested_by}, {"at", k.at}});
  }
  return json{{"generated_at", Rfc3339(now_ms)},
              {"window_minutes", kStatusWindowMinutes},
              {"store", StoreHealthJson(engine)},
              {"connectors", connectors},
              {"kill_switches", kills}};
}

}  // namespace toolgate
