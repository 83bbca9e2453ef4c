#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// One queued call as its connector's queue holds it (design §15, §17.4). The call itself — tool,
// input, idempotency key — lives in its execution record; the queue item only orders and claims it,
// so it stays small (one write unit on DynamoDB).
struct QueueItem {
  std::string connector_id;
  std::string tenant_id;
  std::string execution_id;
  std::string tool_name;    // with action_type: what a dispatcher checks kill switches against
  std::string action_type;  // before it takes a slot (§17.4), without reading the record
  int64_t enqueued_at_ms = 0;
  int64_t ready_at_ms = 0;  // not dispatched before this (a Retry-After, an open breaker)
  int64_t deadline_ms = 0;  // still queued then: EXPIRED, never run
  int64_t attempt = 0;      // claims so far
  std::string claim_owner;  // empty: not claimed
  int64_t claim_expires_ms = 0;
  std::string callback_url;  // empty: none; else its end owes a delivery (CallbackOutbox)

  // True when a dispatcher may claim it at `now_ms`: unclaimed, or its claim's lease (plus the
  // allowed clock skew) has run out.
  bool Claimable(int64_t now_ms, int max_clock_skew_s) const;
  // Claimable and due: its ready_at has come, or its deadline has passed (then it is due to end
  // EXPIRED, whatever its ready_at).
  bool Ready(int64_t now_ms, int max_clock_skew_s) const {
    return Claimable(now_ms, max_clock_skew_s) && (ready_at_ms <= now_ms || (deadline_ms > 0 && deadline_ms <= now_ms));
  }
};

// A claim this instance holds on a queue item: the item as the claim wrote it.
struct QueueClaim {
  QueueItem item;
  // The item was claimed before by someone whose lease ran out (a crashed or stuck instance): the
  // run may have reached the downstream already (§17.3 `claim_expired`).
  bool took_over = false;
};

struct QueueStats {
  int64_t depth = 0;               // queued calls (claimed or not), summed over tenants
  int64_t oldest_enqueued_ms = 0;  // 0: empty
  int tenants = 0;
};

// The per-connector queues on the store (design §15, §17.4). Layout:
//
//   queue item    (QUEUE#<connector>#<tenant>, ITEM#<enqueued_at_ms, 13 digits>#<execution_id>)
//   tenant entry  (QUEUES#<connector>, TENANT#<tenant>) with `count`: the tenant's queued calls
//
// One queue per (connector, tenant), so the oldest ready call of a tenant is the head of one Query
// (DynamoDB) or one indexed range read (SQLite), and a per-connector list of the tenants that have
// queued calls, which dispatchers serve in turn (one call per tenant per round, §17.4).
//
// Items are ordered by enqueue time; `ready_at_ms` is an attribute, not the sort key, so putting an
// item back with a later `ready_at_ms` (a Retry-After) is one conditional single-item write — moving
// it to a new sort key would be two writes with no transaction between them, and a crash between
// them would leave the call queued twice or not at all. Items not ready yet are skipped by the
// reader (they are rare at a queue's head: a Retry-After holds the whole connector).
//
// A claim is a lease written into the item (`claim_owner`, `claim_expires_ms`, `attempt` + 1), by
// one conditional write on the `attempt` the claimant read, so of several claimants exactly one wins;
// a claim whose lease has passed (plus `max_clock_skew_s`, as for slots, S7) may be taken over.
// Completing, putting back and removing are conditional on the claim (or on there being no live
// claim), so an instance that lost its claim changes nothing.
//
// A tenant's `count` is kept by conditional ADDs beside the items (no write spans two items), so it
// can drift from them: a count-down sent again after an unknown first outcome may apply twice (too
// low), and an item removed by its TTL, or one whose count-down was given up, leaves it too high.
// Neither is left to stand. Too low matters most: at zero the tenant would drop out of the list with
// calls still queued, never dispatched — so Tenants() counts the queue of an entry at zero or below
// before dropping it: an entry with calls queued is kept and its count set to them, one below zero
// over an empty queue is set to zero (and dropped at a later look: dropped at once, an enqueue whose
// ADD had only brought it back to zero would lose its entry), and only one at zero over an empty
// queue is dropped. Too high is set right by Stats(repair_counts = true), the dispatchers' periodic
// read, once every such read for kCountRepairAfterMs has seen the tenant's queue empty under the
// same count (one read could fall between an enqueue's count and its item, which DynamoDB writes one
// after the other). Each repair is one write conditioned on the count it read, so a count that moved
// meanwhile is left for the next look. Left: a call enqueued and ended between a repair's count and
// its write leaves the count one too high (set right as above); an enqueue stalled longer than
// kCountRepairAfterMs between its two writes has its count taken back, and its call waits for the
// tenant's next enqueue to be listed again.
//
// Thread-safe. Status codes: store errors from ItemStore; kDataLoss for an item it did not write.
class QueueService {
 public:
  QueueService(store::ItemStore& store, const Clock& clock);

  static store::ItemKey ItemKey(std::string_view connector_id, std::string_view tenant_id, int64_t enqueued_at_ms,
                                std::string_view execution_id);
  static store::ItemKey ItemKey(const QueueItem& item) {
    return ItemKey(item.connector_id, item.tenant_id, item.enqueued_at_ms, item.execution_id);
  }
  static store::ItemKey TenantKey(std::string_view connector_id, std::string_view tenant_id);

  // The writes that enqueue `item`, for a batch with the execution's own: [0] counts it against the
  // tenant's bound (refused: the tenant has `max_per_tenant` queued calls — 429 queue_full), [1] the
  // item (only after [0]). `ttl_s` (epoch seconds, 0: none) lets a forgotten item go.
  static std::vector<store::WriteRequest> EnqueueRequests(const QueueItem& item, int max_per_tenant, int64_t ttl_s);
  // The same, alone (tests, tools). False: the tenant's queue is full.
  absl::StatusOr<bool> Enqueue(const QueueItem& item, int max_per_tenant, int64_t ttl_s = 0);

  // The tenants with queued calls on `connector_id`, in key order; entries whose count fell to zero
  // are removed as they are seen, once their queue is found empty (one with calls still queued is
  // listed and its count repaired: see the class comment).
  absl::StatusOr<std::vector<std::string>> Tenants(std::string_view connector_id);

  // The tenant's oldest item that is ready at `now` (unclaimed or with an expired claim), reading
  // from the head in pages; nullopt when none is ready. `scan_limit` bounds the items examined.
  // Items whose execution id is in `skip` are passed over (the ones other workers of this instance
  // are claiming at the moment, so they do not all race for the head).
  absl::StatusOr<std::optional<QueueItem>> NextReady(std::string_view connector_id, std::string_view tenant_id,
                                                     int max_clock_skew_s, int scan_limit = 200,
                                                     const std::vector<std::string>& skip = {});

  // One conditional write: claims `seen` for `owner` for `lease_ms` if nobody claimed it since it was
  // read (same `attempt`) and it is claimable. nullopt: lost (someone else has it, or it is gone).
  absl::StatusOr<std::optional<QueueClaim>> Claim(const QueueItem& seen, std::string_view owner, int64_t lease_ms,
                                                  int max_clock_skew_s);

  // The writes that end a claimed item: [0] erase it if this claim still holds, [1] the tenant's
  // count down (only after [0]), and for an item with a callback_url [2] its delivery
  // (CallbackOutbox::AddRequest, only after [1]).
  static std::vector<store::WriteRequest> CompleteRequests(const QueueClaim& claim);
  // Puts a claimed item back, unclaimed, ready at `ready_at_ms` (if this claim still holds).
  static store::WriteRequest RequeueRequest(const QueueClaim& claim, int64_t ready_at_ms);
  // The same, alone: false when the claim was lost meanwhile.
  absl::StatusOr<bool> Requeue(const QueueClaim& claim, int64_t ready_at_ms);

  // The writes that remove an item nobody runs (cancel, deadline, purge): [0] erase it if it has no
  // live claim at `now_ms`, [1] the tenant's count down (only after [0]), [2] its callback's
  // delivery when it has a callback_url (only after [1]).
  static std::vector<store::WriteRequest> RemoveUnclaimedRequests(const QueueItem& item, int64_t now_ms,
                                                                  int max_clock_skew_s);

  // The item of an execution (its key follows from the record), or nullopt when it is not queued.
  absl::StatusOr<std::optional<QueueItem>> Get(std::string_view connector_id, std::string_view tenant_id,
                                               int64_t enqueued_at_ms, std::string_view execution_id);
  // Up to `limit` items of one tenant's queue, oldest first, claimed or not.
  absl::StatusOr<std::vector<QueueItem>> Items(std::string_view connector_id, std::string_view tenant_id, int limit);

  // Depth (the tenants' counts summed: fleet-wide, one Query) and the oldest item's enqueue time
  // (one more Query per tenant). With `repair_counts`, a count found standing over an empty queue is
  // set to zero (the class comment says when).
  absl::StatusOr<QueueStats> Stats(std::string_view connector_id, bool repair_counts = false);

  // How long a count must stand unchanged over an empty queue before Stats repairs it.
  static constexpr int64_t kCountRepairAfterMs = 30'000;

  static absl::StatusOr<QueueItem> FromItem(const store::Item& item);

  // How long past its end an undelivered callback is kept at most (its TTL): beyond the longest
  // [queue] callback_retry_s.
  static constexpr int64_t kCallbackKeepS = 8 * 86'400;

 private:
  // The live items in a tenant's queue, counted in pages until `at_most` (so a queue beyond
  // kMaxCountedItems is counted as that many); nullopt when kMaxCountPages pages did not reach the
  // end or `at_most` (expired items a store still holds fill pages without counting).
  absl::StatusOr<std::optional<int64_t>> CountItems(std::string_view connector_id, std::string_view tenant_id,
                                                    int64_t at_most);
  // Sets the tenant's count from `seen` to `to` (if it is still `seen`); logs what it did.
  absl::Status RepairCount(std::string_view connector_id, std::string_view tenant_id, int64_t seen, int64_t to,
                           std::string_view why);
  // A count over an empty queue, seen by Stats (`repair_counts`): true when it was seen unchanged
  // kCountRepairAfterMs ago or more (and so is to be repaired).
  bool StandsOverEmpty(std::string_view connector_id, std::string_view tenant_id, int64_t count)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets the counts over an empty queue of `connector_id`'s tenants other than `still` (this
  // read's): a queue that filled again, or an entry gone, starts afresh.
  void ForgetOverEmptyBut(std::string_view connector_id, const std::vector<std::string>& still)
      ABSL_LOCKS_EXCLUDED(mu_);

  static constexpr int64_t kMaxCountedItems = 100'000;
  static constexpr int kMaxCountPages = 200;

  struct OverEmpty {
    int64_t count = 0;
    std::chrono::steady_clock::time_point since;
  };

  store::ItemStore& store_;
  const Clock& clock_;
  absl::Mutex mu_;
  // By connector and tenant ("<connector>\n<tenant>"): counts seen over an empty queue, and since when.
  std::map<std::string, OverEmpty> over_empty_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate
