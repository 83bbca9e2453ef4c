#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// A bulk replay (DESIGN §17.9): a list of originals fixed when the job is created, replayed one by one
// at `rate_per_s` by whichever gateway instance holds the job's claim.
struct ReplayJob {
  std::string job_id;  // UUIDv7
  std::string state;   // RUNNING, then DONE or CANCELLED
  std::string reason;
  std::string requested_by;
  bool force = false;
  int rate_per_s = 5;
  std::string filter_json = "{}";  // what selected the originals (shown back to operators)
  int64_t created_at_ms = 0;
  int64_t updated_at_ms = 0;
  int64_t finished_at_ms = 0;
  int64_t planned = 0;            // originals in the job
  int64_t next_index = 0;         // the cursor: originals [0, next_index) are done
  int64_t in_flight_index = -1;   // the original being replayed (-1: none): a crash leaves it set
  std::string last_execution_id;  // the last original done
  // What became of the originals done: a new execution that SUCCEEDED; deduplicated (the intent had
  // succeeded: no call); refused (no replay made: the limit, not found, not replayable); failed (the
  // replay ran and ended FAILED, DEFERRED or BLOCKED); interrupted (replayed before a restart, outcome
  // in its own ledger).
  int64_t replayed = 0, deduped = 0, refused = 0, failed = 0, interrupted = 0;
  std::string owner;  // the instance running it, while its claim lasts
  int64_t lease_until_ms = 0;
  std::string cancelled_by;
};

// One original of a job: its tenant (the replay's tenant, never anyone else's) and id. An empty
// tenant marks an id that was not found when the job was made.
using ReplayJobEntry = std::pair<std::string, std::string>;

// Bulk replay jobs in the store: a header item (REPLAYJOBS, JOB#<job_id>) that holds the state, the
// counts and the cursor, and the originals in parts of 500 (REPLAYJOB#<job_id>, PART#<n>), so a job
// of any size keeps every item small. Progress is one conditional update per original, made only by
// the claim's owner, so a restarted gateway (or another instance, once the claim has lapsed) goes on
// where the job stopped, and two instances never run one job.
//
// Thread-safe. Status codes: store errors; kNotFound for an unknown job; kInvalidArgument for more
// than kMaxEntries originals.
class ReplayJobStore {
 public:
  static constexpr int64_t kMaxEntries = 50000;
  static constexpr int kPartSize = 500;
  static constexpr int64_t kRetentionS = 30 * 86400;  // jobs are kept 30 days

  // A claim lapsed `max_clock_skew_s` ago by this host's clock may be taken over: a host whose clock
  // runs that far ahead never takes a live holder's.
  ReplayJobStore(store::ItemStore& store, const Clock& clock, int max_clock_skew_s);

  // Writes the parts, then the header (state RUNNING, unclaimed).
  absl::Status Create(const ReplayJob& job, const std::vector<ReplayJobEntry>& entries);
  absl::StatusOr<ReplayJob> Get(std::string_view job_id);
  // Newest first.
  absl::StatusOr<std::vector<ReplayJob>> List(int limit);
  // The originals [from, from + count).
  absl::StatusOr<std::vector<ReplayJobEntry>> Entries(std::string_view job_id, int64_t from, int64_t count);

  // RUNNING → CANCELLED; false when the job had already ended.
  absl::StatusOr<bool> Cancel(std::string_view job_id, std::string_view cancelled_by);
  // Takes (or renews) the claim of a RUNNING job that is unclaimed, lapsed, or `owner`'s already;
  // the job as claimed, or nullopt.
  absl::StatusOr<std::optional<ReplayJob>> Claim(std::string_view job_id, std::string_view owner, int64_t lease_ms);
  // Gives a claim back (on shutdown), so another instance or a restart takes the job at once.
  absl::Status Release(std::string_view job_id, std::string_view owner);
  // Marks original `index` as being replayed; false when the job is no longer RUNNING or not
  // `owner`'s (cancelled, or taken over): replay nothing then.
  absl::StatusOr<bool> Begin(std::string_view job_id, std::string_view owner, int64_t index, int64_t lease_ms);
  // Records original `index` done with `result` (one of the count names) and advances the cursor;
  // the last one ends the job (DONE). Applied while `owner` holds the claim, even if the job was
  // cancelled meanwhile (the replay happened).
  absl::StatusOr<bool> Record(std::string_view job_id, std::string_view owner, int64_t index,
                              std::string_view execution_id, std::string_view result);

 private:
  store::ItemStore& store_;
  const Clock& clock_;
  const int64_t skew_ms_;
};

}  // namespace toolgate
