#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// What this process last learned about the store's writes, for /readyz and `toolgate status`: a store
// that can still be read but no longer written (a full disk, a volume remounted read-only) fails every
// call while a readiness check that only reads stays green.
//
// Every write the engine makes is recorded here (MeteredItemStore; the invoker's batches through the
// asynchronous port): one that failed with store trouble (IsStoreTrouble) marks the writes failing,
// with its time and message; one that was applied clears the mark. Anything else — a condition that
// did not hold (a lost race for a slot or a breaker probe: WriteResult::applied false), a malformed
// request — says nothing about the store and changes nothing. So "failing" means the last write
// that reached a verdict about the store failed.
//
// Thread-safe. Recording an applied write is two relaxed atomic loads and, at most once per
// millisecond, a store: the request path writes thousands of times a second. A failure takes a
// mutex (for its message).
class StoreWriteHealth {
 public:
  // `clock` must outlive this.
  explicit StoreWriteHealth(const Clock& clock) : clock_(clock) {}

  StoreWriteHealth(const StoreWriteHealth&) = delete;
  StoreWriteHealth& operator=(const StoreWriteHealth&) = delete;

  // Whether `status` says the store cannot take writes: kUnavailable (unreachable, busy, full disk),
  // kDataLoss, kInternal, or kFailedPrecondition naming a read-only store. Not kInvalidArgument, nor
  // kAlreadyExists or another kFailedPrecondition (services report refused conditions so).
  static bool IsStoreTrouble(const absl::Status& status);

  void Record(const absl::StatusOr<store::WriteResult>& result);
  // A batch: its first store trouble counts as a failure, else any write applied as a success.
  void Record(const std::vector<absl::StatusOr<store::WriteResult>>& results);

  // Whether the last write that reached a verdict about the store failed with store trouble.
  bool failing() const { return failing_.load(std::memory_order_acquire); }

  struct Snapshot {
    bool failing = false;
    int64_t last_failure_ms = 0;       // epoch ms of the last failed write; 0: none seen
    std::string last_failure_message;  // its Status message (the store's own words)
    int64_t last_success_ms = 0;       // epoch ms of the last applied write (to the ms); 0: none seen
  };
  Snapshot snapshot() const;

  // Whether no write has been seen applied within kConfirmWithinMs of wall time (or ever, or the
  // last one is stamped that far ahead: the clock was stepped back). Not failing, such an instance
  // knows nothing about its writes — a fresh one on a store it may not write (a volume mounted
  // read-only, a role without write access), or an idle one whose store has since stopped taking
  // writes — so /readyz probes before it answers ready.
  bool WritesUnconfirmed() const;
  // A probe write (Engine::ProbeStoreWrite) that failed with any code: the writes are failing.
  void ProbeFailed(const absl::Status& status) { Failed(status); }
  static constexpr int64_t kConfirmWithinMs = 10'000;

  // At most one caller per kProbeIntervalMs (monotonic) is told true: the one that may write a probe
  // item to learn whether writes work again (Engine::ProbeStoreWrite). The rest answer from the state
  // the last probe left, so no number of readiness checks makes the store take more than one probe a
  // second.
  bool ClaimProbe();
  static constexpr int64_t kProbeIntervalMs = 1000;

 private:
  void Failed(const absl::Status& status);
  void Succeeded();

  const Clock& clock_;
  std::atomic<bool> failing_{false};
  std::atomic<int64_t> last_success_ms_{0};
  std::atomic<int64_t> last_probe_monotonic_ms_{INT64_MIN / 2};
  mutable absl::Mutex mu_;
  int64_t last_failure_ms_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_failure_message_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate
