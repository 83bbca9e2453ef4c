#pragma once

// What a downstream call's result means (design §5, S5, S12, §8, §17.3) as one pure function: the
// execution's outcome and reason, what it does to the breaker, the intent and the SLOs. No I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/domain/outcome.h"

namespace toolgate {

// How the downstream call ended.
struct DownstreamResult {
  enum class Kind {
    kResponse,                // an HTTP response arrived
    kTimeout,                 // the connector's timeout passed (outcome unknown once the request was sent)
    kConnectFailed,           // never connected: nothing was sent
    kConnectionLost,          // the connection broke after the request was sent: outcome unknown
    kResponseInvalid,         // unreadable or larger than max_response_bytes
    kLocalResource,           // this host ran out of descriptors, buffers or memory before sending: not the
                              // downstream's fault (DEFERRED gateway_overloaded, never a breaker failure)
    kTlsError,                // the TLS handshake or the server's certificate failed: nothing was sent
    kCredentialsUnavailable,  // the connector's credentials could not be had (token endpoint down,
                              // secret unreadable): nothing was sent; the connector cannot be reached
    kToolError,               // MCP: the server answered a result marked `isError: true` (`body`: that result).
                              // A tool-level error, like a 4xx: not the connector's failure (design §14)
    kRpcError,                // MCP: the server answered a JSON-RPC error (`rpc_code`; `body`: the error object)
  };
  // An attempt that was followed by another (design §13 retries): recorded as TOOL_ATTEMPT_FAILED.
  struct FailedAttempt {
    int attempt = 0;       // 1-based
    OutcomeReason reason;  // what the attempt would have ended with: timeout, connection_failed, ...
    int status = 0;        // the HTTP status, 0 when none came
    int64_t latency_ms = 0;
  };
  Kind kind = Kind::kResponse;
  int status = 0;    // the HTTP status (MCP over HTTP too: 200 with a result or an error)
  std::string body;  // kResponse: the answer (MCP: the JSON-RPC result); kToolError, kRpcError: see Kind
  std::optional<int64_t> retry_after_s;
  int64_t latency_ms = 0;                      // the whole call, every attempt and backoff included
  std::string error;                           // what went wrong without a response, for the operator (never a secret)
  std::vector<FailedAttempt> failed_attempts;  // the attempts before the last, in order
  int rpc_code = 0;                            // kRpcError: the JSON-RPC error code
  // `body` as the tree the connector parsed it from (MCP: the result or error object it took out of
  // the server's message), `body` being that tree's text as nlohmann dumps it: the engine then
  // neither parses `body` again nor dumps the tree again (design §16: JSON parsed once). Empty when
  // the connector passes the downstream's text on unparsed (HTTP).
  std::optional<nlohmann::json> parsed_body;
};

// What the call does to the connector's breaker.
enum class BreakerEffect {
  kSuccess,    // counts as a success (a probe closes the breaker)
  kFailure,    // counts as a failure (S5)
  kThrottled,  // the downstream said "not now": the connector waits (never a success or failure)
  kNone,       // nothing about the downstream's health was learnt (a probe is given back)
};

// What becomes of the call's intent (S12).
enum class IntentEffect {
  kSucceeded,  // the intent succeeded: replays are deduplicated
  kFailed,     // it failed: a replay may run it again
  kUnknown,    // the request may have been processed (timeout, lost connection): a replay re-sends it
  kRelease,    // it never ran (DEFERRED): give the intent back
};

struct Classification {
  Outcome outcome = Outcome::kFailed;  // kSucceeded | kFailed | kDeferred
  // None for SUCCEEDED, a FailureReason for FAILED, a DeferReason for DEFERRED. (The answer's HTTP
  // status is the api layer's business: InvocationHttpStatus(outcome, reason).)
  OutcomeReason reason;
  BreakerEffect breaker = BreakerEffect::kFailure;
  IntentEffect intent = IntentEffect::kFailed;
  std::optional<int64_t> retry_after_s;  // for DEFERRED: whole seconds, >= 1, capped at kMaxThrottleS
  bool throttles_connector = false;      // the downstream gave a Retry-After that holds fleet-wide
  bool counts_for_slo = true;            // false: the downstream was never reached (local error)
  bool error_bad = false;                // tool_error SLI: a connector failure (4xx are good)
  bool latency_bad = false;              // tool_latency SLI: a timeout, or slower than the threshold
};

// `body_is_json` says whether a 2xx body parses (a success that cannot be read is not a success).
// MCP (design §14): kToolError is FAILED `tool_error` and a JSON-RPC error naming the caller's mistake
// (-32600, -32601, -32602) is FAILED `tool_rejected` — neither a breaker failure, both good for the
// SLO; any other JSON-RPC error code (-32603 included) is FAILED `downstream_error`, a breaker failure.
Classification ClassifyDownstream(const DownstreamResult& result, bool body_is_json, const breaker::Config& config,
                                  int64_t latency_threshold_ms);

// Whether an attempt may be followed by another (design §13 retries), and the least wait before it.
struct RetryVerdict {
  bool retry = false;
  // The downstream's Retry-After: the next attempt waits this long (no jitter). The caller retries
  // only when it fits in the call's time left; otherwise the answer stands (DEFERRED throttled).
  std::optional<int64_t> wait_ms;
};

// Safe retries only: (a) the connection failed before anything was sent (any tool); (b) an
// idempotent tool got 502/503/504, a timeout or a lost connection; (c) 429 (any tool: the request was
// not processed) or, for an idempotent tool, 503 with a Retry-After. A TLS or credentials failure is
// not retried (it would fail again), nor is anything a non-idempotent call may have done.
// An MCP server's own answer (kToolError, kRpcError) is never retried: it would answer the same.
RetryVerdict DecideRetry(const DownstreamResult& attempt, bool idempotent);

// Whether a JSON-RPC error code names the caller's mistake (-32600 invalid request, -32601 method
// not found, -32602 invalid params) rather than the server's trouble.
bool IsCallerRpcError(int code);

// Whether the result says the downstream is failing (the dashboard's recent errors): a transport
// failure, a 5xx, an unreadable answer or a server-side JSON-RPC error — not a 4xx, a tool-level
// error or this host's own resource shortage.
bool IsDownstreamFailure(const DownstreamResult& result);

}  // namespace toolgate
