// The replay API (design S11, S12) on the real binary: a new execution through the whole path, tool-
// layer deduplication, forced re-execution by admins only, the replay limit, tenancy, and a ledger
// that tells the story on both executions.

#include <sqlite3.h>

#include <barrier>
#include <set>
#include <thread>

#include "downstream_key.h"
#include "fake_downstream.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"
#include "toolgate/clock.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/ledger.h"
#include "toolgate/store/sqlite_item_store.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;

// The gateway's SQLite file opened beside it, to change what the store holds as someone with write
// access to it would; closed when it leaves scope (or at Close()).
class StoreEdit {
 public:
  explicit StoreEdit(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK) << path;
    sqlite3_busy_timeout(db_, 5000);
  }
  StoreEdit(const StoreEdit&) = delete;
  StoreEdit& operator=(const StoreEdit&) = delete;
  ~StoreEdit() { Close(); }
  // Runs `sql`; the rows its last statement changed (a failure is the test's failure, and -1).
  int Run(const std::string& sql) {
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sqlite3_errmsg(db_) << " in: " << sql;
      return -1;
    }
    return sqlite3_changes(db_);
  }
  void Close() {
    sqlite3_close(db_);
    db_ = nullptr;
  }

 private:
  sqlite3* db_ = nullptr;
};

class ReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gw_ = std::make_unique<GatewayProcess>(
        testing::BaseConfig(dir_.file("store.db")) +
            "[replay]\nmax_replays_per_execution = 3\n[connectors.crm]\nbase_url = \"" + crm_.base_url() +
            "\"\ntimeout_ms = 1000\n[connectors.crm.breaker]\nfailure_threshold = 100\n",
        dir_);
    ASSERT_TRUE(gw_->Start());
  }
  api::ClientResult Replay(const std::string& id, const std::string& token, bool force = false,
                           json body = {{"replay_reason", "downstream recovered"}, {"requested_by", "oncall@acme"}}) {
    if (force) body["force"] = true;
    return gw_->Public("POST", "/v1/executions/" + id + "/replay", body.dump(), token);
  }
  // `n` replays of `id` sent at once (threads released together), their answers in thread order.
  std::vector<api::ClientResult> ReplaysAtOnce(int n, const std::string& id, const std::string& token,
                                               bool force = false) {
    std::vector<api::ClientResult> results(static_cast<size_t>(n));
    std::barrier start(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        results[static_cast<size_t>(i)] = Replay(id, token, force);
      });
    }
    for (auto& t : threads) t.join();
    return results;
  }
  std::vector<std::string> Types(const std::string& id, const std::string& token) {
    std::vector<std::string> types;
    const json exec = Body(gw_->Public("GET", "/v1/executions/" + id, "", token));
    for (const auto& e : exec["events"]) types.push_back(e["type"]);
    return types;
  }

  TempDir dir_;
  FakeDownstream crm_;
  std::unique_ptr<GatewayProcess> gw_;
  const std::string user_ = Token("acme");
  const std::string operator_ = Token("acme", {"operator"}, 3600, "op-1");
  const std::string admin_ = Token("acme", {"admin"}, 3600, "admin-1");
};

TEST_F(ReplayTest, AFailedCallReplayedAfterRecoverySucceedsOnceAndIsThenDeduplicated) {
  std::atomic<bool> healthy{false};
  crm_.set_behavior([&](const auto& req) {
    return healthy ? Reply{200, R"({"updated":)" + req.body + "}"} : Reply{503, "{}"};
  });
  auto original = gw_->Invoke("crm.update", {{"input", {{"id", 7}}}}, user_);
  ASSERT_EQ(original.status, 502);
  const std::string original_id = Body(original)["execution_id"];
  healthy = true;

  auto replay = Replay(original_id, operator_);
  ASSERT_EQ(replay.status, 200) << replay.body;
  const json r1 = Body(replay);
  EXPECT_EQ(r1["outcome"], "SUCCEEDED");
  EXPECT_EQ(r1["replay_of"], original_id);
  EXPECT_NE(r1["execution_id"], original_id);
  EXPECT_EQ(r1["result"]["updated"]["id"], 7);  // the original's input, sent again
  ASSERT_EQ(crm_.total(), 2);
  EXPECT_EQ(crm_.requests()[1].headers.at("idempotency-key"),
            testing::DownstreamKey("acme", original_id));  // the original's intent key

  // The intent has succeeded now: a second replay is answered from the record, with no call.
  auto again = Replay(original_id, operator_);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(Body(again)["deduplicated"], true);
  EXPECT_EQ(Body(again)["succeeded_in"], r1["execution_id"]);
  EXPECT_EQ(Body(again)["result"]["updated"]["id"], 7);
  EXPECT_EQ(crm_.total(), 2);

  // The story on both ledgers.
  EXPECT_THAT(Types(original_id, user_), ::testing::ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_FAILED",
                                                                "REPLAY_REQUESTED", "REPLAY_REQUESTED"));
  EXPECT_THAT(Types(r1["execution_id"], user_),
              ::testing::ElementsAre("REPLAY_STARTED", "EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED",
                                     "REPLAY_COMPLETED"));
  EXPECT_THAT(Types(Body(again)["execution_id"], user_),
              ::testing::ElementsAre("REPLAY_STARTED", "EXECUTION_RECEIVED", "REPLAY_DEDUPED", "REPLAY_COMPLETED"));
  const json lineage = Body(gw_->Public("GET", "/v1/executions/" + original_id, "", user_));
  EXPECT_THAT(lineage["replays"], ::testing::ElementsAre(r1["execution_id"], Body(again)["execution_id"]));
  const json requested = lineage["events"][3];
  EXPECT_EQ(requested["data"]["replay_reason"], "downstream recovered");
  EXPECT_EQ(requested["data"]["requested_by"], "oncall@acme");
  EXPECT_EQ(requested["data"]["sub"], "op-1");
  EXPECT_EQ(requested["actor"], "op-1");

  gw_->Terminate();
  auto [code, out] = testing::RunCli({"ledger", "verify", "--config", gw_->config_path()}, dir_);
  EXPECT_EQ(code, 0) << out;
}

TEST_F(ReplayTest, ASucceededOriginalIsDeduplicatedAndOnlyAnAdminMayForceIt) {
  auto original = gw_->Invoke("crm.send", {{"input", {{"to", "x"}}}}, user_);
  ASSERT_EQ(original.status, 200);
  const std::string id = Body(original)["execution_id"];
  auto deduped = Replay(id, operator_);
  ASSERT_EQ(deduped.status, 200) << deduped.body;
  EXPECT_EQ(Body(deduped)["deduplicated"], true);
  EXPECT_EQ(crm_.total(), 1);

  auto refused = Replay(id, operator_, /*force=*/true);
  EXPECT_EQ(refused.status, 403);
  EXPECT_EQ(Body(refused)["error"], "forbidden");
  EXPECT_EQ(crm_.total(), 1);

  auto forced = Replay(id, admin_, /*force=*/true);
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(Body(forced)["deduplicated"], nullptr);
  EXPECT_EQ(crm_.total(), 2);
  EXPECT_THAT(Types(Body(forced)["execution_id"], user_),
              ::testing::ElementsAre("REPLAY_STARTED", "EXECUTION_RECEIVED", "REPLAY_FORCED", "TOOL_INVOKED",
                                     "TOOL_SUCCEEDED", "REPLAY_COMPLETED"));
  const std::string metrics = gw_->Admin("GET", "/metrics").body;
  EXPECT_NE(metrics.find("toolgate_replays_total{result=\"deduped\"} 1"), std::string::npos);
  EXPECT_NE(metrics.find("toolgate_replays_total{result=\"forced\"} 1"), std::string::npos);
}

// The result an original keeps from its replay that succeeded answers later replays only as that
// replay vouches for it: edited in the store (a forged result naming a made-up replay), it answers
// nothing and nothing is sent; put back, later replays are deduplicated again.
TEST_F(ReplayTest, AKeptReplayResultItsReplayDoesNotVouchForAnswersNothing) {
  std::atomic<bool> healthy{false};
  crm_.set_behavior([&](const auto&) { return healthy ? Reply{200, R"({"refund":"none"})"} : Reply{503, "{}"}; });
  const std::string id = Body(gw_->Invoke("crm.x", {{"input", {{"n", 1}}}}, user_))["execution_id"];
  healthy = true;
  ASSERT_EQ(Replay(id, operator_).status, 200);
  ASSERT_EQ(crm_.total(), 2);

  StoreEdit edit(dir_.file("store.db"));
  auto run = [&](const std::string& sql) { EXPECT_EQ(edit.Run(sql), 1) << sql; };
  const std::string where = " WHERE pk = 'TENANT#acme' AND sk = 'EXEC#" + id + "'";
  edit.Run("CREATE TEMP TABLE kept AS SELECT attrs FROM items" + where);
  run("UPDATE items SET attrs = json_set(attrs, '$.replay_succeeded_in', '01900000-0000-7000-8000-000000000000', "
      "'$.replay_result_json', '{\"refund\":\"issued\"}')" +
      where);
  auto forged = Replay(id, operator_);
  EXPECT_EQ(forged.status, 503) << forged.body;
  EXPECT_EQ(forged.body.find("issued"), std::string::npos) << "the forged result was answered";
  EXPECT_EQ(crm_.total(), 2);
  // Without the replay's expiry (read as 0), the made-up replay is not one gone with its retention.
  run("UPDATE items SET attrs = json_remove(attrs, '$.replay_expires_at_s')" + where);
  forged = Replay(id, operator_);
  EXPECT_EQ(forged.status, 503) << forged.body;
  EXPECT_EQ(forged.body.find("issued"), std::string::npos) << "the forged result was answered";
  EXPECT_EQ(crm_.total(), 2);

  run("UPDATE items SET attrs = (SELECT attrs FROM kept)" + where);
  edit.Close();
  auto deduped = Replay(id, operator_);
  ASSERT_EQ(deduped.status, 200) << deduped.body;
  EXPECT_EQ(Body(deduped)["deduplicated"], true);
  EXPECT_EQ(Body(deduped)["result"], json({{"refund", "none"}}));
  EXPECT_EQ(crm_.total(), 2);
}

// Another tool's success is not a replay of a failed call: made to look like one (its record's
// replay_of and the failed call's kept result edited in the store), a replay of the failed call
// answers nothing and sends nothing, and `ledger verify` names the edit.
TEST_F(ReplayTest, AnotherToolsSuccessIsNotAReplaysResult) {
  std::atomic<bool> healthy{false};
  crm_.set_behavior([&](const auto& req) {
    return healthy ? Reply{200, R"({"done":)" + req.body + "}"} : Reply{503, "{}"};
  });
  const std::string failed = Body(gw_->Invoke("crm.update", {{"input", {{"n", 1}}}}, user_))["execution_id"];
  healthy = true;
  const std::string other = Body(gw_->Invoke("crm.refund", {{"input", {{"to", "attacker"}}}}, user_))["execution_id"];
  ASSERT_EQ(crm_.total(), 2);

  StoreEdit edit(dir_.file("store.db"));
  auto run = [&](const std::string& sql) { EXPECT_EQ(edit.Run(sql), 1) << sql; };
  auto record = [](const std::string& id) { return " WHERE pk = 'TENANT#acme' AND sk = 'EXEC#" + id + "'"; };
  run("UPDATE items SET attrs = json_set(attrs, '$.replay_of', '" + failed + "')" + record(other));
  run("UPDATE items SET attrs = json_set(attrs, '$.replay_succeeded_in', '" + other +
      "', '$.replay_result_json', (SELECT json_extract(attrs, '$.result_json') FROM items" + record(other) +
      "), '$.replay_expires_at_s', (SELECT ttl FROM items" + record(other) + "))" + record(failed));
  edit.Close();
  auto forged = Replay(failed, operator_);
  EXPECT_EQ(forged.status, 503) << forged.body;
  EXPECT_EQ(forged.body.find("attacker"), std::string::npos) << "another tool's result was answered";
  EXPECT_EQ(crm_.total(), 2);

  gw_->Terminate();
  auto [code, out] = testing::RunCli({"ledger", "verify", "--config", gw_->config_path()}, dir_);
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("execution " + failed + ": the result its record keeps for replays names " +
                                        other + ", which ran another tool or intent key than it"));
}

// What a replay sends is the record's input only as its chain vouches for it (EXECUTION_RECEIVED
// carries the input's hash): an input edited in the store is not sent; restored, it is.
TEST_F(ReplayTest, AnInputItsChainDoesNotVouchForIsNotSent) {
  std::atomic<bool> healthy{false};
  crm_.set_behavior([&](const auto&) { return healthy ? Reply{200, R"({"ok":1})"} : Reply{503, "{}"}; });
  const std::string id = Body(gw_->Invoke("crm.x", {{"input", {{"amount", 10}}}}, user_))["execution_id"];
  ASSERT_EQ(crm_.total(), 1);
  healthy = true;

  StoreEdit edit(dir_.file("store.db"));
  auto run = [&](const std::string& sql) { EXPECT_EQ(edit.Run(sql), 1) << sql; };
  const std::string where = " WHERE pk = 'TENANT#acme' AND sk = 'EXEC#" + id + "'";
  run("UPDATE items SET attrs = json_set(attrs, '$.input_json', replace(json_extract(attrs, '$.input_json'), "
      "'10', '10000'))" +
      where);
  auto forged = Replay(id, operator_);
  EXPECT_EQ(forged.status, 503) << forged.body;
  EXPECT_EQ(Body(forged)["error"], "store_unavailable") << forged.body;
  EXPECT_EQ(crm_.total(), 1) << "the edited input was sent";

  run("UPDATE items SET attrs = json_set(attrs, '$.input_json', replace(json_extract(attrs, '$.input_json'), "
      "'10000', '10'))" +
      where);
  edit.Close();
  auto replayed = Replay(id, operator_);
  ASSERT_EQ(replayed.status, 200) << replayed.body;
  EXPECT_EQ(Body(replayed)["outcome"], "SUCCEEDED");
  ASSERT_EQ(crm_.total(), 2);
  EXPECT_EQ(json::parse(crm_.requests().back().body), json({{"amount", 10}}));
}

TEST_F(ReplayTest, EveryRefusal) {
  crm_.set_behavior([](const auto&) { return Reply{500, "{}"}; });
  const std::string id = Body(gw_->Invoke("crm.x", {{"input", json::object()}}, user_))["execution_id"];
  EXPECT_EQ(Replay(id, user_).status, 403);                             // no role
  EXPECT_EQ(Replay(id, Token("other-tenant", {"admin"})).status, 404);  // another tenant's execution
  EXPECT_EQ(Replay("01a21f69-e57f-7954-b145-1de1fc45f4a5", operator_).status, 404);
  EXPECT_EQ(Replay(id, operator_, false, {{"requested_by", "x"}}).status, 400);
  EXPECT_EQ(Replay(id, operator_, false, {{"replay_reason", ""}, {"requested_by", "x"}}).status, 400);
  EXPECT_EQ(Replay(id, operator_, false, {{"replay_reason", std::string(1001, 'r')}, {"requested_by", "x"}}).status,
            400);
  auto tenant_field =
      Replay(id, operator_, false, {{"replay_reason", "r"}, {"requested_by", "x"}, {"tenant_id", "acme"}});
  EXPECT_EQ(Body(tenant_field)["error"], "tenant_from_token_only");
  EXPECT_EQ(gw_->Public("POST", "/v1/executions/" + id + "/replay", "", "").status, 401);
  EXPECT_EQ(crm_.total(), 1);
  // max_replays_per_execution = 3: the fourth is refused, and it counts the original, not its replays.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Replay(id, operator_).status, 502);
  auto limited = Replay(id, operator_);
  EXPECT_EQ(limited.status, 409);
  EXPECT_EQ(Body(limited)["error"], "replay_limit_reached");
  EXPECT_EQ(crm_.total(), 4);
}

TEST_F(ReplayTest, ConcurrentReplaysOfOneOriginalReachTheDownstreamOnce) {
  std::atomic<bool> healthy{false};
  crm_.set_behavior([&](const auto&) { return healthy ? Reply{200, "{}", {}, 300} : Reply{503, "{}"}; });
  const std::string id = Body(gw_->Invoke("crm.x", {{"input", json::object()}}, user_))["execution_id"];
  healthy = true;
  const std::vector<api::ClientResult> results = ReplaysAtOnce(3, id, operator_);
  EXPECT_EQ(crm_.total(), 2) << "the original and exactly one replay";
  int ok = 0, in_progress = 0;
  for (const auto& r : results) {
    if (r.status == 200) ++ok;
    if (r.status == 503 && Body(r)["reason"] == "intent_in_progress") ++in_progress;
  }
  EXPECT_EQ(ok + in_progress, 3);
  EXPECT_GE(ok, 1);
}

// A forced replay takes the intent over (S12: force overrides only the deduplication): forced
// replays of one original arriving together reach the downstream one at a time, the others are told
// intent_in_progress; a forced replay that fails gives the intent back naming the success it took
// over, so the client's repeat of its key is still answered from it, and the ledger verifies.
TEST_F(ReplayTest, ConcurrentForcedReplaysRunOneAtATimeAndAFailedOneGivesTheSuccessBack) {
  std::atomic<bool> healthy{true};
  crm_.set_behavior([&](const auto&) { return healthy ? Reply{200, R"({"sent":true})", {}, 300} : Reply{500, "{}"}; });
  const json keyed = {{"input", {{"to", "x"}}}, {"idempotency_key", "send-1"}};
  const std::string id = Body(gw_->Invoke("crm.send", keyed, user_))["execution_id"];
  ASSERT_EQ(crm_.total(), 1);
  const std::vector<api::ClientResult> results = ReplaysAtOnce(3, id, admin_, /*force=*/true);
  EXPECT_EQ(crm_.total(), 2) << "the original and exactly one forced replay";
  std::string forced_id;
  int in_progress = 0;
  for (const auto& r : results) {
    if (r.status == 200) forced_id = Body(r)["execution_id"];
    if (r.status == 503 && Body(r)["reason"] == "intent_in_progress") ++in_progress;
  }
  ASSERT_FALSE(forced_id.empty());
  EXPECT_EQ(in_progress, 2);

  healthy = false;
  auto failed = Replay(id, admin_, /*force=*/true);
  EXPECT_EQ(failed.status, 502) << failed.body;
  EXPECT_EQ(crm_.total(), 3);
  {
    // The intent given back names the success it took over with that execution's expiry, as its
    // finish wrote it: without it the intent would vouch for nothing once that execution is gone.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "SELECT json_extract(i.attrs, '$.execution_id'), "
                                 "json_extract(i.attrs, '$.execution_expires_at_s'), e.ttl FROM items i JOIN items e "
                                 "ON e.pk = i.pk AND e.sk = 'EXEC#' || json_extract(i.attrs, '$.execution_id') "
                                 "WHERE i.pk = 'TENANT#acme' AND i.sk = 'INTENT#send-1'",
                                 -1, &st, nullptr),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))), forced_id);
    EXPECT_GT(sqlite3_column_int64(st, 2), 0);
    EXPECT_EQ(sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2));
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  auto repeat = gw_->Invoke("crm.send", keyed, user_);  // the client repeats its key
  ASSERT_EQ(repeat.status, 200) << repeat.body;
  EXPECT_EQ(Body(repeat)["intent_hit"], true) << "the failed forced replay left the intent FAILED: it ran again";
  EXPECT_EQ(Body(repeat)["execution_id"], forced_id) << "the last success";
  EXPECT_EQ(Body(repeat)["result"], json({{"sent", true}}));
  auto deduped = Replay(id, operator_);
  ASSERT_EQ(deduped.status, 200) << deduped.body;
  EXPECT_EQ(Body(deduped)["deduplicated"], true);
  EXPECT_EQ(crm_.total(), 3);
  auto [code, out] = testing::RunCli({"ledger", "verify", "--config", gw_->config_path()}, dir_);
  EXPECT_EQ(code, 0) << out;
}

// A forced replay that succeeds leaves the intent naming it and its result, and its original too:
// a later replay is deduplicated from that success (`succeeded_in` names it, with its result), as a
// client repeating the key is answered from it, not from the original's older result.
TEST_F(ReplayTest, AReplayAfterAForcedReplaySucceededIsAnsweredFromTheForcedReplay) {
  std::atomic<int> sent{0};  // each call answered with its number, so each success has its own result
  crm_.set_behavior([&](const auto&) { return Reply{200, R"({"sent":)" + std::to_string(++sent) + "}"}; });
  const json keyed = {{"input", {{"to", "x"}}}, {"idempotency_key", "k-1"}};
  auto original = gw_->Invoke("crm.send", keyed, user_);
  ASSERT_EQ(original.status, 200) << original.body;
  const std::string id = Body(original)["execution_id"];
  auto before = Replay(id, operator_);
  ASSERT_EQ(before.status, 200) << before.body;
  EXPECT_EQ(Body(before)["succeeded_in"], id);
  EXPECT_EQ(Body(before)["result"], json({{"sent", 1}}));

  auto forced = Replay(id, admin_, /*force=*/true);
  ASSERT_EQ(forced.status, 200) << forced.body;
  const std::string forced_id = Body(forced)["execution_id"];
  EXPECT_EQ(Body(forced)["result"], json({{"sent", 2}}));
  ASSERT_EQ(crm_.total(), 2);

  auto after = Replay(id, operator_);
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(Body(after)["deduplicated"], true);
  EXPECT_EQ(Body(after)["succeeded_in"], forced_id) << "answered from the original, not the last success";
  EXPECT_EQ(Body(after)["result"], json({{"sent", 2}}));
  const json deduped = Body(
      gw_->Public("GET", "/v1/executions/" + Body(after)["execution_id"].get<std::string>(), "", user_))["events"][2];
  ASSERT_EQ(deduped["type"], "REPLAY_DEDUPED");
  EXPECT_EQ(deduped["data"]["succeeded_in"], forced_id);
  // The client repeating its key hears the same success.
  auto repeat = gw_->Invoke("crm.send", keyed, user_);
  ASSERT_EQ(repeat.status, 200) << repeat.body;
  EXPECT_EQ(Body(repeat)["intent_hit"], true);
  EXPECT_EQ(Body(repeat)["execution_id"], forced_id);
  EXPECT_EQ(Body(repeat)["result"], json({{"sent", 2}}));
  EXPECT_EQ(crm_.total(), 2);

  gw_->Terminate();
  auto [code, out] = testing::RunCli({"ledger", "verify", "--config", gw_->config_path()}, dir_);
  EXPECT_EQ(code, 0) << out;
}

// What a succeeded original keeps of its forced replay's success answers later replays only as that
// replay vouches for it, as for a replay of a failed call: edited in the store, it answers nothing
// and nothing is sent (the original's own older result is not answered instead); with the replay
// gone with its retention, the copy still answers, naming it.
TEST_F(ReplayTest, ASucceededOriginalsCopyOfItsForcedReplayAnswersOnlyAsThatReplayVouchesForIt) {
  std::atomic<int> sent{0};
  crm_.set_behavior([&](const auto&) { return Reply{200, R"({"sent":)" + std::to_string(++sent) + "}"}; });
  auto original = gw_->Invoke("crm.send", {{"input", {{"to", "x"}}}}, user_);
  ASSERT_EQ(original.status, 200) << original.body;
  const std::string id = Body(original)["execution_id"];
  auto forced = Replay(id, admin_, /*force=*/true);
  ASSERT_EQ(forced.status, 200) << forced.body;
  const std::string forced_id = Body(forced)["execution_id"];
  ASSERT_EQ(crm_.total(), 2);

  StoreEdit edit(dir_.file("store.db"));
  auto run = [&](const std::string& sql) { EXPECT_EQ(edit.Run(sql), 1) << sql; };
  auto record = [](const std::string& exec) { return " WHERE pk = 'TENANT#acme' AND sk = 'EXEC#" + exec + "'"; };
  edit.Run("CREATE TEMP TABLE kept AS SELECT attrs FROM items" + record(id));
  run("UPDATE items SET attrs = json_set(attrs, '$.replay_result_json', '{\"sent\":99}')" + record(id));
  auto forged = Replay(id, operator_);
  EXPECT_EQ(forged.status, 503) << forged.body;
  EXPECT_EQ(Body(forged)["error"], "store_unavailable") << forged.body;
  EXPECT_EQ(crm_.total(), 2);

  // Put back, with its replay gone with its retention (its expiry, as the original keeps it, past).
  run("UPDATE items SET attrs = json_set((SELECT attrs FROM kept), '$.replay_expires_at_s', 1)" + record(id));
  run("DELETE FROM items" + record(forced_id));
  edit.Close();
  auto deduped = Replay(id, operator_);
  ASSERT_EQ(deduped.status, 200) << deduped.body;
  EXPECT_EQ(Body(deduped)["deduplicated"], true);
  EXPECT_EQ(Body(deduped)["succeeded_in"], forced_id);
  EXPECT_EQ(Body(deduped)["result"], json({{"sent", 2}}));
  EXPECT_EQ(crm_.total(), 2);
}

TEST_F(ReplayTest, AReplayRunsTheWholePathKillSwitchesIncludedAndOutlivesTheIntentRecord) {
  crm_.set_behavior([](const auto&) { return Reply{500, "{}"}; });
  const std::string id =
      Body(gw_->Invoke("crm.x", {{"input", json::object()}, {"idempotency_key", "k-1"}}, user_))["execution_id"];
  ASSERT_EQ(gw_->Admin("PUT", "/admin/kill-switches",
                       json{{"scope", "tenant"}, {"key", "acme"}, {"reason", "incident"}, {"requested_by", "w"}}.dump())
                .status,
            200);
  auto blocked = Replay(id, operator_);
  EXPECT_EQ(blocked.status, 403);
  EXPECT_EQ(Body(blocked)["outcome"], "BLOCKED");
  EXPECT_EQ(Body(blocked)["replay_of"], id);
  EXPECT_EQ(crm_.total(), 1);
  ASSERT_EQ(
      gw_->Admin("DELETE", "/admin/kill-switches/tenant/acme", json{{"reason", "ok"}, {"requested_by", "w"}}.dump())
          .status,
      200);
  crm_.set_behavior([](const auto&) { return Reply{200, R"({"v":1})"}; });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // past kill_switches.refresh_ms
  auto ok = Replay(id, operator_);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(crm_.requests().back().headers.at("idempotency-key"), testing::DownstreamKey("acme", "k-1"));
  // Even once the intent record is gone (it expires after retention_h), the original remembers.
  gw_->Terminate();
  EXPECT_EQ(StoreEdit(dir_.file("store.db")).Run("DELETE FROM items WHERE sk = 'INTENT#k-1'"), 1);
  ASSERT_TRUE(gw_->Start());
  auto deduped = Replay(id, operator_);
  ASSERT_EQ(deduped.status, 200) << deduped.body;
  EXPECT_EQ(Body(deduped)["deduplicated"], true);
  EXPECT_EQ(Body(deduped)["succeeded_in"], Body(ok)["execution_id"]);
  EXPECT_EQ(crm_.total(), 2);
}

// A gateway SIGKILLed while its call was at the downstream leaves the execution IN_PROGRESS for good.
// While a gateway could still be running it, a replay is refused (409); once it is older than the
// call's timeout and the intent's hold, it was abandoned and may be replayed: the downstream gets the
// same Idempotency-Key, and the replay records the outcome the original never could.
TEST_F(ReplayTest, AnExecutionAbandonedInProgressCanBeReplayedOnceNoGatewayCanStillRunIt) {
  std::atomic<bool> slow{true};
  crm_.set_behavior([&](const auto&) { return slow ? Reply{200, "{}", {}, 3000} : Reply{200, R"({"ok":1})"}; });
  std::thread caller([&] { gw_->Invoke("crm.update", {{"input", {{"id", 9}}}, {"idempotency_key", "k-9"}}, user_); });
  for (int i = 0; i < 300 && crm_.concurrent() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(crm_.concurrent(), 1);
  gw_->Kill();
  caller.join();
  slow = false;
  ASSERT_TRUE(gw_->Start());
  const json listed = Body(gw_->Public("GET", "/v1/executions", "", user_));
  ASSERT_EQ(listed["executions"].size(), 1u) << listed;
  const std::string id = listed["executions"][0]["execution_id"];
  ASSERT_EQ(listed["executions"][0]["outcome"], "IN_PROGRESS") << listed;
  auto refused = Replay(id, operator_);
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_EQ(Body(refused)["error"], "execution_in_progress");

  // An hour later (timeout 1 s + the intent's 30 s hold + the skew allowed are long past): the record
  // and its chain as an hour-old call's would be (its events' times move with it, and so do their
  // hashes and the record's anchor), the intent's hold likewise.
  gw_->Terminate();
  {
    SystemClock clock;
    store::SqliteItemStore::Options o;
    o.path = dir_.file("store.db");
    o.sweep_interval_ms = 0;
    auto opened = store::SqliteItemStore::Open(o, clock);
    ASSERT_TRUE(opened.ok()) << opened.status();
    store::ItemStore& items = **opened;
    const store::ItemKey key = ExecutionStore::Key("acme", id);
    auto item = items.Get(key);
    ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
    store::Item aged = **item;
    aged["created_at_ms"] = store::GetInt(aged, "created_at_ms").value() - 3'600'000;
    auto rec = ExecutionStore::FromItem(aged);
    ASSERT_TRUE(rec.ok()) << rec.status();
    auto events = Ledger::DecodeOwnPath(*rec);
    ASSERT_TRUE(events.ok() && !events->empty()) << events.status();
    ASSERT_EQ(static_cast<int64_t>(events->size()), rec->last_seq);
    aged["last_hash"] = events->back().hash;
    ASSERT_TRUE(items.Put(key, aged, store::Condition::Always()).ok());
  }
  EXPECT_EQ(StoreEdit(dir_.file("store.db"))
                .Run("UPDATE items SET attrs = json_set(attrs, '$.held_until_ms', "
                     "json_extract(attrs, '$.held_until_ms') - 3600000) WHERE sk = 'INTENT#k-9'"),
            1);
  ASSERT_TRUE(gw_->Start());
  auto replayed = Replay(id, operator_);
  ASSERT_EQ(replayed.status, 200) << replayed.body;
  EXPECT_EQ(Body(replayed)["outcome"], "SUCCEEDED");
  EXPECT_EQ(crm_.total(), 2);
  std::set<std::string> keys;
  for (const auto& r : crm_.requests()) keys.insert(r.headers.at("idempotency-key"));
  EXPECT_EQ(keys, std::set<std::string>{testing::DownstreamKey("acme", "k-9")})
      << "the replay carries the original's key";
}

TEST_F(ReplayTest, TheCliReplays) {
  crm_.set_behavior([](const auto&) { return Reply{500, "{}"}; });
  const std::string id = Body(gw_->Invoke("crm.x", {{"input", json::object()}}, user_))["execution_id"];
  crm_.set_behavior([](const auto&) { return Reply{}; });
  // The CLI talks to the public listener named in the config: point a copy at this gateway's port.
  const std::string cfg = dir_.file("cli.toml");
  FILE* f = fopen(cfg.c_str(), "w");
  fprintf(f, "[server]\nlisten = \"127.0.0.1:%d\"\n[connectors.crm]\nbase_url = \"%s\"\n", gw_->public_port(),
          crm_.base_url().c_str());
  fclose(f);
  auto [code, out] = testing::RunCli(
      {"replay", id, "--config", cfg, "--reason", "retry", "--requested-by", "cli", "--token", operator_}, dir_);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"replay_of\":\"" + id + "\""), std::string::npos) << out;
  auto [refused, refused_out] = testing::RunCli(
      {"replay", id, "--config", cfg, "--reason", "r", "--requested-by", "cli", "--token", user_}, dir_);
  EXPECT_EQ(refused, 1) << refused_out;
}

}  // namespace
}  // namespace toolgate
