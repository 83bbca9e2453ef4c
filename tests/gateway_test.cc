// The real `toolgate serve` binary over HTTP on loopback, against fake downstreams that record every
// call: outcomes and statuses (design §5), auth and tenancy (§7, S11), bad input, kill switches (S8),
// the ledger (S9, §8), the admin API (§6) and restarts.

#include <signal.h>
#include <sqlite3.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "toolgate/services/ledger.h"

#include "downstream_key.h"
#include "fake_downstream.h"
#include "gateway_harness.h"
#include "wait_until.h"
#include "gmock/gmock.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using testing::HeaderOf;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;

class GatewayTest : public ::testing::Test {
 protected:
  std::string Config(const std::string& crm_extra = "", const std::string& extra = "") {
    return testing::BaseConfig(dir_.file("store.db")) + "[connectors.crm]\nbase_url = \"" + crm_.base_url() +
           "\"\ntimeout_ms = 1000\nmax_in_flight = 8\n" + crm_extra +
           "[connectors.crm.breaker]\nfailure_threshold = 3\ncooldown_s = 300\n" + "[connectors.other]\nbase_url = \"" +
           other_.base_url() + "\"\ntimeout_ms = 1000\n" + extra;
  }
  GatewayProcess& Start(const std::string& config) {
    gateways_.push_back(std::make_unique<GatewayProcess>(config, dir_, "gw" + std::to_string(gateways_.size())));
    EXPECT_TRUE(gateways_.back()->Start());
    return *gateways_.back();
  }

  TempDir dir_;
  FakeDownstream crm_, other_;
  std::vector<std::unique_ptr<GatewayProcess>> gateways_;
  const std::string alice_ = Token("tenant-a");
  const std::string bob_ = Token("tenant-b");
};

TEST_F(GatewayTest, ASuccessfulCallReachesTheDownstreamWithItsHeadersAndIsLedgered) {
  crm_.set_behavior([](const auto& req) { return Reply{200, R"({"updated":true,"echo":)" + req.body + "}"}; });
  GatewayProcess& gw = Start(Config());
  auto r = gw.Invoke("crm.update_opportunity", {{"input", {{"id", 7}}}}, alice_);
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = Body(r);
  EXPECT_EQ(body["outcome"], "SUCCEEDED");
  EXPECT_EQ(body["connector_id"], "crm");
  EXPECT_EQ(body["result"]["updated"], true);
  EXPECT_EQ(body["result"]["echo"]["id"], 7);
  const std::string id = body["execution_id"];

  ASSERT_EQ(crm_.total(), 1);
  const auto seen = crm_.requests()[0];
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.path, "/crm.update_opportunity");
  EXPECT_EQ(seen.headers.at("x-toolgate-execution-id"), id);
  EXPECT_EQ(seen.headers.at("x-toolgate-tenant-id"), "tenant-a");
  EXPECT_EQ(seen.headers.at("idempotency-key"), testing::DownstreamKey("tenant-a", id));  // no client key: its own id

  auto got = gw.Public("GET", "/v1/executions/" + id, "", alice_);
  ASSERT_EQ(got.status, 200) << got.body;
  const json exec = Body(got);
  EXPECT_EQ(exec["outcome"], "SUCCEEDED");
  EXPECT_EQ(exec["tool_name"], "crm.update_opportunity");
  std::vector<std::string> types;
  for (const auto& e : exec["events"]) types.push_back(e["type"]);
  EXPECT_THAT(types, ::testing::ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED"));
  EXPECT_EQ(exec["events"][2]["seq"], 3);
  EXPECT_EQ(exec["events"][0]["actor"], "user-1");
  EXPECT_EQ(exec["events"][2]["hash"].get<std::string>().size(), 64u);
}

TEST_F(GatewayTest, ServerErrorsFailThenOpenTheBreakerWhileClientErrorsNeverDo) {
  crm_.set_behavior([](const auto& req) {
    if (req.path == "/crm.reject") return Reply{400, R"({"error":"bad field"})"};
    return Reply{503, R"({"error":"down"})"};
  });
  GatewayProcess& gw = Start(Config());
  for (int i = 0; i < 10; ++i) {
    auto r = gw.Invoke("crm.reject", {{"input", json::object()}}, alice_);
    ASSERT_EQ(r.status, 502) << r.body;
    EXPECT_EQ(Body(r)["reason"], "downstream_rejected");
    EXPECT_EQ(Body(r)["downstream_status"], 400);
  }
  for (int i = 0; i < 3; ++i) {
    auto r = gw.Invoke("crm.update", {{"input", json::object()}}, alice_);
    ASSERT_EQ(r.status, 502) << r.body;
    EXPECT_EQ(Body(r)["reason"], "downstream_error");
    EXPECT_EQ(Body(r)["downstream_status"], 503);
  }
  const int calls_before = crm_.total();
  auto deferred = gw.Invoke("crm.update", {{"input", json::object()}}, alice_);
  ASSERT_EQ(deferred.status, 503) << deferred.body;
  EXPECT_EQ(Body(deferred)["outcome"], "DEFERRED");
  EXPECT_EQ(Body(deferred)["reason"], "breaker_open");
  EXPECT_GE(std::stoi(HeaderOf(deferred, "retry-after")), 1);
  EXPECT_EQ(crm_.total(), calls_before) << "an open breaker let a call through";
  // Another connector is not affected.
  EXPECT_EQ(gw.Invoke("other.ping", {{"input", json::object()}}, alice_).status, 200);
  auto audit = Body(gw.Admin("GET", "/admin/audit"));
  ASSERT_FALSE(audit["events"].empty());
  EXPECT_EQ(audit["events"][0]["type"], "CIRCUIT_OPENED");
}

TEST_F(GatewayTest, ThrottlingTimeoutsAndDeadDownstreamsAnswerAsTheTableSays) {
  other_.set_behavior([](const auto&) { return Reply{429, "{}", {{"Retry-After", "7"}}}; });
  crm_.set_behavior([](const auto& req) {
    if (req.path == "/crm.slow") return Reply{200, "{}", {}, 3000};
    if (req.path == "/crm.garbage") return Reply{200, "<html>not json"};
    if (req.path == "/crm.drop") {
      Reply r;
      r.close_without_reply = true;
      return r;
    }
    return Reply{};
  });
  GatewayProcess& gw = Start(Config() + "[connectors.dead]\nbase_url = \"http://127.0.0.1:1\"\ntimeout_ms = 500\n");
  const int64_t sent_at_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto throttled = gw.Invoke("other.throttled", {{"input", json::object()}}, alice_);
  ASSERT_EQ(throttled.status, 503) << throttled.body;
  EXPECT_EQ(Body(throttled)["reason"], "downstream_throttled");
  EXPECT_EQ(HeaderOf(throttled, "retry-after"), "7");
  // The Retry-After holds for the whole connector: the next calls are deferred without reaching it,
  // and 429 is not a breaker failure (more than failure_threshold of them leave it closed).
  for (int i = 0; i < 5; ++i) {
    auto again = gw.Invoke("other.anything", {{"input", json::object()}}, alice_);
    ASSERT_EQ(again.status, 503) << again.body;
    EXPECT_EQ(Body(again)["reason"], "downstream_throttled");
    // The Retry-After from receipt, rounded up to the whole second the breaker item stores.
    EXPECT_LE(Body(again)["retry_after_ms"].get<int64_t>(), 8000);
  }
  EXPECT_EQ(other_.total(), 1) << "a call reached a downstream inside its Retry-After";
  const json connectors = Body(gw.Admin("GET", "/admin/connectors"));
  const int64_t read_at_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  bool seen = false;
  for (const auto& c : connectors["connectors"]) {
    if (c["id"] != "other") continue;
    seen = true;
    EXPECT_EQ(c["breaker"]["state"], "CLOSED");
    // Retry-After 7 from the answer, rounded up to a whole second: however long the calls above took.
    const int64_t until = c["throttled_until_epoch_sec"].get<int64_t>();
    EXPECT_GE(until, sent_at_s + 7);
    EXPECT_LE(until, read_at_s + 8);
    EXPECT_GT(c["throttled_remaining_s"].get<int64_t>(), 0);
  }
  EXPECT_TRUE(seen);
  // Another connector is not throttled.
  EXPECT_EQ(Body(gw.Invoke("crm.ok", {{"input", json::object()}}, alice_))["outcome"], "SUCCEEDED");

  auto slow = gw.Invoke("crm.slow", {{"input", json::object()}}, alice_);
  ASSERT_EQ(slow.status, 504) << slow.body;
  EXPECT_EQ(Body(slow)["reason"], "timeout");

  auto garbage = gw.Invoke("crm.garbage", {{"input", json::object()}}, alice_);
  ASSERT_EQ(garbage.status, 502) << garbage.body;
  EXPECT_EQ(Body(garbage)["reason"], "downstream_error");

  auto dropped = gw.Invoke("crm.drop", {{"input", json::object()}}, alice_);
  ASSERT_EQ(dropped.status, 502) << dropped.body;
  EXPECT_EQ(Body(dropped)["reason"], "connection_lost");

  auto dead = gw.Invoke("dead.anything", {{"input", json::object()}}, alice_);
  ASSERT_EQ(dead.status, 502) << dead.body;
  EXPECT_EQ(Body(dead)["reason"], "connection_failed");

  // Timeout, unreadable body and lost connection are failures: three of them opened the breaker.
  EXPECT_EQ(Body(gw.Invoke("crm.ok", {{"input", json::object()}}, alice_))["reason"], "breaker_open");
}

TEST_F(GatewayTest, HugeAndCutOffResponsesAreFailuresAndNothingHugeIsStored) {
  const std::string huge = "{\"blob\":\"" + std::string(2 << 20, 'x') + "\"}";
  crm_.set_behavior([&](const auto& req) {
    if (req.path == "/crm.huge") return Reply{200, huge};
    if (req.path == "/crm.cut") {
      Reply r{200, R"({"ok":true,"padding":"0123456789012345678901234567890123456789"})"};
      r.reset_after_body_bytes = 10;  // the connection is reset mid-body
      return r;
    }
    return Reply{};
  });
  GatewayProcess& gw = Start(Config("max_response_bytes = 65536\n"));
  auto big = gw.Invoke("crm.huge", {{"input", json::object()}}, alice_);
  ASSERT_EQ(big.status, 502) << big.body.substr(0, 300);
  EXPECT_EQ(Body(big)["reason"], "downstream_error");
  EXPECT_LT(big.body.size(), 4096u) << "the downstream's huge body is not passed on";
  auto record = gw.Public("GET", "/v1/executions/" + Body(big)["execution_id"].get<std::string>(), "", alice_);
  ASSERT_EQ(record.status, 200);
  EXPECT_LT(record.body.size(), 65536u) << "nothing beyond max_response_bytes is stored";

  auto cut = gw.Invoke("crm.cut", {{"input", json::object()}}, alice_);
  ASSERT_EQ(cut.status, 502) << cut.body;
  const std::string reason = Body(cut)["reason"];
  EXPECT_TRUE(reason == "connection_lost" || reason == "downstream_error") << reason;

  // Two failures, below the threshold of 3: the connector still serves, and no slot was kept.
  auto ok = gw.Invoke("crm.ok", {{"input", json::object()}}, alice_);
  EXPECT_EQ(ok.status, 200) << ok.body;
  const json connectors = Body(gw.Admin("GET", "/admin/connectors"));
  for (const auto& c : connectors["connectors"]) {
    if (c["id"] == "crm") {
      EXPECT_EQ(c["in_flight"], 0);
    }
  }
}

TEST_F(GatewayTest, AuthFailuresAre401AndTenantComesOnlyFromTheToken) {
  GatewayProcess& gw = Start(Config());
  const json call = {{"input", json::object()}};
  EXPECT_EQ(gw.Invoke("crm.x", call, "").status, 401);
  EXPECT_EQ(gw.Invoke("crm.x", call, Token("tenant-a", {}, -3600)).status, 401);  // expired
  EXPECT_EQ(
      gw.Invoke("crm.x", call, auth::SignHs256(R"({"custom:tenant_id":"t","exp":4102444800})", "wrong-secret")).status,
      401);
  EXPECT_EQ(gw.Invoke("crm.x", call, auth::SignHs256(R"({"sub":"x","exp":4102444800})", testing::kJwtSecret)).status,
            401);  // no tenant
  const std::string none = auth::Base64UrlEncode(R"({"alg":"none"})") + "." +
                           auth::Base64UrlEncode(R"({"custom:tenant_id":"t","exp":4102444800})") + ".";
  EXPECT_EQ(gw.Invoke("crm.x", call, none).status, 401);
  auto r = gw.Invoke("crm.x", call, "not.a.token");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Body(r)["error"], "unauthenticated");
  EXPECT_EQ(crm_.total(), 0);

  auto in_body = gw.Invoke("crm.x", {{"input", json::object()}, {"tenant_id", "tenant-b"}}, alice_);
  EXPECT_EQ(in_body.status, 400);
  EXPECT_EQ(Body(in_body)["error"], "tenant_from_token_only");
  auto in_query = gw.Public("POST", "/v1/tools/crm.x/invoke?account_id=z", call.dump(), alice_);
  EXPECT_EQ(Body(in_query)["error"], "tenant_from_token_only");
  EXPECT_EQ(gw.Public("GET", "/v1/executions?tenant_id=tenant-b", "", alice_).status, 400);
  EXPECT_EQ(crm_.total(), 0);
}

TEST_F(GatewayTest, AnotherTenantsExecutionIsNotFound) {
  GatewayProcess& gw = Start(Config());
  const std::string id = Body(gw.Invoke("crm.x", {{"input", json::object()}}, alice_))["execution_id"];
  EXPECT_EQ(gw.Public("GET", "/v1/executions/" + id, "", alice_).status, 200);
  auto other = gw.Public("GET", "/v1/executions/" + id, "", bob_);
  EXPECT_EQ(other.status, 404);
  EXPECT_EQ(Body(other)["error"], "not_found");
  EXPECT_EQ(gw.Public("GET", "/v1/executions/01a21f69-e57f-7954-b145-1de1fc45f4a5", "", alice_).status, 404);
  EXPECT_TRUE(Body(gw.Public("GET", "/v1/executions", "", bob_))["executions"].empty());
  EXPECT_EQ(Body(gw.Public("GET", "/v1/executions", "", alice_))["executions"].size(), 1u);
}

TEST_F(GatewayTest, ListingIsNewestFirstFilteredAndPaginated) {
  crm_.set_behavior([](const auto& req) { return req.path == "/crm.bad" ? Reply{500, "{}"} : Reply{}; });
  GatewayProcess& gw = Start(Config());
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(Body(gw.Invoke("crm.good", {{"input", {{"i", i}}}}, alice_))["execution_id"]);
  gw.Invoke("crm.bad", {{"input", json::object()}}, alice_);
  auto page1 = Body(gw.Public("GET", "/v1/executions?tool=crm.good&limit=3", "", alice_));
  ASSERT_EQ(page1["executions"].size(), 3u);
  EXPECT_EQ(page1["executions"][0]["execution_id"], ids[4]);
  ASSERT_TRUE(page1["next"].is_string());
  auto page2 = Body(
      gw.Public("GET", "/v1/executions?tool=crm.good&limit=3&after=" + page1["next"].get<std::string>(), "", alice_));
  ASSERT_EQ(page2["executions"].size(), 2u);
  EXPECT_EQ(page2["executions"][1]["execution_id"], ids[0]);
  EXPECT_TRUE(page2["next"].is_null());
  auto failed = Body(gw.Public("GET", "/v1/executions?outcome=FAILED", "", alice_));
  ASSERT_EQ(failed["executions"].size(), 1u);
  EXPECT_EQ(failed["executions"][0]["tool_name"], "crm.bad");
  EXPECT_EQ(gw.Public("GET", "/v1/executions?limit=5000", "", alice_).status, 400);
  // The admin listing's forms (§17.9): comma-separated outcomes; since/until in epoch ms or RFC 3339.
  auto both = Body(gw.Public("GET", "/v1/executions?outcome=FAILED,SUCCEEDED", "", alice_));
  EXPECT_EQ(both["executions"].size(), 6u) << both;
  auto unknown = gw.Public("GET", "/v1/executions?outcome=FAILED,NOPE", "", alice_);
  EXPECT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_EQ(Body(unknown)["error"], "invalid_request");
  EXPECT_THAT(Body(unknown).value("message", ""), ::testing::HasSubstr("NOPE"));
  const std::string later = std::to_string((time(nullptr) + 3600) * 1000);
  EXPECT_TRUE(Body(gw.Public("GET", "/v1/executions?since=2999-01-01T00:00Z", "", alice_))["executions"].empty());
  EXPECT_EQ(
      Body(gw.Public("GET", "/v1/executions?since=2020-01-01T00:00Z&until=" + later, "", alice_))["executions"].size(),
      6u);
  EXPECT_TRUE(Body(gw.Public("GET", "/v1/executions?until=2020-01-01T00:00Z", "", alice_))["executions"].empty());
  // since = the created_at (RFC 3339, ms) of the third call: exactly the calls created at or after it.
  std::map<std::string, std::string> created;
  for (const auto& id : ids) created[id] = Body(gw.Public("GET", "/v1/executions/" + id, "", alice_))["created_at"];
  const std::string since = created[ids[2]];
  const json recent = Body(gw.Public("GET", "/v1/executions?tool=crm.good&since=" + since, "", alice_));
  std::set<std::string> listed;
  for (const auto& e : recent["executions"]) listed.insert(e["execution_id"]);
  for (const auto& id : ids) EXPECT_EQ(listed.count(id), created[id] >= since ? 1u : 0u) << id << " " << recent;
  EXPECT_TRUE(listed.count(ids[4]));
  EXPECT_EQ(gw.Public("GET", "/v1/executions?since=yesterday", "", alice_).status, 400);
  EXPECT_EQ(gw.Public("GET", "/v1/executions?until=1e9", "", alice_).status, 400);
}

TEST_F(GatewayTest, BadInputGetsAClearErrorAndTheServerStaysUp) {
  GatewayProcess& gw = Start(Config());
  auto code = [&](const std::string& tool, const std::string& body) {
    auto r = gw.Public("POST", "/v1/tools/" + tool + "/invoke", body, alice_);
    return std::make_pair(r.status,
                          Body(r).is_object() ? Body(r).value("error", std::string()) : std::string("<not json>"));
  };
  EXPECT_EQ(code("crm.x", "{not json"), std::make_pair(400, std::string("invalid_json")));
  EXPECT_EQ(code("crm.x", "[1,2]"), std::make_pair(400, std::string("invalid_request")));
  EXPECT_EQ(code("crm.x", R"({"input":"a string"})"), std::make_pair(400, std::string("invalid_request")));
  EXPECT_EQ(code("crm.x", R"({"input":{},"idempotency_key":5})"), std::make_pair(400, std::string("invalid_request")));
  EXPECT_EQ(code("crm.x", R"({"input":{},"action_type":"NOT VALID"})"),
            std::make_pair(400, std::string("invalid_request")));
  EXPECT_EQ(code("crm!x", R"({"input":{}})"), std::make_pair(400, std::string("invalid_tool_name")));
  // Uppercase is in the name alphabet (DESIGN §17.2): an unknown connector, not a bad name.
  EXPECT_EQ(code("CRM.Upper", R"({"input":{}})"), std::make_pair(404, std::string("unknown_tool")));
  EXPECT_EQ(code("nosuch.tool", R"({"input":{}})"), std::make_pair(404, std::string("unknown_tool")));
  std::string deep = R"({"input":)";
  for (int i = 0; i < 5000; ++i) deep += "[";
  EXPECT_EQ(code("crm.x", deep), std::make_pair(400, std::string("invalid_json")));
  const std::string huge = R"({"input":{"blob":")" + std::string(4 << 20, 'x') + R"("}})";
  EXPECT_EQ(code("crm.x", huge).first, 413);
  auto wrong_method = gw.Public("GET", "/v1/tools/crm.x/invoke", "", alice_);
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(gw.Public("GET", "/nope").status, 404);
  EXPECT_EQ(crm_.total(), 0);
  EXPECT_EQ(gw.Public("GET", "/healthz").status, 200);
  EXPECT_EQ(gw.Invoke("crm.x", {{"input", json::object()}}, alice_).status, 200);
}

TEST_F(GatewayTest, AKillSwitchSetOnOneInstanceBlocksOnAnotherWithinTwoSeconds) {
  const std::string config = Config("", "[tools.\"crm.send_email\"]\naction_type = \"email.send\"\n");
  GatewayProcess& a = Start(config);
  GatewayProcess& b = Start(config);
  ASSERT_EQ(b.Invoke("crm.send_email", {{"input", json::object()}}, alice_).status, 200);
  auto set = a.Admin(
      "PUT", "/admin/kill-switches",
      json{{"scope", "action_type"}, {"key", "email.send"}, {"reason", "spam incident"}, {"requested_by", "oncall"}}
          .dump());
  ASSERT_EQ(set.status, 200) << set.body;
  // Bounded wait for instance b to see it (S8: within 2 s; more under the sanitizers).
  const auto start = std::chrono::steady_clock::now();
  api::ClientResult blocked;
  while (std::chrono::steady_clock::now() - start < testing::kKillSwitchPropagation) {
    // A caller cannot dodge it by relabelling: the config classifies this tool.
    blocked = b.Invoke("crm.send_email", {{"input", json::object()}, {"action_type", "crm.read"}}, alice_);
    if (blocked.status == 403) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(blocked.status, 403) << blocked.body;
  EXPECT_EQ(Body(blocked)["outcome"], "BLOCKED");
  EXPECT_EQ(Body(blocked)["reason"], "kill_switch");
  EXPECT_EQ(Body(blocked)["scope"], "action_type");
  const int calls = crm_.total();
  EXPECT_EQ(b.Invoke("crm.send_email", {{"input", json::object()}}, bob_).status, 403);
  EXPECT_EQ(crm_.total(), calls);
  EXPECT_EQ(b.Invoke("crm.update", {{"input", json::object()}}, alice_).status, 200);  // other action types run

  auto list = Body(b.Admin("GET", "/admin/kill-switches"));
  ASSERT_EQ(list["kill_switches"].size(), 1u);
  EXPECT_EQ(list["kill_switches"][0]["reason"], "spam incident");
  auto cleared = b.Admin("DELETE", "/admin/kill-switches/action_type/email.send",
                         json{{"reason", "fixed"}, {"requested_by", "oncall"}}.dump());
  ASSERT_EQ(cleared.status, 200) << cleared.body;
  const auto start2 = std::chrono::steady_clock::now();
  int status = 0;
  while (std::chrono::steady_clock::now() - start2 < testing::kKillSwitchPropagation) {
    status = a.Invoke("crm.send_email", {{"input", json::object()}}, alice_).status;
    if (status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status, 200);
  std::vector<std::string> types;
  const json audit = Body(a.Admin("GET", "/admin/audit"));
  for (const auto& e : audit["events"]) types.push_back(e["type"]);
  EXPECT_THAT(types, ::testing::ElementsAre("KILL_SWITCH_CLEARED", "KILL_SWITCH_SET"));
}

TEST_F(GatewayTest, EveryKillSwitchScopeMatches) {
  GatewayProcess& gw = Start(Config());
  struct Case {
    std::string scope, key;
    std::string tenant;
    std::string tool;
    std::string action_type;
  };
  for (const Case& c : std::vector<Case>{{"global", "*", "tenant-a", "other.x", ""},
                                         {"connector", "crm", "tenant-a", "crm.x", ""},
                                         {"tenant", "tenant-a", "tenant-a", "other.x", ""},
                                         {"action_type", "crm.write", "tenant-a", "crm.x", "crm.write"},
                                         {"tenant_action", "tenant-a/crm.write", "tenant-a", "crm.x", "crm.write"}}) {
    ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches",
                       json{{"scope", c.scope}, {"key", c.key}, {"reason", "r"}, {"requested_by", "w"}}.dump())
                  .status,
              200);
    json call = {{"input", json::object()}};
    if (!c.action_type.empty()) call["action_type"] = c.action_type;
    auto r = gw.Invoke(c.tool, call, Token(c.tenant));
    EXPECT_EQ(r.status, 403) << c.scope;
    EXPECT_EQ(Body(r)["scope"], c.scope);
    if (c.scope == "tenant" || c.scope == "tenant_action") {
      EXPECT_NE(gw.Invoke(c.tool, call, bob_).status, 403) << c.scope << " blocked another tenant";
    }
    ASSERT_EQ(gw.Admin("DELETE", "/admin/kill-switches/" + c.scope + "/" + c.key,
                       json{{"reason", "r"}, {"requested_by", "w"}}.dump())
                  .status,
              200);
  }
  EXPECT_EQ(gw.Admin("PUT", "/admin/kill-switches",
                     json{{"scope", "galaxy"}, {"key", "x"}, {"reason", "r"}, {"requested_by", "w"}}.dump())
                .status,
            400);
  EXPECT_EQ(gw.Admin("PUT", "/admin/kill-switches", json{{"scope", "global"}, {"key", "*"}}.dump()).status, 400);
}

// An operator's limit at or below the per-tenant share leaves the share nothing to divide: one
// tenant may hold every slot again. The limit is set (an operator cutting a downstream's load must be
// able to), and the answer says what it does to the share; above the share it says nothing.
TEST_F(GatewayTest, ALimitAtOrBelowThePerTenantShareIsSetAndSaysSo) {
  GatewayProcess& gw = Start(Config("max_in_flight_per_tenant = 2\n"));
  auto low = gw.Admin("PUT", "/admin/connectors/crm/limits",
                      json{{"max_in_flight", 2}, {"reason", "vendor asked"}, {"requested_by", "bob@ops"}}.dump());
  ASSERT_EQ(low.status, 200) << low.body;
  EXPECT_EQ(Body(low)["max_in_flight"], 2);
  EXPECT_THAT(Body(low).value("warning", ""),
              ::testing::HasSubstr("max_in_flight_per_tenant (2) is not below the new limit (2)"));
  auto higher = gw.Admin("PUT", "/admin/connectors/crm/limits",
                         json{{"max_in_flight", 3}, {"reason", "vendor ok"}, {"requested_by", "bob@ops"}}.dump());
  ASSERT_EQ(higher.status, 200) << higher.body;
  EXPECT_FALSE(Body(higher).contains("warning")) << higher.body;
}

// An http connector forwards any name below its prefix as the path, and many routers match paths
// without regard to case or a trailing '.', '-' or '_': a switch on an action type that is no [tools]
// entry stops each such spelling of it, immediate or queued, before the downstream sees it (`crm.Delete`
// ran as `POST /crm.Delete`). Under a tenant_action switch, another tenant's calls still run.
TEST_F(GatewayTest, AnActionTypeKillSwitchStopsEverySpellingOfTheToolItNames) {
  GatewayProcess& gw = Start(Config());
  for (const auto& [scope, key] :
       {std::pair{"action_type", "crm.delete"}, std::pair{"tenant_action", "tenant-a/crm.purge"}}) {
    ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches",
                       json{{"scope", scope}, {"key", key}, {"reason", "incident"}, {"requested_by", "oncall"}}.dump())
                  .status,
              200);
  }
  const json immediate = {{"input", json::object()}};
  const json queued = {{"input", json::object()}, {"mode", "queued"}};
  for (const std::string tool : {"crm.delete", "crm.Delete", "crm.DELETE", "crm.delete.", "crm.Delete_"}) {
    for (const json& call : {immediate, queued}) {
      auto r = gw.Invoke(tool, call, alice_);
      EXPECT_EQ(r.status, 403) << tool << " " << call.dump() << ": " << r.body;
      EXPECT_EQ(Body(r).value("scope", ""), "action_type") << tool << ": " << r.body;
    }
  }
  for (const std::string tool : {"crm.purge", "crm.Purge", "crm.purge-"}) {
    auto r = gw.Invoke(tool, immediate, alice_);
    EXPECT_EQ(r.status, 403) << tool << ": " << r.body;
    EXPECT_EQ(Body(r).value("scope", ""), "tenant_action") << tool << ": " << r.body;
  }
  EXPECT_EQ(crm_.total(), 0) << "a spelling of a switched-off tool reached the downstream";
  EXPECT_EQ(gw.Invoke("crm.Purge", immediate, bob_).status, 200) << "the tenant_action switch stopped another tenant";
  EXPECT_EQ(gw.Invoke("crm.deleted", immediate, alice_).status, 200) << "another name was stopped";
  EXPECT_EQ(crm_.total(), 2);
}

TEST_F(GatewayTest, BreakerCloseChecksHealthFirstAndEveryAdminChangeIsAudited) {
  crm_.set_behavior([](const auto& req) { return req.path == "/health" ? Reply{503, "{}"} : Reply{}; });
  GatewayProcess& gw = Start(Config());
  const std::string audit = json{{"reason", "investigating"}, {"requested_by", "alice@ops"}}.dump();
  auto opened = gw.Admin("POST", "/admin/connectors/crm/breaker/open", audit);
  ASSERT_EQ(opened.status, 200) << opened.body;
  EXPECT_EQ(Body(opened)["breaker"]["state"], "FORCED_OPEN");
  EXPECT_EQ(Body(gw.Invoke("crm.x", {{"input", json::object()}}, alice_))["reason"], "breaker_open");

  auto refused = gw.Admin("POST", "/admin/connectors/crm/breaker/close", audit);
  EXPECT_EQ(refused.status, 409);
  EXPECT_EQ(Body(refused)["error"], "connector_unhealthy");
  EXPECT_EQ(crm_.count("/health"), 1);
  auto forced = gw.Admin("POST", "/admin/connectors/crm/breaker/close",
                         json{{"reason", "vendor says ok"}, {"requested_by", "alice@ops"}, {"force", true}}.dump());
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(Body(forced)["breaker"]["state"], "CLOSED");
  EXPECT_EQ(gw.Invoke("crm.x", {{"input", json::object()}}, alice_).status, 200);

  auto limits = gw.Admin("PUT", "/admin/connectors/crm/limits",
                         json{{"max_in_flight", 2}, {"reason", "vendor asked"}, {"requested_by", "bob@ops"}}.dump());
  ASSERT_EQ(limits.status, 200) << limits.body;
  EXPECT_EQ(Body(limits)["max_in_flight"], 2);
  EXPECT_EQ(gw.Admin("PUT", "/admin/connectors/crm/limits", json{{"max_in_flight", 2}}.dump()).status, 400);
  EXPECT_EQ(gw.Admin("POST", "/admin/connectors/nope/breaker/open", audit).status, 404);

  auto connectors = Body(gw.Admin("GET", "/admin/connectors"));
  ASSERT_EQ(connectors["connectors"].size(), 2u);
  EXPECT_EQ(connectors["connectors"][0]["id"], "crm");
  EXPECT_EQ(connectors["connectors"][0]["max_in_flight"], 2);
  EXPECT_EQ(connectors["connectors"][0]["breaker"]["state"], "CLOSED");

  std::vector<std::string> types;
  json events = Body(gw.Admin("GET", "/admin/audit"))["events"];
  for (const auto& e : events) types.push_back(e["type"]);
  // The refused attempts are audited too (§17.9), newest first: the unknown connector, the limit
  // without reason/requested_by, the unhealthy close.
  EXPECT_THAT(types, ::testing::ElementsAre("ADMIN_REQUEST_REFUSED", "ADMIN_REQUEST_REFUSED", "LIMIT_CHANGED",
                                            "CIRCUIT_MANUALLY_CLOSED", "ADMIN_REQUEST_REFUSED", "CIRCUIT_FORCED_OPEN"));
  EXPECT_EQ(events[0]["data"]["status"], 404);
  EXPECT_EQ(events[1]["data"]["status"], 400);
  EXPECT_EQ(events[4]["data"]["error"], "connector_unhealthy");
  EXPECT_EQ(events[5]["data"]["reason"], "investigating");
  EXPECT_EQ(events[5]["data"]["requested_by"], "alice@ops");
  EXPECT_EQ(events[2]["data"]["to"], 2);

  const std::string metrics = gw.Admin("GET", "/metrics").body;
  EXPECT_NE(metrics.find("toolgate_tool_calls_total{connector=\"crm\",outcome=\"SUCCEEDED\",tool=\"crm.x\"} 1"),
            std::string::npos);
  EXPECT_NE(metrics.find("toolgate_breaker_state{connector=\"crm\",state=\"CLOSED\"} 1"), std::string::npos);
  EXPECT_NE(metrics.find("toolgate_in_flight_limit{connector=\"crm\"} 2"), std::string::npos);
  EXPECT_NE(metrics.find("toolgate_store_operation_seconds_count{backend=\"sqlite\""), std::string::npos);
}

// Before any call, /metrics lists every family once (a family without samples as its HELP and TYPE
// lines) and each configured connector's counters of fixed label values at 0, none per tool.
TEST_F(GatewayTest, MetricsListEveryFamilyOnceAndTheConnectorsCountersAtZeroBeforeAnyCall) {
  GatewayProcess& gw = Start(Config());
  const auto scraped = gw.Admin("GET", "/metrics");
  ASSERT_EQ(scraped.status, 200) << scraped.body;
  const std::string& metrics = scraped.body;
  std::map<std::string, int> typed;  // family name -> its `# TYPE` lines
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) == 0) ++typed[line.substr(7, line.find(' ', 7) - 7)];
  }
  for (const auto& [name, count] : typed) EXPECT_EQ(count, 1) << name << " listed twice";
  for (const char* name : {"toolgate_tool_calls_total", "toolgate_tool_errors_total", "toolgate_tool_latency_seconds",
                           "toolgate_breaker_transitions_total", "toolgate_deferred_total", "toolgate_blocked_total",
                           "toolgate_replays_total", "toolgate_callback_attempts_total", "toolgate_slo_events_total",
                           "toolgate_slo_bad_events_total", "toolgate_slo_alarm", "toolgate_store_retries_total",
                           "toolgate_unrecorded_outcomes_ended_total", "process_open_fds"}) {
    EXPECT_EQ(typed.count(name), 1u) << name << "\n" << metrics;
  }
  for (const char* series :
       {R"(toolgate_deferred_total{connector="crm",reason="breaker_open"} 0)",
        R"(toolgate_deferred_total{connector="other",reason="concurrency_limit"} 0)",
        R"(toolgate_blocked_total{connector="crm",scope="global"} 0)",
        R"(toolgate_breaker_transitions_total{connector="crm",from="CLOSED",to="OPEN"} 0)",
        R"(toolgate_slo_events_total{connector="other",slo="tool_latency_ms"} 0)",
        R"(toolgate_slo_bad_events_total{connector="crm",slo="tool_error"} 0)",
        R"(toolgate_replays_total{result="executed"} 0)", R"(toolgate_in_flight{connector="crm"} 0)",
        R"(toolgate_in_flight_limit{connector="crm"} 8)",
        R"(toolgate_breaker_state{connector="crm",state="CLOSED"} 1)"}) {
    EXPECT_NE(metrics.find(std::string("\n") + series + "\n"), std::string::npos) << series << "\n" << metrics;
  }
  EXPECT_EQ(metrics.find("toolgate_callback_attempts_total{"), std::string::npos) << "no callbacks configured";
  EXPECT_EQ(metrics.find("tool=\""), std::string::npos) << "no series per tool before a call";
}

TEST_F(GatewayTest, RestartKeepsBreakerStateAndLedger) {
  crm_.set_behavior([](const auto&) { return Reply{500, "{}"}; });
  // The fixture's cooldown (300 s) far outlasts a restart (an instrumented build on a slow machine
  // takes seconds to start), so the breaker must still be OPEN from the store, not half-open by the clock.
  const std::string config = Config();
  std::string id;
  {
    GatewayProcess& gw = Start(config);
    for (int i = 0; i < 3; ++i) id = Body(gw.Invoke("crm.x", {{"input", json::object()}}, alice_))["execution_id"];
    ASSERT_EQ(Body(gw.Invoke("crm.x", {{"input", json::object()}}, alice_))["reason"], "breaker_open");
    const int status = gw.Terminate();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << gw.Log();
  }
  const int sent = crm_.total();
  GatewayProcess& again = Start(config);
  EXPECT_EQ(Body(again.Invoke("crm.x", {{"input", json::object()}}, alice_))["reason"], "breaker_open");
  EXPECT_EQ(crm_.total(), sent);  // the restarted instance sent nothing: the breaker came from the store
  auto old = again.Public("GET", "/v1/executions/" + id, "", alice_);
  ASSERT_EQ(old.status, 200);
  EXPECT_EQ(Body(old)["outcome"], "FAILED");
  EXPECT_EQ(Body(old)["events"].size(), 3u);
}

// SIGINT (an operator's Ctrl-C) stops the gateway as SIGTERM does: calls in flight are answered,
// the process exits 0, and its log names the signal. Both are taken by one waiting thread, so a stop
// does not depend on which of the process's threads the kernel hands the signal to.
TEST_F(GatewayTest, SigintStopsTheGatewayAsGracefullyAsSigterm) {
  // The downstream holds every call until the gateway has taken the signal (bounded at 10 s, within
  // timeout_ms): all four are in flight at SIGINT however slowly they arrive.
  std::atomic<bool> release{false};
  crm_.set_behavior([&release](const auto&) {
    testing::WaitUntil([&release] { return release.load(); }, std::chrono::seconds(10), std::chrono::milliseconds(5));
    return Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start(
      testing::Replaced(Config(), "timeout_ms = 1000\nmax_in_flight = 8", "timeout_ms = 15000\nmax_in_flight = 8"));
  std::vector<api::ClientResult> answers(4);
  std::vector<std::thread> callers;
  for (size_t i = 0; i < answers.size(); ++i) {
    callers.emplace_back([&, i] { answers[i] = gw.Invoke("crm.x", {{"input", {{"i", i}}}}, alice_); });
  }
  testing::WaitUntil([&] { return crm_.concurrent() >= 4; }, std::chrono::seconds(20));
  ASSERT_EQ(crm_.concurrent(), 4) << "the calls did not all reach the downstream";
  ASSERT_EQ(kill(gw.pid(), SIGINT), 0);
  testing::WaitUntil([&] { return gw.Log().find("SIGINT: stopping") != std::string::npos; }, std::chrono::seconds(10),
                     std::chrono::milliseconds(50));
  release = true;
  const int status = gw.AwaitExit();
  for (auto& t : callers) t.join();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exit status " << status << "\n" << gw.Log();
  for (const auto& a : answers) {
    EXPECT_EQ(a.status, 200) << "a call in flight at SIGINT was dropped: " << a.error << " " << a.body;
  }
  const std::string log = gw.Log();
  EXPECT_NE(log.find("SIGINT: stopping"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
}

TEST_F(GatewayTest, LedgerVerifyPassesThenNamesTheFirstAlteredOrRemovedEvent) {
  GatewayProcess& gw = Start(Config());
  std::string id;
  for (int i = 0; i < 3; ++i) id = Body(gw.Invoke("crm.x", {{"input", {{"i", i}}}}, alice_))["execution_id"];
  gw.Terminate();
  auto [ok_code, ok_out] = testing::RunCli({"ledger", "verify", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(ok_code, 0) << ok_out;
  EXPECT_NE(ok_out.find("ok (3 executions, 0 audit days, 9 events)"), std::string::npos) << ok_out;

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &db), SQLITE_OK);
  // The call's own events are in its record (DESIGN §16, docs/store.md): `events`, one
  // [type, ms, data, actor?] each. Forge TOOL_SUCCEEDED's data, then remove it.
  const std::string record = "pk = 'TENANT#tenant-a' AND sk = 'EXEC#" + id + "'";
  const std::string edit =
      "UPDATE items SET attrs = json_set(attrs, '$.events', json_set(json_extract(attrs, '$.events'), "
      "'$[2][2].forged', json('true')) || '') WHERE " +
      record;
  ASSERT_EQ(sqlite3_exec(db, edit.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_changes(db), 1);
  auto [bad_code, bad_out] = testing::RunCli({"ledger", "verify", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(bad_code, 1) << bad_out;
  EXPECT_NE(bad_out.find("execution " + id + ": event 3 does not match the hash its record holds"), std::string::npos)
      << bad_out;

  const std::string remove =
      "UPDATE items SET attrs = json_set(attrs, '$.events', json_remove(json_extract(attrs, '$.events'), '$[2]') || "
      "'') WHERE " +
      record;
  ASSERT_EQ(sqlite3_exec(db, remove.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_changes(db), 1);
  sqlite3_close(db);
  auto [gone_code, gone_out] = testing::RunCli({"ledger", "verify", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(gone_code, 1) << gone_out;
  EXPECT_NE(gone_out.find("event 3, the last its record names, is missing"), std::string::npos) << gone_out;
}

// [ledger] retention: every execution says when it expires (a deferred one sooner), `ledger export`
// writes chains an archive can verify without toolgate, and `ledger verify` treats a chain that
// expired as a whole as gone but an event set to expire on its own as tampering.
TEST_F(GatewayTest, RetentionIsRecordedExportedWithVerifiableHashesAndRespectedByVerify) {
  crm_.set_behavior([](const auto& req) {
    return req.path == "/crm.fail" ? Reply{500, R"({"error":"down"})"} : Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start(Config("", "[ledger]\nretention_s = 86400\ndeferred_retention_s = 3600\n"));
  auto expires_after_creation = [&](const std::string& id) {
    const json e = Body(gw.Public("GET", "/v1/executions/" + id, "", alice_));
    struct tm created {
    }, expires{};
    EXPECT_TRUE(strptime(e["created_at"].get<std::string>().c_str(), "%Y-%m-%dT%H:%M:%S", &created)) << e;
    EXPECT_TRUE(strptime(e.value("expires_at", "").c_str(), "%Y-%m-%dT%H:%M:%S", &expires)) << e;
    return static_cast<int64_t>(timegm(&expires) - timegm(&created));
  };
  const std::string ok_id = Body(gw.Invoke("crm.x", {{"input", {{"n", 1}}}}, alice_))["execution_id"];
  // The second runs its intent once; the repeat is an INTENT_HIT, an event item after the events its
  // record holds (DESIGN §16).
  const json second_call = {{"input", {{"n", 2}}}, {"idempotency_key", "retention-2"}};
  const std::string second_id = Body(gw.Invoke("crm.x", second_call, alice_))["execution_id"];
  ASSERT_EQ(Body(gw.Invoke("crm.x", second_call, alice_))["intent_hit"], true);
  std::string deferred_id;
  for (int i = 0; i < 6 && deferred_id.empty(); ++i) {
    const json r = Body(gw.Invoke("crm.fail", {{"input", json::object()}}, alice_));
    if (r["outcome"] == "DEFERRED") deferred_id = r["execution_id"];
  }
  ASSERT_FALSE(deferred_id.empty()) << "three failures open the breaker";
  EXPECT_EQ(expires_after_creation(ok_id), 86400);
  EXPECT_EQ(expires_after_creation(deferred_id), 3600) << "deferred before the connector: the shorter retention";
  gw.Terminate();

  // Export, then check every chain the way an archive would: recompute each hash from the line alone.
  auto [code, out] = testing::RunCli({"ledger", "export", "--config", gw.config_path()}, dir_);
  ASSERT_EQ(code, 0) << out;
  int executions = 0, audit_days = 0;
  std::set<std::string> ids;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    const json j = json::parse(line);
    std::string prev;
    for (const auto& e : j["events"]) {
      const json canonical = {
          {"seq", e["seq"]}, {"type", e["type"]}, {"at", e["at"]}, {"actor", e["actor"]}, {"data", e["data"]}};
      EXPECT_EQ(e["prev_hash"], prev);
      EXPECT_EQ(e["hash"], Sha256Hex(prev + canonical.dump())) << line;
      prev = e["hash"];
    }
    if (j["kind"] == "execution") {
      ++executions;
      ids.insert(j["record"]["execution_id"].get<std::string>());
      EXPECT_EQ(j["record"]["last_hash"], prev) << "the record names the chain's last event";
      EXPECT_TRUE(j["record"]["ttl"].is_number_integer());
    } else {
      EXPECT_EQ(j["kind"], "audit");
      ++audit_days;
    }
  }
  EXPECT_GE(executions, 6);
  EXPECT_TRUE(ids.count(ok_id) && ids.count(deferred_id));
  EXPECT_GE(audit_days, 1) << "CIRCUIT_OPENED went to today's audit chain";
  EXPECT_THAT(out, ::testing::HasSubstr("ledger export: " + std::to_string(executions) + " executions, " +
                                        std::to_string(audit_days) + " audit days"));
  auto [later_code, later] =
      testing::RunCli({"ledger", "export", "--since", "2999-01-01", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(later_code, 0) << later;
  EXPECT_THAT(later, ::testing::HasSubstr("ledger export: 0 executions, 0 audit days"));
  auto [bad_code, bad] =
      testing::RunCli({"ledger", "export", "--since", "2026-02-30", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(bad_code, 1);
  EXPECT_THAT(bad, ::testing::HasSubstr("--since must be a date YYYY-MM-DD"));

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &db), SQLITE_OK);
  auto exec_sql = [&](const std::string& sql) {
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql;
  };
  // One execution reaches its retention as a whole (record and chain): gone, not damaged.
  exec_sql("UPDATE items SET ttl = 1, attrs = json_set(attrs, '$.ttl', 1) WHERE pk = 'EXEC#" + ok_id +
           "' OR sk = 'EXEC#" + ok_id + "'");
  auto [gone_code, gone] = testing::RunCli({"ledger", "verify", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(gone_code, 0) << gone;
  EXPECT_THAT(gone, ::testing::HasSubstr("ok (" + std::to_string(executions - 1) + " executions"));
  // One event of another is set to expire on its own: that would leave a hole, and verify says so now.
  exec_sql(
      "UPDATE items SET ttl = ttl + 5, attrs = json_set(attrs, '$.ttl', json_extract(attrs, '$.ttl') + 5) "
      "WHERE pk = 'EXEC#" +
      second_id + "' AND sk = 'EVENT#000000000004'");
  sqlite3_close(db);
  auto [tamper_code, tamper] = testing::RunCli({"ledger", "verify", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(tamper_code, 1) << tamper;
  EXPECT_THAT(tamper, ::testing::HasSubstr("execution " + second_id + ": event 4 (INTENT_HIT) expires at"));
}

TEST_F(GatewayTest, AnIdempotencyKeyRunsTheIntentOnceAndRefusesReuseWithOtherInput) {
  crm_.set_behavior([](const auto& req) {
    return Reply{200, R"({"n":)" + std::to_string(req.body.size()) + "}", {}, 300};
  });
  GatewayProcess& gw = Start(Config());
  const json call = {{"input", {{"amount", 10}}}, {"idempotency_key", "order-77"}};
  // 20 concurrent duplicates: the downstream sees the intent once.
  std::vector<api::ClientResult> results(20);
  std::vector<std::thread> threads;
  std::barrier start(20);
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[static_cast<size_t>(i)] = gw.Invoke("crm.charge", call, alice_);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(crm_.count("/crm.charge"), 1);
  int ok = 0, in_progress = 0;
  for (const auto& r : results) {
    if (r.status == 200) ++ok;
    if (r.status == 503 && Body(r)["reason"] == "intent_in_progress") ++in_progress;
  }
  EXPECT_EQ(ok + in_progress, 20);
  EXPECT_GE(ok, 1);
  EXPECT_EQ(crm_.requests()[0].headers.at("idempotency-key"), testing::DownstreamKey("tenant-a", "order-77"));

  // Once it succeeded, a retry gets the recorded result without a call.
  auto again = gw.Invoke("crm.charge", call, alice_);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(Body(again)["intent_hit"], true);
  EXPECT_EQ(crm_.count("/crm.charge"), 1);
  // The key sent as the Idempotency-Key header (bare, or quoted as its draft standard writes it) is
  // the same intent; a header and a body key that differ are refused, nothing runs.
  auto with_header = [&](const std::string& key, const json& body) {
    api::ClientRequest r;
    r.address = {"127.0.0.1", gw.public_port()};
    r.method = "POST";
    r.target = "/v1/tools/crm.charge/invoke";
    r.body = body.dump();
    r.headers = {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + alice_}, {"Idempotency-Key", key}};
    return api::HttpCall(std::move(r));
  };
  const json unkeyed = {{"input", {{"amount", 10}}}};
  EXPECT_EQ(Body(with_header("order-77", unkeyed))["intent_hit"], true);
  EXPECT_EQ(Body(with_header("\"order-77\"", unkeyed))["intent_hit"], true);
  auto differ = with_header("order-78", call);
  EXPECT_EQ(differ.status, 400) << differ.body;
  EXPECT_EQ(Body(differ)["error"], "invalid_request");
  EXPECT_EQ(crm_.count("/crm.charge"), 1);
  // The same key with other input is a client bug.
  auto reused = gw.Invoke("crm.charge", {{"input", {{"amount", 99}}}, {"idempotency_key", "order-77"}}, alice_);
  EXPECT_EQ(reused.status, 422);
  EXPECT_EQ(Body(reused)["error"], "idempotency_key_reused");
  // Intent keys are per tenant: bob's "order-77" is his own — here and at the downstream, which
  // every tenant reaches with the same credentials: a downstream keeping keys per credential must
  // not answer bob's call with alice's stored result, nor drop it as her call's repeat.
  EXPECT_EQ(Body(gw.Invoke("crm.charge", call, bob_))["intent_hit"], nullptr);
  EXPECT_EQ(crm_.count("/crm.charge"), 2);
  const std::string bobs = crm_.requests()[1].headers.at("idempotency-key");
  EXPECT_NE(bobs, crm_.requests()[0].headers.at("idempotency-key"));
  EXPECT_EQ(bobs, testing::DownstreamKey("tenant-b", "order-77"));
}

TEST_F(GatewayTest, AnUnknownOutcomeIsResentWithTheSameKeyAndSaysSo) {
  std::atomic<int> calls{0};
  crm_.set_behavior([&](const auto&) {
    Reply r{200, R"({"charged":true})"};
    if (calls.fetch_add(1) == 0) r.delay_ms = 1500;  // the first attempt times out
    return r;
  });
  GatewayProcess& gw = Start(Config());
  const json call = {{"input", {{"amount", 5}}}, {"idempotency_key", "pay-1"}};
  auto first = gw.Invoke("crm.pay", call, alice_);
  ASSERT_EQ(first.status, 504) << first.body;
  auto second = gw.Invoke("crm.pay", call, alice_);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(crm_.count("/crm.pay"), 2);
  EXPECT_EQ(crm_.requests()[1].headers.at("idempotency-key"), crm_.requests()[0].headers.at("idempotency-key"));
  EXPECT_EQ(crm_.requests()[1].headers.at("idempotency-key"), testing::DownstreamKey("tenant-a", "pay-1"));
  const json exec =
      Body(gw.Public("GET", "/v1/executions/" + Body(second)["execution_id"].get<std::string>(), "", alice_));
  EXPECT_EQ(exec["events"][1]["type"], "TOOL_INVOKED");
  EXPECT_EQ(exec["events"][1]["data"]["previous_outcome"], "unknown");
}

TEST_F(GatewayTest, AnExposedAdminListenerNeedsATokenAndTheTokenIsChecked) {
  // Refused before anything is bound: a non-loopback admin address without admin_token_env.
  const std::string exposed = dir_.file("exposed.toml");
  {
    FILE* f = fopen(exposed.c_str(), "w");
    fputs(("[admin]\nlisten = \"0.0.0.0:0\"\n[connectors.crm]\nbase_url = \"" + crm_.base_url() + "\"\n").c_str(), f);
    fclose(f);
  }
  auto [code, out] = testing::RunCli({"serve", "--config", exposed}, dir_);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("admin.listen is not a loopback address"), std::string::npos) << out;

  // With a token configured (here on loopback), every admin route wants it, compared in full.
  setenv("TOOLGATE_TEST_ADMIN_TOKEN", "admin-token-0123456789", 1);
  std::string config = Config();
  config = testing::WithKeys(config, "[admin]", "admin_token_env = \"TOOLGATE_TEST_ADMIN_TOKEN\"\n");
  GatewayProcess& gw = Start(config);
  const int port = gw.admin_port();
  EXPECT_EQ(gw.Call(port, "GET", "/admin/connectors").status, 401);
  EXPECT_EQ(gw.Call(port, "GET", "/admin/connectors", "", "admin-token-012345678").status, 401);
  EXPECT_EQ(gw.Call(port, "GET", "/admin/connectors", "", "admin-token-0123456789x").status, 401);
  EXPECT_EQ(gw.Call(port, "GET", "/admin/connectors", "", "admin-token-0123456789").status, 200);
  EXPECT_EQ(gw.Call(port, "PUT", "/admin/kill-switches",
                    json{{"scope", "connector"}, {"key", "crm"}, {"reason", "x"}, {"requested_by", "y"}}.dump())
                .status,
            401);
  EXPECT_EQ(gw.Call(port, "GET", "/admin/slo").status, 401);
  EXPECT_EQ(gw.Call(port, "GET", "/admin/series").status, 401);
  EXPECT_EQ(gw.Call(port, "GET", "/metrics").status, 401);
  // The dashboard page itself carries no data (it asks for the token and reads the routes above).
  const auto page = gw.Call(port, "GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.body.find(crm_.base_url()), std::string::npos);
  EXPECT_EQ(page.body.find("crm"), std::string::npos);
  EXPECT_EQ(gw.Invoke("crm.x", {{"input", json::object()}}, alice_).status, 200) << "nothing was changed";
  unsetenv("TOOLGATE_TEST_ADMIN_TOKEN");
}

TEST_F(GatewayTest, ConfigErrorsNameTheKeyAndExit1) {
  const std::string path = dir_.file("bad.toml");
  FILE* f = fopen(path.c_str(), "w");
  fputs("[connectors.crm]\nbase_url = \"http://127.0.0.1:9\"\ntimeout_ms = 40000\nlease_ttl_s = 30\nmax_in_flite = 3\n",
        f);
  fclose(f);
  auto [code, out] = testing::RunCli({"serve", "--config", path}, dir_);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("connectors.crm.max_in_flite is not a known key"), std::string::npos) << out;
  EXPECT_NE(out.find("connectors.crm.lease_ttl_s must be longer than timeout_ms"), std::string::npos) << out;
  auto [usage, usage_out] = testing::RunCli({"breaker", "close"}, dir_);
  EXPECT_EQ(usage, 2) << usage_out;
}

}  // namespace
}  // namespace toolgate
