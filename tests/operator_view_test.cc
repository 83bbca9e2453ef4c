// The operator's side through the real binary (issue 18 items 2–6): `status` counts what agents were
// answered fleet-wide from the store (three instances, one SQLite store), read commands work with
// the server stopped, JSON log lines, the new metrics, and the OpenAPI document against the route
// table.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "api/routes.h"
#include "fake_downstream.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"
#include "wait_until.h"

#ifndef TOOLGATE_SOURCE_DIR
#error "TOOLGATE_SOURCE_DIR must name the source tree (for docs/openapi.json)"
#endif
#ifndef TOOLGATE_NODE_DIR
#error "TOOLGATE_NODE_DIR must name tests/node (the dashboard check)"
#endif

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

json Audit(const std::string& reason = "incident 7") { return {{"reason", reason}, {"requested_by", "oncall@acme"}}; }

// What agents were answered, tallied from the responses themselves (the independent observer).
struct Tally {
  int64_t calls = 0, succeeded = 0, failed = 0, deferred = 0, blocked = 0;
  std::map<std::string, int64_t> deferred_by_reason;
  void Add(const api::ClientResult& r) {
    const json b = Body(r);
    ASSERT_TRUE(b.contains("outcome")) << r.status << " " << r.body;
    const std::string outcome = b["outcome"];
    ++calls;
    if (outcome == "SUCCEEDED") ++succeeded;
    if (outcome == "FAILED") ++failed;
    if (outcome == "BLOCKED") ++blocked;
    if (outcome == "DEFERRED") {
      ++deferred;
      ++deferred_by_reason[b.value("reason", "")];
    }
  }
  json ToJson() const {
    json reasons = json::object();
    for (const auto& [r, n] : deferred_by_reason) reasons[r] = n;
    return {{"calls", calls},       {"succeeded", succeeded}, {"failed", failed},
            {"deferred", deferred}, {"blocked", blocked},     {"deferred_by_reason", reasons}};
  }
};

class OperatorViewTest : public ::testing::Test {
 protected:
  std::string Config(const std::string& extra = "") {
    return testing::BaseConfig(dir_.file("store.db")) +
           "[slo]\nevaluate_interval_ms = 200\n[connectors.crm]\nbase_url = \"" + crm_.base_url() +
           "\"\ntimeout_ms = 2000\nmax_in_flight = 8\nhealth_path = \"/health\"\n"
           "[connectors.crm.breaker]\nfailure_threshold = 1000\ncooldown_s = 60\n"
           "[connectors.billing]\nbase_url = \"" +
           crm_.base_url() + "\"\n" + extra;
  }
  GatewayProcess& Start(const std::string& extra = "") {
    gateways_.push_back(std::make_unique<GatewayProcess>(Config(extra), dir_, "gw" + std::to_string(gateways_.size())));
    EXPECT_TRUE(gateways_.back()->Start());
    return *gateways_.back();
  }
  std::pair<int, std::string> Cli(const std::vector<std::string>& args) { return testing::RunCli(args, dir_); }

  TempDir dir_;
  FakeDownstream crm_;
  std::vector<std::unique_ptr<GatewayProcess>> gateways_;
  const std::string alice_ = Token("tenant-a");
  const std::string bob_ = Token("tenant-b");
};

// stdout's JSON document (the CLI prints notes on stderr, after stdout in RunProgram's output).
json JsonOf(const std::string& out) {
  const auto end = out.rfind("\n}");
  return json::parse(out.substr(0, end == std::string::npos ? out.size() : end + 2), nullptr, false);
}

// Item 2: three instances on one store; successes, failures, BLOCKED by a kill switch and DEFERRED by
// a forced-open breaker. `status --json` shows exactly what the agents were answered, with one
// instance left (its admin listener) and with none (the store read directly).
TEST_F(OperatorViewTest, StatusCountsWhatAgentsWereAnsweredAcrossThreeInstances) {
  crm_.set_behavior([](const FakeDownstream::Request& r) {
    if (r.path == "/health") return Reply{200, R"({"ok":true})"};
    return r.body.find("\"fail\"") != std::string::npos ? Reply{500, R"({"error":"boom"})"}
                                                        : Reply{200, R"({"ok":true})"};
  });
  for (int i = 0; i < 3; ++i) Start();
  Tally tally;
  for (int round = 0; round < 4; ++round) {
    for (auto& gw : gateways_) {
      tally.Add(gw->Invoke("crm.lookup", {{"input", {{"mode", "ok"}}}}, alice_));
      if (round % 2 == 0) tally.Add(gw->Invoke("crm.lookup", {{"input", {{"mode", "fail"}}}}, alice_));
    }
  }
  json kill = Audit("tenant-b is looping");
  kill["scope"] = "tenant";
  kill["key"] = "tenant-b";
  ASSERT_EQ(gateways_[0]->Admin("PUT", "/admin/kill-switches", kill.dump()).status, 200);
  for (auto& gw : gateways_) {  // each instance sees the switch within refresh_ms
    bool blocked = false;
    // Bounded by time, not by count: a fast machine answers many calls within one refresh.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!blocked && std::chrono::steady_clock::now() < give_up) {
      auto r = gw->Invoke("crm.lookup", {{"input", {{"mode", "ok"}}}}, bob_);
      tally.Add(r);
      blocked = Body(r)["outcome"] == "BLOCKED";
      if (!blocked) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(blocked);
    tally.Add(gw->Invoke("crm.lookup", {{"input", {{"mode", "ok"}}}}, bob_));
  }
  ASSERT_EQ(
      gateways_[1]->Admin("POST", "/admin/connectors/crm/breaker/open", Audit("crm double-charges").dump()).status,
      200);
  for (auto& gw : gateways_) {
    for (int i = 0; i < 5; ++i) tally.Add(gw->Invoke("crm.lookup", {{"input", {{"mode", "ok"}}}}, alice_));
  }
  ASSERT_GT(tally.succeeded, 0);
  ASSERT_GT(tally.failed, 0);
  ASSERT_GT(tally.blocked, 0);
  ASSERT_GT(tally.deferred_by_reason["breaker_open"], 0) << tally.ToJson();

  // Two instances stop (they flush their counts); the third answers through its admin listener.
  gateways_[1]->Terminate();
  gateways_[2]->Terminate();
  const std::string cli_config = gateways_[0]->CliConfigPath();
  auto [code, out] = Cli({"status", "--json", "--config", cli_config});
  ASSERT_EQ(code, 0) << out;
  json doc = JsonOf(out);
  ASSERT_TRUE(doc.is_object()) << out;
  std::map<std::string, json> by_id;
  for (const auto& c : doc["connectors"]) by_id[c["id"]] = c;
  EXPECT_EQ(by_id["crm"]["last_5m"], tally.ToJson()) << out;
  EXPECT_EQ(by_id["billing"]["last_5m"]["calls"], 0);
  EXPECT_EQ(by_id["crm"]["breaker"]["state"], "FORCED_OPEN");
  EXPECT_EQ(by_id["crm"]["breaker"]["forced_by"], "oncall@acme");
  EXPECT_EQ(by_id["crm"]["breaker"]["forced_reason"], "crm double-charges");
  ASSERT_EQ(doc["kill_switches"].size(), 1u);
  EXPECT_EQ(doc["kill_switches"][0]["requested_by"], "oncall@acme");
  EXPECT_EQ(doc["kill_switches"][0]["reason"], "tenant-b is looping");
  EXPECT_THAT(out, Not(HasSubstr("not answering")));

  // The table says the same in words.
  auto [table_code, table] = Cli({"status", "--config", cli_config});
  ASSERT_EQ(table_code, 0) << table;
  EXPECT_THAT(table, HasSubstr("CALLS"));
  EXPECT_THAT(table, HasSubstr("breaker_open " + std::to_string(tally.deferred_by_reason["breaker_open"])));
  EXPECT_THAT(table, HasSubstr("forced open by oncall@acme"));
  EXPECT_THAT(table, HasSubstr("tenant tenant-b by oncall@acme"));

  // The dashboard reads the same numbers from GET /admin/status and shows them per connector (the
  // page renders them in the browser: a browser reads them as an operator would).
  const json live = Body(gateways_[0]->Admin("GET", "/admin/status"));
  std::map<std::string, json> live_by_id;
  for (const auto& c : live["connectors"]) live_by_id[c["id"]] = c;
  EXPECT_EQ(live_by_id["crm"]["last_5m"], tally.ToJson()) << live;
  EXPECT_EQ(live_by_id["billing"]["last_5m"], Tally().ToJson()) << live;
  auto shown = [](const Tally& t) {
    std::string reasons;
    for (const auto& [reason, n] : t.deferred_by_reason) {
      reasons += (reasons.empty() ? "" : ", ") + reason + " " + std::to_string(n);
    }
    // The cell's three lines, as the page's text (no separator between them).
    return std::to_string(t.calls) + " calls" + std::to_string(t.succeeded) + " ok · " + std::to_string(t.failed) +
           " failed · " + std::to_string(t.blocked) + " blocked" + std::to_string(t.deferred) + " deferred" +
           (reasons.empty() ? "" : " (" + reasons + ")");
  };
  const json expected_page = {{"breakers", {{"crm", "FORCED_OPEN"}}},
                              {"kill_switches", {"tenant-b is looping"}},
                              {"exact_texts", {{"last5m-crm", shown(tally)}, {"last5m-billing", shown(Tally())}}},
                              {"sparklines", false}};
  auto [page_code, page] = testing::RunProgram({"/usr/bin/node", std::string(TOOLGATE_NODE_DIR) + "/dashboard_check.js",
                                                "http://127.0.0.1:" + std::to_string(gateways_[0]->admin_port()) + "/",
                                                expected_page.dump(), dir_.file("dashboard-counts.png")},
                                               dir_);
  EXPECT_EQ(page_code, 0) << "expected " << expected_page << "\nfound " << page;

  // Item 3: every instance stopped. The same numbers from the store; TOOLGATE_CONFIG names the config.
  gateways_[0]->Terminate();
  setenv("TOOLGATE_CONFIG", cli_config.c_str(), 1);
  auto [down_code, down] = Cli({"status", "--json"});
  unsetenv("TOOLGATE_CONFIG");
  ASSERT_EQ(down_code, 0) << down;
  EXPECT_THAT(down, HasSubstr("admin listener not answering at 127.0.0.1:"));
  EXPECT_THAT(down, HasSubstr("read from the store at sqlite " + dir_.file("store.db")));
  json stored = JsonOf(down);
  ASSERT_TRUE(stored.is_object()) << down;
  for (const auto& c : stored["connectors"]) by_id[c["id"]] = c;
  EXPECT_EQ(by_id["crm"]["last_5m"], tally.ToJson()) << down;
  EXPECT_EQ(by_id["crm"]["breaker"]["forced_by"], "oncall@acme");

  auto [kill_code, kills] = Cli({"kill-switch", "list", "--json", "--config", cli_config});
  ASSERT_EQ(kill_code, 0) << kills;
  EXPECT_THAT(kills, HasSubstr("not answering"));
  EXPECT_EQ(JsonOf(kills)["kill_switches"][0]["key"], "tenant-b") << kills;
  auto [kill_table_code, kill_table] = Cli({"kill-switch", "list", "--config", cli_config});
  EXPECT_EQ(kill_table_code, 0);
  EXPECT_THAT(kill_table, HasSubstr("tenant-b is looping"));
  auto [limits_code, limits] = Cli({"limits", "list", "--json", "--config", cli_config});
  ASSERT_EQ(limits_code, 0) << limits;
  EXPECT_THAT(limits, HasSubstr("not answering"));
  EXPECT_EQ(JsonOf(limits)["limits"].size(), 2u) << limits;
}

// Item 2: a downstream's 429 with Retry-After throttles its connector fleet-wide; `status --json`
// shows until when (and the table says so), the other connector untouched.
TEST_F(OperatorViewTest, StatusShowsThrottledUntilAfterA429WithRetryAfter) {
  crm_.set_behavior([](const FakeDownstream::Request& r) {
    if (r.path == "/health") return Reply{200, R"({"ok":true})"};
    return Reply{429, R"({"error":"slow down"})", {{"Retry-After", "120"}}};
  });
  GatewayProcess& gw = Start();
  const int64_t before_s = time(nullptr);
  auto throttled = gw.Invoke("crm.lookup", {{"input", {{"n", 1}}}}, alice_);
  const json answer = Body(throttled);
  EXPECT_EQ(answer.value("outcome", ""), "DEFERRED") << throttled.body;
  EXPECT_EQ(answer.value("reason", ""), "downstream_throttled") << throttled.body;
  const int64_t after_s = time(nullptr);
  auto [code, out] = Cli({"status", "--json", "--config", gw.CliConfigPath()});
  ASSERT_EQ(code, 0) << out;
  const json doc = JsonOf(out);
  ASSERT_TRUE(doc.is_object()) << out;
  std::map<std::string, json> by_id;
  for (const auto& c : doc["connectors"]) by_id[c["id"]] = c;
  ASSERT_TRUE(by_id["crm"].contains("throttled_until_epoch_sec")) << out;
  const int64_t until = by_id["crm"]["throttled_until_epoch_sec"];
  EXPECT_GE(until, before_s + 120) << out;
  EXPECT_LE(until, after_s + 121) << out;
  EXPECT_GT(by_id["crm"]["throttled_remaining_s"].get<int64_t>(), 0) << out;
  EXPECT_EQ(by_id["billing"]["throttled_until_epoch_sec"], 0) << out;
  auto [table_code, table] = Cli({"status", "--config", gw.CliConfigPath()});
  ASSERT_EQ(table_code, 0) << table;
  EXPECT_THAT(table, HasSubstr("throttled by the downstream until epoch " + std::to_string(until)));
}

// Under a per-tenant share, whether one tenant holds a connector's slots is what the runbook's "one
// tenant's calls take every slot" asks: the table says it under the connector with the share (the
// share, the tenants holding slots, the most one holds), and under no other. Only `--json` did.
TEST_F(OperatorViewTest, StatusShowsWhoHoldsTheSlotsOfAConnectorWithAPerTenantShare) {
  std::mutex mu;
  std::condition_variable released;
  bool release = false;
  int held = 0;
  crm_.set_behavior([&](const FakeDownstream::Request& r) {
    if (r.path == "/health") return Reply{200, R"({"ok":true})"};
    std::unique_lock<std::mutex> lock(mu);
    ++held;
    released.wait_for(lock, std::chrono::seconds(20), [&] { return release; });
    return Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start("[connectors.shared]\nbase_url = \"" + crm_.base_url() +
                             "\"\ntimeout_ms = 25000\nmax_in_flight = 4\nmax_in_flight_per_tenant = 2\n");
  // Two calls of tenant-a (its whole share) and one of tenant-b, held at the downstream together.
  std::vector<int> statuses(3, 0);
  std::vector<std::thread> calls;
  for (size_t i = 0; i < statuses.size(); ++i) {
    calls.emplace_back([&, i] {
      statuses[i] = gw.Invoke("shared.x", {{"input", {{"n", i}}}}, i < 2 ? alice_ : bob_).status;
    });
  }
  const bool all_held = testing::WaitUntil(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return held == 3;
      },
      std::chrono::seconds(10));
  auto [code, table] = all_held ? Cli({"status", "--config", gw.CliConfigPath()}) : std::pair{-1, std::string()};
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  released.notify_all();
  for (auto& t : calls) t.join();
  ASSERT_TRUE(all_held) << "the three calls never held their slots together: the test proves nothing";
  ASSERT_EQ(code, 0) << table;
  EXPECT_THAT(table, HasSubstr("\n  per-tenant share 2: 2 tenant(s) hold slots, the busiest 2 (at its share)\n"))
      << table;
  const size_t first = table.find("per-tenant share");
  EXPECT_EQ(table.find("per-tenant share", first + 1), std::string::npos) << "a connector without a share: " << table;
  for (int status : statuses) EXPECT_EQ(status, 200);
}

// Item 3: a refused close says what was checked and what it answered, in the CLI's words.
TEST_F(OperatorViewTest, ARefusedCloseNamesTheHealthCheckAndTheFlag) {
  crm_.set_behavior([](const FakeDownstream::Request&) { return Reply{503, R"({"down":true})"}; });
  GatewayProcess& gw = Start();
  ASSERT_EQ(gw.Admin("POST", "/admin/connectors/crm/breaker/open", Audit().dump()).status, 200);
  auto [code, out] =
      Cli({"breaker", "close", "crm", "--reason", "r", "--requested-by", "me", "--config", gw.CliConfigPath()});
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("health check GET " + crm_.base_url() + "/health failed (HTTP 503)"));
  EXPECT_THAT(out, HasSubstr("--force"));
  EXPECT_THAT(out, Not(HasSubstr("force\": true")));
}

// Item 4: with [log] format = "json", every line of the run is a JSON object; a breaker transition,
// a kill switch, a manual close (with the previous state and generation) and the access log are
// lines of their own; a no-op close writes nothing; a restart says what it restored. No token.
TEST_F(OperatorViewTest, JsonLogLinesSayWhatChanged) {
  crm_.set_behavior([](const FakeDownstream::Request&) { return Reply{200, R"({"ok":true})"}; });
  const std::string log_config = "[log]\nformat = \"json\"\naccess = true\n";
  GatewayProcess& gw = Start(log_config);
  auto invoked = gw.Invoke("crm.lookup", {{"input", {{"n", 1}}}}, alice_);
  ASSERT_EQ(invoked.status, 200) << invoked.body;
  const std::string execution_id = Body(invoked)["execution_id"];
  json kill = Audit("stop tenant-x");
  kill["scope"] = "tenant";
  kill["key"] = "tenant-x";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", kill.dump()).status, 200);
  ASSERT_EQ(gw.Admin("POST", "/admin/connectors/crm/breaker/open", Audit("maintenance").dump()).status, 200);
  json limit = Audit("crm asked for fewer connections");
  limit["max_in_flight"] = 3;
  auto limited = gw.Admin("PUT", "/admin/connectors/crm/limits", limit.dump());
  ASSERT_EQ(limited.status, 200) << limited.body;
  auto closed = gw.Admin("POST", "/admin/connectors/crm/breaker/close", Audit("done").dump());
  ASSERT_EQ(closed.status, 200) << closed.body;
  EXPECT_EQ(Body(closed)["changed"], true);
  auto again = gw.Admin("POST", "/admin/connectors/crm/breaker/close", Audit("again").dump());
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(Body(again)["changed"], false);
  const json audit = Body(gw.Admin("GET", "/admin/audit?limit=50"));
  int manual_closes = 0;
  for (const auto& e : audit["events"]) {
    if (e["type"] != "CIRCUIT_MANUALLY_CLOSED") continue;
    ++manual_closes;
    EXPECT_EQ(e["data"]["previous_state"], "FORCED_OPEN");
    EXPECT_EQ(e["data"]["previous_generation"].get<int64_t>() + 1, e["data"]["generation"].get<int64_t>());
  }
  EXPECT_EQ(manual_closes, 1) << audit;  // the second close was a no-op
  // ... and wrote nothing: the breaker's generation is the one the real close left.
  EXPECT_EQ(Body(again)["breaker"]["generation"], Body(closed)["breaker"]["generation"]);
  const json connectors = Body(gw.Admin("GET", "/admin/connectors"));
  for (const auto& c : connectors["connectors"]) {
    if (c["id"] == "crm") {
      EXPECT_EQ(c["breaker"]["generation"], Body(closed)["breaker"]["generation"]);
    }
  }
  gw.Terminate();
  GatewayProcess& restarted = Start(log_config);
  restarted.Terminate();

  std::vector<json> lines;
  for (const auto* g : {&gw, &restarted}) {
    std::istringstream in(g->Log());
    for (std::string line; std::getline(in, line);) {
      json j = json::parse(line, nullptr, false);
      ASSERT_TRUE(j.is_object()) << "not a JSON object: " << line;
      EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
      EXPECT_THAT(line, Not(HasSubstr(alice_)));
      lines.push_back(j);
    }
  }
  auto find = [&](const std::string& event, auto pred) -> json {
    for (const auto& j : lines) {
      if (j.value("event", "") == event && pred(j)) return j;
    }
    return nullptr;
  };
  const json opened = find("breaker_transition", [](const json& j) { return j["to"] == "FORCED_OPEN"; });
  ASSERT_FALSE(opened.is_null());
  EXPECT_EQ(opened["connector"], "crm");
  EXPECT_EQ(opened["from"], "CLOSED");
  EXPECT_EQ(opened["cause"], "forced_open");
  const json manual = find("circuit_manually_closed", [](const json&) { return true; });
  ASSERT_FALSE(manual.is_null());
  int manual_lines = 0, manual_transitions = 0;
  for (const auto& j : lines) {
    manual_lines += j.value("event", "") == "circuit_manually_closed";
    manual_transitions += j.value("event", "") == "breaker_transition" && j.value("cause", "") == "manual_close";
  }
  EXPECT_EQ(manual_lines, 1) << "a no-op close logs nothing";
  EXPECT_EQ(manual_transitions, 1) << "a no-op close is no transition";
  EXPECT_EQ(manual["previous_generation"].get<int64_t>() + 1, manual["generation"].get<int64_t>());
  EXPECT_EQ(manual["previous_state"], "FORCED_OPEN");
  EXPECT_EQ(manual["actor"], "admin:oncall@acme");
  EXPECT_EQ(manual["reason"], "done");
  const json switched = find("kill_switch_set", [](const json&) { return true; });
  ASSERT_FALSE(switched.is_null());
  EXPECT_EQ(switched["scope"], "tenant");
  EXPECT_EQ(switched["key"], "tenant-x");
  EXPECT_EQ(switched["reason"], "stop tenant-x");
  const json limit_changed = find("limit_changed", [](const json&) { return true; });
  ASSERT_FALSE(limit_changed.is_null());
  EXPECT_EQ(limit_changed["connector_id"], "crm");
  EXPECT_EQ(limit_changed["from"], 8);  // the config's max_in_flight
  EXPECT_EQ(limit_changed["to"], 3);
  EXPECT_EQ(limit_changed["actor"], "admin:oncall@acme");
  EXPECT_EQ(limit_changed["reason"], "crm asked for fewer connections");
  EXPECT_THAT(limit_changed.value("msg", ""), HasSubstr("LIMIT_CHANGED"));
  const json access = find("http_request", [](const json& j) { return j["listener"] == "public"; });
  ASSERT_FALSE(access.is_null());
  EXPECT_EQ(access["route"], "/v1/tools/{tool_name}/invoke");
  EXPECT_EQ(access["method"], "POST");
  EXPECT_EQ(access["status"], 200);
  EXPECT_EQ(access["tenant"], "tenant-a");
  EXPECT_EQ(access["execution_id"], execution_id);
  EXPECT_TRUE(access["latency_ms"].is_number());
  const json restored = find("restored_state", [](const json& j) { return !j["kill_switches"].empty(); });
  ASSERT_FALSE(restored.is_null());
  EXPECT_EQ(restored["kill_switches"][0]["key"], "tenant-x");
}

// Item 5: the new metric families.
TEST_F(OperatorViewTest, MetricsHaveBuildProcessHttpKillSwitchAndCooldownFamilies) {
  crm_.set_behavior([](const FakeDownstream::Request&) { return Reply{200, R"({"ok":true})"}; });
  GatewayProcess& gw = Start();
  ASSERT_EQ(gw.Invoke("crm.lookup", {{"input", json::object()}}, alice_).status, 200);
  json kill = Audit();
  kill["scope"] = "tenant";
  kill["key"] = "tenant-b";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", kill.dump()).status, 200);
  bool blocked = false;
  for (int i = 0; i < 100 && !blocked; ++i)
    blocked = gw.Invoke("crm.lookup", {{"input", json::object()}}, bob_).status == 403;
  ASSERT_TRUE(blocked);
  const std::string metrics = gw.Admin("GET", "/metrics").body;
  for (const char* family :
       {"toolgate_build_info{", "process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
        "process_start_time_seconds ",
        "toolgate_http_responses_total{code=\"200\",listener=\"public\",route=\"/v1/tools/{tool_name}/invoke\"}",
        "toolgate_kill_switches_active{scope=\"tenant\"} 1", "toolgate_kill_switches_active{scope=\"global\"} 0",
        "toolgate_breaker_cooldown_remaining_seconds{connector=\"crm\"} 0",
        "toolgate_blocked_total{connector=\"crm\",scope=\"tenant\"} 1"}) {
    EXPECT_THAT(metrics, HasSubstr(family));
  }
  EXPECT_THAT(metrics, ::testing::ContainsRegex(
                           "toolgate_build_info\\{revision=\"[0-9a-f]+|unknown\",version=\"[0-9.]+\"\\} 1"));
  // What a listener answers itself, before any route, is counted too (route "unrouted").
  const auto too_big = gw.Public("POST", "/v1/tools/crm.lookup/invoke", std::string(2 << 20, 'x'), alice_);
  ASSERT_EQ(too_big.status, 413) << too_big.body;
  EXPECT_THAT(gw.Admin("GET", "/metrics").body,
              HasSubstr("toolgate_http_responses_total{code=\"413\",listener=\"public\",route=\"unrouted\"} 1"));
}

// `dev-token` signs what the gateway checks: with [auth] issuer and audience set, its token carries
// them and is accepted; a config that is a directory is named as such.
TEST_F(OperatorViewTest, DevTokensCarryTheConfiguredIssuerAndAudience) {
  GatewayProcess& gw = Start("[auth]\nissuer = \"https://idp.example\"\naudience = \"toolgate-api\"\n");
  EXPECT_EQ(gw.Public("GET", "/v1/executions", "", alice_).status, 401) << "a token without iss/aud";
  auto [code, out] = Cli({"dev-token", "--tenant", "tenant-a", "--config", gw.config_path()});
  ASSERT_EQ(code, 0) << out;
  const std::string token = out.substr(0, out.find('\n'));
  EXPECT_EQ(gw.Public("GET", "/v1/executions", "", token).status, 200) << token;
  auto [dir_code, dir_out] = Cli({"status", "--config", dir_.file(".")});
  EXPECT_NE(dir_code, 0);
  EXPECT_THAT(dir_out, HasSubstr("is a directory")) << dir_out;
}

// A port already taken: the error names the listener and its address, not only "address in use".
TEST_F(OperatorViewTest, AListenerThatCannotBindIsNamedWithItsAddress) {
  GatewayProcess& gw = Start();
  std::ifstream in(gw.config_path());
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string taken = "127.0.0.1:" + std::to_string(gw.public_port());
  const size_t at = config.find("listen = \"127.0.0.1:0\"");
  ASSERT_NE(at, std::string::npos) << config;
  config.replace(at, std::string("listen = \"127.0.0.1:0\"").size(), "listen = \"" + taken + "\"");
  const std::string path = dir_.file("taken.toml");
  std::ofstream(path) << config;
  auto [code, out] = Cli({"serve", "--config", path});
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("cannot listen on server.listen " + taken + ": ")) << out;
}

// An HS256 secret (and an MCP session secret) shorter than RFC 7518's 256 bits is refused at start,
// naming the variable and the length: one token it signed is enough to search for it offline, and
// with it to sign any tenant's token. 32 bytes start.
TEST_F(OperatorViewTest, AnHs256SecretShorterThan32BytesIsRefusedAtStart) {
  const std::string path = dir_.file("weak.toml");
  std::ofstream(path) << testing::BaseConfig(dir_.file("weak.db")) + "[connectors.crm]\nbase_url = \"" +
                             crm_.base_url() + "\"\n";
  setenv("TOOLGATE_JWT_SECRET", "a", 1);
  auto [code, out] = Cli({"serve", "--config", path});
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("$TOOLGATE_JWT_SECRET must hold a secret of at least 32 bytes")) << out;
  EXPECT_THAT(out, HasSubstr("it holds 1")) << out;
  const std::string weak = "weak-secret-of-31-bytes-0123456";
  ASSERT_EQ(weak.size(), 31u);
  setenv("TOOLGATE_JWT_SECRET", weak.c_str(), 1);
  auto [weak_code, weak_out] = Cli({"serve", "--config", path});
  EXPECT_EQ(weak_code, 1) << weak_out;
  EXPECT_THAT(weak_out, HasSubstr("at least 32 bytes (RFC 7518 section 3.2); it holds 31")) << weak_out;
  EXPECT_THAT(weak_out, Not(HasSubstr(weak))) << "the secret itself is never printed";

  const std::string mcp_path = dir_.file("weak_mcp.toml");
  std::ofstream(mcp_path) << testing::BaseConfig(dir_.file("weak.db")) + "[connectors.crm]\nbase_url = \"" +
                                 crm_.base_url() + "\"\n[mcp]\nsession_secret_env = \"TOOLGATE_TEST_MCP_KEY\"\n";
  setenv("TOOLGATE_JWT_SECRET", testing::kJwtSecret, 1);
  setenv("TOOLGATE_TEST_MCP_KEY", "short", 1);
  auto [mcp_code, mcp_out] = Cli({"serve", "--config", mcp_path});
  EXPECT_EQ(mcp_code, 1) << mcp_out;
  EXPECT_THAT(mcp_out, HasSubstr("TOOLGATE_TEST_MCP_KEY, which must hold a secret of at least 32 bytes")) << mcp_out;
  setenv("TOOLGATE_TEST_MCP_KEY", weak.c_str(), 1);
  auto [weak_mcp_code, weak_mcp_out] = Cli({"serve", "--config", mcp_path});
  EXPECT_EQ(weak_mcp_code, 1) << weak_mcp_out;
  EXPECT_THAT(weak_mcp_out, HasSubstr("TOOLGATE_TEST_MCP_KEY, which must hold a secret of at least 32 bytes"));
  EXPECT_THAT(weak_mcp_out, Not(HasSubstr(weak)));
  unsetenv("TOOLGATE_TEST_MCP_KEY");
  ASSERT_GE(std::string(testing::kJwtSecret).size(), 32u);
  GatewayProcess& ok = Start();  // the suite's secret: starts
  EXPECT_EQ(ok.Public("GET", "/readyz").status, 200);
}

// A store that is not there is created, said as a warning: on a first start that is expected; after
// a volume did not mount it is every execution, ledger event and kill switch gone. With
// `store.create_if_missing = false` such a start is refused and nothing is created; a store that is
// there is served as ever.
TEST_F(OperatorViewTest, WithCreateIfMissingFalseAMissingStoreIsRefusedNotCreated) {
  const std::string missing = dir_.file("unmounted/toolgate.db");
  const std::string path = dir_.file("strict.toml");
  std::ofstream(path) << testing::WithKeys(
      testing::BaseConfig(missing) + "[connectors.crm]\nbase_url = \"" + crm_.base_url() + "\"\n", "[store]",
      "create_if_missing = false\n");
  setenv("TOOLGATE_JWT_SECRET", testing::kJwtSecret, 1);  // as GatewayProcess::Start does: serve needs it first
  auto [code, out] = Cli({"serve", "--config", path});
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("no store at " + missing + " and store.create_if_missing = false")) << out;
  EXPECT_FALSE(std::filesystem::exists(missing));
  EXPECT_FALSE(std::filesystem::exists(dir_.file("unmounted"))) << "not even its directory";
  // `store init` is the command that creates a store on purpose: it does, whatever the key says, and
  // serve then starts on it.
  auto [init_code, init_out] = Cli({"store", "init", "--config", path});
  EXPECT_EQ(init_code, 0) << init_out;
  EXPECT_TRUE(std::filesystem::exists(missing)) << init_out;
  auto [check_code, check_out] = Cli({"store", "check", "--config", path});
  EXPECT_EQ(check_code, 0) << check_out;

  GatewayProcess& created = Start();  // the default: created, with a warning
  EXPECT_THAT(created.Log(), HasSubstr("no store at " + dir_.file("store.db") + ": creating a new, empty one"));
  created.Terminate();
  GatewayProcess again(testing::WithKeys(Config(), "[store]", "create_if_missing = false\n"), dir_, "again");
  ASSERT_TRUE(again.Start()) << "a store that is there is served";
  EXPECT_THAT(again.Log(), Not(HasSubstr("creating a new, empty one")));
}

// Text log lines hold no control byte a terminal would act on (`tail -f`): a client's path and an
// operator's audit fields arrive escaped, ESC as \x1b, on one line each; and a value holding a space
// or `=` is quoted, so `status=200 tenant=acme` in a path reads as the path, not as fields. Audit
// fields with control characters are refused (they are shown in operators' terminals), and the
// refusal's own record and log line carry them escaped.
TEST_F(OperatorViewTest, TextLogLinesCarryNoControlBytesFromClients) {
  GatewayProcess& gw = Start("[log]\naccess = true\n");
  EXPECT_EQ(gw.Public("GET", "/x%1b%5b2J%1b%5b31mFAKE%07").status, 404);
  EXPECT_EQ(gw.Public("GET", "/x%20status=200%20tenant=acme").status, 404);
  json kill = Audit("stop\r\nFAKE LINE");
  kill["requested_by"] = "eve\x1b[2J";
  kill["scope"] = "tenant";
  kill["key"] = "tenant-x";
  const auto refused = gw.Admin("PUT", "/admin/kill-switches", kill.dump());
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_EQ(Body(refused)["error"], "invalid_request");
  kill["requested_by"] = "eve";
  EXPECT_EQ(gw.Admin("PUT", "/admin/kill-switches", kill.dump()).status, 400) << "the reason alone is refused too";
  EXPECT_EQ(Body(gw.Admin("GET", "/admin/kill-switches"))["kill_switches"].size(), 0u);
  gw.Terminate();
  const std::string log = gw.Log();
  for (char c : log) {
    const auto u = static_cast<unsigned char>(c);
    ASSERT_FALSE((u < 0x20 && c != '\n') || u == 0x7f) << "control byte " << int{u} << " in the log:\n" << log;
  }
  EXPECT_THAT(log, HasSubstr("/x\\x1b[2J\\x1b[31mFAKE\\x07")) << log;
  EXPECT_THAT(log, HasSubstr("eve\\x1b[2J")) << log;
  EXPECT_THAT(log, Not(HasSubstr("\nFAKE LINE"))) << log;
  EXPECT_THAT(log, HasSubstr("path=\"/x status=200 tenant=acme\"")) << log;
}

// Item 6: the OpenAPI document lists exactly the routes of the routing table, and the server answers
// every route of the table (an id that does not exist is a 404 of that route, never "no such route").
TEST_F(OperatorViewTest, TheOpenApiDocumentAndTheRouteTableAgree) {
  std::ifstream in(std::string(TOOLGATE_SOURCE_DIR) + "/docs/openapi.json");
  const json doc = json::parse(in, nullptr, false);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["openapi"], "3.1.0");
  std::set<std::string> documented, routed;
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      if (!op.is_object() || !op.contains("tags")) continue;
      for (const auto& tag : op["tags"]) {
        documented.insert(tag.get<std::string>() + " " + Upper(method) + " " + path);
      }
    }
  }
  for (const api::RouteSpec& r : api::Routes()) {
    routed.insert(std::string(r.listener) + " " + std::string(r.method) + " " + std::string(r.pattern));
  }
  EXPECT_EQ(documented, routed);

  crm_.set_behavior([](const FakeDownstream::Request&) { return Reply{200, R"({"ok":true})"}; });
  GatewayProcess& gw = Start();
  const std::string token = Token("tenant-a", {"admin"});
  for (const api::RouteSpec& r : api::Routes()) {
    std::string target(r.pattern);
    for (auto [param, value] :
         std::vector<std::pair<std::string, std::string>>{{"{tool_name}", "crm.lookup"},
                                                          {"{execution_id}", "01900000-0000-7000-8000-000000000000"},
                                                          {"{connector_id}", "nope"},
                                                          {"{scope}", "tenant"},
                                                          {"{key}", "t1"},
                                                          {"{job_id}", "j1"}}) {
      if (auto at = target.find(param); at != std::string::npos) target.replace(at, param.size(), value);
    }
    const int port = r.listener == "public" ? gw.public_port() : gw.admin_port();
    const std::string body = r.method == "GET" || (r.method == "DELETE" && r.listener == "public") ? "" : "{}";
    auto res = gw.Call(port, std::string(r.method), target, body, r.listener == "public" ? token : "");
    EXPECT_EQ(api::MatchRoute(r.listener, r.method, target), r.pattern);
    EXPECT_THAT(res.body, Not(HasSubstr("no such route"))) << r.method << " " << target;
    EXPECT_NE(res.status, 0) << r.method << " " << target;
  }
  // And the other way round: a method the table does not list for a path is not served (405, or
  // 404 "no such route"), so no route is answered without being in the table and the document.
  std::set<std::pair<std::string, std::string>> listed;
  for (const api::RouteSpec& r : api::Routes())
    listed.emplace(std::string(r.listener) + " " + std::string(r.method), r.pattern);
  for (const api::RouteSpec& r : api::Routes()) {
    for (const char* method : {"GET", "POST", "PUT", "DELETE", "PATCH"}) {
      if (listed.count({std::string(r.listener) + " " + method, std::string(r.pattern)})) continue;
      std::string target(r.pattern);
      for (auto [param, value] :
           std::vector<std::pair<std::string, std::string>>{{"{tool_name}", "crm.lookup"},
                                                            {"{execution_id}", "01900000-0000-7000-8000-000000000000"},
                                                            {"{connector_id}", "crm"},
                                                            {"{scope}", "tenant"},
                                                            {"{key}", "t1"},
                                                            {"{job_id}", "j1"}}) {
        if (auto at = target.find(param); at != std::string::npos) target.replace(at, param.size(), value);
      }
      const int port = r.listener == "public" ? gw.public_port() : gw.admin_port();
      auto res =
          gw.Call(port, method, target, std::string(method) == "GET" ? "" : "{}", r.listener == "public" ? token : "");
      const bool unrouted =
          res.status == 405 || (res.status == 404 && res.body.find("no such route") != std::string::npos);
      EXPECT_TRUE(unrouted) << r.listener << " " << method << " " << target
                            << " is served but not in the route table: " << res.status << " " << res.body;
    }
  }
  EXPECT_EQ(api::MatchRoute("public", "GET", "/v1/nope"), "other");
  EXPECT_EQ(api::MatchRoute("admin", "DELETE", "/admin/kill-switches/tenant_action/t1/email.send"),
            "/admin/kill-switches/{scope}/{key}");

  // Each listener serves its own operations.
  for (auto [listener, port] : {std::pair{"public", gw.public_port()}, std::pair{"admin", gw.admin_port()}}) {
    const json served = Body(gw.Call(port, "GET", "/openapi.json"));
    ASSERT_TRUE(served.is_object()) << listener;
    for (const auto& [path, item] : served["paths"].items()) {
      for (const auto& [method, op] : item.items()) {
        if (op.is_object() && op.contains("tags")) {
          EXPECT_THAT(op["tags"].dump(), HasSubstr(std::string("\"") + listener + "\"")) << path;
        }
      }
    }
    EXPECT_EQ(served["paths"].contains("/mcp"), std::string(listener) == "public");
    EXPECT_EQ(served["paths"].contains("/admin/status"), std::string(listener) == "admin");
  }
}

// §17.9: every admin write the route table lists, refused after authentication (a bad body, an
// unknown connector, a refused close), leaves one ADMIN_REQUEST_REFUSED naming its route; the same
// writes without the token (401) leave none.
TEST_F(OperatorViewTest, EveryAdminWriteRouteAuditsARefusalAfterAuthenticationButNotA401) {
  crm_.set_behavior([](const FakeDownstream::Request&) { return Reply{503, R"({"down":true})"}; });
  constexpr char kAdminToken[] = "operator-view-admin-token";
  setenv("TOOLGATE_TEST_ADMIN_TOKEN", kAdminToken, 1);
  std::string config = Config();
  config = testing::WithKeys(config, "[admin]", "admin_token_env = \"TOOLGATE_TEST_ADMIN_TOKEN\"\n");
  GatewayProcess gw(config, dir_, "audited");
  ASSERT_TRUE(gw.Start());
  auto call = [&](const std::string& method, const std::string& target, const json& body, const std::string& token) {
    return gw.Call(gw.admin_port(), method, target, body.is_null() ? "" : body.dump(), token);
  };
  auto fill = [](std::string target, const std::string& connector) {
    for (auto [param, value] :
         std::vector<std::pair<std::string, std::string>>{{"{connector_id}", connector},
                                                          {"{execution_id}", "01900000-0000-7000-8000-000000000000"},
                                                          {"{scope}", "tenant"},
                                                          {"{key}", "t1"},
                                                          {"{job_id}", "01900000-0000-7000-8000-000000000001"}}) {
      if (auto at = target.find(param); at != std::string::npos) target.replace(at, param.size(), value);
    }
    return target;
  };
  std::multiset<std::string> refused;  // "METHOD route status", one per refusal made
  int write_routes = 0;
  for (const api::RouteSpec& r : api::Routes()) {
    if (r.listener != "admin" || r.method == "GET") continue;
    ++write_routes;
    const std::string method(r.method), route(r.pattern);
    const std::string target = fill(route, "crm");
    // Not authenticated: refused, never audited.
    EXPECT_EQ(call(method, target, json::object(), "").status, 401) << route;
    EXPECT_EQ(call(method, target, json::object(), "not-the-admin-token").status, 401) << route;
    // Authenticated, a body without reason/requested_by: refused (400, or 404 for what is not there).
    auto bad = call(method, target, json::object(), kAdminToken);
    EXPECT_GE(bad.status, 400) << method << " " << target << " " << bad.body;
    EXPECT_LT(bad.status, 500) << method << " " << target << " " << bad.body;
    refused.insert(method + " " + route + " " + std::to_string(bad.status));
    if (route.find("{connector_id}") != std::string::npos) {  // an unknown connector: 404
      const json audited = {{"reason", "r"}, {"requested_by", "oncall@acme"}, {"max_in_flight", 5}};
      auto unknown = call(method, fill(route, "nope"), audited, kAdminToken);
      EXPECT_EQ(unknown.status, 404) << route << " " << unknown.body;
      refused.insert(method + " " + route + " 404");
    }
  }
  EXPECT_GE(write_routes, 9);
  // A refused close (409): the health check fails.
  auto close = call("POST", "/admin/connectors/crm/breaker/close", Audit("crm is back"), kAdminToken);
  ASSERT_EQ(close.status, 409) << close.body;
  refused.insert("POST /admin/connectors/{connector_id}/breaker/close 409");

  auto audit = call("GET", "/admin/audit?limit=1000", json(), kAdminToken);
  ASSERT_EQ(audit.status, 200);
  std::multiset<std::string> audited;
  json close_refusal;
  const json events = Body(audit);  // bound: a loop over a temporary's member would outlive it
  for (const auto& e : events["events"]) {
    if (e["type"] != "ADMIN_REQUEST_REFUSED") continue;
    const json& d = e["data"];
    audited.insert(d["method"].get<std::string>() + " " + d["route"].get<std::string>() + " " + d["status"].dump());
    if (d["status"] == 409) close_refusal = e;
  }
  EXPECT_EQ(audited, refused);
  ASSERT_TRUE(close_refusal.is_object());
  EXPECT_EQ(close_refusal["actor"], "admin:oncall@acme");
  EXPECT_EQ(close_refusal["data"]["reason"], "crm is back");
  EXPECT_EQ(close_refusal["data"]["error"], "connector_unhealthy");
  EXPECT_THAT(close_refusal["data"]["message"].get<std::string>(), HasSubstr(crm_.base_url() + "/health"));
  unsetenv("TOOLGATE_TEST_ADMIN_TOKEN");
}

// Runbook walkthrough: one operator's actions — a forced breaker, a refused close, a limit, a kill
// switch set and cleared, a replay — are audited under one actor, admin:<requested_by> (successful
// changes were operator:<requested_by>, the rest admin:<requested_by>).
TEST_F(OperatorViewTest, OneOperatorsActionsAreAuditedUnderOneActor) {
  std::atomic<bool> healthy{false};
  crm_.set_behavior([&healthy](const FakeDownstream::Request& r) {
    if (r.path == "/health") return healthy ? Reply{200, "{}"} : Reply{503, "{}"};
    return Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start();
  const std::string id = Body(gw.Invoke("crm.x", {{"input", json::object()}}, alice_))["execution_id"];
  ASSERT_EQ(gw.Admin("POST", "/admin/connectors/crm/breaker/open", Audit().dump()).status, 200);
  ASSERT_EQ(gw.Admin("POST", "/admin/connectors/crm/breaker/close", Audit().dump()).status, 409);
  healthy = true;
  ASSERT_EQ(gw.Admin("POST", "/admin/connectors/crm/breaker/close", Audit().dump()).status, 200);
  json limit = Audit();
  limit["max_in_flight"] = 3;
  ASSERT_EQ(gw.Admin("PUT", "/admin/connectors/crm/limits", limit.dump()).status, 200);
  json kill = Audit();
  kill["scope"] = "tenant";
  kill["key"] = "tenant-x";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", kill.dump()).status, 200);
  ASSERT_EQ(gw.Admin("DELETE", "/admin/kill-switches/tenant/tenant-x", Audit().dump()).status, 200);
  const json replay = {{"replay_reason", "incident 7"}, {"requested_by", "oncall@acme"}};
  auto replayed = gw.Admin("POST", "/admin/executions/" + id + "/replay", replay.dump());
  ASSERT_EQ(replayed.status, 200) << replayed.body;

  const json audit = Body(gw.Admin("GET", "/admin/audit?limit=100"));
  std::set<std::string> actors, types;
  for (const auto& e : audit["events"]) {
    if (e["actor"] == "system") continue;
    actors.insert(e["actor"].get<std::string>());
    types.insert(e["type"].get<std::string>());
  }
  EXPECT_EQ(actors, std::set<std::string>{"admin:oncall@acme"}) << audit;
  EXPECT_EQ(types,
            (std::set<std::string>{"ADMIN_REQUEST_REFUSED", "CIRCUIT_FORCED_OPEN", "CIRCUIT_MANUALLY_CLOSED",
                                   "EXECUTION_REPLAYED", "KILL_SWITCH_CLEARED", "KILL_SWITCH_SET", "LIMIT_CHANGED"}))
      << audit;
  // The replay's own ledger names the same actor.
  const json replay_record =
      Body(gw.Public("GET", "/v1/executions/" + Body(replayed)["execution_id"].get<std::string>(), "", alice_));
  ASSERT_FALSE(replay_record["events"].empty()) << replay_record;
  EXPECT_EQ(replay_record["events"][0]["actor"], "admin:oncall@acme") << replay_record;
}

// Item 2: who set an operator's limit and why, in `status` (JSON and table, live and from the
// store), `limits list` and the dashboard, next to who forced a breaker open; gone once the limit
// is handed back to the config.
TEST_F(OperatorViewTest, StatusShowsWhoSetALimitAndWhyNextToWhoForcedTheBreaker) {
  crm_.set_behavior([](const FakeDownstream::Request&) { return Reply{200, R"({"ok":true})"}; });
  GatewayProcess& gw = Start();
  const std::string config = gw.CliConfigPath();
  // One call, so that the dashboard has a series to draw (the SLO evaluation runs every 200 ms).
  ASSERT_EQ(gw.Invoke("crm.lookup", {{"input", json::object()}}, alice_).status, 200);
  bool drawn = false;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!drawn && std::chrono::steady_clock::now() < give_up) {
    const json series = Body(gw.Admin("GET", "/admin/series"));
    drawn =
        series.contains("connectors") && series["connectors"].contains("crm") && !series["connectors"]["crm"].empty();
    if (!drawn) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(drawn);
  auto [set_code, set_out] = Cli({"limits", "set", "crm", "3", "--reason", "crm asked us to slow down",
                                  "--requested-by", "oncall@acme", "--config", config});
  ASSERT_EQ(set_code, 0) << set_out;
  EXPECT_EQ(JsonOf(set_out)["limit"]["set_by"], "oncall@acme") << set_out;
  ASSERT_EQ(gw.Admin("POST", "/admin/connectors/crm/breaker/open", Audit("crm double-charges").dump()).status, 200);
  json kill = Audit("tenant-b is looping");
  kill["scope"] = "tenant";
  kill["key"] = "tenant-b";
  ASSERT_EQ(gw.Admin("PUT", "/admin/kill-switches", kill.dump()).status, 200);

  auto check_status = [&](const std::string& when) {
    auto [code, out] = Cli({"status", "--json", "--config", config});
    ASSERT_EQ(code, 0) << when << out;
    const json doc = JsonOf(out);
    ASSERT_TRUE(doc.is_object()) << when << out;
    for (const auto& c : doc["connectors"]) {
      if (c["id"] == "billing") {
        EXPECT_FALSE(c["limit_set_by_operator"]) << when;
        EXPECT_TRUE(c["limit"].is_null()) << when;
        continue;
      }
      EXPECT_EQ(c["max_in_flight"], 3) << when;
      EXPECT_EQ(c["limit"]["set_by"], "oncall@acme") << when << out;
      EXPECT_EQ(c["limit"]["reason"], "crm asked us to slow down") << when;
      EXPECT_TRUE(c["limit"]["set_at"].is_string()) << when;
      EXPECT_EQ(c["breaker"]["forced_by"], "oncall@acme") << when;
      EXPECT_TRUE(c["breaker"]["forced_at"].is_string()) << when;
    }
    EXPECT_EQ(doc["kill_switches"][0]["reason"], "tenant-b is looping") << when;
    auto [table_code, table] = Cli({"status", "--config", config});
    ASSERT_EQ(table_code, 0) << when << table;
    EXPECT_THAT(table, HasSubstr("limit 3 set by oncall@acme at ")) << when;
    EXPECT_THAT(table, HasSubstr(": crm asked us to slow down (config: 8)")) << when;
    EXPECT_THAT(table, HasSubstr("forced open by oncall@acme at ")) << when;
    EXPECT_THAT(table, HasSubstr("tenant tenant-b by oncall@acme at ")) << when;
    auto [limits_code, limits] = Cli({"limits", "list", "--json", "--config", config});
    ASSERT_EQ(limits_code, 0) << when << limits;
    const json limits_doc = JsonOf(limits);
    for (const auto& l : limits_doc["limits"]) {
      if (l["connector"] != "crm") continue;
      EXPECT_EQ(l["set_by"], "operator") << when;
      EXPECT_EQ(l["requested_by"], "oncall@acme") << when;
      EXPECT_EQ(l["reason"], "crm asked us to slow down") << when;
    }
    auto [limits_table_code, limits_table] = Cli({"limits", "list", "--config", config});
    EXPECT_EQ(limits_table_code, 0);
    EXPECT_THAT(limits_table, HasSubstr("crm asked us to slow down")) << when;
  };
  check_status("live: ");

  // The dashboard shows the same (a browser reads the page as an operator would).
  const json expected = {
      {"breakers", {{"crm", "FORCED_OPEN"}}},
      {"kill_switches", {"tenant-b is looping"}},
      {"texts", {{"limit-crm", "set by oncall@acme at "}, {"forced-crm", "forced open by oncall@acme at "}}}};
  auto [page_code, page] = testing::RunProgram(
      {"/usr/bin/node", std::string(TOOLGATE_NODE_DIR) + "/dashboard_check.js",
       "http://127.0.0.1:" + std::to_string(gw.admin_port()) + "/", expected.dump(), dir_.file("dashboard.png")},
      dir_);
  EXPECT_EQ(page_code, 0) << page;
  EXPECT_THAT(page, HasSubstr("crm asked us to slow down"));

  gw.Terminate();
  check_status("server stopped: ");

  // Handed back to the config: the note goes with it.
  GatewayProcess& again = Start();
  auto reset = again.Admin("DELETE", "/admin/connectors/crm/limits", Audit("crm is fine now").dump());
  ASSERT_EQ(reset.status, 200) << reset.body;
  const json status = Body(again.Admin("GET", "/admin/status"));
  for (const auto& c : status["connectors"]) {
    EXPECT_FALSE(c["limit_set_by_operator"]);
    EXPECT_TRUE(c["limit"].is_null()) << c.dump();
  }
}

// Item 3: every read command of the CLI answers --json (a JSON document on stdout) and a table
// otherwise; those that can read the store do so with the server stopped, and say so.
TEST_F(OperatorViewTest, EveryReadCommandAnswersJsonAndTablesAndReadsTheStoreWhenTheServerIsDown) {
  crm_.set_behavior([](const FakeDownstream::Request& r) {
    return r.body.find("\"fail\"") != std::string::npos ? Reply{500, R"({"error":"boom"})"}
                                                        : Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start();
  const std::string config = gw.CliConfigPath();
  auto failed = gw.Invoke("crm.lookup", {{"input", {{"mode", "fail"}}}}, alice_);
  ASSERT_EQ(failed.status, 502) << failed.body;
  const std::string failed_id = Body(failed)["execution_id"];
  auto ok = gw.Invoke("crm.lookup", {{"input", {{"mode", "ok"}}}}, bob_);
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto job = gw.Admin(
      "POST", "/admin/replays",
      json{{"execution_ids", {failed_id}}, {"replay_reason", "r"}, {"requested_by", "oncall@acme"}, {"rate_per_s", 50}}
          .dump());
  ASSERT_EQ(job.status, 202) << job.body;
  const std::string job_id = Body(job)["job_id"];
  for (int i = 0; i < 200 && Body(gw.Admin("GET", "/admin/replays/" + job_id))["state"] == "RUNNING"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  struct Read {
    std::vector<std::string> args;
    std::string json_key;    // a key of its JSON document
    std::string table_text;  // what its table shows
    bool reads_store_when_down;
  };
  const std::vector<Read> reads = {
      {{"status"}, "connectors", "CALLS", true},
      {{"kill-switch", "list"}, "kill_switches", "no kill switches are set", true},
      {{"limits", "list"}, "limits", "CONNECTOR", true},
      {{"executions", "list"}, "executions", failed_id, true},
      {{"replays", "list"}, "jobs", job_id, true},
      {{"replays", "show", job_id}, "counts", "progress", true},
      {{"ledger", "show", failed_id}, "events", "TOOL_FAILED", true},
      {{"ledger", "verify"}, "ok", "ledger verify: ok", true},
      {{"slo", "status"}, "slos", "CONNECTOR", false},
  };
  auto run = [&](const Read& r, bool as_json, const std::string& when) {
    std::vector<std::string> args = r.args;
    if (as_json) args.push_back("--json");
    args.insert(args.end(), {"--config", config});
    auto [code, out] = Cli(args);
    EXPECT_EQ(code, 0) << when << r.args[0] << " " << out;
    if (as_json) {
      const json doc = JsonOf(out);
      EXPECT_TRUE(doc.is_object() && doc.contains(r.json_key)) << when << r.args[0] << " --json: " << out;
    } else {
      EXPECT_THAT(out, HasSubstr(r.table_text)) << when << r.args[0];
      EXPECT_FALSE(JsonOf(out).is_object()) << when << r.args[0] << " prints a table: " << out;
    }
    return out;
  };
  for (const Read& r : reads) {
    run(r, true, "live: ");
    run(r, false, "live: ");
  }
  const json shown = JsonOf(run(reads[6], true, "live: "));
  ASSERT_FALSE(shown["events"].empty());
  EXPECT_EQ(shown["events"][0]["seq"], 1);
  EXPECT_TRUE(shown["events"][0]["hash"].is_string());
  EXPECT_EQ(shown["chain"]["ok"], true);

  gw.Terminate();
  for (const Read& r : reads) {
    if (!r.reads_store_when_down) continue;
    for (bool as_json : {true, false}) {
      const std::string out = run(r, as_json, "server stopped: ");
      // Commands that ask the listener first say they read the store instead; ledger reads it always.
      if (r.args[0] != "ledger") {
        EXPECT_THAT(out, HasSubstr("admin listener not answering")) << r.args[0];
      }
    }
  }
  auto [listed_code, listed] = Cli({"executions", "list", "--json", "--outcome", "FAILED", "--config", config});
  ASSERT_EQ(listed_code, 0) << listed;
  const json failures = JsonOf(listed);
  ASSERT_EQ(failures["executions"].size(), 2u) << listed;  // the original and its replay (crm still fails)
  std::set<std::string> ids;
  for (const auto& e : failures["executions"]) {
    ids.insert(e["execution_id"].get<std::string>());
    EXPECT_EQ(e["tenant_id"], "tenant-a");
    if (e.contains("replay_of")) {
      EXPECT_EQ(e["replay_of"], failed_id);
    }
  }
  EXPECT_TRUE(ids.count(failed_id)) << listed;
  auto [job_code, job_out] = Cli({"replays", "show", job_id, "--json", "--config", config});
  ASSERT_EQ(job_code, 0) << job_out;
  EXPECT_EQ(JsonOf(job_out)["state"], "DONE") << job_out;
  EXPECT_EQ(JsonOf(job_out)["counts"]["done"], 1) << job_out;
  // slo status needs the listener (the evaluation lives there) and says so.
  auto [slo_code, slo] = Cli({"slo", "status", "--config", config});
  EXPECT_EQ(slo_code, 1);
  EXPECT_THAT(slo, HasSubstr("cannot reach the admin listener"));
}

}  // namespace
}  // namespace toolgate
