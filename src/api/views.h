#pragma once

// The JSON views of the API (design §6 shapes): executions and their events, breakers, SLOs and the
// dashboard's series. Pure functions of what the engine returns.

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/engine/slo_evaluator.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/ledger.h"

namespace toolgate::api {

nlohmann::json EventJson(const LedgerEvent& e);
// An execution without its events (lists); GET /v1/executions/{id} adds them.
nlohmann::json ExecutionJson(const ExecutionRecord& r);
// GET /v1/executions/{id} (and a queued call's callback body): the execution with its events, the
// ids of its replays and, when it succeeded, its result.
nlohmann::json ExecutionViewJson(const ExecutionRecord& r, const std::vector<LedgerEvent>& events);
nlohmann::json BreakerJson(const breaker::Snapshot& b);
nlohmann::json SloViewJson(const SloView& v);
nlohmann::json SloSnapshotJson(const SloSnapshot& s);
// Per connector: each SLO's budget, 1 h burn rate and firing tiers (the full picture is /admin/slo).
nlohmann::json ConnectorSloJson(const SloSnapshot& snapshot, const std::string& id);
// The last hour, minute by minute, fleet-wide, per connector (the dashboard's sparklines).
nlohmann::json SeriesJson(const SloSnapshot& snapshot);

}  // namespace toolgate::api
