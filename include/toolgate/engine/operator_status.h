#pragma once

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/engine/engine.h"
#include "toolgate/services/connector_concurrency_service.h"

namespace toolgate {

// The window `toolgate status` and GET /admin/status count calls over.
inline constexpr int kStatusWindowMinutes = 5;

// What an operator needs at a glance (GET /admin/status, `toolgate status`, the dashboard), read
// from the store alone so that it is fleet-wide, survives restarts, and works with the server down:
//
//   {"generated_at": RFC 3339, "window_minutes": 5,
//    "store": StoreHealthJson,
//    "connectors": [{"id", "breaker": {"state", "open_until_epoch_sec", "cooldown_remaining_s",
//                     "generation", "half_open_probe_in_flight", "forced_by"?, "forced_reason"?,
//                     "forced_at"?},
//                    "throttled_until_epoch_sec", "throttled_remaining_s",
//                    "in_flight", "max_in_flight", "config_max_in_flight", "limit_set_by_operator",
//                    "limit": {"set_by", "reason", "set_at"} | null (an operator's limit: who, why, when),
//                    "last_5m": {"calls", "succeeded", "failed", "deferred", "blocked",
//                                "deferred_by_reason": {reason: n}},
//                    "queue_depth", "queue_oldest_age_s" (queued calls, fleet-wide: QueueService::Stats),
//                    "kind": "http" | "mcp" | "mcp_stdio", "mcp"?: McpServerJson}],
//    "kill_switches": [{"scope", "key", "reason", "requested_by", "at"}]}
//
// The call counts are the SLO counter minute items (SloCounters::RecordOutcome): every instance
// adds its counts there when it flushes (every [slo] interval_ms and at shutdown), so an instance's
// last seconds may be missing until its next flush. Reads only; thread-safe as the services are.
// Status codes: store errors (kUnavailable, ...), kDataLoss for damaged items.
absl::StatusOr<nlohmann::json> OperatorStatusJson(Engine& engine, const Clock& clock);

// The store as this process sees it (no store access; never fails):
//   {"backend", "writes_failing": bool | null (null: this process has made no write yet — the CLI
//    reading a stopped gateway's store), "last_write_failure": {"at": RFC 3339, "message"} | null,
//    "last_write_success_at": RFC 3339 | null, "instance_id"}
// The message is the store's own (it may name the file or the table): for the admin listener and
// the CLI, never the public one.
nlohmann::json StoreHealthJson(Engine& engine);

// Who set an operator's limit, why and when: {"set_by", "reason", "set_at" (RFC 3339 or null)};
// null when the limit is the config's.
nlohmann::json LimitNoteJson(const ConcurrencySnapshot& s);

// "http", "mcp" or "mcp_stdio".
std::string_view ConnectorKindName(const ConnectorConfig& connector);

// An MCP connector's server as the fleet last saw it (the store's McpServerRecord, design §17.7),
// for GET /admin/connectors, /admin/status and `toolgate status`:
//   {"transport": "streamable_http" | "stdio", "url" (mcp) | "program" (mcp_stdio: the command's
//    first word, never its arguments or env), "server_name", "server_version", "protocol_version"
//    (null until a list was fetched), "tool_count", "tools_refreshed_at" (RFC 3339 or null)}
// tool_count is the saved list's; with none saved, the tools this engine's registry holds.
// REQUIRES: connector.is_mcp(). Blocking (one store read).
absl::StatusOr<nlohmann::json> McpServerJson(Engine& engine, const ConnectorConfig& connector);

}  // namespace toolgate
