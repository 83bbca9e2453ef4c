#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "toolgate/store/condition.h"
#include "toolgate/store/item.h"

namespace toolgate::store {

// The result of a conditional write. A condition that did not hold is a normal outcome, not an error.
struct WriteResult {
  bool applied = false;  // false: the condition did not hold and nothing was written
  Item item;             // when applied: the item as written (Put, Update); empty for Erase
  static WriteResult ConditionFailed() { return {}; }
};

// A write's result that says it went in: answered, and applied.
inline bool Applied(const absl::StatusOr<WriteResult>& r) { return r.ok() && r->applied; }

// What a write returns (DynamoDB's ReturnValues): the item as written, or nothing (cheaper).
enum class ReturnValues { kAllNew, kNone };

struct QueryRequest {
  std::string pk;
  std::string sk_prefix;             // only items whose sk starts with this
  int limit = 100;                   // at most this many items (1..1000)
  std::optional<std::string> after;  // resume after this sk (exclusive), in the query's direction
  bool descending = false;           // false: ascending sk order
};

struct QueryPage {
  std::vector<std::pair<std::string, Item>> items;  // (sk, item) in the requested order
  std::optional<std::string> last_sk;               // set when more items may follow: pass as `after`
};

// One write of a batch (ItemStore::WriteBatch): a Put, an Update or an Erase with its own condition.
struct WriteRequest {
  enum class Kind { kPut, kUpdate, kErase };
  Kind kind = Kind::kPut;
  ItemKey key;
  Item item;                  // kPut
  std::vector<UpdateOp> ops;  // kUpdate
  Condition condition;
  ReturnValues returns = ReturnValues::kAllNew;
  // Tried only when the request this many places before it in the batch was applied (1: the one just
  // before; 0: not chained); otherwise reported as not applied without being tried. Chains a write to
  // the one it depends on (a ledger anchor to its event, an intent's finish to its record's) on every
  // backend, transactional or not.
  size_t requires_back = 0;
  // A hint, no change to what is written: the item is updated again soon (an execution record, which
  // its call's close updates). A store that decodes an item to update it may keep this one decoded.
  bool updated_soon = false;

  static WriteRequest Put(ItemKey key, Item item, Condition condition, ReturnValues returns = ReturnValues::kAllNew) {
    return {Kind::kPut, std::move(key), std::move(item), {}, std::move(condition), returns};
  }
  static WriteRequest Update(ItemKey key, std::vector<UpdateOp> ops, Condition condition,
                             ReturnValues returns = ReturnValues::kAllNew) {
    return {Kind::kUpdate, std::move(key), {}, std::move(ops), std::move(condition), returns};
  }
  static WriteRequest Erase(ItemKey key, Condition condition) {
    return {Kind::kErase, std::move(key), {}, {}, std::move(condition), ReturnValues::kNone};
  }
  WriteRequest&& AfterPrevious() && { return std::move(*this).AfterEarlier(1); }
  WriteRequest&& AfterEarlier(size_t places_back) && {
    requires_back = places_back;
    return std::move(*this);
  }
};

// Whether `r`, coming after the writes `earlier` answered, is skipped: chained to one of them that
// was not applied.
inline bool ChainBroken(const WriteRequest& r, const std::vector<absl::StatusOr<WriteResult>>& earlier,
                        size_t position) {
  assert(r.requires_back <= position && "a write chained to one before the batch's first");
  return r.requires_back > 0 && (r.requires_back > position || !Applied(earlier[position - r.requires_back]));
}

// A full-table walk for maintenance (`ledger verify`), never on a request path. Paging visits every
// matching item once; the order is (pk, sk) on memory and SQLite but DynamoDB's own across pages.
struct ScanRequest {
  std::string pk_prefix;  // only items whose pk starts with this
  std::string sk_prefix;  // ... and whose sk starts with this
  int limit = 500;        // at most this many items examined per page (1..1000)
  std::optional<ItemKey> after;
};

struct ScanPage {
  std::vector<std::pair<ItemKey, Item>> items;
  std::optional<ItemKey> last_key;  // set when more may follow: pass as `after`
};

// The store port (design section 3): single-item atomic operations on items addressed by (pk, sk),
// modelled on DynamoDB so every adapter implements the same semantics.
//
// Thread-safe: every method may be called from any thread. Status codes returned by every method:
//   kInvalidArgument   the request itself is malformed (e.g. ADD to a string, SET into a missing map);
//   kUnavailable       the backend cannot be reached or is busy / throttled / read-only — retryable;
//   kDataLoss          the backend holds data it cannot decode (corrupt file or item);
//   kInternal          any other backend failure.
// Everything but kInvalidArgument is a store error in the sense of the `on_store_error` policy (S10).
//
// TTL: Get and Query never return an item whose `ttl` has passed. Conditions and updates see an
// expired item until it is swept (as DynamoDB does); a writer that means "absent or expired" says so
// with Condition::ItemAbsentOrExpired.
class ItemStore {
 public:
  virtual ~ItemStore() = default;

  virtual absl::StatusOr<std::optional<Item>> Get(const ItemKey& key) = 0;

  // Replaces the whole item when `condition` holds on the current one.
  virtual absl::StatusOr<WriteResult> Put(const ItemKey& key, const Item& item, const Condition& condition) = 0;

  // Applies `ops` in order when `condition` holds, creating the item if absent (an upsert, as
  // DynamoDB's UpdateItem). With kAllNew the result holds the new item; with kNone it is empty.
  virtual absl::StatusOr<WriteResult> Update(const ItemKey& key, const std::vector<UpdateOp>& ops,
                                             const Condition& condition, ReturnValues returns) = 0;
  absl::StatusOr<WriteResult> Update(const ItemKey& key, const std::vector<UpdateOp>& ops, const Condition& condition) {
    return Update(key, ops, condition, ReturnValues::kAllNew);
  }

  // Deletes the item when `condition` holds. Deleting an absent item with Always() is applied.
  virtual absl::StatusOr<WriteResult> Erase(const ItemKey& key, const Condition& condition) = 0;

  virtual absl::StatusOr<QueryPage> Query(const QueryRequest& request) = 0;

  virtual absl::StatusOr<ScanPage> Scan(const ScanRequest& request) = 0;

  // Several writes, each decided by its own condition, in order (a later write sees the earlier
  // ones). Not atomic as a whole: one result per request. A backend may commit them together (SQLite
  // does: one transaction, one fsync, and no other batch interleaves); the default runs them one by
  // one. A request with `requires_back` is skipped (not applied) when the one it is chained to was not
  // applied or failed.
  virtual std::vector<absl::StatusOr<WriteResult>> WriteBatch(const std::vector<WriteRequest>& requests);

  // "memory", "sqlite", "dynamodb": the `backend` label of store metrics.
  virtual std::string_view backend_name() const = 0;
};

// True for the codes that mean "the store is in trouble" (S10), as opposed to a caller's mistake.
bool IsStoreError(const absl::Status& status);

// A store error after which the adapter knows that nothing of the request was written (SQLite's
// write lock held by another process past the busy timeout: the transaction never began). Without
// the mark a store error's outcome is unknown (a DynamoDB timeout after the request went out), and
// a caller that may have taken something gives it back.
absl::Status MarkNothingWritten(absl::Status status);
bool NothingWritten(const absl::Status& status);

}  // namespace toolgate::store
