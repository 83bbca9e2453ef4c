#include "toolgate/services/execution_store.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "toolgate/services/ledger.h"
#include "toolgate/status_macros.h"
#include "toolgate/store/item_json.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate {

using store::Attr;
using store::Condition;
using store::Item;
using store::UpdateOp;

namespace {

// The fields Finish rewrites. An empty string or a false flag is not stored (FromItem reads an absent
// one so): Create leaves it out, Finish removes it. A record written with its call's events stays small enough
// for one DynamoDB write unit with a small input (DESIGN §16).
std::vector<std::pair<std::string, store::AttributeValue>> OutcomeFields(const ExecutionRecord& r) {
  std::vector<std::pair<std::string, store::AttributeValue>> f = {{"outcome", std::string(ToString(r.outcome))},
                                                                  {"reason", r.reason},
                                                                  {"result_json", r.result_json},
                                                                  {"finished_at_ms", r.finished_at_ms},
                                                                  {"latency_ms", r.latency_ms},
                                                                  {"downstream_status", int64_t{r.downstream_status}},
                                                                  {"unguarded", r.unguarded},
                                                                  {"last_seq", r.last_seq},
                                                                  {"last_hash", r.last_hash}};
  if (!r.own_events.empty()) f.emplace_back("events", r.own_events);
  return f;
}

// What is not stored: an empty string, a false flag (FromItem reads either when absent).
bool IsEmpty(const store::AttributeValue& v) {
  return (v.is_string() && v.as_string().empty()) || (v.is_bool() && !v.as_bool());
}

}  // namespace

absl::StatusOr<ExecutionRecord> ExecutionStore::FromItem(const Item& item) {
  ExecutionRecord r;
  auto s = [&](const char* n) { return store::GetString(item, n).value_or(""); };
  r.execution_id = s("execution_id");
  if (r.execution_id.empty()) return absl::DataLossError("execution record without execution_id");
  r.tenant_id = s("tenant_id");
  r.account_id = s("account_id");
  r.tool_name = s("tool_name");
  r.connector_id = s("connector_id");
  r.action_type = s("action_type");
  if (r.action_type.empty()) r.action_type = r.tool_name;  // not stored when it is the tool name
  r.actor = s("actor");
  const std::string outcome = s("outcome");
  std::optional<Outcome> parsed = ParseOutcome(outcome);
  if (!parsed) {
    return absl::DataLossError(
        absl::StrCat("execution record ", r.execution_id, " has an unknown outcome '", outcome.substr(0, 64), "'"));
  }
  r.outcome = *parsed;
  r.reason = s("reason");
  r.intent_key = s("intent_key");
  if (r.intent_key.empty()) r.intent_key = r.execution_id;  // not stored when it is the execution's id
  r.idempotency_key = s("idempotency_key");
  r.replay_of = s("replay_of");
  r.result_json = s("result_json");
  r.input_json = s("input_json");
  // Always the hash of the input the record holds (never stored): the chain vouches for the input
  // through it.
  r.input_hash = InputHash(r.tool_name, r.input_json);
  r.replay_succeeded_in = s("replay_succeeded_in");
  r.replay_result_json = s("replay_result_json");
  r.replay_expires_at_s = store::GetInt(item, "replay_expires_at_s").value_or(0);
  r.created_at_ms = store::GetInt(item, "created_at_ms").value_or(0);
  r.finished_at_ms = store::GetInt(item, "finished_at_ms").value_or(0);
  r.latency_ms = store::GetInt(item, "latency_ms").value_or(-1);
  r.downstream_status = static_cast<int>(store::GetInt(item, "downstream_status").value_or(0));
  r.unguarded = store::GetBool(item, "unguarded").value_or(false);
  r.last_seq = store::GetInt(item, "last_seq").value_or(0);
  r.last_hash = s("last_hash");
  r.own_events = s("events");
  r.expires_at_s = store::GetInt(item, store::kTtlAttribute).value_or(0);
  return r;
}

ExecutionStore::ExecutionStore(store::ItemStore& store, const Clock& clock) : store_(store), clock_(clock) {}

store::ItemKey ExecutionStore::Key(std::string_view tenant_id, std::string_view execution_id) {
  return {absl::StrCat("TENANT#", std::string(tenant_id)), absl::StrCat("EXEC#", std::string(execution_id))};
}

store::WriteRequest ExecutionStore::CreateRequest(const ExecutionRecord& r) {
  Item item;
  for (auto& [name, value] : OutcomeFields(r)) {
    if (!IsEmpty(value)) item.emplace(name, std::move(value));
  }
  // The input's hash is not stored (FromItem recomputes it). The intent key and the action type are,
  // even where they could be rebuilt: an instance of an earlier version, during a rolling upgrade,
  // dispatches queued calls with them (the downstream's Idempotency-Key, S8's kill-switch match).
  for (auto [name, value] : {std::pair<const char*, const std::string*>{"execution_id", &r.execution_id},
                             {"tenant_id", &r.tenant_id},
                             {"account_id", &r.account_id},
                             {"tool_name", &r.tool_name},
                             {"connector_id", &r.connector_id},
                             {"action_type", &r.action_type},
                             {"intent_key", &r.intent_key},
                             {"actor", &r.actor},
                             {"idempotency_key", &r.idempotency_key},
                             {"replay_of", &r.replay_of},
                             {"input_json", &r.input_json}}) {
    if (!value->empty()) item.emplace(name, *value);
  }

  item.emplace("created_at_ms", r.created_at_ms);
  if (r.expires_at_s > 0) item.emplace(std::string(store::kTtlAttribute), r.expires_at_s);
  // The caller has the record it wrote: the write returns no copy. Its call's close updates it.
  store::WriteRequest put = store::WriteRequest::Put(Key(r.tenant_id, r.execution_id), std::move(item),
                                                     Condition::ItemAbsent(), store::ReturnValues::kNone);
  put.updated_soon = true;
  return put;
}

store::WriteRequest ExecutionStore::FinishRequest(const ExecutionRecord& r, std::optional<int64_t> expect_last_seq) {
  std::vector<UpdateOp> ops;
  for (auto& [name, value] : OutcomeFields(r)) {
    ops.push_back(IsEmpty(value) ? UpdateOp::Remove(Attr(name)) : UpdateOp::Set(Attr(name), std::move(value)));
  }
  // Anchored where the opening left its chain, or (its events written as items) never backwards: a
  // finish written again after the store came back must not hide events another writer added to its
  // chain meanwhile (a replay of the abandoned execution). The same finish again is taken (its first
  // try's outcome unknown).
  const store::AttributePath last_seq = Attr("last_seq");
  Condition anchored = expect_last_seq
                           ? Condition::Eq(last_seq, *expect_last_seq)
                           : Condition::Or({Condition::NotExists(last_seq), Condition::Le(last_seq, r.last_seq)});
  return store::WriteRequest::Update(Key(r.tenant_id, r.execution_id), std::move(ops),
                                     Condition::And({Condition::Exists(Attr("execution_id")), std::move(anchored)}),
                                     store::ReturnValues::kNone);
}

std::string ExecutionStore::InputHash(std::string_view tool_name, std::string_view input_json) {
  std::string text;
  text.reserve(tool_name.size() + 1 + input_json.size());
  text.append(tool_name).append(1, '\n').append(input_json);
  return Sha256Hex(text);
}

nlohmann::json ExecutionStore::ReceivedData(const ExecutionRecord& r, bool with_input) {
  nlohmann::json data = {{"tool_name", r.tool_name},
                         {"connector_id", r.connector_id},
                         {"action_type", r.action_type},
                         {"tenant_id", r.tenant_id},
                         {"intent_key", r.intent_key}};
  if (with_input) data["input_hash"] = r.input_hash;
  return data;
}

std::string ExecutionStore::ReceivedText(const ExecutionRecord& r, bool with_input) {
  // The keys in the order a canonical object has them (sorted); strings as the canonical text writes them.
  std::string text;
  text.reserve(96 + r.action_type.size() + r.connector_id.size() + r.intent_key.size() + r.tenant_id.size() +
               r.tool_name.size() + (with_input ? 16 + r.input_hash.size() : 0));
  text += R"({"action_type":)";
  store::AppendJsonString(text, r.action_type);
  text += R"(,"connector_id":)";
  store::AppendJsonString(text, r.connector_id);
  if (with_input) {
    text += R"(,"input_hash":)";
    store::AppendJsonString(text, r.input_hash);
  }
  text += R"(,"intent_key":)";
  store::AppendJsonString(text, r.intent_key);
  text += R"(,"tenant_id":)";
  store::AppendJsonString(text, r.tenant_id);
  text += R"(,"tool_name":)";
  store::AppendJsonString(text, r.tool_name);
  text += '}';
  return text;
}

std::string ExecutionStore::ChainActor(const ExecutionRecord& r) {
  return r.actor.empty() ? "tenant:" + r.tenant_id : r.actor;
}

namespace {

constexpr char kTenantsPk[] = "TENANTS";

}  // namespace

std::optional<store::WriteRequest> ExecutionStore::TenantEntryIfNew(std::string_view tenant_id) const {
  {
    absl::MutexLock lock(&tenants_mu_);
    if (tenants_written_.find(tenant_id) != tenants_written_.end()) return std::nullopt;
  }
  // Unconditional and always the same: writers racing on a new tenant all succeed.
  return store::WriteRequest::Put({kTenantsPk, absl::StrCat("T#", std::string(tenant_id))},
                                  Item{{"tenant_id", std::string(tenant_id)}}, Condition::Always(),
                                  store::ReturnValues::kNone);
}

void ExecutionStore::NoteTenant(std::string_view tenant_id) {
  absl::MutexLock lock(&tenants_mu_);
  if (tenants_written_.size() < 100'000) tenants_written_.emplace(tenant_id);
}

store::WriteRequest ExecutionStore::ReplaySucceededRequest(std::string_view tenant_id, std::string_view original_id,
                                                           std::string_view replay_id, std::string_view result_json,
                                                           int64_t replay_expires_at_s) {
  std::vector<UpdateOp> ops = {UpdateOp::Set(Attr("replay_succeeded_in"), std::string(replay_id)),
                               UpdateOp::Set(Attr("replay_result_json"), std::string(result_json))};
  if (replay_expires_at_s > 0) ops.push_back(UpdateOp::Set(Attr("replay_expires_at_s"), replay_expires_at_s));
  return store::WriteRequest::Update(Key(tenant_id, original_id), std::move(ops),
                                     Condition::Exists(Attr("execution_id")), store::ReturnValues::kNone);
}

absl::Status ExecutionStore::Create(const ExecutionRecord& r) {
  const store::WriteRequest w = CreateRequest(r);
  ASSIGN_OR_RETURN(store::WriteResult res, store_.Put(w.key, w.item, w.condition));
  if (!res.applied) return absl::AlreadyExistsError(absl::StrCat("execution ", r.execution_id, " exists"));
  return absl::OkStatus();
}

absl::Status ExecutionStore::Finish(const ExecutionRecord& r) {
  const store::WriteRequest w = FinishRequest(r);
  ASSIGN_OR_RETURN(store::WriteResult res, store_.Update(w.key, w.ops, w.condition, w.returns));
  if (!res.applied) return absl::NotFoundError(absl::StrCat("execution ", r.execution_id, " has no record"));
  return absl::OkStatus();
}

absl::StatusOr<bool> ExecutionStore::ReserveReplay(std::string_view tenant_id, std::string_view execution_id,
                                                   int max_replays) {
  ASSIGN_OR_RETURN(store::WriteResult r,
                   store_.Update(Key(tenant_id, execution_id), {UpdateOp::Add(Attr("replay_count"), 1)},
                                 Condition::And({Condition::Exists(Attr("execution_id")),
                                                 Condition::Or({Condition::NotExists(Attr("replay_count")),
                                                                Condition::Lt(Attr("replay_count"), max_replays)})}),
                                 store::ReturnValues::kNone));
  return r.applied;
}

absl::Status ExecutionStore::ReleaseReplay(std::string_view tenant_id, std::string_view execution_id) {
  ASSIGN_OR_RETURN(
      store::WriteResult r,
      store_.Update(Key(tenant_id, execution_id), {UpdateOp::Add(Attr("replay_count"), -1)},
                    Condition::And({Condition::Exists(Attr("execution_id")), Condition::Gt(Attr("replay_count"), 0)}),
                    store::ReturnValues::kNone));
  (void)r;  // not applied: the original is gone with its retention, or holds no reservation
  return absl::OkStatus();
}

absl::StatusOr<ExecutionRecord> ExecutionStore::Get(std::string_view tenant_id, std::string_view execution_id) {
  ASSIGN_OR_RETURN(std::optional<Item> item, store_.Get(Key(tenant_id, execution_id)));
  if (!item) return absl::NotFoundError("execution not found");
  return FromItem(*item);
}

absl::StatusOr<ExecutionStore::ListPage> ExecutionStore::List(std::string_view tenant_id, const ListFilter& f) {
  const int limit = std::min(std::max(f.limit, 1), 200);
  ListPage page;
  store::QueryRequest q{absl::StrCat("TENANT#", std::string(tenant_id)), "EXEC#", limit, std::nullopt,
                        /*descending=*/true};  // UUIDv7 ids sort by time: newest first
  if (f.after) q.after = absl::StrCat("EXEC#", *f.after);
  // Filters apply after reading, so a page may need several reads; bound them per request and hand
  // back a cursor at the last record examined.
  std::string last_examined;
  for (int round = 0; round < 20; ++round) {
    ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
    for (auto& [sk, item] : p.items) {
      ASSIGN_OR_RETURN(ExecutionRecord r, FromItem(item));
      last_examined = r.execution_id;
      // Newest first: the first record older than `since` ends the listing.
      if (f.since_ms && r.created_at_ms < *f.since_ms) return page;
      if (!f.tool.empty() && r.tool_name != f.tool) continue;
      if (f.until_ms && r.created_at_ms >= *f.until_ms) continue;
      if (!f.outcomes.empty() &&
          std::find(f.outcomes.begin(), f.outcomes.end(), ToString(r.outcome)) == f.outcomes.end())
        continue;
      page.executions.push_back(std::move(r));
      if (static_cast<int>(page.executions.size()) == limit) {
        page.next = last_examined;
        return page;
      }
    }
    if (!p.last_sk) return page;  // the end of the tenant's executions
    q.after = p.last_sk;
  }
  page.next = last_examined;
  return page;
}

namespace {

// The admin listing's cursor: the key of the last item examined and how the listing reads ("q": one
// tenant's partition, newest first; "s": a scan), as web-safe base64 of a small JSON object.
std::string EncodeCursor(bool query, const store::ItemKey& key) {
  const nlohmann::json c = {{"m", query ? "q" : "s"}, {"pk", key.pk}, {"sk", key.sk}};
  return absl::WebSafeBase64Escape(c.dump());
}

std::optional<store::ItemKey> DecodeCursor(const std::string& cursor, bool query) {
  std::string text;
  if (cursor.size() > 2048 || !absl::WebSafeBase64Unescape(cursor, &text)) return std::nullopt;
  const nlohmann::json c = ParseJsonWithin(text);
  if (!c.is_object() || c.value("m", "") != (query ? "q" : "s") || !c.contains("pk") || !c["pk"].is_string() ||
      !c.contains("sk") || !c["sk"].is_string()) {
    return std::nullopt;
  }
  store::ItemKey key{c["pk"].get<std::string>(), c["sk"].get<std::string>()};
  if (key.pk.rfind("TENANT#", 0) != 0) return std::nullopt;
  return key;
}

bool Matches(const ExecutionStore::AdminListFilter& f, const ExecutionRecord& r) {
  if (!f.connector.empty() && r.connector_id != f.connector) return false;
  if (!f.tenant.empty() && r.tenant_id != f.tenant) return false;
  if (!f.tool.empty() && r.tool_name != f.tool) return false;
  if (!f.outcomes.empty() && std::find(f.outcomes.begin(), f.outcomes.end(), ToString(r.outcome)) == f.outcomes.end())
    return false;
  if (f.since_ms && r.created_at_ms < *f.since_ms) return false;
  if (f.until_ms && r.created_at_ms >= *f.until_ms) return false;
  if (f.originals_only && !r.replay_of.empty()) return false;
  return true;
}

}  // namespace

absl::StatusOr<ExecutionStore::ListPage> ExecutionStore::ListAll(const AdminListFilter& f) {
  const int limit = std::min(std::max(f.limit, 1), 1000);
  const bool by_tenant = !f.tenant.empty();
  std::optional<store::ItemKey> after;
  if (!f.cursor.empty()) {
    after = DecodeCursor(f.cursor, by_tenant);
    if (!after || (by_tenant && after->pk != absl::StrCat("TENANT#", f.tenant))) {
      return absl::InvalidArgumentError("cursor must be the `next` of a previous page of the same listing");
    }
  }
  ListPage page;
  std::optional<store::ItemKey> last_examined;
  auto take = [&](const store::ItemKey& key, const store::Item& item) -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(ExecutionRecord r, FromItem(item));
    last_examined = key;
    if (Matches(f, r)) page.executions.push_back(std::move(r));
    return static_cast<int>(page.executions.size()) == limit;
  };
  if (by_tenant) {
    store::QueryRequest q{absl::StrCat("TENANT#", f.tenant), "EXEC#", std::min(limit, 200), std::nullopt,
                          /*descending=*/true};
    if (after) q.after = after->sk;
    for (int round = 0; round < 20; ++round) {
      ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
      for (auto& [sk, item] : p.items) {
        // UUIDv7 ids sort by creation time: past `since`, nothing older can match.
        if (f.since_ms && store::GetInt(item, "created_at_ms").value_or(0) < *f.since_ms) return page;
        ASSIGN_OR_RETURN(bool full, take({q.pk, sk}, item));
        if (full) {
          page.next = EncodeCursor(true, *last_examined);
          return page;
        }
      }
      if (!p.last_sk) return page;
      q.after = p.last_sk;
    }
  } else {
    store::ScanRequest req{"TENANT#", "EXEC#", 500, after};
    for (int round = 0; round < 20; ++round) {
      ASSIGN_OR_RETURN(store::ScanPage p, store_.Scan(req));
      for (auto& [key, item] : p.items) {
        ASSIGN_OR_RETURN(bool full, take(key, item));
        if (full) {
          page.next = EncodeCursor(false, *last_examined);
          return page;
        }
      }
      if (!p.last_key) return page;
      req.after = p.last_key;
      last_examined = p.last_key;
    }
  }
  if (last_examined) page.next = EncodeCursor(by_tenant, *last_examined);
  return page;
}

absl::StatusOr<ExecutionRecord> ExecutionStore::Locate(std::string_view execution_id) {
  // A chain of items opens with (EXEC#<id>, EVENT#1...); a replay's with REPLAY_STARTED.
  store::QueryRequest q{absl::StrCat("EXEC#", std::string(execution_id)), "EVENT#", 3, std::nullopt, false};
  ASSIGN_OR_RETURN(store::QueryPage p, store_.Query(q));
  for (const auto& [sk, item] : p.items) {
    if (store::GetString(item, "type").value_or("") != "EXECUTION_RECEIVED") continue;
    const nlohmann::json data = ParseJsonWithin(store::GetString(item, "data").value_or("{}"));
    if (!data.is_object() || !data.contains("tenant_id") || !data["tenant_id"].is_string()) break;
    const std::string tenant = data["tenant_id"].get<std::string>();
    ASSIGN_OR_RETURN(ExecutionRecord r, Get(tenant, execution_id));
    if (r.tenant_id != tenant) return absl::DataLossError("execution record and its chain disagree on the tenant");
    return r;
  }
  // A chain held in its record: look under each tenant the store knows.
  store::QueryRequest tenants{kTenantsPk, "T#", 1000, std::nullopt, false};
  for (int page = 0; page < 1000; ++page) {
    ASSIGN_OR_RETURN(store::QueryPage t, store_.Query(tenants));
    for (const auto& [sk, item] : t.items) {
      const std::string tenant = sk.substr(2);
      absl::StatusOr<ExecutionRecord> r = Get(tenant, execution_id);
      if (absl::IsNotFound(r.status())) continue;
      if (!r.ok()) return r.status();
      if (r->tenant_id != tenant) return absl::DataLossError("execution record names another tenant than its key");
      return r;
    }
    if (!t.last_sk) break;
    tenants.after = t.last_sk;
  }
  return absl::NotFoundError("execution not found");
}

absl::Status ExecutionStore::ForEach(
    const std::function<absl::Status(const ExecutionRecord&, const store::ItemKey&)>& visit) {
  store::ScanRequest req{"TENANT#", "EXEC#", 500, std::nullopt};
  for (;;) {
    ASSIGN_OR_RETURN(store::ScanPage page, store_.Scan(req));
    for (auto& [key, item] : page.items) {
      absl::StatusOr<ExecutionRecord> r = FromItem(item);
      if (!r.ok()) return absl::DataLossError(absl::StrCat(key.pk, "/", key.sk, ": ", r.status().message()));
      RETURN_IF_ERROR(visit(*r, key));
    }
    if (!page.last_key) return absl::OkStatus();
    req.after = page.last_key;
  }
}

namespace {

// A named execution that is missing vouches only when the record naming it keeps its expiry and that
// expiry has passed: gone with its retention. An absent or zero expiry vouches for nothing (a forged
// intent or kept replay result simply leaves it out). Every writer keeps it — IntentStore's
// FinishRequest and RestoreSucceededRequest, ExecutionStore::ReplaySucceededRequest, each given the
// named record's `ttl` — and it is 0 only where that record is kept forever (retention_s = 0: never
// missing), or in an intent or original written before the expiry was kept (45c7811). Such an intent
// went with its own retention (idempotency retention_h, 24 h by default) long since; one kept longer,
// or an original whose replay is missing (a replay is created after its original with the same
// retention, so it outlives it unless retention_s was shortened), now answers 503 store_unavailable and
// fails `ledger verify` rather than answering a result nothing vouches for.
//
// What is wrong ("is missing ..."); empty when it is gone with its retention.
std::string MissingProblem(int64_t kept_until_s, int64_t now_s) {
  if (kept_until_s > 0 && kept_until_s <= now_s) return {};
  if (kept_until_s <= 0) return "is missing, and no expiry is kept for it: it cannot have gone with its retention";
  return absl::StrCat("is missing though its retention runs until ", kept_until_s);
}

}  // namespace

std::string IntentVouchProblem(const ExecutionRecord* found, const std::string& execution_id,
                               std::string_view intent_key, std::string_view result_json, int64_t kept_until_s,
                               int64_t now_s) {
  if (found == nullptr) {
    const std::string missing = MissingProblem(kept_until_s, now_s);
    return missing.empty() ? missing : absl::StrCat("it names execution ", execution_id, ", which ", missing);
  }
  if (found->intent_key != intent_key) {
    return absl::StrCat("it names execution ", execution_id, ", which ran for another key");
  }
  if (found->outcome != Outcome::kSucceeded) {
    return absl::StrCat("it names execution ", execution_id, ", which did not succeed");
  }
  if (found->result_json != result_json)
    return absl::StrCat("its result is not the result of execution ", execution_id);
  return {};
}

std::string ReplayResultVouchProblem(const ExecutionRecord& original, const std::vector<LedgerEvent>& original_chain,
                                     const ExecutionRecord* replay, int64_t now_s) {
  const std::string& named = original.replay_succeeded_in;
  if (replay == nullptr) {
    const std::string missing = MissingProblem(original.replay_expires_at_s, now_s);
    return missing.empty()
               ? missing
               : absl::StrCat("the replay whose result its record keeps for replays, ", named, ", ", missing);
  }
  if (replay->replay_of != original.execution_id) {
    return absl::StrCat("the result its record keeps for replays names ", named, ", which is not one of its replays");
  }
  if (replay->tool_name != original.tool_name || replay->intent_key != original.intent_key) {
    return absl::StrCat("the result its record keeps for replays names ", named,
                        ", which ran another tool or intent key than it");
  }
  const bool requested = std::any_of(original_chain.begin(), original_chain.end(), [&](const LedgerEvent& e) {
    if (e.type != "REPLAY_REQUESTED") return false;
    const nlohmann::json d = ParseJsonWithin(e.data);
    return d.is_object() && d.contains("execution_id") && d["execution_id"] == named;
  });
  if (!requested) {
    return absl::StrCat("the result its record keeps for replays names ", named,
                        ", which no REPLAY_REQUESTED of its chain names");
  }
  if (replay->outcome != Outcome::kSucceeded) {
    return absl::StrCat("the result its record keeps for replays names ", named, ", which did not succeed");
  }
  if (replay->result_json != original.replay_result_json) {
    return absl::StrCat("the result its record keeps for replays is not the result of its replay ", named);
  }
  return {};
}

}  // namespace toolgate
