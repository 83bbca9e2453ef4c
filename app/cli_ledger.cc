// `toolgate ledger show | verify | export`: they read the store directly and work with the server
// stopped.

#include <cstdio>
#include <limits>
#include <optional>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "app/cli.h"
#include "toolgate/domain/control_bytes.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/ledger_verifier.h"
#include "toolgate/store/item_json.h"

namespace toolgate::cli {

namespace {

// Verifies every execution's chain against its record and every day's audit chain against its head
// (LedgerVerifier). Prints a summary; the first problem fails the check.
// --json: {"ok", "problem"?, "executions", "audit_days", "events", "expired", "pending_tails", "intents",
// "notes"}
// on stdout, whatever the result (the exit code says it too).
int LedgerVerify(const Config& config, bool as_json) {
  SystemClock clock;
  auto st = OpenStoreReadOnly(config, clock);
  if (!st.ok()) return Fail(std::string(st.status().message()));
  LedgerVerifier verifier(**st, clock);
  absl::StatusOr<LedgerVerifier::Report> report = verifier.VerifyAll();
  if (!report.ok()) return Fail("ledger verify: " + std::string(report.status().message()));
  if (as_json) {
    json doc = {{"ok", report->ok()},
                {"executions", report->executions},
                {"audit_days", report->audit_days},
                {"events", report->events},
                {"expired", report->expired},
                {"pending_tails", report->pending_tails},
                {"intents", report->intents},
                {"notes", report->notes}};
    if (!report->ok()) doc["problem"] = report->problem;
    std::printf("%s\n", doc.dump(2).c_str());
    return report->ok() ? kExitOk : kExitRefused;
  }
  if (!report->ok()) return Fail("ledger verify FAILED: " + report->problem);
  for (const std::string& note : report->notes) std::printf("note: %s\n", Printable(note).c_str());
  std::printf("ledger verify: ok (%lld executions, %lld audit days, %lld events",
              static_cast<long long>(report->executions), static_cast<long long>(report->audit_days),
              static_cast<long long>(report->events));
  if (report->expired > 0) {
    std::printf("; %lld chains reached their retention while being read", static_cast<long long>(report->expired));
  }
  if (report->pending_tails > 0) {
    std::printf("; %lld chains end in one event not anchored yet (a crash between two writes)",
                static_cast<long long>(report->pending_tails));
  }
  std::printf(")\n");
  return kExitOk;
}

json ExportedEvent(const LedgerEvent& e) {
  json data = json::parse(e.data, nullptr, false);
  if (data.is_discarded()) data = e.data;
  return {{"seq", e.seq},   {"type", e.type},          {"at", e.at}, {"actor", e.actor}, {"data", data},
          {"hash", e.hash}, {"prev_hash", e.prev_hash}};
}

// A UTC day "YYYY-MM-DD" as epoch ms at its start; nullopt when malformed (or not a date, e.g. 2026-02-30).
std::optional<int64_t> ParseDay(const std::string& day) {
  absl::CivilDay civil;
  if (day.size() != 10 || !absl::ParseCivilTime(day, &civil) || absl::FormatCivilTime(civil) != day)
    return std::nullopt;
  return absl::ToUnixMillis(absl::FromCivil(civil, absl::UTCTimeZone()));
}

// `ledger export`: every execution created in [since, until) with its whole chain, then every audit
// day in that range, one JSON object per line, hashes included so the archive can be verified
// without toolgate. Reads the store directly. Exit 1 (after exporting everything) if a chain fails
// verification.
int LedgerExport(const Config& config, const std::string& since, const std::string& until) {
  std::optional<int64_t> from = 0, to = std::numeric_limits<int64_t>::max();
  if (!since.empty() && !(from = ParseDay(since))) return Fail("--since must be a date YYYY-MM-DD (UTC)");
  if (!until.empty() && !(to = ParseDay(until))) return Fail("--until must be a date YYYY-MM-DD (UTC)");
  SystemClock clock;
  auto st = OpenStoreReadOnly(config, clock);
  if (!st.ok()) return Fail(std::string(st.status().message()));
  store::ItemStore& store = **st;
  Ledger ledger(store, clock);
  int64_t executions = 0, days = 0, bad = 0;
  auto emit = [&](json line, const std::vector<LedgerEvent>& chain, const std::string& name, const absl::Status& s) {
    line["events"] = json::array();
    for (const auto& e : chain) line["events"].push_back(ExportedEvent(e));
    if (!s.ok()) {
      ++bad;
      std::fprintf(stderr, "toolgate: %s: %s\n", name.c_str(), std::string(s.message()).c_str());
      line["verify_error"] = std::string(s.message());
    }
    std::printf("%s\n", line.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  };
  store::ScanRequest req{"TENANT#", "EXEC#", 500, std::nullopt};
  for (;;) {
    auto page = store.Scan(req);
    if (!page.ok()) return Fail("ledger export: " + std::string(page.status().message()));
    for (auto& [key, item] : page->items) {
      const int64_t created = store::GetInt(item, "created_at_ms").value_or(0);
      if (created < *from || created >= *to) continue;
      const std::string id = store::GetString(item, "execution_id").value_or("");
      // The chain as one list, the events its record holds expanded (same seq, at, hash as items).
      absl::StatusOr<ExecutionRecord> record = ExecutionStore::FromItem(item);
      absl::Status checked = absl::DataLossError("its record cannot be read");
      absl::StatusOr<std::vector<LedgerEvent>> chain =
          record.ok() ? ledger.ReadExecution(*record) : ledger.Read(Ledger::ExecutionChain(id));
      if (absl::IsDataLoss(chain.status())) {
        checked = chain.status();
        chain = ledger.Read(Ledger::ExecutionChain(id));
      } else if (record.ok() && chain.ok()) {
        checked = LedgerVerifier::CheckExecution(*record, key.pk.substr(7), *chain, nullptr);
      }
      if (!chain.ok()) return Fail("ledger export: " + std::string(chain.status().message()));
      emit({{"kind", "execution"}, {"record", store::ItemToJson(item)}}, *chain, "execution " + id, checked);
      ++executions;
    }
    if (!page->last_key) break;
    req.after = page->last_key;
  }
  auto chains = ledger.AuditChains();
  if (!chains.ok()) return Fail("ledger export: " + std::string(chains.status().message()));
  for (const auto& chain_name : *chains) {
    const std::optional<int64_t> day = ParseDay(chain_name.substr(6));
    if (!day || *day < *from || *day >= *to) continue;
    auto chain = ledger.Read(chain_name);
    if (!chain.ok()) return Fail("ledger export: " + std::string(chain.status().message()));
    auto head = ledger.ReadAnchor(Ledger::AuditAnchor(chain_name));
    if (!head.ok()) return Fail("ledger export: " + std::string(head.status().message()));
    json line = {{"kind", "audit"}, {"day", chain_name.substr(6)}};
    if (head->seq > 0) line["head"] = {{"last_seq", head->seq}, {"last_hash", head->hash}};
    emit(std::move(line), *chain, chain_name, LedgerVerifier::CheckAuditDay(*chain, *head, nullptr));
    ++days;
  }
  std::fprintf(stderr, "ledger export: %lld executions, %lld audit days%s\n", static_cast<long long>(executions),
               static_cast<long long>(days),
               bad > 0 ? (", " + std::to_string(bad) + " chains FAILED verification").c_str() : "");
  return bad > 0 ? kExitRefused : kExitOk;
}

// --json: {"execution_id", "events": [as `ledger export` writes them], "chain": {"ok", "problem"?}}.
int LedgerShow(const Config& config, const std::string& id, bool as_json) {
  SystemClock clock;
  auto st = OpenStoreReadOnly(config, clock);
  if (!st.ok()) return Fail(std::string(st.status().message()));
  Ledger ledger(**st, clock);
  // The record holds the call's own events (DESIGN §16): find it by the id alone.
  ExecutionStore executions(**st, clock);
  absl::StatusOr<ExecutionRecord> record = executions.Locate(id);
  if (!record.ok() && !absl::IsNotFound(record.status())) return Fail(std::string(record.status().message()));
  auto chain = record.ok() ? ledger.ReadExecution(*record) : ledger.Read(Ledger::ExecutionChain(id));
  if (!chain.ok()) return Fail(std::string(chain.status().message()));
  if (chain->empty()) return Fail("no ledger events for execution " + id);
  // The links, hashes and expiry (the record's, where there is one); `ledger verify` also checks the
  // chain against the rest of its record.
  absl::Status ok =
      record.ok() ? Ledger::VerifyChain(*chain, record->expires_at_s, "record") : Ledger::VerifyChain(*chain);
  if (as_json) {
    json doc = {{"execution_id", id}, {"events", json::array()}, {"chain", {{"ok", ok.ok()}}}};
    for (const auto& e : *chain) doc["events"].push_back(ExportedEvent(e));
    if (!ok.ok()) doc["chain"]["problem"] = std::string(ok.message());
    std::printf("%s\n", doc.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    return ok.ok() ? kExitOk : kExitRefused;
  }
  for (const auto& e : *chain) {
    std::printf("%4lld  %-24s %-20s %-28s %s\n", static_cast<long long>(e.seq), Printable(e.at).c_str(),
                Printable(e.type).c_str(), Printable(e.actor).c_str(), Printable(e.data).c_str());
  }
  std::printf("chain: %s\n", ok.ok() ? "ok" : Printable(std::string(ok.message())).c_str());
  return ok.ok() ? kExitOk : kExitRefused;
}

}  // namespace

void RegisterLedgerCommands(CLI::App& app, Cli& cli) {
  struct Options {
    std::string execution_id, since, until;
    bool as_json = false;
  };
  auto o = std::make_shared<Options>();
  auto* ledger = app.add_subcommand("ledger", "the execution ledger (reads the store directly)");
  ledger->require_subcommand(1);
  auto* show = ledger->add_subcommand("show", "an execution's events");
  show->add_option("execution_id", o->execution_id)->required();
  show->add_flag("--json", o->as_json, "print the events as JSON (with their hashes)");
  show->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = LedgerShow(*c, o->execution_id, o->as_json);
  });
  auto* verify = ledger->add_subcommand("verify", "check every hash chain; exit 1 naming the first bad event");
  verify->add_flag("--json", o->as_json, "print the report as JSON");
  verify->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = LedgerVerify(*c, o->as_json);
  });
  auto* exporter = ledger->add_subcommand(
      "export", "every execution and audit day as JSON lines with their hashes (archive before retention ends)");
  exporter->add_option("--since", o->since, "first UTC day to export, YYYY-MM-DD (default: the oldest kept)");
  exporter->add_option("--until", o->until, "UTC day to stop before, YYYY-MM-DD (default: no end)");
  exporter->callback([&cli, o] {
    if (const Config* c = cli.config()) cli.exit_code = LedgerExport(*c, o->since, o->until);
  });
}

}  // namespace toolgate::cli
