// Replays by operators through the admin listener, on the real binary (DESIGN §6 wave 2, S12,
// §17.9): failures from several tenants, the cross-tenant listing, one replay in its original's
// tenant with the operator as actor and an audit event, bulk jobs (dry run, real run, dedupe, the
// replay limit, cancel), `executions list` and `replay --from-list --rate --resume` of the CLI, and
// what is refused (a tenant in the body, no admin token) and audited.

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "fake_downstream.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;

constexpr char kAdminToken[] = "admin-token-for-the-replay-tests";

class AdminReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TOOLGATE_TEST_ADMIN_TOKEN", kAdminToken, 1);
    gw_ = std::make_unique<GatewayProcess>(Config(), dir_);
    ASSERT_TRUE(gw_->Start());
    downstream_.set_behavior([this](const auto&) {
      return healthy_ ? Reply{200, R"({"ok":true})"} : Reply{500, "{}"};
    });
  }

  // Every instance's config: one SQLite store; `admin_extra` goes into [admin].
  std::string Config(const std::string& admin_extra = "") {
    std::string config = testing::BaseConfig(dir_.file("store.db"));
    config = testing::WithKeys(config, "[admin]", "admin_token_env = \"TOOLGATE_TEST_ADMIN_TOKEN\"\n" + admin_extra);
    config += "[replay]\nmax_replays_per_execution = 2\n";
    for (const char* c : {"crm", "billing"}) {
      config += std::string("[connectors.") + c + "]\nbase_url = \"" + downstream_.base_url() +
                "\"\ntimeout_ms = 1000\n[connectors." + c + ".breaker]\nfailure_threshold = 1000\n";
    }
    return config;
  }

  api::ClientResult Admin(const std::string& method, const std::string& target, const json& body = nullptr,
                          const std::string& token = kAdminToken) {
    return AdminOf(*gw_, method, target, body, token);
  }
  static api::ClientResult AdminOf(GatewayProcess& gw, const std::string& method, const std::string& target,
                                   const json& body = nullptr, const std::string& token = kAdminToken) {
    return gw.Call(gw.admin_port(), method, target, body.is_null() ? "" : body.dump(), token);
  }
  // A failed call of `tenant` to `tool`: its execution id.
  std::string Fail(const std::string& tenant, const std::string& tool) {
    auto r = gw_->Invoke(tool, {{"input", {{"n", ++calls_}}}}, Token(tenant));
    EXPECT_EQ(r.status, 502) << r.body;
    return Body(r)["execution_id"];
  }
  json AuditOf(const std::string& type, const std::string& query = "limit=1000") {
    json out = json::array();
    auto r = Admin("GET", "/admin/audit?" + query);
    EXPECT_EQ(r.status, 200) << r.body;
    const json doc = Body(r);  // bound: a loop over a temporary's member would outlive it
    for (const auto& e : doc["events"]) {
      if (e["type"] == type) out.push_back(e);
    }
    return out;
  }
  // Every page of GET /admin/executions with `query`.
  std::vector<json> ListAll(const std::string& query) { return ListAllOf(*gw_, query); }
  static std::vector<json> ListAllOf(GatewayProcess& gw, const std::string& query) {
    std::vector<json> all;
    std::string cursor;
    for (int page = 0; page < 50; ++page) {
      auto r = AdminOf(gw, "GET", "/admin/executions?" + query + (cursor.empty() ? "" : "&cursor=" + cursor));
      EXPECT_EQ(r.status, 200) << r.body;
      const json b = Body(r);
      for (const auto& e : b["executions"]) all.push_back(e);
      if (!b["next"].is_string()) break;
      cursor = b["next"];
    }
    return all;
  }
  json WaitForJob(const std::string& job_id) {
    json job;
    for (int i = 0; i < 400; ++i) {
      job = Body(Admin("GET", "/admin/replays/" + job_id));
      if (job["state"] != "RUNNING") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return job;
  }
  json Execution(const std::string& id) { return Body(Admin("GET", "/admin/executions/" + id)); }

  TempDir dir_;
  FakeDownstream downstream_;
  std::atomic<bool> healthy_{false};
  std::unique_ptr<GatewayProcess> gw_;
  int calls_ = 0;
};

TEST_F(AdminReplayTest, ListsEveryTenantsFailuresAndReplaysEachInItsOriginalsTenant) {
  std::map<std::string, std::string> tenant_of;  // original → tenant
  for (const char* tenant : {"acme", "globex", "initech"}) {
    tenant_of[Fail(tenant, "crm.update")] = tenant;
    tenant_of[Fail(tenant, "crm.update")] = tenant;
  }
  const std::string billing_failure = Fail("acme", "billing.charge");
  healthy_ = true;
  ASSERT_EQ(gw_->Invoke("crm.update", {{"input", json::object()}}, Token("globex")).status, 200);
  ASSERT_EQ(downstream_.total(), 8);

  // The listing: every tenant, filters, and pages of one through the opaque cursor.
  std::set<std::string> listed;
  for (const auto& e : ListAll("connector=crm&outcome=FAILED,DEFERRED&limit=1")) {
    EXPECT_EQ(e["outcome"], "FAILED");
    EXPECT_EQ(e["connector_id"], "crm");
    EXPECT_EQ(tenant_of.at(e["execution_id"]), e["tenant_id"]);
    listed.insert(e["execution_id"]);
  }
  EXPECT_EQ(listed.size(), 6u);
  EXPECT_EQ(ListAll("outcome=FAILED").size(), 7u);  // billing's too
  EXPECT_EQ(ListAll("outcome=SUCCEEDED&connector=crm").size(), 1u);
  EXPECT_EQ(ListAll("tenant=globex&outcome=FAILED").size(), 2u);
  EXPECT_EQ(ListAll("outcome=FAILED&since=2999-01-01T00:00Z").size(), 0u);
  EXPECT_EQ(ListAll("outcome=FAILED&since=1000&until=" + std::to_string(time(nullptr) * 1000 + 60000)).size(), 7u);
  EXPECT_EQ(Admin("GET", "/admin/executions?outcome=NOPE").status, 400);
  EXPECT_EQ(Admin("GET", "/admin/executions?since=yesterday").status, 400);
  EXPECT_EQ(Admin("GET", "/admin/executions", nullptr, "").status, 401);

  // One replay by an operator: a new execution in the original's tenant, the operator as actor.
  const std::string first = tenant_of.begin()->first;
  auto replay = Admin("POST", "/admin/executions/" + first + "/replay",
                      {{"replay_reason", "crm recovered"}, {"requested_by", "oncall@ops"}});
  ASSERT_EQ(replay.status, 200) << replay.body;
  const std::string replay_id = Body(replay)["execution_id"];
  EXPECT_EQ(Body(replay)["outcome"], "SUCCEEDED");
  EXPECT_EQ(Body(replay)["replay_of"], first);
  EXPECT_EQ(downstream_.total(), 9);
  const std::string tenant = tenant_of.at(first);
  auto seen = gw_->Public("GET", "/v1/executions/" + replay_id, "", Token(tenant));
  ASSERT_EQ(seen.status, 200) << "the replay belongs to the original's tenant";
  EXPECT_EQ(gw_->Public("GET", "/v1/executions/" + replay_id, "", Token(tenant == "acme" ? "globex" : "acme")).status,
            404);
  const json seen_body = Body(seen);
  for (const auto& e : seen_body["events"]) EXPECT_EQ(e["actor"], "admin:oncall@ops") << e.dump();
  const json replayed = AuditOf("EXECUTION_REPLAYED");
  ASSERT_EQ(replayed.size(), 1u);
  EXPECT_EQ(replayed[0]["actor"], "admin:oncall@ops");
  EXPECT_EQ(replayed[0]["data"]["replay_execution_id"], replay_id);
  EXPECT_EQ(replayed[0]["data"]["tenant_id"], tenant);
  EXPECT_EQ(replayed[0]["data"]["reason"], "crm recovered");

  // Refused: a tenant in the body (400, audited); no admin token (401, not audited).
  auto with_tenant = Admin("POST", "/admin/executions/" + first + "/replay",
                           {{"replay_reason", "r"}, {"requested_by", "oncall@ops"}, {"tenant_id", "globex"}});
  EXPECT_EQ(with_tenant.status, 400);
  EXPECT_EQ(Admin("POST", "/admin/executions/" + first + "/replay", {{"requested_by", "oncall@ops"}}).status, 400);
  EXPECT_EQ(Admin("POST", "/admin/executions/" + first + "/replay", {{"replay_reason", "r"}, {"requested_by", "x"}}, "")
                .status,
            401);
  EXPECT_EQ(Admin("POST", "/admin/executions/" + first + "/replay", {{"replay_reason", "r"}, {"requested_by", "x"}},
                  "wrong-token-wrong-token")
                .status,
            401);
  const json refusals = AuditOf("ADMIN_REQUEST_REFUSED");
  ASSERT_EQ(refusals.size(), 2u) << refusals.dump();
  EXPECT_EQ(refusals[1]["data"]["error"], "tenant_from_execution_only");  // newest first: the first refusal last
  EXPECT_EQ(refusals[1]["actor"], "admin:oncall@ops");
  EXPECT_EQ(downstream_.total(), 9);

  // A bulk dry run: what would be replayed, nothing replayed.
  const json filter = {{"connector", "crm"},
                       {"outcome", "FAILED,DEFERRED"},
                       {"replay_reason", "incident 42"},
                       {"requested_by", "oncall@ops"},
                       {"rate_per_s", 50}};
  json dry = filter;
  dry["dry_run"] = true;
  auto planned = Admin("POST", "/admin/replays", dry);
  ASSERT_EQ(planned.status, 200) << planned.body;
  EXPECT_EQ(Body(planned)["matched"], 6);
  EXPECT_EQ(Body(planned)["executions"].size(), 6u);
  EXPECT_EQ(downstream_.total(), 9);
  json bad = filter;
  bad["tenant_id"] = "acme";
  EXPECT_EQ(Admin("POST", "/admin/replays", bad).status, 400);

  // For real: each original once, in its own tenant; the one replayed already is deduplicated.
  auto created = Admin("POST", "/admin/replays", filter);
  ASSERT_EQ(created.status, 202) << created.body;
  EXPECT_EQ(Body(created)["matched"], 6);
  const json job = WaitForJob(Body(created)["job_id"]);
  ASSERT_EQ(job["state"], "DONE") << job.dump();
  EXPECT_EQ(job["counts"]["planned"], 6);
  EXPECT_EQ(job["counts"]["replayed"], 5);
  EXPECT_EQ(job["counts"]["deduped"], 1);
  EXPECT_EQ(job["counts"]["refused"], 0);
  EXPECT_EQ(job["counts"]["failed"], 0);
  EXPECT_EQ(downstream_.total(), 14);  // 5 calls: the deduplicated one made none
  for (const auto& [original, owner] : tenant_of) {
    const json o = Execution(original);
    ASSERT_EQ(o["tenant_id"], owner);
    const size_t expected = original == first ? 2u : 1u;
    ASSERT_EQ(o["replays"].size(), expected) << original;
    for (const auto& r : o["replays"]) {
      const json replay_exec = Execution(r);
      EXPECT_EQ(replay_exec["tenant_id"], owner) << "a replay crossed tenants";
      EXPECT_EQ(replay_exec["replay_of"], original);
    }
  }
  EXPECT_EQ(Execution(billing_failure)["replays"].size(), 0u);
  // Every replay audited, each in its original's tenant, each replay execution audited once.
  const json replayed_audit = AuditOf("EXECUTION_REPLAYED");
  EXPECT_EQ(replayed_audit.size(), 7u);  // the single one and the job's six
  std::set<std::string> audited_replays;
  for (const auto& e : replayed_audit) {
    const std::string original = e["data"]["execution_id"];
    ASSERT_TRUE(tenant_of.count(original)) << e.dump();
    EXPECT_EQ(e["data"]["tenant_id"], tenant_of.at(original)) << "a replay crossed tenants: " << e.dump();
    EXPECT_EQ(Execution(e["data"]["replay_execution_id"].get<std::string>())["tenant_id"], tenant_of.at(original))
        << e.dump();
    audited_replays.insert(e["data"]["replay_execution_id"].get<std::string>());
  }
  EXPECT_EQ(audited_replays.size(), 7u);
  EXPECT_EQ(AuditOf("REPLAY_JOB_CREATED").size(), 1u);
  EXPECT_EQ(Body(Admin("GET", "/admin/replays"))["jobs"].size(), 1u);

  // The limit (2 here): the first original has two replays now.
  auto over = Admin("POST", "/admin/executions/" + first + "/replay",
                    {{"replay_reason", "again"}, {"requested_by", "oncall@ops"}});
  EXPECT_EQ(over.status, 409);
  EXPECT_EQ(Body(over)["error"], "replay_limit_reached");
  // A job over the same originals again: the first is refused by the limit, the others deduplicated.
  auto again = Admin("POST", "/admin/replays", filter);
  ASSERT_EQ(again.status, 202) << again.body;
  const json second = WaitForJob(Body(again)["job_id"]);
  EXPECT_EQ(second["counts"]["refused"], 1);
  EXPECT_EQ(second["counts"]["deduped"], 5);
  EXPECT_EQ(downstream_.total(), 14);
}

TEST_F(AdminReplayTest, CancelStopsAJob) {
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Fail(i % 2 ? "acme" : "globex", "crm.update"));
  healthy_ = true;
  auto created =
      Admin("POST", "/admin/replays",
            {{"execution_ids", ids}, {"replay_reason", "r"}, {"requested_by", "oncall@ops"}, {"rate_per_s", 1}});
  ASSERT_EQ(created.status, 202) << created.body;
  const std::string job_id = Body(created)["job_id"];
  auto cancelled =
      Admin("DELETE", "/admin/replays/" + job_id, {{"reason", "wrong filter"}, {"requested_by", "oncall@ops"}});
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(Body(cancelled)["state"], "CANCELLED");
  // At 1/s, a job left running would have made two more replays within 2.5 s.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const json job = Body(Admin("GET", "/admin/replays/" + job_id));
  EXPECT_EQ(job["state"], "CANCELLED");
  EXPECT_LE(job["counts"]["done"].get<int>(), 1);
  EXPECT_EQ(downstream_.total(), 6 + job["counts"]["done"].get<int>());
  EXPECT_EQ(Admin("DELETE", "/admin/replays/" + job_id, {{"reason", "r"}, {"requested_by", "x"}}).status, 409);
  EXPECT_EQ(AuditOf("REPLAY_JOB_CANCELLED").size(), 1u);
}

// While an original's replay has begun and is not recorded, the job's cursor names it; once
// recorded, it does not.
TEST_F(AdminReplayTest, AJobsCursorNamesTheReplayItHasBegunUntilItIsRecorded) {
  const std::string id = Fail("acme", "crm.update");
  std::atomic<bool> release{false};
  downstream_.set_behavior([&release](const auto&) {
    for (int i = 0; i < 2000 && !release.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return Reply{200, R"({"ok":true})"};
  });
  auto created = Admin("POST", "/admin/replays",
                       {{"execution_ids", {id}}, {"replay_reason", "r"}, {"requested_by", "oncall@ops"}});
  ASSERT_EQ(created.status, 202) << created.body;
  const std::string job_id = Body(created)["job_id"];
  json job;
  for (int i = 0; i < 400; ++i) {  // bounded: 20 s
    job = Body(Admin("GET", "/admin/replays/" + job_id));
    if (downstream_.concurrent() == 1 && job["cursor"].contains("in_flight_index")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  release = true;
  ASSERT_TRUE(job["cursor"].contains("in_flight_index")) << job.dump();
  EXPECT_EQ(job["cursor"]["in_flight_index"], 0) << job.dump();
  EXPECT_EQ(job["counts"]["done"], 0) << job.dump();
  for (int i = 0; i < 400 && job["state"] == "RUNNING"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    job = Body(Admin("GET", "/admin/replays/" + job_id));
  }
  EXPECT_EQ(job["state"], "DONE") << job.dump();
  EXPECT_EQ(job["counts"]["replayed"], 1) << job.dump();
  EXPECT_FALSE(job["cursor"].contains("in_flight_index")) << job.dump();
}

TEST_F(AdminReplayTest, CliListsAndReplaysFromAListAtARateAndResumesWithoutReplayingTwice) {
  std::set<std::string> failed;
  for (const char* tenant : {"acme", "globex", "initech", "acme", "globex"}) failed.insert(Fail(tenant, "crm.update"));
  healthy_ = true;
  const std::string config = gw_->CliConfigPath();
  auto [code, listed] =
      testing::RunCli({"executions", "list", "--config", config, "--connector", "crm", "--outcome", "FAILED,DEFERRED",
                       "--since", "2020-01-01T00:00Z", "--limit", "1000", "--json"},
                      dir_);
  ASSERT_EQ(code, 0) << listed;
  const json doc = json::parse(listed, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << listed;
  ASSERT_EQ(doc["executions"].size(), 5u);
  const std::string list = dir_.file("failed.json");
  std::ofstream(list) << listed;
  auto [table_code, table] = testing::RunCli({"executions", "list", "--config", config, "--outcome", "FAILED"}, dir_);
  EXPECT_EQ(table_code, 0);
  EXPECT_NE(table.find("EXECUTION"), std::string::npos);
  EXPECT_NE(table.find("initech"), std::string::npos);

  auto [dry_code, dry] = testing::RunCli(
      {"replay", "--config", config, "--from-list", list, "--reason", "r", "--requested-by", "cli", "--dry-run"}, dir_);
  EXPECT_EQ(dry_code, 0) << dry;
  EXPECT_EQ(downstream_.total(), 5);

  // Interrupted after its second replay (2/s: the third is half a second away).
  {
    testing::ChildProcess cli({TOOLGATE_BINARY, "replay", "--config", config, "--from-list", list, "--reason",
                               "incident 7", "--requested-by", "cli", "--rate", "2/s"},
                              dir_.file("cli.err"));
    ASSERT_TRUE(cli.ReadLine(std::chrono::seconds(20)));
    ASSERT_TRUE(cli.ReadLine(std::chrono::seconds(20)));
    cli.Kill(SIGKILL);
    cli.Wait();
  }
  const int after_interruption = downstream_.total();
  ASSERT_GE(after_interruption, 7);
  ASSERT_LE(after_interruption, 8);
  // And as if it had died mid-request: the first id begun, its "done" line lost.
  {
    std::ifstream in(list + ".progress");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto done = text.find("\ndone ");
    ASSERT_NE(done, std::string::npos) << text;
    text.erase(done + 1, text.find('\n', done + 1) - done);
    std::ofstream(list + ".progress", std::ios::trunc) << text;
  }
  auto [refuse_code, refused] = testing::RunCli(
      {"replay", "--config", config, "--from-list", list, "--reason", "r", "--requested-by", "cli"}, dir_);
  EXPECT_EQ(refuse_code, 1) << "an existing progress file needs --resume";
  auto [resume_code, resumed] = testing::RunCli({"replay", "--config", config, "--from-list", list, "--reason",
                                                 "incident 7", "--requested-by", "cli", "--rate", "50", "--resume"},
                                                dir_);
  EXPECT_EQ(resume_code, 0) << resumed;
  EXPECT_NE(resumed.find("replayed before the interruption"), std::string::npos) << resumed;
  EXPECT_EQ(downstream_.total(), 10) << resumed;  // each of the five exactly once
  for (const auto& id : failed) EXPECT_EQ(Execution(id)["replays"].size(), 1u) << id;

  // One execution by id; the table line names the new execution.
  healthy_ = false;
  const std::string one = Fail("initech", "billing.charge");
  healthy_ = true;
  auto [one_code, one_out] =
      testing::RunCli({"replay", one, "--config", config, "--reason", "r", "--requested-by", "cli"}, dir_);
  EXPECT_EQ(one_code, 0) << one_out;
  EXPECT_NE(one_out.find("SUCCEEDED"), std::string::npos) << one_out;
}

// S12 through the admin route: a replay of a SUCCEEDED original is deduplicated; `force` (the
// operator acts as the tenant's admin) re-executes it, and the execution and the audit say so.
TEST_F(AdminReplayTest, ForceOnTheAdminReplayReExecutesAndIsRecorded) {
  healthy_ = true;
  auto original = gw_->Invoke("crm.update", {{"input", {{"n", 1}}}}, Token("acme"));
  ASSERT_EQ(original.status, 200) << original.body;
  const std::string id = Body(original)["execution_id"];
  const json ask = {{"replay_reason", "crm lost the update"}, {"requested_by", "oncall@ops"}};
  auto deduped = Admin("POST", "/admin/executions/" + id + "/replay", ask);
  ASSERT_EQ(deduped.status, 200) << deduped.body;
  EXPECT_EQ(Body(deduped)["deduplicated"], true) << deduped.body;
  EXPECT_EQ(downstream_.total(), 1);

  json forced_ask = ask;
  forced_ask["force"] = true;
  auto forced = Admin("POST", "/admin/executions/" + id + "/replay", forced_ask);
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(Body(forced)["deduplicated"], nullptr) << forced.body;
  EXPECT_EQ(Body(forced)["outcome"], "SUCCEEDED");
  EXPECT_EQ(Body(forced)["replay_of"], id);
  EXPECT_EQ(downstream_.total(), 2) << "the forced replay called the tool again";
  const std::string forced_id = Body(forced)["execution_id"];
  const json execution = Execution(forced_id);
  ASSERT_EQ(execution["tenant_id"], "acme") << execution.dump();
  std::vector<std::string> types;
  for (const auto& e : execution["events"]) types.push_back(e["type"]);
  EXPECT_THAT(types, ::testing::Contains("REPLAY_FORCED")) << execution.dump();
  const json replayed = AuditOf("EXECUTION_REPLAYED");
  ASSERT_EQ(replayed.size(), 2u) << replayed.dump();
  int forced_audits = 0;
  for (const auto& e : replayed) {
    if (e["data"]["force"] != true) continue;
    ++forced_audits;
    EXPECT_EQ(e["data"]["replay_execution_id"], forced_id);
    EXPECT_EQ(e["actor"], "admin:oncall@ops");
    EXPECT_EQ(e["data"]["reason"], "crm lost the update");
  }
  EXPECT_EQ(forced_audits, 1) << replayed.dump();
  const std::string metrics = Admin("GET", "/metrics").body;
  EXPECT_NE(metrics.find("toolgate_replays_total{result=\"forced\"} 1"), std::string::npos) << metrics;
}

// §17.9: a replay answered with its execution's own outcome (BLOCKED 403 by a kill switch) is not a
// refused admin request: EXECUTION_REPLAYED records it, ADMIN_REQUEST_REFUSED does not. Refusals of
// the replay request itself (a bad body, an unknown execution, the limit reached) still are, each
// with its error code.
TEST_F(AdminReplayTest, AReplayAnsweredWithItsOutcomeIsNotAuditedAsARefusal) {
  const std::string blocked_id = Fail("acme", "crm.update");
  const std::string limited_id = Fail("acme", "crm.update");
  const json ask = {{"replay_reason", "blocked test"}, {"requested_by", "alice"}};
  for (int i = 0; i < 2; ++i) {  // max_replays_per_execution = 2; a FAILED replay is 502
    ASSERT_EQ(Admin("POST", "/admin/executions/" + limited_id + "/replay", ask).status, 502);
  }
  ASSERT_EQ(Admin("PUT", "/admin/kill-switches",
                  {{"scope", "tenant"}, {"key", "acme"}, {"reason", "incident"}, {"requested_by", "alice"}})
                .status,
            200);
  json forced = ask;
  forced["force"] = true;
  auto blocked = Admin("POST", "/admin/executions/" + blocked_id + "/replay", forced);
  ASSERT_EQ(blocked.status, 403) << blocked.body;
  EXPECT_EQ(Body(blocked)["outcome"], "BLOCKED");
  EXPECT_EQ(downstream_.total(), 4) << "the original calls and the two replays of one";
  const json replayed = AuditOf("EXECUTION_REPLAYED");
  ASSERT_EQ(replayed.size(), 3u) << replayed.dump();
  EXPECT_EQ(replayed[0]["data"]["outcome"], "BLOCKED");  // newest first
  EXPECT_EQ(replayed[0]["data"]["execution_id"], blocked_id);

  auto bad_body = Admin("POST", "/admin/executions/" + blocked_id + "/replay", {{"requested_by", "alice"}});
  EXPECT_EQ(bad_body.status, 400);
  auto unknown = Admin("POST", "/admin/executions/01900000-0000-7000-8000-000000000000/replay", ask);
  EXPECT_EQ(unknown.status, 404);
  auto limited = Admin("POST", "/admin/executions/" + limited_id + "/replay", ask);
  EXPECT_EQ(limited.status, 409);
  std::vector<std::pair<int, std::string>> refused;  // (status, error), oldest first
  const json refusals = AuditOf("ADMIN_REQUEST_REFUSED");
  for (auto e = refusals.rbegin(); e != refusals.rend(); ++e) {
    refused.emplace_back((*e)["data"]["status"].get<int>(), (*e)["data"]["error"].get<std::string>());
  }
  EXPECT_THAT(refused,
              ::testing::ElementsAre(::testing::Pair(400, "invalid_request"), ::testing::Pair(404, "not_found"),
                                     ::testing::Pair(409, "replay_limit_reached")))
      << refusals.dump();
}

// `replay --from-list -`: the ids come from stdin (one per line, a comment ignored); a progress file
// is named with --progress, and a second run with --resume replays nothing again.
TEST_F(AdminReplayTest, CliReplayReadsTheListFromStdin) {
  std::set<std::string> failed;
  for (const char* tenant : {"acme", "globex"}) failed.insert(Fail(tenant, "crm.update"));
  healthy_ = true;
  const std::string config = gw_->CliConfigPath();
  const std::string progress = dir_.file("stdin.progress");
  // `replay --from-list -` with the ids written to its stdin, which is then closed (RunCli's stdin
  // never ends, so it is not used here): the exit code, stdout and stderr.
  auto run = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {TOOLGATE_BINARY, "replay",     "--config",       config, "--from-list", "-",
                                     "--reason",      "incident 9", "--requested-by", "cli"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const std::string err = dir_.file("stdin-cli.err");
    unlink(err.c_str());
    testing::ChildProcess cli(argv, err);
    EXPECT_TRUE(cli.WriteLine("# from the incident channel"));
    for (const auto& id : failed) EXPECT_TRUE(cli.WriteLine(id));
    cli.CloseStdin();
    std::string out;
    while (auto line = cli.ReadLine(std::chrono::seconds(30))) out += *line + "\n";
    const int status = cli.Wait();
    std::ifstream in(err);
    out.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
  };
  // Without --progress there is nowhere to keep the progress of a list read from stdin.
  auto [bare_code, bare] = run({});
  EXPECT_EQ(bare_code, 1) << bare;
  EXPECT_NE(bare.find("--progress"), std::string::npos) << bare;
  EXPECT_EQ(downstream_.total(), 2) << bare;

  auto [code, out] = run({"--rate", "50", "--progress", progress});
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(downstream_.total(), 4) << out;  // two failures, two replays
  for (const auto& id : failed) {
    EXPECT_NE(out.find(id), std::string::npos) << out;
    EXPECT_EQ(Execution(id)["replays"].size(), 1u) << id;
  }
  auto [again_code, again] = run({"--rate", "50", "--progress", progress, "--resume"});
  EXPECT_EQ(again_code, 0) << again;
  EXPECT_EQ(downstream_.total(), 4) << again;
  EXPECT_NE(again.find("2 execution(s) already done"), std::string::npos) << again;
}

// §17.9 on GET /admin/audit: `since` (inclusive) and `until` (exclusive) take epoch milliseconds or
// RFC 3339, as the execution listings do; a bad one is 400 invalid_request, never an empty list.
TEST_F(AdminReplayTest, TheAuditTakesSinceAndUntilAsEpochMillisecondsOrRfc3339) {
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  // Past `after` on the wall clock (the gateway's clock is the same host's): bounded, no fixed sleep.
  auto wait_past = [&](int64_t after) {
    for (int i = 0; i < 1000 && now_ms() <= after; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return now_ms();
  };
  auto rfc3339 = [](int64_t ms, bool minutes_only) {
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[80];  // room for any int the compiler can imagine in tm
    if (minutes_only) {
      std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                    tm.tm_hour, tm.tm_min);
    } else {
      std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
    }
    return std::string(buf);
  };
  auto set_switch = [&](const std::string& key) {
    auto r = Admin("PUT", "/admin/kill-switches",
                   {{"scope", "tenant"}, {"key", key}, {"reason", "audit window"}, {"requested_by", "oncall@ops"}});
    EXPECT_EQ(r.status, 200) << r.body;
    return now_ms();
  };
  // The keys of the KILL_SWITCH_SET events the audit answers to `query`.
  auto keys = [&](const std::string& query) {
    std::set<std::string> out;
    for (const auto& e : AuditOf("KILL_SWITCH_SET", query)) out.insert(e["data"]["key"].get<std::string>());
    return out;
  };
  const int64_t first_done = set_switch("before");
  const int64_t middle = wait_past(first_done);  // after the first event was written
  wait_past(middle);                             // and the second written after it
  set_switch("after");
  const std::set<std::string> both = {"before", "after"};
  ASSERT_EQ(keys("limit=1000"), both);

  const std::string mid = std::to_string(middle);
  EXPECT_EQ(keys("since=" + mid), std::set<std::string>{"after"});
  EXPECT_EQ(keys("until=" + mid), std::set<std::string>{"before"});
  EXPECT_EQ(keys("since=" + rfc3339(middle, false)), std::set<std::string>{"after"});
  EXPECT_EQ(keys("until=" + rfc3339(middle, false)), std::set<std::string>{"before"});
  EXPECT_EQ(keys("since=1000&until=" + mid), std::set<std::string>{"before"});
  // The minute forms (2026-11-30T10:00Z): the minute before the first event, the minute after the last.
  const std::string minute_before = rfc3339(first_done - 60'000, true);
  const std::string minute_after = rfc3339(now_ms() + 60'000, true);
  EXPECT_EQ(keys("since=" + minute_before + "&until=" + minute_after), both);
  EXPECT_EQ(keys("until=" + minute_before), std::set<std::string>{});
  EXPECT_EQ(keys("since=" + minute_after), std::set<std::string>{});
  EXPECT_EQ(keys("since=" + minute_before + "&limit=1"), std::set<std::string>{"after"});  // newest first

  for (const std::string& bad :
       std::vector<std::string>{"since=yesterday", "until=2026-13-45T99:00Z", "since=-5",
                                "until=", "since=12345678901234567890", "since=" + mid + "&until=" + mid}) {
    auto r = Admin("GET", "/admin/audit?" + bad);
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
    EXPECT_EQ(Body(r)["error"], "invalid_request") << bad;
    const std::string message = Body(r).value("message", "");
    EXPECT_TRUE(message.find("RFC 3339") != std::string::npos || message.find("before until") != std::string::npos)
        << bad << ": " << r.body;
  }
}

// A bulk replay job outlives the instance running it: instance A is killed (SIGKILL, no claims given
// back) after some of the job's replays; instance B, on the same store, takes the job over once A's
// claim lapses and finishes it. Every original replayed exactly once (at the downstream and in the
// store), the job DONE, each replay audited.
TEST_F(AdminReplayTest, AnotherInstanceFinishesABulkJobWhoseInstanceWasKilled) {
  // The replays below come from A and B only (lease 2 s: A's claim lapses 2 s after its last step).
  gw_->Terminate();
  gw_.reset();
  const std::string config = Config("replay_job_lease_s = 2\n");
  GatewayProcess a(config, dir_, "instance-a");
  ASSERT_TRUE(a.Start());
  auto fail = [&](const std::string& tenant) {
    auto r = a.Invoke("crm.update", {{"input", {{"n", ++calls_}}}}, Token(tenant));
    EXPECT_EQ(r.status, 502) << r.body;
    return Body(r)["execution_id"].get<std::string>();
  };
  std::map<std::string, std::string> tenant_of;  // original → tenant
  std::map<std::string, int> n_of;               // original → its input's n (how the downstream tells them apart)
  for (const char* tenant : {"acme", "globex", "acme", "globex", "initech", "acme", "globex", "initech", "acme",
                             "globex", "acme", "globex", "initech", "acme", "globex", "initech"}) {
    const std::string id = fail(tenant);
    tenant_of[id] = tenant;
    n_of[id] = calls_;
  }
  const int originals = static_cast<int>(tenant_of.size());
  ASSERT_EQ(downstream_.total(), originals);
  healthy_ = true;

  // At 1/s: the job takes about 16 s, so it is surely mid-way when A dies, even after B's start.
  auto created = AdminOf(a, "POST", "/admin/replays",
                         {{"connector", "crm"},
                          {"outcome", "FAILED"},
                          {"replay_reason", "crm recovered"},
                          {"requested_by", "oncall@ops"},
                          {"rate_per_s", 1}});
  ASSERT_EQ(created.status, 202) << created.body;
  ASSERT_EQ(Body(created)["matched"], originals);
  const std::string job_id = Body(created)["job_id"];
  auto job_of = [&](GatewayProcess& gw) { return Body(AdminOf(gw, "GET", "/admin/replays/" + job_id)); };
  // Bounded: until `done(job)` or 60 s.
  auto wait_for = [&](GatewayProcess& gw, const std::function<bool(const json&)>& done) {
    json job;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < give_up) {
      job = job_of(gw);
      if (done(job)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return job;
  };
  // A has begun (its first replay recorded); B joins only now, so that A surely holds the job.
  json job = wait_for(a, [](const json& j) { return j["counts"]["done"].get<int>() >= 1; });
  ASSERT_GE(job["counts"]["done"].get<int>(), 1) << job.dump();
  ASSERT_TRUE(job.contains("running_on")) << job.dump();
  const std::string a_owner = job["running_on"];
  GatewayProcess b(config, dir_, "instance-b");
  ASSERT_TRUE(b.Start());
  // Killed between two replays: B's start may take seconds under an instrumented build, so "recorded"
  // is a step seen after it, not a count. A slowed down may begin its next replay at once, so A is
  // stopped (SIGSTOP) and killed only where the store shows no replay begun and every one sent is
  // recorded; otherwise it goes on (SIGCONT) and the test looks again (bounded).
  const int seen = job_of(b)["counts"]["done"].get<int>();
  ASSERT_LT(seen + 1, originals) << "A was nearly done before B started";
  job = wait_for(b, [seen](const json& j) { return j["counts"]["done"].get<int>() > seen; });
  bool between_replays = false;
  for (int i = 0; i < 200 && !between_replays; ++i) {
    ASSERT_EQ(kill(a.pid(), SIGSTOP), 0);
    const json now = job_of(b);
    between_replays = !now["cursor"].contains("in_flight_index") &&
                      downstream_.total() - originals == now["counts"]["done"].get<int>();
    if (!between_replays) {
      ASSERT_EQ(kill(a.pid(), SIGCONT), 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ASSERT_TRUE(between_replays) << "A was never seen between two replays";
  a.Kill();
  const int done_by_a = downstream_.total() - originals;
  ASSERT_GE(done_by_a, 2) << job.dump();
  ASSERT_LT(done_by_a, originals) << "A finished the job before it was killed: " << job.dump();
  const json at_kill = job_of(b);
  EXPECT_EQ(at_kill["state"], "RUNNING") << at_kill.dump();
  EXPECT_EQ(at_kill["counts"]["done"], done_by_a) << at_kill.dump();
  EXPECT_EQ(at_kill["running_on"], a_owner) << "nobody took the job over while A held it: " << at_kill.dump();

  // B takes it over once A's claim lapses, and finishes it.
  const json finished = wait_for(b, [](const json& j) { return j["state"] != "RUNNING"; });
  ASSERT_EQ(finished["state"], "DONE") << finished.dump() << "\n" << b.Log();
  EXPECT_EQ(finished["counts"]["planned"], originals);
  EXPECT_EQ(finished["counts"]["done"], originals);
  EXPECT_EQ(finished["counts"]["replayed"], originals) << finished.dump();
  EXPECT_EQ(finished["counts"]["interrupted"], 0) << finished.dump();
  EXPECT_EQ(finished["counts"]["deduped"], 0) << finished.dump();
  EXPECT_EQ(finished["counts"]["failed"], 0) << finished.dump();
  if (finished.contains("running_on")) {
    EXPECT_NE(finished["running_on"], a_owner) << finished.dump();
  }
  EXPECT_NE(b.Log().find("replay job " + job_id + ": running from " + std::to_string(done_by_a)), std::string::npos)
      << "B goes on from A's cursor: " << b.Log();

  // Exactly once at the downstream: each original's input twice (the failure and its one replay).
  std::map<int, int> sent;  // n → requests
  for (const auto& r : downstream_.requests()) {
    const json body = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(body.is_object() && body.contains("n")) << r.body;
    ++sent[body["n"].get<int>()];
  }
  ASSERT_EQ(static_cast<int>(sent.size()), originals);
  for (const auto& [n, count] : sent) EXPECT_EQ(count, 2) << "input n=" << n;
  // And in the store: one replay each, in its original's tenant.
  std::set<std::string> replays;
  for (const auto& [original, owner] : tenant_of) {
    const json o = Body(AdminOf(b, "GET", "/admin/executions/" + original));
    ASSERT_EQ(o["replays"].size(), 1u) << original << " " << o.dump();
    const std::string replay = o["replays"][0];
    replays.insert(replay);
    const json r = Body(AdminOf(b, "GET", "/admin/executions/" + replay));
    EXPECT_EQ(r["tenant_id"], owner) << "a replay crossed tenants: " << r.dump();
    EXPECT_EQ(r["replay_of"], original);
    EXPECT_EQ(r["outcome"], "SUCCEEDED") << r.dump();
  }
  EXPECT_EQ(static_cast<int>(replays.size()), originals);
  EXPECT_EQ(ListAllOf(b, "outcome=SUCCEEDED&connector=crm").size(), static_cast<size_t>(originals));

  // Each replay audited once, with the job's id; the job's end once.
  const json audit = Body(AdminOf(b, "GET", "/admin/audit?limit=1000"));
  std::multiset<std::string> audited;
  int finished_events = 0;
  for (const auto& e : audit["events"]) {
    if (e["type"] == "REPLAY_JOB_FINISHED") ++finished_events;
    if (e["type"] != "EXECUTION_REPLAYED") continue;
    EXPECT_EQ(e["data"]["job_id"], job_id) << e.dump();
    EXPECT_EQ(e["data"]["tenant_id"], tenant_of.at(e["data"]["execution_id"].get<std::string>())) << e.dump();
    audited.insert(e["data"]["replay_execution_id"].get<std::string>());
  }
  EXPECT_EQ(audited, std::multiset<std::string>(replays.begin(), replays.end()));
  EXPECT_EQ(finished_events, 1);
}

}  // namespace
}  // namespace toolgate
