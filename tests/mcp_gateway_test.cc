// The MCP front door (design §14, §17.7, §17.8) of the real `toolgate serve` binary: JSON-RPC over
// Streamable HTTP written by hand (revisions 2025-06-18/2025-11-25 with initialize and sessions, and
// 2026-07-28 with per-request metadata), auth and Origin, hostile bodies, and the official TypeScript
// SDK as a client. A fake downstream counts the calls that reached it.

#include <chrono>
#include <sstream>
#include <thread>

#include "downstream_key.h"
#include "fake_downstream.h"
#include "gateway_harness.h"
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
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr char kModern[] = "2026-07-28";

class McpGatewayTest : public ::testing::Test {
 protected:
  std::string Config(const std::string& extra = "") {
    return testing::BaseConfig(dir_.file("store.db")) + "[connectors.crm]\nbase_url = \"" + crm_.base_url() +
           "\"\ntimeout_ms = 1000\nmax_in_flight = 8\n[connectors.crm.breaker]\nfailure_threshold = 3\ncooldown_s = "
           "60\n"
           "[tools.\"crm.get_deal\"]\ndescription = \"Read one deal\"\n"
           "input_schema = '{\"type\":\"object\",\"properties\":{\"deal_id\":{\"type\":\"integer\"}}}'\n"
           "[tools.\"crm.send_email\"]\naction_type = \"email.send\"\n"
           "[tools.\"ghost.tool\"]\ndescription = \"no connector serves it\"\n" +
           extra;
  }
  GatewayProcess& Start(const std::string& config) {
    gw_ = std::make_unique<GatewayProcess>(config, dir_);
    EXPECT_TRUE(gw_->Start());
    return *gw_;
  }

  // POST /mcp with a raw body.
  api::ClientResult Post(const std::string& body, const std::string& token, Headers headers = {}) {
    api::ClientRequest r;
    r.address = {"127.0.0.1", gw_->public_port()};
    r.method = "POST";
    r.target = "/mcp";
    r.body = body;
    r.timeout = std::chrono::seconds(30);
    r.headers.emplace_back("Content-Type", "application/json");
    bool has_accept = false;
    for (const auto& [k, v] : headers) has_accept |= k == "Accept";
    if (!has_accept) r.headers.emplace_back("Accept", "application/json, text/event-stream");
    if (!token.empty()) r.headers.emplace_back("Authorization", "Bearer " + token);
    for (auto& h : headers) r.headers.push_back(std::move(h));
    return api::HttpCall(std::move(r));
  }
  api::ClientResult Request(const std::string& method, const std::string& target, const std::string& token,
                            Headers headers = {}) {
    api::ClientRequest r;
    r.address = {"127.0.0.1", gw_->public_port()};
    r.method = method;
    r.target = target;
    r.headers = std::move(headers);
    if (!token.empty()) r.headers.emplace_back("Authorization", "Bearer " + token);
    return api::HttpCall(std::move(r));
  }
  // A 2025-06-18 request (no session: it is optional).
  json Rpc(const std::string& method, const json& params, const std::string& token = "", int id = 1) {
    auto r = Post(json{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}}.dump(),
                  token.empty() ? alice_ : token, {{"MCP-Protocol-Version", "2025-06-18"}});
    EXPECT_EQ(r.status, 200) << r.body;
    return Body(r);
  }
  // A 2026-07-28 request: _meta and the mirrored headers.
  api::ClientResult Modern(const std::string& method, json params, Headers extra = {}, bool headers = true) {
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = kModern;
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json::object();
    Headers h;
    if (headers) {
      h = {{"MCP-Protocol-Version", kModern}, {"Mcp-Method", method}};
      if (params.contains("name") && params["name"].is_string())
        h.emplace_back("Mcp-Name", params["name"].get<std::string>());
    }
    for (auto& e : extra) {
      bool replaced = false;
      for (auto& [k, v] : h) {
        if (k == e.first) {
          v = e.second;
          replaced = true;
        }
      }
      if (!replaced) h.push_back(e);
    }
    return Post(json{{"jsonrpc", "2.0"}, {"id", 7}, {"method", method}, {"params", params}}.dump(), alice_, h);
  }
  std::vector<std::string> ToolNames(const json& result) {
    std::vector<std::string> names;
    for (const auto& t : result["tools"]) names.push_back(t["name"]);
    return names;
  }
  // Sets a kill switch and waits (bounded) until tools/list for `token` stops showing `tool`.
  void KillAndWait(const json& ks, const std::string& tool, const std::string& token) {
    auto set = gw_->Admin("PUT", "/admin/kill-switches", ks.dump());
    ASSERT_EQ(set.status, 200) << set.body;
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(3)) {
      auto names = ToolNames(Rpc("tools/list", json::object(), token)["result"]);
      if (std::find(names.begin(), names.end(), tool) == names.end()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << tool << " still listed after the kill switch";
  }

  TempDir dir_;
  FakeDownstream crm_;
  std::unique_ptr<GatewayProcess> gw_;
  const std::string alice_ = Token("tenant-a");
  const std::string bob_ = Token("tenant-b");
};

TEST_F(McpGatewayTest, InitializeNegotiatesIssuesASignedSessionAndLaterRequestsAreChecked) {
  Start(Config());
  auto init = Post(R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",)"
                   R"("capabilities":{},"clientInfo":{"name":"t","version":"1"}}})",
                   alice_);
  ASSERT_EQ(init.status, 200) << init.body;
  const json r = Body(init)["result"];
  EXPECT_EQ(r["protocolVersion"], "2025-06-18");
  EXPECT_EQ(r["serverInfo"]["name"], "toolgate");
  EXPECT_EQ(r["capabilities"]["tools"]["listChanged"], false);
  const std::string session = HeaderOf(init, "mcp-session-id");
  ASSERT_FALSE(session.empty());

  // A revision toolgate does not speak: it answers its latest.
  auto old =
      Body(Post(R"({"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"1999-01-01"}})", alice_));
  EXPECT_EQ(old["result"]["protocolVersion"], "2025-11-25");

  auto initialized = Post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", alice_,
                          {{"Mcp-Session-Id", session}, {"MCP-Protocol-Version", "2025-06-18"}});
  EXPECT_EQ(initialized.status, 202);
  EXPECT_TRUE(initialized.body.empty());
  // A JSON-RPC response from the client is accepted the same way.
  EXPECT_EQ(Post(R"({"jsonrpc":"2.0","id":"s1","result":{}})", alice_).status, 202);

  const std::string ping = R"({"jsonrpc":"2.0","id":3,"method":"ping"})";
  auto ok = Post(ping, alice_, {{"Mcp-Session-Id", session}, {"MCP-Protocol-Version", "2025-06-18"}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(Body(ok)["result"], json::object());
  EXPECT_EQ(Body(ok)["id"], 3);
  auto bad_version = Post(ping, alice_, {{"Mcp-Session-Id", session}, {"MCP-Protocol-Version", "2024-01-01"}});
  EXPECT_EQ(bad_version.status, 400) << bad_version.body;
  auto forged = Post(ping, alice_, {{"Mcp-Session-Id", session + "0"}, {"MCP-Protocol-Version", "2025-06-18"}});
  EXPECT_EQ(forged.status, 404) << "an id toolgate did not sign";
  auto foreign = Post(ping, bob_, {{"Mcp-Session-Id", session}, {"MCP-Protocol-Version", "2025-06-18"}});
  EXPECT_EQ(foreign.status, 404) << "a session is bound to its tenant";

  auto get = Request("GET", "/mcp", alice_);
  EXPECT_EQ(get.status, 405);
  EXPECT_THAT(HeaderOf(get, "allow"), ::testing::HasSubstr("POST"));
  EXPECT_EQ(Request("DELETE", "/mcp", alice_).status, 400) << "DELETE needs a session";
  auto del = Request("DELETE", "/mcp", alice_, {{"Mcp-Session-Id", session}});
  EXPECT_TRUE(del.status == 200 || del.status == 204) << del.status;
}

TEST_F(McpGatewayTest, ToolsListShowsConfiguredToolsAndHidesWhatAKillSwitchBlocksForTheTenant) {
  Start(Config());
  json list = Rpc("tools/list", json::object())["result"];
  EXPECT_THAT(ToolNames(list),
              ::testing::ElementsAre("crm.get_deal", "crm.send_email"));  // sorted; ghost has no connector
  EXPECT_EQ(list["tools"][0]["description"], "Read one deal");
  EXPECT_EQ(list["tools"][0]["inputSchema"]["properties"]["deal_id"]["type"], "integer");
  EXPECT_EQ(list["tools"][1]["inputSchema"], json({{"type", "object"}}));
  EXPECT_FALSE(list["tools"][1].contains("description"));
  EXPECT_FALSE(list.contains("resultType")) << "2025 revisions have no resultType";

  KillAndWait(
      {{"scope", "tenant_action"}, {"key", "tenant-a/email.send"}, {"reason", "spam"}, {"requested_by", "oncall"}},
      "crm.send_email", alice_);
  EXPECT_THAT(ToolNames(Rpc("tools/list", json::object(), alice_)["result"]), ::testing::ElementsAre("crm.get_deal"));
  EXPECT_THAT(ToolNames(Rpc("tools/list", json::object(), bob_)["result"]),
              ::testing::ElementsAre("crm.get_deal", "crm.send_email"))
      << "another tenant still sees it";

  // The hidden tool, called anyway, is BLOCKED — an isError result a model can read.
  json blocked = Rpc("tools/call", {{"name", "crm.send_email"}, {"arguments", json::object()}})["result"];
  EXPECT_EQ(blocked["isError"], true);
  EXPECT_EQ(blocked["structuredContent"]["outcome"], "BLOCKED");
  EXPECT_EQ(blocked["structuredContent"]["reason"], "kill_switch");
  EXPECT_THAT(blocked["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("kill switch"));
  EXPECT_EQ(crm_.total(), 0);
}

TEST_F(McpGatewayTest, ToolsCallRunsTheInvocationPathAndMapsSuccess) {
  crm_.set_behavior([](const FakeDownstream::Request& req) {
    if (req.path == "/crm.list") return Reply{200, R"([1,2,3])"};
    return Reply{200, R"({"deal":{"id":7,"name":"Ünïcode"},"echo":)" + req.body + "}"};
  });
  Start(Config());
  json res = Rpc("tools/call", {{"name", "crm.get_deal"}, {"arguments", {{"deal_id", 7}}}})["result"];
  ASSERT_EQ(res["isError"], false) << res;
  EXPECT_EQ(res["structuredContent"]["deal"]["id"], 7);
  EXPECT_EQ(res["structuredContent"]["echo"]["deal_id"], 7);
  EXPECT_EQ(json::parse(res["content"][0]["text"].get<std::string>()), res["structuredContent"]);
  EXPECT_EQ(res["content"][0]["type"], "text");
  const std::string id = res["_meta"]["io.toolgate/execution_id"];
  ASSERT_EQ(crm_.count("/crm.get_deal"), 1);
  EXPECT_EQ(crm_.requests()[0].headers.at("x-toolgate-tenant-id"), "tenant-a");

  // The same execution and ledger as /v1.
  auto exec = gw_->Public("GET", "/v1/executions/" + id, "", alice_);
  ASSERT_EQ(exec.status, 200) << exec.body;
  EXPECT_EQ(Body(exec)["outcome"], "SUCCEEDED");
  EXPECT_EQ(Body(exec)["events"].size(), 3u);

  // A JSON answer that is not an object; arguments left out are {}.
  json list = Rpc("tools/call", {{"name", "crm.list"}})["result"];
  EXPECT_EQ(list["structuredContent"], json({{"result", {1, 2, 3}}}));
  EXPECT_EQ(crm_.requests().back().body, "{}");

  // Unknown tools and bad params are JSON-RPC errors; nothing reaches the downstream.
  const int before = crm_.total();
  EXPECT_EQ(Rpc("tools/call", {{"name", "nope.tool"}})["error"]["code"], -32602);
  EXPECT_EQ(Rpc("tools/call", {{"name", "crm/../x"}})["error"]["code"], -32602);
  EXPECT_EQ(Rpc("tools/call", {{"name", "crm.get_deal"}, {"arguments", {1, 2}}})["error"]["code"], -32602);
  EXPECT_EQ(Rpc("tools/call", {{"arguments", json::object()}})["error"]["code"], -32602);
  EXPECT_EQ(Rpc("tools/call",
                {{"name", "crm.get_deal"}, {"_meta", {{"io.toolgate/idempotency_key", "has space"}}}})["error"]["code"],
            -32602);
  EXPECT_EQ(crm_.total(), before);
}

// S11 on the MCP front door: a request naming tenant_id or account_id in its params is refused
// (JSON-RPC -32602, tenant_from_token_only) and reaches nothing, while a tool's own arguments may name
// anything; the access log ties every answer to the token's tenant, and a call's to its execution.
TEST_F(McpGatewayTest, TheTenantIsTheTokensNeverTheParamsAndTheAccessLogNamesIt) {
  Start(Config("[log]\nformat = \"json\"\naccess = true\n"));
  for (const char* field : {"tenant_id", "account_id"}) {
    json refused = Rpc("tools/call", {{"name", "crm.get_deal"}, {field, "tenant-b"}});
    EXPECT_EQ(refused["error"]["code"], -32602) << refused;
    EXPECT_THAT(refused["error"]["message"].get<std::string>(), ::testing::HasSubstr("tenant_from_token_only"));
    EXPECT_EQ(Rpc("tools/list", {{field, "tenant-b"}})["error"]["code"], -32602);
  }
  EXPECT_EQ(crm_.total(), 0);
  json res = Rpc("tools/call", {{"name", "crm.get_deal"}, {"arguments", {{"tenant_id", "the tool's own"}}}})["result"];
  ASSERT_EQ(res["isError"], false) << res;
  ASSERT_EQ(crm_.total(), 1);
  EXPECT_EQ(json::parse(crm_.requests()[0].body)["tenant_id"], "the tool's own");
  EXPECT_EQ(crm_.requests()[0].headers.at("x-toolgate-tenant-id"), "tenant-a");
  const std::string id = res["_meta"]["io.toolgate/execution_id"];
  gw_->Terminate();
  const std::string log = gw_->Log();
  std::istringstream lines(log);
  std::string line;
  int mcp_answers = 0, naming_the_call = 0;
  while (std::getline(lines, line)) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("event", "") != "http_request" || j.value("path", "") != "/mcp") continue;
    ++mcp_answers;
    EXPECT_EQ(j.value("tenant", ""), "tenant-a") << line;
    naming_the_call += j.value("execution_id", "") == id;
  }
  EXPECT_EQ(mcp_answers, 5) << log;
  EXPECT_EQ(naming_the_call, 1) << "the call's line names its execution\n" << log;
}

TEST_F(McpGatewayTest, AnIdempotencyKeyInMetaAnswersTheSecondCallWithoutASecondDownstreamCall) {
  crm_.set_behavior([](const auto&) { return Reply{200, R"({"sent":true})"}; });
  Start(Config());
  const json params = {{"name", "crm.send_email"},
                       {"arguments", {{"to", "a@example.com"}}},
                       {"_meta", {{"io.toolgate/idempotency_key", "email-42"}}}};
  json first = Rpc("tools/call", params)["result"];
  json second = Rpc("tools/call", params)["result"];
  ASSERT_EQ(first["isError"], false) << first;
  ASSERT_EQ(second["isError"], false) << second;
  EXPECT_EQ(second["structuredContent"], first["structuredContent"]);
  EXPECT_EQ(crm_.total(), 1) << "the second call was answered from the intent record";
  EXPECT_EQ(crm_.requests()[0].headers.at("idempotency-key"), testing::DownstreamKey("tenant-a", "email-42"));

  json other = params;
  other["arguments"]["to"] = "b@example.com";
  json reused = Rpc("tools/call", other)["result"];
  EXPECT_EQ(reused["isError"], true);
  EXPECT_EQ(reused["structuredContent"]["error"], "idempotency_key_reused");
  EXPECT_THAT(reused["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("did not run"));
  EXPECT_EQ(crm_.total(), 1);
}

TEST_F(McpGatewayTest, FailuresAndAnOpenBreakerAreIsErrorResultsWithRetryAfter) {
  crm_.set_behavior([](const auto&) { return Reply{500, R"({"oops":1})"}; });
  Start(Config());
  for (int i = 0; i < 3; ++i) {
    json failed = Rpc("tools/call", {{"name", "crm.get_deal"}, {"arguments", {{"deal_id", i}}}})["result"];
    ASSERT_EQ(failed["isError"], true) << failed;
    EXPECT_EQ(failed["structuredContent"]["outcome"], "FAILED");
    EXPECT_EQ(failed["structuredContent"]["reason"], "downstream_error");
    EXPECT_FALSE(failed["structuredContent"]["execution_id"].get<std::string>().empty());
    EXPECT_EQ(failed["_meta"]["io.toolgate/execution_id"], failed["structuredContent"]["execution_id"]);
  }
  json deferred = Rpc("tools/call", {{"name", "crm.get_deal"}, {"arguments", {{"deal_id", 9}}}})["result"];
  ASSERT_EQ(deferred["isError"], true) << deferred;
  EXPECT_EQ(deferred["structuredContent"]["outcome"], "DEFERRED");
  EXPECT_EQ(deferred["structuredContent"]["reason"], "breaker_open");
  ASSERT_TRUE(deferred["structuredContent"]["retry_after_ms"].is_number_integer());
  EXPECT_GT(deferred["structuredContent"]["retry_after_ms"].get<int64_t>(), 0);
  EXPECT_THAT(deferred["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("Try again in"));
  EXPECT_EQ(crm_.total(), 3) << "the breaker kept the fourth call from the downstream";
}

TEST_F(McpGatewayTest, Revision20260728NeedsNoInitializeAndChecksTheMirroredHeaders) {
  crm_.set_behavior([](const auto&) { return Reply{200, R"({"ok":true})"}; });
  Start(Config());
  auto discover = Modern("server/discover", json::object());
  ASSERT_EQ(discover.status, 200) << discover.body;
  json d = Body(discover)["result"];
  EXPECT_THAT(d["supportedVersions"], ::testing::Contains(kModern));
  EXPECT_EQ(d["resultType"], "complete");
  EXPECT_TRUE(d["ttlMs"].is_number_integer());
  EXPECT_TRUE(d["cacheScope"] == "public" || d["cacheScope"] == "private");
  EXPECT_EQ(d["capabilities"]["tools"]["listChanged"], false);
  EXPECT_TRUE(HeaderOf(discover, "mcp-session-id").empty()) << "no sessions in 2026-07-28";

  json list = Body(Modern("tools/list", json::object()))["result"];
  EXPECT_EQ(list["resultType"], "complete");
  EXPECT_EQ(list["cacheScope"], "private");
  EXPECT_TRUE(list["ttlMs"].is_number_integer());
  EXPECT_EQ(list["tools"].size(), 2u);

  auto call = Modern("tools/call", {{"name", "crm.get_deal"}, {"arguments", {{"deal_id", 1}}}});
  ASSERT_EQ(call.status, 200) << call.body;
  EXPECT_EQ(Body(call)["result"]["resultType"], "complete");
  EXPECT_EQ(Body(call)["result"]["isError"], false);
  EXPECT_EQ(Body(call)["id"], 7);
  // Mcp-Name in the base64 sentinel form (crm.get_deal).
  auto encoded = Modern("tools/call", {{"name", "crm.get_deal"}}, {{"Mcp-Name", "=?base64?Y3JtLmdldF9kZWFs?="}});
  EXPECT_EQ(encoded.status, 200) << encoded.body;
  EXPECT_EQ(crm_.total(), 2);

  auto wrong_name = Modern("tools/call", {{"name", "crm.get_deal"}}, {{"Mcp-Name", "crm.send_email"}});
  EXPECT_EQ(wrong_name.status, 400);
  EXPECT_EQ(Body(wrong_name)["error"]["code"], -32020);
  auto wrong_method = Modern("tools/list", json::object(), {{"Mcp-Method", "tools/call"}});
  EXPECT_EQ(wrong_method.status, 400);
  EXPECT_EQ(Body(wrong_method)["error"]["code"], -32020);
  auto no_headers = Modern("tools/list", json::object(), {}, /*headers=*/false);
  EXPECT_EQ(no_headers.status, 400);
  EXPECT_EQ(Body(no_headers)["error"]["code"], -32020);
  auto version_mismatch = Modern("tools/list", json::object(), {{"MCP-Protocol-Version", "2025-06-18"}});
  EXPECT_EQ(version_mismatch.status, 400);
  EXPECT_EQ(Body(version_mismatch)["error"]["code"], -32020);
  EXPECT_EQ(crm_.total(), 2) << "a mismatched tools/call never ran";
  // Earlier revisions do not require the mirrored headers, but one that is sent must match the body:
  // a proxy in front may route or filter on it.
  const std::string older_call =
      json{{"jsonrpc", "2.0"}, {"id", 8}, {"method", "tools/call"}, {"params", {{"name", "crm.get_deal"}}}}.dump();
  for (const Headers& mismatched : {Headers{{"Mcp-Name", "crm.send_email"}}, Headers{{"Mcp-Method", "tools/list"}},
                                    Headers{{"Mcp-Name", "=?base64?!!?="}}}) {
    Headers h = mismatched;
    h.emplace_back("MCP-Protocol-Version", "2025-11-25");
    auto older = Post(older_call, alice_, h);
    EXPECT_EQ(older.status, 400) << mismatched[0].first << ": " << older.body;
    EXPECT_EQ(Body(older)["error"]["code"], -32020) << older.body;
  }
  EXPECT_EQ(crm_.total(), 2) << "a mismatched tools/call of an earlier revision never ran";
  auto older_matching =
      Post(older_call, alice_,
           {{"MCP-Protocol-Version", "2025-11-25"}, {"Mcp-Method", "tools/call"}, {"Mcp-Name", "crm.get_deal"}});
  EXPECT_EQ(older_matching.status, 200) << older_matching.body;
  auto older_without = Post(older_call, alice_, {{"MCP-Protocol-Version", "2025-06-18"}});
  EXPECT_EQ(older_without.status, 200) << older_without.body;
  EXPECT_EQ(crm_.total(), 4);

  json future = {{"_meta", {{"io.modelcontextprotocol/protocolVersion", "2031-01-01"}}}};
  auto unsupported = Post(json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", "tools/list"}, {"params", future}}.dump(),
                          alice_, {{"MCP-Protocol-Version", "2031-01-01"}, {"Mcp-Method", "tools/list"}});
  EXPECT_EQ(unsupported.status, 400);
  EXPECT_EQ(Body(unsupported)["error"]["code"], -32022);
  EXPECT_THAT(Body(unsupported)["error"]["data"]["supported"], ::testing::Contains(kModern));

  auto unknown = Modern("resources/list", json::object());
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(Body(unknown)["error"]["code"], -32601);
}

TEST_F(McpGatewayTest, AuthIsTheV1TokenAnd401PointsAtTheProtectedResourceDocument) {
  Start(Config("[mcp]\nauthorization_servers = [\"https://auth.example.com\"]\n"));
  const std::string ping = R"({"jsonrpc":"2.0","id":1,"method":"ping"})";
  const std::string base = "http://127.0.0.1:" + std::to_string(gw_->public_port());
  for (const std::string& token : {std::string(), std::string("not-a-jwt"), Token("tenant-a", {}, -3600)}) {
    auto r = Post(ping, token);
    EXPECT_EQ(r.status, 401) << token;
    EXPECT_EQ(HeaderOf(r, "www-authenticate"),
              "Bearer resource_metadata=\"" + base + "/.well-known/oauth-protected-resource/mcp\"");
  }
  // The scheme's name is case-insensitive (RFC 9110 §11.1): "bearer" and "BEARER" are Bearer.
  for (const char* scheme : {"bearer ", "BEARER "}) {
    auto r = Post(ping, "", {{"Authorization", scheme + alice_}, {"MCP-Protocol-Version", "2025-06-18"}});
    EXPECT_EQ(r.status, 200) << scheme << r.body;
  }
  EXPECT_EQ(Post(ping, "", {{"Authorization", "Basic " + alice_}}).status, 401);
  for (const char* path : {"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"}) {
    auto doc = Request("GET", path, "");
    ASSERT_EQ(doc.status, 200) << path;
    EXPECT_EQ(Body(doc)["resource"], base + "/mcp");
    EXPECT_EQ(Body(doc)["authorization_servers"], json({"https://auth.example.com"}));
    EXPECT_EQ(Body(doc)["bearer_methods_supported"], json({"header"}));
  }
}

TEST_F(McpGatewayTest, AForeignOriginIs403BeforeAuthTheOwnAndConfiguredOnesPass) {
  Start(Config("[mcp]\nallowed_origins = [\"https://App.Example.com:443\"]\n"));
  const std::string ping = R"({"jsonrpc":"2.0","id":1,"method":"ping"})";
  EXPECT_EQ(Post(ping, alice_, {{"Origin", "http://evil.example"}}).status, 403);
  EXPECT_EQ(Post(ping, "", {{"Origin", "http://evil.example"}}).status, 403) << "refused before auth";
  EXPECT_EQ(Post(ping, alice_, {{"Origin", "null"}}).status, 403);
  const std::string own = "http://127.0.0.1:" + std::to_string(gw_->public_port());
  EXPECT_EQ(Post(ping, alice_, {{"Origin", own}}).status, 200);
  EXPECT_EQ(Post(ping, alice_, {{"Origin", "https://app.example.com"}}).status, 200);
  EXPECT_EQ(Post(ping, alice_).status, 200) << "no Origin (not a browser): not checked";
}

TEST_F(McpGatewayTest, HostileAndMalformedMessagesGetJsonRpcErrorsAndNeverCrash) {
  Start(Config());
  auto code = [](const api::ClientResult& r) { return Body(r)["error"]["code"]; };
  auto parse = Post("{\"jsonrpc\":", alice_);
  EXPECT_EQ(parse.status, 400);
  EXPECT_EQ(code(parse), -32700);
  EXPECT_TRUE(Body(parse)["id"].is_null());
  EXPECT_EQ(code(Post(R"([{"jsonrpc":"2.0","id":1,"method":"ping"}])", alice_)), -32600) << "batches are refused";
  EXPECT_EQ(code(Post("[]", alice_)), -32600);
  EXPECT_EQ(code(Post("42", alice_)), -32600);
  auto wrong_version = Post(R"({"jsonrpc":"1.0","id":5,"method":"ping"})", alice_);
  EXPECT_EQ(code(wrong_version), -32600);
  EXPECT_EQ(Body(wrong_version)["id"], 5);
  for (const char* id : {"null", "{}", "[1]", "true"}) {
    EXPECT_EQ(code(Post(std::string(R"({"jsonrpc":"2.0","method":"ping","id":)") + id + "}", alice_)), -32600) << id;
  }
  EXPECT_EQ(code(Post(R"({"jsonrpc":"2.0","id":1,"method":7})", alice_)), -32600);
  EXPECT_EQ(code(Post(R"({"jsonrpc":"2.0","id":1})", alice_)), -32600);
  EXPECT_EQ(code(Post(R"({"jsonrpc":"2.0","id":1,"method":"no/such"})", alice_)), -32601);

  // Ids of every allowed type come back exactly as sent.
  auto big = Post(R"({"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"})", alice_);
  ASSERT_EQ(big.status, 200) << big.body;
  EXPECT_THAT(big.body, ::testing::HasSubstr("\"id\":123456789012345678901234567890"));
  auto fraction = Post(R"({"jsonrpc":"2.0","id":-1.50,"method":"ping"})", alice_);
  EXPECT_THAT(fraction.body, ::testing::HasSubstr("\"id\":-1.50"));
  auto text = Post(R"({"jsonrpc":"2.0","id":"Zürich ✓ \ud83d\ude00 \"q\"","method":"ping"})", alice_);
  ASSERT_EQ(text.status, 200) << text.body;
  EXPECT_EQ(Body(text)["id"], "Zürich ✓ 😀 \"q\"");

  // Deep nesting, a 10,000-element batch, a huge id.
  auto deep = Post(std::string(R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":)") + std::string(100000, '[') +
                       std::string(100000, ']') + "}}",
                   alice_);
  EXPECT_EQ(deep.status, 400);
  EXPECT_EQ(code(deep), -32700);
  std::string batch = "[";
  for (int i = 0; i < 10000; ++i)
    batch += std::string(i ? "," : "") + R"({"jsonrpc":"2.0","id":)" + std::to_string(i) + R"(,"method":"ping"})";
  batch += "]";
  EXPECT_EQ(code(Post(batch, alice_)), -32600);
  auto huge_id = Post(R"({"jsonrpc":"2.0","id":")" + std::string(200000, 'x') + R"(","method":"ping"})", alice_);
  EXPECT_EQ(huge_id.status, 200);
  EXPECT_EQ(Body(huge_id)["id"].get<std::string>().size(), 200000u);

  // An SSE-only client gets one event.
  auto sse = Post(R"({"jsonrpc":"2.0","id":9,"method":"ping"})", alice_, {{"Accept", "text/event-stream"}});
  ASSERT_EQ(sse.status, 200);
  EXPECT_EQ(HeaderOf(sse, "content-type"), "text/event-stream");
  EXPECT_EQ(sse.body, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}\n\n");

  EXPECT_EQ(gw_->Public("GET", "/healthz").status, 200) << "still serving";
}

TEST_F(McpGatewayTest, TheOfficialTypeScriptSdkListsAndCallsThroughToolgate) {
  const std::string script = std::string(TOOLGATE_NODE_DIR) + "/mcp_sdk_client.mjs";
  if (access((std::string(TOOLGATE_NODE_DIR) + "/node_modules/@modelcontextprotocol/sdk/package.json").c_str(), R_OK) !=
      0) {
    GTEST_SKIP() << "@modelcontextprotocol/sdk is not installed (scripts/install-deps.sh)";
  }
  crm_.set_behavior([](const FakeDownstream::Request& req) { return Reply{200, R"({"deal":)" + req.body + "}"}; });
  Start(Config());
  const std::string url = "http://127.0.0.1:" + std::to_string(gw_->public_port()) + "/mcp";
  auto [exit_code, out] =
      testing::RunProgram({"/usr/bin/node", script, url, alice_, "crm.get_deal", R"({"deal_id":42})"}, dir_);
  ASSERT_EQ(exit_code, 0) << out;
  const json j = json::parse(out.substr(0, out.find('\n')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << out;
  EXPECT_EQ(j["protocolVersion"], "2025-11-25");
  EXPECT_FALSE(j["sessionId"].is_null());
  EXPECT_EQ(j["serverVersion"]["name"], "toolgate");
  ASSERT_EQ(j["tools"].size(), 2u) << j;
  EXPECT_EQ(j["tools"][0]["name"], "crm.get_deal");
  EXPECT_EQ(j["result"]["isError"], false) << j;
  EXPECT_EQ(j["result"]["structuredContent"]["deal"]["deal_id"], 42);
  EXPECT_FALSE(j["result"]["_meta"]["io.toolgate/execution_id"].get<std::string>().empty());
  EXPECT_EQ(crm_.count("/crm.get_deal"), 1) << "one call reached the downstream";
}

}  // namespace
}  // namespace toolgate
