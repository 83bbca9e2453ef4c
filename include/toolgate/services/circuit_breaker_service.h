#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// A breaker state change that this instance's write won (each is reported exactly once fleet-wide).
struct BreakerTransition {
  enum class Cause {
    kFailureThreshold,  // CLOSED -> OPEN: the window's failures crossed the thresholds (S5)
    kProbeClaimed,      // OPEN -> HALF_OPEN: this instance won the single probe (S1)
    kProbeTakenOver,    // HALF_OPEN -> HALF_OPEN: an expired or given-back probe claimed anew (S3)
    kProbeReturned,     // HALF_OPEN -> HALF_OPEN: the probe winner gave the claim back unused (section 5)
    kProbeSucceeded,    // HALF_OPEN -> CLOSED (S2)
    kProbeFailed,       // HALF_OPEN -> OPEN (S2)
    kProbeThrottled,    // HALF_OPEN -> OPEN: the probe was answered 429 (or 503 + Retry-After); open
                        // until the Retry-After has passed (never a success)
    kForcedOpen,        // any -> FORCED_OPEN by an operator
    kManualClose,       // any -> CLOSED by an operator
  };
  std::string connector_id;
  breaker::State from;
  breaker::State to;
  Cause cause;
  int64_t generation;  // the generation after the transition
  int64_t at_epoch_ms;
};

std::string_view ToString(BreakerTransition::Cause cause);

// Receives the transitions this instance wins, after they are durable (for the audit ledger and
// metrics). Called on the thread that made the write; must be thread-safe and must not block long.
class BreakerTransitionListener {
 public:
  virtual ~BreakerTransitionListener() = default;
  virtual void OnTransition(const BreakerTransition& transition) = 0;
};

// Circuit breakers per connector, shared by every thread, process and host through the store
// (design S1–S5). The breaker of connector C is the item (CONNECTOR#C, BREAKER); every transition is
// one conditional write guarded by the breaker's `generation`, so under any burst exactly one writer
// wins each transition. A success in CLOSED costs no write unless a failure-rate window is counting.
//
// Thread-safe. The store, clock and listener must outlive the service.
// Status codes: store errors from ItemStore (see IsStoreError); kDataLoss when the breaker item holds
// something it did not write; kAborted when a read-modify-write lost its race too many times in a row.
class CircuitBreakerService {
 public:
  // What the breaker said about one call, and what its outcome must be recorded against.
  struct Permit {
    bool allowed = false;
    bool probe = false;                              // this call is the single half-open probe
    int64_t generation = 0;                          // the breaker generation the call runs under (S3)
    std::string probe_owner;                         // the probe claim's id when `probe`
    DeferReason reason = DeferReason::kBreakerOpen;  // when !allowed
    int64_t retry_after_ms = 0;                      // when !allowed
    // The counting window seen at permission time, so a success needs no read (S5).
    int64_t window_start_epoch_sec = 0;
    bool window_counting = false;
  };

  // `instance_id` names this process in probe claims (the probe owner). With `cache_ms` > 0 a
  // CLOSED breaker, or an OPEN one still in its cooldown, is answered from this instance's last read
  // for up to `cache_ms` (no store read per call); a breaker whose cooldown has passed, or that is
  // HALF_OPEN, is always read fresh, and every transition is still one conditional write, so the
  // single-probe rule (S1) does not depend on the cache. Other instances' transitions are seen
  // within `cache_ms`; this instance's own at once.
  CircuitBreakerService(store::ItemStore& store, const Clock& clock, std::string instance_id,
                        BreakerTransitionListener* listener = nullptr, int cache_ms = 0);

  // One read, plus one conditional write when a probe can be claimed.
  absl::StatusOr<Permit> RequestPermission(std::string_view connector_id, const breaker::Config& config);

  // Permission for traffic that must never be the half-open probe — an MCP connector's own session
  // set-up, tools/list and ping (design §17.7): allowed exactly when RequestPermission would allow a
  // call without claiming the probe (CLOSED, not throttled). Never writes. The outcome of what ran
  // under it is recorded like a call's (RecordSuccess, RecordFailure).
  absl::StatusOr<Permit> RequestPermissionWithoutProbe(std::string_view connector_id, const breaker::Config& config);
  // RequestPermissionWithoutProbe's answer from this instance's fresh copy of the breaker only, one
  // lookup that never reads the store; nullopt when it holds none (that would be a store read).
  std::optional<Permit> PermitFromFreshCopy(std::string_view connector_id, const breaker::Config& config);

  // Record the outcome of a call that ran under `permit` (REQUIRES: permit.allowed). A result from
  // an older generation is ignored (S3). `tenant_id` feeds `min_distinct_tenants`.
  absl::Status RecordSuccess(std::string_view connector_id, const breaker::Config& config, const Permit& permit);
  // True when RecordSuccess under `permit` writes to the store: a probe's result, or a success counted
  // by a failure-rate window (S5). Every other success in CLOSED writes nothing, so a caller on an
  // event loop can record it there; the other outcomes may always write.
  static bool SuccessWrites(const breaker::Config& config, const Permit& permit);
  absl::Status RecordFailure(std::string_view connector_id, const breaker::Config& config, const Permit& permit,
                             std::string_view tenant_id);

  // A downstream said "not now" (429, or 503 with Retry-After) to a call that ran under `permit`:
  // the whole connector waits `retry_after_s` (capped at breaker::kMaxThrottleS), fleet-wide —
  // `throttled_until_epoch_sec` on the breaker item, one conditional write that only the first
  // throttled call of a window wins. A throttled probe is never a success: the breaker goes back to
  // OPEN until the Retry-After has passed (under the probe's generation, S3). Not a failure (S5).
  absl::Status RecordThrottled(std::string_view connector_id, const breaker::Config& config, const Permit& permit,
                               int64_t retry_after_s);

  // Gives an unused probe claim back (the winner could not get a concurrency slot), so the next
  // caller can claim the probe at once. REQUIRES: permit.probe.
  absl::Status ReturnProbe(std::string_view connector_id, const Permit& permit);

  // Who asked for an operator action and why; kept on a FORCED_OPEN breaker so that status shows it.
  struct OperatorNote {
    std::string requested_by;
    std::string reason;
  };
  // What an operator's close found and left.
  struct CloseResult {
    breaker::Snapshot before;
    breaker::Snapshot after;
    bool changed = false;  // false: the breaker was already CLOSED and not throttled; nothing written
  };

  // Operator actions. They win over any state; FORCED_OPEN stays until ManualClose. ForceOpen returns
  // the new state. ManualClose of a breaker already CLOSED (and not throttled) writes nothing and
  // reports no transition. The health check before a close is the caller's (the admin API's) job.
  absl::StatusOr<breaker::Snapshot> ForceOpen(std::string_view connector_id, const breaker::Config& config,
                                              const OperatorNote& note = {});
  absl::StatusOr<CloseResult> ManualClose(std::string_view connector_id, const breaker::Config& config);

  // The breaker as stored (absent: CLOSED at generation 0).
  absl::StatusOr<breaker::Snapshot> Read(std::string_view connector_id);

  static store::ItemKey Key(std::string_view connector_id);

 private:
  absl::StatusOr<Permit> ClaimProbe(std::string_view connector_id, const breaker::Config& config,
                                    const breaker::Snapshot& seen, int64_t now_ms);
  // The probe's outcome: HALF_OPEN -> `to` (CLOSED or OPEN), under the probe's generation.
  absl::Status ProbeResult(std::string_view connector_id, const breaker::Config& config, const Permit& permit,
                           breaker::State to);
  // Replaces the item with `next` when the breaker is still as `seen`; reports the transition.
  absl::StatusOr<bool> Transition(std::string_view connector_id, const breaker::Snapshot& seen, const store::Item& next,
                                  BreakerTransition::Cause cause, breaker::State to, int64_t now_ms);
  absl::StatusOr<CloseResult> Override(std::string_view connector_id, const breaker::Config& config, breaker::State to,
                                       BreakerTransition::Cause cause, const OperatorNote& note);
  absl::StatusOr<CloseResult> Replace(std::string_view connector_id, const breaker::Config& config, breaker::State to,
                                      BreakerTransition::Cause cause, const OperatorNote& note,
                                      const absl::Status& unreadable);
  void Report(std::string_view connector_id, breaker::State from, breaker::State to, BreakerTransition::Cause cause,
              int64_t generation, int64_t now_ms);

  // The cached snapshot of a connector's breaker, or nullopt when it must be read.
  std::optional<breaker::Snapshot> Cached(std::string_view connector_id, int64_t now_ms);
  // The permit `plan` (for the breaker as `s` holds it) gives without claiming the probe: allowed,
  // deferred, or — where the probe could be claimed — breaker_open.
  static Permit PermitFromPlan(const breaker::Snapshot& s, const breaker::PermissionPlan& plan,
                               const breaker::Config& config, int64_t now_ms);
  void Remember(std::string_view connector_id, const breaker::Snapshot& s);
  // The cached snapshot while fresh, else one read from the store (then cached).
  absl::StatusOr<breaker::Snapshot> CachedOrRead(std::string_view connector_id, int64_t now_ms);
  void Forget(std::string_view connector_id);

  store::ItemStore& store_;
  const Clock& clock_;
  const std::string instance_id_;
  BreakerTransitionListener* const listener_;
  const int cache_ms_;
  absl::Mutex cache_mu_;
  // Each snapshot with the monotonic time (Clock::now_monotonic_ms) it was read at.
  std::map<std::string, std::pair<breaker::Snapshot, int64_t>, std::less<>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace toolgate
