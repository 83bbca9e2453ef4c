#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/domain/outcome.h"
#include "toolgate/domain/slo.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// Latency histogram bounds (ms) kept per minute next to the SLO counts, so fleet-wide latency
// percentiles can be drawn without keeping every call; the last bucket is everything slower.
inline constexpr std::array<int64_t, 12> kLatencyBucketsMs = {5,   10,   25,   50,   100,   250,
                                                              500, 1000, 2500, 5000, 10000, 30000};
inline constexpr size_t kLatencyBucketCount = kLatencyBucketsMs.size() + 1;

// What agents were answered by one connector's invocations: every invocation that got an outcome
// (SUCCEEDED, FAILED, DEFERRED, BLOCKED) counts once in `calls` and once in its outcome; DEFERRED
// also under its reason. Unlike the SLI counts these include calls that never reached the connector.
struct OutcomeCounts {
  int64_t calls = 0;
  int64_t succeeded = 0;
  int64_t failed = 0;
  int64_t deferred = 0;
  int64_t blocked = 0;
  std::map<std::string, int64_t> deferred_by_reason;
  OutcomeCounts& operator+=(const OutcomeCounts& o);
  bool empty() const { return calls == 0; }
};

// One minute (or hour) of a connector's calls as read back from the store.
struct SloBucket {
  slo::BucketCounts counts;
  std::array<int64_t, kLatencyBucketCount> latency{};  // calls per latency bucket
  OutcomeCounts outcomes;                              // minute buckets only
};

// A connector's stored counts: minute buckets (index: epoch minute) for the last
// slo::kMinuteResolutionUpToMinutes minutes, hour buckets (index: epoch hour) for the budget period.
struct SloSeries {
  std::map<int64_t, SloBucket> minutes;
  std::map<int64_t, SloBucket> hours;
  // Counter items left out because they are not as toolgate writes them (a count that is not a
  // count, a key that is not a bucket): one line each, naming the item and what is wrong with it.
  std::vector<std::string> damaged;
  slo::Buckets MinuteCounts() const;
  slo::Buckets HourCounts() const;
};

// The fleet-wide alarm state of one tier of one SLO of one connector.
struct SloAlarmState {
  bool firing = false;
  int64_t since_ms = 0;      // when it last changed; 0: never fired
  int64_t seq = 0;           // how many times it has changed: orders its changes across the fleet
  bool announced = true;     // false: the last change has not been claimed for announcement yet
  std::string announced_by;  // the instance that claimed the last change's announcement
  // Not empty when the item is not as toolgate writes it (`firing` or `announced` not a boolean,
  // `seq` not a whole number): what is wrong. Such an item would never change again, or never be
  // announced again (its conditions and its ADD fail), so RepairAlarm rewrites it.
  std::string damage;
  store::Item damaged_item;  // the item as read, when damaged (RepairAlarm's condition)
};

// The store side of the SLOs (design §8): every instance counts the calls it makes in memory and
// adds them into per-minute and per-hour counter items (ADD, so instances add up), which all
// instances read back; and the alarm state of each tier, changed by conditional writes so that
// exactly one instance announces a change.
//
// Items: (SLO#<connector>, MIN#<epoch minute, 10 digits>) with ttl 8 h, (SLO#<connector>, HOUR#<epoch
// hour, 8 digits>) with ttl 31 days — attributes total, error_bad, latency_bad, l0..l12 — and
// (SLO#<connector>, ALARM#<slo>#<tier>) with firing, since_ms, seq (+1 at every change), announced (false from the
// change until one instance claims its announcement) and announced_by (the claimant's instance id). Minute items also
// carry the outcome counts (RecordOutcome): o_calls, o_succeeded, o_failed, o_deferred, o_blocked and od_<reason> per
// deferral reason. They ride in the same ADD write as the SLI counts, so counting them costs no write per call: at most
// one more minute item per connector and minute (a minute whose calls were all deferred or blocked).
//
// Thread-safe. Status codes: store errors from ItemStore.
class SloCounters {
 public:
  SloCounters(store::ItemStore& store, const Clock& clock);

  // Counts one call that reached (or tried to reach) the connector. Memory only; never fails.
  void Record(const std::string& connector, bool error_bad, int64_t latency_ms, bool latency_bad);

  // Counts one invocation's outcome (SUCCEEDED, FAILED, DEFERRED, BLOCKED; `reason` for
  // DEFERRED: [a-z_]{1,40}, anything else counts as "other"). Memory only; never fails.
  void RecordOutcome(const std::string& connector, Outcome outcome, std::string_view reason);

  // Adds the counts recorded since the last flush into the store (2 conditional-free writes per
  // connector and minute with calls; one transaction on SQLite). Counts whose write failed stay
  // pending for the next flush; pending minutes older than the minute window are dropped.
  absl::Status Flush();

  // The connector's buckets up to the current minute and hour. Buckets up to `max_clock_skew_s` ahead
  // of this host's clock (written by a host whose clock runs ahead) are counted in the current ones.
  // A damaged counter item is left out and named in `damaged`: one bad item must not blind a
  // connector's alarms for as long as it is kept (8 h a minute item, 31 days an hour item).
  absl::StatusOr<SloSeries> Read(const std::string& connector, int max_clock_skew_s = 0);

  // The fleet's outcome counts of the connector over the last `minutes` minutes (the current minute
  // included), as flushed into the store by every instance; damaged minute items are left out (the
  // SLO evaluation reports them). REQUIRES: 1 <= minutes <= 480.
  absl::StatusOr<OutcomeCounts> ReadOutcomes(const std::string& connector, int minutes);

  // Moves the alarm to `firing`. The state written when this call made the change (exactly one
  // caller across the fleet wins each change); nullopt when it was already so.
  absl::StatusOr<std::optional<SloAlarmState>> SetAlarm(const std::string& connector, slo::Sli sli,
                                                        std::string_view tier, bool firing);
  // Rewrites a damaged alarm item (`read`, with SloAlarmState::damage) as a change to `firing`, with
  // `seq` the current epoch millisecond — above any change count, so receivers ordering by `seq`
  // still order the changes after it — and its announcement unclaimed, unless `firing` is the state
  // the item held readably (then there is nothing to announce). Conditional on the item being as
  // read: exactly one caller across the fleet repairs it (the state it wrote), the others get nullopt.
  absl::StatusOr<std::optional<SloAlarmState>> RepairAlarm(const std::string& connector, slo::Sli sli,
                                                           std::string_view tier, bool firing,
                                                           const SloAlarmState& read);
  // Notes that `connector` has (or may get) a firing alarm: its id is kept in (SLO_ALARMED,
  // <connector>), no TTL, so AlarmedConnectors finds alarms left behind when the connector leaves the
  // config. Unconditional; written before each fire.
  absl::Status RememberAlarmed(const std::string& connector);
  // Every connector RememberAlarmed was called for, in id order.
  absl::StatusOr<std::vector<std::string>> AlarmedConnectors();
  // Claims the announcement of the alarm's change number `seq` for `claimant` (an instance id):
  // true for exactly one caller across the fleet, false when the change was claimed already or
  // superseded by a newer one.
  absl::StatusOr<bool> ClaimAnnouncement(const std::string& connector, slo::Sli sli, std::string_view tier, int64_t seq,
                                         const std::string& claimant);
  // Every stored alarm state of the connector, keyed "<slo>#<tier>".
  absl::StatusOr<std::map<std::string, SloAlarmState>> ReadAlarms(const std::string& connector);

  // Calls recorded and not yet flushed (tests, metrics).
  int64_t pending_calls() const;

  static int LatencyBucket(int64_t latency_ms);

 private:
  struct Pending {
    slo::BucketCounts counts;
    std::array<int64_t, kLatencyBucketCount> latency{};
    OutcomeCounts outcomes;
    void Merge(const Pending& o);
  };
  using PendingMap = std::map<std::pair<std::string, int64_t>, Pending>;  // (connector, minute or hour)
  // The buckets of [first, last]; a damaged item is left out and described in `damaged`.
  absl::StatusOr<std::map<int64_t, SloBucket>> ReadRange(const std::string& connector, std::string_view prefix,
                                                         int64_t first, int64_t last,
                                                         std::vector<std::string>& damaged);

  store::ItemStore& store_;
  const Clock& clock_;
  absl::Mutex flush_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  PendingMap pending_minutes_ ABSL_GUARDED_BY(mu_);
  PendingMap pending_hours_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate
