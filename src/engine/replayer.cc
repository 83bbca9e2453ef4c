#include "toolgate/engine/replayer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/services/ledger_verifier.h"

namespace toolgate {

using json = nlohmann::json;

namespace {

InvokeResult Refusal(InvokeError error, std::string message) {
  return InvokeResult::Refused(error, std::move(message));
}

// The replay's context: what it knows of the original and of any replay of it that succeeded.
ReplayContext ContextOf(const ExecutionRecord& original, const ReplayOrder& order) {
  ReplayContext replay;
  replay.original_id = original.execution_id;
  replay.original_intent_key = original.intent_key;
  replay.original_outcome = original.outcome;
  replay.original_result_json = original.result_json;
  replay.succeeded_in = original.execution_id;
  // The latest success is the intent's, whether the original failed or succeeded (a forced replay
  // that succeeds takes the intent over): later replays name it, as a repeat of the key does.
  if (!original.replay_succeeded_in.empty()) {
    replay.original_outcome = Outcome::kSucceeded;  // an earlier replay succeeded
    replay.original_result_json = original.replay_result_json;
    replay.succeeded_in = original.replay_succeeded_in;
  }
  replay.reason = order.reason;
  replay.requested_by = order.requested_by;
  replay.force = order.force;
  return replay;
}

}  // namespace

Replayer::Replayer(ExecutionStore& executions, Ledger& ledger, Metrics& metrics, const Clock& clock, int max_replays,
                   std::map<std::string, int64_t> abandoned_after_ms)
    : executions_(executions),
      ledger_(ledger),
      metrics_(metrics),
      clock_(clock),
      max_replays_(max_replays),
      abandoned_after_ms_(std::move(abandoned_after_ms)) {}

std::variant<InvokeResult, InvokeRequest> Replayer::Prepare(const ReplayOrder& order) {
  const Principal& who = order.principal;
  if (!who.HasRole("operator") && !who.HasRole("admin")) {
    return Refusal(InvokeError::kForbidden, "replay needs the operator or admin role");
  }
  if (order.force && !who.HasRole("admin")) return Refusal(InvokeError::kForbidden, "force needs the admin role");
  if (!LooksLikeUuid(order.original_id)) return Refusal(InvokeError::kNotFound, "execution not found");

  absl::StatusOr<ExecutionRecord> original = executions_.Get(who.tenant_id, order.original_id);
  if (original.ok() && !original->replay_of.empty()) {
    original = executions_.Get(who.tenant_id, original->replay_of);  // a replay's replay: of its original
  }
  if (!original.ok()) {
    return absl::IsNotFound(original.status())
               ? Refusal(InvokeError::kNotFound, "execution not found")
               : Refusal(InvokeError::kStoreUnavailable, "the store cannot be read right now");
  }
  if (original->input_json.empty()) {
    return Refusal(InvokeError::kNotReplayable, "this execution's input was not kept, so it cannot be replayed");
  }
  // QUEUED and RUNNING have not ended either: a replay now would send the call beside the
  // dispatcher's run of it (S12).
  if (IsWaiting(original->outcome) || (original->outcome == Outcome::kInProgress && !Abandoned(*original))) {
    return Refusal(InvokeError::kExecutionInProgress,
                   "this execution has not finished yet; replay it once it has an outcome");
  }
  // What a replay sends (the input, the intent key, the tool) is the record's: only as its chain
  // vouches for it (EXECUTION_RECEIVED carries the input's hash). A record that disagrees with its
  // chain (edited in the store; `ledger verify` names it) is not replayed.
  absl::StatusOr<std::vector<LedgerEvent>> chain = ledger_.ReadExecution(*original);
  // Only the events the record's anchor names: others may have been appended since the record was
  // read (a concurrent replay's REPLAY_REQUESTED, intent hits), and what they say is not the record's.
  if (chain.ok() && static_cast<int64_t>(chain->size()) > original->last_seq) {
    chain->resize(static_cast<size_t>(std::max<int64_t>(original->last_seq, 0)));
  }
  absl::Status agrees =
      chain.ok() ? LedgerVerifier::CheckExecution(*original, who.tenant_id, *chain, nullptr) : chain.status();
  if (!agrees.ok() && !absl::IsDataLoss(agrees)) {
    return Refusal(InvokeError::kStoreUnavailable, "the store cannot be read right now");
  }
  if (!agrees.ok()) {
    spdlog::error("execution {}: {}: not replayed (ledger verify)", original->execution_id, agrees.ToString());
    return Refusal(InvokeError::kStoreUnavailable,
                   "this execution's record does not agree with its ledger; run `toolgate ledger verify`");
  }
  // The result it keeps from a replay that succeeded answers this replay without the downstream (in
  // place of its own, when it succeeded too: that replay was forced): only as that replay vouches for
  // it (a replay of this original, with that result, or gone with its retention). One that disagrees
  // (edited in the store; `ledger verify` names it) answers nothing.
  if (!original->replay_succeeded_in.empty()) {
    absl::StatusOr<ExecutionRecord> replay = executions_.Get(who.tenant_id, original->replay_succeeded_in);
    if (!replay.ok() && !absl::IsNotFound(replay.status())) {
      return Refusal(InvokeError::kStoreUnavailable, "the store cannot be read right now");
    }
    if (const std::string wrong =
            ReplayResultVouchProblem(*original, *chain, replay.ok() ? &*replay : nullptr, clock_.now_epoch_sec());
        !wrong.empty()) {
      spdlog::error("execution {}: {}: not answered from it (ledger verify)", original->execution_id, wrong);
      return Refusal(InvokeError::kStoreUnavailable,
                     "this execution's record does not agree with its ledger; run `toolgate ledger verify`");
    }
  }
  absl::StatusOr<bool> reserved = executions_.ReserveReplay(who.tenant_id, original->execution_id, max_replays_);
  if (!reserved.ok()) return Refusal(InvokeError::kStoreUnavailable, "the store cannot be written right now");
  if (!*reserved) {
    metrics_.Replay("refused");
    return Refusal(InvokeError::kReplayLimitReached,
                   absl::StrCat("this execution already has ", max_replays_, " replays"));
  }

  InvokeRequest ir;
  ir.execution_id = NewUuidV7(clock_);
  ir.principal = who;
  ir.tool_name = original->tool_name;
  ir.input_json = original->input_json;
  ir.action_type = original->action_type;
  ir.replay = ContextOf(*original, order);
  // Said on the original's chain (and its anchor) before the replay runs.
  Ledger::Tail tail{original->last_seq, original->last_hash, original->expires_at_s};
  json requested = {{"execution_id", ir.execution_id},
                    {"replay_reason", order.reason},
                    {"requested_by", order.requested_by},
                    {"sub", who.subject},
                    {"force", order.force}};
  if (!order.job_id.empty()) requested["job_id"] = order.job_id;
  const std::string actor = who.subject.empty() ? "tenant:" + who.tenant_id : who.subject;
  if (auto e = ledger_.Append(Ledger::ExecutionChain(original->execution_id), tail, "REPLAY_REQUESTED", actor,
                              requested.dump(-1, ' ', false, json::error_handler_t::replace),
                              Ledger::ExecutionAnchor(who.tenant_id, original->execution_id));
      !e.ok()) {
    Finish(ir, /*reached_tool=*/false);
    return Refusal(InvokeError::kStoreUnavailable, "the store cannot be written right now");
  }
  return ir;
}

bool Replayer::Abandoned(const ExecutionRecord& r) const {
  constexpr int64_t kUnknownConnectorMs = 10 * 60'000;  // a connector no longer configured
  auto it = abandoned_after_ms_.find(r.connector_id);
  const int64_t after = it == abandoned_after_ms_.end() ? kUnknownConnectorMs : it->second;
  return clock_.now_epoch_ms() - r.created_at_ms > after;
}

void Replayer::Finish(const InvokeRequest& replay, bool reached_tool) {
  if (reached_tool || !replay.replay) return;
  if (absl::Status s = executions_.ReleaseReplay(replay.principal.tenant_id, replay.replay->original_id); !s.ok()) {
    spdlog::warn("replay of {}: reservation not given back: {}", replay.replay->original_id, s.ToString());
  }
}

}  // namespace toolgate
