#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// One ledger event (design §8). `data` is canonical JSON text (an object).
struct LedgerEvent {
  int64_t seq = 0;
  std::string type;
  std::string at;  // RFC 3339, ms
  std::string actor;
  std::string data = "{}";
  std::string hash;          // hex SHA-256 over prev_hash and this event's canonical JSON
  std::string prev_hash;     // "" for the first event of a chain
  int64_t expires_at_s = 0;  // the chain's `ttl` (epoch seconds); 0: kept forever. Not hashed.
  int64_t at_ms = 0;         // `at` in epoch ms, where the event was made or read from its record
  // `data` is canonical JSON text (made so by the ledger): an encoder may copy it as it is. Not stored.
  bool data_canonical = false;
};

struct ExecutionRecord;

// How long chains are kept ([ledger] in the config). A chain expires as a whole: every event of an
// execution carries the same `ttl` as its record, every event of one day's audit chain the same `ttl`,
// so at any moment a chain is either all there or all gone and `ledger verify` stays meaningful.
struct LedgerRetention {
  int64_t retention_s = 0;           // executions and audit days; 0 keeps them forever
  int64_t deferred_retention_s = 0;  // executions answered DEFERRED before reaching a connector; 0: forever

  // The `ttl` of an execution created at `created_at_ms`; 0 when it is kept forever.
  int64_t ExecutionExpiry(int64_t created_at_ms, bool deferred_early) const;
  // The `ttl` of the audit chain of the UTC day holding `epoch_ms`: the day's end plus the retention.
  int64_t AuditExpiry(int64_t epoch_ms) const;
};

// What anchors a chain's end (DESIGN §17.1): an item holding the chain's last `last_seq` and
// `last_hash`, advanced by every append in the same batch as the event (one transaction on SQLite;
// right after the event, and only if the event was written, elsewhere). A removed suffix of the
// chain is then caught: the anchor names an event that is no longer there.
struct ChainAnchor {
  store::ItemKey key;
  // The execution record anchors its chain and must already exist (never created by an append); an
  // audit day's head item is created by the day's first event.
  bool must_exist = false;
};

// The append-only, tamper-evident ledger: chains of events, each chain one store partition —
// `EXEC#<execution_id>` for an execution, `AUDIT#<yyyy-mm-dd>` for the system audit of one UTC day.
// An event is item (<chain>, EVENT#<seq, 12 digits>), written with a "must not exist" condition, so
// nothing is ever overwritten and two writers racing for the same seq cannot both win: the loser
// re-reads the tail and appends after it. Each event's hash covers the previous hash, so an edited
// or removed event breaks every hash after it (`VerifyChain`), and the chain's anchor (the execution
// record; the audit day's head item) names its last event, so a removed tail is caught too.
//
// The hash (docs/operations.md states it for verifiers outside toolgate): lowercase hex SHA-256 of
// `prev_hash` (hex, "" for the first event) followed by the canonical JSON of the object
// {"actor","at","data","seq","type"}: UTF-8, no whitespace, object keys sorted by byte order at every
// level, strings escaped only for '"', '\\' and U+0000..U+001F, integers in decimal, other numbers
// as the shortest text that reads back as the same double.
//
// Thread-safe. Status codes: store errors from ItemStore; kAborted after too many lost races;
// kDataLoss from VerifyChain naming the first bad event.
class Ledger {
 public:
  // What an appender knows of a chain's end; lets the hot path append without reading first.
  struct Tail {
    int64_t seq = 0;
    std::string hash;
    int64_t expires_at_s = 0;  // the chain's ttl, given to every event appended after this tail
  };

  Ledger(store::ItemStore& store, const Clock& clock, LedgerRetention retention = {});

  const LedgerRetention& retention() const { return retention_; }

  static std::string ExecutionChain(std::string_view execution_id);
  static std::string AuditChain(int64_t epoch_ms);

  // Appends an event and advances `anchor` to it; `tail` is updated to it. `data_json` must be a
  // JSON object text. Writers racing on one chain each get their own seq (the loser re-reads).
  absl::StatusOr<LedgerEvent> Append(const std::string& chain, Tail& tail, std::string_view type,
                                     std::string_view actor, std::string_view data_json, const ChainAnchor& anchor);
  // The write that advances `anchor` to `event` (never backwards), for the batch holding the event;
  // marked to run only if the write before it (the event) was applied.
  static store::WriteRequest AnchorRequest(const ChainAnchor& anchor, const LedgerEvent& event);

  static ChainAnchor ExecutionAnchor(std::string_view tenant_id, std::string_view execution_id);
  static ChainAnchor AuditAnchor(const std::string& audit_chain);
  // An audit day's head item, decoded: its anchor (seq 0 when absent).
  absl::StatusOr<Tail> ReadAnchor(const ChainAnchor& anchor);
  // The write that appends an event after `tail`, for a WriteBatch with other writes. The caller
  // checks the result: applied means the event is in; on success it sets `tail` to {event.seq,
  // event.hash}. A refused write means another writer took that seq (use Append to retry).
  std::pair<store::WriteRequest, LedgerEvent> PrepareAppend(const std::string& chain, const Tail& tail,
                                                            std::string_view type, std::string_view actor,
                                                            std::string_view data_json) const;
  // The same for data the caller holds as a JSON value (the engine's path): the event's data is its
  // canonical text, and the hash is taken over that text without parsing it back. Equal, byte for
  // byte, to what the overload above writes for that text.
  std::pair<store::WriteRequest, LedgerEvent> PrepareAppendJson(const std::string& chain, const Tail& tail,
                                                                std::string_view type, std::string_view actor,
                                                                const nlohmann::json& data) const;

  // The event after `tail`, made but not written: the call's own path held in its execution record.
  LedgerEvent MakeEventJson(const Tail& tail, std::string_view type, std::string_view actor,
                            const nlohmann::json& data) const;
  // The same for data the caller already spelled as canonical JSON text, as the ledger spells it
  // (keys sorted, no spaces: ExecutionStore::ReceivedText), taken as it is. Text that is not canonical
  // makes an event whose hash `ledger verify` rejects.
  LedgerEvent MakeEventText(const Tail& tail, std::string_view type, std::string_view actor,
                            std::string canonical_data) const;

  // The events of a call's own path, seq 1..n of its chain, held in its execution record's `events`
  // attribute (DESIGN §16): one write per commit instead of one per event. The list opens with the
  // header {"v":2} (its EXECUTION_RECEIVED carries the input's hash; a list without it, written
  // before, is read and extended as it was). Each event is stored as
  // [type, ms after the record's created_at_ms, data, actor]: its hash and links are not stored but
  // recomputed (a change to any of them changes the chain's end, which the record's last_hash, or the
  // prev_hash of the first event item after them, still names), EXECUTION_RECEIVED's data is rebuilt
  // from the record (ExecutionStore::ReceivedData; stored only where it differs), a `result_sha256`
  // that is the record's result_json's is stored as `true` and rebuilt (so data whose top-level
  // `result_sha256` is `true` itself does not read back: the engine's is always a hex digest), and the actor is
  // left out where it is the chain's (ExecutionStore::ChainActor). Expanded, they are the events the
  // same call wrote as items before: same seq, at, data and hash, so `ledger verify` and
  // `ledger export` see one chain either way.
  static std::string EncodeOwnPath(const std::vector<LedgerEvent>& events, const ExecutionRecord& record);
  // EncodeOwnPath(events, record), given `encoded`, the text EncodeOwnPath wrote for the first
  // `encoded_count` of them: only the rest are encoded. The same text as long as the record's
  // received data and chain actor are what they were then, and none of those first events carries
  // a `result_sha256` (true of every event before a call's outcome). Not a valid prefix: all of them.
  static std::string ExtendOwnPath(std::string_view encoded, size_t encoded_count,
                                   const std::vector<LedgerEvent>& events, const ExecutionRecord& record);
  // Beyond this, the events go as items (a deduplicated replay's REPLAY_DEDUPED carries the whole
  // result, which the record already holds once): the record stays within DynamoDB's item limit.
  static constexpr size_t kMaxOwnPathBytes = 8 * 1024;
  // The item of an event made by MakeEventJson, for a chain whose events are not held in its record.
  static store::WriteRequest EventItemRequest(const std::string& chain, const LedgerEvent& event);
  // kDataLoss when the record's `events` is not what EncodeOwnPath writes.
  static absl::StatusOr<std::vector<LedgerEvent>> DecodeOwnPath(const ExecutionRecord& record);
  // An execution's whole chain: the events its record holds, then its event items.
  absl::StatusOr<std::vector<LedgerEvent>> ReadExecution(const ExecutionRecord& record);

  // Appends a system audit event to today's audit chain (kept for the retention after the day ends).
  absl::StatusOr<LedgerEvent> Audit(std::string_view type, std::string_view actor, std::string_view data_json);

  absl::StatusOr<std::vector<LedgerEvent>> Read(const std::string& chain);
  // The names of every audit chain kept (`AUDIT#<yyyy-mm-dd>`), oldest first; scans the store.
  absl::StatusOr<std::vector<std::string>> AuditChains();
  // The latest audit events, newest first, at most `limit`: none older than `since_ms` (inclusive,
  // if set), none at or after `until_ms` (exclusive, if set; as the execution listings). Looks back
  // at most `max_days` days from `until_ms` or now, whichever is earlier.
  absl::StatusOr<std::vector<LedgerEvent>> ReadAudit(int limit, std::optional<int64_t> since_ms,
                                                     std::optional<int64_t> until_ms = std::nullopt, int max_days = 31);

  static std::string Hash(std::string_view prev_hash, const LedgerEvent& e);
  // kDataLoss naming the first event whose seq, link or hash is wrong, or that expires apart from its
  // chain (it would leave a hole when it goes). The chain's expiry is the one its anchor holds
  // (`anchor_name`: "record", "head item"), not any event's, so an event whose ttl was changed is the
  // one named; when every event agrees with the others but not with the anchor, the anchor is. The
  // overload without it takes the first event's, for a chain read without its anchor.
  static absl::Status VerifyChain(const std::vector<LedgerEvent>& events, int64_t expires_at_s,
                                  std::string_view anchor_name);
  static absl::Status VerifyChain(const std::vector<LedgerEvent>& events);

 private:
  absl::StatusOr<Tail> ReadTail(const std::string& chain);
  // Fills in seq, time, actor and links; `canonical` says `data` is already canonical JSON text, so
  // the hash needs no parse of it.
  std::pair<store::WriteRequest, LedgerEvent> Prepare(const std::string& chain, const Tail& tail, std::string_view type,
                                                      std::string_view actor, std::string data, bool canonical) const;
  LedgerEvent Make(const Tail& tail, std::string_view type, std::string_view actor, std::string data,
                   bool canonical) const;

  store::ItemStore& store_;
  const Clock& clock_;
  const LedgerRetention retention_;
};

// Lowercase hex SHA-256.
std::string Sha256Hex(std::string_view data);

}  // namespace toolgate
