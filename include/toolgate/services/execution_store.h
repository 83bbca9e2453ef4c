#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json_fwd.hpp"
#include "toolgate/clock.h"
#include "toolgate/domain/outcome.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

struct LedgerEvent;

// One execution (design §1), stored tenant-scoped as (TENANT#<tenant>, EXEC#<execution_id>), so a
// lookup by another tenant finds nothing (S11).
struct ExecutionRecord {
  std::string execution_id;
  std::string tenant_id;
  std::string account_id;
  std::string tool_name;
  std::string connector_id;
  std::string action_type;
  std::string actor;                       // the token's sub
  Outcome outcome = Outcome::kInProgress;  // stored as ToString(outcome)
  std::string reason;
  std::string intent_key;
  std::string idempotency_key;
  std::string input_hash;  // InputHash(tool_name, input_json), never stored
  std::string replay_of;
  std::string result_json;  // the downstream JSON of a success
  std::string input_json;   // the canonical input, kept so the execution can be replayed
  // On an original: the replay that succeeded for it, and its result, so later replays are
  // deduplicated for as long as the original is kept (the intent record expires sooner).
  std::string replay_succeeded_in;
  std::string replay_result_json;
  int64_t replay_expires_at_s = 0;  // when the replay named by replay_succeeded_in expires (0: not known)
  int64_t created_at_ms = 0;
  int64_t finished_at_ms = 0;
  int64_t latency_ms = -1;
  int downstream_status = 0;
  bool unguarded = false;  // ran without breaker and concurrency guarantees (on_store_error = allow)
  int64_t last_seq = 0;    // the ledger's last event when the record was last written
  std::string last_hash;
  // The events of the call's own path, held in the record (DESIGN §16): Ledger::EncodeOwnPath's text,
  // seq 1..n of the chain; its later events are items of their own. Empty: every event is an item.
  std::string own_events;
  int64_t expires_at_s = 0;  // the record's `ttl`, shared with its ledger chain; 0: kept forever
};

// Execution records. Thread-safe. Status codes: store errors; kNotFound for an id the tenant does
// not have; kDataLoss for a record it did not write.
class ExecutionStore {
 public:
  ExecutionStore(store::ItemStore& store, const Clock& clock);

  static store::ItemKey Key(std::string_view tenant_id, std::string_view execution_id);
  // A stored record, decoded; kDataLoss when it is not one (no execution_id, or an outcome that is
  // not one of ParseOutcome's).
  static absl::StatusOr<ExecutionRecord> FromItem(const store::Item& item);

  // The data of the chain's EXECUTION_RECEIVED: what the record says of the call, so that an edited
  // record breaks its chain (and an embedded RECEIVED is rebuilt from the record, not stored twice).
  // With `with_input` (every chain begun since chains carried it), also the record's `input_hash`
  // (SHA-256 of the tool name, "\n" and the input): the input a replay sends is the chain's too.
  static nlohmann::json ReceivedData(const ExecutionRecord& record, bool with_input = true);
  // ReceivedData(record, with_input) as canonical JSON text (as the ledger's hashes spell it), written directly.
  static std::string ReceivedText(const ExecutionRecord& record, bool with_input = true);
  // The input's hash as the record's input is: SHA-256 of the tool name, "\n" and `input_json`.
  static std::string InputHash(std::string_view tool_name, std::string_view input_json);
  // Who the chain's events of the call's own path are by: the token's sub, or `tenant:<tenant>`.
  static std::string ChainActor(const ExecutionRecord& record);

  // The tenant list (TENANTS, T#<tenant>) lets an execution be found by its id alone (Locate) when its
  // chain has no item naming its tenant. The entry for `tenant_id`, for the batch that creates the
  // tenant's record, unless this process has already seen it written; NoteTenant after it was.
  std::optional<store::WriteRequest> TenantEntryIfNew(std::string_view tenant_id) const;
  void NoteTenant(std::string_view tenant_id);

  // Writes a new record (never overwrites one).
  absl::Status Create(const ExecutionRecord& record);
  // Writes the outcome fields of a record created earlier.
  absl::Status Finish(const ExecutionRecord& record);
  // The same writes, for a WriteBatch: applied, or refused as Create/Finish would refuse.
  static store::WriteRequest CreateRequest(const ExecutionRecord& record);
  // With `expect_last_seq`, the update applies only while the record's anchor is still at that event
  // (the closing write of a chain held in the record: no other writer appended meanwhile); without,
  // only while the anchor is not past the record's own `last_seq` (never backwards).
  static store::WriteRequest FinishRequest(const ExecutionRecord& record,
                                           std::optional<int64_t> expect_last_seq = std::nullopt);
  // Marks `original_id` as having succeeded through the replay `replay_id`, whose record expires at
  // `replay_expires_at_s` (0: not known).
  static store::WriteRequest ReplaySucceededRequest(std::string_view tenant_id, std::string_view original_id,
                                                    std::string_view replay_id, std::string_view result_json,
                                                    int64_t replay_expires_at_s = 0);
  absl::StatusOr<ExecutionRecord> Get(std::string_view tenant_id, std::string_view execution_id);

  struct ListFilter {
    std::string tool;
    std::vector<std::string> outcomes;  // any of these, as stored (ToString of an Outcome); empty: any
    std::optional<int64_t> since_ms;    // created at or after
    std::optional<int64_t> until_ms;    // created before
    int limit = 50;                     // 1..200
    std::optional<std::string> after;   // cursor: the last execution id of the previous page
  };
  struct ListPage {
    std::vector<ExecutionRecord> executions;  // newest first
    std::optional<std::string> next;
  };
  absl::StatusOr<ListPage> List(std::string_view tenant_id, const ListFilter& filter);

  // Every tenant's executions, for operators (the admin listener). Empty fields match anything.
  struct AdminListFilter {
    std::string connector;
    std::string tenant;
    std::string tool;
    std::vector<std::string> outcomes;  // any of these
    std::optional<int64_t> since_ms;    // created at or after
    std::optional<int64_t> until_ms;    // created before
    bool originals_only = false;        // leave replays out (a bulk replay replays originals)
    int limit = 50;                     // 1..1000
    std::string cursor;                 // opaque: a previous page's `next`
  };
  // With `tenant`: one Query of that tenant's partition, newest first, stopping at `since`. Without:
  // a Scan of every execution item (pages of 500 items examined), in the store's key order — tenant
  // by tenant, oldest first within a tenant on SQLite and memory; not time order across tenants. On
  // DynamoDB a Scan reads (and is billed for) every item of the table, whatever the filter: a full
  // listing costs about (table size / 4 KB) read units — use `tenant` when it is known. Each call
  // examines a bounded number of items; `next` resumes after the last one examined, so a page may
  // hold fewer than `limit` executions while `next` is set. kInvalidArgument for a bad cursor.
  absl::StatusOr<ListPage> ListAll(const AdminListFilter& filter);

  // Finds an execution by id alone (the admin listener knows no tenant): an EXECUTION_RECEIVED item of
  // its chain names the tenant (one small Query of the chain's partition); a chain held in its record
  // has none, and the record is then looked for under each tenant of the tenant list (one Get per
  // tenant: an operator's lookup, not a hot path). The record found must agree. kNotFound when there
  // is no such execution.
  absl::StatusOr<ExecutionRecord> Locate(std::string_view execution_id);

  // Reserves one replay of the original `execution_id` (one conditional ADD): false when it already
  // has `max_replays` replays.
  absl::StatusOr<bool> ReserveReplay(std::string_view tenant_id, std::string_view execution_id, int max_replays);
  // Gives a reserved replay back: the replay ended before it reached the tool (DEFERRED, BLOCKED,
  // refused), so it does not count toward the limit (S12). Never below zero.
  absl::Status ReleaseReplay(std::string_view tenant_id, std::string_view execution_id);

  // Every record of every tenant (for `ledger verify`), with the key it is stored under, through
  // `visit`; stops at the first error.
  absl::Status ForEach(const std::function<absl::Status(const ExecutionRecord&, const store::ItemKey&)>& visit);

 private:
  store::ItemStore& store_;
  const Clock& clock_;
  mutable absl::Mutex tenants_mu_;
  std::set<std::string, std::less<>> tenants_written_ ABSL_GUARDED_BY(tenants_mu_);
};

// Whether an execution vouches for what another record keeps of it (S12), decided once for `ledger
// verify` and for the calls the kept result would answer. Each returns what is wrong, in words that
// name the execution; empty: it vouches. `found` is the execution named (nullptr: not found); a
// missing one vouches only once past the expiry the keeping record holds (0: not known, as records
// written before they kept it), for an intent and an original outlive the executions they name.
//
// The result a SUCCEEDED intent answers repeats of its key with: that of an execution of this key
// that succeeded with it.
std::string IntentVouchProblem(const ExecutionRecord* found, const std::string& execution_id,
                               std::string_view intent_key, std::string_view result_json, int64_t kept_until_s,
                               int64_t now_s);
// The result an original keeps from a replay that succeeded (`replay_succeeded_in`), answering its
// later replays: that of a replay of this original — its record says so, it ran the original's tool
// under the original's intent key, and `original_chain` (the original's events, as far as its record
// anchors them) holds the REPLAY_REQUESTED that named it — that succeeded with it. (A replay's own
// `replay_of` is held to its chain's REPLAY_STARTED by `ledger verify`; the rest make an edited one
// vouch for nothing at run time too.)
std::string ReplayResultVouchProblem(const ExecutionRecord& original, const std::vector<LedgerEvent>& original_chain,
                                     const ExecutionRecord* replay, int64_t now_s);

}  // namespace toolgate
