#include "toolgate/services/callback_outbox.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using store::Attr;
using store::AttributePath;
using store::Condition;
using store::Item;
using store::UpdateOp;
using store::WriteRequest;

namespace {

constexpr char kCallbacksPk[] = "CALLBACKS";
constexpr char kSkPrefix[] = "CB#";
constexpr char kDeliveryOwner[] = "claim_owner";
constexpr char kDeliveryExpires[] = "claim_expires_ms";
constexpr char kAttempts[] = "attempts";
constexpr char kDue[] = "due_ms";
constexpr char kFirst[] = "first_attempt_ms";

bool Claimable(const CallbackDelivery& d, int64_t now_ms, int64_t skew_ms) {
  return d.claim_owner.empty() || d.claim_expires_ms <= now_ms - skew_ms;
}

}  // namespace

CallbackOutbox::CallbackOutbox(store::ItemStore& store, const Clock& clock, int max_clock_skew_s)
    : store_(store), clock_(clock), skew_ms_(int64_t{max_clock_skew_s} * 1000) {}

store::ItemKey CallbackOutbox::Key(std::string_view execution_id) {
  return {kCallbacksPk, absl::StrCat(kSkPrefix, std::string(execution_id))};
}

WriteRequest CallbackOutbox::AddRequest(std::string_view execution_id, std::string_view tenant_id,
                                        std::string_view connector_id, std::string_view url, int64_t ttl_s) {
  Item item{{"execution_id", std::string(execution_id)},
            {"tenant_id", std::string(tenant_id)},
            {"connector_id", std::string(connector_id)},
            {"url", std::string(url)},
            {kDue, int64_t{0}},
            {kAttempts, int64_t{0}}};
  if (ttl_s > 0) item.emplace(std::string(store::kTtlAttribute), ttl_s);
  return WriteRequest::Put(Key(execution_id), std::move(item), Condition::Always());
}

absl::StatusOr<CallbackDelivery> CallbackOutbox::FromItem(const Item& item) {
  CallbackDelivery d;
  auto s = [&](const char* n) { return store::GetString(item, n).value_or(""); };
  d.execution_id = s("execution_id");
  d.tenant_id = s("tenant_id");
  d.url = s("url");
  if (d.execution_id.empty() || d.tenant_id.empty() || d.url.empty()) {
    return absl::DataLossError("callback item without execution, tenant or url");
  }
  d.connector_id = s("connector_id");
  d.due_ms = store::GetInt(item, kDue).value_or(0);
  d.first_attempt_ms = store::GetInt(item, kFirst).value_or(0);
  d.attempts = store::GetInt(item, kAttempts).value_or(0);
  d.last_error = s("last_error");
  d.claim_owner = s(kDeliveryOwner);
  d.claim_expires_ms = store::GetInt(item, kDeliveryExpires).value_or(0);
  return d;
}

absl::StatusOr<std::vector<CallbackDelivery>> CallbackOutbox::Due(
    int limit, absl::FunctionRef<bool(const CallbackDelivery&)> wanted, int scan_limit) {
  const int64_t now_ms = clock_.now_epoch_ms();
  absl::MutexLock lock(&cursor_mu_);  // one scan at a time moves the cursor
  const std::optional<std::string> start = cursor_;
  std::vector<CallbackDelivery> out;
  int seen = 0;
  // From the cursor to the partition's end, then (when the scan began past the start) from the
  // start up to where it began.
  for (int pass = 0; pass < (start ? 2 : 1) && seen < scan_limit && static_cast<int>(out.size()) < limit; ++pass) {
    store::QueryRequest q{kCallbacksPk, kSkPrefix, std::clamp(scan_limit - seen, 1, 200),
                          pass == 0 ? start : std::nullopt, false};
    bool wrapped = false;  // pass 1 reached what pass 0 began after
    while (!wrapped && seen < scan_limit && static_cast<int>(out.size()) < limit) {
      ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
      for (const auto& [sk, item] : p.items) {
        if (pass == 1 && sk > *start) {
          wrapped = true;
          break;
        }
        ++seen;
        cursor_ = sk;
        ASSIGN_OR_RETURN(CallbackDelivery d, FromItem(item));
        if (d.due_ms <= now_ms && Claimable(d, now_ms, skew_ms_) && wanted(d)) out.push_back(std::move(d));
        if (static_cast<int>(out.size()) >= limit || seen >= scan_limit) break;
      }
      if (wrapped || static_cast<int>(out.size()) >= limit || seen >= scan_limit) break;
      if (!p.last_sk) {
        if (pass == 0) cursor_.reset();  // the end: the next pass (or scan) begins at the start
        break;
      }
      q.after = p.last_sk;
      q.limit = std::clamp(scan_limit - seen, 1, 200);
    }
  }
  return out;
}

absl::StatusOr<std::optional<CallbackDelivery>> CallbackOutbox::Claim(const CallbackDelivery& seen,
                                                                      std::string_view owner, int64_t lease_ms) {
  const int64_t now_ms = clock_.now_epoch_ms();
  std::vector<UpdateOp> ops = {UpdateOp::Set(Attr(kDeliveryOwner), std::string(owner)),
                               UpdateOp::Set(Attr(kDeliveryExpires), now_ms + lease_ms),
                               UpdateOp::Set(Attr(kAttempts), seen.attempts + 1)};
  if (seen.first_attempt_ms == 0) ops.push_back(UpdateOp::Set(Attr(kFirst), now_ms));
  ASSIGN_OR_RETURN(
      store::WriteResult r,
      store_.Update(Key(seen.execution_id), std::move(ops),
                    Condition::And({Condition::ItemExists(), Condition::Eq(Attr(kAttempts), seen.attempts),
                                    Condition::Or({Condition::NotExists(Attr(kDeliveryOwner)),
                                                   Condition::Le(Attr(kDeliveryExpires), now_ms - skew_ms_)})})));
  if (!r.applied) return std::optional<CallbackDelivery>();
  ASSIGN_OR_RETURN(CallbackDelivery claimed, FromItem(r.item));
  return std::optional<CallbackDelivery>(std::move(claimed));
}

WriteRequest CallbackOutbox::DoneRequest(const CallbackDelivery& claimed) {
  return WriteRequest::Erase(Key(claimed.execution_id),
                             Condition::And({Condition::Eq(Attr(kDeliveryOwner), claimed.claim_owner),
                                             Condition::Eq(Attr(kAttempts), claimed.attempts)}));
}

absl::StatusOr<bool> CallbackOutbox::Retry(const CallbackDelivery& claimed, int64_t due_ms, std::string_view error) {
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update(Key(claimed.execution_id),
                                 {UpdateOp::Remove(Attr(kDeliveryOwner)), UpdateOp::Remove(Attr(kDeliveryExpires)),
                                  UpdateOp::Set(Attr(kDue), due_ms),
                                  UpdateOp::Set(Attr("last_error"), std::string(error.substr(0, 200)))},
                                 Condition::And({Condition::Eq(Attr(kDeliveryOwner), claimed.claim_owner),
                                                 Condition::Eq(Attr(kAttempts), claimed.attempts)}),
                                 store::ReturnValues::kNone));
  return r.applied;
}

absl::StatusOr<int64_t> CallbackOutbox::Pending(int limit) {
  int64_t n = 0;
  store::QueryRequest q{kCallbacksPk, kSkPrefix, 500, std::nullopt, false};
  while (n < limit) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    n += static_cast<int64_t>(p.items.size());
    if (!p.last_sk) break;
    q.after = p.last_sk;
  }
  return n;
}

}  // namespace toolgate
