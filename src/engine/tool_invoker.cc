#include "toolgate/engine/tool_invoker.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"

namespace toolgate {

using json = nlohmann::json;

namespace {

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int64_t RetryAfterSeconds(int64_t ms) { return std::max<int64_t>(1, (ms + 999) / 1000); }

// OK when the first `required` writes of a batch were applied (the rest may be refused harmlessly).
absl::Status RequireApplied(const std::vector<absl::StatusOr<store::WriteResult>>& results, size_t required) {
  for (size_t i = 0; i < results.size() && i < required; ++i) {
    if (!results[i].ok()) return results[i].status();
    if (!results[i]->applied) return absl::AbortedError("a ledger or execution write was refused");
  }
  return absl::OkStatus();
}

}  // namespace

std::string ErrorJson(std::string_view code, std::string_view message) {
  return Dump(json{{"error", std::string(code)}, {"message", std::string(message)}});
}



ToolInvoker::ToolInvoker(Services services) : s_(services) {}
ToolInvoker::~ToolInvoker() = default;

const DownstreamRequest& ToolInvoker::Downstream(const Ticket& ticket) { return ticket.downstream; }

const ConnectorConfig* ToolInvoker::ResolveConnector(const std::string& tool_name) const {
  std::string id;
  if (auto t = s_.config.tools.find(tool_name); t != s_.config.tools.end() && !t->second.connector_id.empty()) {
    id = t->second.connector_id;
  } else {
    id = tool_name.substr(0, tool_name.find('.'));
  }
  auto it = s_.config.connectors.find(id);
  return it == s_.config.connectors.end() ? nullptr : &it->second;
}

namespace {

// Everything Admit needs to write an execution that ends before the downstream.
struct Early {
  ExecutionRecord record;
  std::string chain;
  Ledger::Tail tail;
};

json ResponseBody(const ExecutionRecord& r) {
  json body = {{"execution_id", r.execution_id}, {"outcome", r.outcome}, {"connector_id", r.connector_id}};
  if (!r.reason.empty()) body["reason"] = r.reason;
  if (!r.replay_of.empty()) body["replay_of"] = r.replay_of;
  return body;
}

}  // namespace

std::variant<InvokeResponse, std::unique_ptr<ToolInvoker::Ticket>> ToolInvoker::Admit(const InvokeRequest& req) {
  const ConnectorConfig* connector = ResolveConnector(req.tool_name);
  if (connector == nullptr) {
    return InvokeResponse{404, ErrorJson("unknown_tool", "no connector serves tool '" + req.tool_name + "'"), {}};
  }
  const std::string& cid = connector->id;
  // The effective action type (DESIGN §1): the config's for a tool it classifies, whatever the
  // caller says (no relabelling around a kill switch); else the caller's; else the tool name.
  std::string action_type = req.action_type.empty() ? req.tool_name : req.action_type;
  if (auto t = s_.config.tools.find(req.tool_name); t != s_.config.tools.end() && !t->second.action_type.empty()) {
    action_type = t->second.action_type;
  }
  const bool allow_on_store_error = connector->on_store_error == OnStoreError::kAllow;
  const int64_t now_ms = s_.clock.now_epoch_ms();

  auto ticket = std::make_unique<Ticket>();
  Ticket& t = *ticket;
  t.connector = connector;
  t.request = req;
  ExecutionRecord& rec = t.record;
  rec.execution_id = req.execution_id.empty() ? NewUuidV7(s_.clock) : req.execution_id;
  rec.tenant_id = req.principal.tenant_id;
  rec.account_id = req.principal.account_id;
  rec.tool_name = req.tool_name;
  rec.connector_id = cid;
  rec.action_type = action_type;
  rec.actor = req.principal.subject;
  rec.idempotency_key = req.idempotency_key;
  rec.intent_key = req.replay ? req.replay->original_intent_key
                              : (req.idempotency_key.empty() ? rec.execution_id : req.idempotency_key);
  rec.input_hash = Sha256Hex(absl::StrCat(req.tool_name, "\n", req.input_json));
  rec.input_json = req.input_json;
  if (req.replay) rec.replay_of = req.replay->original_id;
  rec.created_at_ms = now_ms;
  t.chain = Ledger::ExecutionChain(rec.execution_id);
  const std::string actor = rec.actor.empty() ? "tenant:" + rec.tenant_id : rec.actor;

  auto store_unavailable = [&](const absl::Status& why) {
    spdlog::warn("connector {}: store error, deferring: {}", cid, why.ToString());
    s_.metrics.Deferred(cid, "store_unavailable");
    json body = {{"execution_id", rec.execution_id}, {"outcome", "DEFERRED"}, {"connector_id", cid},
                 {"reason", "store_unavailable"}, {"retry_after_ms", 1000}};
    return InvokeResponse{503, Dump(body), 1};
  };
  const json received = {{"tool_name", rec.tool_name}, {"connector_id", cid}, {"action_type", action_type},
                         {"tenant_id", rec.tenant_id}, {"intent_key", rec.intent_key}};
  // The record and its opening events in one batch (one transaction on SQLite): for a replay
  // REPLAY_STARTED first, then EXECUTION_RECEIVED, then `events`, then for a replay that ends here
  // REPLAY_COMPLETED. The record names its last event, so `ledger verify` notices if it goes missing.
  auto write_opening = [&](std::vector<std::pair<std::string, json>> events, bool ends_here) -> absl::Status {
    std::vector<std::pair<std::string, json>> all;
    if (req.replay) {
      all.push_back({"REPLAY_STARTED",
                     {{"replay_of", req.replay->original_id}, {"replay_reason", req.replay->reason},
                      {"requested_by", req.replay->requested_by}, {"force", req.replay->force}}});
    }
    all.push_back({"EXECUTION_RECEIVED", received});
    for (auto& e : events) all.push_back(std::move(e));
    if (req.replay && ends_here) all.push_back({"REPLAY_COMPLETED", {{"outcome", rec.outcome}}});
    std::vector<store::WriteRequest> writes;
    writes.push_back({});  // the record, once its last event is known
    // The record and every event of its chain expire together; an execution deferred before it
    // reached the connector is kept for the (shorter) deferred retention.
    rec.expires_at_s = s_.ledger.retention().ExecutionExpiry(rec.created_at_ms, ends_here && rec.outcome == "DEFERRED");
    t.tail.expires_at_s = rec.expires_at_s;
    Ledger::Tail tail = t.tail;
    for (const auto& [type, data] : all) {
      auto [w, e] = s_.ledger.PrepareAppend(t.chain, tail, type, actor, Dump(data));
      writes.push_back(std::move(w));
      tail = {e.seq, e.hash, e.expires_at_s};
    }
    rec.last_seq = tail.seq;
    rec.last_hash = tail.hash;
    writes[0] = ExecutionStore::CreateRequest(rec);
    const size_t n = writes.size();
    if (absl::Status st = RequireApplied(s_.store.WriteBatch(writes), n); !st.ok()) return st;
    t.tail = tail;
    return absl::OkStatus();
  };
  // An execution that ends here, before any downstream call.
  auto finish_early = [&](const std::string& outcome, const std::string& event, json data) -> absl::Status {
    rec.outcome = outcome;
    rec.finished_at_ms = s_.clock.now_epoch_ms();
    return write_opening({{event, std::move(data)}}, /*ends_here=*/true);
  };
  auto release_intent = [&] {
    if (!t.intent_claimed) return;
    if (auto st = s_.intents.Release(rec.tenant_id, rec.intent_key, rec.execution_id, t.intent_previous); !st.ok()) {
      spdlog::warn("intent {} not released: {}", rec.intent_key, st.ToString());
    }
  };
  auto deferred = [&](DeferReason why, int64_t retry_ms) -> InvokeResponse {
    release_intent();
    rec.reason = std::string(ToString(why));
    s_.metrics.Deferred(cid, rec.reason);
    s_.metrics.ToolCall(cid, rec.tool_name, "DEFERRED", 0, false);
    if (absl::Status st = finish_early("DEFERRED", "EXECUTION_DEFERRED", {{"reason", rec.reason}, {"retry_after_ms", retry_ms}});
        !st.ok()) {
      return store_unavailable(st);
    }
    json body = ResponseBody(rec);
    body["retry_after_ms"] = retry_ms;
    return InvokeResponse{503, Dump(body), RetryAfterSeconds(retry_ms)};
  };

  // A replay whose intent already succeeded: a new execution that records the earlier result and
  // calls nothing (REPLAY_DEDUPED).
  auto deduped = [&](const std::string& succeeded_in, const std::string& result_json) -> InvokeResponse {
    const json result = json::parse(result_json.empty() ? "null" : result_json, nullptr, false);
    rec.outcome = "SUCCEEDED";
    rec.result_json = result_json;
    rec.finished_at_ms = s_.clock.now_epoch_ms();
    s_.metrics.Replay("deduped");
    s_.metrics.ToolCall(cid, rec.tool_name, "SUCCEEDED", 0, false);
    if (absl::Status st = write_opening({{"REPLAY_DEDUPED",
                                          {{"succeeded_in", succeeded_in},
                                           {"result", result},
                                           {"result_sha256", Sha256Hex(rec.result_json)}}}},
                                        /*ends_here=*/true);
        !st.ok()) {
      return store_unavailable(st);
    }
    json body = ResponseBody(rec);
    body["result"] = result;
    body["deduplicated"] = true;
    body["succeeded_in"] = succeeded_in;
    InvokeResponse answer{200, Dump(body), {}};
    answer.reached_tool = true;
    return answer;
  };

  // 1. Kill switches (S8), before anything is taken.
  absl::StatusOr<std::optional<KillSwitch>> kill = s_.kill_switches.Match(rec.tenant_id, cid, action_type, rec.tool_name);
  if (!kill.ok()) {
    if (!allow_on_store_error) return store_unavailable(kill.status());
    t.guarded = false;
  } else if (kill->has_value()) {
    const KillSwitch& k = **kill;
    rec.reason = "kill_switch";
    s_.metrics.Blocked(k.scope);
    s_.metrics.ToolCall(cid, rec.tool_name, "BLOCKED", 0, false);
    if (absl::Status st = finish_early("BLOCKED", "EXECUTION_BLOCKED",
                                       {{"scope", k.scope}, {"key", k.key}, {"reason", k.reason}});
        !st.ok()) {
      return store_unavailable(st);
    }
    json body = ResponseBody(rec);
    body["scope"] = k.scope;
    return InvokeResponse{403, Dump(body), {}};
  }

  // 2. Intent check (tool-layer idempotency), for a client-supplied key and for every replay that is
  // not forced. A replay of an intent that already succeeded is answered from the record (S12).
  if (req.replay && !req.replay->force && req.replay->original_outcome == "SUCCEEDED") {
    return deduped(req.replay->succeeded_in, req.replay->original_result_json);
  }
  if (!req.idempotency_key.empty() || (req.replay && !req.replay->force)) {
    const int64_t hold_ms = int64_t{connector->timeout_ms} + 30'000;
    absl::StatusOr<IntentStore::Claim> claim =
        s_.intents.TryClaim(rec.tenant_id, rec.intent_key, rec.input_hash, rec.execution_id, hold_ms);
    if (!claim.ok()) return store_unavailable(claim.status());
    switch (claim->kind) {
      case IntentStore::Claim::Kind::kMismatch:
        return InvokeResponse{422,
                              ErrorJson("idempotency_key_reused",
                                        "this idempotency_key was used with a different tool or input"),
                              {}};
      case IntentStore::Claim::Kind::kSucceeded: {
        if (req.replay) return deduped(claim->execution_id, claim->result_json);
        // The same intent already succeeded: answer with that execution, call nothing.
        // The hit goes on the original's ledger while the original is kept; once its retention has
        // passed, the intent record alone answers.
        auto original = s_.executions.Get(rec.tenant_id, claim->execution_id);
        if (!original.ok() && !absl::IsNotFound(original.status())) return store_unavailable(original.status());
        if (original.ok()) {
          const std::string original_chain = Ledger::ExecutionChain(claim->execution_id);
          Ledger::Tail tail{original->last_seq, original->last_hash, original->expires_at_s};
          auto events = s_.ledger.Read(original_chain);
          if (!events.ok()) return store_unavailable(events.status());
          if (!events->empty()) tail = {events->back().seq, events->back().hash, events->back().expires_at_s};
          if (auto e = s_.ledger.Append(original_chain, tail, "INTENT_HIT", actor,
                                        Dump(json{{"intent_key", rec.intent_key}}),
                                        Ledger::ExecutionAnchor(rec.tenant_id, claim->execution_id));
              !e.ok()) {
            return store_unavailable(e.status());
          }
        }
        s_.metrics.ToolCall(cid, rec.tool_name, "SUCCEEDED", 0, false);
        json body = {{"execution_id", claim->execution_id}, {"outcome", "SUCCEEDED"}, {"connector_id", cid},
                     {"result", json::parse(claim->result_json, nullptr, false)}, {"intent_hit", true}};
        if (original.ok() && original->latency_ms >= 0) body["latency_ms"] = original->latency_ms;
        return InvokeResponse{200, Dump(body), {}};
      }
      case IntentStore::Claim::Kind::kInProgress:
        return deferred(DeferReason::kIntentInProgress, 1000);
      case IntentStore::Claim::Kind::kClaimed:
        t.intent_claimed = true;
        t.intent_previous = claim->previous;
        break;
    }
  }

  // 3. Breaker permission (S1–S3).
  if (t.guarded) {
    absl::StatusOr<CircuitBreakerService::Permit> permit = s_.breakers.RequestPermission(cid, connector->breaker);
    if (!permit.ok()) {
      if (!allow_on_store_error) {
        release_intent();
        return store_unavailable(permit.status());
      }
      t.guarded = false;
    } else if (!permit->allowed) {
      return deferred(permit->reason, permit->retry_after_ms);
    } else {
      t.permit = *permit;
    }
  }

  // 4. Concurrency slot (S6). A probe winner without a slot gives the probe back (§5).
  if (t.guarded) {
    absl::StatusOr<std::optional<SlotLease>> lease = s_.slots.TryAcquire(cid, connector->concurrency);
    if (!lease.ok() || !lease->has_value()) {
      if (t.permit.probe) {
        if (absl::Status st = s_.breakers.ReturnProbe(cid, t.permit); !st.ok()) {
          spdlog::warn("connector {}: probe claim not given back (it expires): {}", cid, st.ToString());
        }
      }
      if (!lease.ok()) {
        if (!allow_on_store_error) {
          release_intent();
          return store_unavailable(lease.status());
        }
        t.guarded = false;
        t.permit = {};
      } else {
        return deferred(DeferReason::kConcurrencyLimit, 1000);
      }
    } else {
      t.lease = **lease;
    }
  }
  rec.unguarded = !t.guarded;

  // 5. The record and TOOL_INVOKED are durable before the downstream is called (S9).
  json invoked = {{"probe", t.permit.probe}, {"breaker_generation", t.permit.generation}};
  if (!t.guarded) invoked["unguarded"] = true;
  if (t.intent_previous == IntentStore::State::kUnknown) invoked["previous_outcome"] = "unknown";
  std::vector<std::pair<std::string, json>> opening;
  if (req.replay && req.replay->force) {
    opening.push_back({"REPLAY_FORCED", {{"requested_by", req.replay->requested_by}, {"actor", actor}}});
  }
  if (req.replay && req.replay->original_outcome != "SUCCEEDED" && !req.replay->force) {
    // The ledger says what the replay knew of the earlier attempt.
    invoked["original_outcome"] = req.replay->original_outcome;
  }
  opening.push_back({"TOOL_INVOKED", invoked});
  absl::Status written = write_opening(std::move(opening), /*ends_here=*/false);
  if (!written.ok()) {
    InvokeResponse r = store_unavailable(written);
    Abandon(std::move(ticket));
    return r;
  }

  t.downstream.connector = connector;
  t.downstream.path = absl::StrCat(connector->path_prefix, "/", req.tool_name);
  t.downstream.body = req.input_json;
  t.downstream.idempotency_key = rec.intent_key;
  t.downstream.execution_id = rec.execution_id;
  t.downstream.tenant_id = rec.tenant_id;
  return ticket;
}

namespace {

IntentStore::State IntentState(IntentEffect effect) {
  switch (effect) {
    case IntentEffect::kSucceeded: return IntentStore::State::kSucceeded;
    case IntentEffect::kUnknown: return IntentStore::State::kUnknown;
    case IntentEffect::kFailed:
    case IntentEffect::kRelease: break;
  }
  return IntentStore::State::kFailed;
}

}  // namespace

InvokeResponse ToolInvoker::Complete(std::unique_ptr<Ticket> ticket, const DownstreamResult& result) {
  Ticket& t = *ticket;
  ExecutionRecord& rec = t.record;
  const ConnectorConfig& c = *t.connector;

  // Classify (design §5, S5, S12, §17.3): one pure function decides every consequence.
  json result_json;
  const bool is_2xx = result.kind == DownstreamResult::Kind::kResponse && result.status >= 200 && result.status < 300;
  if (is_2xx) result_json = json::parse(result.body.empty() ? "null" : result.body, nullptr, false);
  const Classification k = ClassifyDownstream(result, is_2xx && !result_json.is_discarded(), c.breaker,
                                              c.slo.latency_threshold_ms);
  rec.outcome = k.outcome;
  rec.reason = k.reason;
  rec.latency_ms = result.latency_ms;
  if (result.kind == DownstreamResult::Kind::kResponse) rec.downstream_status = result.status;
  if (rec.outcome == "SUCCEEDED") rec.result_json = Dump(result_json);

  if (k.counts_for_slo) {
    s_.metrics.SloEvent(c.id, std::string(slo::ToString(slo::Sli::kToolError)), k.error_bad);
    s_.metrics.SloEvent(c.id, std::string(slo::ToString(slo::Sli::kToolLatency)), k.latency_bad);
    if (s_.slo != nullptr) s_.slo->Record(c.id, k.error_bad, result.latency_ms, k.latency_bad);
  }
  if (t.guarded) RecordInBreaker(t, k);
  if (t.intent_claimed && k.intent == IntentEffect::kRelease) {
    if (auto st = s_.intents.Release(rec.tenant_id, rec.intent_key, rec.execution_id, t.intent_previous); !st.ok()) {
      spdlog::warn("intent {} not released: {}", rec.intent_key, st.ToString());
    }
  }

  absl::Status written = RecordOutcome(t, k, result);

  s_.metrics.ToolCall(c.id, rec.tool_name, rec.outcome, static_cast<double>(result.latency_ms) / 1000.0, true);
  if (rec.outcome == "FAILED") s_.metrics.ToolError(c.id, rec.tool_name, rec.reason);
  if (rec.outcome == "DEFERRED") s_.metrics.Deferred(c.id, rec.reason);

  if (!written.ok()) {
    spdlog::error("execution {}: outcome {} not recorded: {}", rec.execution_id, rec.outcome, written.ToString());
    json body = ResponseBody(rec);
    body["outcome"] = "FAILED";
    body["reason"] = "store_unavailable";
    body["message"] = "the call reached the downstream but its outcome could not be recorded";
    InvokeResponse failed{503, Dump(body), 1};
    failed.reached_tool = true;
    return failed;
  }
  if (t.request.replay) s_.metrics.Replay(t.request.replay->force ? "forced" : "executed");
  json body = ResponseBody(rec);
  body["latency_ms"] = result.latency_ms;
  if (rec.outcome == "SUCCEEDED") body["result"] = result_json;
  if (rec.downstream_status) body["downstream_status"] = rec.downstream_status;
  if (k.retry_after_s) body["retry_after_ms"] = *k.retry_after_s * 1000;
  InvokeResponse answer{k.http_status, Dump(body), k.retry_after_s};
  answer.reached_tool = true;
  return answer;
}

// The breaker learns what the call said about the downstream (errors are logged: the outcome is
// still recorded and answered).
void ToolInvoker::RecordInBreaker(const Ticket& t, const Classification& k) {
  const ConnectorConfig& c = *t.connector;
  absl::Status st;
  switch (k.breaker) {
    case BreakerEffect::kSuccess: st = s_.breakers.RecordSuccess(c.id, c.breaker, t.permit); break;
    case BreakerEffect::kFailure: st = s_.breakers.RecordFailure(c.id, c.breaker, t.permit, t.record.tenant_id); break;
    case BreakerEffect::kThrottled:
      // A 429 without Retry-After still gives a probe back to OPEN (for a second): never a success.
      if (k.throttles_connector || t.permit.probe) {
        st = s_.breakers.RecordThrottled(c.id, c.breaker, t.permit, k.retry_after_s.value_or(1));
      }
      break;
    case BreakerEffect::kNone:
      if (t.permit.probe) st = s_.breakers.ReturnProbe(c.id, t.permit);
      break;
  }
  if (!st.ok()) spdlog::warn("connector {}: breaker not updated: {}", c.id, st.ToString());
}

// The ledger, the record, the intent and the slot's release in one batch (one transaction on
// SQLite), before answering (S9). TOOL_FAILED also for a DEFERRED that reached the downstream (429)
// or failed locally before sending (gateway_overloaded): the call was admitted and ended there.
absl::Status ToolInvoker::RecordOutcome(Ticket& t, const Classification& k, const DownstreamResult& result) {
  ExecutionRecord& rec = t.record;
  const std::string actor = rec.actor.empty() ? "tenant:" + rec.tenant_id : rec.actor;
  rec.finished_at_ms = s_.clock.now_epoch_ms();
  // The event carries what the record says, so `ledger verify` notices an edited record (S9, §19.6).
  json data = {{"latency_ms", result.latency_ms}, {"outcome", rec.outcome}};
  if (rec.downstream_status) data["downstream_status"] = rec.downstream_status;
  if (!rec.reason.empty()) data["reason"] = rec.reason;
  if (k.intent == IntentEffect::kUnknown) data["outcome_unknown"] = true;
  if (rec.outcome == "SUCCEEDED") data["result_sha256"] = Sha256Hex(rec.result_json);
  auto [w_event, event] = s_.ledger.PrepareAppend(
      t.chain, t.tail, rec.outcome == "SUCCEEDED" ? "TOOL_SUCCEEDED" : "TOOL_FAILED", actor, Dump(data));
  std::vector<store::WriteRequest> writes;
  writes.push_back(std::move(w_event));
  size_t required = 2;
  if (t.request.replay) {
    auto [w_done, done] = s_.ledger.PrepareAppend(t.chain, {event.seq, event.hash, event.expires_at_s},
                                                  "REPLAY_COMPLETED", actor, Dump(json{{"outcome", rec.outcome}}));
    writes.push_back(std::move(w_done));
    event = done;
    ++required;
  }
  rec.last_seq = event.seq;
  rec.last_hash = event.hash;
  writes.push_back(ExecutionStore::FinishRequest(rec));
  if (t.intent_claimed && k.intent != IntentEffect::kRelease) {
    writes.push_back(s_.intents.FinishRequest(rec.tenant_id, rec.intent_key, rec.execution_id, IntentState(k.intent),
                                              k.intent == IntentEffect::kSucceeded ? rec.result_json : ""));
  }
  if (t.request.replay && rec.outcome == "SUCCEEDED") {
    writes.push_back(ExecutionStore::ReplaySucceededRequest(rec.tenant_id, t.request.replay->original_id,
                                                            rec.execution_id, rec.result_json));
  }
  if (t.lease) writes.push_back(ConnectorConcurrencyService::ReleaseRequest(*t.lease));
  const auto results = s_.store.WriteBatch(writes);
  absl::Status written = RequireApplied(results, required);
  if (written.ok()) t.tail = {event.seq, event.hash, event.expires_at_s};
  if (t.lease && !results.back().ok()) {
    // The batch failed as a whole: try the release alone before leaving it to the lease.
    if (auto released = s_.slots.Release(*t.lease); !released.ok()) {
      spdlog::warn("connector {}: slot not released (its lease will expire): {}", t.connector->id,
                   released.status().ToString());
    }
  }
  return written;
}

void ToolInvoker::Abandon(std::unique_ptr<Ticket> ticket) {
  Ticket& t = *ticket;
  // What is not given back here comes back by itself (lease expiry, probe timeout, intent hold);
  // say so in the log.
  auto log = [&](const char* what, const absl::Status& st) {
    if (!st.ok()) spdlog::warn("execution {}: {} not given back: {}", t.record.execution_id, what, st.ToString());
  };
  if (t.lease) log("slot", s_.slots.Release(*t.lease).status());
  if (t.permit.probe) log("probe claim", s_.breakers.ReturnProbe(t.connector->id, t.permit));
  if (t.intent_claimed) {
    log("intent", s_.intents.Release(t.record.tenant_id, t.record.intent_key, t.record.execution_id, t.intent_previous));
  }
}

}  // namespace toolgate
