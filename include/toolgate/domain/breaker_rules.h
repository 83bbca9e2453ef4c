#pragma once

// The circuit breaker's state machine as pure functions (no I/O, time as a parameter). The
// CircuitBreakerService executes these rules over the store with conditional writes.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "toolgate/domain/outcome.h"

namespace toolgate::breaker {

enum class State { kClosed, kOpen, kHalfOpen, kForcedOpen };

std::string_view ToString(State s);  // "CLOSED", "OPEN", "HALF_OPEN", "FORCED_OPEN"
std::optional<State> ParseState(std::string_view s);

// A move of the breaker from one state to another.
struct Transition {
  State from;
  State to;
};

// Every transition CircuitBreakerService makes (toolgate_breaker_transitions_total starts each at 0
// for every connector): failures open a CLOSED breaker; a probe is claimed from OPEN, or taken over
// or given back in HALF_OPEN; its result closes or reopens the breaker; an operator forces any
// state open (FORCED_OPEN again included) or closes any (CLOSED included, to end a throttle).
inline constexpr std::array<Transition, 12> kTransitions = {{
    {State::kClosed, State::kOpen},
    {State::kOpen, State::kHalfOpen},
    {State::kHalfOpen, State::kHalfOpen},
    {State::kHalfOpen, State::kClosed},
    {State::kHalfOpen, State::kOpen},
    {State::kClosed, State::kForcedOpen},
    {State::kOpen, State::kForcedOpen},
    {State::kHalfOpen, State::kForcedOpen},
    {State::kForcedOpen, State::kForcedOpen},
    {State::kClosed, State::kClosed},
    {State::kOpen, State::kClosed},
    {State::kForcedOpen, State::kClosed},
}};

// One connector's breaker settings (`[connectors.X.breaker]`).
struct Config {
  int failure_threshold = 5;                     // failures in the window that open the breaker (>= 1)
  int window_s = 30;                             // failure counting window (1..86400)
  std::optional<double> failure_rate_threshold;  // also require failures/calls >= this (0, 1]
  int min_calls = 10;                            // ... over at least this many calls
  std::optional<int> slow_call_ms;               // a call slower than this is a failure
  int cooldown_s = 20;                           // time OPEN before a probe may run (1..3600)
  int state_ttl_days = 14;                       // TTL of the breaker item, refreshed on every write
  int probe_timeout_s = 30;                      // a probe claim older than this may be taken over...
  int max_clock_skew_s = 5;                      // ...once this much longer has passed too (S7's skew)
  int min_distinct_tenants = 1;                  // failures must come from at least this many tenants
};

// kInvalidArgument naming the first bad field.
absl::Status Validate(const Config& config);

// The breaker item, decoded. An absent item is a CLOSED breaker at generation 0.
struct Snapshot {
  bool exists = false;
  State state = State::kClosed;
  int64_t generation = 0;  // incremented by every transition and probe claim (S3)
  int64_t open_until_epoch_sec = 0;
  bool half_open_probe_in_flight = false;
  std::string probe_owner;
  int64_t half_open_probe_expires_at = 0;  // epoch seconds
  int64_t window_start_epoch_sec = 0;
  int64_t window_failures = 0;
  int64_t window_calls = 0;
  int distinct_failure_tenants = 0;
  // A downstream's Retry-After (429, or 503 with Retry-After), for the whole connector fleet-wide:
  // no call before this time (epoch seconds; 0: not throttled).
  int64_t throttled_until_epoch_sec = 0;
  // FORCED_OPEN only: who forced it open and why (the operator's requested_by and reason).
  std::string forced_by;
  std::string forced_reason;
  int64_t forced_at_ms = 0;
};

// The longest a downstream's Retry-After may stop a connector: a larger value is cut to this, so a
// misbehaving downstream cannot switch a connector off for days.
inline constexpr int64_t kMaxThrottleS = 3600;

// A probe claimed at `now_epoch_ms` holds its claim until this time (epoch seconds, rounded up: the
// claim lasts at least `probe_timeout_s`), longer than the call may take (the config refuses a
// probe_timeout_s not longer than the connector's timeout). Another instance may take it over only
// `max_clock_skew_s` after it expired, as it may reclaim a slot (S7): a host whose clock runs that
// far ahead never takes over a live probe. LatestExpiryTakenOver is the latest expiry a claim may
// have to be taken over at `now_epoch_ms`: ProbeClaimOver and the store's condition both use it.
int64_t ProbeExpiresAt(int64_t now_epoch_ms, const Config& config);
int64_t LatestExpiryTakenOver(int64_t now_epoch_ms, const Config& config);
// Whether the snapshot's probe claim may be taken over at `now_epoch_ms`.
bool ProbeClaimOver(const Snapshot& s, const Config& config, int64_t now_epoch_ms);

// Whether an OPEN breaker's cooldown is over at `now_epoch_ms`: it has ended, or it ends later than
// any instance could have set it (LatestPlausibleOpenUntil: now + cooldown_s, rounded up, + the clock
// skew allowed) — written by a host whose clock ran far ahead, or edited, it would otherwise hold
// the connector OPEN fleet-wide for as long as that host was ahead.
bool CooldownOver(const Snapshot& s, const Config& config, int64_t now_epoch_ms);
int64_t LatestPlausibleOpenUntil(int64_t now_epoch_ms, const Config& config);

// `throttled_until_epoch_sec` for a Retry-After of `retry_after_s` received at `now_epoch_ms`.
int64_t ThrottledUntil(int64_t now_epoch_ms, int64_t retry_after_s);

// What a caller asking for permission must do next.
struct PermissionPlan {
  enum class Step {
    kAllow,          // CLOSED: run the call
    kDefer,          // answer DEFERRED with `reason` and `retry_after_ms` (downstream_throttled while the
                     // connector is throttled, whatever the state: no call and no probe before it ends)
    kClaimProbe,     // OPEN past its cooldown: try the S1 conditional claim
    kTakeOverProbe,  // HALF_OPEN whose probe expired or was given back: try to claim it (S3)
  };
  Step step = Step::kAllow;
  DeferReason reason = DeferReason::kBreakerOpen;
  int64_t retry_after_ms = 0;
};

PermissionPlan PlanPermission(const Snapshot& s, const Config& config, int64_t now_epoch_ms);

// How long a caller that lost the probe race should wait before retrying.
inline constexpr int64_t kProbeInFlightRetryMs = 1000;

// `open_until_epoch_sec` for a breaker opening at `now_epoch_ms`: now + cooldown, rounded up (S1).
int64_t OpenUntil(int64_t now_epoch_ms, const Config& config);

// The item TTL for a write at `now_epoch_sec` (S4).
int64_t StateTtl(int64_t now_epoch_sec, const Config& config);

// True when the counting window that started at `s.window_start_epoch_sec` is over at `now`.
bool WindowExpired(const Snapshot& s, const Config& config, int64_t now_epoch_sec);

// S5: whether the window's counts open the breaker.
bool ShouldOpen(int64_t failures, int64_t calls, int distinct_tenants, const Config& config);

// S5: whether a call that returned normally after `latency_ms` counts as a failure (slow call).
bool IsSlowCall(const Config& config, int64_t latency_ms);

}  // namespace toolgate::breaker
