// Real downstreams end to end (design §13), through the real `toolgate serve` binary: per-tool request
// shapes and input schemas, HTTPS (trusted, untrusted, mutual TLS, kept-alive connections),
// credentials (bearer and header from env and file, OAuth2 client credentials with its single flight,
// its 401 refetch and a failing token endpoint), safe retries, `ledger verify` over
// TOOL_ATTEMPT_FAILED events, and a grep of every output an operator or an agent can see for the
// secrets. Every assertion reads an independent observer: the downstream's own record of what reached
// it, the ledger, /metrics, /admin/connectors or the CLI.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include "absl/strings/escaping.h"
#include "downstream_key.h"
#include "fake_downstream.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"
#include "tls_test_support.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using ::testing::ElementsAre;
using testing::FakeDownstream;
using testing::GatewayProcess;
using ::testing::HasSubstr;
using testing::HeaderOf;
using ::testing::Not;
using testing::TempDir;
using testing::TestHttpServer;
using testing::Token;
using Reply = FakeDownstream::Reply;
using Request = FakeDownstream::Request;

// A loopback port that refuses connections: bound, never listening (Linux answers a SYN with RST).
// Held for the test's life, so no other socket takes the port.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~RefusingPort() { close(fd_); }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

std::string Header(const Request& r, const std::string& lowercase_name) {
  auto it = r.headers.find(lowercase_name);
  return it == r.headers.end() ? "" : it->second;
}

// The value of the first sample of `name` whose labels hold every one of `labels`; -1 when none.
double Metric(const std::string& text, const std::string& name, const std::vector<std::string>& labels) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) != 0) continue;
    bool all = true;
    for (const auto& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

class DownstreamReachTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new TempDir();
    pki_error_ = new std::string(testing::MakeTestPki(pki_->file("")));
  }
  static void TearDownTestSuite() {
    delete pki_;
    delete pki_error_;
  }
  static std::string Pki(const std::string& name) { return pki_->file(name); }

  // One event loop: these tests count downstream connections and handshakes, and each loop keeps
  // its own kept-alive connections (two loops pay two handshakes for calls that land on both).
  GatewayProcess& Start(const std::string& connectors) {
    std::string config = testing::BaseConfig(dir_.file("store.db")) + connectors;
    config = testing::WithKeys(config, "[server]", "io_threads = 1\n");
    gateways_.push_back(std::make_unique<GatewayProcess>(config, dir_, "gw" + std::to_string(gateways_.size())));
    EXPECT_TRUE(gateways_.back()->Start());
    return *gateways_.back();
  }

  json Execution(GatewayProcess& gw, const std::string& id) {
    const auto r = gw.Public("GET", "/v1/executions/" + id, "", alice_);
    EXPECT_EQ(r.status, 200) << "GET /v1/executions/" << id << ": " << r.body;
    return Body(r);
  }
  std::vector<std::string> EventTypes(GatewayProcess& gw, const std::string& id) {
    std::vector<std::string> types;
    const json exec = Execution(gw, id);
    for (const auto& e : exec["events"]) types.push_back(e["type"]);
    return types;
  }
  static json ConnectorView(GatewayProcess& gw, const std::string& id) {
    const auto r = gw.Admin("GET", "/admin/connectors");
    const json all = Body(r);  // named: a range-for over a temporary's member would dangle
    for (const auto& c : all["connectors"]) {
      if (c["id"] == id) return c;
    }
    ADD_FAILURE() << "no connector " << id << " in /admin/connectors: " << r.status << " " << r.body;
    return {};
  }
  std::pair<int, std::string> Cli(const std::vector<std::string>& args) { return testing::RunCli(args, dir_); }

  static TempDir* pki_;
  static std::string* pki_error_;
  TempDir dir_;
  const std::string alice_ = Token("tenant-a");
  // Declared last: the gateways stop before the servers they call.
  std::vector<std::unique_ptr<GatewayProcess>> gateways_;
};

TempDir* DownstreamReachTest::pki_ = nullptr;
std::string* DownstreamReachTest::pki_error_ = nullptr;

// Method, path (base_url's prefix + the tool's path, placeholders percent-encoded), query string for
// GET, JSON body for the rest; an input the shape or the schema refuses is 400 invalid_input and
// creates no execution.
TEST(DownstreamReachShapes, EachToolReachesTheDownstreamWithItsOwnMethodPathAndBody) {
  TempDir dir;
  FakeDownstream crm;
  const std::string config = testing::BaseConfig(dir.file("store.db")) + "[connectors.crm]\nbase_url = \"" +
                             crm.base_url() + "/api\"\ntimeout_ms = 2000\n" + R"(
[tools."crm.get_deal"]
method = "GET"
path = "/v2/deals/{deal_id}"
input_schema = '{"type":"object","required":["deal_id"],"properties":{"deal_id":{"type":"string","minLength":1},"stage":{"type":"string","enum":["won","lost","open"]},"limit":{"type":"integer","minimum":1,"maximum":100}},"additionalProperties":false}'
[tools."crm.update_deal"]
method = "PUT"
path = "/v2/deals/{deal_id}"
[tools."crm.archive_deal"]
method = "DELETE"
path = "/v2/deals/{deal_id}/archive"
)";
  GatewayProcess gw(config, dir);
  ASSERT_TRUE(gw.Start());
  const std::string alice = Token("tenant-a");

  auto get = gw.Invoke("crm.get_deal", {{"input", {{"deal_id", "a/b c"}, {"stage", "won"}, {"limit", 5}}}}, alice);
  ASSERT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(Body(get)["outcome"], "SUCCEEDED");
  auto put =
      gw.Invoke("crm.update_deal", {{"input", {{"deal_id", "d-9"}, {"stage", "lost"}, {"amount", 1200}}}}, alice);
  ASSERT_EQ(put.status, 200) << put.body;
  auto plain = gw.Invoke("crm.ping", {{"input", {{"n", 1}}}}, alice);  // no [tools] entry: POST /{tool_name}
  ASSERT_EQ(plain.status, 200) << plain.body;

  const std::vector<Request> seen = crm.requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].method, "GET");
  // The query string in the input's key order (a JSON object's keys are sorted).
  EXPECT_EQ(seen[0].path, "/api/v2/deals/a%2Fb%20c?limit=5&stage=won");
  EXPECT_EQ(seen[0].body, "");
  EXPECT_EQ(Header(seen[0], "content-type"), "");
  EXPECT_EQ(seen[1].method, "PUT");
  EXPECT_EQ(seen[1].path, "/api/v2/deals/d-9");
  EXPECT_EQ(json::parse(seen[1].body), json({{"stage", "lost"}, {"amount", 1200}}));  // deal_id left the body
  EXPECT_EQ(Header(seen[1], "content-type"), "application/json");
  EXPECT_EQ(seen[2].method, "POST");
  EXPECT_EQ(seen[2].path, "/api/crm.ping");
  EXPECT_EQ(json::parse(seen[2].body), json({{"n", 1}}));

  // Refused inputs: a missing path field, a schema mismatch naming the failing location.
  struct Refused {
    std::string tool;
    json input;
    std::string names;
  };
  const std::vector<Refused> refused = {
      {"crm.archive_deal", json::object(), "deal_id"},
      {"crm.get_deal", {{"deal_id", 7}}, "/deal_id"},
      {"crm.get_deal", {{"stage", "won"}}, "/deal_id"},
      {"crm.get_deal", {{"deal_id", "d"}, {"limit", 500}}, "/limit"},
      {"crm.get_deal", {{"deal_id", "d"}, {"owner", "x"}}, "/owner"},
      {"crm.update_deal", {{"deal_id", {{"nested", true}}}}, "deal_id"},
  };
  for (const Refused& r : refused) {
    auto answer = gw.Invoke(r.tool, {{"input", r.input}}, alice);
    EXPECT_EQ(answer.status, 400) << r.tool << " " << r.input << ": " << answer.body;
    const json body = Body(answer);
    EXPECT_EQ(body["error"], "invalid_input") << answer.body;
    EXPECT_THAT(body.value("message", ""), HasSubstr(r.names)) << answer.body;
    EXPECT_FALSE(body.contains("execution_id")) << answer.body;
  }
  EXPECT_EQ(crm.total(), 3) << "a refused input reached the downstream";
  const json list = Body(gw.Public("GET", "/v1/executions", "", alice));
  EXPECT_EQ(list["executions"].size(), 3u) << "a refused input created an execution: " << list;
}

// A name that differs from a configured tool only in case or trailing '.', '-' or '_' is refused
// before anything runs: an http connector forwards any name as its path, and a router that matches
// paths loosely would run the configured tool's endpoint without its kill switch (action_type) or
// input_schema. Found by a review posing as a tenant (docs/security.md §16).
TEST(DownstreamReachShapes, ANameThatLooksLikeAConfiguredToolIsRefusedNotForwarded) {
  TempDir dir;
  FakeDownstream crm;
  const std::string config = testing::BaseConfig(dir.file("store.db")) + "[connectors.crm]\nbase_url = \"" +
                             crm.base_url() + "\"\ntimeout_ms = 2000\n" + R"(
[tools."crm.send_email"]
action_type = "email"
input_schema = '{"type":"object","required":["to"],"properties":{"to":{"type":"string"}},"additionalProperties":false}'
)";
  GatewayProcess gw(config, dir);
  ASSERT_TRUE(gw.Start());
  const std::string mallory = Token("mallory");
  ASSERT_EQ(
      gw.Admin(
            "PUT", "/admin/kill-switches",
            json{{"scope", "tenant_action"}, {"key", "mallory/email"}, {"reason", "spam"}, {"requested_by", "oncall"}}
                .dump())
          .status,
      200);
  const json input = {{"input", {{"to", "victim@example.org"}, {"bcc", "x"}}}};
  EXPECT_EQ(gw.Invoke("crm.send_email", {{"input", {{"to", "victim@example.org"}}}}, mallory).status, 403)
      << "the kill switch stops the tool itself";
  EXPECT_EQ(gw.Invoke("crm.send_email", input, mallory).status, 400) << "and its schema refuses the input";
  for (const char* variant : {"crm.SEND_EMAIL", "crm.Send_Email", "crm.send_email.", "crm.send_email-",
                              "crm.send_email__", "crm.SEND_email..."}) {
    auto r = gw.Invoke(variant, input, mallory);
    EXPECT_EQ(r.status, 404) << variant << ": " << r.body;
    EXPECT_EQ(Body(r)["error"], "unknown_tool") << r.body;
    EXPECT_THAT(Body(r).value("message", ""), HasSubstr("'crm.send_email'")) << r.body;
    // Queued calls are admitted by the same check.
    json queued = input;
    queued["mode"] = "queued";
    EXPECT_EQ(gw.Invoke(variant, queued, mallory).status, 404) << variant << " queued";
  }
  EXPECT_EQ(crm.total(), 0) << "a look-alike name reached the downstream";
  EXPECT_EQ(Body(gw.Public("GET", "/v1/executions", "", mallory))["executions"].size(), 1u)
      << "a look-alike name created an execution (only the tool's own blocked call is recorded)";
  // A name no [tools] entry resembles is still forwarded as its path.
  auto other = gw.Invoke("crm.send_sms", {{"input", {{"to", "x"}}}}, mallory);
  EXPECT_EQ(other.status, 200) << other.body;
  ASSERT_EQ(crm.total(), 1);
  EXPECT_EQ(crm.requests()[0].path, "/crm.send_sms");
}

// HTTPS: a server the connector's ca_file vouches for is reached over one kept-alive connection; a
// certificate from another CA is tls_error (502, a breaker failure, the breaker opens at its
// threshold); mutual TLS works with the client certificate and is tls_error without it.
TEST_F(DownstreamReachTest, HttpsVerifiesTheServerKeepsConnectionsAndCountsTlsErrorsAgainstTheBreaker) {
  ASSERT_EQ(*pki_error_, "") << "openssl could not make the test PKI";
  const std::string ok_body = R"({"ok":true})";
  TestHttpServer trusted({.cert_file = Pki("server.pem"), .key_file = Pki("server.key"), .json_body = ok_body});
  TestHttpServer untrusted({.cert_file = Pki("untrusted.pem"), .key_file = Pki("untrusted.key"), .json_body = ok_body});
  TestHttpServer expired({.cert_file = Pki("expired.pem"), .key_file = Pki("expired.key"), .json_body = ok_body});
  TestHttpServer wrong_host(
      {.cert_file = Pki("wrong_host.pem"), .key_file = Pki("wrong_host.key"), .json_body = ok_body});
  TestHttpServer mutual({.cert_file = Pki("server.pem"),
                         .key_file = Pki("server.key"),
                         .client_ca_file = Pki("ca.pem"),
                         .json_body = ok_body});
  auto https = [](int port) { return "\"https://127.0.0.1:" + std::to_string(port) + "\""; };
  const std::string ca = "ca_file = \"" + Pki("ca.pem") + "\"\n";
  GatewayProcess& gw =
      Start("[connectors.secure]\nbase_url = " + https(trusted.port()) + "\n[connectors.secure.tls]\n" + ca +
            "[connectors.untrusted]\nbase_url = " + https(untrusted.port()) + "\n[connectors.untrusted.tls]\n" + ca +
            "[connectors.untrusted.breaker]\nfailure_threshold = 3\ncooldown_s = 600\n" +
            "[connectors.mutual]\nbase_url = " + https(mutual.port()) + "\n[connectors.mutual.tls]\n" + ca +
            "client_cert_file = \"" + Pki("client.pem") + "\"\nclient_key_file = \"" + Pki("client.key") + "\"\n" +
            "[connectors.nocert]\nbase_url = " + https(mutual.port()) + "\n[connectors.nocert.tls]\n" + ca +
            "[connectors.expired]\nbase_url = " + https(expired.port()) + "\n[connectors.expired.tls]\n" + ca +
            "[connectors.wrong_host]\nbase_url = " + https(wrong_host.port()) + "\n[connectors.wrong_host.tls]\n" + ca);

  constexpr int kCalls = 12;
  for (int i = 0; i < kCalls; ++i) {
    auto r = gw.Invoke("secure.read", {{"input", {{"i", i}}}}, alice_);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Body(r)["outcome"], "SUCCEEDED");
  }
  EXPECT_EQ(trusted.requests(), kCalls);
  EXPECT_EQ(trusted.handshakes(), 1) << "the TLS handshake was paid more than once for sequential calls";
  EXPECT_EQ(trusted.accepted(), 1);

  for (int i = 0; i < 3; ++i) {
    auto r = gw.Invoke("untrusted.read", {{"input", {{"i", i}}}}, alice_);
    ASSERT_EQ(r.status, 502) << r.body;
    EXPECT_EQ(Body(r)["outcome"], "FAILED");
    EXPECT_EQ(Body(r)["reason"], "tls_error");
    if (i == 0) {
      const json exec = Execution(gw, Body(r)["execution_id"]);
      const json last = exec["events"].back();
      EXPECT_EQ(last["type"], "TOOL_FAILED");
      EXPECT_EQ(last["data"]["reason"], "tls_error");
      EXPECT_THAT(last["data"].value("detail", ""),
                  HasSubstr("certificate verify failed: unable to get local issuer certificate"))
          << last;
    }
  }
  EXPECT_EQ(untrusted.handshakes(), 0);
  EXPECT_EQ(untrusted.requests(), 0);
  EXPECT_EQ(ConnectorView(gw, "untrusted")["breaker"]["state"], "OPEN");
  const int accepted_before = untrusted.accepted();
  auto refused = gw.Invoke("untrusted.read", {{"input", {{"i", 9}}}}, alice_);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(Body(refused)["outcome"], "DEFERRED");
  EXPECT_EQ(untrusted.accepted(), accepted_before) << "an OPEN breaker let a call through";
  EXPECT_EQ(ConnectorView(gw, "secure")["breaker"]["state"], "CLOSED");

  auto with_cert = gw.Invoke("mutual.read", {{"input", json::object()}}, alice_);
  EXPECT_EQ(with_cert.status, 200) << with_cert.body;
  EXPECT_EQ(mutual.requests(), 1);
  auto without_cert = gw.Invoke("nocert.read", {{"input", json::object()}}, alice_);
  EXPECT_EQ(without_cert.status, 502) << without_cert.body;
  EXPECT_EQ(Body(without_cert)["reason"], "tls_error");
  EXPECT_EQ(mutual.requests(), 1) << "a request without a client certificate was served";
  EXPECT_EQ(ConnectorView(gw, "nocert")["breaker"]["window_failures"], 1);

  // An expired certificate and one for another host name, both from the trusted CA.
  for (const char* c : {"expired", "wrong_host"}) {
    auto r = gw.Invoke(std::string(c) + ".read", {{"input", json::object()}}, alice_);
    EXPECT_EQ(r.status, 502) << c << ": " << r.body;
    EXPECT_EQ(Body(r)["reason"], "tls_error") << c;
  }
  EXPECT_EQ(expired.requests() + wrong_host.requests(), 0);

  // The health check before an operator's close goes through the same verification.
  const json audit = {{"reason", "tls test"}, {"requested_by", "oncall@acme"}};
  auto not_closed = gw.Admin("POST", "/admin/connectors/untrusted/breaker/close", audit.dump());
  EXPECT_EQ(not_closed.status, 409) << not_closed.body;
  EXPECT_EQ(Body(not_closed)["error"], "connector_unhealthy");
  EXPECT_THAT(Body(not_closed)["health"].value("error", ""), HasSubstr("certificate")) << not_closed.body;
  EXPECT_EQ(ConnectorView(gw, "untrusted")["breaker"]["state"], "OPEN");
  const int before_check = trusted.requests();
  auto closed = gw.Admin("POST", "/admin/connectors/secure/breaker/close", audit.dump());
  EXPECT_EQ(closed.status, 200) << closed.body;
  EXPECT_EQ(trusted.requests(), before_check + 1) << "the health check did not reach the HTTPS server";
}

// OAuth2 client credentials: 20 concurrent calls share one token fetch; a 401 to the cached token
// drops it, fetches one more and re-sends once (not an attempt); a token endpoint that cannot be
// reached is 502 credentials_unavailable, a breaker failure, and nothing reaches the downstream.
TEST_F(DownstreamReachTest, OAuth2FetchesOneTokenForConcurrentCallsAndOneMoreAfterA401) {
  FakeDownstream idp, api;
  RefusingPort nowhere;
  std::atomic<int> issued{0};
  idp.set_behavior([&](const Request& r) {
    if (r.method != "POST" || r.body.find("grant_type=client_credentials") == std::string::npos)
      return Reply{400, "{}"};
    const int n = ++issued;
    return Reply{
        200,
        json{{"access_token", "at-reach-" + std::to_string(n)}, {"token_type", "Bearer"}, {"expires_in", 3600}}.dump(),
        {},
        /*delay_ms=*/200};
  });
  std::mutex mu;
  std::set<std::string> revoked;
  api.set_behavior([&](const Request& r) {
    const std::string auth = Header(r, "authorization");
    std::lock_guard lock(mu);
    if (auth.rfind("Bearer at-reach-", 0) != 0) return Reply{403, R"({"error":"no token"})"};
    if (revoked.count(auth.substr(7))) return Reply{401, R"({"error":"invalid_token"})"};
    return Reply{200, R"({"deals":[]})"};
  });
  setenv("REACH_OAUTH_SECRET", "cs-reach-oauth-8e1f", 1);
  const std::string auth = "client_id = \"toolgate-reach\"\nclient_secret_env = \"REACH_OAUTH_SECRET\"\n";
  GatewayProcess& gw =
      Start("[connectors.deals]\nbase_url = \"" + api.base_url() + "\"\ntimeout_ms = 5000\nmax_in_flight = 32\n" +
            "[connectors.deals.auth]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"" + idp.base_url() +
            "/oauth/token\"\nscope = \"deals:read\"\n" + auth + "[connectors.nowhere]\nbase_url = \"" + api.base_url() +
            "\"\n" + "[connectors.nowhere.auth]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"" + nowhere.url() +
            "/oauth/token\"\n" + auth);

  constexpr int kCallers = 20;
  std::vector<int> statuses(kCallers, 0);
  std::vector<std::thread> callers;
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&, i] { statuses[i] = gw.Invoke("deals.list", {{"input", {{"page", i}}}}, alice_).status; });
  }
  for (auto& t : callers) t.join();
  EXPECT_THAT(statuses, ::testing::Each(200));
  EXPECT_EQ(idp.total(), 1) << "concurrent callers did not share one token fetch";
  ASSERT_GE(idp.total(), 1);
  const Request token_request = idp.requests()[0];
  EXPECT_EQ(token_request.path, "/oauth/token");
  EXPECT_THAT(token_request.body, HasSubstr("scope=deals%3Aread"));
  EXPECT_EQ(Header(token_request, "authorization"),
            "Basic " + absl::Base64Escape("toolgate-reach:cs-reach-oauth-8e1f"));
  EXPECT_EQ(api.total(), kCallers);
  for (const Request& r : api.requests()) EXPECT_EQ(Header(r, "authorization"), "Bearer at-reach-1");

  {
    std::lock_guard lock(mu);
    revoked.insert("at-reach-1");
  }
  auto after_revoke = gw.Invoke("deals.get", {{"input", {{"id", "d1"}}}}, alice_);
  ASSERT_EQ(after_revoke.status, 200) << after_revoke.body;
  const std::string id = Body(after_revoke)["execution_id"];
  std::vector<std::string> sent_with;
  for (const Request& r : api.requests()) {
    if (Header(r, "x-toolgate-execution-id") == id) sent_with.push_back(Header(r, "authorization"));
  }
  EXPECT_THAT(sent_with, ElementsAre("Bearer at-reach-1", "Bearer at-reach-2"));
  EXPECT_EQ(idp.total(), 2);
  // The re-send after a 401 is not an attempt: no TOOL_ATTEMPT_FAILED.
  EXPECT_THAT(EventTypes(gw, id), ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED"));

  const int api_before = api.total();
  auto down = gw.Invoke("nowhere.get", {{"input", {{"id", "d1"}}}}, alice_);
  EXPECT_EQ(down.status, 502) << down.body;
  EXPECT_EQ(Body(down)["outcome"], "FAILED");
  EXPECT_EQ(Body(down)["reason"], "credentials_unavailable");
  EXPECT_EQ(api.total(), api_before) << "a call without credentials reached the downstream";
  EXPECT_EQ(ConnectorView(gw, "nowhere")["breaker"]["window_failures"], 1);
  EXPECT_EQ(ConnectorView(gw, "deals")["breaker"]["window_failures"], 0);
}

// Bearer and header credentials from the environment and from files (a rotated file is re-read);
// the agent's own JWT never reaches a downstream.
TEST_F(DownstreamReachTest, BearerAndHeaderCredentialsComeFromEnvAndFilesAndTheAgentTokenStaysHome) {
  FakeDownstream api;
  setenv("REACH_BEARER", "bt-env-4a7c", 1);
  setenv("REACH_HEADER", "hv-env-2d9e", 1);
  std::ofstream(dir_.file("bearer.txt")) << "bt-file-61b0\n";
  std::ofstream(dir_.file("header.txt")) << "hv-file-c35a\n";
  const std::string base = "base_url = \"" + api.base_url() + "\"\n";
  GatewayProcess& gw = Start(
      "[connectors.b_env]\n" + base + "[connectors.b_env.auth]\ntype = \"bearer\"\ntoken_env = \"REACH_BEARER\"\n" +
      "[connectors.b_file]\n" + base + "[connectors.b_file.auth]\ntype = \"bearer\"\ntoken_file = \"" +
      dir_.file("bearer.txt") + "\"\n" + "[connectors.h_env]\n" + base +
      "[connectors.h_env.auth]\ntype = \"header\"\nname = \"X-Api-Key\"\nvalue_env = \"REACH_HEADER\"\n" +
      "[connectors.h_file]\n" + base +
      "[connectors.h_file.auth]\ntype = \"header\"\nname = \"X-Api-Key\"\nvalue_file = \"" + dir_.file("header.txt") +
      "\"\n" + "[connectors.anon]\n" + base);
  for (const char* c : {"b_env", "b_file", "h_env", "h_file", "anon"}) {
    auto r = gw.Invoke(std::string(c) + ".ping", {{"input", json::object()}}, alice_);
    ASSERT_EQ(r.status, 200) << c << ": " << r.body;
  }
  std::map<std::string, Request> by_path;
  for (const Request& r : api.requests()) by_path[r.path] = r;
  EXPECT_EQ(Header(by_path["/b_env.ping"], "authorization"), "Bearer bt-env-4a7c");
  EXPECT_EQ(Header(by_path["/b_file.ping"], "authorization"), "Bearer bt-file-61b0");
  EXPECT_EQ(Header(by_path["/h_env.ping"], "x-api-key"), "hv-env-2d9e");
  EXPECT_EQ(Header(by_path["/h_file.ping"], "x-api-key"), "hv-file-c35a");
  for (const char* path : {"/h_env.ping", "/h_file.ping", "/anon.ping"}) {
    EXPECT_EQ(Header(by_path[path], "authorization"), "") << path << " got an Authorization header";
  }

  // A rotated file is re-read (within its check interval, 1 s): poll, bounded.
  std::ofstream(dir_.file("header.txt"), std::ios::trunc) << "hv-file-rotated-07f4\n";
  bool rotated = false;
  for (int i = 0; i < 40 && !rotated; ++i) {
    ASSERT_EQ(gw.Invoke("h_file.ping", {{"input", json::object()}}, alice_).status, 200);
    rotated = Header(api.requests().back(), "x-api-key") == "hv-file-rotated-07f4";
    if (!rotated) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(rotated) << "the rotated header file was not re-read";

  for (const Request& r : api.requests()) {
    for (const auto& [name, value] : r.headers) {
      EXPECT_THAT(value, Not(HasSubstr(alice_))) << r.path << " got the agent's JWT in " << name;
    }
  }
}

// Safe retries (§13): an idempotent GET retried through 503s with one Idempotency-Key and counted
// once by the breaker and the SLO; a POST that timed out or got a 503 is never retried; a 429 whose
// Retry-After fits is retried for a POST, one that does not fit is DEFERRED at once; a refused
// connection is retried for any method. `ledger verify` accepts the TOOL_ATTEMPT_FAILED events.
TEST_F(DownstreamReachTest, RetriesOnlyWhenSafeAndTheLedgerShowsEveryAttempt) {
  FakeDownstream down;
  RefusingPort refused;
  std::mutex mu;
  std::map<std::string, int> attempts;  // per path and execution
  down.set_behavior([&](const Request& r) {
    int n = 0;
    {
      std::lock_guard lock(mu);
      n = ++attempts[r.path + " " + Header(r, "x-toolgate-execution-id")];
    }
    if (r.path == "/deals/d1") return n <= 2 ? Reply{503, R"({"error":"busy"})"} : Reply{200, R"({"deal":"d1"})"};
    if (r.path == "/deals") return Reply{200, R"({"created":true})", {}, /*delay_ms=*/700};
    if (r.path == "/flaky.create") return Reply{503, R"({"error":"busy"})"};
    if (r.path == "/lost/d2" || r.path == "/lost-post") {
      Reply lost{200, R"({"deal":"d2"})"};
      lost.close_without_reply = r.path == "/lost-post" || n == 1;  // read the request, then hang up
      return lost;
    }
    if (r.path == "/orders") return n == 1 ? Reply{429, "{}", {{"Retry-After", "0"}}} : Reply{200, R"({"order":1})"};
    if (r.path == "/busy.post") return Reply{429, "{}", {{"Retry-After", "5"}}};
    return Reply{404, "{}"};
  });
  const std::string retry = "max_attempts = 3\nbackoff_ms = 10\n";
  const std::string base = "base_url = \"" + down.base_url() + "\"\n";
  GatewayProcess& gw =
      Start("[connectors.flaky]\n" + base + "timeout_ms = 3000\n[connectors.flaky.retry]\n" + retry +
            "[tools.\"flaky.get_deal\"]\nmethod = \"GET\"\npath = \"/deals/{id}\"\n" + "[connectors.flakypost]\n" +
            base + "timeout_ms = 3000\n[connectors.flakypost.retry]\n" + retry +
            "[tools.\"flakypost.create\"]\npath = \"/flaky.create\"\n" +
            "[tools.\"flaky.lost\"]\nmethod = \"GET\"\npath = \"/lost/{id}\"\n" +
            "[tools.\"flakypost.lost\"]\npath = \"/lost-post\"\n" + "[connectors.slow]\n" + base +
            "timeout_ms = 300\n[connectors.slow.retry]\n" + retry +
            "[tools.\"slow.create\"]\nmethod = \"POST\"\npath = \"/deals\"\n" + "[connectors.orders]\n" + base +
            "timeout_ms = 3000\n[connectors.orders.retry]\n" + retry +
            "[tools.\"orders.place\"]\nmethod = \"POST\"\npath = \"/orders\"\n" + "[connectors.busy]\n" + base +
            "timeout_ms = 1000\n[connectors.busy.retry]\n" + retry + "[connectors.refused]\nbase_url = \"" +
            refused.url() + "\"\ntimeout_ms = 3000\n[connectors.refused.retry]\n" + retry);

  auto count = [&](const std::string& path) { return down.count(path); };

  // Idempotent GET: 503, 503, 200.
  auto get = gw.Invoke("flaky.get_deal", {{"input", {{"id", "d1"}}}, {"idempotency_key", "read-d1-once"}}, alice_);
  ASSERT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(Body(get)["outcome"], "SUCCEEDED");
  const std::string get_id = Body(get)["execution_id"];
  ASSERT_EQ(count("/deals/d1"), 3);
  for (const Request& r : down.requests()) {
    if (r.path != "/deals/d1") continue;
    EXPECT_EQ(r.method, "GET");
    EXPECT_EQ(Header(r, "idempotency-key"), testing::DownstreamKey("tenant-a", "read-d1-once"));
    EXPECT_EQ(Header(r, "x-toolgate-execution-id"), get_id);
  }
  const json get_exec = Execution(gw, get_id);
  std::vector<std::string> types;
  for (const auto& e : get_exec["events"]) types.push_back(e["type"]);
  EXPECT_THAT(types, ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_ATTEMPT_FAILED", "TOOL_ATTEMPT_FAILED",
                                 "TOOL_SUCCEEDED"));
  for (int i : {2, 3}) {
    const json& data = get_exec["events"][i]["data"];
    EXPECT_EQ(data["attempt"], i - 1);
    EXPECT_EQ(data["downstream_status"], 503);
    EXPECT_EQ(data["reason"], "downstream_error");
  }
  const json flaky = ConnectorView(gw, "flaky");
  EXPECT_EQ(flaky["breaker"]["state"], "CLOSED");
  EXPECT_EQ(flaky["breaker"]["window_failures"], 0) << "a retried attempt counted against the breaker";
  const std::string metrics = gw.Admin("GET", "/metrics").body;
  EXPECT_EQ(Metric(metrics, "toolgate_slo_events_total", {"connector=\"flaky\"", "slo=\"tool_error\""}), 1) << metrics;
  EXPECT_EQ(Metric(metrics, "toolgate_slo_bad_events_total", {"connector=\"flaky\"", "slo=\"tool_error\""}), 0);
  EXPECT_EQ(Metric(metrics, "toolgate_tool_calls_total", {"connector=\"flaky\"", "outcome=\"SUCCEEDED\""}), 1);

  // A connection lost after the request was sent: retried for an idempotent GET, not for a POST.
  auto lost_get = gw.Invoke("flaky.lost", {{"input", {{"id", "d2"}}}}, alice_);
  EXPECT_EQ(lost_get.status, 200) << lost_get.body;
  EXPECT_EQ(count("/lost/d2"), 2);
  const json lost_exec = Execution(gw, Body(lost_get)["execution_id"]);
  ASSERT_EQ(lost_exec["events"].size(), 4u) << lost_exec;
  EXPECT_EQ(lost_exec["events"][2]["data"]["reason"], "connection_lost");
  auto lost_post = gw.Invoke("flakypost.lost", {{"input", {{"name", "x"}}}}, alice_);
  EXPECT_EQ(lost_post.status, 502) << lost_post.body;
  EXPECT_EQ(Body(lost_post)["reason"], "connection_lost");
  EXPECT_EQ(count("/lost-post"), 1) << "a POST whose connection was lost after sending was retried";

  // A non-idempotent POST that got a 503 (no Retry-After): never retried.
  auto post503 = gw.Invoke("flakypost.create", {{"input", {{"name", "x"}}}}, alice_);
  EXPECT_EQ(post503.status, 502) << post503.body;
  EXPECT_EQ(Body(post503)["reason"], "downstream_error");
  EXPECT_EQ(count("/flaky.create"), 1);

  // A non-idempotent POST that timed out: never retried (the downstream may have acted on it).
  auto timed_out = gw.Invoke("slow.create", {{"input", {{"name", "x"}}}}, alice_);
  EXPECT_EQ(timed_out.status, 504) << timed_out.body;
  EXPECT_EQ(Body(timed_out)["reason"], "timeout");
  EXPECT_EQ(count("/deals"), 1);
  EXPECT_THAT(EventTypes(gw, Body(timed_out)["execution_id"]),
              ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_FAILED"));

  // 429 with a Retry-After that fits: retried, even for a POST (the request was not processed).
  auto placed = gw.Invoke("orders.place", {{"input", {{"sku", "a"}}}}, alice_);
  ASSERT_EQ(placed.status, 200) << placed.body;
  EXPECT_EQ(count("/orders"), 2);
  const json placed_exec = Execution(gw, Body(placed)["execution_id"]);
  ASSERT_EQ(placed_exec["events"].size(), 4u) << placed_exec;
  EXPECT_EQ(placed_exec["events"][2]["type"], "TOOL_ATTEMPT_FAILED");
  EXPECT_EQ(placed_exec["events"][2]["data"]["downstream_status"], 429);

  // 429 with a Retry-After that does not fit in the call's timeout: DEFERRED at once, one request.
  auto throttled = gw.Invoke("busy.post", {{"input", json::object()}}, alice_);
  EXPECT_EQ(throttled.status, 503) << throttled.body;
  EXPECT_EQ(Body(throttled)["outcome"], "DEFERRED");
  EXPECT_EQ(Body(throttled)["reason"], "downstream_throttled");
  EXPECT_EQ(HeaderOf(throttled, "retry-after"), "5");
  EXPECT_EQ(count("/busy.post"), 1);

  // Connection refused (nothing was sent): retried for a POST, every attempt fails.
  auto no_conn = gw.Invoke("refused.post", {{"input", json::object()}}, alice_);
  EXPECT_EQ(no_conn.status, 502) << no_conn.body;
  EXPECT_EQ(Body(no_conn)["reason"], "connection_failed");
  const json no_conn_exec = Execution(gw, Body(no_conn)["execution_id"]);
  types.clear();
  for (const auto& e : no_conn_exec["events"]) types.push_back(e["type"]);
  EXPECT_THAT(types, ElementsAre("EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_ATTEMPT_FAILED", "TOOL_ATTEMPT_FAILED",
                                 "TOOL_FAILED"));
  EXPECT_EQ(no_conn_exec["events"][2]["data"]["reason"], "connection_failed");
  EXPECT_EQ(ConnectorView(gw, "refused")["breaker"]["window_failures"], 1)
      << "the breaker counted attempts, not the call";

  // The CLI reads the same attempts from the store; the chains verify.
  gw.Terminate();
  auto [show_code, show] = Cli({"ledger", "show", get_id, "--config", gw.config_path()});
  EXPECT_EQ(show_code, 0) << show;
  EXPECT_THAT(show, HasSubstr("TOOL_ATTEMPT_FAILED"));
  auto [verify_code, verify] = Cli({"ledger", "verify", "--config", gw.config_path()});
  EXPECT_EQ(verify_code, 0) << verify;
}

// The secret grep (issue #14): after a run that used every credential type, failures included, no
// secret value appears in the gateway's log, the ledger (API, `ledger show`, `ledger export`),
// /metrics, any admin GET, the dashboard, `toolgate status` and friends, or any answer the agent got.
TEST_F(DownstreamReachTest, NoSecretAppearsInAnyOutputAfterEveryCredentialTypeWasUsed) {
  const std::string bearer = "bearer-SECRET-5f0c1e9a", header = "header-SECRET-91ab77d2";
  const std::string client_secret = "client-SECRET-3c9d02b4", down_secret = "client-SECRET-down-77aa10",
                    bad_secret = "client-SECRET-bad-e41f6b";
  FakeDownstream idp, api;
  RefusingPort nowhere;
  std::atomic<int> issued{0};
  idp.set_behavior([&](const Request& r) {
    // An endpoint that refuses the client and echoes everything it was sent, secret included.
    if (r.path == "/token-bad") {
      return Reply{401, json{{"error", "invalid_client"},
                             {"error_description", "bad: " + Header(r, "authorization") + " " + r.body}}
                            .dump()};
    }
    const int n = ++issued;
    return Reply{200, json{{"access_token", "access-SECRET-" + std::to_string(n) + "-b7d3"},
                           {"token_type", "bearer"},
                           {"expires_in", 3600}}
                          .dump()};
  });
  std::atomic<bool> refused_first_token{false};
  api.set_behavior([&](const Request& r) {
    const std::string auth = Header(r, "authorization");
    // A downstream error that echoes the credentials it got.
    if (r.path.rfind("/echo", 0) == 0) {
      return Reply{500, json{{"got", auth + " " + Header(r, "x-api-key")}}.dump(), {{"X-Echo", auth}}};
    }
    // A downstream that refuses a static credential (revoked key): 401 to the bearer token, 403 to the
    // header key, both echoing what they refused.
    if (r.path == "/denied") {
      const std::string got = auth + " " + Header(r, "x-api-key");
      return Reply{auth.empty() ? 403 : 401,
                   json{{"error", "refused: " + got}}.dump(),
                   {{"WWW-Authenticate", "Bearer error=\"invalid_token\" " + got}}};
    }
    if (auth == "Bearer access-SECRET-1-b7d3" && !refused_first_token.exchange(true)) return Reply{401, "{}"};
    return Reply{200, R"({"ok":true})"};
  });
  setenv("REACH_CRED_BEARER", bearer.c_str(), 1);
  setenv("REACH_CRED_CLIENT", client_secret.c_str(), 1);
  setenv("REACH_CRED_BAD_CLIENT", bad_secret.c_str(), 1);
  std::ofstream(dir_.file("header.secret")) << header << "\n";
  std::ofstream(dir_.file("down.secret")) << down_secret << "\n";
  const std::string base = "base_url = \"" + api.base_url() + "\"\n";
  auto oauth = [](const std::string& token_url, const std::string& secret_key) {
    return "type = \"oauth2_client_credentials\"\ntoken_url = \"" + token_url + "\"\nclient_id = \"reach-client\"\n" +
           secret_key + "\n";
  };
  GatewayProcess& gw = Start(
      "[connectors.bearer]\n" + base +
      "[connectors.bearer.auth]\ntype = \"bearer\"\ntoken_env = \"REACH_CRED_BEARER\"\n" +
      "[tools.\"bearer.echo\"]\npath = \"/echo\"\n" + "[tools.\"bearer.denied\"]\npath = \"/denied\"\n" +
      "[connectors.hfile]\n" + base +
      "[connectors.hfile.auth]\ntype = \"header\"\nname = \"X-Api-Key\"\nvalue_file = \"" + dir_.file("header.secret") +
      "\"\n" + "[tools.\"hfile.echo\"]\npath = \"/echo\"\n" + "[tools.\"hfile.denied\"]\npath = \"/denied\"\n" +
      "[connectors.oauth]\n" + base + "[connectors.oauth.auth]\n" +
      oauth(idp.base_url() + "/token", "client_secret_env = \"REACH_CRED_CLIENT\"") +
      "[tools.\"oauth.echo\"]\npath = \"/echo\"\n" + "[connectors.oauth_down]\n" + base +
      "[connectors.oauth_down.auth]\n" +
      oauth(nowhere.url() + "/token", "client_secret_file = \"" + dir_.file("down.secret") + "\"") +
      "[connectors.oauth_bad]\n" + base + "[connectors.oauth_bad.auth]\n" +
      oauth(idp.base_url() + "/token-bad", "client_secret_env = \"REACH_CRED_BAD_CLIENT\"") +
      // Every log line as JSON and one per request: the fields of structured lines are grepped too.
      "[log]\nformat = \"json\"\naccess = true\n");

  std::string seen_by_agent;
  std::vector<std::string> ids;
  auto call = [&](const std::string& tool, int expected_status) {
    auto r = gw.Invoke(tool, {{"input", {{"q", tool}}}}, alice_);
    EXPECT_EQ(r.status, expected_status) << tool << ": " << r.body;
    seen_by_agent += r.body + "\n";
    for (const auto& [k, v] : r.headers) seen_by_agent += k + ": " + v + "\n";
    if (Body(r).contains("execution_id")) ids.push_back(Body(r)["execution_id"]);
    return Body(r);
  };
  call("bearer.ping", 200);
  call("hfile.ping", 200);
  call("oauth.ping", 200);  // the first token is refused once: a 401, a refetch, a re-send
  call("oauth.ping", 200);
  EXPECT_EQ(call("oauth_down.ping", 502)["reason"], "credentials_unavailable");
  EXPECT_EQ(call("oauth_bad.ping", 502)["reason"], "credentials_unavailable");
  for (const char* echo : {"bearer.echo", "hfile.echo", "oauth.echo"})
    EXPECT_EQ(call(echo, 502)["reason"], "downstream_error");
  // A bearer token and a header key the downstream refuses (401, 403): a failure, no secret in it.
  for (const char* denied : {"bearer.denied", "hfile.denied"}) {
    const json answer = call(denied, 502);
    EXPECT_EQ(answer["reason"], "downstream_rejected") << answer;
  }

  // The secrets were really used (else the grep below proves nothing).
  EXPECT_EQ(idp.total(), 3);  // the first token, the one after the 401, the refused client
  std::string sent_to_api;
  for (const Request& r : api.requests()) {
    for (const auto& [k, v] : r.headers) {
      sent_to_api += v + "\n";
      EXPECT_THAT(v, Not(HasSubstr(alice_))) << "the agent's JWT was forwarded in " << k;
    }
  }
  EXPECT_THAT(sent_to_api, HasSubstr("Bearer " + bearer));
  EXPECT_THAT(sent_to_api, HasSubstr(header));
  int denied_requests = 0;
  for (const Request& r : api.requests()) denied_requests += r.path == "/denied";
  EXPECT_EQ(denied_requests, 2) << "a refused static credential is not re-sent";
  EXPECT_THAT(sent_to_api, HasSubstr("Bearer access-SECRET-1-b7d3"));
  EXPECT_THAT(sent_to_api, HasSubstr("Bearer access-SECRET-2-b7d3"));
  for (const Request& r : idp.requests()) EXPECT_THAT(Header(r, "authorization"), Not(HasSubstr(alice_)));

  // Everything an operator or an agent can read.
  std::map<std::string, std::string> outputs;
  outputs["agent answers"] = seen_by_agent;
  for (const char* path :
       {"/", "/metrics", "/admin/connectors", "/admin/slo", "/admin/series", "/admin/audit", "/admin/kill-switches"}) {
    auto r = gw.Admin("GET", path);
    EXPECT_EQ(r.status, 200) << path;
    outputs[std::string("GET ") + path] = r.body;
  }
  outputs["GET /v1/executions"] = gw.Public("GET", "/v1/executions", "", alice_).body;
  for (const auto& id : ids) {
    outputs["GET /v1/executions/" + id] = gw.Public("GET", "/v1/executions/" + id, "", alice_).body;
    auto r = gw.Admin("GET", "/admin/executions/" + id);
    EXPECT_EQ(r.status, 200) << id << ": " << r.body;
    outputs["GET /admin/executions/" + id] = r.body;
  }
  // The admin side's listings, and replays by an operator (each a new call through the credentials).
  const json replay_ask = {{"replay_reason", "secret grep"}, {"requested_by", "oncall@acme"}};
  json dry = replay_ask;
  dry["connector"] = "oauth_bad";
  dry["dry_run"] = true;
  auto dry_run = gw.Admin("POST", "/admin/replays", dry.dump());
  EXPECT_EQ(dry_run.status, 200) << dry_run.body;
  EXPECT_EQ(Body(dry_run)["matched"], 1) << dry_run.body;
  outputs["POST /admin/replays (dry run)"] = dry_run.body;
  json bulk = replay_ask;
  bulk["connector"] = "oauth_bad";
  auto created = gw.Admin("POST", "/admin/replays", bulk.dump());
  ASSERT_EQ(created.status, 202) << created.body;
  outputs["POST /admin/replays"] = created.body;
  const std::string job_id = Body(created)["job_id"];
  std::string job_state;
  for (int i = 0; i < 200 && job_state != "DONE"; ++i) {  // bounded: 20 s
    auto job = gw.Admin("GET", "/admin/replays/" + job_id);
    outputs["GET /admin/replays/{job_id}"] = job.body;
    job_state = Body(job).value("state", "");
    if (job_state != "DONE") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(job_state, "DONE") << outputs["GET /admin/replays/{job_id}"];
  for (const std::string& id : ids) {
    if (Body(gw.Admin("GET", "/admin/executions/" + id)).value("tool_name", "") != "hfile.denied") continue;
    auto one = gw.Admin("POST", "/admin/executions/" + id + "/replay", replay_ask.dump());
    EXPECT_EQ(one.status, 502) << one.body;
    EXPECT_EQ(Body(one).value("reason", ""), "downstream_rejected") << one.body;
    outputs["POST /admin/executions/{id}/replay"] = one.body;
  }
  EXPECT_EQ(outputs.count("POST /admin/executions/{id}/replay"), 1u);
  for (const char* path : {"/admin/status", "/admin/executions", "/admin/replays", "/admin/audit"}) {
    auto r = gw.Admin("GET", path);
    EXPECT_EQ(r.status, 200) << path << ": " << r.body;
    outputs[std::string("GET ") + path] = r.body;
  }
  EXPECT_THAT(outputs["GET /admin/executions"], HasSubstr("hfile.denied"));
  const std::string cli_config = gw.CliConfigPath();
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{{"status"},
                                                                                    {"status", "--json"},
                                                                                    {"slo", "status"},
                                                                                    {"limits", "list"},
                                                                                    {"kill-switch", "list"},
                                                                                    {"executions", "list", "--json"}}) {
    std::vector<std::string> argv = args;
    argv.insert(argv.end(), {"--config", cli_config});
    auto [code, out] = Cli(argv);
    EXPECT_EQ(code, 0) << args[0] << ": " << out;
    outputs["toolgate " + args[0] + (args.size() > 1 ? " " + args[1] : "")] = out;
  }
  EXPECT_THAT(outputs["toolgate status"], HasSubstr("oauth_down"));
  EXPECT_THAT(outputs["toolgate status --json"], HasSubstr("\"oauth_down\""));
  gw.Terminate();
  {
    auto [code, out] = Cli({"ledger", "export", "--config", gw.config_path()});
    EXPECT_EQ(code, 0) << out;
    EXPECT_THAT(out, HasSubstr("credentials_unavailable"));
    outputs["toolgate ledger export"] = out;
  }
  for (const auto& id : ids)
    outputs["toolgate ledger show " + id] = Cli({"ledger", "show", id, "--config", gw.config_path()}).second;
  {
    auto [code, out] = Cli({"ledger", "verify", "--config", gw.config_path()});
    EXPECT_EQ(code, 0) << out;
    outputs["toolgate ledger verify"] = out;
  }
  outputs["gateway log"] = gw.Log();
  EXPECT_THAT(outputs["gateway log"], HasSubstr("oauth_bad"));  // the failures were logged ...

  const std::vector<std::string> secrets = {bearer,
                                            header,
                                            client_secret,
                                            down_secret,
                                            bad_secret,
                                            "access-SECRET-1-b7d3",
                                            "access-SECRET-2-b7d3",
                                            absl::Base64Escape("reach-client:" + client_secret),
                                            absl::Base64Escape("reach-client:" + bad_secret),
                                            "SECRET"};  // ... and no part of any secret was
  for (const auto& [where, text] : outputs) {
    for (const auto& secret : secrets) {
      EXPECT_THAT(text, Not(HasSubstr(secret))) << where << " holds a secret:\n" << text.substr(0, 4000);
    }
  }
}

}  // namespace
}  // namespace toolgate
