#include "toolgate/domain/breaker_rules.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace toolgate {

namespace breaker {

namespace {

// Epoch seconds, rounded up: a time written for other hosts never ends before the interval it holds.
int64_t CeilSec(int64_t epoch_ms) { return epoch_ms >= 0 ? (epoch_ms + 999) / 1000 : epoch_ms / 1000; }

}  // namespace

std::string_view ToString(State s) {
  switch (s) {
    case State::kClosed:
      return "CLOSED";
    case State::kOpen:
      return "OPEN";
    case State::kHalfOpen:
      return "HALF_OPEN";
    case State::kForcedOpen:
      return "FORCED_OPEN";
  }
  return "UNKNOWN";
}

std::optional<State> ParseState(std::string_view s) {
  if (s == "CLOSED") return State::kClosed;
  if (s == "OPEN") return State::kOpen;
  if (s == "HALF_OPEN") return State::kHalfOpen;
  if (s == "FORCED_OPEN") return State::kForcedOpen;
  return std::nullopt;
}

absl::Status Validate(const Config& c) {
  auto bad = [](std::string_view field, std::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat("breaker.", std::string(field), " ", std::string(rule)));
  };
  if (c.failure_threshold < 1) return bad("failure_threshold", "must be at least 1");
  if (c.window_s < 1 || c.window_s > 86400) return bad("window_s", "must be in 1..86400");
  if (c.failure_rate_threshold && !(*c.failure_rate_threshold > 0 && *c.failure_rate_threshold <= 1)) {
    return bad("failure_rate_threshold", "must be in (0, 1]");
  }
  if (c.min_calls < 1) return bad("min_calls", "must be at least 1");
  if (c.slow_call_ms && *c.slow_call_ms < 1) return bad("slow_call_ms", "must be at least 1");
  if (c.cooldown_s < 1 || c.cooldown_s > 3600) return bad("cooldown_s", "must be in 1..3600");
  if (c.state_ttl_days < 1 || c.state_ttl_days > 3650) return bad("state_ttl_days", "must be in 1..3650");
  if (c.probe_timeout_s < 1) return bad("probe_timeout_s", "must be at least 1");
  if (c.max_clock_skew_s < 0 || c.max_clock_skew_s > 300) return bad("max_clock_skew_s", "must be in 0..300");
  if (c.min_distinct_tenants < 1 || c.min_distinct_tenants > 100) {
    return bad("min_distinct_tenants", "must be in 1..100");
  }
  return absl::OkStatus();
}

PermissionPlan PlanPermission(const Snapshot& s, const Config& config, int64_t now_ms) {
  using Step = PermissionPlan::Step;
  const int64_t now_sec = now_ms / 1000;
  const bool in_cooldown = s.state == State::kOpen && !CooldownOver(s, config, now_ms);
  if (s.throttled_until_epoch_sec > now_sec && s.state != State::kForcedOpen && !in_cooldown) {
    return {Step::kDefer, DeferReason::kDownstreamThrottled, s.throttled_until_epoch_sec * 1000 - now_ms};
  }
  switch (s.state) {
    case State::kClosed:
      return {Step::kAllow};
    case State::kForcedOpen:
      return {Step::kDefer, DeferReason::kBreakerOpen, int64_t{config.cooldown_s} * 1000};
    case State::kOpen:
      if (!CooldownOver(s, config, now_ms)) {
        return {Step::kDefer, DeferReason::kBreakerOpen, std::max<int64_t>(1, s.open_until_epoch_sec * 1000 - now_ms)};
      }
      if (s.half_open_probe_in_flight) return {Step::kDefer, DeferReason::kProbeInFlight, kProbeInFlightRetryMs};
      return {Step::kClaimProbe};
    case State::kHalfOpen:
      if (!s.half_open_probe_in_flight || ProbeClaimOver(s, config, now_ms)) return {Step::kTakeOverProbe};
      return {Step::kDefer, DeferReason::kProbeInFlight, kProbeInFlightRetryMs};
  }
  return {Step::kAllow};
}

int64_t ProbeExpiresAt(int64_t now_ms, const Config& config) { return CeilSec(now_ms) + config.probe_timeout_s; }

int64_t LatestExpiryTakenOver(int64_t now_ms, const Config& config) { return now_ms / 1000 - config.max_clock_skew_s; }

bool ProbeClaimOver(const Snapshot& s, const Config& config, int64_t now_ms) {
  return s.half_open_probe_expires_at <= LatestExpiryTakenOver(now_ms, config);
}

int64_t ThrottledUntil(int64_t now_ms, int64_t retry_after_s) {
  return CeilSec(now_ms) + std::clamp<int64_t>(retry_after_s, 1, kMaxThrottleS);
}

int64_t LatestPlausibleOpenUntil(int64_t now_ms, const Config& config) {
  return now_ms / 1000 + 1 + config.cooldown_s + config.max_clock_skew_s;
}

bool CooldownOver(const Snapshot& s, const Config& config, int64_t now_ms) {
  return s.open_until_epoch_sec <= now_ms / 1000 || s.open_until_epoch_sec > LatestPlausibleOpenUntil(now_ms, config);
}

int64_t OpenUntil(int64_t now_ms, const Config& config) { return CeilSec(now_ms) + config.cooldown_s; }

int64_t StateTtl(int64_t now_sec, const Config& config) { return now_sec + int64_t{config.state_ttl_days} * 86400; }

bool WindowExpired(const Snapshot& s, const Config& config, int64_t now_sec) {
  return now_sec >= s.window_start_epoch_sec + config.window_s;
}

bool ShouldOpen(int64_t failures, int64_t calls, int distinct_tenants, const Config& config) {
  if (failures < config.failure_threshold) return false;
  if (distinct_tenants < config.min_distinct_tenants) return false;
  if (config.failure_rate_threshold) {
    if (calls < config.min_calls) return false;
    if (static_cast<double>(failures) < *config.failure_rate_threshold * static_cast<double>(calls)) return false;
  }
  return true;
}

bool IsSlowCall(const Config& config, int64_t latency_ms) {
  return config.slow_call_ms.has_value() && latency_ms > *config.slow_call_ms;
}

}  // namespace breaker
}  // namespace toolgate
