// How one request and its answer cross a kept-alive connection to a downstream (design §13), against
// a loopback server that writes exactly the bytes a test gives it: interim (1xx) answers are skipped,
// so each call gets its own answer; a request written to a kept-alive connection that then closes
// without a byte of answer is sent again only when it is safe to repeat; a connection the downstream
// closed while idle is found out before a request is written to it. And the Retry-After header in
// both of its forms, and what a redirect means for the breaker.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "loopback_http_server.h"
#include "toolgate/connectors/http_connector.h"
#include "toolgate/domain/downstream_outcome.h"
#include "toolgate/net/http_client.h"

namespace toolgate {
namespace {

namespace asio = boost::asio;
using testing::LoopbackListener;
using testing::LoopbackRequest;
using testing::ReadLoopbackRequest;
using testing::SendAll;

std::string Ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

class DownstreamExchangeTest : public ::testing::Test {
 protected:
  // One call on the test's pool, run to its end.
  net::ClientResult Call(int port, bool idempotent) {
    net::ClientRequest r;
    r.address = {"127.0.0.1", port};
    r.method = "POST";
    r.target = "/tool";
    r.body = "{}";
    r.idempotent = idempotent;
    r.timeout = std::chrono::milliseconds(3000);
    auto done = asio::co_spawn(io_, net::AsyncHttpCall(std::move(r), &pool_), asio::use_future);
    io_.restart();
    io_.run();
    return done.get();
  }

  std::atomic<int> requests_{0};  // every request the server read, on any connection
  asio::io_context io_;
  net::ConnectionPool pool_;
};

// A 103 Early Hints (and a 100 Continue) before each answer: every call gets its own answer, on one
// kept-alive connection. Taken as the answer, the interim one would leave the real answer to be
// read as the next call's — another call's result, possibly another tenant's.
TEST_F(DownstreamExchangeTest, InterimAnswersAreSkippedAndEachCallGetsItsOwnAnswer) {
  LoopbackListener server(16, [&](int fd) {
    std::string pending;
    LoopbackRequest req;
    while (ReadLoopbackRequest(fd, pending, req, std::chrono::seconds(5), server.stopping())) {
      const int n = ++requests_;
      SendAll(fd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      SendAll(fd, Ok("{\"n\":" + std::to_string(n) + "}"));
    }
  });
  for (int n = 1; n <= 3; ++n) {
    const net::ClientResult r = Call(server.port(), false);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "{\"n\":" + std::to_string(n) + "}") << "call " << n << " got another call's answer";
  }
  EXPECT_EQ(server.accepted(), 1) << "one kept-alive connection served the three";
}

// The downstream takes the second request on a kept-alive connection and closes it without a word
// (it may have acted on it). A call that is not safe to repeat ends there (the connection lost); one
// that is, is sent again on a new connection.
TEST_F(DownstreamExchangeTest, AKeptAliveConnectionClosedAfterTheRequestResendsOnlyWhatIsSafeToRepeat) {
  LoopbackListener server(16, [&](int fd) {
    std::string pending;
    LoopbackRequest req;
    for (int on_this_connection = 1; ReadLoopbackRequest(fd, pending, req, std::chrono::seconds(5), server.stopping());
         ++on_this_connection) {
      ++requests_;
      if (on_this_connection == 2) return;  // read, then closed unanswered
      SendAll(fd, Ok("{}"));
    }
  });
  ASSERT_TRUE(Call(server.port(), false).ok);
  const net::ClientResult lost = Call(server.port(), false);
  EXPECT_FALSE(lost.ok);
  EXPECT_TRUE(lost.sent) << "the request went out: its outcome is unknown";
  EXPECT_FALSE(lost.timed_out);
  EXPECT_EQ(requests_.load(), 2) << "a call not safe to repeat was sent twice";

  ASSERT_TRUE(Call(server.port(), true).ok);  // a new connection (the last one was closed)
  const net::ClientResult repeated = Call(server.port(), true);
  EXPECT_TRUE(repeated.ok) << repeated.error;
  EXPECT_EQ(requests_.load(), 5) << "the safe call: once on the closed connection, once more on a new one";
}

// A downstream that closes a kept-alive connection soon after answering (an idle timeout, or a
// server that drops what it announced as kept alive): the next call is written to a new connection,
// not to the closed one, so even a call that is not safe to repeat succeeds.
TEST_F(DownstreamExchangeTest, AConnectionClosedWhileIdleIsNotWrittenTo) {
  LoopbackListener server(16, [&](int fd) {
    std::string pending;
    LoopbackRequest req;
    if (!ReadLoopbackRequest(fd, pending, req, std::chrono::seconds(5), server.stopping())) return;
    ++requests_;
    SendAll(fd, Ok("{}"));  // kept alive as far as the client knows; closed when this returns
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  });
  ASSERT_TRUE(Call(server.port(), false).ok);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the downstream has closed it
  const net::ClientResult later = Call(server.port(), false);
  EXPECT_TRUE(later.ok) << later.error;
  EXPECT_EQ(requests_.load(), 2);
  EXPECT_EQ(server.accepted(), 2);
}

TEST(RetryAfterTest, SecondsOfAnyLengthAndHttpDatesInEachForm) {
  const int64_t now = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT
  EXPECT_EQ(RetryAfterSeconds("120", now), 120);
  EXPECT_EQ(RetryAfterSeconds(" 7 ", now), 7);
  EXPECT_EQ(RetryAfterSeconds("99999999", now), 99999999);
  EXPECT_GT(RetryAfterSeconds("999999999999999999999999999999", now).value_or(0), 86400) << "saturates, never wraps";
  EXPECT_EQ(RetryAfterSeconds("Sun, 06 Nov 1994 08:51:37 GMT", now), 120);  // IMF-fixdate
  EXPECT_EQ(RetryAfterSeconds("Sunday, 06-Nov-94 08:50:37 GMT", now), 60);  // RFC 850
  EXPECT_EQ(RetryAfterSeconds("Sun Nov  6 08:49:47 1994", now), 10);        // asctime
  EXPECT_EQ(RetryAfterSeconds("Sun, 06 Nov 1994 08:00:00 GMT", now), 0) << "a date passed is no wait";
  for (const char* bad : {"", "soon", "-5", "1.5", "Sun, 06 Nov 1994 08:51:37 PST", "0x10"}) {
    EXPECT_EQ(RetryAfterSeconds(bad, now), std::nullopt) << bad;
  }
}

// S5 counts 5xx, timeouts, connection errors and slow calls against a connector. A redirect (which
// toolgate does not follow) fails the call without opening a healthy server's breaker; its effect is
// unknown (after a 303 the server may have acted).
TEST(RetryAfterTest, ARedirectFailsTheCallButNotTheBreaker) {
  for (int status : {301, 302, 303, 307, 308, 101}) {
    DownstreamResult r;
    r.kind = DownstreamResult::Kind::kResponse;
    r.status = status;
    const Classification c = ClassifyDownstream(r, false, breaker::Config{}, 1000);
    EXPECT_EQ(c.outcome, Outcome::kFailed) << status;
    EXPECT_EQ(c.reason, OutcomeReason{FailureReason::kDownstreamError}) << status;
    EXPECT_EQ(c.breaker, BreakerEffect::kSuccess) << status;
    EXPECT_EQ(c.intent, IntentEffect::kUnknown) << status;
  }
  DownstreamResult date;
  date.kind = DownstreamResult::Kind::kResponse;
  date.status = 503;
  date.retry_after_s = RetryAfterSeconds("Sun, 06 Nov 1994 08:51:37 GMT", 784111777);
  const Classification throttled = ClassifyDownstream(date, false, breaker::Config{}, 1000);
  EXPECT_EQ(throttled.outcome, Outcome::kDeferred) << "a 503 with an HTTP-date Retry-After is a throttle";
  EXPECT_EQ(throttled.retry_after_s, 120);
}

}  // namespace
}  // namespace toolgate
