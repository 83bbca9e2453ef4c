#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate {

// One callback still to deliver (design §15, §17.5): a queued call with a `callback_url` ended, and
// its final execution view is owed to that URL. Kept in the store until it is delivered or given up,
// so it survives restarts and any instance may deliver it.
struct CallbackDelivery {
  std::string execution_id;
  std::string tenant_id;
  std::string connector_id;
  std::string url;
  int64_t due_ms = 0;            // not attempted before this (0: at once)
  int64_t first_attempt_ms = 0;  // 0: never attempted; the retry window counts from here
  int64_t attempts = 0;          // claims so far
  std::string last_error;        // the last attempt's failure, for operators
  std::string claim_owner;       // empty: not claimed
  int64_t claim_expires_ms = 0;

  // The id the receiver deduplicates by: the same for every attempt (one per execution).
  std::string delivery_id() const { return "dlv_" + execution_id; }
};

// The pending callbacks (design §15): one item per execution,
//
//   (CALLBACKS, CB#<execution_id>)
//
// written in the same batch that ends the queued call (QueueService adds it after the queue item's
// erase), so a call that ended has its delivery recorded or is not ended at all. Execution ids are
// UUIDv7: the partition reads oldest first. Claims are leases written into the item, as for queue
// items; a claim whose lease ran out is taken over, so a delivery in flight when its instance died
// is made again (at least once: receivers deduplicate by the delivery id).
//
// Thread-safe. Status codes: store errors; kDataLoss for an item it did not write.
class CallbackOutbox {
 public:
  // A claim expired `max_clock_skew_s` ago by this host's clock may be taken over (as a slot's, S7).
  CallbackOutbox(store::ItemStore& store, const Clock& clock, int max_clock_skew_s);

  static store::ItemKey Key(std::string_view execution_id);

  // The write that records a delivery owed for a queued call that ends now. Unconditional: a
  // second end of the same execution (there is none: one final per execution) would only restart
  // its delivery. `ttl_s` (epoch seconds) lets a delivery nobody works go eventually.
  static store::WriteRequest AddRequest(std::string_view execution_id, std::string_view tenant_id,
                                        std::string_view connector_id, std::string_view url, int64_t ttl_s);

  // Up to `limit` deliveries due at `now`, claimable (unclaimed, or the lease has run out) and
  // `wanted`, examining at most `scan_limit` pending items. The scan goes on where the last one
  // stopped and wraps at the partition's end, so every pending item is looked at within
  // ceil(pending / scan_limit) calls, however many older ones wait out a backoff: a tenant whose
  // receiver fails cannot hide the deliveries behind its own (oldest first within one pass).
  absl::StatusOr<std::vector<CallbackDelivery>> Due(
      int limit, absl::FunctionRef<bool(const CallbackDelivery&)> wanted = [](const CallbackDelivery&) { return true; },
      int scan_limit = 1000);

  // One conditional write: claims `seen` for `lease_ms` if nobody has since (same `attempts`), and
  // sets first_attempt_ms when it is the first. nullopt: lost.
  absl::StatusOr<std::optional<CallbackDelivery>> Claim(const CallbackDelivery& seen, std::string_view owner,
                                                        int64_t lease_ms);

  // The write that removes a delivery this claim still holds (delivered, or given up).
  static store::WriteRequest DoneRequest(const CallbackDelivery& claimed);

  // Gives a claimed delivery back, unclaimed, due at `due_ms`, with its failure; false when the
  // claim was lost meanwhile.
  absl::StatusOr<bool> Retry(const CallbackDelivery& claimed, int64_t due_ms, std::string_view error);

  // Pending deliveries (counted up to `limit`).
  absl::StatusOr<int64_t> Pending(int limit = 10'000);

  static absl::StatusOr<CallbackDelivery> FromItem(const store::Item& item);

 private:
  store::ItemStore& store_;
  const Clock& clock_;
  const int64_t skew_ms_;
  absl::Mutex cursor_mu_;
  std::optional<std::string> cursor_ ABSL_GUARDED_BY(cursor_mu_);  // the last item examined; nullopt: the start
};

}  // namespace toolgate
