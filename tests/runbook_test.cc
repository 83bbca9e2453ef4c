// Regression tests for what an on-call walkthrough of the runbook found (the real binary, SQLite,
// fake downstreams): removed ledger tails that `verify` missed, an export that could not be verified
// by its documented recipe, an action-type kill switch a caller could dodge, kill switches that could
// never match, replays that used up their limit without running, a Retry-After honoured for one call
// and an operator limit that could not be handed back.
// Also the ledger's cover of the record itself (an edited outcome, result or tenant is caught).

#include <sqlite3.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "fake_downstream.h"
#include "gateway_harness.h"
#include "wait_until.h"
#include "gmock/gmock.h"

#ifndef TOOLGATE_SOURCE_DIR
#error "TOOLGATE_SOURCE_DIR must name the source tree (for scripts/verify-ledger-export.py)"
#endif

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using ::testing::HasSubstr;
using testing::HeaderOf;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;

class RunbookTest : public ::testing::Test {
 protected:
  std::string Config(const std::string& db, const std::string& extra = "") {
    return testing::BaseConfig(db) + "[connectors.crm]\nbase_url = \"" + crm_.base_url() +
           "\"\ntimeout_ms = 1000\nmax_in_flight = 8\n[connectors.crm.breaker]\nfailure_threshold = 3\ncooldown_s = "
           "1\n" +
           extra;
  }
  GatewayProcess& Start(const std::string& extra = "") {
    gateways_.push_back(std::make_unique<GatewayProcess>(Config(dir_.file("store.db"), extra), dir_,
                                                         "gw" + std::to_string(gateways_.size())));
    EXPECT_TRUE(gateways_.back()->Start());
    return *gateways_.back();
  }
  api::ClientResult Replay(GatewayProcess& gw, const std::string& id) {
    const json body = {{"replay_reason", "downstream recovered"}, {"requested_by", "oncall@acme"}};
    return gw.Public("POST", "/v1/executions/" + id + "/replay", body.dump(), operator_);
  }
  static json Audit(const std::string& reason = "incident 42") {
    return {{"reason", reason}, {"requested_by", "oncall@acme"}};
  }
  // A copy of the (stopped) store with `sql` applied, and a config that names it.
  std::string TamperedCopy(const std::string& name, const std::string& sql) {
    const std::string copy = dir_.file(name + ".db");
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, ("VACUUM INTO '" + copy + "'").c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
    EXPECT_EQ(sqlite3_open(copy.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    EXPECT_GT(sqlite3_changes(db), 0) << "the tampering changed nothing: " << sql;
    sqlite3_free(err);
    sqlite3_close(db);
    const std::string config = dir_.file(name + ".toml");
    std::ofstream(config) << Config(copy);
    return config;
  }
  std::pair<int, std::string> Verify(const std::string& config) {
    return testing::RunCli({"ledger", "verify", "--config", config}, dir_);
  }
  std::pair<int, std::string> Shell(const std::string& command) {
    return testing::RunProgram({"/bin/sh", "-c", command}, dir_);
  }

  TempDir dir_;
  FakeDownstream crm_;
  std::vector<std::unique_ptr<GatewayProcess>> gateways_;
  const std::string alice_ = Token("tenant-a");
  const std::string bob_ = Token("tenant-b");
  const std::string operator_ = Token("tenant-a", {"operator"}, 3600, "op-1");
};

std::string DeleteEvents(const std::string& chain, int64_t from_seq) {
  char sk[32];
  std::snprintf(sk, sizeof sk, "EVENT#%012lld", static_cast<long long>(from_seq));
  return "DELETE FROM items WHERE pk = '" + chain + "' AND sk >= '" + sk + "' AND sk LIKE 'EVENT#%'";
}

// Keeps the first `keep` of the events a record holds (DESIGN §16: the call's own path is in its
// execution record, `events`, a JSON text, after its header `{"v":2}`); `where` selects the record.
std::string KeepOwnEvents(const std::string& where, int keep) {
  return "UPDATE items SET attrs = json_set(attrs, '$.events', (SELECT json_group_array(json(value)) || '' FROM "
         "json_each(json_extract(attrs, '$.events')) WHERE key <= " +
         std::to_string(keep) + ")) WHERE " + where;
}

// Issue item 1 (and 19.6): every way of cutting a chain's tail, on a plain execution, a replayed one
// (REPLAY_* events after its TOOL_* event) and a day's audit chain, fails `ledger verify`; so does a
// record whose outcome, result or tenant was edited.
TEST_F(RunbookTest, RemovedLedgerTailsAndEditedRecordsFailVerify) {
  std::atomic<int> flaky_calls{0};
  crm_.set_behavior([&](const FakeDownstream::Request& r) {
    if (r.body.find("flaky") != std::string::npos && flaky_calls++ == 0) return Reply{500, R"({"down":true})"};
    return Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start();
  const std::string plain = Body(gw.Invoke("crm.x", {{"input", {{"n", 1}}}}, alice_))["execution_id"];
  const std::string replayed = Body(gw.Invoke("crm.y", {{"input", {{"n", 2}}}}, alice_))["execution_id"];
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Replay(gw, replayed).status, 200);
  // A keyed call (its SUCCEEDED intent keeps the result for repeats) and a failed call a replay made
  // succeed (its record keeps the replay's result for later replays).
  ASSERT_EQ(gw.Invoke("crm.z", {{"input", {{"n", 3}}}, {"idempotency_key", "pay-42"}}, alice_).status, 200);
  const std::string failed = Body(gw.Invoke("crm.f", {{"input", {{"flaky", 1}}}}, alice_))["execution_id"];
  ASSERT_EQ(Replay(gw, failed).status, 200);
  for (const char* key : {"tenant-x", "tenant-y"}) {
    json set = Audit();
    set["scope"] = "tenant";
    set["key"] = key;
    ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", set.dump()).status, 200);
  }
  const json replayed_exec = Body(gw.Public("GET", "/v1/executions/" + replayed, "", alice_));
  ASSERT_EQ(replayed_exec["events"].size(), 5u) << replayed_exec;  // RECEIVED, INVOKED, SUCCEEDED, 2 × REPLAY_REQUESTED
  EXPECT_EQ(replayed_exec["events"][4]["type"], "REPLAY_REQUESTED");
  gw.Terminate();

  auto [ok_code, ok_out] = Verify(gw.config_path());
  ASSERT_EQ(ok_code, 0) << ok_out;
  EXPECT_THAT(ok_out, HasSubstr("1 audit days")) << ok_out;

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT pk FROM items WHERE pk LIKE 'AUDIT#%' LIMIT 1", -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  const std::string day(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
  sqlite3_finalize(st);
  sqlite3_close(db);

  struct Case {
    std::string name, sql, expected;
  };
  const std::string exec_replayed = "EXEC#" + replayed;
  const std::string record = "pk = 'TENANT#tenant-a' AND sk = 'EXEC#" + replayed + "'";
  const std::string plain_record = "pk = 'TENANT#tenant-a' AND sk = 'EXEC#" + plain + "'";
  // The events of a call's own path are in its record; later ones (REPLAY_REQUESTED) are items.
  const std::vector<Case> cases = {
      {"plain_last_one", KeepOwnEvents(plain_record, 2), "execution " + plain + ": event 3, the last its record names"},
      {"plain_last_two", KeepOwnEvents(plain_record, 1), "execution " + plain + ": events 2..3 are missing"},
      {"plain_edited",
       "UPDATE items SET attrs = json_set(attrs, '$.events', replace(json_extract(attrs, '$.events'), "
       "'\"probe\":false', '\"probe\":true')) WHERE " +
           plain_record,
       "execution " + plain + ": event 3 does not match the hash its record holds"},
      {"replayed_last_one", DeleteEvents(exec_replayed, 5), "execution " + replayed + ": event 5, the last"},
      {"replayed_last_two", DeleteEvents(exec_replayed, 4), "execution " + replayed + ": events 4..5 are missing"},
      {"replayed_all_but_one", DeleteEvents(exec_replayed, 2) + "; " + KeepOwnEvents(record, 1),
       "execution " + replayed + ": events 2..5 are missing"},
      {"replayed_edited_own",
       "UPDATE items SET attrs = json_set(attrs, '$.events', replace(json_extract(attrs, '$.events'), "
       "'\"probe\":false', '\"probe\":true')) WHERE " +
           record,
       "execution " + replayed + ": event 4 (REPLAY_REQUESTED) does not link to event 3"},
      {"audit_last_one", DeleteEvents(day, 2), day + ": event 2, the last its head item names, is missing"},
      {"audit_every_event", DeleteEvents(day, 1), day + ": every event is missing"},
      {"audit_head", "DELETE FROM items WHERE pk = '" + day + "' AND sk = 'HEAD'", day + ": its head item"},
      {"record_outcome", "UPDATE items SET attrs = json_set(attrs, '$.outcome', 'FAILED') WHERE " + record,
       "its record says FAILED but event"},
      {"record_result", "UPDATE items SET attrs = json_set(attrs, '$.result_json', '{\"ok\":false}') WHERE " + record,
       // TOOL_SUCCEEDED's result_sha256 is rebuilt from the record that holds it.
       "execution " + replayed + ": event 4 (REPLAY_REQUESTED) does not link to event 3"},
      // The copies of a result that answer later calls without the downstream (S12).
      {"intent_result",
       "UPDATE items SET attrs = json_set(attrs, '$.result_json', '{\"refund_to\":\"attacker\"}') WHERE pk = "
       "'TENANT#tenant-a' AND sk LIKE 'INTENT#%' AND json_extract(attrs, '$.state') = 'SUCCEEDED'",
       "its result is not the result of execution"},
      {"replay_result",
       "UPDATE items SET attrs = json_set(attrs, '$.replay_result_json', '{\"refund_to\":\"attacker\"}') WHERE "
       "pk = 'TENANT#tenant-a' AND sk = 'EXEC#" +
           failed + "'",
       "execution " + failed + ": the result its record keeps for replays is not the result of its replay"},
      // ... and must be vouched for by the execution they name: one of that key (of that original),
      // kept as long as its retention (which the intent and the original keep) says it is.
      {"intent_names_a_missing_execution",
       "UPDATE items SET attrs = json_set(attrs, '$.execution_id', '01900000-0000-7000-8000-000000000000', "
       "'$.result_json', '{\"refund_to\":\"attacker\"}') WHERE pk = 'TENANT#tenant-a' AND sk = 'INTENT#pay-42'",
       "intent pay-42 of tenant tenant-a: it names execution 01900000-0000-7000-8000-000000000000, which is missing "
       "though its retention runs until"},
      {"intent_names_another_keys_execution",
       "UPDATE items SET attrs = json_set(attrs, '$.execution_id', '" + plain +
           "', '$.result_json', '{\"ok\":true}') WHERE pk = 'TENANT#tenant-a' AND sk = 'INTENT#pay-42'",
       "intent pay-42 of tenant tenant-a: it names execution " + plain + ", which ran for another key"},
      {"replay_result_names_a_missing_replay",
       "UPDATE items SET attrs = json_set(attrs, '$.replay_succeeded_in', '01900000-0000-7000-8000-000000000000', "
       "'$.replay_result_json', '{\"refund_to\":\"attacker\"}') WHERE pk = 'TENANT#tenant-a' AND sk = 'EXEC#" +
           failed + "'",
       "execution " + failed + ": the replay whose result its record keeps for replays, " +
           "01900000-0000-7000-8000-000000000000, is missing though its retention runs until"},
      {"replay_result_names_another_execution",
       "UPDATE items SET attrs = json_set(attrs, '$.replay_succeeded_in', '" + plain +
           "', '$.replay_result_json', '{\"ok\":true}') WHERE pk = 'TENANT#tenant-a' AND sk = 'EXEC#" + failed + "'",
       "execution " + failed + ": the result its record keeps for replays names " + plain +
           ", which is not one of its replays"},
      // A missing execution is gone with its retention only as a kept expiry says: a forgery that
      // leaves the expiry out (read as 0) vouches for nothing.
      {"intent_names_a_missing_execution_without_its_expiry",
       "UPDATE items SET attrs = json_remove(json_set(attrs, '$.execution_id', "
       "'01900000-0000-7000-8000-000000000000', '$.result_json', '{\"forged\":true}'), "
       "'$.execution_expires_at_s') WHERE pk = 'TENANT#tenant-a' AND sk = 'INTENT#pay-42'",
       "intent pay-42 of tenant tenant-a: it names execution 01900000-0000-7000-8000-000000000000, which is missing, "
       "and no expiry is kept for it"},
      {"replay_result_names_a_missing_replay_without_its_expiry",
       "UPDATE items SET attrs = json_remove(json_set(attrs, '$.replay_succeeded_in', "
       "'01900000-0000-7000-8000-000000000000', '$.replay_result_json', '{\"forged\":true}'), "
       "'$.replay_expires_at_s') WHERE pk = 'TENANT#tenant-a' AND sk = 'EXEC#" +
           failed + "'",
       "execution " + failed + ": the replay whose result its record keeps for replays, " +
           "01900000-0000-7000-8000-000000000000, is missing, and no expiry is kept for it"},
      // Another tool's success made to look like a replay of the failed call (its record's replay_of
      // and the failed call's kept result edited): its chain has no REPLAY_STARTED.
      {"replay_of_edited",
       "UPDATE items SET attrs = json_set(attrs, '$.replay_of', '" + failed + "') WHERE " + plain_record +
           "; UPDATE items SET attrs = json_set(attrs, '$.replay_succeeded_in', '" + plain +
           "', '$.replay_result_json', '{\"ok\":true}') WHERE pk = 'TENANT#tenant-a' AND sk = 'EXEC#" + failed + "'",
       "execution " + plain + ": its record's replay_of '" + failed + "' but its chain has no REPLAY_STARTED"},
      {"replay_of_removed",
       "UPDATE items SET attrs = json_remove(attrs, '$.replay_of') WHERE pk = 'TENANT#tenant-a' AND "
       "json_extract(attrs, '$.replay_of') = '" +
           replayed + "'",
       "its record's replay_of '' differs from REPLAY_STARTED's \"" + replayed + "\""},
      // A record is its execution's only under its own id.
      {"record_copied_under_another_id",
       "INSERT INTO items SELECT pk, 'EXEC#01900000-0000-7000-8000-000000000000', attrs, ttl FROM items WHERE " +
           plain_record,
       "execution " + plain +
           ": its record is stored under EXEC#01900000-0000-7000-8000-000000000000, not under its "
           "own id"},
      // How a call ended, as its final event says it.
      {"record_reason",
       "UPDATE items SET attrs = json_set(attrs, '$.reason', 'timeout') WHERE pk = 'TENANT#tenant-a' "
       "AND sk = 'EXEC#" +
           failed + "'",
       "execution " + failed + ": its record's reason 'timeout' differs from event 3 (TOOL_FAILED)'s"},
      {"record_reason_added", "UPDATE items SET attrs = json_set(attrs, '$.reason', 'timeout') WHERE " + plain_record,
       "execution " + plain + ": its record's reason 'timeout' differs from event 3 (TOOL_SUCCEEDED)'s \"\""},
      {"record_downstream_status",
       "UPDATE items SET attrs = json_set(attrs, '$.downstream_status', 503) WHERE pk = 'TENANT#tenant-a' AND sk = "
       "'EXEC#" +
           failed + "'",
       "execution " + failed + ": its record's downstream_status '503' differs from event 3 (TOOL_FAILED)'s 500"},
      // The record holds a chain's first events and its anchor: its events kept without it are a cut
      // chain, whether the row is deleted or only its ttl column says it has expired.
      {"record_deleted", "DELETE FROM items WHERE " + record,
       "execution " + replayed + ": its events are kept (EVENT#000000000004) but its record"},
      {"record_ttl_column", "UPDATE items SET ttl = 1 WHERE " + record,
       "execution " + replayed + ": its events are kept (EVENT#000000000004) but its record"},
      // The row's ttl column is the item's expiry (what sweeps and queries go by): a ttl edited into
      // the attrs alone does not make a damaged chain look expired, and an event row's column set
      // apart from its chain fails at once.
      {"record_outcome_and_attrs_ttl",
       "UPDATE items SET attrs = json_set(attrs, '$.outcome', 'FAILED', '$.ttl', 1) WHERE " + plain_record,
       "execution " + plain + ": its record says FAILED but event"},
      {"event_ttl_column",
       "UPDATE items SET ttl = ttl + 3600 WHERE pk = '" + exec_replayed + "' AND sk = 'EVENT#000000000004'",
       "execution " + replayed},
      {"record_moved",
       "UPDATE items SET pk = 'TENANT#tenant-b', attrs = json_set(attrs, '$.tenant_id', 'tenant-b') WHERE " + record,
       // EXECUTION_RECEIVED is rebuilt from the record it is held in: the moved record's chain no
       // longer reaches the REPLAY_REQUESTED items after it.
       "execution " + replayed + ": event 4 (REPLAY_REQUESTED) does not link to event 3"},
  };
  for (const Case& c : cases) {
    auto [code, out] = Verify(TamperedCopy(c.name, c.sql));
    EXPECT_EQ(code, 1) << c.name << ": " << out;
    EXPECT_THAT(out, HasSubstr(c.expected)) << c.name;
  }

  // JSON text nested 100,000 deep inside a row (a record's own events, an event item's data, an
  // audit event's data) is an unreadable row: verify fails it, and the server answers for it (and
  // serves on) — it used to overflow the stack of the copy after the parse and kill either.
  const std::string abyss = "replace(hex(zeroblob(100000)), '00', '[')";
  const std::vector<Case> deep = {
      {"deep_own_events",
       "UPDATE items SET attrs = json_set(attrs, '$.events', replace(json_extract(attrs, '$.events'), 'null]', " +
           abyss + " || ']')) WHERE " + plain_record,
       "execution " + plain},
      {"deep_event_item",
       "UPDATE items SET attrs = json_set(attrs, '$.data', " + abyss + ") WHERE pk = '" + exec_replayed +
           "' AND sk = 'EVENT#000000000004'",
       "execution " + replayed},
      {"deep_audit_event",
       "UPDATE items SET attrs = json_set(attrs, '$.data', " + abyss + ") WHERE pk = '" + day +
           "' AND sk = 'EVENT#000000000001'",
       day},
  };
  for (const Case& c : deep) {
    const std::string config = TamperedCopy(c.name, c.sql);
    auto [code, out] = Verify(config);
    EXPECT_EQ(code, 1) << c.name << ": " << out;
    EXPECT_THAT(out, HasSubstr(c.expected)) << c.name;
  }
  GatewayProcess served(Config(dir_.file("deep_own_events.db")), dir_, "deep");
  ASSERT_TRUE(served.Start());
  const auto unreadable = served.Public("GET", "/v1/executions/" + plain, "", alice_);
  ASSERT_EQ(unreadable.status, 200) << unreadable.body.substr(0, 600);
  EXPECT_EQ(Body(unreadable)["events_error"], "this execution's ledger cannot be read") << "the record, its ledger not";
  EXPECT_EQ(served.Public("GET", "/v1/executions/" + replayed, "", alice_).status, 200) << "and it serves on";
}

// Issue item 2: the archive verifies with the documented recipe alone (a short Python script, no
// toolgate), and the same script catches an edited event and a removed tail.
TEST_F(RunbookTest, TheExportVerifiesWithoutToolgateAndTheScriptCatchesEdits) {
  crm_.set_behavior([](const auto&) {
    return Reply{200, R"({"ok":true,"name":"Zoë \"Z\" Ñ","ratio":0.25,"big":1e300})"};
  });
  GatewayProcess& gw = Start();
  std::string id;
  for (int i = 0; i < 3; ++i)
    id = Body(gw.Invoke("crm.x", {{"input", {{"i", i}, {"text", "tab\there ✓"}}}}, alice_))["execution_id"];
  ASSERT_EQ(Replay(gw, id).status, 200);
  json set = Audit("line one\nline two \"quoted\"");
  set["scope"] = "tenant";
  set["key"] = "tenant-x";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", set.dump()).status, 200);
  gw.Terminate();

  const std::string archive = dir_.file("ledger.jsonl");
  auto [export_code, export_out] =
      Shell(std::string(TOOLGATE_BINARY) + " ledger export --config " + gw.config_path() + " > " + archive);
  ASSERT_EQ(export_code, 0) << export_out;
  const std::string script = std::string(TOOLGATE_SOURCE_DIR) + "/scripts/verify-ledger-export.py";
  auto [code, out] = Shell("python3 " + script + " " + archive);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("ok: 4 executions, 1 audit days")) << out;

  // Tamper with the archive: one event's data edited, then the last event of a chain removed.
  std::vector<json> lines;
  {
    std::ifstream in(archive);
    for (std::string text; std::getline(in, text);) lines.push_back(json::parse(text));
  }
  auto write = [&](const std::string& path, const std::vector<json>& ls) {
    std::ofstream out_file(path);
    for (const auto& l : ls) out_file << l.dump() << "\n";
  };
  std::vector<json> edited = lines;
  for (auto& l : edited) {
    // -1: a latency no call has (setting 1 was no edit at all whenever the call took 1 ms).
    if (l["kind"] == "execution" && l["record"]["execution_id"] == id) l["events"][2]["data"]["latency_ms"] = -1;
  }
  write(dir_.file("edited.jsonl"), edited);
  auto [edited_code, edited_out] = Shell("python3 " + script + " " + dir_.file("edited.jsonl"));
  EXPECT_EQ(edited_code, 1) << edited_out;
  EXPECT_THAT(edited_out, HasSubstr("execution " + id + ": event 3 (TOOL_SUCCEEDED) was altered"));

  std::vector<json> cut = lines;
  for (auto& l : cut) {
    if (l["kind"] == "execution" && l["record"]["execution_id"] == id) l["events"].erase(l["events"].size() - 1);
  }
  write(dir_.file("cut.jsonl"), cut);
  auto [cut_code, cut_out] = Shell("python3 " + script + " " + dir_.file("cut.jsonl"));
  EXPECT_EQ(cut_code, 1) << cut_out;
  EXPECT_THAT(cut_out, HasSubstr("execution " + id + ": event 4, the last its anchor names, is missing"));
}

// Issue item 3: switching off an action type switches off an unclassified tool of that name, whatever
// action_type the caller sends (or none); the effective action type is recorded.
TEST_F(RunbookTest, AnActionTypeSwitchCannotBeDodgedByAnUnclassifiedTool) {
  GatewayProcess& gw = Start("[tools.\"crm.classified\"]\naction_type = \"crm.write\"\n");
  json set = Audit();
  set["scope"] = "action_type";
  set["key"] = "crm.send";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", set.dump()).status, 200);
  auto plain = gw.Invoke("crm.send", {{"input", json::object()}}, alice_);
  ASSERT_EQ(plain.status, 403) << plain.body;
  EXPECT_EQ(Body(plain)["scope"], "action_type");
  auto relabelled = gw.Invoke("crm.send", {{"input", json::object()}, {"action_type", "harmless.read"}}, alice_);
  ASSERT_EQ(relabelled.status, 403) << relabelled.body;
  EXPECT_EQ(crm_.total(), 0) << "a switched-off tool reached its downstream";

  // The effective action type is what the ledger records: the tool name when nothing else says.
  auto other = gw.Invoke("crm.read", {{"input", json::object()}}, alice_);
  ASSERT_EQ(other.status, 200) << other.body;
  const json exec =
      Body(gw.Public("GET", "/v1/executions/" + Body(other)["execution_id"].get<std::string>(), "", alice_));
  EXPECT_EQ(exec["events"][0]["data"]["action_type"], "crm.read");
  // A classified tool keeps its class; a tenant_action switch by tool name blocks one tenant only.
  set["scope"] = "tenant_action";
  set["key"] = "tenant-a/crm.classified";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", set.dump()).status, 200);
  EXPECT_EQ(gw.Invoke("crm.classified", {{"input", json::object()}}, alice_).status, 403);
  EXPECT_EQ(gw.Invoke("crm.classified", {{"input", json::object()}}, bob_).status, 200);
}

// Issue item 4: a switch no call can match is refused with the reason, and nothing is stored.
TEST_F(RunbookTest, KillSwitchesThatCouldNeverMatchAreRefused) {
  GatewayProcess& gw = Start();
  auto put = [&](const std::string& scope, const std::string& key) {
    json set = Audit();
    set["scope"] = scope;
    set["key"] = key;
    auto r = gw.Admin("PUT", "/admin/kill-switches", set.dump());
    return std::make_pair(r.status, Body(r).value("error", std::string()));
  };
  EXPECT_EQ(put("connector", "nosuchconn"), std::make_pair(404, std::string("unknown_connector")));
  EXPECT_EQ(put("action_type", "email send"), std::make_pair(400, std::string("invalid_request")));
  EXPECT_EQ(put("action_type", "email/send"), std::make_pair(400, std::string("invalid_request")));
  EXPECT_EQ(put("tenant", "bad tenant!"), std::make_pair(400, std::string("invalid_request")));
  EXPECT_EQ(put("tenant_action", "tenant-a/email*"), std::make_pair(400, std::string("invalid_request")));
  EXPECT_TRUE(Body(gw.Admin("GET", "/admin/kill-switches"))["kill_switches"].empty());
  // Case-sensitive names (DESIGN §17.2): an uppercase action type is a valid key now.
  EXPECT_EQ(put("action_type", "Email.Send").first, 200);
  EXPECT_EQ(put("connector", "crm").first, 200);
  auto [code, out] = testing::RunCli({"kill-switch", "set", "connector", "nosuchconn", "--reason", "r",
                                      "--requested-by", "me", "--config", gw.CliConfigPath()},
                                     dir_);
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("unknown_connector"));
}

// Issue item 5: replays answered DEFERRED or BLOCKED before reaching the tool do not count toward
// max_replays_per_execution; those that ran do.
TEST_F(RunbookTest, ReplaysThatNeverRanDoNotUseUpTheLimit) {
  std::atomic<bool> healthy{false};
  crm_.set_behavior([&](const auto&) { return healthy ? Reply{200, "{}"} : Reply{503, "{}"}; });
  GatewayProcess& gw = Start("[replay]\nmax_replays_per_execution = 2\n");
  const std::string id = Body(gw.Invoke("crm.x", {{"input", json::object()}}, alice_))["execution_id"];
  json set = Audit();
  set["scope"] = "connector";
  set["key"] = "crm";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", set.dump()).status, 200);
  for (int i = 0; i < 5; ++i) {
    auto blocked = Replay(gw, id);
    ASSERT_EQ(blocked.status, 403) << i << ": " << blocked.body;
  }
  ASSERT_EQ(gw.Admin("DELETE", "/admin/kill-switches/connector/crm", Audit().dump()).status, 200);
  const int calls_before = crm_.total();
  auto failed = Replay(gw, id);  // reaches the (still failing) downstream: counts
  ASSERT_EQ(failed.status, 502) << failed.body;
  healthy = true;
  auto ran = Replay(gw, id);  // counts: the second of two
  ASSERT_EQ(ran.status, 200) << ran.body;
  EXPECT_EQ(crm_.total(), calls_before + 2);
  auto over = Replay(gw, id);
  EXPECT_EQ(over.status, 409) << over.body;
  EXPECT_EQ(Body(over)["error"], "replay_limit_reached");
}

// Issue item 7: an operator's limit can be listed and handed back to the config, audited.
TEST_F(RunbookTest, AnOperatorLimitIsListedAndHandedBackToTheConfig) {
  GatewayProcess& gw = Start();
  json put = Audit("traffic spike");
  put["max_in_flight"] = 16;
  ASSERT_EQ(gw.Admin("PUT", "/admin/connectors/crm/limits", put.dump()).status, 200);
  auto [list_code, list_out] = testing::RunCli({"limits", "list", "--json", "--config", gw.CliConfigPath()}, dir_);
  ASSERT_EQ(list_code, 0) << list_out;
  const json listed = json::parse(list_out.substr(0, list_out.rfind('}') + 1));
  EXPECT_EQ(listed["limits"][0]["max_in_flight"], 16);
  EXPECT_EQ(listed["limits"][0]["config_max_in_flight"], 8);
  EXPECT_EQ(listed["limits"][0]["set_by"], "operator");

  auto [reset_code, reset_out] = testing::RunCli({"limits", "reset", "crm", "--reason", "spike over", "--requested-by",
                                                  "oncall@acme", "--config", gw.CliConfigPath()},
                                                 dir_);
  ASSERT_EQ(reset_code, 0) << reset_out;
  const json connectors = Body(gw.Admin("GET", "/admin/connectors"));
  for (const auto& c : connectors["connectors"]) {
    EXPECT_EQ(c["max_in_flight"], 8);
    EXPECT_EQ(c["limit_set_by_operator"], false);
  }
  const json audit = Body(gw.Admin("GET", "/admin/audit?limit=1"));
  EXPECT_EQ(audit["events"][0]["type"], "LIMIT_CHANGED");
  EXPECT_EQ(audit["events"][0]["data"]["reset_to_config"], true);
  EXPECT_EQ(audit["events"][0]["data"]["from"], 16);
  EXPECT_EQ(audit["events"][0]["data"]["to"], 8);
  EXPECT_EQ(audit["events"][0]["data"]["reason"], "spike over");
  EXPECT_EQ(gw.Admin("DELETE", "/admin/connectors/crm/limits", "{}").status, 400) << "a reset without reason";
  // Handed back means the config owns it again: a restart with another value applies that value.
  gw.Terminate();
  gateways_.push_back(std::make_unique<GatewayProcess>(testing::BaseConfig(dir_.file("store.db")) +
                                                           "[connectors.crm]\nbase_url = \"" + crm_.base_url() +
                                                           "\"\nmax_in_flight = 5\n",
                                                       dir_, "again"));
  ASSERT_TRUE(gateways_.back()->Start());
  EXPECT_EQ(Body(gateways_.back()->Admin("GET", "/admin/connectors"))["connectors"][0]["max_in_flight"], 5);
}

// Runbook walkthrough: a SIGHUP (a closed terminal, a `kill -HUP` meant as a reload) ended the process
// with no drain — exit 129, the call in flight cut, its slot held until its lease ran out. toolgate has
// no config reload: the signal is ignored with a log line, the call completes and the gateway serves on.
TEST_F(RunbookTest, SighupIsIgnoredWithALogLineAndTheCallInFlightCompletes) {
  std::atomic<bool> release{false};
  crm_.set_behavior([&release](const auto&) {
    testing::WaitUntil([&release] { return release.load(); }, std::chrono::seconds(10), std::chrono::milliseconds(5));
    return Reply{200, R"({"ok":true})"};
  });
  gateways_.push_back(std::make_unique<GatewayProcess>(
      testing::Replaced(Config(dir_.file("store.db")), "timeout_ms = 1000", "timeout_ms = 15000"), dir_, "hup"));
  GatewayProcess& gw = *gateways_.back();
  ASSERT_TRUE(gw.Start());
  api::ClientResult held;
  std::thread caller([&] { held = gw.Invoke("crm.x", {{"input", json::object()}}, alice_); });
  testing::WaitUntil([&] { return crm_.concurrent() >= 1; }, std::chrono::seconds(20));
  ASSERT_EQ(crm_.concurrent(), 1) << "the call did not reach the downstream";
  ASSERT_EQ(kill(gw.pid(), SIGHUP), 0);
  testing::WaitUntil([&] { return gw.Log().find("event=signal_ignored") != std::string::npos; },
                     std::chrono::seconds(10), std::chrono::milliseconds(50));
  release = true;
  caller.join();
  EXPECT_EQ(held.status, 200) << "the call in flight at SIGHUP was cut: " << held.error << " " << held.body;
  EXPECT_THAT(gw.Log(), HasSubstr("event=signal_ignored signal=SIGHUP"));
  // Still serving after the signal, and still stopping gracefully on SIGTERM.
  EXPECT_EQ(gw.Invoke("crm.x", {{"input", {{"after", "hup"}}}}, alice_).status, 200) << gw.Log();
  const int status = gw.Terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exit status " << status << "\n" << gw.Log();
}

// Runbook walkthrough: a damaged store file made serve, `store check` and `ledger verify` print only
// "sqlite read: database disk image is malformed". Each names the file and what to do now.
TEST_F(RunbookTest, ADamagedStoreIsNamedWithItsPathAndTheNextStep) {
  GatewayProcess& gw = Start();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(gw.Invoke("crm.x", {{"input", {{"i", i}}}}, alice_).status, 200);
  gw.Terminate();
  // A copy with every page after the first (the header and schema) overwritten.
  const std::string damaged = dir_.file("damaged.db");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, ("VACUUM INTO '" + damaged + "'").c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  const auto size = std::filesystem::file_size(damaged);
  ASSERT_GT(size, 2 * 4096u);
  {
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    const std::string garbage(size - 4096, '\xa5');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  const std::string config = dir_.file("damaged.toml");
  std::ofstream(config) << Config(damaged);
  setenv("TOOLGATE_JWT_SECRET", testing::kJwtSecret, 1);  // serve needs it before it opens the store
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"store", "check"}, {"ledger", "verify"}, {"serve"}}) {
    std::vector<std::string> args = command;
    args.insert(args.end(), {"--config", config});
    auto [code, out] = testing::RunCli(args, dir_);
    EXPECT_EQ(code, 1) << command[0] << ": " << out;
    EXPECT_THAT(out, HasSubstr("the store file " + damaged + " is damaged")) << command[0];
    EXPECT_THAT(out, HasSubstr("restore the latest backup")) << command[0];
  }
}

// Runbook walkthrough: `store check` and `ledger verify` on a store this user may not write (here its
// directory; a read-only mount is the same to SQLite) said "sqlite prepare: unable to open database
// file", not the runbook's "is read-only for this user … serve would refuse it".
TEST_F(RunbookTest, AStoreInADirectoryThisUserCannotWriteIsSaidToBeReadOnly) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes a directory whatever its mode says";
  const std::string store = dir_.file("ro/store.db");
  gateways_.push_back(std::make_unique<GatewayProcess>(Config(store), dir_, "ro"));
  ASSERT_TRUE(gateways_.back()->Start());
  ASSERT_EQ(gateways_.back()->Invoke("crm.x", {{"input", json::object()}}, alice_).status, 200);
  gateways_.back()->Terminate();  // the last connection closed: no -wal, no -shm
  ASSERT_EQ(chmod(dir_.file("ro").c_str(), 0555), 0);
  for (const std::vector<std::string>& command : {std::vector<std::string>{"store", "check"}, {"ledger", "verify"}}) {
    std::vector<std::string> args = command;
    args.insert(args.end(), {"--config", gateways_.back()->config_path()});
    auto [code, out] = testing::RunCli(args, dir_);
    EXPECT_EQ(code, 1) << command[0] << ": " << out;
    EXPECT_THAT(out, HasSubstr("sqlite store '" + store +
                               "' is read-only for this user (its directory): serve "
                               "would refuse it"))
        << command[0];
  }
  chmod(dir_.file("ro").c_str(), 0755);
}

// Runbook walkthrough: a config error listed its problems on one line, joined by a literal \n.
TEST_F(RunbookTest, AConfigErrorIsPrintedOneProblemALine) {
  const std::string config = dir_.file("bad.toml");
  std::ofstream(config) << Config(dir_.file("store.db"),
                                  "[connectors.crm.tls]\nca_file = \"/nonexistent.pem\"\n[connectors.crm.retry]\n"
                                  "max_attempts = 0\n");
  auto [code, out] = testing::RunCli({"store", "check", "--config", config}, dir_);
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, ::testing::Not(HasSubstr("\\n"))) << out;
  EXPECT_THAT(out, HasSubstr("toolgate: " + config + ": invalid configuration:\n  ")) << out;
  EXPECT_THAT(out, HasSubstr("\n  connectors.crm.tls applies to https:// connectors only\n")) << out;
  EXPECT_THAT(out, HasSubstr("\n  connectors.crm.retry.max_attempts must be in 1..10")) << out;
}

// Runbook walkthrough: `toolgate status --help` did not say how to choose the config file, since
// --config is the top command's option (it is taken before or after the subcommand alike).
TEST_F(RunbookTest, EverySubcommandsHelpNamesTheConfigOption) {
  for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
           {"status"}, {"ledger", "verify"}, {"queue", "purge"}, {"store", "init"}, {"kill-switch", "set"}}) {
    std::vector<std::string> args = command;
    args.push_back("--help");
    auto [code, out] = testing::RunCli(args, dir_);
    EXPECT_EQ(code, 0) << command[0] << ": " << out;
    EXPECT_THAT(out, HasSubstr("--config TEXT")) << command[0] << ": " << out;
  }
  // And it is honoured after the subcommand: a file that is not there is named.
  auto [code, out] = testing::RunCli({"store", "check", "--config", dir_.file("absent.toml")}, dir_);
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("absent.toml")) << out;
}

}  // namespace
}  // namespace toolgate
