// The admin listener refuses what a web page in an operator's browser could send it (design §6):
// a cross-site "simple" POST (text/plain, no preflight), a foreign Origin, and a foreign Host (DNS
// rebinding). Raw HTTP on loopback, so the test controls every header; the real binary, no token.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

// One request on a fresh connection; the status and the body of the answer.
std::pair<int, json> Raw(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return {-1, json()};
  }
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer;
  char buf[8192];
  for (int i = 0; i < 1000; ++i) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
    const auto end = answer.find("\r\n\r\n");
    const auto cl = answer.find("Content-Length: ");
    if (end != std::string::npos && cl != std::string::npos &&
        answer.size() >= end + 4 + std::stoul(answer.substr(cl + 16))) {
      break;
    }
  }
  close(fd);
  if (answer.size() < 12) return {-1, json()};
  const auto end = answer.find("\r\n\r\n");
  return {std::stoi(answer.substr(9, 3)), json::parse(answer.substr(end + 4), nullptr, false)};
}

std::string Request(const std::string& method, const std::string& path, const std::string& host,
                    const std::vector<std::string>& headers, const std::string& body = "") {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n";
  for (const auto& h : headers) r += h + "\r\n";
  if (!body.empty() || method != "GET") r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

class AdminCsrfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gw_ = std::make_unique<GatewayProcess>(
        testing::BaseConfig(dir_.file("store.db")) + "[connectors.crm]\nbase_url = \"" + crm_.base_url() + "\"\n",
        dir_);
    ASSERT_TRUE(gw_->Start());
    port_ = gw_->admin_port();
    self_ = "127.0.0.1:" + std::to_string(port_);
  }
  std::string State() {
    const json all = Body(gw_->Admin("GET", "/admin/connectors"));
    return all["connectors"][0]["breaker"]["state"];
  }

  TempDir dir_;
  FakeDownstream crm_;
  std::unique_ptr<GatewayProcess> gw_;
  int port_ = 0;
  std::string self_;
  const std::string close_body_ = R"({"reason":"csrf","requested_by":"evil","force":true})";
};

TEST_F(AdminCsrfTest, ACrossSiteSimplePostCannotCloseABreaker) {
  ASSERT_EQ(gw_->Admin("POST", "/admin/connectors/crm/breaker/open", R"({"reason":"r","requested_by":"me"})").status,
            200);
  ASSERT_EQ(State(), "FORCED_OPEN");
  // What a page can send without a preflight: text/plain, with its own Origin.
  auto [plain, plain_body] =
      Raw(port_, Request("POST", "/admin/connectors/crm/breaker/close", self_,
                         {"Content-Type: text/plain", "Origin: http://evil.example"}, close_body_));
  EXPECT_EQ(plain, 403) << plain_body;
  EXPECT_EQ(plain_body["error"], "forbidden_origin");
  // Without an Origin (some clients omit it), the content type alone refuses it.
  auto [typed, typed_body] = Raw(
      port_, Request("POST", "/admin/connectors/crm/breaker/close", self_, {"Content-Type: text/plain"}, close_body_));
  EXPECT_EQ(typed, 415) << typed_body;
  EXPECT_EQ(typed_body["error"], "unsupported_media_type");
  // A JSON request from a foreign origin (it would need a preflight, but refuse it anyway).
  auto [foreign, foreign_body] =
      Raw(port_, Request("POST", "/admin/connectors/crm/breaker/close", self_,
                         {"Content-Type: application/json", "Origin: http://evil.example"}, close_body_));
  EXPECT_EQ(foreign, 403) << foreign_body;
  EXPECT_EQ(State(), "FORCED_OPEN") << "a cross-site request closed the breaker";

  // The listener's own origin (the dashboard) with JSON is served.
  auto [own, own_body] =
      Raw(port_, Request("POST", "/admin/connectors/crm/breaker/close", self_,
                         {"Content-Type: application/json; charset=utf-8", "Origin: http://" + self_}, close_body_));
  EXPECT_EQ(own, 200) << own_body;
  EXPECT_EQ(State(), "CLOSED");
}

TEST_F(AdminCsrfTest, AForeignHostIsRefusedDnsRebindingReadsNothing) {
  auto [evil, evil_body] = Raw(port_, Request("GET", "/admin/connectors", "evil.example:" + std::to_string(port_), {}));
  EXPECT_EQ(evil, 403) << evil_body;
  EXPECT_EQ(evil_body["error"], "forbidden_host");
  EXPECT_FALSE(evil_body.contains("connectors"));
  auto [page, page_body] = Raw(port_, Request("GET", "/", "evil.example", {}));
  EXPECT_EQ(page, 403);
  auto [no_port, no_port_body] = Raw(port_, Request("GET", "/admin/connectors", "attacker.test", {}));
  EXPECT_EQ(no_port, 403);
  for (const std::string& host : {self_, "localhost:" + std::to_string(port_), std::string("127.0.0.1")}) {
    auto [ok, ok_body] = Raw(port_, Request("GET", "/admin/connectors", host, {}));
    EXPECT_EQ(ok, 200) << host << ": " << ok_body;
  }
}

TEST(AdminAllowedHostsTest, ANameInAllowedHostsIsServed) {
  TempDir dir;
  FakeDownstream crm;
  std::string config = testing::BaseConfig(dir.file("store.db"));
  config = testing::WithKeys(config, "[admin]", "allowed_hosts = [\"Gateway.Internal\"]\n");
  GatewayProcess gw(config + "[connectors.crm]\nbase_url = \"" + crm.base_url() + "\"\n", dir);
  ASSERT_TRUE(gw.Start());
  auto [ok, body] = Raw(gw.admin_port(), Request("GET", "/admin/connectors", "gateway.internal:443", {}));
  EXPECT_EQ(ok, 200) << body;
  auto [other, other_body] = Raw(gw.admin_port(), Request("GET", "/admin/connectors", "gateway.internal.evil", {}));
  EXPECT_EQ(other, 403) << other_body;
}

}  // namespace
}  // namespace toolgate
