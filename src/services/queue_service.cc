#include "toolgate/services/queue_service.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/services/callback_outbox.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using store::Attr;
using store::AttributePath;
using store::Condition;
using store::Item;
using store::UpdateOp;
using store::WriteRequest;

namespace {

constexpr char kClaimOwner[] = "claim_owner";
constexpr char kClaimExpires[] = "claim_expires_ms";
constexpr char kAttempt[] = "attempt";
constexpr char kReadyAt[] = "ready_at_ms";
constexpr char kCount[] = "count";
constexpr char kItemPrefix[] = "ITEM#";
constexpr char kTenantPrefix[] = "TENANT#";

std::string QueuePk(std::string_view connector_id, std::string_view tenant_id) {
  return absl::StrCat("QUEUE#", std::string(connector_id), "#", std::string(tenant_id));
}
std::string TenantsPk(std::string_view connector_id) { return absl::StrCat("QUEUES#", std::string(connector_id)); }

// No live claim at `now_ms`: never claimed, or its lease (plus the skew) has run out.
Condition NoLiveClaim(int64_t now_ms, int max_clock_skew_s) {
  return Condition::Or({Condition::NotExists(Attr(kClaimOwner)),
                        Condition::Le(Attr(kClaimExpires), now_ms - int64_t{max_clock_skew_s} * 1000)});
}

// This claim still holds the item.
Condition StillMine(const QueueClaim& claim) {
  return Condition::And(
      {Condition::Eq(Attr(kClaimOwner), claim.item.claim_owner), Condition::Eq(Attr(kAttempt), claim.item.attempt)});
}

WriteRequest CountDown(const QueueItem& item) {
  return WriteRequest::Update(QueueService::TenantKey(item.connector_id, item.tenant_id),
                              {UpdateOp::Add(Attr(kCount), -1)}, Condition::Exists(Attr(kCount)),
                              store::ReturnValues::kNone)
      .AfterPrevious();
}

// The delivery an item with a callback owes once it ends (only if its end was written).
void AddCallback(const QueueItem& item, int64_t now_ms, std::vector<WriteRequest>& writes) {
  if (item.callback_url.empty()) return;
  writes.push_back(CallbackOutbox::AddRequest(item.execution_id, item.tenant_id, item.connector_id, item.callback_url,
                                              now_ms / 1000 + QueueService::kCallbackKeepS)
                       .AfterPrevious());
}

}  // namespace

bool QueueItem::Claimable(int64_t now_ms, int max_clock_skew_s) const {
  return claim_owner.empty() || claim_expires_ms + int64_t{max_clock_skew_s} * 1000 <= now_ms;
}

QueueService::QueueService(store::ItemStore& store, const Clock& clock) : store_(store), clock_(clock) {}

store::ItemKey QueueService::ItemKey(std::string_view connector_id, std::string_view tenant_id, int64_t enqueued_at_ms,
                                     std::string_view execution_id) {
  char at[24];
  std::snprintf(at, sizeof at, "%013lld", static_cast<long long>(enqueued_at_ms));
  return {QueuePk(connector_id, tenant_id), absl::StrCat(kItemPrefix, at, "#", std::string(execution_id))};
}

store::ItemKey QueueService::TenantKey(std::string_view connector_id, std::string_view tenant_id) {
  return {TenantsPk(connector_id), absl::StrCat(kTenantPrefix, std::string(tenant_id))};
}

absl::StatusOr<QueueItem> QueueService::FromItem(const Item& item) {
  QueueItem q;
  auto s = [&](const char* n) { return store::GetString(item, n).value_or(""); };
  q.connector_id = s("connector_id");
  q.tenant_id = s("tenant_id");
  q.execution_id = s("execution_id");
  if (q.connector_id.empty() || q.tenant_id.empty() || q.execution_id.empty()) {
    return absl::DataLossError("queue item without connector, tenant or execution id");
  }
  q.tool_name = s("tool_name");
  q.action_type = s("action_type");
  q.enqueued_at_ms = store::GetInt(item, "enqueued_at_ms").value_or(0);
  q.ready_at_ms = store::GetInt(item, kReadyAt).value_or(0);
  q.deadline_ms = store::GetInt(item, "deadline_ms").value_or(0);
  q.attempt = store::GetInt(item, kAttempt).value_or(0);
  q.claim_owner = s(kClaimOwner);
  q.claim_expires_ms = store::GetInt(item, kClaimExpires).value_or(0);
  q.callback_url = s("callback_url");
  return q;
}

std::vector<WriteRequest> QueueService::EnqueueRequests(const QueueItem& q, int max_per_tenant, int64_t ttl_s) {
  std::vector<WriteRequest> writes;
  writes.push_back(WriteRequest::Update(
      TenantKey(q.connector_id, q.tenant_id),
      {UpdateOp::Add(Attr(kCount), 1), UpdateOp::Set(Attr("tenant_id"), q.tenant_id)},
      Condition::Or({Condition::NotExists(Attr(kCount)), Condition::Lt(Attr(kCount), int64_t{max_per_tenant})}),
      store::ReturnValues::kNone));
  Item item{{"connector_id", q.connector_id},
            {"tenant_id", q.tenant_id},
            {"execution_id", q.execution_id},
            {"enqueued_at_ms", q.enqueued_at_ms},
            {kReadyAt, q.ready_at_ms},
            {"deadline_ms", q.deadline_ms},
            {kAttempt, q.attempt},
            {"tool_name", q.tool_name},
            {"action_type", q.action_type}};
  if (!q.callback_url.empty()) item.emplace("callback_url", q.callback_url);
  if (ttl_s > 0) item.emplace(std::string(store::kTtlAttribute), ttl_s);
  writes.push_back(WriteRequest::Put(ItemKey(q), std::move(item), Condition::ItemAbsent()).AfterPrevious());
  return writes;
}

absl::StatusOr<bool> QueueService::Enqueue(const QueueItem& item, int max_per_tenant, int64_t ttl_s) {
  const auto results = store_.WriteBatch(EnqueueRequests(item, max_per_tenant, ttl_s));
  for (const auto& r : results) {
    if (!r.ok()) return r.status();
  }
  if (!results[0]->applied) return false;
  if (!results[1]->applied)
    return absl::AlreadyExistsError(absl::StrCat("execution ", item.execution_id, " is queued already"));
  return true;
}

absl::StatusOr<std::vector<std::string>> QueueService::Tenants(std::string_view connector_id) {
  std::vector<std::string> tenants;
  store::QueryRequest q{TenantsPk(connector_id), kTenantPrefix, 500, std::nullopt, false};
  for (int page = 0; page < 1000; ++page) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (const auto& [sk, item] : p.items) {
      const std::string tenant = sk.substr(sizeof(kTenantPrefix) - 1);
      const int64_t count = store::GetInt(item, kCount).value_or(0);
      if (count > 0) {
        tenants.push_back(tenant);
        continue;
      }
      // Emptied — or counted down twice with calls still queued (see the class comment): those are
      // dispatched, and the count set to them. What cannot be read or counted is listed as it is (a
      // tenant listed with nothing to dispatch costs a read; one dropped with calls queued strands them).
      absl::StatusOr<std::optional<int64_t>> queued = CountItems(connector_id, tenant, kMaxCountedItems);
      if (!queued.ok() || !queued->has_value()) {
        if (!queued.ok()) {
          spdlog::warn("queue of {}: tenant {}'s count is {} and its queue could not be read: {}", connector_id, tenant,
                       count, queued.status().ToString());
        }
        tenants.push_back(tenant);
        continue;
      }
      if (**queued > 0 || count < 0) {
        // A count below zero is set to zero first and the entry dropped at a later look: dropped at
        // once, an enqueue whose ADD only brought the count back to zero would lose its entry.
        if (absl::Status repaired = RepairCount(connector_id, tenant, count, **queued,
                                                **queued > 0 ? "calls still queued" : "its queue is empty");
            !repaired.ok()) {
          spdlog::warn("queue of {}: tenant {}'s count not repaired: {}", connector_id, tenant, repaired.ToString());
        }
        if (**queued > 0) tenants.push_back(tenant);
        continue;
      }
      // Drop the entry unless a call was queued meanwhile (its ADD raised the count first).
      ASSIGN_OR_RETURN(
          store::WriteResult r,
          store_.Erase({q.pk, sk}, Condition::And({Condition::ItemExists(), Condition::Eq(Attr(kCount), 0)})));
      (void)r;
    }
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  return tenants;
}

absl::StatusOr<std::optional<int64_t>> QueueService::CountItems(std::string_view connector_id,
                                                                std::string_view tenant_id, int64_t at_most) {
  int64_t n = 0;
  store::QueryRequest q{QueuePk(connector_id, tenant_id), kItemPrefix,
                        static_cast<int>(std::clamp<int64_t>(at_most, 1, 1000)), std::nullopt, false};
  for (int page = 0; page < kMaxCountPages; ++page) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    n += static_cast<int64_t>(p.items.size());
    if (!p.last_sk || n >= at_most) return std::optional<int64_t>(n);
    q.after = p.last_sk;
  }
  return std::optional<int64_t>();
}

absl::Status QueueService::RepairCount(std::string_view connector_id, std::string_view tenant_id, int64_t seen,
                                       int64_t to, std::string_view why) {
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update(TenantKey(connector_id, tenant_id), {UpdateOp::Set(Attr(kCount), to)},
                                 Condition::And({Condition::ItemExists(), Condition::Eq(Attr(kCount), seen)}),
                                 store::ReturnValues::kNone));
  if (r.applied) {
    spdlog::warn(
        "queue of {}: tenant {}'s count was {} with {} queued call(s) ({}): set to {} connector={} "
        "event=queue_count_repaired tenant={} from={} to={}",
        connector_id, tenant_id, seen, to, why, to, connector_id, tenant_id, seen, to);
  }
  return absl::OkStatus();
}

bool QueueService::StandsOverEmpty(std::string_view connector_id, std::string_view tenant_id, int64_t count) {
  const auto now = clock_.now_monotonic();
  const std::string key = absl::StrCat(std::string(connector_id), "\n", std::string(tenant_id));
  absl::MutexLock l(&mu_);
  auto [it, fresh] = over_empty_.try_emplace(key, OverEmpty{count, now});
  if (fresh || it->second.count != count) {
    it->second = OverEmpty{count, now};
    return false;
  }
  if (now - it->second.since < std::chrono::milliseconds(kCountRepairAfterMs)) return false;
  over_empty_.erase(it);
  return true;
}

void QueueService::ForgetOverEmptyBut(std::string_view connector_id, const std::vector<std::string>& still) {
  const std::string prefix = absl::StrCat(std::string(connector_id), "\n");
  absl::MutexLock l(&mu_);
  std::erase_if(over_empty_, [&](const auto& entry) {
    const std::string& key = entry.first;
    if (key.compare(0, prefix.size(), prefix) != 0) return false;
    return std::find(still.begin(), still.end(), key.substr(prefix.size())) == still.end();
  });
}

absl::StatusOr<std::optional<QueueItem>> QueueService::NextReady(std::string_view connector_id,
                                                                 std::string_view tenant_id, int max_clock_skew_s,
                                                                 int scan_limit, const std::vector<std::string>& skip) {
  const int64_t now_ms = clock_.now_epoch_ms();
  store::QueryRequest q{QueuePk(connector_id, tenant_id), kItemPrefix, std::min(scan_limit, 50), std::nullopt, false};
  int seen = 0;
  while (seen < scan_limit) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (const auto& [sk, item] : p.items) {
      ++seen;
      ASSIGN_OR_RETURN(QueueItem qi, FromItem(item));
      if (!qi.Ready(now_ms, max_clock_skew_s)) continue;
      if (std::find(skip.begin(), skip.end(), qi.execution_id) != skip.end()) continue;
      return std::optional<QueueItem>(std::move(qi));
    }
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  return std::optional<QueueItem>();
}

absl::StatusOr<std::optional<QueueClaim>> QueueService::Claim(const QueueItem& seen, std::string_view owner,
                                                              int64_t lease_ms, int max_clock_skew_s) {
  const int64_t now_ms = clock_.now_epoch_ms();
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update(ItemKey(seen),
                                 {UpdateOp::Set(Attr(kClaimOwner), std::string(owner)),
                                  UpdateOp::Set(Attr(kClaimExpires), now_ms + lease_ms),
                                  UpdateOp::Set(Attr(kAttempt), seen.attempt + 1)},
                                 Condition::And({Condition::ItemExists(), Condition::Eq(Attr(kAttempt), seen.attempt),
                                                 NoLiveClaim(now_ms, max_clock_skew_s)})));
  if (!r.applied) return std::optional<QueueClaim>();
  ASSIGN_OR_RETURN(QueueItem claimed, FromItem(r.item));
  return std::optional<QueueClaim>(QueueClaim{std::move(claimed), !seen.claim_owner.empty()});
}

std::vector<WriteRequest> QueueService::CompleteRequests(const QueueClaim& claim) {
  std::vector<WriteRequest> writes;
  writes.push_back(WriteRequest::Erase(ItemKey(claim.item), StillMine(claim)));
  writes.push_back(CountDown(claim.item));
  AddCallback(claim.item, claim.item.claim_expires_ms, writes);
  return writes;
}

WriteRequest QueueService::RequeueRequest(const QueueClaim& claim, int64_t ready_at_ms) {
  return WriteRequest::Update(ItemKey(claim.item),
                              {UpdateOp::Remove(Attr(kClaimOwner)), UpdateOp::Remove(Attr(kClaimExpires)),
                               UpdateOp::Set(Attr(kReadyAt), ready_at_ms)},
                              StillMine(claim), store::ReturnValues::kNone);
}

absl::StatusOr<bool> QueueService::Requeue(const QueueClaim& claim, int64_t ready_at_ms) {
  const WriteRequest w = RequeueRequest(claim, ready_at_ms);
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(w.key, w.ops, w.condition, w.returns));
  return r.applied;
}

std::vector<WriteRequest> QueueService::RemoveUnclaimedRequests(const QueueItem& item, int64_t now_ms,
                                                                int max_clock_skew_s) {
  std::vector<WriteRequest> writes;
  writes.push_back(WriteRequest::Erase(
      ItemKey(item), Condition::And({Condition::ItemExists(), NoLiveClaim(now_ms, max_clock_skew_s)})));
  writes.push_back(CountDown(item));
  AddCallback(item, now_ms, writes);
  return writes;
}

absl::StatusOr<std::optional<QueueItem>> QueueService::Get(std::string_view connector_id, std::string_view tenant_id,
                                                           int64_t enqueued_at_ms, std::string_view execution_id) {
  ASSIGN_OR_RETURN(std::optional<Item> item,
                   store_.Get(ItemKey(connector_id, tenant_id, enqueued_at_ms, execution_id)));
  if (!item) return std::optional<QueueItem>();
  ASSIGN_OR_RETURN(QueueItem q, FromItem(*item));
  return std::optional<QueueItem>(std::move(q));
}

absl::StatusOr<std::vector<QueueItem>> QueueService::Items(std::string_view connector_id, std::string_view tenant_id,
                                                           int limit) {
  std::vector<QueueItem> out;
  store::QueryRequest q{QueuePk(connector_id, tenant_id), kItemPrefix, std::clamp(limit, 1, 1000), std::nullopt, false};
  ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
  for (const auto& [sk, item] : p.items) {
    ASSIGN_OR_RETURN(QueueItem qi, FromItem(item));
    out.push_back(std::move(qi));
  }
  return out;
}

absl::StatusOr<QueueStats> QueueService::Stats(std::string_view connector_id, bool repair_counts) {
  QueueStats stats;
  store::QueryRequest q{TenantsPk(connector_id), kTenantPrefix, 500, std::nullopt, false};
  std::vector<std::pair<std::string, int64_t>> tenants;  // with their counts
  for (int page = 0; page < 1000; ++page) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (const auto& [sk, item] : p.items) {
      const int64_t count = store::GetInt(item, kCount).value_or(0);
      if (count <= 0) continue;
      stats.depth += count;
      tenants.emplace_back(sk.substr(sizeof(kTenantPrefix) - 1), count);
    }
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  stats.tenants = static_cast<int>(tenants.size());
  std::vector<std::string> over_empty;
  for (const auto& [tenant, count] : tenants) {
    // Read after the count, so an enqueue between the two shows as a count over an empty queue, not
    // the reverse.
    absl::StatusOr<std::vector<QueueItem>> head = Items(connector_id, tenant, 1);
    if (!head.ok()) {
      if (repair_counts) ForgetOverEmptyBut(connector_id, {});  // seen again from the start
      return head.status();
    }
    if (!head->empty()) {
      if (stats.oldest_enqueued_ms == 0 || head->front().enqueued_at_ms < stats.oldest_enqueued_ms) {
        stats.oldest_enqueued_ms = head->front().enqueued_at_ms;
      }
      continue;
    }
    if (!repair_counts) continue;
    // An empty first page is not an empty queue where expired items are still stored (DynamoDB drops
    // them from a page after its Limit): looked through.
    absl::StatusOr<std::optional<int64_t>> queued = CountItems(connector_id, tenant, 1);
    if (!queued.ok() || *queued != std::optional<int64_t>(0)) continue;
    if (!StandsOverEmpty(connector_id, tenant, count)) {
      over_empty.push_back(tenant);
    } else if (absl::Status repaired = RepairCount(connector_id, tenant, count, 0, "its queue stayed empty");
               !repaired.ok()) {
      spdlog::warn("queue of {}: tenant {}'s count not repaired: {}", connector_id, tenant, repaired.ToString());
    }
  }
  if (repair_counts) ForgetOverEmptyBut(connector_id, over_empty);
  return stats;
}

}  // namespace toolgate
