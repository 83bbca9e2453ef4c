#include "toolgate/engine/queued_calls.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using json = nlohmann::json;

QueuedCalls::QueuedCalls(store::ItemStore& store, const Clock& clock, const Config& config, QueueService& queue,
                         ExecutionStore& executions, Ledger& ledger, IntentStore& intents, Metrics& metrics)
    : store_(store),
      clock_(clock),
      config_(config),
      queue_(queue),
      executions_(executions),
      ledger_(ledger),
      intents_(intents),
      metrics_(metrics) {}

int QueuedCalls::SkewS(std::string_view connector_id) const {
  auto it = config_.connectors.find(std::string(connector_id));
  return it == config_.connectors.end() ? ConcurrencyConfig{}.max_clock_skew_s
                                        : it->second.concurrency.max_clock_skew_s;
}

// The record's end: the reason's event on the execution's chain and the record EXPIRED with `reason`,
// both conditional on the chain head `rec` was read at.
std::vector<store::WriteRequest> QueuedCalls::EndRecordRequests(ExecutionRecord& rec, std::string_view actor,
                                                                ExpiryReason reason, int64_t now_ms) {
  const std::string why(ToString(reason));
  const char* event = reason == ExpiryReason::kCancelled ? "EXECUTION_CANCELLED" : "EXECUTION_EXPIRED";
  auto [w_event, e] = ledger_.PrepareAppendJson(
      Ledger::ExecutionChain(rec.execution_id), {rec.last_seq, rec.last_hash, rec.expires_at_s}, event,
      actor.empty() ? "system" : actor, json{{"reason", why}, {"outcome", Outcome::kExpired}});
  rec.outcome = Outcome::kExpired;
  rec.reason = why;
  rec.finished_at_ms = now_ms;
  rec.last_seq = e.seq;
  rec.last_hash = e.hash;
  std::vector<store::WriteRequest> writes;
  writes.push_back(std::move(w_event));
  writes.push_back(ExecutionStore::FinishRequest(rec).AfterPrevious());
  return writes;
}

absl::StatusOr<bool> QueuedCalls::End(const QueueItem& item, std::string_view actor, ExpiryReason reason,
                                      bool* started) {
  if (started != nullptr) *started = false;
  const int64_t now_ms = clock_.now_epoch_ms();
  std::vector<store::WriteRequest> removal =
      QueueService::RemoveUnclaimedRequests(item, now_ms, SkewS(item.connector_id));
  absl::StatusOr<ExecutionRecord> record = executions_.Get(item.tenant_id, item.execution_id);
  if (record.ok() && record->outcome == Outcome::kRunning) {
    if (started != nullptr) *started = true;
    return false;
  }
  if (absl::IsNotFound(record.status()) || (record.ok() && !IsWaiting(record->outcome))) {
    // A stale item (its record gone with retention, or already ended): just remove it.
    const auto results = store_.WriteBatch(removal);
    return false;
  }
  if (!record.ok()) return record.status();
  ExecutionRecord rec = *record;
  // The item goes first, conditional on nobody holding a claim on it: once it is gone no dispatcher
  // can claim it, so the record's end cannot lose to a run.
  std::vector<store::WriteRequest> writes;
  writes.push_back(std::move(removal[0]));
  for (store::WriteRequest& w : EndRecordRequests(rec, actor, reason, now_ms)) {
    writes.push_back(std::move(w).AfterPrevious());
  }
  for (size_t i = 1; i < removal.size(); ++i) {
    writes.push_back(std::move(removal[i]));  // the tenant's count (and a callback), after the record
  }
  const auto results = store_.WriteBatch(writes);
  if (!results[0].ok()) return results[0].status();
  if (!results[0]->applied) return false;  // claimed meanwhile: it runs
  bool record_ended = true;
  for (size_t i = 1; i < 3; ++i) {
    if (!results[i].ok()) return results[i].status();
    record_ended = record_ended && results[i]->applied;
  }
  // The chain moved between the read and the removal: a dispatcher that had claimed the item put it
  // back (TOOL_ATTEMPT_FAILED) just before it was removed. Nothing can claim it now, so the chain
  // settles: read the record again and end it on its new head, with the tenant's count (and the
  // callback) that were to follow the record's end. Where a batch is not one transaction (memory,
  // DynamoDB) the put-back's record write may still be on its way when its event has landed, and the
  // record read again is the old head: the retries after the first wait 2, 4, ... 64 ms (126 in all)
  // for it to land.
  for (int attempt = 0; !record_ended && attempt < 8; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1 << attempt));
    std::vector<store::WriteRequest> tail =
        QueueService::RemoveUnclaimedRequests(item, now_ms, SkewS(item.connector_id));
    tail.erase(tail.begin());  // the item is gone already
    ASSIGN_OR_RETURN(rec, executions_.Get(item.tenant_id, item.execution_id));
    if (!IsWaiting(rec.outcome)) {
      // Ended by someone else (a claim that outlived its lease): the removed item still leaves the count.
      tail.front().requires_back = 0;
      tail.resize(1);
      const auto counted = store_.WriteBatch(tail);
      return false;
    }
    std::vector<store::WriteRequest> retry = EndRecordRequests(rec, actor, reason, now_ms);
    for (store::WriteRequest& w : tail) retry.push_back(std::move(w));
    const auto retried = store_.WriteBatch(retry);
    record_ended = true;
    for (size_t i = 0; i < 2; ++i) {
      if (!retried[i].ok()) return retried[i].status();
      record_ended = record_ended && retried[i]->applied;
    }
  }
  if (!record_ended) {
    return absl::AbortedError(
        absl::StrCat("execution ", rec.execution_id, ": record not ended (its chain keeps moving)"));
  }
  if (!rec.idempotency_key.empty()) {
    if (absl::Status st = intents_.Release(rec.tenant_id, rec.intent_key, rec.execution_id, std::nullopt); !st.ok()) {
      spdlog::warn("intent {} not released (it expires): {}", rec.intent_key, st.ToString());
    }
  }
  metrics_.ToolCall(rec.connector_id, rec.tool_name, Outcome::kExpired, 0, false);
  return true;
}

absl::StatusOr<bool> QueuedCalls::EndCallback(const CallbackDelivery& claimed, std::string_view event,
                                              const json& data) {
  absl::StatusOr<ExecutionRecord> record = executions_.Get(claimed.tenant_id, claimed.execution_id);
  if (absl::IsNotFound(record.status())) {
    ASSIGN_OR_RETURN(store::WriteResult gone, store_.Erase(CallbackOutbox::DoneRequest(claimed).key,
                                                           CallbackOutbox::DoneRequest(claimed).condition));
    return gone.applied;
  }
  if (!record.ok()) return record.status();
  ExecutionRecord& rec = *record;
  auto [w_event, e] = ledger_.PrepareAppendJson(Ledger::ExecutionChain(rec.execution_id),
                                                {rec.last_seq, rec.last_hash, rec.expires_at_s}, event, "system", data);
  rec.last_seq = e.seq;
  rec.last_hash = e.hash;
  std::vector<store::WriteRequest> writes;
  writes.push_back(std::move(w_event));
  writes.push_back(ExecutionStore::FinishRequest(rec).AfterPrevious());
  writes.push_back(CallbackOutbox::DoneRequest(claimed).AfterPrevious());
  const auto results = store_.WriteBatch(writes);
  for (size_t i = 0; i < 2; ++i) {
    if (!results[i].ok()) return results[i].status();
    if (!results[i]->applied) {
      return absl::AbortedError(
          absl::StrCat("execution ", rec.execution_id, ": its chain moved; the callback's event is retried"));
    }
  }
  if (!results[2].ok()) return results[2].status();
  return results[2]->applied;
}

absl::StatusOr<ExecutionRecord> QueuedCalls::Cancel(std::string_view tenant_id, std::string_view execution_id,
                                                    std::string_view actor, std::chrono::milliseconds settle) {
  auto not_queued = [](const ExecutionRecord& r) {
    return absl::FailedPreconditionError(absl::StrCat("the execution is ", std::string(ToString(r.outcome)), ", not ",
                                                      std::string(ToString(Outcome::kQueued))));
  };
  ASSIGN_OR_RETURN(ExecutionRecord rec, executions_.Get(tenant_id, execution_id));
  if (rec.outcome != Outcome::kQueued) return not_queued(rec);
  // A dispatcher may hold a claim on the call: it either runs it (the record moves to RUNNING) or,
  // finding its breaker open or its switch set, puts it back within milliseconds. Like a purge, the
  // cancel waits for that to settle, so a cancel racing a put-back still ends the call.
  const auto deadline = std::chrono::steady_clock::now() + settle;
  for (;;) {
    ASSIGN_OR_RETURN(std::optional<QueueItem> item,
                     queue_.Get(rec.connector_id, rec.tenant_id, rec.created_at_ms, rec.execution_id));
    if (!item) return absl::FailedPreconditionError("the execution is no longer queued");
    ASSIGN_OR_RETURN(bool ended, End(*item, actor, ExpiryReason::kCancelled));
    if (ended) return executions_.Get(tenant_id, execution_id);
    ASSIGN_OR_RETURN(rec, executions_.Get(tenant_id, execution_id));
    if (rec.outcome != Outcome::kQueued) return not_queued(rec);
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::FailedPreconditionError("the execution is being dispatched");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<QueuedCalls::PurgeResult> QueuedCalls::Purge(std::string_view connector_id, std::string_view actor,
                                                            std::chrono::milliseconds settle) {
  PurgeResult result;
  std::vector<QueueItem> held;  // claimed when reached: looked at again below
  // Ends `item` unless a claim holds it; a held item goes to `held`, a vanished one is dropped.
  auto end_or_hold = [&](const QueueItem& item) -> absl::Status {
    bool started = false;
    ASSIGN_OR_RETURN(bool done, End(item, actor, ExpiryReason::kPurged, &started));
    if (done) {
      ++result.purged;
      return absl::OkStatus();
    }
    if (started) {  // its dispatcher died running it: another takes it over and it ends by itself
      ++result.running;
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(std::optional<QueueItem> now,
                     queue_.Get(item.connector_id, item.tenant_id, item.enqueued_at_ms, item.execution_id));
    if (now && !now->Claimable(clock_.now_epoch_ms(), SkewS(connector_id))) held.push_back(std::move(*now));
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(std::vector<std::string> tenants, queue_.Tenants(connector_id));
  for (const std::string& tenant : tenants) {
    for (int page = 0; page < 100'000; ++page) {
      ASSIGN_OR_RETURN(std::vector<QueueItem> items, queue_.Items(connector_id, tenant, 200));
      const int before = result.purged;
      const size_t held_before = held.size();
      for (const QueueItem& item : items) {
        const bool seen = std::any_of(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(held_before),
                                      [&](const QueueItem& h) { return h.execution_id == item.execution_id; });
        if (seen) continue;
        RETURN_IF_ERROR(end_or_hold(item));
      }
      if (result.purged == before) break;  // empty, or only claimed (running) items left
    }
  }
  // The claims met: a put-back is ended now; a run ends by itself (the item goes with it).
  const auto deadline = std::chrono::steady_clock::now() + settle;
  while (!held.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::vector<QueueItem> again;
    again.swap(held);
    for (const QueueItem& item : again) {
      ASSIGN_OR_RETURN(std::optional<QueueItem> now,
                       queue_.Get(item.connector_id, item.tenant_id, item.enqueued_at_ms, item.execution_id));
      if (!now) continue;
      if (!now->Claimable(clock_.now_epoch_ms(), SkewS(connector_id))) {
        held.push_back(std::move(*now));
        continue;
      }
      RETURN_IF_ERROR(end_or_hold(*now));
    }
  }
  result.running += static_cast<int>(held.size());
  return result;
}

}  // namespace toolgate
