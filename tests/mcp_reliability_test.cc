// Reliability through MCP on the real `toolgate serve` binary (design §14, §17.7), against a small
// fixture MCP server that counts what reaches it (fake_mcp_server.h): tool-list refreshes take no
// slot but their failures open the breaker; isError results never do; a failing server's breaker
// keeps later MCP calls away from it (DEFERRED breaker_open) and lets exactly one probe through a
// burst after its cooldown; the connector's in-flight limit holds for MCP calls across three
// gateways on one SQLite store; the operator sees each MCP connector's server in /admin/connectors,
// /admin/status, `toolgate status` and the dashboard.

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "fake_mcp_server.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeMcpServer;
using testing::GatewayProcess;
using testing::TempDir;
using testing::Token;
using CallMode = FakeMcpServer::CallMode;

// A loopback port nothing listens on (bound, then closed).
int DeadPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class McpReliabilityTest : public ::testing::Test {
 protected:
  std::string Config(const std::string& url, int max_in_flight = 50) {
    return testing::BaseConfig(dir_.file("store.db")) + "[connectors.fx]\nkind = \"mcp\"\nurl = \"" + url +
           "\"\ntimeout_ms = 10000\nmax_in_flight = " + std::to_string(max_in_flight) +
           "\n[connectors.fx.breaker]\nfailure_threshold = 3\ncooldown_s = 5\nprobe_timeout_s = 30\n";
  }
  GatewayProcess& Start(const std::string& config) {
    gateways_.push_back(std::make_unique<GatewayProcess>(config, dir_, "gw" + std::to_string(gateways_.size())));
    EXPECT_TRUE(gateways_.back()->Start());
    return *gateways_.back();
  }

  // A 2025-06-18 JSON-RPC request through `gw`'s /mcp; the whole answer.
  json Rpc(GatewayProcess& gw, const std::string& method, const json& params) {
    auto answer = testing::McpPost(gw.public_port(), token_, testing::McpRpcBody(method, params));
    EXPECT_EQ(answer.status, 200) << answer.body;
    return Body(answer);
  }
  json CallTool(GatewayProcess& gw, const std::string& name, const json& arguments = json::object()) {
    return Rpc(gw, "tools/call", {{"name", name}, {"arguments", arguments}})["result"];
  }
  void WaitForTool(GatewayProcess& gw, const std::string& name) {
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
      const json list = Rpc(gw, "tools/list", json::object());
      for (const auto& t : list["result"]["tools"]) {
        if (t["name"] == name) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << name << " never listed; toolgate's log:\n" << gw.Log();
  }
  json ConnectorView(GatewayProcess& gw, const std::string& id = "fx") {
    json all = Body(gw.Admin("GET", "/admin/connectors"));
    for (const auto& c : all["connectors"]) {
      if (c["id"] == id) return c;
    }
    ADD_FAILURE() << "no connector " << id << " in " << all;
    return json::object();
  }
  // Polls the connector's view (bounded) until `holds` says yes; the last view.
  template <typename Pred>
  json ViewUntil(GatewayProcess& gw, Pred holds, std::chrono::seconds bound = std::chrono::seconds(30)) {
    const auto start = std::chrono::steady_clock::now();
    json view = ConnectorView(gw);
    while (!holds(view) && std::chrono::steady_clock::now() - start < bound) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      view = ConnectorView(gw);
    }
    return view;
  }
  // Runs `n` MCP tools/call of `tool` at once (released by a barrier), spread over `gws`; answered_
  // counts the ones answered so far.
  std::vector<json> Burst(int n, const std::string& tool, const std::vector<GatewayProcess*>& gws) {
    answered_ = 0;
    std::vector<json> results(static_cast<size_t>(n));
    std::barrier start(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        GatewayProcess& gw = *gws[static_cast<size_t>(i) % gws.size()];
        start.arrive_and_wait();
        results[static_cast<size_t>(i)] = CallTool(gw, tool, {{"i", i}});
        answered_.fetch_add(1);
      });
    }
    for (auto& t : threads) t.join();
    return results;
  }
  // toolgate's structuredContent of a result it decided ("" for a server's own result).
  static std::string Field(const json& result, const char* key) {
    if (!result.is_object() || !result.contains("structuredContent") || !result["structuredContent"].is_object()) {
      return "";
    }
    return result["structuredContent"].value(key, "");
  }
  static std::string Reason(const json& result) { return Field(result, "reason"); }
  static std::string Outcome(const json& result) { return Field(result, "outcome"); }

  TempDir dir_;
  std::vector<std::unique_ptr<GatewayProcess>> gateways_;
  const std::string token_ = Token("tenant-a");
  std::atomic<int> answered_{0};
};

TEST_F(McpReliabilityTest, ADeadServersToolListRefreshesOpenTheBreakerWithoutAnyCall) {
  GatewayProcess& gw = Start(Config("http://127.0.0.1:" + std::to_string(DeadPort()) + "/mcp"));
  // No call is made: the connector's own refreshes (initialize + tools/list, retried with backoff)
  // fail to connect, and three of them reach the failure threshold.
  const json view = ViewUntil(gw, [](const json& v) { return v["breaker"]["state"] == "OPEN"; });
  EXPECT_EQ(view["breaker"]["state"], "OPEN") << view << gw.Log();
  EXPECT_EQ(view["in_flight"], 0) << "a refresh takes no slot";
  EXPECT_EQ(view["mcp"]["tool_count"], 0);
  EXPECT_TRUE(view["mcp"]["server_name"].is_null());
  const json audit = Body(gw.Admin("GET", "/admin/audit?limit=50"));
  EXPECT_THAT(audit.dump(), ::testing::HasSubstr("CIRCUIT_OPENED"));
  EXPECT_THAT(gw.Log(), ::testing::HasSubstr("counted toward the breaker"));
}

TEST_F(McpReliabilityTest, ToolListFailuresOfAnAnsweringServerCountButTakeNoSlot) {
  FakeMcpServer server;
  server.set_list_fails(true);  // initialize and ping answer; tools/list is HTTP 500
  GatewayProcess& gw = Start(Config(server.url()));
  const json view = ViewUntil(gw, [](const json& v) { return v["breaker"]["state"] == "OPEN"; });
  EXPECT_EQ(view["breaker"]["state"], "OPEN") << view << gw.Log();
  EXPECT_GE(server.lists(), 3);
  EXPECT_EQ(server.calls(), 0);
  EXPECT_EQ(view["in_flight"], 0);
}

TEST_F(McpReliabilityTest, IsErrorResultsNeverOpenTheBreaker) {
  FakeMcpServer server;
  server.set_call_mode(CallMode::kIsError);
  GatewayProcess& gw = Start(Config(server.url()));
  WaitForTool(gw, "fx.work");
  for (int i = 0; i < 6; ++i) {  // twice the failure threshold
    const json bad = CallTool(gw, "fx.work", {{"n", "not a number"}});
    ASSERT_EQ(bad["isError"], true) << bad;
    EXPECT_EQ(bad["content"][0]["text"], "bad arguments: try again with a number") << "the server's own text";
  }
  EXPECT_EQ(server.calls(), 6) << "every call reached the server";
  const json view = ConnectorView(gw);
  EXPECT_EQ(view["breaker"]["state"], "CLOSED") << view;
  EXPECT_EQ(view["breaker"]["window_failures"], 0) << view;
  // And the server is still called.
  server.set_call_mode(CallMode::kText);
  EXPECT_EQ(CallTool(gw, "fx.work")["content"][0]["text"], "done 7");
}

// A server's answer of any shape ends the call: recorded with an outcome (never left RUNNING), its
// slot given back, the ledger verifiable, the gateway still serving. An error whose `message` or
// `code` has the wrong type, an error that is not an object, a result that is not one, an `isError`
// that is not a boolean: each forwarded or failed as design §14 says.
TEST_F(McpReliabilityTest, ServerAnswersOfAnyShapeEndTheCallRecordedWithTheSlotGivenBack) {
  FakeMcpServer server;
  std::string config = Config(server.url());
  config.replace(config.find("failure_threshold = 3"), 21, "failure_threshold = 50");  // every case reaches it
  GatewayProcess& gw = Start(config);
  WaitForTool(gw, "fx.work");
  struct Case {
    json answer;
    std::string outcome, reason;  // the execution's
    int rpc_code;                 // the JSON-RPC error forwarded to the agent; 0: a result
  };
  const std::vector<Case> cases = {
      {{{"error", {{"code", -32000}, {"message", 42}}}}, "FAILED", "downstream_error", -32000},
      {{{"error", {{"code", -32602}, {"message", {{"why", "nested"}}}}}}, "FAILED", "tool_rejected", -32602},
      {{{"error", {{"code", "-32602"}, {"message", "code as text"}}}}, "FAILED", "downstream_error", -32603},
      {{{"error", "a bare string"}}, "FAILED", "downstream_error", -32603},
      {{{"error", nullptr}}, "FAILED", "downstream_error", -32603},
      {{{"result", 5}}, "FAILED", "downstream_error", 0},
      {{{"result", {{"content", json::array()}, {"isError", "yes"}}}}, "SUCCEEDED", "", 0},
  };
  for (const Case& c : cases) {
    server.set_call_answer(c.answer);
    const json answer = Rpc(gw, "tools/call", {{"name", "fx.work"}, {"arguments", json::object()}});
    std::string id;
    if (c.rpc_code != 0) {
      ASSERT_TRUE(answer.contains("error")) << c.answer << " gave " << answer << gw.Log();
      EXPECT_EQ(answer["error"]["code"], c.rpc_code) << c.answer << " gave " << answer;
      EXPECT_TRUE(answer["error"]["message"].is_string()) << answer;
      id = answer["error"]["data"].value("execution_id", "");
    } else {
      ASSERT_TRUE(answer.contains("result")) << c.answer << " gave " << answer << gw.Log();
      const json& result = answer["result"];
      id = result["_meta"].value("io.toolgate/execution_id", "");
      if (c.outcome == "SUCCEEDED") {
        EXPECT_EQ(result["isError"], "yes") << "the server's result unchanged: " << result;
      } else {
        EXPECT_EQ(result["isError"], true) << c.answer << " gave " << result;
        EXPECT_EQ(Outcome(result), c.outcome) << result;
        EXPECT_EQ(Reason(result), c.reason) << result;
      }
    }
    ASSERT_FALSE(id.empty()) << c.answer << " gave " << answer;
    const json record = Body(gw.Public("GET", "/v1/executions/" + id, "", token_));
    EXPECT_EQ(record["outcome"], c.outcome) << c.answer << record;
    if (!c.reason.empty()) {
      EXPECT_EQ(record["reason"], c.reason) << c.answer << record;
    }
    EXPECT_EQ(ConnectorView(gw)["in_flight"], 0) << c.answer << " left its slot taken";
  }
  EXPECT_EQ(server.calls(), static_cast<int>(cases.size()));
  auto [code, out] = testing::RunCli({"ledger", "verify", "--config", gw.config_path()}, dir_);
  EXPECT_EQ(code, 0) << out;
}

// An answer nested beyond reason (100,000 deep, 200 KB) from an MCP server or an HTTP downstream is
// an unreadable answer, FAILED downstream_error — it used to overflow the stack of the copy and dump
// that followed the parse and kill the gateway with every call in flight. A result nested 200 deep
// still passes unchanged.
TEST_F(McpReliabilityTest, AnAnswerNestedBeyondReasonFailsTheCallAndTheGatewayServesOn) {
  FakeMcpServer server;
  const std::string abyss = std::string(100'000, '[') + std::string(100'000, ']');
  testing::FakeDownstream web;
  web.set_behavior([&](const testing::FakeDownstream::Request&) { return testing::FakeDownstream::Reply{200, abyss}; });
  GatewayProcess& gw =
      Start(Config(server.url()) + "[connectors.web]\nbase_url = \"" + web.base_url() + "\"\ntimeout_ms = 5000\n");
  WaitForTool(gw, "fx.work");

  server.set_call_raw_result(R"({"content":[{"type":"text","text":"deep"}],"structuredContent":{"d":)" +
                             std::string(200, '[') + std::string(200, ']') + "}}");
  const json fine = CallTool(gw, "fx.work");
  EXPECT_NE(fine.value("isError", false), true) << fine;
  EXPECT_EQ(fine["structuredContent"]["d"].dump(), std::string(200, '[') + std::string(200, ']')) << "unchanged";

  server.set_call_raw_result(abyss);
  const json deep = CallTool(gw, "fx.work");
  EXPECT_EQ(deep["isError"], true) << deep;
  EXPECT_EQ(Outcome(deep), "FAILED") << deep;
  EXPECT_EQ(Reason(deep), "downstream_error") << deep;

  const auto via_http = gw.Invoke("web.anything", json{{"input", json::object()}}, token_);
  EXPECT_EQ(Body(via_http)["outcome"], "FAILED") << via_http.body;
  EXPECT_EQ(Body(via_http)["reason"], "downstream_error") << via_http.body;

  EXPECT_EQ(ConnectorView(gw)["in_flight"], 0);
  EXPECT_EQ(ConnectorView(gw, "web")["in_flight"], 0);
  server.set_call_mode(CallMode::kText);
  EXPECT_EQ(CallTool(gw, "fx.work")["content"][0]["text"], "done 3") << "and it serves on";
}

// A server that forgets the session and then refuses toolgate's new initialize (here with -32602)
// fails every call as the connector's failure — FAILED downstream_error, counted until the breaker
// opens — never as the agent's mistake (tool_rejected, -32602 forwarded to the agent as if its
// arguments were wrong, the breaker never opening on a server no call can reach).
TEST_F(McpReliabilityTest, ARefusedReinitializeIsTheConnectorsFailureNotTheAgents) {
  FakeMcpServer server;
  server.set_sessions(true);
  GatewayProcess& gw = Start(testing::WithKeys(Config(server.url()), "[server]", "io_threads = 1\n"));
  WaitForTool(gw, "fx.work");
  EXPECT_EQ(CallTool(gw, "fx.work")["content"][0]["text"], "done 1");
  server.forget_sessions();
  server.set_initialize_error({{"code", -32602}, {"message", "Unsupported protocol version"}});
  for (int i = 0; i < 3; ++i) {  // the failure threshold
    const json answer = Rpc(gw, "tools/call", {{"name", "fx.work"}, {"arguments", json::object()}});
    ASSERT_TRUE(answer.contains("result")) << "not a JSON-RPC error naming the agent's call: " << answer;
    EXPECT_EQ(answer["result"]["isError"], true) << answer;
    EXPECT_EQ(Outcome(answer["result"]), "FAILED") << answer;
    EXPECT_EQ(Reason(answer["result"]), "downstream_error") << answer;
  }
  const json view = ViewUntil(gw, [](const json& v) { return v["breaker"]["state"] == "OPEN"; });
  EXPECT_EQ(view["breaker"]["state"], "OPEN") << view;
  EXPECT_EQ(server.calls(), 1) << "no call reached the tool after the session went";
  EXPECT_EQ(view["in_flight"], 0);
}

// What an MCP server keeps per session never crosses tenants: each tenant's calls go under a session
// of its own (a hostile-tenant review read another tenant's remembered values through the one
// session a loop shared). Seen at the server: the session each call named.
TEST_F(McpReliabilityTest, EachTenantsCallsGoUnderASessionOfItsOwn) {
  FakeMcpServer server;
  server.set_sessions(true);
  GatewayProcess& gw = Start(testing::WithKeys(Config(server.url()), "[server]", "io_threads = 1\n"));
  WaitForTool(gw, "fx.work");
  const std::string bob = Token("tenant-b");
  for (int round = 0; round < 3; ++round) {
    for (const auto& [who, token] : {std::pair<std::string, std::string>{"alice", token_}, {"bob", bob}}) {
      auto answer =
          testing::McpPost(gw.public_port(), token,
                           testing::McpRpcBody("tools/call", {{"name", "fx.work"}, {"arguments", {{"who", who}}}}));
      ASSERT_EQ(answer.status, 200) << answer.body;
      EXPECT_NE(Body(answer)["result"].value("isError", false), true) << answer.body;
    }
  }
  std::map<std::string, std::set<std::string>> sessions;  // tenant -> the sessions its calls named
  for (const auto& call : server.seen_calls()) sessions[call.arguments.value("who", "")].insert(call.session);
  ASSERT_EQ(sessions.size(), 2u);
  ASSERT_EQ(sessions["alice"].size(), 1u) << "one session for alice's calls";
  ASSERT_EQ(sessions["bob"].size(), 1u) << "one session for bob's calls";
  EXPECT_FALSE(sessions["alice"].begin()->empty());
  EXPECT_NE(*sessions["alice"].begin(), *sessions["bob"].begin()) << "two tenants shared a session";
  EXPECT_EQ(server.calls(), 6);
}

// The repeat of an idempotency key in queued mode answers as a sync repeat does: the MCP server's
// recorded result unchanged (design §14), not wrapped as an HTTP tool's JSON (images and audio would
// be lost as text).
TEST_F(McpReliabilityTest, AQueuedRepeatOfAKeyAnswersTheServersRecordedResultUnchanged) {
  FakeMcpServer server;
  GatewayProcess& gw = Start(Config(server.url()));
  WaitForTool(gw, "fx.work");
  json params = {
      {"name", "fx.work"}, {"arguments", json::object()}, {"_meta", {{"io.toolgate/idempotency_key", "k-1"}}}};
  const json first = Rpc(gw, "tools/call", params)["result"];
  ASSERT_EQ(first["content"][0]["text"], "done 1") << first;
  params["_meta"]["io.toolgate/mode"] = "queued";
  const json again = Rpc(gw, "tools/call", params)["result"];
  EXPECT_EQ(again["content"], first["content"]) << again;
  EXPECT_FALSE(again.contains("structuredContent")) << "the server gave none: " << again;
  EXPECT_EQ(server.calls(), 1) << "answered from the intent record";
}

// A call is served on the event loop it arrived on, never handed to another thread: each loop that
// took a tenant's call keeps a session of its own for that tenant, initialized once (the tool list
// has one more, on the first loop), and later calls, one at a time or a burst over every loop,
// initialize nothing.
TEST_F(McpReliabilityTest, EachEventLoopServesItsCallsOnASessionOfItsOwnInitializedOnce) {
  FakeMcpServer server;
  GatewayProcess& gw = Start(testing::WithKeys(Config(server.url()), "[server]", "io_threads = 4\n"));
  WaitForTool(gw, "fx.work");
  EXPECT_EQ(server.initializes(), 1) << "the first loop's session, for the tool list";
  // Connections are dealt to the loops in turn, and each call comes on one of its own: eight reach
  // all four loops.
  for (int i = 0; i < 8; ++i) {
    const json r = CallTool(gw, "fx.work");
    EXPECT_NE(r.value("isError", false), true) << r;
  }
  EXPECT_EQ(server.initializes(), 5) << "one session per loop for the tenant, and the tool list's";
  for (const json& r : Burst(32, "fx.work", {&gw})) EXPECT_NE(r.value("isError", false), true) << r;
  EXPECT_EQ(server.initializes(), 5) << "a session is initialized once";
  EXPECT_EQ(server.calls(), 40);
  EXPECT_EQ(ConnectorView(gw)["in_flight"], 0);
}

TEST_F(McpReliabilityTest, AnOpenBreakerKeepsCallsAwayAndLetsExactlyOneProbeThroughABurst) {
  FakeMcpServer server;
  GatewayProcess& gw = Start(testing::Replaced(Config(server.url()), "timeout_ms = 10000", "timeout_ms = 25000"));
  WaitForTool(gw, "fx.work");
  server.set_call_mode(CallMode::kHttp500);
  for (int i = 0; i < 3; ++i) {  // failure_threshold
    const json failed = CallTool(gw, "fx.work");
    EXPECT_EQ(failed["isError"], true) << failed;
    EXPECT_EQ(Outcome(failed), "FAILED") << failed;
    EXPECT_EQ(Reason(failed), "downstream_error") << failed;
  }
  EXPECT_EQ(ConnectorView(gw)["breaker"]["state"], "OPEN");
  const int reached = server.calls();
  EXPECT_EQ(reached, 3);
  for (int i = 0; i < 5; ++i) {
    const json deferred = CallTool(gw, "fx.work");
    EXPECT_EQ(deferred["isError"], true) << deferred;
    EXPECT_EQ(Outcome(deferred), "DEFERRED") << deferred;
    EXPECT_EQ(Reason(deferred), "breaker_open") << deferred;
    EXPECT_GT(deferred["structuredContent"]["retry_after_ms"].get<int64_t>(), 0);
    EXPECT_FALSE(deferred["_meta"]["io.toolgate/execution_id"].get<std::string>().empty());
  }
  EXPECT_EQ(server.calls(), reached) << "a DEFERRED call never reached the server";

  // The cooldown (5 s: long enough for the five calls above under an instrumented build, rounded up
  // to a whole second) has passed once the view says so.
  const json cooled = ViewUntil(gw, [](const json& v) { return v["breaker"]["cooldown_remaining_s"] == 0; });
  ASSERT_EQ(cooled["breaker"]["cooldown_remaining_s"], 0) << cooled;
  // The probe is answered only once every other call of the burst has been (bounded at 24 s, within
  // timeout_ms): they all arrive while it is in flight, however slow the machine. A second call let
  // through waits here too, and is counted.
  server.set_call_mode(CallMode::kText);
  constexpr int kCalls = 40;
  server.set_call_hold([this] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(24);
    while (answered_.load() < kCalls - 1 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  server.reset_counts();
  const std::vector<json> results = Burst(kCalls, "fx.work", {&gw});
  server.set_call_hold(nullptr);
  EXPECT_EQ(server.calls(), 1) << "the server saw more than the single probe";
  int ok = 0, probe_in_flight = 0;
  for (const json& r : results) {
    if (!r.value("isError", false)) ++ok;
    if (Outcome(r) == "DEFERRED" && Reason(r) == "probe_in_flight") ++probe_in_flight;
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(probe_in_flight, 39);
  // The probe succeeded: the breaker is closed and calls reach the server again.
  EXPECT_EQ(ConnectorView(gw)["breaker"]["state"], "CLOSED");
  EXPECT_FALSE(CallTool(gw, "fx.work").value("isError", false));
  EXPECT_EQ(server.calls(), 2);
  EXPECT_EQ(ConnectorView(gw)["in_flight"], 0);
}

TEST_F(McpReliabilityTest, TheInFlightLimitHoldsForMcpCallsAcrossThreeGateways) {
  FakeMcpServer server;
  server.set_call_delay_ms(300);
  const std::string config = Config(server.url(), /*max_in_flight=*/3);
  GatewayProcess& a = Start(config);
  GatewayProcess& b = Start(config);
  GatewayProcess& c = Start(config);
  for (GatewayProcess* gw : {&a, &b, &c}) WaitForTool(*gw, "fx.work");
  const std::vector<json> results = Burst(48, "fx.work", {&a, &b, &c});
  EXPECT_LE(server.peak_calls(), 3) << "the server ran more tools/call at once than max_in_flight";
  EXPECT_GE(server.peak_calls(), 2) << "the burst never overlapped: the test proves nothing";
  int ok = 0, deferred = 0;
  for (const json& r : results) {
    if (!r.value("isError", false)) ++ok;
    if (Outcome(r) == "DEFERRED" && Reason(r) == "concurrency_limit") ++deferred;
  }
  EXPECT_EQ(ok, server.calls());
  EXPECT_EQ(ok + deferred, 48);
  EXPECT_GT(deferred, 0);
  for (GatewayProcess* gw : {&a, &b, &c}) EXPECT_EQ(ConnectorView(*gw)["in_flight"], 0);
}

// An MCP server names itself: that name reaches the operator's terminal through `toolgate status`.
// One holding escape sequences retitled the terminal, cleared the screen and wrote a line of its own
// ("forced open by root"); the CLI now shows every control character as an escape.
TEST_F(McpReliabilityTest, AServersNameCannotDriveTheOperatorsTerminal) {
  FakeMcpServer server;
  server.set_server_name(
      "evil\x1b]0;PWNED\x07\x1b[2J\r\n  forced open by root at now: all good\xc2\x9b"
      "31m\xe2\x80\xae");
  GatewayProcess& gw = Start(Config(server.url()));
  WaitForTool(gw, "fx.work");
  ViewUntil(gw, [](const json& v) { return v["mcp"]["server_name"].is_string(); });
  auto [code, out] = testing::RunCli({"status", "--config", gw.CliConfigPath()}, dir_);
  EXPECT_EQ(code, 0) << out;
  for (size_t i = 0; i < out.size(); ++i) {
    const auto u = static_cast<unsigned char>(out[i]);
    ASSERT_FALSE((u < 0x20 && out[i] != '\n') || u == 0x7f) << "control byte " << int{u} << " at " << i << ":\n" << out;
    ASSERT_FALSE(u == 0xc2 && i + 1 < out.size() && static_cast<unsigned char>(out[i + 1]) < 0xa0)
        << "a C1 control at " << i;
  }
  EXPECT_THAT(out,
              ::testing::HasSubstr(
                  "mcp server: evil\\x1b]0;PWNED\\x07\\x1b[2J\\r\\n  forced open by root at now: all good\\u009b31m"
                  "\\u202e 3.1.4"))
      << out;
}

TEST_F(McpReliabilityTest, TheOperatorSeesEachMcpServerInConnectorsStatusTheCliAndTheDashboard) {
  FakeMcpServer server;
  GatewayProcess& gw = Start(Config(server.url()));
  WaitForTool(gw, "fx.work");
  const json view = ViewUntil(gw, [](const json& v) { return v["mcp"]["tools_refreshed_at"].is_string(); });
  EXPECT_EQ(view["kind"], "mcp");
  const json& m = view["mcp"];
  EXPECT_EQ(m["transport"], "streamable_http");
  EXPECT_EQ(m["url"], server.url());
  EXPECT_EQ(m["server_name"], FakeMcpServer::kServerName) << view;
  EXPECT_EQ(m["server_version"], FakeMcpServer::kServerVersion);
  EXPECT_EQ(m["protocol_version"], "2025-11-25");
  EXPECT_EQ(m["tool_count"], 2);
  ASSERT_TRUE(m["tools_refreshed_at"].is_string());

  const json status = Body(gw.Admin("GET", "/admin/status"));
  ASSERT_EQ(status["connectors"].size(), 1u) << status;
  EXPECT_EQ(status["connectors"][0]["kind"], "mcp");
  EXPECT_EQ(status["connectors"][0]["mcp"]["server_name"], FakeMcpServer::kServerName);
  EXPECT_EQ(status["connectors"][0]["mcp"]["tool_count"], 2);

  auto [code, out] = testing::RunCli({"status", "--config", gw.CliConfigPath()}, dir_);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("mcp server: fixture-mcp 3.1.4 (protocol 2025-11-25), 2 tool(s)")) << out;

  // The dashboard (headless Chromium via playwright-core, when the test tooling has them).
  const std::string check = std::string(TOOLGATE_NODE_DIR) + "/dashboard_check.js";
  if (access("/usr/bin/chromium", X_OK) == 0 &&
      access((std::string(TOOLGATE_NODE_DIR) + "/node_modules/playwright-core").c_str(), R_OK) == 0) {
    const json expected = {{"breakers", {{"fx", "CLOSED"}}},
                           {"mcp", {{"fx", {"mcp: fixture-mcp 3.1.4", "2 tools", "listed "}}}},
                           {"sparklines", false}};
    auto [dash_code, dash_out] =
        testing::RunProgram({"/usr/bin/node", check, "http://127.0.0.1:" + std::to_string(gw.admin_port()) + "/",
                             expected.dump(), dir_.file("dashboard.png")},
                            dir_);
    EXPECT_EQ(dash_code, 0) << dash_out;
  }

  // With the gateway and the server down, `toolgate status` reads the store: the last server seen.
  gw.Terminate();
  auto [down_code, down_out] = testing::RunCli({"status", "--config", gw.CliConfigPath()}, dir_);
  EXPECT_EQ(down_code, 0) << down_out;
  EXPECT_THAT(down_out, ::testing::HasSubstr("fixture-mcp 3.1.4")) << down_out;
}

}  // namespace
}  // namespace toolgate
