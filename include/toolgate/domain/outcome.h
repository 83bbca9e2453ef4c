#pragma once

// The vocabulary of an execution's outcome and of the reasons that go with it (design §1, §5, §15).
// The strings are the API and the store format: clients match them and stored records hold them, so
// ToString's answers never change. Pure functions, thread-safe.

#include <optional>
#include <string>
#include <string_view>
#include <variant>

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
  kGatewayOverloaded,       // this host ran out of descriptors, buffers or memory (never the connector's fault)
  kTenantConcurrencyLimit,  // the connector had room, but the tenant holds its max_in_flight_per_tenant
};

inline constexpr DeferReason kAllDeferReasons[] = {
    DeferReason::kBreakerOpen,       DeferReason::kProbeInFlight,         DeferReason::kConcurrencyLimit,
    DeferReason::kIntentInProgress,  DeferReason::kDownstreamThrottled,   DeferReason::kStoreUnavailable,
    DeferReason::kGatewayOverloaded, DeferReason::kTenantConcurrencyLimit};

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
  kInvalidInput,            // "invalid_input": a claimed queued call whose input no longer fits its tool
};

inline constexpr FailureReason kAllFailureReasons[] = {
    FailureReason::kDownstreamError,        FailureReason::kDownstreamRejected, FailureReason::kTimeout,
    FailureReason::kConnectionFailed,       FailureReason::kConnectionLost,     FailureReason::kTlsError,
    FailureReason::kCredentialsUnavailable, FailureReason::kToolError,          FailureReason::kToolRejected,
    FailureReason::kStoreUnavailable,       FailureReason::kInvalidInput};

std::string_view ToString(FailureReason reason);
std::optional<FailureReason> ParseFailureReason(std::string_view text);

// The tool_error SLI (design §8): whether a failure counts against the connector. A 4xx, a tool-level
// error, a rejected JSON-RPC call and an input that no longer fits are the caller's business, not the
// connector's.
bool CountsAgainstConnector(FailureReason reason);

// Why a call was BLOCKED (design S8). Stable strings.
enum class BlockReason {
  kKillSwitch,  // "kill_switch": an operator's kill switch matched the call
};

std::string_view ToString(BlockReason reason);
std::optional<BlockReason> ParseBlockReason(std::string_view text);

// Why a queued call ended EXPIRED without running (design §15, §17.5). Stable strings.
enum class ExpiryReason {
  kDeadline,   // "deadline": its deadline passed in the queue
  kCancelled,  // "cancelled": its tenant cancelled it (DELETE /v1/executions/{id})
  kPurged,     // "purged": an operator purged its connector's queue
};

inline constexpr ExpiryReason kAllExpiryReasons[] = {ExpiryReason::kDeadline, ExpiryReason::kCancelled,
                                                     ExpiryReason::kPurged};

std::string_view ToString(ExpiryReason reason);
std::optional<ExpiryReason> ParseExpiryReason(std::string_view text);

// Why a queued call's attempt ended and the call went back to its queue (TOOL_ATTEMPT_FAILED, design
// §15, §17.3), beyond the defer reasons (breaker_open, concurrency_limit, ...) that can do it too.
// Stable strings: the ledger holds them.
enum class RequeueReason {
  kThrottled,     // "throttled": the downstream said "not now" (429, 503 with Retry-After)
  kClaimExpired,  // "claim_expired": the dispatcher running it lost its claim; another took it over
};

std::string_view ToString(RequeueReason reason);
std::optional<RequeueReason> ParseRequeueReason(std::string_view text);

// The reason a TOOL_ATTEMPT_FAILED event of a call put back in its queue carries: a RequeueReason, or
// the DeferReason that stopped the attempt (breaker_open, concurrency_limit, gateway_overloaded, ...).
// The ledger holds its string (ToString).
using RequeueCause = std::variant<RequeueReason, DeferReason>;

std::string_view ToString(const RequeueCause& cause);

// The reason an execution's outcome carries: none (SUCCEEDED, QUEUED, ...), or the kind its outcome
// takes — FAILED a FailureReason, DEFERRED a DeferReason, BLOCKED a BlockReason, EXPIRED an
// ExpiryReason. The store holds its string (ToString; "" for none).
using OutcomeReason = std::variant<std::monostate, FailureReason, DeferReason, BlockReason, ExpiryReason>;

std::string_view ToString(const OutcomeReason& reason);
// Strict: "" is no reason; otherwise `text` must be one of the strings of the kind `outcome` takes
// (a FAILED "breaker_open" is nullopt, as is any reason on SUCCEEDED, QUEUED, RUNNING, IN_PROGRESS).
std::optional<OutcomeReason> ParseOutcomeReason(Outcome outcome, std::string_view text);

// Why an invocation (or a replay) was refused without an outcome of its own (design §5, §15, S12): the
// `error` of its answer. Stable strings: clients match them.
enum class InvokeError {
  kUnknownTool,           // "unknown_tool": no connector serves the tool
  kInvalidInput,          // "invalid_input": the input does not fit the tool (nothing was recorded)
  kIdempotencyKeyReused,  // "idempotency_key_reused": the key was used with another tool or input
  kQueueFull,             // "queue_full": the tenant's queued calls reached [queue] max_per_tenant
  kNotImplemented,        // "not_implemented": queued calls are not available
  kGone,                  // "gone": a claimed queue item whose execution has ended
  kStoreUnavailable,      // "store_unavailable": the store could not be read or written; nothing ran
  kShuttingDown,          // "shutting_down": this instance is draining
  kForbidden,             // "forbidden": the principal lacks the role (replay, force)
  kNotFound,              // "not_found": no such execution (replay)
  kNotReplayable,         // "not_replayable": the execution kept no input
  kExecutionInProgress,   // "execution_in_progress": the execution has no outcome yet
  kReplayLimitReached,    // "replay_limit_reached": max_replays_per_execution used up
};

inline constexpr InvokeError kAllInvokeErrors[] = {
    InvokeError::kUnknownTool,       InvokeError::kInvalidInput,   InvokeError::kIdempotencyKeyReused,
    InvokeError::kQueueFull,         InvokeError::kNotImplemented, InvokeError::kGone,
    InvokeError::kStoreUnavailable,  InvokeError::kShuttingDown,   InvokeError::kForbidden,
    InvokeError::kNotFound,          InvokeError::kNotReplayable,  InvokeError::kExecutionInProgress,
    InvokeError::kReplayLimitReached};

std::string_view ToString(InvokeError error);
std::optional<InvokeError> ParseInvokeError(std::string_view text);

// The one table of invocation answers (design §5, §15): the HTTP status an answer with `outcome` and
// `reason` gets. SUCCEEDED 200; FAILED 502 (504 for `timeout`, 503 for `store_unavailable`: the outcome
// was not recorded); DEFERRED 503 (with Retry-After); BLOCKED 403; IN_PROGRESS, QUEUED, RUNNING 202
// (the call has not ended: poll its status_url); EXPIRED 410. Typed: a stored reason is read back
// with ParseOutcomeReason first.
int InvocationHttpStatus(Outcome outcome, const OutcomeReason& reason);

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
template <typename BasicJsonType>
void to_json(BasicJsonType& j, const BlockReason& reason) {
  j = std::string(ToString(reason));
}
template <typename BasicJsonType>
void to_json(BasicJsonType& j, const ExpiryReason& reason) {
  j = std::string(ToString(reason));
}
template <typename BasicJsonType>
void to_json(BasicJsonType& j, const RequeueReason& reason) {
  j = std::string(ToString(reason));
}
template <typename BasicJsonType>
void to_json(BasicJsonType& j, const InvokeError& error) {
  j = std::string(ToString(error));
}

}  // namespace toolgate
