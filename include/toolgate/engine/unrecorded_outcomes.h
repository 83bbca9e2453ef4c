#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// The closes of calls that reached their downstream but whose outcome the store did not take (S9,
// S10: the store was unreachable, or another process held SQLite's lock past its busy timeout). The
// caller was answered `FAILED store_unavailable`; the execution stays IN_PROGRESS, its intent held and
// its ledger one event short. What of the close was not applied is kept here, in memory, and written
// again with backoff until the store takes it — so the record, the ledger and the intent end up saying
// what happened, and a client that retries with its idempotency key is answered from the recorded
// outcome instead of sending the call again once the intent's hold has run out.
//
// Every write keeps the condition it had: a close is given up, not forced, when the world moved on
// meanwhile (a replay of the abandoned execution, another call that took the intent over after its
// hold, a slot lease reclaimed) — the write refused is dropped, with the writes chained to it, and the
// rest still goes in. A write refused on a retry is read back first: when the item already holds
// what it writes, an earlier try whose outcome was unknown (a DynamoDB timeout) had applied it, and
// it counts as applied. A close is also given up after kMaxAge, and not held at all when kMaxHeld
// closes, or kMaxHeldBytes of them, wait already.
// Kept in memory only: a gateway that stops or dies with closes held leaves those executions
// IN_PROGRESS, as before (replayable once abandoned). Thread-safe; RetryDue blocks (store writes).
class UnrecordedOutcomes {
 public:
  using WriteResults = std::vector<absl::StatusOr<store::WriteResult>>;
  static constexpr size_t kMaxHeld = 4096;
  static constexpr size_t kMaxHeldBytes = size_t{64} << 20;
  static constexpr int64_t kFirstRetryMs = 1000;
  static constexpr int64_t kLongestRetryMs = 5'000;
  static constexpr int64_t kMaxAgeMs = 3'600'000;

  UnrecordedOutcomes(store::ItemStore& store, const Clock& clock, Metrics& metrics, size_t max_held = kMaxHeld,
                     size_t max_held_bytes = kMaxHeldBytes);

  // Holds what of `writes` a failed attempt left unapplied (`results`, one per write: an error that
  // means store trouble is tried again; a write its condition refused is dropped, with every write
  // chained to it by `requires_back`). False when nothing is left to write, or the store refused
  // everything left, or kMaxHeld closes (kMaxHeldBytes) are held already (logged; the execution stays
  // IN_PROGRESS).
  bool Hold(const std::string& execution_id, const std::string& outcome, const std::vector<store::WriteRequest>& writes,
            const WriteResults& results);

  // Writes every held close whose retry is due, once each (`all`: every held close, due or not — a
  // stop's last try). While the store is in trouble (unavailable, or timing out) only the first is
  // tried, the rest wait for their next turn; once the store takes a write of one (or answers it with
  // its condition) every other close that waited for the store is due at the next turn, whatever its
  // backoff (the store is back: the sooner, the fewer intents run out of their hold first). Writes a
  // read-back let go are written in the same turn. Backoff and age are timed on monotonic time.
  // Returns how many were recorded whole by this call.
  int RetryDue(bool all = false);

  size_t held() const;  // closes held, those being written by RetryDue with them
  size_t held_bytes() const;
  // Names each close still held in the log (a stop: they stay IN_PROGRESS).
  void LogLeft() const;

  // What of `writes` is left to write after `results`: the writes that failed with store trouble, and
  // those chained to one that is left (a chain whose head was applied starts afresh, no longer
  // chained). `refused` is set when a condition refused a write (the world moved on).
  static std::vector<store::WriteRequest> Remaining(const std::vector<store::WriteRequest>& writes,
                                                    const WriteResults& results, bool& refused);
  // Whether `item` (read back; nullopt: absent) already holds what `w` writes: a Put's whole item, an
  // Update's every Set and Remove. An Add or an Erase cannot tell whose write it was: false.
  static bool AlreadyWritten(const store::WriteRequest& w, const std::optional<store::Item>& item);
  // About what `writes` take in memory, for the byte budget.
  static size_t Bytes(const std::vector<store::WriteRequest>& writes);

 private:
  struct Close {
    std::string execution_id;
    std::string outcome;
    std::vector<store::WriteRequest> writes;  // still to write, in order
    size_t bytes = 0;
    int64_t held_at_ms = 0;  // monotonic time, as next_at_ms
    int64_t next_at_ms = 0;
    int64_t backoff_ms = kFirstRetryMs;
    int attempts = 0;
    bool store_trouble = true;  // its last try failed for the store's trouble, not its own error
  };
  // The refused writes of a retry read back (AlreadyWritten: applied), and the writes skipped after
  // one found applied made to be tried again (true: some were).
  bool ReadBackRefused(const std::vector<store::WriteRequest>& writes, WriteResults& results);
  void UpdateGaugeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  store::ItemStore& store_;
  const Clock& clock_;
  Metrics& metrics_;
  const size_t max_held_;
  const size_t max_held_bytes_;
  mutable absl::Mutex mu_;
  std::list<Close> held_ ABSL_GUARDED_BY(mu_);  // waiting for their turn
  size_t count_ ABSL_GUARDED_BY(mu_) = 0;       // held_ and those RetryDue is writing
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;       // of those
  absl::Mutex retry_mu_;                        // one RetryDue at a time: a close is never written twice at once
};

}  // namespace toolgate
