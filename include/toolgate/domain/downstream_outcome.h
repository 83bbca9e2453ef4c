#pragma once

// What a downstream call's result means (design §5, S5, S12, §8, §17.3) as one pure function: the
// execution's outcome and reason, what it does to the breaker, the intent and the SLOs. No I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "toolgate/domain/breaker_rules.h"

namespace toolgate {

// How the downstream call ended.
struct DownstreamResult {
  enum class Kind {
    kResponse,        // an HTTP response arrived
    kTimeout,         // the connector's timeout passed (outcome unknown once the request was sent)
    kConnectFailed,   // never connected: nothing was sent
    kConnectionLost,  // the connection broke after the request was sent: outcome unknown
    kResponseInvalid, // unreadable or larger than max_response_bytes
    kLocalResource,   // this host ran out of descriptors, buffers or memory before sending: not the
                      // downstream's fault (DEFERRED gateway_overloaded, never a breaker failure)
  };
  Kind kind = Kind::kResponse;
  int status = 0;
  std::string body;
  std::optional<int64_t> retry_after_s;
  int64_t latency_ms = 0;
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
  std::string outcome;  // SUCCEEDED | FAILED | DEFERRED
  std::string reason;   // empty for SUCCEEDED
  int http_status = 502;
  BreakerEffect breaker = BreakerEffect::kFailure;
  IntentEffect intent = IntentEffect::kFailed;
  std::optional<int64_t> retry_after_s;  // for DEFERRED: whole seconds, >= 1, capped at kMaxThrottleS
  bool throttles_connector = false;      // the downstream gave a Retry-After that holds fleet-wide
  bool counts_for_slo = true;            // false: the downstream was never reached (local error)
  bool error_bad = false;                // tool_error SLI: a connector failure (4xx are good)
  bool latency_bad = false;              // tool_latency SLI: a timeout, or slower than the threshold
};

// `body_is_json` says whether a 2xx body parses (a success that cannot be read is not a success).
Classification ClassifyDownstream(const DownstreamResult& result, bool body_is_json, const breaker::Config& config,
                                  int64_t latency_threshold_ms);

}  // namespace toolgate
