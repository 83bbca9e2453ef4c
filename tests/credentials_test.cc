// ConnectorCredentials and SecretSource (design §13 "Credentials"): the OAuth2 token endpoint is a
// FakeDownstream (plain sockets, no code shared with the client under test) that counts token
// requests, checks the client's authentication and grant, and can be told to fail or to be slow.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fake_downstream.h"
#include "toolgate/clock.h"
#include "toolgate/connectors/credentials.h"

namespace toolgate {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using testing::FakeDownstream;
using HeaderList = ConnectorCredentials::HeaderList;

// The client's identity, with characters that RFC 6749 §2.3.1's form-encoding must carry through.
constexpr char kClientId[] = "svc:gate";
constexpr char kClientSecret[] = "s3cr3t/CLIENT+xyz %";
constexpr char kSecretEnv[] = "TOOLGATE_CREDENTIALS_TEST_CLIENT_SECRET";
// base64("svc%3Agate:s3cr3t%2FCLIENT%2Bxyz+%25"), worked out independently of the code under test.
constexpr char kExpectedBasic[] = "Basic c3ZjJTNBZ2F0ZTpzM2NyM3QlMkZDTElFTlQlMkJ4eXorJTI1";
constexpr char kExpectedBody[] = "grant_type=client_credentials&scope=read+write&audience=https%3A%2F%2Fapi.example";

// Runs `n` Headers() calls at once, as coroutines on one io_context run by two threads; returns
// their results in spawn order and how long (real time) each took.
struct Outcome {
  absl::StatusOr<HeaderList> headers;
  milliseconds took{0};
};
std::vector<Outcome> RunConcurrently(ConnectorCredentials& credentials, int n, milliseconds timeout) {
  asio::io_context io;
  std::vector<std::optional<Outcome>> slots(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    asio::co_spawn(
        io,
        [&credentials, &slots, i, timeout]() -> asio::awaitable<void> {
          const auto start = std::chrono::steady_clock::now();
          auto op = credentials.Headers(timeout);
          absl::StatusOr<HeaderList> h = co_await std::move(op);
          slots[static_cast<size_t>(i)] =
              Outcome{std::move(h), std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start)};
        },
        asio::detached);
  }
  std::thread second([&io] { io.run(); });
  io.run();
  second.join();
  std::vector<Outcome> out;
  for (auto& s : slots) {
    EXPECT_TRUE(s.has_value()) << "a Headers() coroutine never finished";
    out.push_back(s.has_value() ? std::move(*s) : Outcome{absl::InternalError("did not finish")});
  }
  return out;
}

absl::StatusOr<HeaderList> HeadersOnce(ConnectorCredentials& credentials, milliseconds timeout = milliseconds(5000)) {
  return RunConcurrently(credentials, 1, timeout)[0].headers;
}

HeaderList Bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

class TokenEndpoint {
 public:
  enum class Mode { kOk, kStatus500, kBadJson, kNoAccessToken, kMacTokenType, kDrop };

  TokenEndpoint() {
    server_.set_behavior([this](const FakeDownstream::Request& r) { return Answer(r); });
  }

  std::string url() const { return server_.base_url() + "/token"; }
  int port() const { return server_.port(); }
  int requests() const { return server_.count("/token"); }
  void set_mode(Mode m) { mode_ = m; }
  void set_delay_ms(int ms) { delay_ms_ = ms; }
  void set_expires_in(int s) { expires_in_ = s; }
  // Requests whose authentication or grant was not what the client must send.
  int malformed() const { return malformed_.load(); }

 private:
  FakeDownstream::Reply Answer(const FakeDownstream::Request& r) {
    FakeDownstream::Reply reply;
    reply.delay_ms = delay_ms_.load();
    const auto header = [&r](const std::string& name) {
      const auto it = r.headers.find(name);
      return it == r.headers.end() ? std::string() : it->second;
    };
    if (r.method != "POST" || header("authorization") != kExpectedBasic || r.body != kExpectedBody ||
        header("content-type") != "application/x-www-form-urlencoded") {
      malformed_.fetch_add(1);
      reply.status = 401;
      reply.body = R"({"error":"invalid_client"})";
      return reply;
    }
    const int serial = issued_.fetch_add(1) + 1;
    const std::string token = "tok-" + std::to_string(serial) + "-SECRETTOKEN";
    switch (mode_.load()) {
      case Mode::kOk:
        reply.body = R"({"access_token":")" + token + R"(","token_type":"Bearer","expires_in":)" +
                     std::to_string(expires_in_.load()) + "}";
        break;
      case Mode::kStatus500:
        // An endpoint that echoes what it got: none of it may reach a message.
        reply.status = 500;
        reply.body = std::string(R"({"error":"server_error","echo":")") + kClientSecret + " " + kExpectedBasic + "\"}";
        break;
      case Mode::kBadJson:
        reply.body = R"({"access_token":")" + token + R"(", oops)";
        break;
      case Mode::kNoAccessToken:
        reply.body = R"({"token_type":"bearer","expires_in":3600})";
        break;
      case Mode::kMacTokenType:
        reply.body = R"({"access_token":")" + token + R"(","token_type":"mac"})";
        break;
      case Mode::kDrop:
        reply.close_without_reply = true;
        break;
    }
    return reply;
  }

  FakeDownstream server_;
  std::atomic<Mode> mode_{Mode::kOk};
  std::atomic<int> delay_ms_{0};
  std::atomic<int> expires_in_{3600};
  std::atomic<int> issued_{0};
  std::atomic<int> malformed_{0};
};

std::string Token(int serial) { return "tok-" + std::to_string(serial) + "-SECRETTOKEN"; }

class OAuth2Test : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(setenv(kSecretEnv, kClientSecret, 1), 0); }
  void TearDown() override { unsetenv(kSecretEnv); }

  CredentialOptions Options(int port) const {
    CredentialOptions o;
    o.type = CredentialOptions::Type::kOAuth2ClientCredentials;
    o.secret_env = kSecretEnv;
    o.token_url = "http://127.0.0.1:" + std::to_string(port) + "/token";
    o.token_address = HostPort{"127.0.0.1", port};
    o.token_target = "/token";
    o.client_id = kClientId;
    o.scope = "read write";
    o.audience = "https://api.example";
    return o;
  }
  CredentialOptions Options() const { return Options(endpoint_.port()); }

  ManualClock clock_;
  TokenEndpoint endpoint_;
};

TEST_F(OAuth2Test, HundredConcurrentCallersCauseOneTokenRequestAndShareTheToken) {
  endpoint_.set_delay_ms(300);  // the fetch is still in flight while all hundred arrive
  ConnectorCredentials credentials("crm", Options(), clock_);
  const auto outcomes = RunConcurrently(credentials, 100, milliseconds(5000));
  for (const auto& o : outcomes) {
    ASSERT_TRUE(o.headers.ok()) << o.headers.status();
    EXPECT_EQ(*o.headers, Bearer(Token(1)));
  }
  EXPECT_EQ(endpoint_.requests(), 1);
  EXPECT_EQ(endpoint_.malformed(), 0) << "the token request must carry Basic auth and the form-encoded grant";
  // Cached now: more calls, no more requests.
  RunConcurrently(credentials, 10, milliseconds(5000));
  EXPECT_EQ(endpoint_.requests(), 1);
}

TEST_F(OAuth2Test, TheTokenIsRefreshedOnceSixtySecondsBeforeItExpires) {
  ConnectorCredentials credentials("crm", Options(), clock_);
  ASSERT_EQ(HeadersOnce(credentials).value(), Bearer(Token(1)));
  clock_.advance(std::chrono::seconds(3600 - 60) - milliseconds(1));
  ASSERT_EQ(HeadersOnce(credentials).value(), Bearer(Token(1)));
  EXPECT_EQ(endpoint_.requests(), 1);

  clock_.advance(milliseconds(2));
  endpoint_.set_delay_ms(200);
  for (const auto& o : RunConcurrently(credentials, 50, milliseconds(5000))) {
    EXPECT_EQ(o.headers.value(), Bearer(Token(2)));
  }
  EXPECT_EQ(endpoint_.requests(), 2);
}

TEST_F(OAuth2Test, AShortLivedTokenIsCachedForHalfItsLife) {
  endpoint_.set_expires_in(30);
  ConnectorCredentials credentials("crm", Options(), clock_);
  ASSERT_EQ(HeadersOnce(credentials).value(), Bearer(Token(1)));
  clock_.advance(milliseconds(14'900));
  ASSERT_EQ(HeadersOnce(credentials).value(), Bearer(Token(1)));
  clock_.advance(milliseconds(200));
  ASSERT_EQ(HeadersOnce(credentials).value(), Bearer(Token(2)));
  EXPECT_EQ(endpoint_.requests(), 2);
}

TEST_F(OAuth2Test, ConcurrentUnauthorizedForOneTokenCauseOneRefetchAndAStaleOneNone) {
  ConnectorCredentials credentials("crm", Options(), clock_);
  ASSERT_EQ(HeadersOnce(credentials).value(), Bearer(Token(1)));
  endpoint_.set_delay_ms(100);

  // Twenty calls were sent with the cached token and are all refused (401) at once: each invalidates
  // the token it sent and asks again.
  const auto sent = RunConcurrently(credentials, 20, milliseconds(5000));
  asio::io_context io;
  std::vector<std::optional<absl::StatusOr<HeaderList>>> second(sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(sent[i].headers.value(), Bearer(Token(1)));
    asio::co_spawn(
        io,
        [&credentials, &second, &sent, i]() -> asio::awaitable<void> {
          credentials.InvalidateToken(sent[i].headers->at(0).second);  // "Bearer tok-1-..." as sent
          auto again_op = credentials.Headers(milliseconds(5000));
          second[i] = co_await std::move(again_op);
        },
        asio::detached);
  }
  std::thread t([&io] { io.run(); });
  io.run();
  t.join();
  for (const auto& h : second) {
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->value(), Bearer(Token(2)));
  }
  EXPECT_EQ(endpoint_.requests(), 2) << "twenty 401s for one token must cause exactly one refetch";

  // A 401 for the token already replaced changes nothing.
  credentials.InvalidateToken(Token(1));
  EXPECT_EQ(HeadersOnce(credentials).value(), Bearer(Token(2)));
  EXPECT_EQ(endpoint_.requests(), 2);
  // The bare current token works as well as the header value.
  credentials.InvalidateToken(Token(2));
  EXPECT_EQ(HeadersOnce(credentials).value(), Bearer(Token(3)));
  EXPECT_EQ(endpoint_.requests(), 3);
  EXPECT_TRUE(credentials.RefreshesOn401());
}

// Every message must name the endpoint and hold neither the client secret nor any token.
void ExpectCleanUnavailable(const absl::StatusOr<HeaderList>& h, const std::string& url, const std::string& says) {
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kUnavailable) << h.status();
  const std::string message(h.status().message());
  EXPECT_NE(message.find(url), std::string::npos) << message;
  EXPECT_NE(message.find(says), std::string::npos) << message;
  EXPECT_EQ(message.find("s3cr3t"), std::string::npos) << message;
  EXPECT_EQ(message.find("SECRETTOKEN"), std::string::npos) << message;
  EXPECT_EQ(message.find("c3ZjJTNB"), std::string::npos) << message;  // the Basic credentials
}

TEST_F(OAuth2Test, AFailingEndpointIsUnavailableWithoutSecretsAndRecovers) {
  ConnectorCredentials credentials("crm", Options(), clock_);
  const std::string url = endpoint_.url();
  struct Case {
    TokenEndpoint::Mode mode;
    std::string says;
  };
  const std::vector<Case> cases = {
      {TokenEndpoint::Mode::kStatus500, "answered 500 (server_error)"},
      {TokenEndpoint::Mode::kBadJson, "without a JSON object"},
      {TokenEndpoint::Mode::kNoAccessToken, "without an access_token"},
      {TokenEndpoint::Mode::kMacTokenType, "token_type mac, not Bearer"},
      {TokenEndpoint::Mode::kDrop, "failed: receive"},
  };
  int expected_requests = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.says);
    endpoint_.set_mode(c.mode);
    ExpectCleanUnavailable(HeadersOnce(credentials), url, c.says);
    EXPECT_EQ(endpoint_.requests(), ++expected_requests);
    // Within the hold-off the failure is answered without asking again.
    ExpectCleanUnavailable(HeadersOnce(credentials), url, c.says);
    EXPECT_EQ(endpoint_.requests(), expected_requests);
    clock_.advance(milliseconds(1000));
  }
  endpoint_.set_mode(TokenEndpoint::Mode::kOk);
  const auto ok = HeadersOnce(credentials);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(endpoint_.requests(), expected_requests + 1);
  EXPECT_EQ(ok->at(0).second.rfind("Bearer tok-", 0), 0u);
}

TEST_F(OAuth2Test, WaitersOfAFailedFlightAllGetItsError) {
  endpoint_.set_mode(TokenEndpoint::Mode::kStatus500);
  endpoint_.set_delay_ms(200);
  ConnectorCredentials credentials("crm", Options(), clock_);
  for (const auto& o : RunConcurrently(credentials, 50, milliseconds(5000))) {
    ExpectCleanUnavailable(o.headers, endpoint_.url(), "answered 500");
  }
  EXPECT_EQ(endpoint_.requests(), 1);
}

TEST_F(OAuth2Test, AnEndpointThatIsDownIsUnavailableAndOneThatComesBackServes) {
  int dead_port = 0;
  {
    FakeDownstream gone;
    dead_port = gone.port();
  }
  ConnectorCredentials down("crm", Options(dead_port), clock_);
  const auto h = HeadersOnce(down);
  ExpectCleanUnavailable(h, "http://127.0.0.1:" + std::to_string(dead_port) + "/token", "failed: connect");

  // The endpoint "comes back": a wrong client id (401) first, then the right one.
  CredentialOptions wrong = Options();
  wrong.client_id = "someone-else";
  ConnectorCredentials refused("crm", wrong, clock_);
  ExpectCleanUnavailable(HeadersOnce(refused), endpoint_.url(), "answered 401 (invalid_client)");
  ConnectorCredentials fine("crm", Options(), clock_);
  EXPECT_EQ(HeadersOnce(fine).value(), Bearer(Token(1)));
}

TEST_F(OAuth2Test, ACallerWaitsNoLongerThanItsTimeoutAndTheFetchGoesOnForOthers) {
  endpoint_.set_delay_ms(600);
  ConnectorCredentials credentials("crm", Options(), clock_);
  asio::io_context io;
  std::optional<absl::StatusOr<HeaderList>> hasty, patient;
  std::chrono::steady_clock::duration hasty_took{};
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const auto start = std::chrono::steady_clock::now();
        auto op = credentials.Headers(milliseconds(50));
        hasty = co_await std::move(op);
        hasty_took = std::chrono::steady_clock::now() - start;
        auto later_op = credentials.Headers(milliseconds(5000));
        patient = co_await std::move(later_op);
      },
      asio::detached);
  io.run();
  ASSERT_TRUE(hasty.has_value() && patient.has_value());
  ExpectCleanUnavailable(*hasty, endpoint_.url(), "within the call's timeout");
  EXPECT_LT(hasty_took, milliseconds(500)) << "the hasty caller waited for the slow endpoint";
  EXPECT_EQ(patient->value(), Bearer(Token(1)));
  EXPECT_EQ(endpoint_.requests(), 1) << "the second call must join the fetch the first one started";

  // No time left and no token cached: no fetch is started.
  ConnectorCredentials fresh("crm", Options(), clock_);
  ExpectCleanUnavailable(HeadersOnce(fresh, milliseconds(0)), endpoint_.url(), "no time left");
  EXPECT_EQ(endpoint_.requests(), 1);
}

TEST_F(OAuth2Test, AnUnreadableClientSecretFailsWithoutAskingTheEndpoint) {
  CredentialOptions o = Options();
  o.secret_env.clear();
  o.secret_file = (std::filesystem::temp_directory_path() / "toolgate-no-such-client-secret").string();
  ConnectorCredentials credentials("crm", o, clock_);
  const auto h = HeadersOnce(credentials);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(h.status().message().find(o.secret_file), std::string::npos) << h.status();
  EXPECT_EQ(endpoint_.requests(), 0);
}

TEST_F(OAuth2Test, AnHttpsTokenUrlWithoutATlsContextIsRefusedBeforeAnythingIsSent) {
  CredentialOptions o = Options();
  o.token_tls = true;
  o.token_url = "https://127.0.0.1:" + std::to_string(endpoint_.port()) + "/token";
  ConnectorCredentials credentials("crm", o, clock_);
  const auto h = HeadersOnce(credentials);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition) << h.status();
  EXPECT_EQ(endpoint_.requests(), 0);
}

TEST_F(OAuth2Test, NoSecretOrTokenInAnyLogLine) {
  const auto previous = spdlog::default_logger();
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  auto capture = std::make_shared<spdlog::logger>("capture", sink);
  capture->set_level(spdlog::level::trace);
  spdlog::set_default_logger(capture);

  {
    ConnectorCredentials credentials("crm-logged", Options(), clock_);
    const auto ok = HeadersOnce(credentials);
    ASSERT_TRUE(ok.ok()) << ok.status();
    credentials.InvalidateToken(ok->at(0).second);
    endpoint_.set_mode(TokenEndpoint::Mode::kStatus500);
    EXPECT_FALSE(HeadersOnce(credentials).ok());
    clock_.advance(milliseconds(1000));
    endpoint_.set_mode(TokenEndpoint::Mode::kBadJson);
    EXPECT_FALSE(HeadersOnce(credentials).ok());
    CredentialOptions wrong = Options();
    wrong.client_id = "someone-else";
    ConnectorCredentials refused("crm-logged", wrong, clock_);
    EXPECT_FALSE(HeadersOnce(refused).ok());
  }
  spdlog::set_default_logger(previous);

  const std::string log = captured.str();
  EXPECT_NE(log.find("crm-logged"), std::string::npos) << "nothing was logged, so nothing was checked:\n" << log;
  EXPECT_NE(log.find("answered 500"), std::string::npos) << log;
  EXPECT_EQ(log.find("s3cr3t"), std::string::npos) << log;
  EXPECT_EQ(log.find("SECRETTOKEN"), std::string::npos) << log;
  EXPECT_EQ(log.find("c3ZjJTNB"), std::string::npos) << log;
}

// ---------------------------------------------------------------------------------------------
// Static secrets: bearer and header, from the environment or a file.

class StaticSecretTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("toolgate-credentials-test-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::filesystem::remove_all(dir_);
    unsetenv("TOOLGATE_CREDENTIALS_TEST_TOKEN");
  }
  std::string Write(const std::string& name, const std::string& content) {
    const auto path = dir_ / name;
    std::ofstream(path, std::ios::trunc) << content;
    return path.string();
  }

  ManualClock clock_;
  std::filesystem::path dir_;
};

TEST_F(StaticSecretTest, BearerFromTheEnvironment) {
  CredentialOptions o;
  o.type = CredentialOptions::Type::kBearer;
  o.secret_env = "TOOLGATE_CREDENTIALS_TEST_TOKEN";
  ConnectorCredentials credentials("crm", o, clock_);

  auto h = HeadersOnce(credentials);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(h.status().message().find("TOOLGATE_CREDENTIALS_TEST_TOKEN"), std::string::npos) << h.status();

  ASSERT_EQ(setenv("TOOLGATE_CREDENTIALS_TEST_TOKEN", "env-token-1\n", 1), 0);
  EXPECT_EQ(HeadersOnce(credentials).value(), Bearer("env-token-1"));
  ASSERT_EQ(setenv("TOOLGATE_CREDENTIALS_TEST_TOKEN", "  \n", 1), 0);
  h = HeadersOnce(credentials);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("is empty"), std::string::npos) << h.status();
  EXPECT_FALSE(credentials.RefreshesOn401());
}

TEST_F(StaticSecretTest, HeaderFromAFileFollowsItsRotation) {
  const std::string path = Write("api-key", "key-AAAA\n");
  CredentialOptions o;
  o.type = CredentialOptions::Type::kHeader;
  o.header_name = "X-Api-Key";
  o.secret_file = path;
  ConnectorCredentials credentials("crm", o, clock_);
  EXPECT_EQ(HeadersOnce(credentials).value(), (HeaderList{{"X-Api-Key", "key-AAAA"}}));

  // Rewritten with a value of the same length: seen once the check interval has passed.
  Write("api-key", "key-BBBB\n");
  EXPECT_EQ(HeadersOnce(credentials).value(), (HeaderList{{"X-Api-Key", "key-AAAA"}})) << "read at most once a second";
  clock_.advance(milliseconds(1000));
  EXPECT_EQ(HeadersOnce(credentials).value(), (HeaderList{{"X-Api-Key", "key-BBBB"}}));

  // A downstream's refusal makes the next call read the file at once.
  Write("api-key", "key-CCCC");
  credentials.InvalidateToken("key-BBBB");
  EXPECT_EQ(HeadersOnce(credentials).value(), (HeaderList{{"X-Api-Key", "key-CCCC"}}));

  // Gone: an error naming the file, not the old value.
  std::filesystem::remove(path);
  clock_.advance(milliseconds(1000));
  const auto h = HeadersOnce(credentials);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(h.status().message().find(path), std::string::npos) << h.status();
  EXPECT_EQ(h.status().message().find("key-"), std::string::npos) << h.status();

  // Back, and seen at the next call (a failed read is not cached).
  Write("api-key", "key-DDDD\n");
  EXPECT_EQ(HeadersOnce(credentials).value(), (HeaderList{{"X-Api-Key", "key-DDDD"}}));
}

TEST_F(StaticSecretTest, BearerFromAFileAndTheFilesItRefuses) {
  CredentialOptions o;
  o.type = CredentialOptions::Type::kBearer;
  o.secret_file = Write("token", "file-token\r\n");
  EXPECT_EQ(HeadersOnce(*std::make_unique<ConnectorCredentials>("crm", o, clock_)).value(), Bearer("file-token"));

  const auto refused = [&](const std::string& path, const std::string& says) {
    CredentialOptions bad = o;
    bad.secret_file = path;
    ConnectorCredentials credentials("crm", bad, clock_);
    const auto h = HeadersOnce(credentials);
    ASSERT_FALSE(h.ok()) << path;
    EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition);
    const std::string message(h.status().message());
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(says), std::string::npos) << message;
    EXPECT_EQ(message.find("line-one"), std::string::npos) << message;
  };
  refused((dir_ / "missing").string(), "cannot be read");
  refused(Write("empty", "\n"), "is empty");
  refused(Write("split", "line-one\nline-two\n"), "control character");
  refused(Write("huge", std::string(70 * 1024, 'x')), "larger than");
}

TEST(FormUrlEncodeTest, EncodesAsRfc6749AppendixB) {
  EXPECT_EQ(FormUrlEncode("azAZ09*-._"), "azAZ09*-._");
  EXPECT_EQ(FormUrlEncode("a b:c/d+e%f~"), "a+b%3Ac%2Fd%2Be%25f%7E");
  EXPECT_EQ(FormUrlEncode("\xC3\xA9"), "%C3%A9");
}

}  // namespace
}  // namespace toolgate
