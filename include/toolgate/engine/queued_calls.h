#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/config.h"
#include "toolgate/domain/outcome.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/services/callback_outbox.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/intent_store.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/queue_service.h"

namespace toolgate {

// Ending queued calls that nobody runs (design §15, §17.5): a deadline that passed (EXPIRED,
// EXECUTION_EXPIRED), a tenant's cancel (EXPIRED, EXECUTION_CANCELLED), an operator's purge
// (EXPIRED, EXECUTION_EXPIRED reason purged). Each is decided by one conditional write — the item
// is erased only while no live claim holds it — and only then are the event and the record written
// (one transaction on SQLite), so a call being run is never also ended here.
//
// Thread-safe. Status codes: store errors; kNotFound / kFailedPrecondition from Cancel.
class QueuedCalls {
 public:
  QueuedCalls(store::ItemStore& store, const Clock& clock, const Config& config, QueueService& queue,
              ExecutionStore& executions, Ledger& ledger, IntentStore& intents, Metrics& metrics);

  // Ends `item` EXPIRED with `reason` (the event EXECUTION_CANCELLED for kCancelled, else
  // EXECUTION_EXPIRED): removes it unless claimed, then ends its record (read again while a put-back
  // that raced the removal moves its chain). False when it is claimed (running), gone, or its record
  // was ended by someone else. Never a call whose run started (its record RUNNING, though no live
  // claim holds it any more: its dispatcher died): EXPIRED says "never run", and it may have reached
  // the downstream; it is left, untouched, for a dispatcher to take over (§15: the re-run carries the
  // same Idempotency-Key), and `*started` (when given) is set.
  absl::StatusOr<bool> End(const QueueItem& item, std::string_view actor, ExpiryReason reason, bool* started = nullptr);

  // How long a cancel or a purge waits for the claims it met to be settled. A dispatcher that claimed
  // a call just as its breaker opened puts it back within milliseconds; one that is running it holds
  // the claim until the downstream answers.
  static constexpr std::chrono::milliseconds kClaimSettle{2000};

  // DELETE /v1/executions/{id} (§17.5): the tenant's own QUEUED call. kNotFound: no such execution
  // for this tenant; kFailedPrecondition: it is not waiting (running or ended), or a dispatcher still
  // held its claim after `settle`. A claim that ends in a put-back (its breaker had opened) is waited
  // for and the call ended all the same. The record as ended.
  absl::StatusOr<ExecutionRecord> Cancel(std::string_view tenant_id, std::string_view execution_id,
                                         std::string_view actor, std::chrono::milliseconds settle = kClaimSettle);

  // What a purge did: `purged` calls ended EXPIRED; `running` calls a dispatcher still held a claim on
  // when the purge gave up waiting for them (they run to their end).
  struct PurgeResult {
    int purged = 0;
    int running = 0;
  };

  // DELETE /admin/connectors/{id}/queue: ends every queued call of the connector that no dispatcher
  // holds. A call that was claimed when the purge reached it is looked at again until `settle` has
  // passed: if it was put back (its breaker had opened) it is ended too, so a purge racing a
  // put-back never leaves a call QUEUED; if it is still claimed then, it counts as `running`.
  absl::StatusOr<PurgeResult> Purge(std::string_view connector_id, std::string_view actor,
                                    std::chrono::milliseconds settle = kClaimSettle);

  // Ends a claimed callback delivery (§15): appends `event` (CALLBACK_DELIVERED or CALLBACK_FAILED)
  // with `data` to the execution's chain, moves the record's anchor and removes the delivery, in one
  // batch (the event first: a chain conflict changes nothing and the delivery stays to be made
  // again). False when the claim was lost meanwhile (the event is then recorded all the same: the
  // receiver got the body). A delivery whose record is gone is just removed.
  absl::StatusOr<bool> EndCallback(const CallbackDelivery& claimed, std::string_view event, const nlohmann::json& data);

  // The allowed clock skew for claims on `connector_id`'s queue (its slots' max_clock_skew_s).
  int SkewS(std::string_view connector_id) const;

 private:
  // The reason's event on the execution's chain and the record EXPIRED with `reason`, conditional on
  // the chain head `rec` was read at; `rec` becomes the ended record.
  std::vector<store::WriteRequest> EndRecordRequests(ExecutionRecord& rec, std::string_view actor, ExpiryReason reason,
                                                     int64_t now_ms);

  store::ItemStore& store_;
  const Clock& clock_;
  const Config& config_;
  QueueService& queue_;
  ExecutionStore& executions_;
  Ledger& ledger_;
  IntentStore& intents_;
  Metrics& metrics_;
};

}  // namespace toolgate
