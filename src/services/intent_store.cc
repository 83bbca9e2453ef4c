#include "toolgate/services/intent_store.h"

#include "absl/strings/str_cat.h"
#include "toolgate/services/ledger.h"
#include "toolgate/status_macros.h"

namespace toolgate {

using store::Attr;
using store::AttributePath;
using store::Condition;
using store::Item;
using store::UpdateOp;

namespace {

std::optional<IntentStore::State> Parse(std::string_view s) {
  if (s == "IN_PROGRESS") return IntentStore::State::kInProgress;
  if (s == "SUCCEEDED") return IntentStore::State::kSucceeded;
  if (s == "FAILED") return IntentStore::State::kFailed;
  if (s == "UNKNOWN") return IntentStore::State::kUnknown;
  return std::nullopt;
}

}  // namespace

std::string_view IntentStore::ToString(State s) {
  switch (s) {
    case State::kInProgress:
      return "IN_PROGRESS";
    case State::kSucceeded:
      return "SUCCEEDED";
    case State::kFailed:
      return "FAILED";
    case State::kUnknown:
      return "UNKNOWN";
  }
  return "UNKNOWN";
}

IntentStore::IntentStore(store::ItemStore& store, const Clock& clock, int retention_h)
    : store_(store), clock_(clock), retention_h_(retention_h) {}

store::ItemKey IntentStore::Key(std::string_view tenant_id, std::string_view intent_key) {
  return {absl::StrCat("TENANT#", std::string(tenant_id)), absl::StrCat("INTENT#", std::string(intent_key))};
}

std::string IntentStore::DownstreamKey(std::string_view tenant_id, std::string_view intent_key) {
  std::string digest = Sha256Hex(absl::StrCat(std::string(tenant_id), "\n", std::string(intent_key)));
  digest.resize(32);
  return absl::StrCat("tg1-", digest);
}

Item IntentStore::ClaimItem(std::string_view input_hash, std::string_view execution_id, int64_t now_ms, int64_t hold_ms,
                            std::optional<State> previous) const {
  return Item{{"state", std::string(ToString(State::kInProgress))},
              {"input_hash", std::string(input_hash)},
              {"execution_id", std::string(execution_id)},
              {"held_until_ms", now_ms + hold_ms},
              {"previous_state", previous ? std::string(ToString(*previous)) : std::string()},
              {"ttl", now_ms / 1000 + int64_t{retention_h_} * 3600}};
}

store::WriteRequest IntentStore::NewClaimRequest(std::string_view tenant_id, std::string_view intent_key,
                                                 std::string_view input_hash, std::string_view execution_id,
                                                 int64_t hold_ms) const {
  const int64_t now_ms = clock_.now_epoch_ms();
  store::WriteRequest claim = store::WriteRequest::Put(
      Key(tenant_id, intent_key), ClaimItem(input_hash, execution_id, now_ms, hold_ms, std::nullopt),
      Condition::ItemAbsentOrExpired(now_ms / 1000));
  claim.updated_soon = true;  // the call's close finishes it
  return claim;
}

absl::StatusOr<IntentStore::Claim> IntentStore::TryClaim(std::string_view tenant_id, std::string_view intent_key,
                                                         std::string_view input_hash, std::string_view execution_id,
                                                         int64_t hold_ms, bool take_over_succeeded) {
  const store::ItemKey key = Key(tenant_id, intent_key);
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int64_t now_ms = clock_.now_epoch_ms();
    // The first attempt assumes a new intent (one write); a refused claim reads what is there.
    std::optional<Item> current;
    if (attempt > 0) {
      ASSIGN_OR_RETURN(current, store_.Get(key));
    }
    std::optional<State> previous;
    Condition condition = Condition::ItemAbsentOrExpired(now_ms / 1000);
    if (current) {
      const auto state = Parse(store::GetString(*current, "state").value_or(""));
      if (!state) return absl::DataLossError(absl::StrCat("intent ", std::string(intent_key), " has no valid state"));
      if (store::GetString(*current, "input_hash").value_or("") != input_hash) {
        return Claim{Claim::Kind::kMismatch, store::GetString(*current, "execution_id").value_or(""), "", std::nullopt};
      }
      if (*state == State::kSucceeded && !take_over_succeeded) {
        Claim succeeded{Claim::Kind::kSucceeded, store::GetString(*current, "execution_id").value_or(""),
                        store::GetString(*current, "result_json").value_or("null"), std::nullopt};
        succeeded.execution_expires_at_s = store::GetInt(*current, "execution_expires_at_s").value_or(0);
        return succeeded;
      }
      const int64_t held_until = store::GetInt(*current, "held_until_ms").value_or(0);
      if (*state == State::kInProgress && held_until > now_ms) {
        return Claim{Claim::Kind::kInProgress, store::GetString(*current, "execution_id").value_or(""), "",
                     std::nullopt};
      }
      previous = *state;
      // Take it over only as it was read: exactly one of several claimants wins.
      condition = Condition::And({Condition::Eq(Attr("execution_id"), *store::GetString(*current, "execution_id")),
                                  Condition::Eq(Attr("state"), std::string(ToString(*state)))});
    }
    const Item item = ClaimItem(input_hash, execution_id, now_ms, hold_ms, previous);
    ASSIGN_OR_RETURN(store::WriteResult r, store_.Put(key, item, condition));
    if (r.applied) {
      Claim claimed{Claim::Kind::kClaimed, std::string(execution_id), "", previous};
      if (previous == State::kSucceeded) {
        claimed.previous_execution_id = store::GetString(*current, "execution_id").value_or("");
        claimed.previous_result_json = store::GetString(*current, "result_json").value_or("");
        claimed.previous_execution_expires_at_s = store::GetInt(*current, "execution_expires_at_s").value_or(0);
      }
      return claimed;
    }
  }
  return absl::AbortedError(absl::StrCat("intent ", std::string(intent_key), ": claim lost too many races"));
}

store::WriteRequest IntentStore::FinishRequest(std::string_view tenant_id, std::string_view intent_key,
                                               std::string_view execution_id, State state, std::string_view result_json,
                                               int64_t execution_expires_at_s) const {
  const int64_t now_ms = clock_.now_epoch_ms();
  std::vector<UpdateOp> ops = {UpdateOp::Set(Attr("state"), std::string(ToString(state))),
                               UpdateOp::Set(Attr("result_json"), std::string(result_json)),
                               UpdateOp::Set(Attr("ttl"), now_ms / 1000 + int64_t{retention_h_} * 3600)};
  if (execution_expires_at_s > 0) ops.push_back(UpdateOp::Set(Attr("execution_expires_at_s"), execution_expires_at_s));
  // Conditional on still holding it: an intent taken over after our hold expired is not ours.
  return store::WriteRequest::Update(Key(tenant_id, intent_key), std::move(ops),
                                     Condition::Eq(Attr("execution_id"), std::string(execution_id)),
                                     store::ReturnValues::kNone);
}

absl::Status IntentStore::Finish(std::string_view tenant_id, std::string_view intent_key, std::string_view execution_id,
                                 State state, std::string_view result_json) {
  const store::WriteRequest w = FinishRequest(tenant_id, intent_key, execution_id, state, result_json);
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(w.key, w.ops, w.condition, w.returns));
  (void)r;  // not applied: taken over; nothing to record
  return absl::OkStatus();
}

store::WriteRequest IntentStore::RestoreSucceededRequest(std::string_view tenant_id, std::string_view intent_key,
                                                         std::string_view execution_id,
                                                         std::string_view previous_execution_id,
                                                         std::string_view previous_result_json,
                                                         int64_t previous_execution_expires_at_s) const {
  std::vector<UpdateOp> ops = {UpdateOp::Set(Attr("state"), std::string(ToString(State::kSucceeded))),
                               UpdateOp::Set(Attr("execution_id"), std::string(previous_execution_id)),
                               UpdateOp::Set(Attr("result_json"), std::string(previous_result_json)),
                               UpdateOp::Set(Attr("held_until_ms"), int64_t{0})};
  // The claim that took it over replaced the item: the expiry goes back with the execution it names.
  if (previous_execution_expires_at_s > 0) {
    ops.push_back(UpdateOp::Set(Attr("execution_expires_at_s"), previous_execution_expires_at_s));
  }
  return store::WriteRequest::Update(Key(tenant_id, intent_key), std::move(ops),
                                     Condition::Eq(Attr("execution_id"), std::string(execution_id)),
                                     store::ReturnValues::kNone);
}

absl::Status IntentStore::Release(std::string_view tenant_id, std::string_view intent_key,
                                  std::string_view execution_id, const std::optional<State>& previous,
                                  std::string_view previous_execution_id, std::string_view previous_result_json,
                                  int64_t previous_execution_expires_at_s) {
  if (previous == State::kSucceeded && !previous_execution_id.empty()) {
    const store::WriteRequest w = RestoreSucceededRequest(tenant_id, intent_key, execution_id, previous_execution_id,
                                                          previous_result_json, previous_execution_expires_at_s);
    ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(w.key, w.ops, w.condition, w.returns));
    (void)r;  // not applied: taken over since; nothing to give back
    return absl::OkStatus();
  }
  const Condition mine = Condition::And({Condition::Eq(Attr("execution_id"), std::string(execution_id)),
                                         Condition::Eq(Attr("state"), std::string(ToString(State::kInProgress)))});
  if (!previous) {
    ASSIGN_OR_RETURN(store::WriteResult r, store_.Erase(Key(tenant_id, intent_key), mine));
    (void)r;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(store::WriteResult r, store_.Update(Key(tenant_id, intent_key),
                                                       {UpdateOp::Set(Attr("state"), std::string(ToString(*previous))),
                                                        UpdateOp::Set(Attr("held_until_ms"), int64_t{0})},
                                                       mine, store::ReturnValues::kNone));
  (void)r;
  return absl::OkStatus();
}

}  // namespace toolgate
