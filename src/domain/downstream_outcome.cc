#include "toolgate/domain/downstream_outcome.h"

#include <algorithm>

namespace toolgate {

namespace {

Classification Failed(FailureReason reason, IntentEffect intent, BreakerEffect effect = BreakerEffect::kFailure) {
  Classification c;
  c.outcome = Outcome::kFailed;
  c.reason = reason;
  c.intent = intent;
  c.breaker = effect;
  // The tool_error SLI (design §8): a 4xx (429 included) and a tool-level error are good.
  c.error_bad = CountsAgainstConnector(reason);
  return c;
}

Classification Deferred(DeferReason reason, int64_t retry_after_s, BreakerEffect effect) {
  Classification c;
  c.outcome = Outcome::kDeferred;
  c.reason = reason;
  c.intent = IntentEffect::kRelease;
  c.breaker = effect;
  c.retry_after_s = std::clamp<int64_t>(retry_after_s, 1, breaker::kMaxThrottleS);
  return c;
}

Classification FromResponse(const DownstreamResult& r, bool body_is_json, const breaker::Config& config) {
  if (r.status >= 200 && r.status < 300) {
    if (!body_is_json) return Failed(FailureReason::kDownstreamError, IntentEffect::kUnknown);
    Classification c;
    c.outcome = Outcome::kSucceeded;
    c.intent = IntentEffect::kSucceeded;
    c.breaker = breaker::IsSlowCall(config, r.latency_ms) ? BreakerEffect::kFailure : BreakerEffect::kSuccess;
    return c;
  }
  // 429 (any method), or 503 with a Retry-After: the request was not processed; the connector waits.
  if (r.status == 429 || (r.status == 503 && r.retry_after_s)) {
    Classification c =
        Deferred(DeferReason::kDownstreamThrottled, r.retry_after_s.value_or(1), BreakerEffect::kThrottled);
    c.throttles_connector = r.retry_after_s.has_value();
    return c;
  }
  // A redirect, or a 1xx as the last word (101): the downstream answered, and with nothing S5 counts
  // against it (5xx, timeouts, connection errors, slow calls). toolgate follows no redirect (the
  // connector's credentials go nowhere else), so the call failed; after a 303 the downstream may have
  // acted on it. It counts as an error for the tool_error SLI, where a misconfigured base_url shows.
  if (r.status < 200 || (r.status >= 300 && r.status < 400))
    return Failed(FailureReason::kDownstreamError, IntentEffect::kUnknown, BreakerEffect::kSuccess);
  // S5: a 4xx is the caller's or the tenant's fault and never counts against the connector.
  if (r.status >= 400 && r.status < 500)
    return Failed(FailureReason::kDownstreamRejected, IntentEffect::kFailed, BreakerEffect::kSuccess);
  return Failed(FailureReason::kDownstreamError, IntentEffect::kFailed);
}

}  // namespace

Classification ClassifyDownstream(const DownstreamResult& r, bool body_is_json, const breaker::Config& config,
                                  int64_t latency_threshold_ms) {
  using Kind = DownstreamResult::Kind;
  Classification c;
  switch (r.kind) {
    case Kind::kResponse:
      c = FromResponse(r, body_is_json, config);
      break;
    case Kind::kTimeout:
      c = Failed(FailureReason::kTimeout, IntentEffect::kUnknown);
      break;
    case Kind::kConnectFailed:
      c = Failed(FailureReason::kConnectionFailed, IntentEffect::kFailed);
      break;
    case Kind::kConnectionLost:
      c = Failed(FailureReason::kConnectionLost, IntentEffect::kUnknown);
      break;
    case Kind::kResponseInvalid:
      c = Failed(FailureReason::kDownstreamError, IntentEffect::kUnknown);
      break;
    // Nothing reached the downstream's application, but it cannot be reached: a breaker failure.
    case Kind::kTlsError:
      c = Failed(FailureReason::kTlsError, IntentEffect::kFailed);
      break;
    case Kind::kCredentialsUnavailable:
      c = Failed(FailureReason::kCredentialsUnavailable, IntentEffect::kFailed);
      break;
    // MCP (design §14): the server ran and answered; a tool-level error says nothing against it.
    case Kind::kToolError:
      c = Failed(FailureReason::kToolError, IntentEffect::kFailed, BreakerEffect::kSuccess);
      break;
    case Kind::kRpcError:
      c = IsCallerRpcError(r.rpc_code)
              ? Failed(FailureReason::kToolRejected, IntentEffect::kFailed, BreakerEffect::kSuccess)
              : Failed(FailureReason::kDownstreamError, IntentEffect::kFailed);
      break;
    case Kind::kLocalResource:
      // Nothing was sent and nothing was learnt about the downstream (DESIGN §17.3).
      c = Deferred(DeferReason::kGatewayOverloaded, 1, BreakerEffect::kNone);
      c.counts_for_slo = false;
      return c;
  }
  // The SLIs (design §8): tool_error was set by Failed (a SUCCEEDED or DEFERRED call is good); every
  // call is timed against the connector's latency threshold, and a timeout is slow whatever its
  // measured latency.
  c.latency_bad = r.kind == Kind::kTimeout || r.latency_ms > latency_threshold_ms;
  return c;
}

RetryVerdict DecideRetry(const DownstreamResult& r, bool idempotent) {
  using Kind = DownstreamResult::Kind;
  RetryVerdict v;
  switch (r.kind) {
    case Kind::kConnectFailed:
      v.retry = true;
      break;
    case Kind::kTimeout:
    case Kind::kConnectionLost:
      v.retry = idempotent;
      break;
    case Kind::kResponse:
      if (r.status == 429 || (r.status == 503 && r.retry_after_s && idempotent)) {
        v.retry = true;
        if (r.retry_after_s) v.wait_ms = std::clamp<int64_t>(*r.retry_after_s, 0, breaker::kMaxThrottleS) * 1000;
      } else if (r.status == 502 || r.status == 503 || r.status == 504) {
        v.retry = idempotent && !r.retry_after_s;
      }
      break;
    case Kind::kResponseInvalid:
    case Kind::kLocalResource:
    case Kind::kTlsError:
    case Kind::kCredentialsUnavailable:
    case Kind::kToolError:
    case Kind::kRpcError:
      break;
  }
  return v;
}

bool IsCallerRpcError(int code) { return code == -32600 || code == -32601 || code == -32602; }

bool IsDownstreamFailure(const DownstreamResult& r) {
  using Kind = DownstreamResult::Kind;
  switch (r.kind) {
    case Kind::kResponse:
      return r.status >= 500;
    case Kind::kLocalResource:
    case Kind::kToolError:
      return false;
    case Kind::kRpcError:
      return !IsCallerRpcError(r.rpc_code);
    default:
      return true;
  }
}

}  // namespace toolgate
