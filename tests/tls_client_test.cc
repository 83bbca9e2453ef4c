// The HTTPS side of the net layer's client: MakeTlsClientContext's checks, verification of the
// server (issuer, expiry, host name), mutual TLS, pooled TLS connections (one handshake for many
// calls, never shared across TLS identities or with plain HTTP), and the deadline over the handshake.
// Certificates are made at test time with the openssl command line; servers run in-process.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_future.hpp>
#include <fstream>
#include <thread>

#include "test_support.h"
#include "tls_test_support.h"
#include "toolgate/net/http_client.h"
#include "toolgate/net/tls_client_context.h"

namespace toolgate::net {
namespace {

using ::testing::HasSubstr;
using toolgate::testing::TestHttpServer;

class TlsClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new toolgate::testing::TempDir();
    pki_error_ = new std::string(toolgate::testing::MakeTestPki(dir_->file("")));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete pki_error_;
  }
  void SetUp() override { ASSERT_EQ(*pki_error_, "") << "openssl could not make the test PKI"; }

  static std::string F(const std::string& name) { return dir_->file(name); }

  static std::shared_ptr<const TlsClientContext> Context(TlsOptions options) {
    auto made = MakeTlsClientContext(options);
    EXPECT_TRUE(made.ok()) << made.status();
    return made.ok() ? *made : nullptr;
  }
  static std::shared_ptr<const TlsClientContext> TrustingTestCa() { return Context({.ca_file = F("ca.pem")}); }

  static TestHttpServer::Options Serving(const std::string& name) {
    return {.cert_file = F(name + ".pem"), .key_file = F(name + ".key")};
  }

  static ClientRequest Get(int port, std::shared_ptr<const TlsClientContext> tls, const std::string& target = "/x") {
    ClientRequest r;
    r.address = {"127.0.0.1", port};
    r.target = target;
    r.tls = std::move(tls);
    r.timeout = std::chrono::milliseconds(5000);
    return r;
  }

  // Runs calls on one io_context that outlives the pool's connections (the pool is destroyed first).
  ClientResult Call(ClientRequest request, ConnectionPool* pool) {
    std::future<ClientResult> f =
        boost::asio::co_spawn(io_, AsyncHttpCall(std::move(request), pool), boost::asio::use_future);
    io_.restart();
    io_.run();
    return f.get();
  }

  static toolgate::testing::TempDir* dir_;
  static std::string* pki_error_;
  boost::asio::io_context io_;
};

toolgate::testing::TempDir* TlsClientTest::dir_ = nullptr;
std::string* TlsClientTest::pki_error_ = nullptr;

// --- MakeTlsClientContext ---

TEST_F(TlsClientTest, ContextFromTheTestCaAndFromTheSystemStore) {
  EXPECT_TRUE(MakeTlsClientContext({.ca_file = F("ca.pem")}).ok());
  EXPECT_TRUE(MakeTlsClientContext({}).ok());
  EXPECT_TRUE(MakeTlsClientContext(
                  {.ca_file = F("ca.pem"), .client_cert_file = F("client.pem"), .client_key_file = F("client.key")})
                  .ok());
}

TEST_F(TlsClientTest, AMissingCaFileIsInvalidArgumentNamingIt) {
  auto made = MakeTlsClientContext({.ca_file = F("no-such-ca.pem")});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(made.status().message()), HasSubstr("ca_file"));
  EXPECT_THAT(std::string(made.status().message()), HasSubstr(F("no-such-ca.pem")));
}

TEST_F(TlsClientTest, ACaFileWithoutCertificatesIsInvalidArgumentWithoutItsContents) {
  const std::string path = F("garbage.pem");
  std::ofstream(path) << "not-a-certificate-SECRET-ish-content\n";
  auto made = MakeTlsClientContext({.ca_file = path});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(made.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(made.status().message()), ::testing::Not(HasSubstr("SECRET")));
}

TEST_F(TlsClientTest, AKeyNotMatchingTheClientCertificateIsInvalidArgumentNamingTheKeyFile) {
  auto made = MakeTlsClientContext(
      {.ca_file = F("ca.pem"), .client_cert_file = F("client.pem"), .client_key_file = F("server.key")});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(made.status().message()), HasSubstr(F("server.key")));
  EXPECT_THAT(std::string(made.status().message()), HasSubstr("client_key_file"));
}

TEST_F(TlsClientTest, AClientCertificateWithoutKeyIsInvalidArgument) {
  auto made = MakeTlsClientContext({.ca_file = F("ca.pem"), .client_cert_file = F("client.pem")});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = MakeTlsClientContext(
      {.ca_file = F("ca.pem"), .client_cert_file = F("client.pem"), .client_key_file = F("no-such.key")});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(F("no-such.key")));
}

// --- calls ---

TEST_F(TlsClientTest, ATrustedServerAnswersAndPooledCallsShareOneHandshake) {
  TestHttpServer server(Serving("server"));
  auto tls = TrustingTestCa();
  ConnectionPool pool;
  for (int i = 0; i < 5; ++i) {
    ClientResult r = Call(Get(server.port(), tls, "/call" + std::to_string(i)), &pool);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_FALSE(r.tls_error);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "hello /call" + std::to_string(i));
  }
  EXPECT_EQ(server.requests(), 5);
  EXPECT_EQ(server.handshakes(), 1);
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(pool.handshakes(), 1u);
  EXPECT_EQ(pool.stats().reused, 4u);
  EXPECT_EQ(server.last_server_name(), "");  // no SNI for an IP address (RFC 6066)
}

TEST_F(TlsClientTest, AHostNameIsVerifiedAndSentAsSni) {
  TestHttpServer server(Serving("server"));
  ClientRequest r = Get(server.port(), TrustingTestCa());
  r.server_name = "localhost";  // the certificate's SAN DNS entry
  ClientResult out = Call(r, nullptr);
  ASSERT_TRUE(out.ok) << out.error;
  EXPECT_EQ(server.last_server_name(), "localhost");

  r.server_name = "not-localhost.example";
  out = Call(r, nullptr);
  EXPECT_TRUE(out.tls_error);
  EXPECT_THAT(out.error, HasSubstr("hostname mismatch"));
  EXPECT_EQ(server.requests(), 1);
}

TEST_F(TlsClientTest, WithoutHttpsAPlainClientCallWithoutPoolStillWorks) {
  TestHttpServer server(Serving("server"));
  ClientRequest r = Get(server.port(), TrustingTestCa());
  ClientResult out = HttpCall(r);  // a private io_context, no pool
  ASSERT_TRUE(out.ok) << out.error;
  EXPECT_EQ(out.body, "hello /x");
}

struct Refusal {
  const char* certificate;  // what the server presents
  const char* expected_error;
};

class TlsRefusalTest : public TlsClientTest, public ::testing::WithParamInterface<Refusal> {};

TEST_P(TlsRefusalTest, IsATlsErrorAndNothingReachesTheServer) {
  TestHttpServer server(Serving(GetParam().certificate));
  ConnectionPool pool;
  ClientResult r = Call(Get(server.port(), TrustingTestCa()), &pool);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.tls_error);
  EXPECT_TRUE(r.connected);
  EXPECT_FALSE(r.sent);
  EXPECT_FALSE(r.timed_out);
  EXPECT_THAT(r.error, HasSubstr(GetParam().expected_error));
  EXPECT_EQ(server.requests(), 0);
  EXPECT_EQ(server.handshakes(), 0);
  EXPECT_EQ(pool.handshakes(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Certificates, TlsRefusalTest,
                         ::testing::Values(Refusal{"untrusted",
                                                   "certificate verify failed: unable to get local issuer certificate"},
                                           Refusal{"wrong_host", "certificate verify failed: IP address mismatch"},
                                           Refusal{"expired", "certificate verify failed: certificate has expired"}),
                         [](const auto& info) { return std::string(info.param.certificate); });

TEST_F(TlsClientTest, TheSystemTrustStoreDoesNotTrustTheTestCa) {
  TestHttpServer server(Serving("server"));
  ClientResult r = Call(Get(server.port(), Context({})), nullptr);
  EXPECT_TRUE(r.tls_error);
  EXPECT_THAT(r.error, HasSubstr("certificate verify failed"));
  EXPECT_EQ(server.requests(), 0);
}

TEST_F(TlsClientTest, MutualTlsWithTheClientCertificateIsServed) {
  auto options = Serving("server");
  options.client_ca_file = F("ca.pem");
  TestHttpServer server(options);
  auto tls = Context({.ca_file = F("ca.pem"), .client_cert_file = F("client.pem"), .client_key_file = F("client.key")});
  ConnectionPool pool;
  for (int i = 0; i < 3; ++i) {
    ClientResult r = Call(Get(server.port(), tls), &pool);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.status, 200);
  }
  EXPECT_EQ(server.requests(), 3);
  EXPECT_EQ(server.handshakes(), 1);
}

TEST_F(TlsClientTest, MutualTlsWithoutAClientCertificateIsRefusedBeforeTheRequest) {
  auto options = Serving("server");
  options.client_ca_file = F("ca.pem");
  TestHttpServer server(options);
  ClientResult r = Call(Get(server.port(), TrustingTestCa()), nullptr);
  EXPECT_FALSE(r.ok);
  // Under TLS 1.3 the server's refusal comes after the client finished its handshake: it is still
  // reported as a TLS refusal when it arrives in place of the response.
  EXPECT_TRUE(r.tls_error) << r.error;
  EXPECT_FALSE(r.sent);
  EXPECT_THAT(r.error, HasSubstr("certificate required"));
  EXPECT_EQ(server.requests(), 0);
  EXPECT_EQ(server.handshakes(), 0);
}

TEST_F(TlsClientTest, ConnectionsAreNotSharedAcrossTlsIdentities) {
  TestHttpServer server(Serving("server"));
  ConnectionPool pool;
  ASSERT_TRUE(Call(Get(server.port(), TrustingTestCa()), &pool).ok);
  ASSERT_EQ(server.handshakes(), 1);

  // Another connector trusting only the other CA: the idle connection verified under the test CA
  // must not serve it, so it handshakes itself and refuses the server.
  ClientResult other = Call(Get(server.port(), Context({.ca_file = F("other_ca.pem")})), &pool);
  EXPECT_TRUE(other.tls_error);
  EXPECT_THAT(other.error, HasSubstr("unable to get local issuer certificate"));

  // Plain HTTP to the TLS server's address: not the idle TLS connection either, so the TLS server
  // gets plaintext and reads no request.
  ClientResult plain = Call(Get(server.port(), nullptr), &pool);
  EXPECT_FALSE(plain.ok);
  EXPECT_FALSE(plain.tls_error);

  // Another server name for the same address and context: a connection of its own.
  ClientRequest by_name = Get(server.port(), TrustingTestCa());
  by_name.server_name = "localhost";
  EXPECT_TRUE(Call(by_name, &pool).ok);

  EXPECT_EQ(server.requests(), 2);
  EXPECT_EQ(server.handshakes(), 2);
  EXPECT_EQ(pool.handshakes(), 3u);
  EXPECT_EQ(pool.stats().reused, 0u);
}

TEST_F(TlsClientTest, PlainHttpThroughTheSamePoolStillWorksAndKeepsItsOwnConnection) {
  TestHttpServer tls_server(Serving("server"));
  TestHttpServer plain_server({});
  auto tls = TrustingTestCa();
  ConnectionPool pool;
  for (int i = 0; i < 3; ++i) {
    ClientResult t = Call(Get(tls_server.port(), tls), &pool);
    ASSERT_TRUE(t.ok) << t.error;
    ClientResult p = Call(Get(plain_server.port(), nullptr, "/plain"), &pool);
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_FALSE(p.tls_error);
    EXPECT_EQ(p.body, "hello /plain");
  }
  EXPECT_EQ(plain_server.accepted(), 1);
  EXPECT_EQ(plain_server.requests(), 3);
  EXPECT_EQ(tls_server.accepted(), 1);
  EXPECT_EQ(tls_server.requests(), 3);
  EXPECT_EQ(pool.handshakes(), 1u);
  EXPECT_EQ(pool.stats().connections_opened, 2u);
  EXPECT_EQ(pool.stats().reused, 4u);
}

// A pooled TLS connection the server closed is seen to be closed before a request is written to it
// (ConnectionPool peeks at it): each call gets a new handshake, and no request meets a dead one.
TEST_F(TlsClientTest, AnIdleTlsConnectionTheServerClosedIsNotReusedAndEachCallGetsANewHandshake) {
  auto options = Serving("server");
  options.close_after_response = true;  // closes without Connection: close and without close_notify
  TestHttpServer server(options);
  auto tls = TrustingTestCa();
  ConnectionPool pool;
  for (int i = 0; i < 3; ++i) {
    // Once the close has arrived (a call racing it meets it after writing: a GET may be sent again
    // then, which this test leaves out of play).
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ClientResult r = Call(Get(server.port(), tls), &pool);
    ASSERT_TRUE(r.ok) << "call " << i << ": " << r.error;
  }
  EXPECT_EQ(server.requests(), 3);  // each request reached it once: the stale connections saw none
  EXPECT_EQ(server.handshakes(), 3);
  EXPECT_EQ(pool.handshakes(), 3u);
  EXPECT_EQ(pool.stats().reused, 0u) << "a closed connection was taken from the pool";
}

// BlockingHttpClient (the DynamoDB store's): its kept-alive connection serves the calls that follow,
// whichever thread makes them, one at a time.
TEST_F(TlsClientTest, ABlockingClientKeepsItsConnectionAcrossCallsFromOtherThreads) {
  TestHttpServer server(Serving("server"));
  auto tls = TrustingTestCa();
  BlockingHttpClient client;
  ClientResult first = client.Call(Get(server.port(), tls, "/1"));
  ASSERT_TRUE(first.ok) << first.error;
  EXPECT_EQ(first.body, "hello /1");
  ClientResult second;
  std::thread other([&] { second = client.Call(Get(server.port(), tls, "/2")); });
  other.join();
  ASSERT_TRUE(second.ok) << second.error;
  EXPECT_EQ(second.body, "hello /2");
  ClientResult third = client.Call(Get(server.port(), tls, "/3"));
  ASSERT_TRUE(third.ok) << third.error;
  EXPECT_EQ(server.requests(), 3);
  EXPECT_EQ(server.handshakes(), 1);
  EXPECT_EQ(client.stats().connections_opened, 1u);
  EXPECT_EQ(client.stats().reused, 2u);
}

TEST_F(TlsClientTest, ABlockingClientReportsAnAddressWithNoServerAsNotConnected) {
  // A port that was free a moment ago: nothing listens on it, the connection is refused.
  const int port = toolgate::testing::FreeLoopbackPort();
  BlockingHttpClient client;
  ClientRequest r = Get(port, nullptr);
  r.timeout = std::chrono::milliseconds(2000);
  ClientResult out = client.Call(r);
  EXPECT_FALSE(out.ok);
  EXPECT_FALSE(out.connected);
  EXPECT_FALSE(out.sent);
  EXPECT_THAT(out.error, HasSubstr("connect"));
  EXPECT_EQ(client.stats().connections_opened, 0u);
}

TEST_F(TlsClientTest, TheDeadlineCoversAHandshakeThatNeverAnswers) {
  // A listening socket nobody accepts from: the kernel completes the TCP connection, then silence.
  boost::asio::io_context silent;
  boost::asio::ip::tcp::acceptor acceptor(silent, {boost::asio::ip::make_address("127.0.0.1"), 0});
  ClientRequest r = Get(acceptor.local_endpoint().port(), TrustingTestCa());
  r.timeout = std::chrono::milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  ClientResult out = Call(r, nullptr);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(out.timed_out);
  EXPECT_TRUE(out.connected);
  EXPECT_FALSE(out.tls_error);
  EXPECT_FALSE(out.sent);
  EXPECT_LT(took, std::chrono::seconds(3));
}

}  // namespace
}  // namespace toolgate::net
