#include "toolgate/services/ledger_verifier.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "toolgate/status_macros.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate {

using json = nlohmann::json;

namespace {

absl::Status Bad(const std::string& what) { return absl::DataLossError(what); }

// The chain against its anchor: it must reach the anchored event with that event's hash; at most one
// trailing event may lie beyond it (written, anchor not yet: DESIGN §17.1).
absl::Status CheckAnchor(const std::vector<LedgerEvent>& events, int64_t last_seq, const std::string& last_hash,
                         const char* anchor_name, bool* pending) {
  const auto n = static_cast<int64_t>(events.size());
  if (last_seq < 1) return Bad(absl::StrCat("its ", anchor_name, " names no last event"));
  if (n + 1 == last_seq) {
    return Bad(absl::StrCat("event ", last_seq, ", the last its ", anchor_name, " names, is missing"));
  }
  if (n < last_seq) {
    return Bad(absl::StrCat("events ", n + 1, "..", last_seq, " are missing: its ", anchor_name, " names event ",
                            last_seq, " as the last"));
  }
  if (events[static_cast<size_t>(last_seq - 1)].hash != last_hash) {
    return Bad(absl::StrCat("event ", last_seq, " does not match the hash its ", anchor_name, " holds"));
  }
  if (n > last_seq + 1) {
    return Bad(absl::StrCat("events ", last_seq + 1, "..", n, " are not covered by its ", anchor_name,
                            " (at most one may be, after a crash between two writes)"));
  }
  if (pending != nullptr) *pending = n == last_seq + 1;
  return absl::OkStatus();
}

json Data(const LedgerEvent& e) {
  json d = ParseJsonWithin(e.data);
  return d.is_object() ? d : json::object();
}

// The outcomes the event that ends an execution allows its record to hold (empty: not a final event).
std::vector<std::string> OutcomesOf(const LedgerEvent& e) {
  auto name = [](Outcome o) { return std::string(ToString(o)); };
  if (e.type == "TOOL_SUCCEEDED" || e.type == "REPLAY_DEDUPED") return {name(Outcome::kSucceeded)};
  if (e.type == "EXECUTION_BLOCKED") return {name(Outcome::kBlocked)};
  // A queued call that ended without running (deadline, purge; a cancel), or whose run could not
  // start (design §15).
  if (e.type == "EXECUTION_EXPIRED" || e.type == "EXECUTION_CANCELLED") return {name(Outcome::kExpired)};
  if (e.type == "EXECUTION_FAILED") return {name(Outcome::kFailed)};
  if (e.type == "EXECUTION_DEFERRED") return {name(Outcome::kDeferred)};
  if (e.type == "TOOL_FAILED") {
    const json d = Data(e);
    if (d.contains("outcome") && d["outcome"].is_string()) return {d["outcome"].get<std::string>()};
    return {name(Outcome::kFailed), name(Outcome::kDeferred)};  // written before TOOL_FAILED named its outcome
  }
  return {};
}

// The record against what its chain says (what only the events' hashes protect).
absl::Status CheckRecord(const ExecutionRecord& r, std::string_view stored_under_tenant,
                         const std::vector<LedgerEvent>& anchored) {
  if (r.tenant_id != stored_under_tenant) {
    return Bad(absl::StrCat("its record names tenant '", r.tenant_id, "' but is stored under tenant '",
                            std::string(stored_under_tenant), "'"));
  }
  const LedgerEvent* received = nullptr;
  const LedgerEvent* started = nullptr;
  const LedgerEvent* final_event = nullptr;
  for (const LedgerEvent& e : anchored) {
    if (e.type == "EXECUTION_RECEIVED" && received == nullptr) received = &e;
    if (e.type == "REPLAY_STARTED" && started == nullptr) started = &e;
    if (!OutcomesOf(e).empty()) final_event = &e;
  }
  if (received == nullptr) return Bad("its chain has no EXECUTION_RECEIVED event");
  const json d = Data(*received);
  for (auto [field, value] : {std::pair{"tenant_id", &r.tenant_id}, std::pair{"tool_name", &r.tool_name},
                              std::pair{"connector_id", &r.connector_id}, std::pair{"action_type", &r.action_type},
                              std::pair{"intent_key", &r.intent_key}, std::pair{"input_hash", &r.input_hash}}) {
    if (d.contains(field) && d[field] != *value) {
      return Bad(
          absl::StrCat("its record's ", field, " '", *value, "' differs from EXECUTION_RECEIVED's ", d[field].dump()));
    }
  }
  // A replay's chain opens with REPLAY_STARTED naming its original, and no other chain has one: the
  // record's `replay_of` says which original's kept result it may vouch for (S12).
  if (started == nullptr && !r.replay_of.empty()) {
    return Bad(absl::StrCat("its record's replay_of '", r.replay_of, "' but its chain has no REPLAY_STARTED event"));
  }
  if (started != nullptr) {
    const json sd = Data(*started);
    if (!sd.contains("replay_of") || sd["replay_of"] != r.replay_of) {
      return Bad(absl::StrCat("its record's replay_of '", r.replay_of, "' differs from REPLAY_STARTED's ",
                              sd.value("replay_of", json()).dump()));
    }
  }
  if (final_event == nullptr) {
    if (r.outcome != Outcome::kInProgress && !IsWaiting(r.outcome)) {  // not ended yet: running, or queued
      return Bad(absl::StrCat("its record says ", std::string(ToString(r.outcome)),
                              " but its chain has no event that ends the execution"));
    }
    return absl::OkStatus();
  }
  const std::vector<std::string> allowed = OutcomesOf(*final_event);
  if (std::find(allowed.begin(), allowed.end(), ToString(r.outcome)) == allowed.end()) {
    return Bad(absl::StrCat("its record says ", std::string(ToString(r.outcome)), " but event ", final_event->seq, " (",
                            final_event->type, ") says ", allowed.front()));
  }
  const json fd = Data(*final_event);
  if (fd.contains("result_sha256") && fd["result_sha256"] != Sha256Hex(r.result_json)) {
    return Bad(absl::StrCat("its record's result does not match the result_sha256 of event ", final_event->seq, " (",
                            final_event->type, ")"));
  }
  // How it ended, where the final event says it too. A TOOL_* event that names its outcome carries the
  // record's reason and downstream status, each left out only when the record has none; the ends before
  // the downstream carry their reason (EXECUTION_BLOCKED's is the kill switch's, not the record's).
  const bool says_all =
      (final_event->type == "TOOL_SUCCEEDED" || final_event->type == "TOOL_FAILED") && fd.contains("outcome");
  auto differs = [&](const char* field, const std::string& value, const json& said) {
    return Bad(absl::StrCat("its record's ", field, " '", value, "' differs from event ", final_event->seq, " (",
                            final_event->type, ")'s ", said.dump()));
  };
  if (const json said = fd.value("reason", json(""));
      final_event->type != "EXECUTION_BLOCKED" && (says_all || fd.contains("reason")) && said != r.reason) {
    return differs("reason", r.reason, said);
  }
  if (const json said = fd.value("downstream_status", json(0));
      (says_all || fd.contains("downstream_status")) && said != r.downstream_status) {
    return differs("downstream_status", std::to_string(r.downstream_status), said);
  }
  return absl::OkStatus();
}

}  // namespace

LedgerVerifier::LedgerVerifier(store::ItemStore& store, const Clock& clock)
    : store_(store), clock_(clock), ledger_(store, clock), executions_(store, clock) {}

absl::Status LedgerVerifier::CheckExecution(const ExecutionRecord& r, std::string_view stored_under_tenant,
                                            const std::vector<LedgerEvent>& events, bool* pending) {
  if (pending != nullptr) *pending = false;
  if (events.empty()) return Bad(absl::StrCat("its chain is missing (its record names event ", r.last_seq, ")"));
  RETURN_IF_ERROR(Ledger::VerifyChain(events, r.expires_at_s, "record"));
  bool tail_pending = false;
  RETURN_IF_ERROR(CheckAnchor(events, r.last_seq, r.last_hash, "record", &tail_pending));
  // The events a record holds are written with its anchor, in one write: one its anchor does not name
  // is not a crash's trailing event (DESIGN §17.1) but one added afterwards.
  if (tail_pending && !r.own_events.empty()) {
    ASSIGN_OR_RETURN(std::vector<LedgerEvent> held, Ledger::DecodeOwnPath(r));
    if (static_cast<int64_t>(held.size()) > r.last_seq) {
      return Bad(absl::StrCat("event ", r.last_seq + 1, " is held in its record, but its record's anchor names event ",
                              r.last_seq, " as the last"));
    }
  }
  if (pending != nullptr) *pending = tail_pending;
  const std::vector<LedgerEvent> anchored(events.begin(), events.begin() + r.last_seq);
  return CheckRecord(r, stored_under_tenant, anchored);
}

absl::Status LedgerVerifier::CheckAuditDay(const std::vector<LedgerEvent>& events, const Ledger::Tail& head,
                                           bool* pending) {
  if (pending != nullptr) *pending = false;
  if (events.empty()) {
    if (head.seq > 0) return Bad(absl::StrCat("every event is missing: its head names event ", head.seq));
    return absl::OkStatus();
  }
  if (head.seq == 0) {
    RETURN_IF_ERROR(Ledger::VerifyChain(events));  // no anchor holds the day's expiry: the first event's
    return Bad("its head item (the anchor of its last event) is missing");
  }
  RETURN_IF_ERROR(Ledger::VerifyChain(events, head.expires_at_s, "head item"));
  return CheckAnchor(events, head.seq, head.hash, "head item", pending);
}

// Events of an execution whose record is gone while they are kept: a chain cut, not removed whole
// (the record holds its first events and its anchor). Only a whole chain may go, with retention.
absl::Status LedgerVerifier::CheckOrphanEvents(const std::unordered_set<std::string>& recorded, Report& report) {
  const int64_t now_s = clock_.now_epoch_sec();
  // Looked up once more before it counts: a live gateway may have made the execution after the walk
  // of the records passed its place.
  auto has_record = [&](const std::string& id) -> absl::StatusOr<bool> {
    store::ScanRequest find{"TENANT#", "EXEC#" + id, 1000, std::nullopt};
    for (;;) {
      ASSIGN_OR_RETURN(store::ScanPage page, store_.Scan(find));
      for (const auto& [key, item] : page.items) {
        if (key.sk == "EXEC#" + id) return true;
      }
      if (!page.last_key) return false;
      find.after = page.last_key;
    }
  };
  store::ScanRequest req{"EXEC#", "EVENT#", 500, std::nullopt};
  for (;;) {
    ASSIGN_OR_RETURN(store::ScanPage page, store_.Scan(req));
    for (const auto& [key, item] : page.items) {
      const std::string id = key.pk.substr(std::string_view("EXEC#").size());
      if (recorded.count(id) > 0) continue;
      const int64_t ttl = store::GetInt(item, store::kTtlAttribute).value_or(0);
      if (ttl > 0 && ttl <= now_s) continue;  // its retention passed: going, with the rest of its chain
      ASSIGN_OR_RETURN(bool found, has_record(id));
      if (found) continue;
      report.problem = absl::StrCat("execution ", id, ": its events are kept (", key.sk,
                                    ") but its record, which holds its first events and its anchor, is gone");
      return absl::OkStatus();
    }
    if (!page.last_key) return absl::OkStatus();
    req.after = page.last_key;
  }
}

// A SUCCEEDED intent's result answers every later call with its key without the downstream (S12): it
// must be the result of the execution it names, an execution of that key, which that execution's
// chain vouches for. An intent may outlive its execution (their retentions differ): one whose
// execution is gone is accepted once the execution's retention, which the intent keeps, has passed
// (intents written before it kept it are accepted as before).
absl::Status LedgerVerifier::CheckIntents(Report& report) {
  const int64_t now_s = clock_.now_epoch_sec();
  store::ScanRequest req{"TENANT#", "INTENT#", 500, std::nullopt};
  for (;;) {
    ASSIGN_OR_RETURN(store::ScanPage page, store_.Scan(req));
    for (const auto& [key, item] : page.items) {
      if (store::GetString(item, "state").value_or("") != "SUCCEEDED") continue;
      const std::string tenant = key.pk.substr(std::string_view("TENANT#").size());
      const std::string intent_key = key.sk.substr(std::string_view("INTENT#").size());
      const std::string execution_id = store::GetString(item, "execution_id").value_or("");
      absl::StatusOr<ExecutionRecord> r = executions_.Get(tenant, execution_id);
      if (!r.ok() && !absl::IsNotFound(r.status())) return r.status();
      if (std::string wrong = IntentVouchProblem(r.ok() ? &*r : nullptr, execution_id, intent_key,
                                                 store::GetString(item, "result_json").value_or(""),
                                                 store::GetInt(item, "execution_expires_at_s").value_or(0), now_s);
          !wrong.empty()) {
        report.problem = absl::StrCat("intent ", intent_key, " of tenant ", tenant, ": ", wrong);
        return absl::OkStatus();
      }
      ++report.intents;
    }
    if (!page.last_key) return absl::OkStatus();
    req.after = page.last_key;
  }
}

absl::StatusOr<LedgerVerifier::Report> LedgerVerifier::VerifyAll() {
  Report report;
  const int64_t now_s = clock_.now_epoch_sec();
  // A chain whose retention passed while it was being read is gone as a whole, not damaged.
  auto expired = [&](int64_t expires_at_s) { return expires_at_s > 0 && expires_at_s <= now_s; };
  std::unordered_set<std::string> recorded;  // every execution a record was found for
  absl::Status walk = executions_.ForEach([&](const ExecutionRecord& r, const store::ItemKey& key) -> absl::Status {
    recorded.insert(r.execution_id);
    absl::StatusOr<std::vector<LedgerEvent>> read = ledger_.ReadExecution(r);
    if (!read.ok() && !absl::IsDataLoss(read.status())) return read.status();
    std::vector<LedgerEvent> chain = read.ok() ? *std::move(read) : std::vector<LedgerEvent>{};
    const std::string tenant = key.pk.substr(std::string_view("TENANT#").size());
    bool pending = false;
    // The events its record holds that cannot be read are a damaged chain like any other. A record is
    // found by its key: one stored under another execution's id is not that execution's.
    absl::Status s = read.status();
    if (key.sk != ExecutionStore::Key(tenant, r.execution_id).sk) {
      s = Bad(absl::StrCat("its record is stored under ", key.sk, ", not under its own id"));
    } else if (read.ok()) {
      s = CheckExecution(r, tenant, chain, &pending);
    }
    if (!s.ok()) {
      if (expired(r.expires_at_s)) {
        ++report.expired;
        return absl::OkStatus();
      }
      report.problem = absl::StrCat("execution ", r.execution_id, ": ", s.message());
      return absl::CancelledError("stop at the first problem");
    }
    // A replayed original's copy of its successful replay's result answers later replays without the
    // downstream (S12): it must be the result that replay's chain vouches for.
    // (A replay gone with its retention, which the original keeps, is accepted; so is one whose
    // retention an original written before it kept it does not say.)
    if (!r.replay_result_json.empty()) {
      absl::StatusOr<ExecutionRecord> replay = executions_.Get(tenant, r.replay_succeeded_in);
      if (!replay.ok() && !absl::IsNotFound(replay.status())) return replay.status();
      const std::string wrong = ReplayResultVouchProblem(r, chain, replay.ok() ? &*replay : nullptr, now_s);
      if (!wrong.empty()) {
        report.problem = absl::StrCat("execution ", r.execution_id, ": ", wrong);
        return absl::CancelledError("stop at the first problem");
      }
    }
    ++report.executions;
    report.events += static_cast<int64_t>(chain.size());
    if (pending) {
      ++report.pending_tails;
      report.notes.push_back(absl::StrCat("execution ", r.execution_id, ": event ", chain.back().seq, " (",
                                          chain.back().type, ") is not anchored yet"));
    }
    return absl::OkStatus();
  });
  if (absl::IsDataLoss(walk)) {  // a record that cannot be read as one (an unknown outcome, no id)
    report.problem = std::string(walk.message());
    return report;
  }
  if (!walk.ok() && !absl::IsCancelled(walk)) return walk;
  if (!report.ok()) return report;
  RETURN_IF_ERROR(CheckOrphanEvents(recorded, report));
  if (!report.ok()) return report;
  RETURN_IF_ERROR(CheckIntents(report));
  if (!report.ok()) return report;

  ASSIGN_OR_RETURN(std::vector<std::string> days, ledger_.AuditChains());
  for (const std::string& day : days) {
    ASSIGN_OR_RETURN(std::vector<LedgerEvent> chain, ledger_.Read(day));
    ASSIGN_OR_RETURN(Ledger::Tail head, ledger_.ReadAnchor(Ledger::AuditAnchor(day)));
    bool pending = false;
    if (absl::Status s = CheckAuditDay(chain, head, &pending); !s.ok()) {
      if (!chain.empty() && expired(chain.front().expires_at_s)) {
        ++report.expired;
        continue;
      }
      report.problem = absl::StrCat(day, ": ", s.message());
      return report;
    }
    ++report.audit_days;
    report.events += static_cast<int64_t>(chain.size());
    if (pending) {
      ++report.pending_tails;
      report.notes.push_back(absl::StrCat(day, ": event ", chain.back().seq, " is not anchored yet"));
    }
  }
  return report;
}

}  // namespace toolgate
