#include "toolgate/domain/outcome.h"

#include <type_traits>

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
    case DeferReason::kTenantConcurrencyLimit:
      return "tenant_concurrency_limit";
  }
  return "unknown";
}

std::optional<DeferReason> ParseDeferReason(std::string_view text) {
  for (DeferReason r : kAllDeferReasons) {
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
    case FailureReason::kInvalidInput:
      return "invalid_input";
  }
  return "unknown";
}

std::optional<FailureReason> ParseFailureReason(std::string_view text) {
  for (FailureReason r : kAllFailureReasons) {
    if (ToString(r) == text) return r;
  }
  return std::nullopt;
}

bool CountsAgainstConnector(FailureReason reason) {
  switch (reason) {
    case FailureReason::kDownstreamRejected:
    case FailureReason::kToolError:
    case FailureReason::kToolRejected:
    case FailureReason::kInvalidInput:
      return false;
    default:
      return true;
  }
}

std::string_view ToString(BlockReason reason) {
  switch (reason) {
    case BlockReason::kKillSwitch:
      return "kill_switch";
  }
  return "unknown";
}

std::optional<BlockReason> ParseBlockReason(std::string_view text) {
  if (text == ToString(BlockReason::kKillSwitch)) return BlockReason::kKillSwitch;
  return std::nullopt;
}

std::string_view ToString(ExpiryReason reason) {
  switch (reason) {
    case ExpiryReason::kDeadline:
      return "deadline";
    case ExpiryReason::kCancelled:
      return "cancelled";
    case ExpiryReason::kPurged:
      return "purged";
  }
  return "unknown";
}

std::optional<ExpiryReason> ParseExpiryReason(std::string_view text) {
  for (ExpiryReason r : kAllExpiryReasons) {
    if (ToString(r) == text) return r;
  }
  return std::nullopt;
}

std::string_view ToString(RequeueReason reason) {
  switch (reason) {
    case RequeueReason::kThrottled:
      return "throttled";
    case RequeueReason::kClaimExpired:
      return "claim_expired";
  }
  return "unknown";
}

std::optional<RequeueReason> ParseRequeueReason(std::string_view text) {
  for (RequeueReason r : {RequeueReason::kThrottled, RequeueReason::kClaimExpired}) {
    if (ToString(r) == text) return r;
  }
  return std::nullopt;
}

std::string_view ToString(const RequeueCause& cause) {
  return std::visit([](auto reason) { return ToString(reason); }, cause);
}

std::string_view ToString(const OutcomeReason& reason) {
  return std::visit(
      [](const auto& r) -> std::string_view {
        if constexpr (std::is_same_v<std::decay_t<decltype(r)>, std::monostate>) {
          return "";
        } else {
          return ToString(r);
        }
      },
      reason);
}

std::optional<OutcomeReason> ParseOutcomeReason(Outcome outcome, std::string_view text) {
  if (text.empty()) return OutcomeReason{};
  auto lift = [](auto parsed) -> std::optional<OutcomeReason> {
    if (!parsed) return std::nullopt;
    return OutcomeReason{*parsed};
  };
  switch (outcome) {
    case Outcome::kFailed:
      return lift(ParseFailureReason(text));
    case Outcome::kDeferred:
      return lift(ParseDeferReason(text));
    case Outcome::kBlocked:
      return lift(ParseBlockReason(text));
    case Outcome::kExpired:
      return lift(ParseExpiryReason(text));
    case Outcome::kInProgress:
    case Outcome::kSucceeded:
    case Outcome::kQueued:
    case Outcome::kRunning:
      break;
  }
  return std::nullopt;
}

std::string_view ToString(InvokeError error) {
  switch (error) {
    case InvokeError::kUnknownTool:
      return "unknown_tool";
    case InvokeError::kInvalidInput:
      return "invalid_input";
    case InvokeError::kIdempotencyKeyReused:
      return "idempotency_key_reused";
    case InvokeError::kQueueFull:
      return "queue_full";
    case InvokeError::kNotImplemented:
      return "not_implemented";
    case InvokeError::kGone:
      return "gone";
    case InvokeError::kStoreUnavailable:
      return "store_unavailable";
    case InvokeError::kShuttingDown:
      return "shutting_down";
    case InvokeError::kForbidden:
      return "forbidden";
    case InvokeError::kNotFound:
      return "not_found";
    case InvokeError::kNotReplayable:
      return "not_replayable";
    case InvokeError::kExecutionInProgress:
      return "execution_in_progress";
    case InvokeError::kReplayLimitReached:
      return "replay_limit_reached";
  }
  return "unknown";
}

std::optional<InvokeError> ParseInvokeError(std::string_view text) {
  for (InvokeError e : kAllInvokeErrors) {
    if (ToString(e) == text) return e;
  }
  return std::nullopt;
}

int InvocationHttpStatus(Outcome outcome, const OutcomeReason& reason) {
  switch (outcome) {
    case Outcome::kSucceeded:
      return 200;
    case Outcome::kFailed:
      if (reason == OutcomeReason{FailureReason::kTimeout}) return 504;
      if (reason == OutcomeReason{FailureReason::kStoreUnavailable}) return 503;
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
