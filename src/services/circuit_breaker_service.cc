#include "toolgate/services/circuit_breaker_service.h"

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using breaker::State;
using store::Attr;
using store::AttributeMap;
using store::AttributePath;
using store::Condition;
using store::Item;
using store::UpdateOp;

namespace {

// Attribute names of the breaker item (the seed's names where it has them).
constexpr char kState[] = "state";
constexpr char kGeneration[] = "generation";
constexpr char kOpenUntil[] = "open_until_epoch_sec";
constexpr char kProbeInFlight[] = "half_open_probe_in_flight";
constexpr char kProbeOwner[] = "probe_owner";
constexpr char kProbeExpiresAt[] = "half_open_probe_expires_at";
constexpr char kWindowStart[] = "window_start_epoch_sec";
constexpr char kWindowFailures[] = "window_failures";
constexpr char kWindowCalls[] = "window_calls";
constexpr char kFailureTenants[] = "failure_tenants";
constexpr char kUpdatedAt[] = "updated_at_ms";
constexpr char kThrottledUntil[] = "throttled_until_epoch_sec";
constexpr char kForcedBy[] = "forced_by";
constexpr char kForcedReason[] = "forced_reason";

// A read-modify-write that keeps losing its race is retried this many times before kAborted.
constexpr int kMaxTransitionAttempts = 32;

absl::StatusOr<breaker::Snapshot> DecodeBreaker(const std::optional<Item>& item, std::string_view connector_id) {
  breaker::Snapshot s;
  if (!item) return s;
  s.exists = true;
  const auto state = store::GetString(*item, kState);
  const auto parsed = state ? breaker::ParseState(*state) : std::nullopt;
  if (!parsed) {
    return absl::DataLossError(absl::StrCat("breaker item of connector '", std::string(connector_id),
                                            "' has no valid state (", state.value_or("absent"), ")"));
  }
  s.state = *parsed;
  s.generation = store::GetInt(*item, kGeneration).value_or(0);
  s.open_until_epoch_sec = store::GetInt(*item, kOpenUntil).value_or(0);
  s.half_open_probe_in_flight = store::GetBool(*item, kProbeInFlight).value_or(false);
  s.probe_owner = store::GetString(*item, kProbeOwner).value_or("");
  s.half_open_probe_expires_at = store::GetInt(*item, kProbeExpiresAt).value_or(0);
  s.window_start_epoch_sec = store::GetInt(*item, kWindowStart).value_or(0);
  s.window_failures = store::GetInt(*item, kWindowFailures).value_or(0);
  s.window_calls = store::GetInt(*item, kWindowCalls).value_or(0);
  const AttributeMap* tenants = store::GetMap(*item, kFailureTenants);
  s.distinct_failure_tenants = tenants ? static_cast<int>(tenants->size()) : 0;
  s.throttled_until_epoch_sec = store::GetInt(*item, kThrottledUntil).value_or(0);
  if (s.state == State::kForcedOpen) {
    s.forced_by = store::GetString(*item, kForcedBy).value_or("");
    s.forced_reason = store::GetString(*item, kForcedReason).value_or("");
    s.forced_at_ms = store::GetInt(*item, kUpdatedAt).value_or(0);
  }
  return s;
}

// A fresh item in `state` with an empty counting window. FORCED_OPEN carries no TTL: it stays until
// an operator closes it (S4: TTL never ends an OPEN the operator asked for).
Item FreshItem(State state, int64_t generation, int64_t now_ms, const breaker::Config& config) {
  const int64_t now_sec = now_ms / 1000;
  Item item{
      {kState, std::string(breaker::ToString(state))},
      {kGeneration, generation},
      {kWindowStart, int64_t{0}},
      {kWindowFailures, int64_t{0}},
      {kWindowCalls, int64_t{0}},
      {kFailureTenants, AttributeMap{}},
      {kUpdatedAt, now_ms},
  };
  if (state == State::kOpen) item[kOpenUntil] = breaker::OpenUntil(now_ms, config);
  if (state != State::kForcedOpen) item[std::string(store::kTtlAttribute)] = breaker::StateTtl(now_sec, config);
  return item;
}

// Holds when the breaker is still the one `seen` was read from.
Condition Unchanged(const breaker::Snapshot& seen, int64_t now_sec) {
  if (!seen.exists) return Condition::ItemAbsentOrExpired(now_sec);
  return Condition::Eq(Attr(kGeneration), seen.generation);
}

// Holds while the CLOSED breaker at `generation` still counts in the window that began at `start`.
Condition SameWindow(int64_t generation, int64_t start) {
  return Condition::And({Condition::Eq(Attr(kState), std::string(breaker::ToString(State::kClosed))),
                         Condition::Eq(Attr(kGeneration), generation), Condition::Eq(Attr(kWindowStart), start)});
}

UpdateOp SetTtl(int64_t now_sec, const breaker::Config& config) {
  return UpdateOp::Set(Attr(store::kTtlAttribute.data()), breaker::StateTtl(now_sec, config));
}

}  // namespace

std::string_view ToString(BreakerTransition::Cause cause) {
  using Cause = BreakerTransition::Cause;
  switch (cause) {
    case Cause::kFailureThreshold:
      return "failure_threshold";
    case Cause::kProbeClaimed:
      return "probe_claimed";
    case Cause::kProbeTakenOver:
      return "probe_taken_over";
    case Cause::kProbeReturned:
      return "probe_returned";
    case Cause::kProbeSucceeded:
      return "probe_succeeded";
    case Cause::kProbeFailed:
      return "probe_failed";
    case Cause::kProbeThrottled:
      return "probe_throttled";
    case Cause::kForcedOpen:
      return "forced_open";
    case Cause::kManualClose:
      return "manual_close";
  }
  return "unknown";
}

CircuitBreakerService::CircuitBreakerService(store::ItemStore& store, const Clock& clock, std::string instance_id,
                                             BreakerTransitionListener* listener, int cache_ms)
    : store_(store), clock_(clock), instance_id_(std::move(instance_id)), listener_(listener), cache_ms_(cache_ms) {}

std::optional<breaker::Snapshot> CircuitBreakerService::Cached(std::string_view connector_id, int64_t now_ms) {
  if (cache_ms_ <= 0) return std::nullopt;
  const int64_t mono_ms = clock_.now_monotonic_ms();
  absl::MutexLock lock(&cache_mu_);
  auto it = cache_.find(connector_id);
  // Its age by the monotonic clock: a wall clock stepped backwards must not keep a snapshot fresh
  // (another instance's opening unseen for as long as the step).
  if (it == cache_.end() || mono_ms - it->second.second >= cache_ms_) return std::nullopt;
  const breaker::Snapshot& s = it->second.first;
  // Only states whose answer needs no decision: CLOSED, and OPEN before its cooldown ends.
  if (s.state == State::kClosed) return s;
  if (s.state == State::kOpen && s.open_until_epoch_sec > now_ms / 1000) return s;
  return std::nullopt;
}

void CircuitBreakerService::Remember(std::string_view connector_id, const breaker::Snapshot& s) {
  if (cache_ms_ <= 0) return;
  const int64_t mono_ms = clock_.now_monotonic_ms();
  absl::MutexLock lock(&cache_mu_);
  cache_.insert_or_assign(std::string(connector_id), std::make_pair(s, mono_ms));
}

void CircuitBreakerService::Forget(std::string_view connector_id) {
  if (cache_ms_ <= 0) return;
  absl::MutexLock lock(&cache_mu_);
  if (auto it = cache_.find(connector_id); it != cache_.end()) cache_.erase(it);
}

store::ItemKey CircuitBreakerService::Key(std::string_view connector_id) {
  return {absl::StrCat("CONNECTOR#", std::string(connector_id)), "BREAKER"};
}

absl::StatusOr<breaker::Snapshot> CircuitBreakerService::Read(std::string_view connector_id) {
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(Key(connector_id)));
  return DecodeBreaker(item, connector_id);
}

absl::StatusOr<breaker::Snapshot> CircuitBreakerService::CachedOrRead(std::string_view connector_id, int64_t now_ms) {
  if (std::optional<breaker::Snapshot> cached = Cached(connector_id, now_ms)) return *cached;
  ASSIGN_OR_RETURN(breaker::Snapshot s, Read(connector_id));
  Remember(connector_id, s);
  return s;
}

absl::StatusOr<CircuitBreakerService::Permit> CircuitBreakerService::RequestPermission(std::string_view connector_id,
                                                                                       const breaker::Config& config) {
  const int64_t now_ms = clock_.now_epoch_ms();
  ASSIGN_OR_RETURN(const breaker::Snapshot s, CachedOrRead(connector_id, now_ms));
  const breaker::PermissionPlan plan = breaker::PlanPermission(s, config, now_ms);
  if (plan.step == breaker::PermissionPlan::Step::kClaimProbe ||
      plan.step == breaker::PermissionPlan::Step::kTakeOverProbe) {
    return ClaimProbe(connector_id, config, s, now_ms);
  }
  return PermitFromPlan(s, plan, config, now_ms);
}

std::optional<CircuitBreakerService::Permit> CircuitBreakerService::PermitFromFreshCopy(std::string_view connector_id,
                                                                                        const breaker::Config& config) {
  const int64_t now_ms = clock_.now_epoch_ms();
  std::optional<breaker::Snapshot> s = Cached(connector_id, now_ms);
  if (!s) return std::nullopt;
  return PermitFromPlan(*s, breaker::PlanPermission(*s, config, now_ms), config, now_ms);
}

absl::StatusOr<CircuitBreakerService::Permit> CircuitBreakerService::RequestPermissionWithoutProbe(
    std::string_view connector_id, const breaker::Config& config) {
  const int64_t now_ms = clock_.now_epoch_ms();
  ASSIGN_OR_RETURN(const breaker::Snapshot s, CachedOrRead(connector_id, now_ms));
  return PermitFromPlan(s, breaker::PlanPermission(s, config, now_ms), config, now_ms);
}

CircuitBreakerService::Permit CircuitBreakerService::PermitFromPlan(const breaker::Snapshot& s,
                                                                    const breaker::PermissionPlan& plan,
                                                                    const breaker::Config& config, int64_t now_ms) {
  Permit p;
  if (plan.step != breaker::PermissionPlan::Step::kAllow) {
    // A probe to claim is refused here: the caller may not be the probe (breaker_open).
    p.reason = plan.step == breaker::PermissionPlan::Step::kDefer ? plan.reason : DeferReason::kBreakerOpen;
    p.retry_after_ms = plan.retry_after_ms;
    return p;
  }
  p.allowed = true;
  p.generation = s.generation;
  p.window_start_epoch_sec = s.window_start_epoch_sec;
  p.window_counting = s.exists && s.window_failures > 0 && !breaker::WindowExpired(s, config, now_ms / 1000);
  return p;
}

absl::StatusOr<CircuitBreakerService::Permit> CircuitBreakerService::ClaimProbe(std::string_view connector_id,
                                                                                const breaker::Config& config,
                                                                                const breaker::Snapshot& seen,
                                                                                int64_t now_ms) {
  const int64_t now_sec = now_ms / 1000;
  const bool take_over = seen.state == State::kHalfOpen;
  Condition condition =
      take_over
          ? Condition::And(
                {Condition::Eq(Attr(kState), std::string(breaker::ToString(State::kHalfOpen))),
                 Condition::Eq(Attr(kGeneration), seen.generation),
                 Condition::Or({Condition::Eq(Attr(kProbeInFlight), false),
                                Condition::Le(Attr(kProbeExpiresAt), breaker::LatestExpiryTakenOver(now_ms, config))})})
          // S1, plus the generation: still exactly one winner, and no claim on a breaker that moved.
          : Condition::And(
                {Condition::Eq(Attr(kState), std::string(breaker::ToString(State::kOpen))),
                 Condition::Or(
                     {Condition::NotExists(Attr(kProbeInFlight)), Condition::Eq(Attr(kProbeInFlight), false)}),
                 Condition::Or({Condition::Le(Attr(kOpenUntil), now_sec),
                                Condition::Gt(Attr(kOpenUntil), breaker::LatestPlausibleOpenUntil(now_ms, config))}),
                 Condition::Eq(Attr(kGeneration), seen.generation)});
  Permit p;
  p.probe_owner = absl::StrCat(instance_id_, "/", NewUuidV7(clock_));
  const std::vector<UpdateOp> ops = {
      UpdateOp::Set(Attr(kState), std::string(breaker::ToString(State::kHalfOpen))),
      UpdateOp::Set(Attr(kProbeInFlight), true),
      UpdateOp::Set(Attr(kProbeOwner), p.probe_owner),
      UpdateOp::Set(Attr(kProbeExpiresAt), breaker::ProbeExpiresAt(now_ms, config)),
      UpdateOp::Set(Attr(kGeneration), seen.generation + 1),
      UpdateOp::Set(Attr(kUpdatedAt), now_ms),
      SetTtl(now_sec, config),
  };
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(Key(connector_id), ops, condition));
  if (!r.applied) {
    Permit lost;
    lost.reason = DeferReason::kProbeInFlight;
    lost.retry_after_ms = breaker::kProbeInFlightRetryMs;
    return lost;
  }
  if (!take_over && seen.open_until_epoch_sec > now_sec) {
    spdlog::warn(
        "breaker of connector {}: its cooldown ran until {}, later than cooldown_s ({} s) and max_clock_skew_s ({} s) "
        "allow from now ({}): written by a host whose clock ran ahead, or edited; probing now",
        connector_id, seen.open_until_epoch_sec, config.cooldown_s, config.max_clock_skew_s, now_sec);
  }
  p.allowed = true;
  p.probe = true;
  p.generation = seen.generation + 1;
  Report(connector_id, seen.state, State::kHalfOpen,
         take_over ? BreakerTransition::Cause::kProbeTakenOver : BreakerTransition::Cause::kProbeClaimed, p.generation,
         now_ms);
  return p;
}

// S5: a success in CLOSED writes only while a failure-rate window is counting calls.
bool CircuitBreakerService::SuccessWrites(const breaker::Config& config, const Permit& permit) {
  return permit.probe || (config.failure_rate_threshold && permit.window_counting);
}

absl::Status CircuitBreakerService::RecordSuccess(std::string_view connector_id, const breaker::Config& config,
                                                  const Permit& permit) {
  if (permit.probe) return ProbeResult(connector_id, config, permit, State::kClosed);
  if (!SuccessWrites(config, permit)) return absl::OkStatus();
  const int64_t now_ms = clock_.now_epoch_ms();
  const int64_t now_sec = now_ms / 1000;
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update(Key(connector_id), {UpdateOp::Add(Attr(kWindowCalls), 1), SetTtl(now_sec, config)},
                                 SameWindow(permit.generation, permit.window_start_epoch_sec)));
  (void)r;  // not applied: the window or the state moved on, and this success no longer counts
  return absl::OkStatus();
}

absl::Status CircuitBreakerService::RecordFailure(std::string_view connector_id, const breaker::Config& config,
                                                  const Permit& permit, std::string_view tenant_id) {
  if (permit.probe) return ProbeResult(connector_id, config, permit, State::kOpen);
  const std::string tenant(tenant_id.empty() ? "-" : tenant_id);
  for (int attempt = 0; attempt < kMaxTransitionAttempts; ++attempt) {
    ASSIGN_OR_RETURN(breaker::Snapshot s, Read(connector_id));
    // A result from a call that started under another generation no longer counts (S3).
    if (s.state != State::kClosed || s.generation != permit.generation) return absl::OkStatus();
    const int64_t now_ms = clock_.now_epoch_ms();
    const int64_t now_sec = now_ms / 1000;
    store::WriteResult r;
    if (!s.exists) {
      Item item = FreshItem(State::kClosed, s.generation, now_ms, config);
      item[kWindowStart] = now_sec;
      item[kWindowFailures] = int64_t{1};
      item[kWindowCalls] = int64_t{1};
      item[kFailureTenants] = AttributeMap{{tenant, int64_t{1}}};
      ASSIGN_OR_RETURN(r, store_.Put(Key(connector_id), item, Condition::ItemAbsentOrExpired(now_sec)));
    } else if (breaker::WindowExpired(s, config, now_sec)) {
      ASSIGN_OR_RETURN(r, store_.Update(Key(connector_id),
                                        {UpdateOp::Set(Attr(kWindowStart), now_sec),
                                         UpdateOp::Set(Attr(kWindowFailures), int64_t{1}),
                                         UpdateOp::Set(Attr(kWindowCalls), int64_t{1}),
                                         UpdateOp::Set(Attr(kFailureTenants), AttributeMap{{tenant, int64_t{1}}}),
                                         UpdateOp::Set(Attr(kUpdatedAt), now_ms), SetTtl(now_sec, config)},
                                        SameWindow(s.generation, s.window_start_epoch_sec)));
    } else {
      std::vector<UpdateOp> ops = {UpdateOp::Add(Attr(kWindowFailures), 1), UpdateOp::Add(Attr(kWindowCalls), 1),
                                   UpdateOp::Set(Attr(kUpdatedAt), now_ms), SetTtl(now_sec, config)};
      // The tenant set only needs to reach min_distinct_tenants, which keeps the item small.
      if (s.distinct_failure_tenants < config.min_distinct_tenants) {
        ops.push_back(UpdateOp::Set(AttributePath::In(kFailureTenants, tenant), int64_t{1}));
      }
      ASSIGN_OR_RETURN(r, store_.Update(Key(connector_id), ops, SameWindow(s.generation, s.window_start_epoch_sec)));
    }
    if (!r.applied) continue;  // the window or the state moved under us: look again
    ASSIGN_OR_RETURN(breaker::Snapshot counted, DecodeBreaker(r.item, connector_id));
    if (!breaker::ShouldOpen(counted.window_failures, counted.window_calls, counted.distinct_failure_tenants, config)) {
      return absl::OkStatus();
    }
    // Every failure that crosses the threshold tries; the generation guard lets exactly one win (S5).
    return Transition(connector_id, counted, FreshItem(State::kOpen, counted.generation + 1, now_ms, config),
                      BreakerTransition::Cause::kFailureThreshold, State::kOpen, now_ms)
        .status();
  }
  return absl::AbortedError(absl::StrCat("breaker of connector '", std::string(connector_id),
                                         "': failure not recorded after ", kMaxTransitionAttempts, " races"));
}

absl::Status CircuitBreakerService::ProbeResult(std::string_view connector_id, const breaker::Config& config,
                                                const Permit& permit, State to) {
  // S2: a full put of CLOSED (success) or OPEN for another cooldown (failure) clears the probe;
  // S3: only while the probe's generation is still current.
  const int64_t now_ms = clock_.now_epoch_ms();
  breaker::Snapshot seen;
  seen.exists = true;
  seen.state = State::kHalfOpen;
  seen.generation = permit.generation;
  const auto cause =
      to == State::kClosed ? BreakerTransition::Cause::kProbeSucceeded : BreakerTransition::Cause::kProbeFailed;
  return Transition(connector_id, seen, FreshItem(to, permit.generation + 1, now_ms, config), cause, to, now_ms)
      .status();
}

absl::Status CircuitBreakerService::RecordThrottled(std::string_view connector_id, const breaker::Config& config,
                                                    const Permit& permit, int64_t retry_after_s) {
  const int64_t now_ms = clock_.now_epoch_ms();
  const int64_t until = breaker::ThrottledUntil(now_ms, retry_after_s);
  if (permit.probe) {
    breaker::Snapshot seen;
    seen.exists = true;
    seen.state = State::kHalfOpen;
    seen.generation = permit.generation;
    Item next = FreshItem(State::kOpen, permit.generation + 1, now_ms, config);
    next[kOpenUntil] = std::max(store::GetInt(next, kOpenUntil).value_or(0), until);
    next[kThrottledUntil] = until;
    return Transition(connector_id, seen, next, BreakerTransition::Cause::kProbeThrottled, State::kOpen, now_ms)
        .status();
  }
  ASSIGN_OR_RETURN(breaker::Snapshot s, Read(connector_id));
  const int64_t now_sec = now_ms / 1000;
  if (s.throttled_until_epoch_sec > now_sec) return absl::OkStatus();  // this window is already on record
  store::WriteResult r;
  if (!s.exists) {
    Item item = FreshItem(State::kClosed, 0, now_ms, config);
    item[kThrottledUntil] = until;
    ASSIGN_OR_RETURN(r, store_.Put(Key(connector_id), item, Condition::ItemAbsentOrExpired(now_sec)));
  } else {
    // Only the first throttled call of a window writes; the others find it throttled already.
    ASSIGN_OR_RETURN(
        r, store_.Update(Key(connector_id),
                         {UpdateOp::Set(Attr(kThrottledUntil), until), UpdateOp::Set(Attr(kUpdatedAt), now_ms)},
                         Condition::And({Condition::Exists(Attr(kState)),
                                         Condition::Or({Condition::NotExists(Attr(kThrottledUntil)),
                                                        Condition::Le(Attr(kThrottledUntil), now_sec)})}),
                         store::ReturnValues::kNone));
  }
  Forget(connector_id);  // this instance sees the throttle at once, whoever wrote it
  (void)r;               // not applied: another caller recorded this window first
  return absl::OkStatus();
}

absl::Status CircuitBreakerService::ReturnProbe(std::string_view connector_id, const Permit& permit) {
  const int64_t now_ms = clock_.now_epoch_ms();
  const std::vector<UpdateOp> ops = {UpdateOp::Set(Attr(kProbeInFlight), false), UpdateOp::Remove(Attr(kProbeOwner)),
                                     UpdateOp::Set(Attr(kGeneration), permit.generation + 1),
                                     UpdateOp::Set(Attr(kUpdatedAt), now_ms)};
  const Condition condition = Condition::And(
      {Condition::Eq(Attr(kState), std::string(breaker::ToString(State::kHalfOpen))),
       Condition::Eq(Attr(kGeneration), permit.generation), Condition::Eq(Attr(kProbeOwner), permit.probe_owner)});
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(Key(connector_id), ops, condition));
  if (r.applied) {
    Report(connector_id, State::kHalfOpen, State::kHalfOpen, BreakerTransition::Cause::kProbeReturned,
           permit.generation + 1, now_ms);
  }
  return absl::OkStatus();
}

absl::StatusOr<breaker::Snapshot> CircuitBreakerService::ForceOpen(std::string_view connector_id,
                                                                   const breaker::Config& config,
                                                                   const OperatorNote& note) {
  ASSIGN_OR_RETURN(CloseResult r,
                   Override(connector_id, config, State::kForcedOpen, BreakerTransition::Cause::kForcedOpen, note));
  return r.after;
}

absl::StatusOr<CircuitBreakerService::CloseResult> CircuitBreakerService::ManualClose(std::string_view connector_id,
                                                                                      const breaker::Config& config) {
  return Override(connector_id, config, State::kClosed, BreakerTransition::Cause::kManualClose, {});
}

absl::StatusOr<CircuitBreakerService::CloseResult> CircuitBreakerService::Override(std::string_view connector_id,
                                                                                   const breaker::Config& config,
                                                                                   State to,
                                                                                   BreakerTransition::Cause cause,
                                                                                   const OperatorNote& note) {
  for (int attempt = 0; attempt < kMaxTransitionAttempts; ++attempt) {
    absl::StatusOr<breaker::Snapshot> read = Read(connector_id);
    if (absl::IsDataLoss(read.status())) {
      auto replaced = Replace(connector_id, config, to, cause, note, read.status());
      return replaced;
    }
    ASSIGN_OR_RETURN(breaker::Snapshot s, std::move(read));
    const int64_t now_ms = clock_.now_epoch_ms();
    if (to == State::kClosed && s.state == State::kClosed && s.throttled_until_epoch_sec <= now_ms / 1000) {
      return CloseResult{s, s, false};  // nothing to close: no write, no transition, no audit
    }
    Item next = FreshItem(to, s.generation + 1, now_ms, config);
    if (to == State::kForcedOpen) {
      if (!note.requested_by.empty()) next[kForcedBy] = note.requested_by;
      if (!note.reason.empty()) next[kForcedReason] = note.reason;
    }
    ASSIGN_OR_RETURN(bool won, Transition(connector_id, s, next, cause, to, now_ms));
    if (won) {
      ASSIGN_OR_RETURN(breaker::Snapshot after, DecodeBreaker(next, connector_id));
      return CloseResult{s, after, true};
    }
  }
  return absl::AbortedError(absl::StrCat("breaker of connector '", std::string(connector_id), "': override lost ",
                                         kMaxTransitionAttempts, " races"));
}

// The operator's state written over an item that cannot be read (edited by hand, corrupted): nothing
// else can move the breaker then, and an override wins over any state. Its generation, unknowable
// from the item, becomes the time in ms — above any count a breaker reaches by transitions — so no
// probe claim of before can pass for one of after.
absl::StatusOr<CircuitBreakerService::CloseResult> CircuitBreakerService::Replace(
    std::string_view connector_id, const breaker::Config& config, State to, BreakerTransition::Cause cause,
    const OperatorNote& note, const absl::Status& unreadable) {
  const int64_t now_ms = clock_.now_epoch_ms();
  Item next = FreshItem(to, now_ms, now_ms, config);
  if (to == State::kForcedOpen) {
    if (!note.requested_by.empty()) next[kForcedBy] = note.requested_by;
    if (!note.reason.empty()) next[kForcedReason] = note.reason;
  }
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Put(Key(connector_id), next, Condition::Always()));
  (void)r;
  spdlog::warn("breaker of connector {}: its item could not be read ({}); replaced by the operator's {}",
               std::string(connector_id), std::string(unreadable.message()), breaker::ToString(to));
  breaker::Snapshot before;
  before.exists = true;
  before.state = State::kOpen;  // unknown; reported as the state that stopped calls
  Report(connector_id, before.state, to, cause, now_ms, now_ms);
  ASSIGN_OR_RETURN(breaker::Snapshot after, DecodeBreaker(next, connector_id));
  return CloseResult{before, after, true};
}

absl::StatusOr<bool> CircuitBreakerService::Transition(std::string_view connector_id, const breaker::Snapshot& seen,
                                                       const Item& given, BreakerTransition::Cause cause, State to,
                                                       int64_t now_ms) {
  // A downstream's Retry-After outlives a breaker opening (the downstream asked for quiet whatever
  // the breaker does); a probe that succeeded, or an operator's close, ends it.
  Item next = given;
  const bool ends_throttle =
      cause == BreakerTransition::Cause::kProbeSucceeded || cause == BreakerTransition::Cause::kManualClose;
  if (!ends_throttle && seen.throttled_until_epoch_sec > now_ms / 1000 && !next.count(kThrottledUntil)) {
    next[kThrottledUntil] = seen.throttled_until_epoch_sec;
  }
  Condition condition = Unchanged(seen, now_ms / 1000);
  if (seen.exists) {
    condition = Condition::And({condition, Condition::Eq(Attr(kState), std::string(breaker::ToString(seen.state)))});
  }
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Put(Key(connector_id), next, condition));
  if (r.applied) Report(connector_id, seen.state, to, cause, store::GetInt(next, kGeneration).value_or(0), now_ms);
  return r.applied;
}

void CircuitBreakerService::Report(std::string_view connector_id, State from, State to, BreakerTransition::Cause cause,
                                   int64_t generation, int64_t now_ms) {
  Forget(connector_id);  // this instance sees its own transitions at once
  if (listener_ == nullptr) return;
  listener_->OnTransition(BreakerTransition{std::string(connector_id), from, to, cause, generation, now_ms});
}

}  // namespace toolgate
