// SLOs end to end (design §8): the real binary counts the calls that reach a connector, evaluates the
// burn-rate tiers from the store's fleet-wide counters, and when a tier fires shows it in
// /admin/slo, /admin/connectors and /metrics, writes SLO_ALARM_FIRING to the audit ledger and POSTs
// it to the alert webhook. Counts survive a restart. The dashboard page is served without data.

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "fake_downstream.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"
#include "toolgate/engine/slo_rules.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;

class SloGatewayTest : public ::testing::Test {
 protected:
  std::string Config() {
    return testing::BaseConfig(dir_.file("store.db")) +
           "[slo]\nevaluate_interval_ms = 200\n[alerts]\nwebhook_url = \"" + webhook_.base_url() +
           "/hooks/toolgate\"\n[connectors.crm]\nbase_url = \"" + crm_.base_url() +
           "\"\ntimeout_ms = 1000\n[connectors.crm.breaker]\nfailure_threshold = 1000\n"
           "[connectors.crm.slo]\nerror_target = 0.99\nlatency_threshold_ms = 200\n";
  }
  // Polls `path` on the admin listener until `done` holds (at most ~10 s).
  json AdminUntil(GatewayProcess& gw, const std::string& path, const std::function<bool(const json&)>& done) {
    json last;
    for (int i = 0; i < 100; ++i) {
      last = Body(gw.Admin("GET", path));
      if (done(last)) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << path << " never reached the expected state: " << last.dump();
    return last;
  }
  static const json* Find(const json& slo, const std::string& name) {
    for (const auto& s : slo["slos"]) {
      if (s["connector"] == "crm" && s["slo"] == name) return &s;
    }
    return nullptr;
  }
  static bool PageFiring(const json& slo) {
    const json* s = Find(slo, "tool_error");
    if (s == nullptr) return false;
    for (const auto& a : (*s)["alarms"]) {
      if (a["tier"] == "1h/5m" && a["firing"] == true) return true;
    }
    return false;
  }

  TempDir dir_;
  FakeDownstream crm_, webhook_;
  const std::string alice_ = Token("tenant-a");
};

TEST_F(SloGatewayTest, ErrorsPageThroughEveryChannelAndCountsSurviveARestart) {
  crm_.set_behavior([](const FakeDownstream::Request& r) {
    if (r.path == "/crm.fail") return Reply{503, R"({"error":"down"})"};
    if (r.path == "/crm.reject") return Reply{400, R"({"error":"bad"})"};
    return Reply{};
  });
  // The webhook fails its first delivery: toolgate must retry. Announcements are delivered
  // concurrently, so the failed one is known by its body, not by where the fake recorded it.
  std::mutex hook_mu;
  std::optional<std::string> failed_body;
  webhook_.set_behavior([&hook_mu, &failed_body](const FakeDownstream::Request& r) {
    std::lock_guard lock(hook_mu);
    if (failed_body) return Reply{204, ""};
    failed_body = r.body;
    return Reply{503, "{}"};
  });
  auto gw = std::make_unique<GatewayProcess>(Config(), dir_);
  ASSERT_TRUE(gw->Start());

  // Not firing before any traffic; the shape the design names.
  json slo = AdminUntil(*gw, "/admin/slo", [](const json& j) { return j["evaluated_at"].is_string(); });
  const json* err = Find(slo, "tool_error");
  ASSERT_NE(err, nullptr) << slo.dump();
  EXPECT_DOUBLE_EQ((*err)["target"].get<double>(), 0.99);
  for (const char* w : {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}) EXPECT_TRUE((*err)["burn_rates"].contains(w)) << w;
  ASSERT_EQ((*err)["alarms"].size(), 4u);
  EXPECT_EQ((*err)["alarms"][0]["severity"], "page");
  EXPECT_EQ((*err)["alarms"][3]["severity"], "ticket");
  EXPECT_FALSE(PageFiring(slo));
  EXPECT_EQ((*Find(slo, "tool_latency_ms"))["latency_threshold_ms"], 200);

  // 10 client errors (good for the SLO) and 15 server errors: 25 calls, 60 % bad, burn 60.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(Body(gw->Invoke("crm.reject", {{"input", json::object()}}, alice_))["reason"], "downstream_rejected");
  }
  for (int i = 0; i < 15; ++i) {
    ASSERT_EQ(Body(gw->Invoke("crm.fail", {{"input", json::object()}}, alice_))["reason"], "downstream_error");
  }

  // Firing, and every call counted (the alarm may fire before the last calls are flushed).
  slo = AdminUntil(*gw, "/admin/slo", [](const json& j) {
    const json* e = Find(j, "tool_error");
    return PageFiring(j) && e != nullptr && (*e)["window_events"]["1h"]["total"] == 25;
  });
  err = Find(slo, "tool_error");
  ASSERT_NE(err, nullptr);
  EXPECT_NEAR((*err)["burn_rates"]["5m"].get<double>(), 0.6 / 0.01, 1e-6);
  EXPECT_EQ((*err)["window_events"]["1h"]["total"], 25);
  EXPECT_EQ((*err)["window_events"]["1h"]["bad"], 15);
  EXPECT_LT((*err)["error_budget_remaining"].get<double>(), 0.0);

  const json connectors = Body(gw->Admin("GET", "/admin/connectors"));
  EXPECT_EQ(connectors["connectors"][0]["slo"]["tool_error"]["firing"][0]["severity"], "page") << connectors.dump();

  const std::string metrics = gw->Admin("GET", "/metrics").body;
  EXPECT_THAT(metrics,
              ::testing::HasSubstr(R"(toolgate_slo_alarm{connector="crm",severity="page",slo="tool_error"} 1)"));
  const std::string burn_line = R"(toolgate_slo_burn_rate{connector="crm",slo="tool_error",window="5m"} )";
  const auto at = metrics.find(burn_line);
  ASSERT_NE(at, std::string::npos) << metrics;
  EXPECT_NEAR(std::stod(metrics.substr(at + burn_line.size(), 20)), 60.0, 1e-6);
  EXPECT_THAT(metrics, ::testing::HasSubstr(R"(toolgate_slo_events_total{connector="crm",slo="tool_error"} 25)"));
  EXPECT_THAT(metrics, ::testing::HasSubstr(R"(toolgate_slo_bad_events_total{connector="crm",slo="tool_error"} 15)"));

  const json audit = Body(gw->Admin("GET", "/admin/audit?limit=50"));
  int firing_events = 0;
  for (const auto& e : audit["events"]) {
    if (e["type"] == "SLO_ALARM_FIRING" && e["data"]["tier"] == "1h/5m") {
      ++firing_events;
      EXPECT_EQ(e["actor"], "system");
      EXPECT_EQ(e["data"]["connector_id"], "crm");
    }
  }
  EXPECT_EQ(firing_events, 1) << audit.dump();

  // The webhook got every announcement; the one whose first delivery failed was delivered again
  // (asynchronous, with backoff: wait, bounded).
  // A slower tier may fire meanwhile: the audit is read after the posts, so it names every tier
  // they carry (an announcement is audited before it is delivered).
  auto announced_in = [](const json& events) {
    std::set<std::string> tiers;
    for (const auto& e : events["events"]) {
      if (e["type"] == "SLO_ALARM_FIRING")
        tiers.insert(e["data"]["slo"].get<std::string>() + " " + e["data"]["tier"].get<std::string>());
    }
    return tiers;
  };
  std::set<std::string> announced;
  std::vector<FakeDownstream::Request> posts;
  for (int i = 0; i < 200; ++i) {
    posts = webhook_.requests();
    announced = announced_in(Body(gw->Admin("GET", "/admin/audit?limit=50")));
    if (!announced.empty() && posts.size() >= announced.size() + 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(announced.empty());
  EXPECT_EQ(posts.size(), announced.size() + 1) << "one failed attempt, then each announcement once";
  std::string failed;
  {
    std::lock_guard lock(hook_mu);
    ASSERT_TRUE(failed_body.has_value());
    failed = *failed_body;
  }
  std::multiset<std::string> delivered;  // every post but the one answered 503
  bool skipped_failed = false;
  for (const auto& post : posts) {
    if (!skipped_failed && post.body == failed) {
      skipped_failed = true;
      continue;
    }
    const json j = json::parse(post.body, nullptr, false);
    EXPECT_EQ(post.method, "POST");
    ASSERT_TRUE(j.is_object()) << post.body;
    EXPECT_EQ(j["event"], "SLO_ALARM_FIRING");
    EXPECT_EQ(j["connector_id"], "crm");
    delivered.insert(j["slo"].get<std::string>() + " " + j["tier"].get<std::string>());
  }
  ASSERT_TRUE(skipped_failed);
  EXPECT_EQ(std::set<std::string>(delivered.begin(), delivered.end()), announced);
  EXPECT_EQ(delivered.size(), announced.size()) << "each announcement delivered once, the failed one again";
  const json failed_json = json::parse(failed, nullptr, false);
  ASSERT_TRUE(failed_json.is_object()) << failed;
  EXPECT_EQ(delivered.count(failed_json["slo"].get<std::string>() + " " + failed_json["tier"].get<std::string>()), 1u)
      << "the announcement answered 503 was delivered again";
  EXPECT_TRUE(delivered.count("tool_error 1h/5m"));

  // The CLI reads the same document.
  const auto [cli_code, cli_out] = testing::RunCli({"slo", "status", "--config", gw->CliConfigPath()}, dir_);
  EXPECT_EQ(cli_code, 0) << cli_out;
  EXPECT_THAT(cli_out, ::testing::ContainsRegex("crm +tool_error .* page 1h/5m"));
  EXPECT_THAT(cli_out, ::testing::ContainsRegex("crm +tool_latency_ms .* -"));

  const json series = Body(gw->Admin("GET", "/admin/series"));
  ASSERT_EQ(series["connectors"]["crm"].size(), 60u) << series.dump();
  int64_t calls = 0;
  for (const auto& p : series["connectors"]["crm"]) calls += p["calls"].get<int64_t>();
  EXPECT_EQ(calls, 25);

  // A graceful restart: the counts are in the store, the alarm is still firing, and nobody
  // announces it again.
  ASSERT_EQ(gw->Terminate(), 0);
  gw = std::make_unique<GatewayProcess>(Config(), dir_, "gw2");
  ASSERT_TRUE(gw->Start());
  slo = AdminUntil(*gw, "/admin/slo", [](const json& j) { return j["evaluated_at"].is_string(); });
  EXPECT_EQ((*Find(slo, "tool_error"))["window_events"]["1h"]["total"], 25);
  EXPECT_TRUE(PageFiring(slo));
  int firing_after = 0;
  const json audit_after = Body(gw->Admin("GET", "/admin/audit?limit=100"));
  SCOPED_TRACE(audit_after.dump());
  for (const auto& e : audit_after["events"]) {
    firing_after += e["type"] == "SLO_ALARM_FIRING" && e["data"]["tier"] == "1h/5m" ? 1 : 0;
  }
  EXPECT_EQ(firing_after, 1);

  // The dashboard: one self-contained page (no external resources), served without data.
  const auto page = gw->Admin("GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_THAT(page.body, ::testing::HasSubstr("/admin/slo"));
  for (const char* external : {"src=", "<link", "@import", "url(", "https://"}) {
    EXPECT_THAT(page.body, ::testing::Not(::testing::HasSubstr(external)));
  }
}

TEST_F(SloGatewayTest, AnImpossibleTargetIsRefusedAtStart) {
  const std::string config = testing::BaseConfig(dir_.file("store.db")) + "[connectors.crm]\nbase_url = \"" +
                             crm_.base_url() + "\"\n[connectors.crm.slo]\nlatency_target = 0.9\n";
  GatewayProcess gw(config, dir_);
  setenv("TOOLGATE_JWT_SECRET", testing::kJwtSecret, 1);
  const auto [code, output] = testing::RunCli({"serve", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(output, ::testing::HasSubstr("connectors.crm.slo.latency_target"));
  EXPECT_THAT(output, ::testing::HasSubstr("1h/5m"));
}

}  // namespace
}  // namespace toolgate

namespace toolgate {
namespace {

constexpr char kPromtool[] = "/usr/bin/promtool";

// `toolgate slo rules` for a config of `toml`, written to rules.yml in `dir`: the rules' text.
std::string RulesFor(const testing::TempDir& dir, const std::string& toml) {
  EXPECT_EQ(access(kPromtool, X_OK), 0) << "promtool is missing: scripts/install-deps.sh installs Debian's prometheus";
  const std::string config = dir.file("t.toml");
  FILE* f = fopen(config.c_str(), "w");
  fputs(toml.c_str(), f);
  fclose(f);
  auto [code, rules] = testing::RunCli({"slo", "rules", "--config", config}, dir);
  EXPECT_EQ(code, 0) << rules;
  f = fopen(dir.file("rules.yml").c_str(), "w");
  fputs(rules.c_str(), f);
  fclose(f);
  return rules;
}

// An operator's runbook_url with quotes and backslashes stays one YAML string: promtool still
// accepts the rules, and the annotation holds the URL as written.
TEST(SloRulesTest, ARunbookUrlWithQuotesStaysOneString) {
  testing::TempDir dir;
  const std::string rules = RulesFor(dir,
                                     "[alerts]\nrunbook_url = 'https://wiki.example/runbooks#\"toolgate\"\\x'\n"
                                     "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n");
  EXPECT_THAT(rules, ::testing::HasSubstr(R"(runbook_url: "https://wiki.example/runbooks#\"toolgate\"\\x")"));
  auto [check_code, check_out] = testing::RunProgram({kPromtool, "check", "rules", dir.file("rules.yml")}, dir);
  EXPECT_EQ(check_code, 0) << check_out;
}

// `toolgate slo rules` prints rules promtool accepts, and promtool's own rule tests show they alert
// as the built-in tiers do: nothing on healthy traffic; at 60 % errors for ten minutes (target
// 99.5 %), the 6h/30m page after five minutes and both pages after ten.
TEST(SloRulesTest, PromtoolAcceptsTheRulesAndTheyFireAsTheBuiltInTiers) {
  testing::TempDir dir;
  const std::string promtool = kPromtool;
  RulesFor(dir,
           "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n[connectors.billing]\nbase_url = "
           "\"http://127.0.0.1:2\"\n");
  auto [check_code, check_out] = testing::RunProgram({promtool, "check", "rules", dir.file("rules.yml")}, dir);
  EXPECT_EQ(check_code, 0) << check_out;
  EXPECT_THAT(check_out,
              ::testing::HasSubstr("SUCCESS: 27 rules found"));  // 7 + 4 recording; 2 SLOs × 4 tiers × 2 connectors

  // The job label survives the aggregations; the description carries the long window's ratio ({{ $value }}).
  auto alert = [&](const std::string& tier, double factor, const std::string& long_window, const std::string& value,
                   const std::string& threshold) {
    return "          - exp_labels: {job: toolgate, connector: crm, slo: tool_error, severity: page, tier: \"" + tier +
           "\"}\n            exp_annotations:\n              summary: \"" +
           SloAlertSummary("crm", "tool_error", tier, factor) + "\"\n              description: \"Error ratio over " +
           long_window + " is " + value + " (threshold " + threshold +
           "). Check the connector's health and breaker (toolgate status), the downstream's status; scale or back "
           "off.\"\n"
           "              runbook_url: \"docs/operations.md#slo-alarms\"\n";
  };
  // Two instances, 50 calls a minute each; from minute 60 on, 30 of each instance's 50 fail.
  const std::string test =
      "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n"
      "      - series: "
      "'toolgate_slo_events_total{job=\"toolgate\",connector=\"crm\",slo=\"tool_error\",instance=\"a\"}'\n        "
      "values: '0+50x130'\n"
      "      - series: "
      "'toolgate_slo_events_total{job=\"toolgate\",connector=\"crm\",slo=\"tool_error\",instance=\"b\"}'\n        "
      "values: '0+50x130'\n"
      "      - series: "
      "'toolgate_slo_bad_events_total{job=\"toolgate\",connector=\"crm\",slo=\"tool_error\",instance=\"a\"}'\n        "
      "values: '0x60 30+30x70'\n"
      "      - series: "
      "'toolgate_slo_bad_events_total{job=\"toolgate\",connector=\"crm\",slo=\"tool_error\",instance=\"b\"}'\n        "
      "values: '0x60 30+30x70'\n"
      "    alert_rule_test:\n"
      "      - eval_time: 59m\n        alertname: ToolgateSloBurnRatePage\n        exp_alerts: []\n"
      "      - eval_time: 65m\n        alertname: ToolgateSloBurnRatePage\n        exp_alerts:\n" +
      alert("6h/30m", 6, "6h", "4.615%", "0.03") +
      "      - eval_time: 70m\n        alertname: ToolgateSloBurnRatePage\n        exp_alerts:\n" +
      alert("1h/5m", 14.4, "1h", "10%", "0.072") + alert("6h/30m", 6, "6h", "8.571%", "0.03");
  FILE* f = fopen(dir.file("rules_test.yml").c_str(), "w");
  fputs(test.c_str(), f);
  fclose(f);
  auto [test_code, test_out] = testing::RunProgram({promtool, "test", "rules", dir.file("rules_test.yml")}, dir);
  EXPECT_EQ(test_code, 0) << test_out << "\n" << test;
}

}  // namespace
}  // namespace toolgate

namespace toolgate {
namespace {

// The dashboard in a real browser (Debian's Chromium driven by playwright-core): with one
// connector's breaker OPEN and its page alarm firing, a kill switch set and three calls queued behind the open breaker,
// the page shows all four, draws its sparklines, makes no request beyond the admin listener, and leaves a screenshot in
// docs/dashboard-latest.png.
TEST_F(SloGatewayTest, TheDashboardShowsAnOpenBreakerAFiringAlarmAndAKillSwitch) {
  ASSERT_EQ(access("/usr/bin/chromium", X_OK), 0) << "chromium is missing: scripts/install-deps.sh installs it";
  crm_.set_behavior([](const FakeDownstream::Request&) { return Reply{503, R"({"error":"down"})"}; });
  FakeDownstream billing;
  billing.set_behavior([](const FakeDownstream::Request& r) {
    return Reply{200, R"({"ok":true})", {}, r.body.find("slow") != std::string::npos ? 300 : 5};
  });
  const std::string config =
      testing::BaseConfig(dir_.file("store.db")) + "[slo]\nevaluate_interval_ms = 200\n" +
      "[connectors.crm]\nbase_url = \"" + crm_.base_url() +
      "\"\ntimeout_ms = 1000\nmax_in_flight = 16\n[connectors.crm.breaker]\nfailure_threshold = 25\n"
      "window_s = 600\ncooldown_s = 600\n[connectors.billing]\nbase_url = \"" +
      billing.base_url() +
      "\"\ntimeout_ms = 2000\nmax_in_flight = 8\n[connectors.billing.slo]\nlatency_threshold_ms = 250\n";
  GatewayProcess gw(config, dir_);
  ASSERT_TRUE(gw.Start());
  for (int i = 0; i < 30; ++i) gw.Invoke("crm.update_opportunity", {{"input", {{"id", i}}}}, alice_);
  for (int i = 0; i < 40; ++i) {
    gw.Invoke("billing.charge", {{"input", {{"mode", i % 10 == 0 ? "slow" : "fast"}}}}, alice_);
  }
  ASSERT_EQ(
      gw.Admin(
            "PUT", "/admin/kill-switches",
            R"({"scope":"action_type","key":"email.send","reason":"runaway agent sending duplicates","requested_by":"oncall"})")
          .status,
      200);
  // Three queued calls wait behind crm's OPEN breaker: the queue column shows them.
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(gw.Invoke("crm.update_opportunity", {{"input", {{"id", 100 + i}}}, {"mode", "queued"}}, alice_).status,
              202);
  }
  AdminUntil(gw, "/admin/slo", PageFiring);
  const json connectors = Body(gw.Admin("GET", "/admin/connectors"));
  ASSERT_EQ(connectors["connectors"][1]["breaker"]["state"], "OPEN") << connectors.dump();  // sorted: billing, crm

  // Under docs/ but ignored by git, so running the tests leaves the tree clean; docs/dashboard.png
  // is a copy of one of these.
  const std::string screenshot = std::string(TOOLGATE_DOCS_DIR) + "/dashboard-latest.png";
  const json expected = {{"breakers", {{"crm", "OPEN"}, {"billing", "CLOSED"}}},
                         {"alarms", {"PAGE 1h/5m"}},
                         {"kill_switches", {"runaway agent sending duplicates"}},
                         {"queues", {{"crm", "3 / "}, {"billing", "0"}}}};
  auto [code, out] =
      testing::RunProgram({"/usr/bin/node", std::string(TOOLGATE_NODE_DIR) + "/dashboard_check.js",
                           "http://127.0.0.1:" + std::to_string(gw.admin_port()) + "/", expected.dump(), screenshot},
                          dir_);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(access(screenshot.c_str(), R_OK), 0);
}

}  // namespace
}  // namespace toolgate
