// MCP servers behind toolgate (design §14 "MCP connectors"), on the real `toolgate serve` binary
// against the real reference server @modelcontextprotocol/server-everything: over Streamable HTTP
// (`kind = "mcp"`) and as a child process (`kind = "mcp_stdio"`). Tool lists through /mcp, results
// passed through unchanged, isError results that never open the breaker, a dead server that does,
// and a stdio server killed mid-call.

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <future>
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
using testing::HeaderOf;
using testing::TempDir;
using testing::Token;

const std::string kEverything =
    std::string(TOOLGATE_NODE_DIR) + "/node_modules/@modelcontextprotocol/server-everything/dist/index.js";

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// The whole of a file ("" when it cannot be read).
std::string FileText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Whether an IPv4 socket listens on `port` (/proc/net/tcp; node's own listener is IPv6, on ::).
bool Ipv4Listener(int port) {
  std::istringstream table(FileText("/proc/net/tcp"));
  std::string line;
  std::getline(table, line);  // the header
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    const size_t colon = local.find(':');
    if (colon != std::string::npos && std::stoi(local.substr(colon + 1), nullptr, 16) == port && state == "0A") {
      return true;
    }
  }
  return false;
}

bool Listening(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// The children of `pid` (its threads' children, from /proc).
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(tasks.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(tasks + "/" + e->d_name + "/children");
    pid_t child;
    while (in >> child) out.push_back(child);
  }
  closedir(d);
  return out;
}

// Reads from `fd` until `got` holds `needle` (true), or the peer closes or a read times out (false).
bool ReadUntil(int fd, const std::string& needle, std::string& got) {
  char buf[4096];
  while (got.find(needle) == std::string::npos) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    got.append(buf, static_cast<size_t>(n));
  }
  return true;
}

// server-everything over Streamable HTTP on a port of its own (PORT), endpoint /mcp. A port picked free
// may be taken by another test's process before node binds it: node then exits (EADDRINUSE), or —
// node listening on :: — binds beside an IPv4 listener that then gets every connection to
// 127.0.0.1. So the server counts as started only once its own log says it listens on that port and
// no IPv4 socket listens there, and a first start that fails tries another port (a restart keeps its
// port: the gateway's connector names it).
class EverythingHttpServer {
 public:
  EverythingHttpServer(const TempDir& dir) : port_(FreePort()), log_(dir.file("everything.log")) {}
  bool Start() {
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (attempt > 0 && !started_once_) port_ = FreePort();
      if (StartOnce()) {
        started_once_ = true;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }
  void Kill() { proc_.reset(); }  // SIGKILL and wait
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/mcp"; }

 private:
  // One try on port_: true once this child's log (past what earlier children wrote) says it listens.
  bool StartOnce() {
    const std::string says = "listening on port " + std::to_string(port_);
    if (Ipv4Listener(port_)) return false;
    const size_t log_before = FileText(log_).size();
    setenv("PORT", std::to_string(port_).c_str(), 1);
    proc_ =
        std::make_unique<ChildProcess>(std::vector<std::string>{"/usr/bin/node", kEverything, "streamableHttp"}, log_);
    unsetenv("PORT");
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) {
      const std::string log = FileText(log_);
      if (log.size() > log_before && log.find(says, log_before) != std::string::npos) {
        if (!Ipv4Listener(port_) && Listening(port_)) return true;
        break;  // another process's listener gets 127.0.0.1's connections
      }
      if (proc_->WaitFor(std::chrono::milliseconds(0))) break;  // exited: the port was taken
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    proc_.reset();
    return false;
  }

  int port_;
  bool started_once_ = false;
  std::string log_;
  std::unique_ptr<ChildProcess> proc_;
};

class McpConnectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kEverything.c_str(), R_OK) != 0) {
      GTEST_SKIP() << "@modelcontextprotocol/server-everything is not installed (scripts/install-deps.sh)";
    }
  }

  static std::string Connector(const std::string& id, const std::string& kind_keys) {
    return "[connectors." + id + "]\n" + kind_keys + "timeout_ms = 5000\nmax_in_flight = 4\n[connectors." + id +
           ".breaker]\nfailure_threshold = 3\ncooldown_s = 60\n";
  }
  std::string HttpConfig(const std::string& url) {
    return testing::BaseConfig(dir_.file("store.db")) +
           Connector("everything", "kind = \"mcp\"\nurl = \"" + url + "\"\n");
  }
  std::string StdioConfig() {
    return testing::BaseConfig(dir_.file("store.db")) +
           Connector("local",
                     "kind = \"mcp_stdio\"\ncommand = [\"/usr/bin/node\", \"" + kEverything + "\", \"stdio\"]\n");
  }
  GatewayProcess& Start(const std::string& config) {
    gw_ = std::make_unique<GatewayProcess>(config, dir_);
    EXPECT_TRUE(gw_->Start());
    return *gw_;
  }

  // A 2025-06-18 JSON-RPC request through /mcp; the whole answer.
  json Rpc(const std::string& method, const json& params) {
    auto answer = testing::McpPost(gw_->public_port(), alice_, testing::McpRpcBody(method, params));
    EXPECT_EQ(answer.status, 200) << answer.body;
    return Body(answer);
  }
  json CallTool(const std::string& name, const json& arguments) {
    return Rpc("tools/call", {{"name", name}, {"arguments", arguments}});
  }
  std::vector<std::string> ToolNames() {
    std::vector<std::string> names;
    const json list = Rpc("tools/list", json::object());  // named: a range-for does not keep a temporary's parts alive
    for (const auto& t : list["result"]["tools"]) names.push_back(t["name"]);
    return names;
  }
  // Polls tools/list (bounded) until `name` is listed: the connector fetches the list once it runs.
  void WaitForTool(const std::string& name) {
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
      auto names = ToolNames();
      if (std::find(names.begin(), names.end(), name) != names.end()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << name << " never listed; toolgate's log:\n" << gw_->Log();
  }
  json ConnectorView(const std::string& id) {
    json all = Body(gw_->Admin("GET", "/admin/connectors"));
    for (const auto& c : all["connectors"]) {
      if (c["id"] == id) return c;
    }
    ADD_FAILURE() << "no connector " << id << " in " << all;
    return json::object();
  }
  // A new session's list is fetched twice (the second ~2 s after the first); the next fetch is
  // tools_ttl_s away. Waits (bounded) for the second, so a test that then stops the server knows
  // no refresh of the connector's own runs into it (its failures would count, design §17.7).
  void WaitForSecondListFetch(const std::string& id) {
    std::string first;
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
      const json at = ConnectorView(id)["mcp"]["tools_refreshed_at"];
      if (at.is_string() && first.empty()) first = at;
      if (at.is_string() && at != first) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "the tool list of " << id << " was not fetched a second time";
  }
  // tools/call with `_meta` (a 2025-06-18 client accepting JSON and SSE); the raw answer.
  api::ClientResult RawCall(const std::string& name, const json& arguments, const json& meta) {
    return testing::McpPost(gw_->public_port(), alice_, testing::McpToolsCallBody(name, arguments, meta, 7));
  }
  // The messages of an SSE body, in order (each event's data).
  static std::vector<json> Events(const std::string& body) {
    std::vector<json> out;
    size_t at = 0;
    while (at < body.size()) {
      const size_t end = body.find("\n\n", at);
      const std::string event = body.substr(at, end == std::string::npos ? std::string::npos : end - at);
      const size_t data = event.find("data: ");
      if (data != std::string::npos) out.push_back(json::parse(event.substr(data + 6), nullptr, false));
      if (end == std::string::npos) break;
      at = end + 2;
    }
    return out;
  }
  // A call to `tool` (server-everything's trigger-long-running-operation) with a progress token:
  // the server's three steps reach the client with the client's own token, in order, on the
  // call's event stream, then the call's answer; the same call without a token is answered JSON.
  void ExpectProgressThenAnswer(const std::string& tool, const std::string& connector) {
    const json token = "agent-token-7";
    auto streamed = RawCall(tool, {{"duration", 0.6}, {"steps", 3}}, {{"progressToken", token}});
    ASSERT_EQ(streamed.status, 200) << streamed.body;
    EXPECT_EQ(HeaderOf(streamed, "content-type"), "text/event-stream");
    const std::vector<json> events = Events(streamed.body);
    ASSERT_EQ(events.size(), 4u) << streamed.body;
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(events[i]["method"], "notifications/progress") << events[i];
      EXPECT_EQ(events[i]["params"]["progressToken"], token) << "the client's own token, not toolgate's";
      EXPECT_EQ(events[i]["params"]["progress"], i + 1);
      EXPECT_EQ(events[i]["params"]["total"], 3);
    }
    const json& answer = events[3];
    EXPECT_EQ(answer["id"], 7);
    EXPECT_THAT(answer["result"]["content"][0]["text"].get<std::string>(),
                ::testing::HasSubstr("Long running operation completed"));
    const std::string id = answer["result"]["_meta"]["io.toolgate/execution_id"];
    const json record = Body(gw_->Public("GET", "/v1/executions/" + id, "", alice_));
    EXPECT_EQ(record["outcome"], "SUCCEEDED") << record;
    EXPECT_EQ(record["connector_id"], connector);
    EXPECT_EQ(ConnectorView(connector)["in_flight"], 0);

    auto plain = RawCall(tool, {{"duration", 0.2}, {"steps", 2}}, json::object());
    ASSERT_EQ(plain.status, 200) << plain.body;
    EXPECT_EQ(HeaderOf(plain, "content-type"), "application/json") << "no token: answered as before";
    EXPECT_FALSE(Body(plain)["result"].value("isError", false)) << plain.body;
    // A value that is not a token (neither a string nor a number): no progress, as without one.
    auto not_token = RawCall(tool, {{"duration", 0.2}, {"steps", 2}}, {{"progressToken", true}});
    EXPECT_EQ(HeaderOf(not_token, "content-type"), "application/json") << not_token.body;
    EXPECT_FALSE(Body(not_token)["result"].value("isError", false)) << not_token.body;
    // A tool that reports no progress: its answer comes first, and is answered as any call's.
    auto quiet = RawCall(connector + ".echo", {{"message", "no progress"}}, {{"progressToken", token}});
    ASSERT_EQ(quiet.status, 200) << quiet.body;
    EXPECT_EQ(HeaderOf(quiet, "content-type"), "application/json") << quiet.body;
    EXPECT_EQ(Body(quiet)["result"]["content"][0]["text"], "Echo: no progress") << quiet.body;
  }

  // The result without toolgate's _meta key: what the server answered.
  static json WithoutToolgateMeta(json result) {
    if (result.contains("_meta")) {
      result["_meta"].erase("io.toolgate/execution_id");
      if (result["_meta"].empty()) result.erase("_meta");
    }
    return result;
  }

  TempDir dir_;
  std::unique_ptr<GatewayProcess> gw_;
  const std::string alice_ = Token("tenant-a");
};

TEST_F(McpConnectorTest, ToolsOfAStreamableHttpServerAreListedAndTheirResultsPassThroughUnchanged) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  Start(HttpConfig(server.url()));
  WaitForTool("everything.echo");
  const json list = Rpc("tools/list", json::object())["result"];
  std::vector<std::string> names;
  json structured_tool;
  for (const auto& t : list["tools"]) {
    names.push_back(t["name"]);
    if (t["name"] == "everything.get-structured-content") structured_tool = t;
  }
  EXPECT_THAT(names, ::testing::IsSupersetOf({"everything.echo", "everything.get-sum", "everything.get-tiny-image",
                                              "everything.get-structured-content"}));
  // The server's own definition, renamed: its title, schemas and annotations reach the agent.
  EXPECT_EQ(structured_tool["title"], "Get Structured Content Tool");
  EXPECT_EQ(structured_tool["outputSchema"]["required"], json({"temperature", "conditions", "humidity"}));
  EXPECT_EQ(structured_tool["inputSchema"]["properties"]["location"]["type"], "string");

  const json echo = CallTool("everything.echo", {{"message", "hello through toolgate"}})["result"];
  EXPECT_EQ(WithoutToolgateMeta(echo),
            json({{"content", {{{"type", "text"}, {"text", "Echo: hello through toolgate"}}}}}))
      << echo;
  const std::string execution_id = echo["_meta"]["io.toolgate/execution_id"];
  EXPECT_FALSE(execution_id.empty());
  auto record = gw_->Public("GET", "/v1/executions/" + execution_id, "", alice_);
  ASSERT_EQ(record.status, 200) << record.body;
  EXPECT_EQ(Body(record)["outcome"], "SUCCEEDED");
  EXPECT_EQ(Body(record)["connector_id"], "everything");
  EXPECT_EQ(Body(record)["tool_name"], "everything.echo") << "the exposed name is recorded";

  const json weather = CallTool("everything.get-structured-content", {{"location", "Chicago"}})["result"];
  ASSERT_TRUE(weather["structuredContent"].is_object()) << weather;
  for (const char* key : {"temperature", "conditions", "humidity"})
    EXPECT_TRUE(weather["structuredContent"].contains(key));
  EXPECT_EQ(weather["content"][0]["type"], "text");
  EXPECT_FALSE(weather.contains("isError"));

  const json image = CallTool("everything.get-tiny-image", json::object())["result"];
  bool has_image = false;
  for (const auto& c : image["content"]) has_image |= c["type"] == "image" && c["mimeType"] == "image/png";
  EXPECT_TRUE(has_image) << image;

  // /v1 runs the same path: the MCP result is the execution's result.
  auto v1 = gw_->Invoke("everything.get-sum", {{"input", {{"a", 1}, {"b", 2}}}}, alice_);
  ASSERT_EQ(v1.status, 200) << v1.body;
  EXPECT_EQ(Body(v1)["outcome"], "SUCCEEDED");
  EXPECT_THAT(Body(v1)["result"]["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("is 3"));

  // A name the server does not list is unknown, although its prefix names the connector.
  const json unknown = CallTool("everything.no-such-tool", json::object());
  EXPECT_EQ(unknown["error"]["code"], -32602) << unknown;
}

TEST_F(McpConnectorTest, IsErrorResultsPassThroughAsToolErrorsAndNeverOpenTheBreaker) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  Start(HttpConfig(server.url()));
  WaitForTool("everything.get-sum");
  for (int i = 0; i < 6; ++i) {  // twice the failure threshold
    const json bad = CallTool("everything.get-sum", {{"a", "not a number"}})["result"];
    ASSERT_EQ(bad["isError"], true) << bad;
    EXPECT_THAT(bad["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("Input validation error"))
        << "the server's own text, for the model";
    EXPECT_FALSE(bad.contains("structuredContent")) << "passed through unchanged, not toolgate's error shape";
    EXPECT_FALSE(bad["_meta"]["io.toolgate/execution_id"].get<std::string>().empty());
  }
  auto v1 = gw_->Invoke("everything.get-sum", {{"input", {{"a", "x"}}}}, alice_);
  EXPECT_EQ(Body(v1)["outcome"], "FAILED") << v1.body;
  EXPECT_EQ(Body(v1)["reason"], "tool_error");
  EXPECT_EQ(Body(v1)["tool_result"]["isError"], true);
  EXPECT_EQ(ConnectorView("everything")["breaker"]["state"], "CLOSED");
  // And the server still answers.
  EXPECT_EQ(CallTool("everything.echo", {{"message", "ok"}})["result"]["content"][0]["text"], "Echo: ok");
}

TEST_F(McpConnectorTest, ADeadServerOpensTheBreakerWhileItsLastToolListIsStillServed) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  Start(HttpConfig(server.url()));
  WaitForTool("everything.echo");
  WaitForSecondListFetch("everything");
  ASSERT_EQ(CallTool("everything.echo", {{"message", "up"}})["result"]["content"][0]["text"], "Echo: up");
  server.Kill();
  for (int i = 0; i < 3; ++i) {  // failure_threshold
    const json failed = CallTool("everything.echo", {{"message", "down"}})["result"];
    EXPECT_EQ(failed["isError"], true) << failed;
    EXPECT_EQ(failed["structuredContent"]["outcome"], "FAILED") << failed;
    EXPECT_EQ(failed["structuredContent"]["reason"], "connection_failed") << failed;
  }
  EXPECT_EQ(ConnectorView("everything")["breaker"]["state"], "OPEN");
  const json deferred = CallTool("everything.echo", {{"message", "down"}})["result"];
  EXPECT_EQ(deferred["isError"], true);
  EXPECT_EQ(deferred["structuredContent"]["outcome"], "DEFERRED");
  EXPECT_EQ(deferred["structuredContent"]["reason"], "breaker_open");
  EXPECT_GT(deferred["structuredContent"]["retry_after_ms"].get<int64_t>(), 0);
  // The last known list is still what agents see.
  EXPECT_THAT(ToolNames(), ::testing::Contains("everything.echo"));

  // A restarted gateway (same store) knows the list before the server is back (design §17.7).
  gw_->Terminate();
  Start(HttpConfig(server.url()));
  EXPECT_THAT(ToolNames(), ::testing::Contains("everything.echo"));
}

TEST_F(McpConnectorTest, AServerThatForgotTheSessionIsInitializedAgainOnce) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  // Two event loops, each with a session of its own once a call came through it: connections are
  // dealt to the loops in turn, and each call below comes on a connection of its own.
  std::string config = HttpConfig(server.url());
  config.replace(config.find("[server]\n"), 9, "[server]\nio_threads = 2\n");
  Start(config);
  WaitForTool("everything.echo");
  WaitForSecondListFetch("everything");
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(CallTool("everything.echo", {{"message", "first"}})["result"]["content"][0]["text"], "Echo: first");
  }
  // A new server process on the same port knows nothing of toolgate's Mcp-Session-Ids: it answers
  // the next call of each session 400 (the TypeScript SDK's answer to a stale session), and toolgate
  // initializes that session again, once: every call is answered.
  server.Kill();
  ASSERT_TRUE(server.Start());
  for (int i = 0; i < 4; ++i) {
    const json again = CallTool("everything.echo", {{"message", "second"}})["result"];
    EXPECT_EQ(again["content"][0]["text"], "Echo: second") << again << gw_->Log();
  }
  const std::string log = gw_->Log();
  size_t stale = 0;
  for (size_t at = log.find("session went stale"); at != std::string::npos;
       at = log.find("session went stale", at + 1)) {
    ++stale;
  }
  // One re-initialization per loop's session (and perhaps a third, should the tool list's refresh
  // come by on the main loop's session meanwhile); never one per call.
  EXPECT_GE(stale, 2u) << log;
  EXPECT_LE(stale, 3u) << log;
  EXPECT_EQ(ConnectorView("everything")["breaker"]["window_failures"], 0) << "a re-initialized session is no failure";
}

TEST_F(McpConnectorTest, AStreamableHttpServerKilledMidCallGivesConnectionLostReleasesTheSlotAndKeepsTheLedger) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  Start(HttpConfig(server.url()));
  WaitForTool("everything.trigger-long-running-operation");
  WaitForSecondListFetch("everything");
  auto slow = std::async(std::launch::async, [this] {
    return CallTool("everything.trigger-long-running-operation", {{"duration", 10}, {"steps", 10}})["result"];
  });
  // Bounded wait until the call holds its slot, then kill the server under it.
  const auto start = std::chrono::steady_clock::now();
  while (ConnectorView("everything")["in_flight"] != 1 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(ConnectorView("everything")["in_flight"], 1);
  // The slot is taken just before the request is written; a margin (against 10 s of work) so that
  // the kill finds it with the server, not before it was sent (that would be connection_failed).
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  server.Kill();
  const json lost = slow.get();
  EXPECT_EQ(lost["isError"], true) << lost;
  EXPECT_EQ(lost["structuredContent"]["outcome"], "FAILED") << lost;
  EXPECT_EQ(lost["structuredContent"]["reason"], "connection_lost") << lost << gw_->Log();
  EXPECT_EQ(ConnectorView("everything")["in_flight"], 0) << "the slot is released";

  // The ledger is complete: the call was invoked and ended, and every chain verifies.
  const std::string id = lost["structuredContent"]["execution_id"];
  const json record = Body(gw_->Public("GET", "/v1/executions/" + id, "", alice_));
  EXPECT_EQ(record["outcome"], "FAILED") << record;
  EXPECT_EQ(record["reason"], "connection_lost");
  std::vector<std::string> types;
  for (const auto& e : record["events"]) types.push_back(e["type"]);
  EXPECT_THAT(types, ::testing::Contains("TOOL_INVOKED")) << record;
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.back(), "TOOL_FAILED") << record;
  EXPECT_EQ(record["events"].back()["data"]["reason"], "connection_lost") << record;
  auto [code, out] = testing::RunCli({"ledger", "verify", "--config", gw_->config_path()}, dir_);
  EXPECT_EQ(code, 0) << out;
}

TEST_F(McpConnectorTest, AStdioServerIsStartedListedAndCalled) {
  Start(StdioConfig());
  WaitForTool("local.echo");
  const json echo = CallTool("local.echo", {{"message", "over stdio"}})["result"];
  EXPECT_EQ(WithoutToolgateMeta(echo), json({{"content", {{{"type", "text"}, {"text", "Echo: over stdio"}}}}})) << echo;
  const json sum = CallTool("local.get-sum", {{"a", 20}, {"b", 22}})["result"];
  EXPECT_THAT(sum["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("is 42"));
  // Concurrent calls over the one pipe are matched by id.
  std::vector<std::future<json>> calls;
  for (int i = 0; i < 4; ++i) {
    calls.push_back(std::async(std::launch::async, [this, i] {
      return CallTool("local.echo", {{"message", "m" + std::to_string(i)}})["result"];
    }));
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(calls[i].get()["content"][0]["text"], "Echo: m" + std::to_string(i));
  EXPECT_EQ(ChildrenOf(gw_->pid()).size(), 1u) << "one server process per instance";
  // The operator's view: the server as it named itself, its program (never its arguments or env).
  WaitForSecondListFetch("local");
  const json view = ConnectorView("local");
  EXPECT_EQ(view["kind"], "mcp_stdio");
  EXPECT_EQ(view["mcp"]["transport"], "stdio");
  EXPECT_EQ(view["mcp"]["program"], "/usr/bin/node");
  EXPECT_FALSE(view["mcp"].contains("url"));
  EXPECT_EQ(view["mcp"]["server_name"], "mcp-servers/everything") << view;
  EXPECT_TRUE(view["mcp"]["server_version"].is_string());
  EXPECT_GE(view["mcp"]["tool_count"].get<int64_t>(), 10);
  EXPECT_EQ(view["mcp"]["tool_count"].get<size_t>(), ToolNames().size()) << "what /mcp lists is what the view counts";
}

TEST_F(McpConnectorTest, AStdioServerKilledMidCallGivesConnectionLostReleasesTheSlotAndIsRestarted) {
  Start(StdioConfig());
  WaitForTool("local.trigger-long-running-operation");
  auto slow = std::async(std::launch::async, [this] {
    return CallTool("local.trigger-long-running-operation", {{"duration", 4}, {"steps", 4}})["result"];
  });
  // Bounded wait until the call holds its slot, then kill the server under it.
  const auto start = std::chrono::steady_clock::now();
  while (ConnectorView("local")["in_flight"] != 1 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(ConnectorView("local")["in_flight"], 1);
  const std::vector<pid_t> children = ChildrenOf(gw_->pid());
  ASSERT_EQ(children.size(), 1u);
  ASSERT_EQ(kill(children[0], SIGKILL), 0);
  const json lost = slow.get();
  EXPECT_EQ(lost["isError"], true) << lost;
  EXPECT_EQ(lost["structuredContent"]["outcome"], "FAILED");
  EXPECT_EQ(lost["structuredContent"]["reason"], "connection_lost");
  EXPECT_EQ(ConnectorView("local")["in_flight"], 0) << "the slot is released";
  // The server is started again (after its backoff): a later call works.
  json again;
  const auto retry_start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - retry_start < std::chrono::seconds(20)) {
    again = CallTool("local.echo", {{"message", "back"}})["result"];
    if (!again.value("isError", false)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(again["content"][0]["text"], "Echo: back") << again;
  const std::vector<pid_t> now = ChildrenOf(gw_->pid());
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0], children[0]);
}

// A client that listens for progress (`_meta.progressToken`) gets the server's progress while the
// call runs, on the call's event stream, then the answer (design §14).
TEST_F(McpConnectorTest, ProgressOfAStreamableHttpServerReachesTheClientBeforeTheAnswer) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  Start(HttpConfig(server.url()));
  WaitForTool("everything.trigger-long-running-operation");
  ExpectProgressThenAnswer("everything.trigger-long-running-operation", "everything");
}

TEST_F(McpConnectorTest, ProgressOfAStdioServerReachesTheClientBeforeTheAnswer) {
  Start(StdioConfig());
  WaitForTool("local.trigger-long-running-operation");
  ExpectProgressThenAnswer("local.trigger-long-running-operation", "local");
}

// Two clients with the same token (SDK clients number theirs from 0) at once on one stdio server,
// whose notifications share a pipe: each gets its own call's progress (toolgate's tokens differ).
TEST_F(McpConnectorTest, TwoCallsWithTheSameTokenOnOneStdioServerEachGetTheirOwnProgress) {
  Start(StdioConfig());
  WaitForTool("local.trigger-long-running-operation");
  auto run = [this](int steps) {
    return RawCall("local.trigger-long-running-operation", {{"duration", 0.8}, {"steps", steps}},
                   {{"progressToken", 0}});
  };
  auto three = std::async(std::launch::async, run, 3);
  auto five = std::async(std::launch::async, run, 5);
  const api::ClientResult a = three.get();
  const api::ClientResult b = five.get();
  const std::vector<json> ea = Events(a.body);
  const std::vector<json> eb = Events(b.body);
  ASSERT_EQ(ea.size(), 4u) << a.body;
  ASSERT_EQ(eb.size(), 6u) << b.body;
  for (size_t i = 0; i + 1 < ea.size(); ++i) {
    EXPECT_EQ(ea[i]["params"]["total"], 3) << a.body;
    EXPECT_EQ(ea[i]["params"]["progressToken"], 0);
  }
  for (size_t i = 0; i + 1 < eb.size(); ++i) {
    EXPECT_EQ(eb[i]["params"]["total"], 5) << b.body;
    EXPECT_EQ(eb[i]["params"]["progressToken"], 0);
  }
}

// The client goes away after the first progress: the call still runs to its end, is recorded once
// and gives its slot back; the same key then answers from that record.
TEST_F(McpConnectorTest, ACallWhoseClientLeftItsProgressStreamEndsRecordedAndReleasesItsSlot) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  Start(HttpConfig(server.url()));
  WaitForTool("everything.trigger-long-running-operation");
  const json meta = {{"progressToken", 1}, {"io.toolgate/idempotency_key", "left-the-stream-1"}};
  const std::string body = testing::McpToolsCallBody("everything.trigger-long-running-operation",
                                                     {{"duration", 1.5}, {"steps", 3}}, meta, 3);
  const int fd = testing::ConnectLoopback(gw_->public_port());
  ASSERT_GE(fd, 0);
  const std::string request = testing::McpPostBytes("1.1", alice_, body);
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  ReadUntil(fd, "notifications/progress", got);
  close(fd);  // gone after the first progress, long before the answer
  ASSERT_THAT(got, ::testing::HasSubstr("text/event-stream"));
  ASSERT_THAT(got, ::testing::HasSubstr("notifications/progress"));
  EXPECT_THAT(got, ::testing::Not(::testing::HasSubstr("Long running operation completed")));

  // Bounded wait for the call's end: its slot comes back.
  const auto start = std::chrono::steady_clock::now();
  while (ConnectorView("everything")["in_flight"] != 0 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ConnectorView("everything")["in_flight"], 0) << "the slot is released";
  // The same key: answered from the call's record (the recorded result, the same execution).
  json again;
  for (int i = 0; i < 100; ++i) {
    again = Body(RawCall("everything.trigger-long-running-operation", {{"duration", 1.5}, {"steps", 3}},
                         {{"io.toolgate/idempotency_key", "left-the-stream-1"}}))["result"];
    if (!again.value("isError", false)) break;  // DEFERRED intent_in_progress until the first has ended
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_THAT(again["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("Long running operation completed"))
      << again;
  const std::string id = again["_meta"]["io.toolgate/execution_id"];
  const json record = Body(gw_->Public("GET", "/v1/executions/" + id, "", alice_));
  EXPECT_EQ(record["outcome"], "SUCCEEDED") << record;
  std::vector<std::string> types;
  for (const auto& e : record["events"]) types.push_back(e["type"]);
  EXPECT_EQ(std::count(types.begin(), types.end(), "TOOL_INVOKED"), 1) << "it ran once: " << record;
  EXPECT_THAT(types, ::testing::ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED", "INTENT_HIT"))
      << record;
  auto [code, out] = testing::RunCli({"ledger", "verify", "--config", gw_->config_path()}, dir_);
  EXPECT_EQ(code, 0) << out;
}

// The access log's line for a streamed answer is written when the stream ends, with the call's whole
// length (not the time to its first progress), and says whether the client stayed to the end.
TEST_F(McpConnectorTest, TheAccessLogTimesAStreamedCallToItsEndAndSaysWhenItsClientLeft) {
  Start(StdioConfig() + "[log]\nformat = \"json\"\naccess = true\n");
  WaitForTool("local.trigger-long-running-operation");
  const auto started = std::chrono::steady_clock::now();
  const api::ClientResult whole =
      RawCall("local.trigger-long-running-operation", {{"duration", 1.2}, {"steps", 3}}, {{"progressToken", "w"}});
  const double took_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  ASSERT_EQ(HeaderOf(whole, "content-type"), "text/event-stream") << whole.body;
  ASSERT_EQ(Events(whole.body).size(), 4u) << whole.body;

  // A client that leaves after the first progress.
  const int fd = testing::ConnectLoopback(gw_->public_port());
  ASSERT_GE(fd, 0);
  const std::string request =
      testing::McpPostBytes("1.1", alice_,
                            testing::McpToolsCallBody("local.trigger-long-running-operation",
                                                      {{"duration", 1.2}, {"steps", 3}}, {{"progressToken", "left"}}));
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  ASSERT_TRUE(ReadUntil(fd, "notifications/progress", got)) << got;
  close(fd);

  // Both lines, bounded: the second is written once the connection notices its client left.
  std::vector<json> streamed;
  const auto start = std::chrono::steady_clock::now();
  while (streamed.size() < 2 && std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    streamed.clear();
    std::istringstream in(gw_->Log());
    for (std::string line; std::getline(in, line);) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("event", "") == "http_request" && j.value("path", "") == "/mcp" &&
          j.contains("streamed")) {
        streamed.push_back(j);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(streamed.size(), 2u) << gw_->Log();
  EXPECT_EQ(streamed[0]["complete"], true) << streamed[0];
  EXPECT_EQ(streamed[0]["status"], 200) << streamed[0];
  // The whole call (its three steps take 1.2 s), within what the client itself measured; the first
  // progress came after 0.4 s.
  EXPECT_GE(streamed[0]["latency_ms"].get<double>(), 1100) << streamed[0];
  EXPECT_LE(streamed[0]["latency_ms"].get<double>(), took_ms) << streamed[0];
  EXPECT_EQ(streamed[0]["tenant"], "tenant-a") << streamed[0];
  EXPECT_EQ(streamed[1]["complete"], false) << streamed[1];
  for (const json& line : streamed) EXPECT_EQ(line.dump().find(alice_), std::string::npos) << "no token";
}

// A streamed answer is framed in chunks and ends: the connection serves the next request. An
// HTTP/1.0 client, which knows no chunks, gets the answer as JSON (no stream) and then the close.
TEST_F(McpConnectorTest, AStreamedAnswerKeepsItsConnectionAndAnHttp10ClientGetsJson) {
  EverythingHttpServer server(dir_);
  ASSERT_TRUE(server.Start());
  Start(HttpConfig(server.url()));
  WaitForTool("everything.trigger-long-running-operation");
  const std::string call = testing::McpToolsCallBody("everything.trigger-long-running-operation",
                                                     {{"duration", 0.3}, {"steps", 2}}, {{"progressToken", "t"}}, 5);
  const int fd = testing::ConnectLoopback(gw_->public_port());
  ASSERT_GE(fd, 0);
  std::string request = testing::McpPostBytes("1.1", alice_, call);
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  EXPECT_TRUE(ReadUntil(fd, "\r\n0\r\n\r\n", got)) << "the last chunk: " << got;
  EXPECT_THAT(got, ::testing::HasSubstr("Transfer-Encoding: chunked"));
  EXPECT_THAT(got, ::testing::HasSubstr("notifications/progress"));
  EXPECT_THAT(got, ::testing::HasSubstr("Long running operation completed"));
  request = testing::McpPostBytes("1.1", alice_, R"({"jsonrpc":"2.0","id":9,"method":"ping"})");
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string next;
  EXPECT_TRUE(ReadUntil(fd, R"({"jsonrpc":"2.0","id":9,"result":{}})", next)) << next;
  EXPECT_EQ(next.rfind("HTTP/1.1 200", 0), 0u) << next;
  close(fd);

  const int old = testing::ConnectLoopback(gw_->public_port());
  ASSERT_GE(old, 0);
  request = testing::McpPostBytes("1.0", alice_, call);
  ASSERT_EQ(send(old, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string whole;
  ReadUntil(old, "never sent: read to the close", whole);
  close(old);
  EXPECT_EQ(whole.rfind("HTTP/1.0 200", 0), 0u) << whole;
  EXPECT_THAT(whole, ::testing::HasSubstr("Content-Type: application/json"));
  EXPECT_THAT(whole, ::testing::Not(::testing::HasSubstr("chunked")));
  EXPECT_THAT(whole, ::testing::Not(::testing::HasSubstr("notifications/progress")));
  EXPECT_THAT(whole, ::testing::HasSubstr("Long running operation completed"));
}

}  // namespace
}  // namespace toolgate
