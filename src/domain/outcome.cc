#include "toolgate/domain/outcome.h"

namespace toolgate {

std::string_view ToString(Outcome outcome) {
  switch (outcome) {
    case Outcome::kInProgress:
      return "IN_PROGRESS";
    case Outcome::kSucceeded:
      return "SUCCEEDED";
    case Outcome::kFailed:
      return "FAILED";
    case Outcome::kDeferred:
      return "DEFERRED";
    case Outcome::kBlocked:
      return "BLOCKED";
    case Outcome::kQueued:
      return "QUEUED";
    case Outcome::kRunning:
      return "RUNNING";
    case Outcome::kExpired:
      return "EXPIRED";
  }
  return "UNKNOWN";
}

std::optional<Outcome> ParseOutcome(std::string_view text) {
  for (Outcome o : kAllOutcomes) {
    if (ToString(o) == text) return o;
  }
  return std::nullopt;
}

bool IsWaiting(Outcome outcome) { return outcome == Outcome::kQueued || outcome == Outcome::kRunning; }

std::string_view ToString(DeferReason reason) {
  switch (reason) {
    case DeferReason::kBreakerOpen:
      return "breaker_open";
    case DeferReason::kProbeInFlight:
      return "probe_in_flight";
    case DeferReason::kConcurrencyLimit:
      return "concurrency_limit";
    case DeferReason::kIntentInProgress:
      return "intent_in_progress";
    case DeferReason::kDownstreamThrottled:
      return "downstream_throttled";
    case DeferReason::kStoreUnavailable:
      return "store_unavailable";
    case DeferReason::kGatewayOverloaded:
      return "gateway_overloaded";
  }
  return "unknown";
}

std::optional<DeferReason> ParseDeferReason(std::string_view text) {
  for (DeferReason r : {DeferReason::kBreakerOpen, DeferReason::kProbeInFlight, DeferReason::kConcurrencyLimit,
                        DeferReason::kIntentInProgress, DeferReason::kDownstreamThrottled,
                        DeferReason::kStoreUnavailable, DeferReason::kGatewayOverloaded}) {
    if (ToString(r) == text) return r;
  }
  return std::nullopt;
}

std::string_view ToString(FailureReason reason) {
  switch (reason) {
    case FailureReason::kDownstreamError:
      return "downstream_error";
    case FailureReason::kDownstreamRejected:
      return "downstream_rejected";
    case FailureReason::kTimeout:
      return "timeout";
    case FailureReason::kConnectionFailed:
      return "connection_failed";
    case FailureReason::kConnectionLost:
      return "connection_lost";
    case FailureReason::kTlsError:
      return "tls_error";
    case FailureReason::kCredentialsUnavailable:
      return "credentials_unavailable";
    case FailureReason::kToolError:
      return "tool_error";
    case FailureReason::kToolRejected:
      return "tool_rejected";
    case FailureReason::kStoreUnavailable:
      return "store_unavailable";
  }
  return "unknown";
}

std::optional<FailureReason> ParseFailureReason(std::string_view text) {
  for (FailureReason r : {FailureReason::kDownstreamError, FailureReason::kDownstreamRejected, FailureReason::kTimeout,
                          FailureReason::kConnectionFailed, FailureReason::kConnectionLost, FailureReason::kTlsError,
                          FailureReason::kCredentialsUnavailable, FailureReason::kToolError,
                          FailureReason::kToolRejected, FailureReason::kStoreUnavailable}) {
    if (ToString(r) == text) return r;
  }
  return std::nullopt;
}

bool CountsAgainstConnector(FailureReason reason) {
  switch (reason) {
    case FailureReason::kDownstreamRejected:
    case FailureReason::kToolError:
    case FailureReason::kToolRejected:
      return false;
    default:
      return true;
  }
}

int InvocationHttpStatus(Outcome outcome, std::string_view reason) {
  switch (outcome) {
    case Outcome::kSucceeded:
      return 200;
    case Outcome::kFailed:
      if (reason == ToString(FailureReason::kTimeout)) return 504;
      if (reason == ToString(FailureReason::kStoreUnavailable)) return 503;
      return 502;
    case Outcome::kDeferred:
      return 503;
    case Outcome::kBlocked:
      return 403;
    case Outcome::kInProgress:
    case Outcome::kQueued:
    case Outcome::kRunning:
      return 202;
    case Outcome::kExpired:
      return 410;
  }
  return 500;
}

}  // namespace toolgate
