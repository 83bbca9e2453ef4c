#pragma once

// The vocabulary of an execution's outcome and of the reasons that go with it (design §1, §5, §15).
// The strings are the API and the store format: clients match them and stored records hold them, so
// ToString's answers never change. Pure functions, thread-safe.

#include <optional>
#include <string>
#include <string_view>

namespace toolgate {

// An execution's outcome. A record is IN_PROGRESS while its call runs; a queued call (§15) is QUEUED,
// then RUNNING, and ends with a final outcome.
enum class Outcome {
  kInProgress,  // "IN_PROGRESS": the record is written, the call has not ended yet
  kSucceeded,   // "SUCCEEDED"
  kFailed,      // "FAILED"
  kDeferred,    // "DEFERRED": try again after retry_after_ms
  kBlocked,     // "BLOCKED": a kill switch said no
  kQueued,      // "QUEUED": waiting in its connector's queue
  kRunning,     // "RUNNING": a dispatcher runs it
  kExpired,     // "EXPIRED": a queued call that ended without running (deadline, cancel, purge)
};

// Every outcome, in declaration order (for tables and tests).
inline constexpr Outcome kAllOutcomes[] = {Outcome::kInProgress, Outcome::kSucceeded, Outcome::kFailed,
                                           Outcome::kDeferred,   Outcome::kBlocked,   Outcome::kQueued,
                                           Outcome::kRunning,    Outcome::kExpired};

std::string_view ToString(Outcome outcome);
// Strict: exactly one of ToString's answers (case-sensitive), else nullopt.
std::optional<Outcome> ParseOutcome(std::string_view text);

// QUEUED or RUNNING: a queued call that has not ended.
bool IsWaiting(Outcome outcome);

// Why a call was told to DEFER and retry later (design section 5). Stable strings: clients match them.
enum class DeferReason {
  kBreakerOpen,
  kProbeInFlight,
  kConcurrencyLimit,
  kIntentInProgress,
  kDownstreamThrottled,
  kStoreUnavailable,
  kGatewayOverloaded,  // this host ran out of descriptors, buffers or memory (never the connector's fault)
};

std::string_view ToString(DeferReason reason);
std::optional<DeferReason> ParseDeferReason(std::string_view text);

// Why a call that reached (or tried to reach) its downstream FAILED (design §5, §13, §14). Stable
// strings: clients match them.
enum class FailureReason {
  kDownstreamError,         // "downstream_error": a 5xx, an unreadable answer, a server-side JSON-RPC error
  kDownstreamRejected,      // "downstream_rejected": a 4xx (the caller's fault, not the connector's)
  kTimeout,                 // "timeout"
  kConnectionFailed,        // "connection_failed": nothing was sent
  kConnectionLost,          // "connection_lost": the outcome is unknown
  kTlsError,                // "tls_error"
  kCredentialsUnavailable,  // "credentials_unavailable"
  kToolError,               // "tool_error": an MCP result marked isError
  kToolRejected,            // "tool_rejected": a JSON-RPC error naming the caller's mistake
  kStoreUnavailable,        // "store_unavailable": the call ran but its outcome could not be recorded
};

std::string_view ToString(FailureReason reason);
std::optional<FailureReason> ParseFailureReason(std::string_view text);

// The tool_error SLI (design §8): whether a failure counts against the connector. A 4xx, a tool-level
// error and a rejected JSON-RPC call are the caller's business, not the connector's.
bool CountsAgainstConnector(FailureReason reason);

// The one table of invocation answers (design §5, §15): the HTTP status an answer with `outcome` and
// `reason` gets. SUCCEEDED 200; FAILED 502 (504 for `timeout`, 503 for `store_unavailable`: the outcome
// was not recorded); DEFERRED 503 (with Retry-After); BLOCKED 403; IN_PROGRESS, QUEUED, RUNNING 202
// (the call has not ended: poll its status_url); EXPIRED 410.
int InvocationHttpStatus(Outcome outcome, std::string_view reason);

// nlohmann::json writes these as their strings (found by ADL; without them an enum would be written
// as its number). Reading goes through the strict Parse functions.
template <typename BasicJsonType>
void to_json(BasicJsonType& j, const Outcome& outcome) {
  j = std::string(ToString(outcome));
}
template <typename BasicJsonType>
void to_json(BasicJsonType& j, const DeferReason& reason) {
  j = std::string(ToString(reason));
}
template <typename BasicJsonType>
void to_json(BasicJsonType& j, const FailureReason& reason) {
  j = std::string(ToString(reason));
}

}  // namespace toolgate
