#include "toolgate/engine/tool_invoker.h"

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/store/awaitable_item_store.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate {

using json = nlohmann::json;
namespace asio = boost::asio;

namespace {

using WriteResults = std::vector<absl::StatusOr<store::WriteResult>>;

// A batch through the drive's asynchronous port (timed and its outcome recorded as the metered store
// does for its own), or through the synchronous store on the calling thread.
asio::awaitable<WriteResults> Commit(ToolInvoker::Services& s, StoreDrive drive,
                                     std::vector<store::WriteRequest> writes) {
  if (drive.port == nullptr) co_return s.store.WriteBatch(writes);
  const auto start = s.clock.now_monotonic();
  auto op = store::AsyncWriteBatch(*drive.port, std::move(writes), asio::use_awaitable);
  WriteResults results = co_await std::move(op);
  s.metrics.StoreOperation(std::string(s.store.backend_name()), "batch",
                           std::chrono::duration<double>(s.clock.now_monotonic() - start).count());
  if (s.write_health != nullptr) s.write_health->Record(results);
  co_return results;
}

// Blocking store work a service does on its own (its writes): on the drive's pool, or here.
template <typename F>
asio::awaitable<std::invoke_result_t<F>> Blocking(StoreDrive drive, F f) {
  if (drive.blocking == nullptr) co_return f();
  auto run = store::RunBlocking(*drive.blocking, std::move(f));
  co_return co_await std::move(run);
}

// A read the engine makes for a call: from the instance's fresh copy when `copy` has one (one
// lookup, never the store); else from the store — here when its reads are local (SQLite), on the
// pool when each is a round trip (DynamoDB's port), so a store that is slow or down holds a pool
// thread, never an event loop. The copy is asked once: no window between "fresh?" and the read.
template <typename Copy, typename Read>
asio::awaitable<std::invoke_result_t<Read>> LoopRead(StoreDrive drive, Copy copy, Read read) {
  if (auto held = copy()) co_return std::move(*held);
  if (drive.port == nullptr || drive.port->ReadsAreLocal()) co_return read();
  auto off = Blocking(drive, std::move(read));
  co_return co_await std::move(off);
}

// A store without a port reaches the loop's entry points only through the pool: the whole entry
// point runs there, as its blocking form, so a blocking store call never holds an event loop.
bool OnPoolWhole(StoreDrive drive) { return drive.port == nullptr && drive.blocking != nullptr; }

// The blocking form of an entry point: its coroutine run to its end on the calling thread.
template <typename T>
T RunToEnd(asio::awaitable<T> op) {
  asio::io_context here;
  std::optional<T> out;
  std::exception_ptr failed;
  asio::co_spawn(here, std::move(op), [&out, &failed](std::exception_ptr e, T value) {
    if (e) {
      failed = e;
    } else {
      out.emplace(std::move(value));
    }
  });
  here.run();
  if (failed) std::rethrow_exception(failed);
  return std::move(*out);
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int64_t RetryAfterSeconds(int64_t ms) { return std::max<int64_t>(1, (ms + 999) / 1000); }

// A TOOL_ATTEMPT_FAILED for each try that was followed by another, in order (§17.3).
void AppendFailedAttempts(const DownstreamResult& result, std::vector<std::pair<std::string, json>>& events) {
  for (const DownstreamResult::FailedAttempt& a : result.failed_attempts) {
    json attempt = {{"attempt", a.attempt}, {"reason", std::string(ToString(a.reason))}, {"latency_ms", a.latency_ms}};
    if (a.status != 0) attempt["downstream_status"] = a.status;
    events.push_back({"TOOL_ATTEMPT_FAILED", std::move(attempt)});
  }
}

// OK when the first `required` writes of a batch were applied (the rest may be refused harmlessly).
absl::Status RequireApplied(const std::vector<absl::StatusOr<store::WriteResult>>& results, size_t required) {
  for (size_t i = 0; i < results.size() && i < required; ++i) {
    if (!results[i].ok()) return results[i].status();
    if (!results[i]->applied) return absl::AbortedError("a ledger or execution write was refused");
  }
  return absl::OkStatus();
}

}  // namespace

InvokeResult InvokeResult::Refused(InvokeError error, std::string message, std::optional<int64_t> retry_after_s) {
  InvokeResult r;
  r.error = error;
  r.message = std::move(message);
  r.retry_after_s = retry_after_s;
  return r;
}

InvokeResult InvokeResult::Answered(Outcome outcome, OutcomeReason reason, std::string execution_id, json details,
                                    std::optional<int64_t> retry_after_s) {
  InvokeResult r;
  r.outcome = outcome;
  r.reason = reason;
  r.execution_id = std::move(execution_id);
  r.details = std::move(details);
  r.retry_after_s = retry_after_s;
  return r;
}

ToolInvoker::ToolInvoker(Services services) : s_(services) {
  for (const auto& [name, tool] : s_.config.tools) tools_by_folded_name_.emplace(FoldToolName(name), name);
}

std::optional<std::string> ToolInvoker::LookAlikeOf(const std::string& tool_name) const {
  if (s_.config.tools.count(tool_name) != 0) return std::nullopt;
  auto it = tools_by_folded_name_.find(FoldToolName(tool_name));
  if (it == tools_by_folded_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> ToolInvoker::NotServed(const ConnectorConfig* connector,
                                                  const std::string& tool_name) const {
  if (connector == nullptr) return "no connector serves tool '" + tool_name + "'";
  if (connector->is_mcp()) return std::nullopt;  // an MCP connector serves the exact names its server lists
  if (std::optional<std::string> listed = LookAlikeOf(tool_name)) {
    return "tool '" + tool_name + "' is not '" + *listed +
           "': a name that differs from a configured tool only in case or trailing '.', '-' or '_' is refused";
  }
  return std::nullopt;
}

ToolInvoker::~ToolInvoker() = default;

const DownstreamRequest& ToolInvoker::Downstream(const Ticket& ticket) { return ticket.downstream; }

const ConnectorConfig* ToolInvoker::ResolveConnector(const std::string& tool_name) const {
  auto find = [this](const std::string& id) -> const ConnectorConfig* {
    auto it = s_.config.connectors.find(id);
    return it == s_.config.connectors.end() ? nullptr : &it->second;
  };
  if (auto t = s_.config.tools.find(tool_name); t != s_.config.tools.end() && !t->second.connector_id.empty()) {
    const ConnectorConfig* c = find(t->second.connector_id);
    // An MCP connector serves what its server lists, whatever [tools] says about the name.
    if (c == nullptr || !c->is_mcp()) return c;
  }
  if (s_.mcp_tools != nullptr) {
    if (std::optional<std::string> id = s_.mcp_tools->ConnectorOf(tool_name)) return find(*id);
  }
  const ConnectorConfig* c = find(tool_name.substr(0, tool_name.find('.')));
  return c != nullptr && !c->is_mcp() ? c : nullptr;
}

namespace {

// A claimed call put back because its breaker is open (or probing) is ready again after at most this:
// the dispatchers park on the breaker themselves, so an operator's close (or the probe's success)
// drains the queue at once instead of after the open breaker's whole retry-after.
constexpr int64_t kBreakerPutBackMs = 1000;

// The answer of a stage that stopped on store trouble (StoreUnavailable): nothing was written for it.
bool IsStoreTrouble(const InvokeResult& answer) {
  return !answer.refused() && answer.outcome == Outcome::kDeferred &&
         answer.reason == OutcomeReason{DeferReason::kStoreUnavailable};
}

bool Queueable(DeferReason why) {
  return why == DeferReason::kBreakerOpen || why == DeferReason::kProbeInFlight ||
         why == DeferReason::kConcurrencyLimit || why == DeferReason::kTenantConcurrencyLimit ||
         why == DeferReason::kDownstreamThrottled;
}

// A queued call's answer (§15): where to find its outcome.
InvokeResult QueuedAnswer(const std::string& execution_id, const std::string& connector_id,
                          Outcome outcome = Outcome::kQueued) {
  return InvokeResult::Answered(outcome, {}, execution_id,
                                {{"connector_id", connector_id}, {"status_url", "/v1/executions/" + execution_id}});
}

// The answer of an execution that ended (or stopped) with `r`'s outcome and `reason` (r.reason's).
InvokeResult RecordAnswer(const ExecutionRecord& r, OutcomeReason reason,
                          std::optional<int64_t> retry_after_s = std::nullopt) {
  json details = {{"connector_id", r.connector_id}};
  if (!r.replay_of.empty()) details["replay_of"] = r.replay_of;
  return InvokeResult::Answered(r.outcome, reason, r.execution_id, std::move(details), retry_after_s);
}

// The queue item of an execution queued by `order`, ready at `ready_at_ms` (§15).
QueueItem ItemOf(const ExecutionRecord& rec, const QueueOrder& order, int64_t ready_at_ms) {
  QueueItem item;
  item.connector_id = rec.connector_id;
  item.tenant_id = rec.tenant_id;
  item.execution_id = rec.execution_id;
  item.tool_name = rec.tool_name;
  item.action_type = rec.action_type;
  item.enqueued_at_ms = rec.created_at_ms;
  item.ready_at_ms = ready_at_ms;
  item.deadline_ms = rec.created_at_ms + order.deadline_s * 1000;
  item.callback_url = order.callback_url;
  return item;
}

// The tenant's count and the item, the item only if the count had room.
std::vector<store::WriteRequest> EnqueueRequests(const QueueItem& item, const QueueOrder& order) {
  // A forgotten item (every dispatcher gone for good) leaves a day after its deadline.
  const int64_t ttl_s = item.deadline_ms / 1000 + 86'400;
  return QueueService::EnqueueRequests(item, order.max_per_tenant, ttl_s);
}

// EXECUTION_QUEUED's data: `via` says what queued it ("queued", "on_defer:<reason>").
json QueuedEventData(const QueueItem& item, std::string via) {
  json queued = {{"deadline_at_ms", item.deadline_ms}, {"ready_at_ms", item.ready_at_ms}, {"via", std::move(via)}};
  if (!item.callback_url.empty()) queued["callback_url"] = item.callback_url;
  return queued;
}

// A claimed queued call goes back to its queue (§15, §17.3): the item unclaimed and ready after
// `retry_ms`, then (only if that applied) TOOL_ATTEMPT_FAILED and the record QUEUED again; the slot
// given back in the same batch. kAborted when the claim was lost meanwhile.
absl::Status WriteRequeue(ToolInvoker::Services& s, InvocationTicket& t, const RequeueCause& reason, int64_t retry_ms,
                          json data) {
  ExecutionRecord& rec = t.record;
  const std::string actor = rec.actor.empty() ? "tenant:" + rec.tenant_id : rec.actor;
  const int64_t ready_at_ms = s.clock.now_epoch_ms() + std::max<int64_t>(retry_ms, 0);
  data["attempt"] = t.queued->item.attempt;
  data["reason"] = std::string(ToString(reason));
  data["requeued"] = true;
  data["ready_at_ms"] = ready_at_ms;
  std::vector<store::WriteRequest> writes;
  writes.push_back(QueueService::RequeueRequest(*t.queued, ready_at_ms));
  auto [w_event, event] = s.ledger.PrepareAppendJson(t.chain, t.tail, "TOOL_ATTEMPT_FAILED", actor, data);
  writes.push_back(std::move(w_event).AfterPrevious());
  rec.outcome = Outcome::kQueued;
  rec.reason.clear();
  rec.last_seq = event.seq;
  rec.last_hash = event.hash;
  writes.push_back(ExecutionStore::FinishRequest(rec).AfterPrevious());
  if (t.lease) writes.push_back(ConnectorConcurrencyService::ReleaseRequest(*t.lease));
  const auto results = s.store.WriteBatch(writes);
  if (t.lease) {
    if (!results.back().ok()) {
      if (auto released = s.slots.Release(*t.lease); !released.ok()) {
        spdlog::warn("connector {}: slot not released (its lease will expire): {}", rec.connector_id,
                     released.status().ToString());
      }
    }
    t.lease.reset();
  }
  absl::Status st = RequireApplied(results, 3);
  if (st.ok()) t.tail = {event.seq, event.hash, event.expires_at_s};
  return st;
}

}  // namespace

// One call's way through admission (design §5): the ticket being filled, and the helpers every stage
// uses to end the execution early. A stage returns the answer when the call stops there.
class ToolInvoker::Admission {
 public:
  using Stop = std::optional<InvokeResult>;

  Admission(ToolInvoker::Services& s, StoreDrive drive, const InvokeRequest& req, const ConnectorConfig& connector)
      : s_(s), drive_(drive), req_(req), ticket_(std::make_unique<Ticket>()) {
    Ticket& t = *ticket_;
    t.connector = &connector;
    t.request = req;
    t.request.input.reset();  // read only before this (CheckInput)
    ExecutionRecord& rec = t.record;
    rec.execution_id = req.execution_id.empty() ? NewUuidV7(s_.clock) : req.execution_id;
    rec.tenant_id = req.principal.tenant_id;
    rec.account_id = req.principal.account_id;
    rec.tool_name = req.tool_name;
    rec.connector_id = connector.id;
    rec.action_type = EffectiveActionType();
    rec.actor = req.principal.subject;
    rec.idempotency_key = req.idempotency_key;
    rec.intent_key = req.replay ? req.replay->original_intent_key
                                : (req.idempotency_key.empty() ? rec.execution_id : req.idempotency_key);
    rec.input_hash = ExecutionStore::InputHash(req.tool_name, req.input_json);
    rec.input_json = std::move(t.request.input_json);  // the record's is the one read from here on
    if (req.replay) rec.replay_of = req.replay->original_id;
    rec.created_at_ms = s_.clock.now_epoch_ms();
    t.chain = Ledger::ExecutionChain(rec.execution_id);
    actor_ = rec.actor.empty() ? "tenant:" + rec.tenant_id : rec.actor;
  }

  // A claimed queue item's run (§15): the execution exists; its chain continues from the record.
  Admission(ToolInvoker::Services& s, StoreDrive drive, const InvokeRequest& req, const ConnectorConfig& connector,
            const ExecutionRecord& existing, const QueueClaim& claim, std::optional<SlotLease> lease,
            std::string_view instance_id)
      : Admission(s, drive, req, connector) {
    Ticket& t = *ticket_;
    was_running_ = existing.outcome == Outcome::kRunning;
    t.record = existing;
    t.tail = {existing.last_seq, existing.last_hash, existing.expires_at_s};
    t.queued = claim;
    t.lease = std::move(lease);
    t.instance_id = std::string(instance_id);
    t.intent_claimed = !existing.idempotency_key.empty();  // claimed at enqueue, held until the end
  }

  // How long an intent claimed at enqueue is held: the whole time the call may wait in the queue.
  void HoldIntentFor(int64_t hold_ms) { intent_hold_ms_ = hold_ms; }
  void AnswerExistingWhenInProgress() { enqueueing_ = true; }

  // 1. Kill switches (S8), before anything is taken.
  asio::awaitable<Stop> CheckKillSwitches() {
    // From the instance's snapshot; its refresh (a Query of every switch, once per refresh_ms) is a
    // round trip on DynamoDB, made on the pool, never an event loop. One refresh at a time: the calls
    // that waited for it take its answer, so with the store down they share one try's error.
    auto match = LoopRead(
        drive_,
        [this] {
          return s_.kill_switches.MatchFromFreshCopy(rec().tenant_id, cid(), rec().action_type, rec().tool_name);
        },
        [this] { return s_.kill_switches.Match(rec().tenant_id, cid(), rec().action_type, rec().tool_name); });
    absl::StatusOr<std::optional<KillSwitch>> kill = co_await std::move(match);
    if (!kill.ok()) {
      auto trouble = StoreTrouble(kill.status());
      co_return co_await std::move(trouble);
    }
    if (!kill->has_value()) co_return std::nullopt;
    const KillSwitch k = **kill;
    if (ticket_->queued) co_await ReleaseIntent();  // a switch in force at dispatch ends the call (§17.5)
    rec().reason = std::string(ToString(BlockReason::kKillSwitch));
    auto finish =
        FinishEarly(Outcome::kBlocked, "EXECUTION_BLOCKED", {{"scope", k.scope}, {"key", k.key}, {"reason", k.reason}});
    // Counted as what the caller is told: a block the store could not record is answered (and
    // counted) DEFERRED store_unavailable, not both.
    if (absl::Status st = co_await std::move(finish); !st.ok()) co_return StoreUnavailable(st);
    s_.metrics.Blocked(cid(), k.scope);
    s_.metrics.ToolCall(cid(), rec().tool_name, Outcome::kBlocked, 0, false);
    CountOutcome(Outcome::kBlocked, "");
    InvokeResult answer = RecordAnswer(rec(), BlockReason::kKillSwitch);
    answer.details["scope"] = k.scope;
    co_return answer;
  }

  // 2. Intent (tool-layer idempotency, S12), for a client-supplied key and every replay. A replay of
  // an intent that already succeeded is answered from the record; a forced one takes the intent over
  // (so forced replays, too, run one at a time) and gives it back as it was unless it succeeds.
  asio::awaitable<Stop> CheckIntent() {
    const InvokeRequest& req = req_;
    if (ticket_->queued) co_return std::nullopt;  // checked, and claimed, at enqueue (§17.5)
    if (req.replay && !req.replay->force && req.replay->original_outcome == Outcome::kSucceeded) {
      auto deduplicated = Deduplicated(req.replay->succeeded_in, req.replay->original_result_json);
      co_return co_await std::move(deduplicated);
    }
    if (req.idempotency_key.empty() && !req.replay) co_return std::nullopt;
    // The usual call with a key (through the port, neither a replay nor one that may be queued)
    // claims a new intent in its opening batch, with the slot and the record (design §16: two
    // commits per call, a key or not). Whatever leaves that path first claims it here, the way
    // below, before anything else is written: ClaimPendingIntent.
    if (drive_.port != nullptr && !req.replay && !enqueueing_ && !req.queue_on_defer) {
      intent_pending_ = true;
      co_return std::nullopt;
    }
    co_return co_await ClaimIntent();
  }

  // Held past the call's end by the clock skew allowed, as slots are (S7): a host whose clock runs
  // that far ahead must not take a live intent over and send its key a second time.
  int64_t IntentHoldMs() {
    return std::max(intent_hold_ms_, int64_t{connector().timeout_ms} + 30'000) +
           int64_t{connector().concurrency.max_clock_skew_s} * 1000;
  }

  store::WriteRequest NewIntentClaim() {
    return s_.intents.NewClaimRequest(rec().tenant_id, rec().intent_key, rec().input_hash, rec().execution_id,
                                      IntentHoldMs());
  }

  // An intent CheckIntent left for the opening batch, claimed now: the call left that path.
  asio::awaitable<Stop> ClaimPendingIntent() {
    if (!intent_pending_) co_return std::nullopt;
    intent_pending_ = false;
    co_return co_await ClaimIntent();
  }

  asio::awaitable<Stop> ClaimIntent() {
    const InvokeRequest& req = req_;
    const int64_t hold_ms = IntentHoldMs();
    const bool forced = req.replay && req.replay->force;
    // A new intent, the usual case, is claimed by one write through the port, on this loop; an
    // intent that is there already (a retry, a hit, a replay) the blocking way, which reads it.
    if (drive_.port != nullptr && !intent_there_) {
      std::vector<store::WriteRequest> claim_new;
      claim_new.push_back(NewIntentClaim());
      auto commit = Commit(s_, drive_, std::move(claim_new));
      WriteResults written = co_await std::move(commit);
      if (!written[0].ok()) co_return StoreUnavailable(written[0].status());
      if (written[0]->applied) {
        ticket_->intent_claimed = true;
        co_return std::nullopt;
      }
    }
    auto try_claim = Blocking(drive_, [this, hold_ms, forced] {
      return s_.intents.TryClaim(rec().tenant_id, rec().intent_key, rec().input_hash, rec().execution_id, hold_ms,
                                 forced);
    });
    absl::StatusOr<IntentStore::Claim> claim = co_await std::move(try_claim);
    if (!claim.ok()) co_return StoreUnavailable(claim.status());
    switch (claim->kind) {
      case IntentStore::Claim::Kind::kMismatch:
        co_return InvokeResult::Refused(InvokeError::kIdempotencyKeyReused,
                                        "this idempotency_key was used with a different tool or input");
      case IntentStore::Claim::Kind::kSucceeded:
        co_return co_await Succeeded(*claim);
      case IntentStore::Claim::Kind::kInProgress:
        if (enqueueing_) {
          auto existing = Blocking(drive_, [this, &claim] { return Existing(claim->execution_id); });
          co_return co_await std::move(existing);
        }
        co_return co_await Deferred(DeferReason::kIntentInProgress, 1000);
      case IntentStore::Claim::Kind::kClaimed:
        ticket_->intent_claimed = true;
        ticket_->intent_previous = claim->previous;
        ticket_->intent_previous_execution_id = std::move(claim->previous_execution_id);
        ticket_->intent_previous_result_json = std::move(claim->previous_result_json);
        ticket_->intent_previous_execution_expires_at_s = claim->previous_execution_expires_at_s;
        break;
    }
    co_return std::nullopt;
  }

  // 3. Breaker permission (S1–S3).
  asio::awaitable<Stop> AskBreaker() {
    Ticket& t = *ticket_;
    if (!t.guarded) co_return std::nullopt;
    // The usual answer (CLOSED: allowed) is a read, made here (from the instance's copy, or from a
    // store whose reads are local; a round trip goes to the pool); anything else may claim the
    // probe, a conditional write, and asks again the blocking way.
    auto read = LoopRead(
        drive_, [this] { return s_.breakers.PermitFromFreshCopy(cid(), connector().breaker); },
        [this] { return s_.breakers.RequestPermissionWithoutProbe(cid(), connector().breaker); });
    absl::StatusOr<CircuitBreakerService::Permit> permit = co_await std::move(read);
    if (!permit.ok() || !permit->allowed) {
      // The intent first, as when it was claimed before the breaker was asked: an intent that
      // succeeded is answered from its record while the breaker is open, and no probe is claimed
      // for a call its intent then stops.
      if (Stop stop = co_await ClaimPendingIntent()) co_return stop;
      auto ask = Blocking(drive_, [this] { return s_.breakers.RequestPermission(cid(), connector().breaker); });
      permit = co_await std::move(ask);
    }
    if (!permit.ok()) {
      auto trouble = StoreTrouble(permit.status());
      co_return co_await std::move(trouble);
    }
    if (!permit->allowed) co_return co_await Deferred(permit->reason, permit->retry_after_ms);
    t.permit = *permit;
    co_return std::nullopt;
  }

  // 4. Concurrency slot (S6). A probe winner without a slot gives the probe back (§5).
  asio::awaitable<Stop> TakeSlot() {
    Ticket& t = *ticket_;
    if (!t.guarded || t.lease) co_return co_await ClaimPendingIntent();  // a dispatcher took the slot before its claim
    if (!t.queued && co_await OpenWithSlot()) co_return std::nullopt;
    if (store::NothingWritten(open_trouble_) && connector().on_store_error != OnStoreError::kAllow) {
      // The store wrote nothing of the batch (its write lock held by another process past the busy
      // timeout): the long way's writes would each wait as long again (a lock held for 14 s was a
      // call kept 14 s, then run). The call is answered now. (An outcome the store cannot know, a
      // DynamoDB timeout, goes the long way once: a lost answer is no sign the store is down.)
      co_await ReturnProbe();
      t.permit = {};
      auto trouble = StoreTrouble(open_trouble_);
      co_return co_await std::move(trouble);
    }
    // The batch's intent claim refused (the intent is there) or the batch not written: claimed
    // the way CheckIntent would have, which may answer the call (an intent hit, one in progress).
    if (Stop stop = co_await ClaimPendingIntent()) {
      co_await ReturnProbe();
      co_return stop;
    }
    SlotRefusal refusal = SlotRefusal::kConnectorFull;
    auto acquire = Blocking(drive_, [this, &refusal] {
      return s_.slots.TryAcquire(cid(), connector().concurrency, rec().tenant_id, &refusal);
    });
    absl::StatusOr<std::optional<SlotLease>> lease = co_await std::move(acquire);
    if (lease.ok() && lease->has_value()) {
      t.lease = **lease;
      co_return std::nullopt;
    }
    co_await ReturnProbe();
    if (lease.ok()) {
      co_return co_await Deferred(
          refusal == SlotRefusal::kTenantShare ? DeferReason::kTenantConcurrencyLimit : DeferReason::kConcurrencyLimit,
          1000);
    }
    t.permit = {};
    auto trouble = StoreTrouble(lease.status());
    co_return co_await std::move(trouble);
  }

  // A probe claim this call will not use, given back (S2).
  asio::awaitable<void> ReturnProbe() {
    Ticket& t = *ticket_;
    if (!t.permit.probe) co_return;
    auto give_back = Blocking(drive_, [this, &t] { return s_.breakers.ReturnProbe(cid(), t.permit); });
    if (absl::Status st = co_await std::move(give_back); !st.ok()) {
      spdlog::warn("connector {}: probe claim not given back (it expires): {}", cid(), st.ToString());
    }
  }

  // 4+5 in one batch, the usual path (design §16): the slot's conditional acquire first, then the
  // record and its opening events, each write applied only if the one before it was — one commit
  // instead of two. True when the acquire was applied: the slot is held and the opening written (or
  // its failure kept for WriteInvoked, whose caller then gives the slot back). False when it was not
  // (the shard full, its item missing, store trouble): nothing was written, and TakeSlot goes the
  // long way (every shard, reclaiming expired leases, S10), as before.
  // A pending intent claim goes first in the same batch, the acquire only if it was applied: refused,
  // nothing was written, and it stays pending for TakeSlot. Applied, the intent is held whether the
  // acquire was or not (as when it was claimed on its own before the slot).
  asio::awaitable<bool> OpenWithSlot() {
    Ticket& t = *ticket_;
    auto [acquire, lease] = s_.slots.PrepareAcquire(cid(), connector().concurrency, rec().tenant_id);
    std::vector<store::WriteRequest> prefix;
    const bool with_intent = intent_pending_;
    if (with_intent) {
      prefix.push_back(NewIntentClaim());
      acquire.requires_back = 1;
    }
    prefix.push_back(std::move(acquire));
    size_t prefix_applied = 0;
    auto open = WriteOpening(OpeningEvents(), /*ends_here=*/false, std::move(prefix), &prefix_applied);
    absl::Status written = co_await std::move(open);
    if (with_intent && prefix_applied >= 1) {
      intent_pending_ = false;
      t.intent_claimed = true;
    } else if (with_intent && absl::IsResourceExhausted(written)) {
      intent_there_ = true;  // refused: the claim reads what is there, without trying the write again
    }
    const bool acquired = prefix_applied == (with_intent ? 2u : 1u);
    const bool trouble = !acquired && prefix_applied == (with_intent ? 1u : 0u) && store::IsStoreError(written) &&
                         !absl::IsResourceExhausted(written);  // not so: refused (the shard full), nothing taken
    if (trouble) open_trouble_ = written;
    if (trouble && !store::NothingWritten(written)) {
      // The acquire's outcome is unknown (a DynamoDB timeout or 500 after the request went out): it
      // may hold a slot under this lease, which nothing would give back before the lease runs out —
      // while TakeSlot takes another. Given back now; the release is conditional on the holder, so a
      // slot that was never taken is left alone. (Not where the store says it wrote nothing: a
      // release would only wait for the same lock.)
      const SlotLease& prepared = lease;  // a structured binding: not capturable in C++20 by clang 14
      auto release = Blocking(drive_, [this, &prepared] { return s_.slots.Release(prepared).status(); });
      if (absl::Status released = co_await std::move(release); !released.ok()) {
        spdlog::warn(
            "connector {}: a slot whose acquire's outcome is unknown was not given back (its lease will "
            "expire): {}",
            cid(), released.ToString());
      }
    }
    if (!acquired) co_return false;
    t.lease = std::move(lease);
    opening_written_ = written;
    co_return true;
  }

  // 5. The record and TOOL_INVOKED are durable before the downstream is called (S9).
  asio::awaitable<Stop> WriteInvoked() {
    Ticket& t = *ticket_;
    const InvokeRequest& req = req_;
    if (!opening_written_) {
      auto open = WriteOpening(OpeningEvents(), /*ends_here=*/false);
      opening_written_ = co_await std::move(open);
    }
    if (!opening_written_->ok()) co_return StoreUnavailable(*opening_written_);  // the caller abandons the ticket
    t.downstream.connector = &connector();
    t.downstream.tool_name = req.tool_name;
    if (auto tool = s_.config.tools.find(req.tool_name); tool != s_.config.tools.end()) {
      t.downstream.idempotent = tool->second.idempotent;
    }
    t.downstream.idempotency_key = IntentStore::DownstreamKey(rec().tenant_id, rec().intent_key);
    t.downstream.execution_id = rec().execution_id;
    t.downstream.tenant_id = rec().tenant_id;
    co_return std::nullopt;
  }

  // The events that open a call that goes to the downstream, TOOL_INVOKED last.
  std::vector<std::pair<std::string, json>> OpeningEvents() {
    Ticket& t = *ticket_;
    const InvokeRequest& req = req_;
    rec().unguarded = !t.guarded;
    json invoked = {{"probe", t.permit.probe}, {"breaker_generation", t.permit.generation}};
    if (!t.guarded) invoked["unguarded"] = true;
    if (t.intent_previous == IntentStore::State::kUnknown) invoked["previous_outcome"] = "unknown";
    std::vector<std::pair<std::string, json>> opening;
    if (req.replay && req.replay->force) {
      opening.push_back({"REPLAY_FORCED", {{"requested_by", req.replay->requested_by}, {"actor", actor_}}});
    }
    if (req.replay && req.replay->original_outcome != Outcome::kSucceeded && !req.replay->force) {
      invoked["original_outcome"] = req.replay->original_outcome;  // what the replay knew of the earlier attempt
    }
    if (t.queued) {
      rec().outcome = Outcome::kRunning;
      if (t.queued->took_over && was_running_) {
        opening.push_back({"TOOL_ATTEMPT_FAILED",
                           {{"attempt", t.queued->item.attempt - 1}, {"reason", RequeueReason::kClaimExpired}}});
      }
      opening.push_back({"EXECUTION_DISPATCHED", {{"instance", t.instance_id}, {"attempt", t.queued->item.attempt}}});
    }
    opening.push_back({"TOOL_INVOKED", invoked});
    return opening;
  }

  // 5'. For Enqueue and `on_defer: queue`: the record (QUEUED), its opening events and the queue item
  // in one batch, ready at `ready_at_ms` (§15).
  asio::awaitable<InvokeResult> WriteQueued(QueueOrder order, int64_t ready_at_ms, std::string via) {
    if (s_.queue == nullptr)
      co_return InvokeResult::Refused(InvokeError::kNotImplemented, "queued calls are not available");
    rec().outcome = Outcome::kQueued;
    rec().reason.clear();
    const QueueItem item = ItemOf(rec(), order, ready_at_ms);
    auto open = WriteOpening({{"EXECUTION_QUEUED", QueuedEventData(item, std::move(via))}},
                             /*ends_here=*/false, EnqueueRequests(item, order));
    absl::Status written = co_await std::move(open);
    if (absl::IsResourceExhausted(written)) {
      co_await ReleaseIntent();
      co_return InvokeResult::Refused(
          InvokeError::kQueueFull,
          absl::StrCat("this tenant has ", order.max_per_tenant, " queued calls (the [queue] max_per_tenant bound)"),
          1);
    }
    if (!written.ok()) {
      co_await ReleaseIntent();
      co_return StoreUnavailable(written);
    }
    co_return QueuedAnswer(rec().execution_id, cid());
  }

  // Ends a claimed call before the downstream (the tool is gone, the input no longer fits).
  asio::awaitable<InvokeResult> EndClaimed(FailureReason reason) {
    rec().reason = std::string(ToString(reason));
    co_await ReleaseIntent();
    auto finish = FinishEarly(Outcome::kFailed, "EXECUTION_FAILED", {{"reason", reason}});
    if (absl::Status st = co_await std::move(finish); !st.ok()) co_return StoreUnavailable(st);
    co_return RecordAnswer(rec(), reason);
  }

  std::unique_ptr<Ticket> TakeTicket() { return std::move(ticket_); }

  // What the agent is answered, counted fleet-wide for `toolgate status` (SloCounters::RecordOutcome).
  void CountOutcome(Outcome outcome, std::string_view reason) {
    if (s_.slo != nullptr) s_.slo->RecordOutcome(cid(), outcome, reason);
  }
  Ticket& ticket() { return *ticket_; }

 private:
  ExecutionRecord& rec() { return ticket_->record; }
  const ConnectorConfig& connector() const { return *ticket_->connector; }
  const std::string& cid() const { return ticket_->connector->id; }

  // The effective action type (DESIGN §1): the config's for a tool it classifies, whatever the
  // caller says (no relabelling around a kill switch); else the caller's; else the tool name.
  std::string EffectiveActionType() const {
    if (auto t = s_.config.tools.find(req_.tool_name); t != s_.config.tools.end() && !t->second.action_type.empty()) {
      return t->second.action_type;
    }
    return req_.action_type.empty() ? req_.tool_name : req_.action_type;
  }

  // S10: store trouble makes the call DEFERRED store_unavailable, or — with on_store_error = allow —
  // run without breaker and slot (recorded as unguarded). A caller's mistake (kInvalidArgument: a bug)
  // never runs a call unguarded.
  asio::awaitable<Stop> StoreTrouble(absl::Status why) {
    if (connector().on_store_error == OnStoreError::kAllow && store::IsStoreError(why)) {
      ticket_->guarded = false;
      co_return std::nullopt;
    }
    if (!ticket_->queued) co_await ReleaseIntent();  // a queued call keeps its intent while it waits
    co_return StoreUnavailable(why);
  }

  InvokeResult StoreUnavailable(const absl::Status& why) {
    spdlog::warn("connector {}: store error, deferring: {}", cid(), why.ToString());
    const std::string reason(ToString(DeferReason::kStoreUnavailable));
    s_.metrics.Deferred(cid(), reason);
    CountOutcome(Outcome::kDeferred, reason);
    return InvokeResult::Answered(Outcome::kDeferred, DeferReason::kStoreUnavailable, rec().execution_id,
                                  {{"connector_id", cid()}, {"retry_after_ms", 1000}}, 1);
  }

  // The record and its opening events in one batch (one transaction on SQLite): for a replay
  // REPLAY_STARTED first, then EXECUTION_RECEIVED, then `events`, then for a replay that ends here
  // REPLAY_COMPLETED. The record anchors its chain (last_seq/last_hash).
  //
  // A claimed queued call's record exists: its events follow its chain, the record is updated, and
  // when the call ends here its queue item and slot go in the same batch. `prefix` (enqueue) comes
  // first and everything after depends on it: a refused [0] is kResourceExhausted (queue full, no
  // slot); `prefix_applied`, when given, tells whether [0] was applied.
  asio::awaitable<absl::Status> WriteOpening(std::vector<std::pair<std::string, json>> events, bool ends_here,
                                             std::vector<store::WriteRequest> prefix = {},
                                             size_t* prefix_applied = nullptr) {
    Ticket& t = *ticket_;
    const InvokeRequest& req = req_;
    if (t.queued) {
      auto run = WriteQueuedRun(std::move(events), ends_here);
      co_return co_await std::move(run);
    }
    // The record and every event of its chain expire together; an execution deferred before it
    // reached the connector is kept for the (shorter) deferred retention.
    rec().expires_at_s =
        s_.ledger.retention().ExecutionExpiry(rec().created_at_ms, ends_here && rec().outcome == Outcome::kDeferred);
    t.tail.expires_at_s = rec().expires_at_s;
    // The events go in the record (DESIGN §16): one write, whatever their number.
    std::vector<LedgerEvent> own_path;
    Ledger::Tail tail = t.tail;
    auto add = [&own_path, &tail](LedgerEvent e) {
      tail = {e.seq, e.hash, e.expires_at_s};
      own_path.push_back(std::move(e));
    };
    if (req.replay) {
      add(s_.ledger.MakeEventJson(tail, "REPLAY_STARTED", actor_,
                                  {{"replay_of", req.replay->original_id},
                                   {"replay_reason", req.replay->reason},
                                   {"requested_by", req.replay->requested_by},
                                   {"force", req.replay->force}}));
    }
    add(s_.ledger.MakeEventText(tail, "EXECUTION_RECEIVED", actor_, ExecutionStore::ReceivedText(rec())));
    for (const auto& [type, data] : events) add(s_.ledger.MakeEventJson(tail, type, actor_, data));
    if (req.replay && ends_here)
      add(s_.ledger.MakeEventJson(tail, "REPLAY_COMPLETED", actor_, {{"outcome", rec().outcome}}));
    rec().last_seq = tail.seq;
    rec().last_hash = tail.hash;
    rec().own_events = Ledger::EncodeOwnPath(own_path, rec());
    std::vector<store::WriteRequest> writes;
    const bool as_items = rec().own_events.size() > Ledger::kMaxOwnPathBytes;
    if (as_items) rec().own_events.clear();  // too big to hold: a chain of items the record anchors
    writes.push_back(ExecutionStore::CreateRequest(rec()));
    if (as_items) {
      for (const LedgerEvent& e : own_path) writes.push_back(Ledger::EventItemRequest(t.chain, e));
      own_path.clear();
    }
    const size_t first = prefix.size();
    if (first > 0) {
      for (store::WriteRequest& w : writes) w.requires_back = 1;
      writes.insert(writes.begin(), std::make_move_iterator(prefix.begin()), std::make_move_iterator(prefix.end()));
    }
    // The tenant's entry in the tenant list, which Locate needs, once per process (unconditional),
    // before the record: on a store without transactions a crash between the two leaves an entry,
    // never a record Locate cannot find.
    std::optional<store::WriteRequest> tenant_entry = s_.executions.TenantEntryIfNew(rec().tenant_id);
    const size_t skip = tenant_entry ? 1 : 0;
    if (tenant_entry) writes.insert(writes.begin(), *std::move(tenant_entry));
    const size_t count = writes.size();
    auto commit = Commit(s_, drive_, std::move(writes));
    WriteResults results = co_await std::move(commit);
    if (skip > 0 && store::Applied(results[0])) s_.executions.NoteTenant(rec().tenant_id);
    results.erase(results.begin(), results.begin() + static_cast<std::ptrdiff_t>(skip));
    // The prefix's writes are chained: those applied are its first ones.
    size_t applied = 0;
    while (applied < first && store::Applied(results[applied])) ++applied;
    if (prefix_applied != nullptr) *prefix_applied = applied;
    if (applied < first && results[applied].ok()) co_return absl::ResourceExhaustedError("prefix refused");
    if (absl::Status st = RequireApplied(results, count - skip); !st.ok()) co_return st;
    t.tail = tail;
    t.own_path = std::move(own_path);
    t.own_text = t.own_path.empty() ? std::string() : rec().own_events;
    co_return absl::OkStatus();
  }

  asio::awaitable<absl::Status> WriteQueuedRun(std::vector<std::pair<std::string, json>> events, bool ends_here) {
    Ticket& t = *ticket_;
    std::vector<store::WriteRequest> writes;
    Ledger::Tail tail = t.tail;
    // Each write after the first only after the one before it: an event refused (another writer
    // took its sequence number) leaves the rest of the chain and the record's anchor as they were,
    // rather than a record naming an event that was never written.
    for (const auto& [type, data] : events) {
      auto [w, e] = s_.ledger.PrepareAppendJson(t.chain, tail, type, actor_, data);
      writes.push_back(writes.empty() ? std::move(w) : std::move(w).AfterPrevious());
      tail = {e.seq, e.hash, e.expires_at_s};
    }
    rec().last_seq = tail.seq;
    rec().last_hash = tail.hash;
    writes.push_back(writes.empty() ? ExecutionStore::FinishRequest(rec())
                                    : ExecutionStore::FinishRequest(rec()).AfterPrevious());
    size_t required = writes.size();
    if (ends_here) {
      for (store::WriteRequest& w : QueueService::CompleteRequests(*t.queued)) writes.push_back(std::move(w));
      if (t.lease) writes.push_back(ConnectorConcurrencyService::ReleaseRequest(*t.lease));
    }
    auto commit = Commit(s_, drive_, std::move(writes));
    if (absl::Status st = RequireApplied(co_await std::move(commit), required); !st.ok()) co_return st;
    if (ends_here) t.lease.reset();
    t.tail = tail;
    co_return absl::OkStatus();
  }

  // An execution that ends here, before any downstream call.
  asio::awaitable<absl::Status> FinishEarly(Outcome outcome, std::string event, json data) {
    rec().outcome = outcome;
    rec().finished_at_ms = s_.clock.now_epoch_ms();
    auto open = WriteOpening({{std::move(event), std::move(data)}}, /*ends_here=*/true);
    co_return co_await std::move(open);
  }

  asio::awaitable<void> ReleaseIntent() {
    Ticket& t = *ticket_;
    if (!t.intent_claimed) co_return;
    auto release = Blocking(drive_, [this, &t] {
      return s_.intents.Release(rec().tenant_id, rec().intent_key, rec().execution_id, t.intent_previous,
                                t.intent_previous_execution_id, t.intent_previous_result_json,
                                t.intent_previous_execution_expires_at_s);
    });
    if (absl::Status st = co_await std::move(release); !st.ok()) {
      spdlog::warn("intent {} not released: {}", rec().intent_key, st.ToString());
    }
  }

  asio::awaitable<InvokeResult> Deferred(DeferReason why, int64_t retry_ms) {
    if (ticket_->queued) {
      const bool breaker = why == DeferReason::kBreakerOpen || why == DeferReason::kProbeInFlight;
      co_return co_await Requeue(why, breaker ? std::min(retry_ms, kBreakerPutBackMs) : retry_ms);
    }
    if (req_.queue_on_defer && Queueable(why)) {
      auto queue = WriteQueued(*req_.queue_on_defer, s_.clock.now_epoch_ms() + retry_ms,
                               absl::StrCat("on_defer:", std::string(ToString(why))));
      co_return co_await std::move(queue);
    }
    co_await ReleaseIntent();
    rec().reason = std::string(ToString(why));
    auto finish =
        FinishEarly(Outcome::kDeferred, "EXECUTION_DEFERRED", {{"reason", rec().reason}, {"retry_after_ms", retry_ms}});
    if (absl::Status st = co_await std::move(finish); !st.ok()) co_return StoreUnavailable(st);  // counted there
    s_.metrics.Deferred(cid(), rec().reason);
    s_.metrics.ToolCall(cid(), rec().tool_name, Outcome::kDeferred, 0, false);
    CountOutcome(Outcome::kDeferred, rec().reason);
    InvokeResult answer = RecordAnswer(rec(), why, RetryAfterSeconds(retry_ms));
    answer.details["retry_after_ms"] = retry_ms;
    co_return answer;
  }

  // A claimed queued call that cannot run now goes back to its queue (§15, §17.3): TOOL_ATTEMPT_FAILED
  // with the reason, the record QUEUED again, the item unclaimed and ready after `retry_ms`, the slot
  // given back — in one batch. The intent stays claimed.
  asio::awaitable<InvokeResult> Requeue(DeferReason why, int64_t retry_ms) {
    Ticket& t = *ticket_;
    co_await ReturnProbe();
    auto requeue =
        Blocking(drive_, [this, &t, why, retry_ms] { return WriteRequeue(s_, t, why, retry_ms, json::object()); });
    if (absl::Status st = co_await std::move(requeue); !st.ok()) co_return StoreUnavailable(st);
    co_return QueuedAnswer(rec().execution_id, cid());
  }

  // The intent is QUEUED or RUNNING in another execution: that one answers (§17.5).
  InvokeResult Existing(const std::string& execution_id) {
    auto other = s_.executions.Get(rec().tenant_id, execution_id);
    const Outcome outcome = other.ok() && IsWaiting(other->outcome) ? other->outcome : Outcome::kRunning;
    return QueuedAnswer(execution_id, cid(), outcome);
  }

  // The intent succeeded before: a replay records the earlier result, any other call is an intent hit
  // (which reads the original's ledger and appends to it: blocking store work).
  asio::awaitable<InvokeResult> Succeeded(const IntentStore::Claim& claim) {
    if (req_.replay) {
      auto deduplicated = Deduplicated(claim.execution_id, claim.result_json);
      co_return co_await std::move(deduplicated);
    }
    auto hit = Blocking(drive_, [this, &claim] { return IntentHit(claim); });
    co_return co_await std::move(hit);
  }

  // A replay whose intent already succeeded: a new execution that records the earlier result and
  // calls nothing (REPLAY_DEDUPED).
  asio::awaitable<InvokeResult> Deduplicated(std::string succeeded_in, std::string result_json) {
    const json result = ParseJsonWithin(result_json.empty() ? "null" : result_json);
    rec().outcome = Outcome::kSucceeded;
    rec().result_json = result_json;
    rec().finished_at_ms = s_.clock.now_epoch_ms();
    s_.metrics.Replay("deduped");
    s_.metrics.ToolCall(cid(), rec().tool_name, Outcome::kSucceeded, 0, false);
    auto open = WriteOpening(
        {{"REPLAY_DEDUPED",
          {{"succeeded_in", succeeded_in}, {"result", result}, {"result_sha256", Sha256Hex(rec().result_json)}}}},
        /*ends_here=*/true);
    if (absl::Status st = co_await std::move(open); !st.ok()) co_return StoreUnavailable(st);
    CountOutcome(Outcome::kSucceeded, "");
    InvokeResult answer = RecordAnswer(rec(), {});
    answer.details["result"] = result;
    answer.details["deduplicated"] = true;
    answer.details["succeeded_in"] = succeeded_in;
    answer.reached_tool = true;
    co_return answer;
  }

  // The same intent already succeeded: answer with that execution, call nothing. The hit goes on the
  // original's ledger (and anchor) while the original is kept; after its retention the intent record
  // alone answers.
  //
  // The intent's result is answered only as the execution it names vouches for it: that execution of
  // this key with that result, or gone with its retention. An intent that disagrees (edited in the
  // store; `ledger verify` names it) answers nothing and runs nothing: DEFERRED store_unavailable.
  InvokeResult IntentHit(const IntentStore::Claim& claim) {
    auto original = s_.executions.Get(rec().tenant_id, claim.execution_id);
    if (!original.ok() && !absl::IsNotFound(original.status())) return StoreUnavailable(original.status());
    if (const std::string wrong =
            IntentVouchProblem(original.ok() ? &*original : nullptr, claim.execution_id, rec().intent_key,
                               claim.result_json, claim.execution_expires_at_s, s_.clock.now_epoch_sec());
        !wrong.empty()) {
      spdlog::error("tenant {}: intent {}: {}: not answered from it (ledger verify)", rec().tenant_id, rec().intent_key,
                    wrong);
      return StoreUnavailable(absl::DataLossError("an intent its execution does not vouch for"));
    }
    if (original.ok()) {
      const std::string original_chain = Ledger::ExecutionChain(claim.execution_id);
      Ledger::Tail tail{original->last_seq, original->last_hash, original->expires_at_s};
      auto events = s_.ledger.ReadExecution(*original);
      if (absl::IsDataLoss(events.status())) {
        // A damaged chain (`ledger verify` names it) does not hold the intent hostage: the claim
        // answers, and nothing is appended to a chain whose end cannot be known.
        spdlog::error("execution {}: its ledger cannot be read, INTENT_HIT not recorded: {}", claim.execution_id,
                      events.status().ToString());
      } else {
        if (!events.ok()) return StoreUnavailable(events.status());
        if (!events->empty()) tail = {events->back().seq, events->back().hash, events->back().expires_at_s};
        if (auto e = s_.ledger.Append(original_chain, tail, "INTENT_HIT", actor_,
                                      Dump(json{{"intent_key", rec().intent_key}}),
                                      Ledger::ExecutionAnchor(rec().tenant_id, claim.execution_id));
            !e.ok()) {
          return StoreUnavailable(e.status());
        }
      }
    }
    s_.metrics.ToolCall(cid(), rec().tool_name, Outcome::kSucceeded, 0, false);
    CountOutcome(Outcome::kSucceeded, "");
    json details = {{"connector_id", cid()}, {"result", ParseJsonWithin(claim.result_json)}, {"intent_hit", true}};
    if (original.ok() && original->latency_ms >= 0) details["latency_ms"] = original->latency_ms;
    return InvokeResult::Answered(Outcome::kSucceeded, {}, claim.execution_id, std::move(details));
  }

  ToolInvoker::Services& s_;
  StoreDrive drive_;
  const InvokeRequest& req_;
  std::unique_ptr<Ticket> ticket_;
  std::string actor_;
  int64_t intent_hold_ms_ = 0;
  bool enqueueing_ = false;
  bool intent_pending_ = false;                  // CheckIntent left a new intent's claim to the opening batch
  bool intent_there_ = false;                    // the opening batch's claim was refused: the intent exists
  bool was_running_ = false;                     // a queued run whose earlier claim lapsed mid-run
  std::optional<absl::Status> opening_written_;  // set when OpenWithSlot wrote the opening with the slot
  absl::Status open_trouble_;                    // the store error that failed OpenWithSlot's batch, if one did
};

ToolInvoker::Admitted ToolInvoker::Admit(const InvokeRequest& req) { return RunToEnd(AdmitAsync(req, {})); }

asio::awaitable<ToolInvoker::Admitted> ToolInvoker::AdmitAsync(InvokeRequest req, StoreDrive drive) {
  if (OnPoolWhole(drive)) {
    auto whole = Blocking(drive, [this, &req] { return Admit(req); });
    co_return co_await std::move(whole);
  }
  const ConnectorConfig* connector = ResolveConnector(req.tool_name);
  if (std::optional<std::string> why = NotServed(connector, req.tool_name)) {
    co_return InvokeResult::Refused(InvokeError::kUnknownTool, *why);
  }
  // Before any admission step: a bad input creates no execution (design §13).
  absl::StatusOr<ShapedRequest> shaped = CheckInput(req);
  req.input.reset();  // its tree is not needed again: the call holds its input as text from here
  if (!shaped.ok()) co_return InvokeResult::Refused(InvokeError::kInvalidInput, std::string(shaped.status().message()));
  Admission a(s_, drive, req, *connector);
  if (req.queue_on_defer) {  // it may wait in the queue: hold its intent as long as a queued call's
    a.HoldIntentFor(req.queue_on_defer->deadline_s * 1000 + int64_t{connector->timeout_ms} + 30'000);
  }
  DownstreamRequest& downstream = a.ticket().downstream;
  downstream.method = std::move(shaped->method);
  downstream.target =
      connector->is_mcp() ? connector->path_prefix : absl::StrCat(connector->path_prefix, shaped->target);
  downstream.body = std::move(shaped->body);
  downstream.notifications = req.notifications;
  for (auto stage : {&Admission::CheckKillSwitches, &Admission::CheckIntent, &Admission::AskBreaker,
                     &Admission::TakeSlot, &Admission::WriteInvoked}) {
    auto run = (a.*stage)();
    std::optional<InvokeResult> stop = co_await std::move(run);
    if (!stop) continue;
    if (stage == &Admission::WriteInvoked) {  // what the call took is given back
      auto abandon = Blocking(drive, [this, &a] {
        Abandon(a.TakeTicket());
        return true;
      });
      co_await std::move(abandon);
    }
    co_return std::move(*stop);
  }
  co_return a.TakeTicket();
}

InvokeResult ToolInvoker::Enqueue(const InvokeRequest& req, const QueueOrder& order) {
  return RunToEnd(EnqueueAsync(req, order, {}));
}

asio::awaitable<InvokeResult> ToolInvoker::EnqueueAsync(InvokeRequest req, QueueOrder order, StoreDrive drive) {
  if (OnPoolWhole(drive)) {
    auto whole = Blocking(drive, [this, &req, &order] { return Enqueue(req, order); });
    co_return co_await std::move(whole);
  }
  const ConnectorConfig* connector = ResolveConnector(req.tool_name);
  if (std::optional<std::string> why = NotServed(connector, req.tool_name)) {
    co_return InvokeResult::Refused(InvokeError::kUnknownTool, *why);
  }
  absl::StatusOr<ShapedRequest> shaped = CheckInput(req);
  req.input.reset();
  if (!shaped.ok()) co_return InvokeResult::Refused(InvokeError::kInvalidInput, std::string(shaped.status().message()));
  Admission a(s_, drive, req, *connector);
  a.HoldIntentFor(order.deadline_s * 1000 + int64_t{connector->timeout_ms} + 30'000);
  a.AnswerExistingWhenInProgress();
  for (auto stage : {&Admission::CheckKillSwitches, &Admission::CheckIntent}) {
    auto run = (a.*stage)();
    if (std::optional<InvokeResult> stop = co_await std::move(run)) co_return std::move(*stop);
  }
  auto queue = a.WriteQueued(order, s_.clock.now_epoch_ms(), "queued");
  co_return co_await std::move(queue);
}

namespace {

// A queue item whose execution has ended or is gone: removed, claim and all.
void RemoveStaleItem(store::ItemStore& store, const QueueClaim& claim) {
  for (const auto& r : store.WriteBatch(QueueService::CompleteRequests(claim))) {
    if (!r.ok()) {
      spdlog::warn("queue item of {} not removed (its claim expires): {}", claim.item.execution_id,
                   r.status().ToString());
      return;
    }
  }
}

// The request a queued execution was accepted with, from its record.
InvokeRequest RequestOfRecord(const ExecutionRecord& record) {
  InvokeRequest req;
  req.principal.tenant_id = record.tenant_id;
  req.principal.account_id = record.account_id;
  req.principal.subject = record.actor;
  req.tool_name = record.tool_name;
  req.input_json = record.input_json;
  req.idempotency_key = record.idempotency_key;
  req.action_type = record.action_type;
  req.execution_id = record.execution_id;
  return req;
}

}  // namespace

ToolInvoker::Admitted ToolInvoker::AdmitClaimed(const QueueClaim& claim, std::optional<SlotLease> lease,
                                                std::string_view instance_id) {
  return RunToEnd(AdmitClaimedAsync(claim, std::move(lease), std::string(instance_id), {}));
}

asio::awaitable<ToolInvoker::Admitted> ToolInvoker::AdmitClaimedAsync(QueueClaim claim, std::optional<SlotLease> lease,
                                                                      std::string instance_id, StoreDrive drive) {
  if (OnPoolWhole(drive)) {
    auto whole = Blocking(
        drive, [this, &claim, &lease, &instance_id] { return AdmitClaimed(claim, std::move(lease), instance_id); });
    co_return co_await std::move(whole);
  }
  const QueueItem& item = claim.item;
  // Gives back what this run holds when it stops without a batch that did (store trouble).
  auto give_back = [&](std::optional<SlotLease>& held, bool requeue, int64_t delay_ms = 1000) {
    if (held) {
      if (auto r = s_.slots.Release(*held); !r.ok())
        spdlog::warn("connector {}: slot not released: {}", item.connector_id, r.status().ToString());
      held.reset();
    }
    if (requeue && s_.queue != nullptr) {
      if (auto r = s_.queue->Requeue(claim, s_.clock.now_epoch_ms() + delay_ms); !r.ok()) {
        spdlog::warn("queue item of {} not given back (its claim expires): {}", item.execution_id,
                     r.status().ToString());
      }
    }
    return true;
  };
  absl::StatusOr<ExecutionRecord> record = s_.executions.Get(item.tenant_id, item.execution_id);
  const bool final_already = record.ok() && !IsWaiting(record->outcome);
  if (absl::IsNotFound(record.status()) || final_already) {
    // Its record is gone (retention) or ended (a crash after the record's last write, before the
    // item's): the item is stale.
    auto remove = Blocking(drive, [&] {
      give_back(lease, false);
      RemoveStaleItem(s_.store, claim);
      return true;
    });
    co_await std::move(remove);
    co_return InvokeResult::Refused(InvokeError::kGone, "the queued execution has ended");
  }
  if (!record.ok()) {
    auto put_back = Blocking(drive, [&] { return give_back(lease, true); });
    co_await std::move(put_back);
    co_return InvokeResult::Refused(InvokeError::kStoreUnavailable, std::string(record.status().message()), 1);
  }
  const ConnectorConfig* connector = ResolveConnector(record->tool_name);
  if (connector == nullptr || connector->id != item.connector_id) {
    // Put back, not ended: during a rolling config change (or while an MCP server's list is short a
    // tool for a moment) another instance, or this one soon, may serve it. Backing off (1 s, doubling
    // to a minute) and logging at the 1st, 2nd, 4th, 8th ... claim keeps a queue of such calls from
    // claiming, re-reading and logging each one every second until its deadline.
    const int64_t claims = std::max<int64_t>(1, claim.item.attempt);
    if ((claims & (claims - 1)) == 0) {
      spdlog::warn("queued execution {}: tool {} is no longer served by connector {} (claim {}; put back)",
                   item.execution_id, record->tool_name, item.connector_id, claims);
    }
    const int64_t delay_ms = std::min<int64_t>(60'000, int64_t{1000} << std::min<int64_t>(claims - 1, 6));
    auto put_back = Blocking(drive, [&] { return give_back(lease, true, delay_ms); });
    co_await std::move(put_back);
    co_return InvokeResult::Refused(InvokeError::kUnknownTool, "the tool is no longer served by this connector");
  }
  const InvokeRequest req = RequestOfRecord(*record);
  Admission a(s_, drive, req, *connector, *record, claim, std::move(lease), instance_id);
  absl::StatusOr<ShapedRequest> shaped = CheckInput(req);
  if (!shaped.ok()) {
    auto end_claimed = a.EndClaimed(FailureReason::kInvalidInput);
    co_return co_await std::move(end_claimed);
  }
  DownstreamRequest& downstream = a.ticket().downstream;
  downstream.method = std::move(shaped->method);
  downstream.target = absl::StrCat(connector->path_prefix, shaped->target);
  downstream.body = std::move(shaped->body);
  for (auto stage :
       {&Admission::CheckKillSwitches, &Admission::AskBreaker, &Admission::TakeSlot, &Admission::WriteInvoked}) {
    auto run = (a.*stage)();
    std::optional<InvokeResult> stop = co_await std::move(run);
    if (!stop) continue;
    // Every stop before WriteInvoked ends or puts back the item in its own batch, except store trouble.
    const bool invoked = stage == &Admission::WriteInvoked;
    if (invoked || IsStoreTrouble(*stop)) {
      auto put_back = Blocking(drive, [&] {
        give_back(a.ticket().lease, true);
        if (invoked) Abandon(a.TakeTicket());
        return true;
      });
      co_await std::move(put_back);
    }
    co_return std::move(*stop);
  }
  co_return a.TakeTicket();
}

absl::StatusOr<ShapedRequest> ToolInvoker::CheckInput(const InvokeRequest& req) const {
  json parsed;
  if (req.input == nullptr) {
    parsed = json::parse(req.input_json, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) return absl::InvalidArgumentError("the input is not JSON");
  }
  const json& input = req.input != nullptr ? *req.input : parsed;
  // Its dump, when the caller made it from the tree it hands over (InvokeRequest::input).
  const std::string_view input_text = req.input != nullptr ? std::string_view(req.input_json) : std::string_view();
  if (const ConnectorConfig* c = ResolveConnector(req.tool_name); c != nullptr && c->is_mcp()) {
    if (!input.is_object()) return absl::InvalidArgumentError("the arguments of an MCP tool must be a JSON object");
    return ShapedRequest{"POST", "", input_text.empty() ? Dump(input) : std::string(input_text)};
  }
  static const RequestShape kDefaultShape;  // POST /{tool_name}
  const RequestShape* shape = &kDefaultShape;
  if (auto tool = s_.config.tools.find(req.tool_name); tool != s_.config.tools.end()) {
    if (tool->second.schema) {
      if (std::optional<SchemaViolation> violation = tool->second.schema->Validate(input)) {
        return absl::InvalidArgumentError(violation->message);
      }
    }
    shape = &tool->second.shape;
  }
  return ShapeRequest(*shape, req.tool_name, input, input_text);
}

namespace {

IntentStore::State IntentState(IntentEffect effect) {
  switch (effect) {
    case IntentEffect::kSucceeded:
      return IntentStore::State::kSucceeded;
    case IntentEffect::kUnknown:
      return IntentStore::State::kUnknown;
    case IntentEffect::kFailed:
    case IntentEffect::kRelease:
      break;
  }
  return IntentStore::State::kFailed;
}

}  // namespace

InvokeResult ToolInvoker::Complete(std::unique_ptr<Ticket> ticket, const DownstreamResult& result) {
  return RunToEnd(CompleteAsync(std::move(ticket), result, {}));
}

asio::awaitable<InvokeResult> ToolInvoker::CompleteAsync(std::unique_ptr<Ticket> ticket, DownstreamResult result,
                                                         StoreDrive drive) {
  if (OnPoolWhole(drive)) {
    auto whole = Blocking(drive, [this, &ticket, &result] { return Complete(std::move(ticket), result); });
    co_return co_await std::move(whole);
  }
  Ticket& t = *ticket;
  ExecutionRecord& rec = t.record;
  const ConnectorConfig& c = *t.connector;

  // Classify (design §5, S5, S12, §17.3): one pure function decides every consequence.
  // The result parsed once: by the connector when it took it out of a message (MCP), or here.
  json result_json;
  const bool is_2xx = result.kind == DownstreamResult::Kind::kResponse && result.status >= 200 && result.status < 300;
  const bool parsed_by_connector = is_2xx && result.parsed_body.has_value();
  if (parsed_by_connector) {
    result_json = *std::exchange(result.parsed_body, std::nullopt);
  } else if (is_2xx) {
    result_json = ParseJsonWithin(result.body.empty() ? "null" : result.body);
  }
  const Classification k =
      ClassifyDownstream(result, is_2xx && !result_json.is_discarded(), c.breaker, c.slo.latency_threshold_ms);
  rec.outcome = k.outcome;
  rec.reason = std::string(ToString(k.reason));
  rec.latency_ms = result.latency_ms;
  if (result.kind == DownstreamResult::Kind::kResponse) rec.downstream_status = result.status;
  if (rec.outcome == Outcome::kSucceeded) {
    // The connector's text of its tree is the dump this would write (nothing reads `body` later).
    rec.result_json = parsed_by_connector ? std::move(result.body) : Dump(result_json);
  }

  RecordInSlo(c, k, result);
  if (t.guarded) co_await RecordInBreaker(t, k, drive);
  if (t.queued && rec.outcome == Outcome::kDeferred) co_return co_await PutBackDeferred(t, k, result, drive);
  if (!t.queued && t.request.queue_on_defer && k.reason == OutcomeReason{DeferReason::kDownstreamThrottled}) {
    auto queue = QueueThrottled(t, k, result, drive);
    if (std::optional<InvokeResult> queued = co_await std::move(queue)) co_return std::move(*queued);
  }
  if (t.intent_claimed && k.intent == IntentEffect::kRelease) {
    auto release = Blocking(drive, [this, &t] {
      return s_.intents.Release(t.record.tenant_id, t.record.intent_key, t.record.execution_id, t.intent_previous,
                                t.intent_previous_execution_id, t.intent_previous_result_json,
                                t.intent_previous_execution_expires_at_s);
    });
    if (absl::Status st = co_await std::move(release); !st.ok()) {
      spdlog::warn("intent {} not released: {}", rec.intent_key, st.ToString());
    }
  }

  absl::Status written = co_await RecordOutcome(t, k, result, drive);
  CountCompleted(t, result, written.ok());
  if (!written.ok()) {
    spdlog::error("execution {}: outcome {} not recorded: {}", rec.execution_id, ToString(rec.outcome),
                  written.ToString());
    InvokeResult failed = RecordAnswer(rec, FailureReason::kStoreUnavailable, 1);
    failed.outcome = Outcome::kFailed;
    failed.details["message"] =
        t.outcome_held ? "the call reached the downstream but the store did not take its outcome yet: it is held "
                         "and written as the store comes back; a retry with the same idempotency_key is answered "
                         "from it then"
                       : "the call reached the downstream but its outcome could not be recorded";
    failed.details["outcome_held"] = t.outcome_held;
    failed.reached_tool = true;
    co_return failed;
  }
  if (t.request.replay) s_.metrics.Replay(t.request.replay->force ? "forced" : "executed");
  co_return AnswerRecorded(t, k, result, std::move(result_json));
}

// The SLIs (design §8) hear of every call that reached, or tried to reach, the downstream.
void ToolInvoker::RecordInSlo(const ConnectorConfig& c, const Classification& k, const DownstreamResult& result) {
  if (!k.counts_for_slo) return;
  s_.metrics.SloEvent(c.id, std::string(slo::ToString(slo::Sli::kToolError)), k.error_bad);
  s_.metrics.SloEvent(c.id, std::string(slo::ToString(slo::Sli::kToolLatency)), k.latency_bad);
  if (s_.slo != nullptr) s_.slo->Record(c.id, k.error_bad, result.latency_ms, k.latency_bad);
}

// A queued call the downstream said "not now" to (429, 503 with Retry-After) goes back to its queue
// for the Retry-After (§15); the intent stays claimed.
asio::awaitable<InvokeResult> ToolInvoker::PutBackDeferred(Ticket& t, const Classification& k,
                                                           const DownstreamResult& result, StoreDrive drive) {
  ExecutionRecord& rec = t.record;
  const ConnectorConfig& c = *t.connector;
  s_.metrics.ToolCall(c.id, rec.tool_name, Outcome::kDeferred, static_cast<double>(result.latency_ms) / 1000.0, true);
  s_.metrics.Deferred(c.id, rec.reason);
  json data = {{"latency_ms", result.latency_ms}};
  if (rec.downstream_status) data["downstream_status"] = rec.downstream_status;
  // The downstream's "not now" is the ledger's `throttled`; any other defer reason stands as it is.
  RequeueCause why = RequeueReason::kThrottled;
  if (const DeferReason* deferred = std::get_if<DeferReason>(&k.reason);
      deferred != nullptr && *deferred != DeferReason::kDownstreamThrottled) {
    why = *deferred;
  }
  InvokeResult answer;
  auto requeue = Blocking(drive, [this, &t, &why, &k, &data] {
    return WriteRequeue(s_, t, why, k.retry_after_s.value_or(1) * 1000, std::move(data));
  });
  if (absl::Status st = co_await std::move(requeue); !st.ok()) {
    spdlog::error("queued execution {}: not put back: {}", rec.execution_id, st.ToString());
    answer = InvokeResult::Refused(InvokeError::kStoreUnavailable, "the call could not be put back in its queue", 1);
  } else {
    answer = QueuedAnswer(rec.execution_id, c.id);
  }
  answer.reached_tool = true;
  co_return answer;
}

// `"on_defer": "queue"` (§15): a synchronous call the downstream said "not now" to (429, 503 with
// Retry-After) is queued instead, ready when the Retry-After ends, with the same execution id and
// Idempotency-Key. In one batch: the tenant's count and the queue item, then (only if the count had
// room) each failed try and EXECUTION_QUEUED, the record QUEUED, and the slot's release. The intent
// stays claimed (Admit held it for the queue's deadline). nullopt when the call is not queued (the
// tenant's queue is full, its deadline comes before the Retry-After ends, the store failed): it then
// ends DEFERRED as it would have without `on_defer`.
asio::awaitable<std::optional<InvokeResult>> ToolInvoker::QueueThrottled(Ticket& t, const Classification& k,
                                                                         const DownstreamResult& result,
                                                                         StoreDrive drive) {
  ExecutionRecord& rec = t.record;
  const ConnectorConfig& c = *t.connector;
  const QueueOrder& order = *t.request.queue_on_defer;
  const QueueItem item = ItemOf(rec, order, s_.clock.now_epoch_ms() + k.retry_after_s.value_or(1) * 1000);
  if (item.ready_at_ms >= item.deadline_ms || s_.queue == nullptr) co_return std::nullopt;
  const std::string actor = ExecutionStore::ChainActor(rec);
  std::vector<store::WriteRequest> writes = EnqueueRequests(item, order);
  std::vector<std::pair<std::string, json>> events;
  AppendFailedAttempts(result, events);
  json throttled = {{"attempt", static_cast<int64_t>(result.failed_attempts.size()) + 1},
                    {"reason", std::string(ToString(RequeueCause{RequeueReason::kThrottled}))},
                    {"latency_ms", result.latency_ms},
                    {"requeued", true},
                    {"ready_at_ms", item.ready_at_ms}};
  if (rec.downstream_status) throttled["downstream_status"] = rec.downstream_status;
  events.push_back({"TOOL_ATTEMPT_FAILED", std::move(throttled)});
  events.push_back({"EXECUTION_QUEUED", QueuedEventData(item, absl::StrCat("on_defer:", rec.reason))});
  Ledger::Tail tail = t.tail;
  for (const auto& [type, data] : events) {
    auto [w, e] = s_.ledger.PrepareAppendJson(t.chain, tail, type, actor, data);
    writes.push_back(std::move(w).AfterPrevious());
    tail = {e.seq, e.hash, e.expires_at_s};
  }
  ExecutionRecord queued = rec;
  queued.outcome = Outcome::kQueued;
  queued.reason.clear();
  queued.last_seq = tail.seq;
  queued.last_hash = tail.hash;
  writes.push_back(ExecutionStore::FinishRequest(queued).AfterPrevious());
  const size_t required = writes.size();
  if (t.lease) writes.push_back(ConnectorConcurrencyService::ReleaseRequest(*t.lease));
  auto commit = Commit(s_, drive, std::move(writes));
  const WriteResults results = co_await std::move(commit);
  if (results[0].ok() && !results[0]->applied) co_return std::nullopt;  // the tenant's queue is full
  if (absl::Status st = RequireApplied(results, required); !st.ok()) {
    // Nothing of it holds (one transaction on SQLite); the record is written DEFERRED instead.
    spdlog::warn("execution {}: not queued after the downstream's Retry-After: {}", rec.execution_id, st.ToString());
    co_return std::nullopt;
  }
  rec = std::move(queued);
  t.tail = tail;
  t.lease.reset();
  s_.metrics.ToolCall(c.id, rec.tool_name, Outcome::kDeferred, static_cast<double>(result.latency_ms) / 1000.0, true);
  s_.metrics.Deferred(c.id, std::string(ToString(DeferReason::kDownstreamThrottled)));
  InvokeResult answer = QueuedAnswer(rec.execution_id, c.id);
  answer.reached_tool = true;
  co_return answer;
}

// The call's metrics and its SLO outcome (FAILED store_unavailable when it could not be recorded:
// that is what the agent is told).
void ToolInvoker::CountCompleted(const Ticket& t, const DownstreamResult& result, bool written) {
  const ExecutionRecord& rec = t.record;
  const ConnectorConfig& c = *t.connector;
  s_.metrics.ToolCall(c.id, rec.tool_name, rec.outcome, static_cast<double>(result.latency_ms) / 1000.0, true);
  if (rec.outcome == Outcome::kFailed) s_.metrics.ToolError(c.id, rec.tool_name, rec.reason);
  if (rec.outcome == Outcome::kDeferred) s_.metrics.Deferred(c.id, rec.reason);
  if (s_.slo != nullptr) s_.slo->RecordOutcome(c.id, written ? rec.outcome : Outcome::kFailed, rec.reason);
}

// The answer of a recorded outcome: the record's, with the latency, the result (SUCCEEDED), the
// downstream's status, the wait (DEFERRED) and an MCP server's own answer to a failed call.
InvokeResult ToolInvoker::AnswerRecorded(const Ticket& t, const Classification& k, DownstreamResult& result,
                                         json result_json) {
  const ExecutionRecord& rec = t.record;
  InvokeResult answer = RecordAnswer(rec, k.reason, k.retry_after_s);
  json& body = answer.details;
  body["latency_ms"] = result.latency_ms;
  if (rec.outcome == Outcome::kSucceeded) body["result"] = std::move(result_json);
  if (rec.downstream_status) body["downstream_status"] = rec.downstream_status;
  if (k.retry_after_s) body["retry_after_ms"] = *k.retry_after_s * 1000;
  // An MCP server's own answer to a failed call, for the caller to see as the server said it (§14):
  // the isError result (`tool_result`) or the JSON-RPC error object (`rpc_error`).
  if (result.kind == DownstreamResult::Kind::kToolError || result.kind == DownstreamResult::Kind::kRpcError) {
    json server = result.parsed_body ? *std::exchange(result.parsed_body, std::nullopt) : ParseJsonWithin(result.body);
    if (server.is_object())
      body[result.kind == DownstreamResult::Kind::kToolError ? "tool_result" : "rpc_error"] = std::move(server);
  }
  answer.reached_tool = true;
  return answer;
}

// The breaker learns what the call said about the downstream (errors are logged: the outcome is
// still recorded and answered).
asio::awaitable<void> ToolInvoker::RecordInBreaker(const Ticket& t, const Classification& k, StoreDrive drive) {
  // The usual success writes nothing (S5) and stays here; whatever may write goes to the pool.
  const bool writes =
      k.breaker != BreakerEffect::kSuccess || CircuitBreakerService::SuccessWrites(t.connector->breaker, t.permit);
  if (writes && drive.blocking != nullptr) {
    auto record = Blocking(StoreDrive{nullptr, drive.blocking}, [this, &t, &k] {
      RecordInBreaker(t, k);
      return true;
    });
    co_await std::move(record);
  } else {
    RecordInBreaker(t, k);
  }
}

void ToolInvoker::RecordInBreaker(const Ticket& t, const Classification& k) {
  const ConnectorConfig& c = *t.connector;
  absl::Status st;
  switch (k.breaker) {
    case BreakerEffect::kSuccess:
      st = s_.breakers.RecordSuccess(c.id, c.breaker, t.permit);
      break;
    case BreakerEffect::kFailure:
      st = s_.breakers.RecordFailure(c.id, c.breaker, t.permit, t.record.tenant_id);
      break;
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

std::optional<CircuitBreakerService::Permit> ToolInvoker::PermitBackground(const ConnectorConfig& c) {
  absl::StatusOr<CircuitBreakerService::Permit> permit = s_.breakers.RequestPermissionWithoutProbe(c.id, c.breaker);
  if (!permit.ok()) {
    spdlog::warn("connector {}: breaker unreadable, background traffic waits: {}", c.id, permit.status().ToString());
    return std::nullopt;
  }
  if (!permit->allowed) return std::nullopt;
  return *std::move(permit);
}

void ToolInvoker::RecordBackground(const ConnectorConfig& c, const CircuitBreakerService::Permit& permit,
                                   const DownstreamResult& result) {
  const bool is_2xx = result.kind == DownstreamResult::Kind::kResponse && result.status >= 200 && result.status < 300;
  const bool body_is_json = is_2xx && (result.parsed_body.has_value() ||
                                       !ParseJsonWithin(result.body.empty() ? "null" : result.body).is_discarded());
  const Classification k = ClassifyDownstream(result, body_is_json, c.breaker, c.slo.latency_threshold_ms);
  absl::Status st;
  switch (k.breaker) {
    case BreakerEffect::kSuccess:
      st = s_.breakers.RecordSuccess(c.id, c.breaker, permit);
      break;
    case BreakerEffect::kFailure:
      st = s_.breakers.RecordFailure(c.id, c.breaker, permit, "");
      break;
    case BreakerEffect::kThrottled:
      if (k.throttles_connector) st = s_.breakers.RecordThrottled(c.id, c.breaker, permit, k.retry_after_s.value_or(1));
      break;
    case BreakerEffect::kNone:
      break;
  }
  if (!st.ok()) spdlog::warn("connector {}: breaker not updated: {}", c.id, st.ToString());
  if (k.breaker == BreakerEffect::kFailure) {
    spdlog::info("connector {}: background exchange failed ({}), counted toward the breaker: {}", c.id,
                 ToString(k.reason), result.error.substr(0, 200));
  }
}

// The ledger, the record, the intent and the slot's release in one batch (one transaction on
// SQLite), before answering (S9). TOOL_FAILED also for a DEFERRED that reached the downstream (429)
// or failed locally before sending (gateway_overloaded): the call was admitted and ended there.
asio::awaitable<absl::Status> ToolInvoker::RecordOutcome(Ticket& t, const Classification& k,
                                                         const DownstreamResult& result, StoreDrive drive) {
  ExecutionRecord& rec = t.record;
  const std::string actor = rec.actor.empty() ? "tenant:" + rec.tenant_id : rec.actor;
  rec.finished_at_ms = s_.clock.now_epoch_ms();
  // The event carries what the record says, so `ledger verify` notices an edited record (S9, §19.6).
  json data = {{"latency_ms", result.latency_ms}, {"outcome", rec.outcome}};
  if (rec.downstream_status) data["downstream_status"] = rec.downstream_status;
  if (!rec.reason.empty()) data["reason"] = rec.reason;
  if (!result.error.empty()) data["detail"] = result.error.substr(0, 300);  // for the operator; never a secret
  if (k.intent == IntentEffect::kUnknown) data["outcome_unknown"] = true;
  if (rec.outcome == Outcome::kSucceeded) data["result_sha256"] = Sha256Hex(rec.result_json);
  std::vector<std::pair<std::string, json>> closing;
  AppendFailedAttempts(result, closing);  // before the call's one final event (§17.3)
  closing.push_back({rec.outcome == Outcome::kSucceeded ? "TOOL_SUCCEEDED" : "TOOL_FAILED", std::move(data)});
  if (t.request.replay) closing.push_back({"REPLAY_COMPLETED", json{{"outcome", rec.outcome}}});
  Ledger::Tail tail = t.tail;
  std::vector<LedgerEvent> made;
  for (const auto& [type, event_data] : closing) {
    made.push_back(s_.ledger.MakeEventJson(tail, type, actor, event_data));
    tail = {made.back().seq, made.back().hash, made.back().expires_at_s};
  }
  const LedgerEvent& event = made.back();
  rec.last_seq = event.seq;
  rec.last_hash = event.hash;
  // A chain held in the record so far continues there (DESIGN §16), in the record's update, which
  // applies only while its anchor is still where the opening left it; else each event is an item.
  bool in_record = false;
  std::vector<LedgerEvent> own_path;
  if (!t.queued && !t.own_path.empty() && t.own_path.back().seq == t.tail.seq) {
    own_path = t.own_path;
    own_path.insert(own_path.end(), made.begin(), made.end());
    // The opening's text and this close's events (the opening's carry no outcome): the same text as
    // encoding them all again, for less than half the work.
    std::string text = Ledger::ExtendOwnPath(t.own_text, t.own_path.size(), own_path, rec);
    if (text.size() <= Ledger::kMaxOwnPathBytes) {
      rec.own_events = std::move(text);
      in_record = true;
    }
  }
  // Built again, the same, should the store not take them: held then to be written again.
  auto closing_writes = [&] {
    std::vector<store::WriteRequest> writes;
    if (!in_record) {
      // In order, each after the one before, the record's update after the last (see WriteQueuedRun).
      for (const LedgerEvent& e : made) {
        store::WriteRequest w = Ledger::EventItemRequest(t.chain, e);
        writes.push_back(writes.empty() ? std::move(w) : std::move(w).AfterPrevious());
      }
    }
    store::WriteRequest finish =
        ExecutionStore::FinishRequest(rec, in_record ? std::optional<int64_t>(t.tail.seq) : std::nullopt);
    writes.push_back(writes.empty() ? std::move(finish) : std::move(finish).AfterPrevious());
    const size_t finish_at = writes.size() - 1;
    // What names this execution as ended goes in only after its record says so, each chained to the
    // record's finish itself (not to one another: the original's kept result refused, its record
    // swept by retention meanwhile, must not keep the intent IN_PROGRESS): a record whose finish was
    // refused (a replay of the abandoned execution, or a queued re-run, came first) must not be
    // vouched for by its intent or its original as SUCCEEDED while it stays IN_PROGRESS.
    if (t.request.replay && rec.outcome == Outcome::kSucceeded) {
      writes.push_back(ExecutionStore::ReplaySucceededRequest(rec.tenant_id, t.request.replay->original_id,
                                                              rec.execution_id, rec.result_json, rec.expires_at_s)
                           .AfterEarlier(writes.size() - finish_at));
    }
    if (t.intent_claimed && k.intent != IntentEffect::kRelease && k.intent != IntentEffect::kSucceeded &&
        !t.intent_previous_execution_id.empty()) {
      // A forced replay that did not succeed: the intent names the success it took over again (that
      // execution's record vouches for it, not this one's: not chained).
      writes.push_back(s_.intents.RestoreSucceededRequest(rec.tenant_id, rec.intent_key, rec.execution_id,
                                                          t.intent_previous_execution_id, t.intent_previous_result_json,
                                                          t.intent_previous_execution_expires_at_s));
    } else if (t.intent_claimed && k.intent != IntentEffect::kRelease) {
      writes.push_back(s_.intents
                           .FinishRequest(rec.tenant_id, rec.intent_key, rec.execution_id, IntentState(k.intent),
                                          k.intent == IntentEffect::kSucceeded ? rec.result_json : "", rec.expires_at_s)
                           .AfterEarlier(writes.size() - finish_at));
    }
    if (t.queued) {
      for (store::WriteRequest& w : QueueService::CompleteRequests(*t.queued)) writes.push_back(std::move(w));
    }
    if (t.lease) writes.push_back(ConnectorConcurrencyService::ReleaseRequest(*t.lease));
    return writes;
  };
  const size_t required = (in_record ? 0 : made.size()) + 1;
  auto commit = Commit(s_, drive, closing_writes());
  WriteResults results = co_await std::move(commit);
  absl::Status written = RequireApplied(results, required);
  if (written.ok()) {
    t.tail = tail;
    if (in_record) {
      t.own_path = std::move(own_path);
      t.own_text = rec.own_events;
    }
  }
  // Whatever store trouble left unwritten (the outcome, or only the intent's or the slot's part of
  // it) is held and written again as the store comes back, the slot's release with it.
  const bool whole = std::all_of(results.begin(), results.end(), store::Applied);
  if (!whole && s_.unrecorded != nullptr &&
      s_.unrecorded->Hold(rec.execution_id, std::string(ToString(rec.outcome)), closing_writes(), results)) {
    t.outcome_held = true;
    spdlog::warn("execution {}: outcome {}: what the store did not take is held, to be written again as it comes back",
                 rec.execution_id, ToString(rec.outcome));
  } else if (t.lease && !results.back().ok()) {
    // The release failed and nothing holds it: try it alone before leaving it to the lease.
    auto release = Blocking(drive, [this, &t] { return s_.slots.Release(*t.lease).status(); });
    if (absl::Status released = co_await std::move(release); !released.ok()) {
      spdlog::warn("connector {}: slot not released (its lease will expire): {}", t.connector->id, released.ToString());
    }
  }
  co_return written;
}

void ToolInvoker::Abandon(std::unique_ptr<Ticket> ticket) {
  Ticket& t = *ticket;
  // What is not given back here comes back by itself (lease expiry, probe timeout, intent hold);
  // say so in the log.
  auto log = [&](const char* what, const absl::Status& st) {
    if (!st.ok()) spdlog::warn("execution {}: {} not given back: {}", t.record.execution_id, what, st.ToString());
  };
  if (t.lease) log("slot", s_.slots.Release(*t.lease).status());
  if (t.queued && s_.queue != nullptr)
    log("queue claim", s_.queue->Requeue(*t.queued, s_.clock.now_epoch_ms()).status());
  if (t.permit.probe) log("probe claim", s_.breakers.ReturnProbe(t.connector->id, t.permit));
  if (t.intent_claimed) {
    log("intent", s_.intents.Release(t.record.tenant_id, t.record.intent_key, t.record.execution_id, t.intent_previous,
                                     t.intent_previous_execution_id, t.intent_previous_result_json,
                                     t.intent_previous_execution_expires_at_s));
  }
}

}  // namespace toolgate
