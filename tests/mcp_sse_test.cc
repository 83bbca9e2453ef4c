// An MCP server's SSE answer to a call, read as it arrives (design §14 "MCP connectors"): the
// WHATWG event-stream parser on its own, then the `kind = "mcp"` connector against a server that
// sends notifications and requests of its own on a call's stream (FakeSseMcpServer), observed at
// the server: what toolgate answered, under which session, and when it let the connection go.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fake_sse_mcp_server.h"
#include "gtest/gtest.h"
#include "in_process_gateway.h"
#include "wait_until.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/connectors/mcp_connector.h"
#include "toolgate/net/event_stream.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

namespace asio = boost::asio;
using json = nlohmann::json;
using net::EventStreamParser;
using testing::FakeSseMcpServer;
using Kind = DownstreamResult::Kind;
using std::chrono::milliseconds;

std::vector<EventStreamParser::Event> Drain(EventStreamParser& p) {
  std::vector<EventStreamParser::Event> out;
  while (auto e = p.Next()) out.push_back(std::move(*e));
  return out;
}

// ---- the parser ----

TEST(EventStreamParserTest, JoinsDataLinesAndSkipsCommentsAndUnknownFields) {
  EventStreamParser p;
  p.Feed(": a comment\nevent: message\ndata: {\"a\":\ndata:1}\nfoo: bar\nid: 7\n\n");
  const auto events = Drain(p);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, "message");
  EXPECT_EQ(events[0].data, "{\"a\":\n1}");  // one space after the colon removed, no more
  EXPECT_EQ(events[0].last_event_id, "7");
  EXPECT_EQ(json::parse(events[0].data)["a"], 1);
}

TEST(EventStreamParserTest, AnEventEndsOnlyAtABlankLine) {
  EventStreamParser p;
  p.Feed("data: one\n");
  EXPECT_FALSE(p.Next());
  p.Feed("\ndata: two\n\n");
  const auto events = Drain(p);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].data, "one");
  EXPECT_EQ(events[1].data, "two");
}

TEST(EventStreamParserTest, EveryLineEndAndAnySplitGiveTheSameEvents) {
  const std::string lf = "\xEF\xBB\xBFid: a\ndata: x\ndata:  y\n\nevent: e2\ndata:z\n\n";
  for (const std::string& eol : {std::string("\n"), std::string("\r\n"), std::string("\r")}) {
    std::string text;
    for (char c : lf) text += c == '\n' ? eol : std::string(1, c);
    // Fed whole, and byte by byte (a CRLF and the BOM split across pieces).
    for (const size_t step : {text.size(), size_t{1}, size_t{2}}) {
      EventStreamParser p;
      for (size_t i = 0; i < text.size(); i += step) p.Feed(std::string_view(text).substr(i, step));
      const auto events = Drain(p);
      ASSERT_EQ(events.size(), 2u) << "eol " << json(eol).dump() << " step " << step;
      EXPECT_EQ(events[0].data, "x\n y");
      EXPECT_EQ(events[0].type, "");
      EXPECT_EQ(events[0].last_event_id, "a");
      EXPECT_EQ(events[1].data, "z");
      EXPECT_EQ(events[1].type, "e2");
      EXPECT_EQ(events[1].last_event_id, "a");  // the last id carries on
    }
  }
}

TEST(EventStreamParserTest, IdAndRetryWithoutDataDispatchNothingButCount) {
  EventStreamParser p;
  p.Feed("id: prime-1\nretry: 2500\n\nretry: soon\n\n");
  EXPECT_FALSE(p.Next());
  EXPECT_EQ(p.last_event_id(), "prime-1");
  EXPECT_EQ(p.retry_ms(), 2500);  // "soon" is not digits: ignored
  // An empty data field is still an event (a 2025-11-25 priming event), with empty data.
  p.Feed("id: prime-2\ndata:\n\n");
  const auto events = Drain(p);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "");
  EXPECT_EQ(events[0].last_event_id, "prime-2");
}

TEST(EventStreamParserTest, FinishDispatchesAnEventCutShortOfItsBlankLine) {
  EventStreamParser p;
  p.Feed("data: {\"id\":1}\ndata: x");
  EXPECT_FALSE(p.Next());
  p.Finish();
  const auto events = Drain(p);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "{\"id\":1}\nx");
}

TEST(EventStreamParserTest, ALongIdRepeatedByTinyEventsHitsTheLimitInsteadOfGrowing) {
  // 1 KB of id then 1,000 six-byte events: ~7 KB of stream, ~1 MB if each event's copy of the id
  // went uncounted.
  std::string stream = "id: " + std::string(1000, 'i') + "\n";
  for (int i = 0; i < 1000; ++i) stream += "data\n\n";
  EventStreamParser p(64 * 1024);
  p.Feed(stream);
  EXPECT_TRUE(p.failed());
  EXPECT_EQ(p.held_bytes(), 0u);
  EXPECT_FALSE(p.Next());
  p.Feed("data: more\n\n");
  p.Finish();
  EXPECT_FALSE(p.Next()) << "nothing comes out of a failed parser";

  // Taken as they come (ten at most at a time), the same stream stays within the limit.
  EventStreamParser q(64 * 1024);
  size_t taken = 0;
  for (size_t at = 0; at < stream.size(); at += 60) {
    q.Feed(std::string_view(stream).substr(at, 60));
    EXPECT_LE(q.held_bytes(), q.max_bytes());
    taken += Drain(q).size();
  }
  q.Finish();
  taken += Drain(q).size();
  EXPECT_FALSE(q.failed());
  EXPECT_EQ(taken, 1000u);
}

TEST(EventStreamParserTest, ALineOrEventOverTheLimitFailsHoweverTheStreamIsSplit) {
  const std::string long_line = "data: " + std::string(200, 'x') + "\n\n";
  const std::string long_event = std::string("data: ") + std::string(60, 'x') + "\ndata: " + std::string(60, 'y') +
                                 "\ndata: " + std::string(60, 'z') + "\n\n";
  for (const std::string& stream : {long_line, long_event}) {
    for (size_t piece : {size_t{1}, size_t{7}, stream.size()}) {
      EventStreamParser p(128);
      for (size_t at = 0; at < stream.size(); at += piece) p.Feed(std::string_view(stream).substr(at, piece));
      p.Finish();
      EXPECT_TRUE(p.failed()) << "pieces of " << piece;
      EXPECT_FALSE(p.Next());
    }
  }
  EventStreamParser fits(128);
  fits.Feed("data: " + std::string(100, 'x') + "\n\n");
  EXPECT_FALSE(fits.failed());
  EXPECT_EQ(Drain(fits).size(), 1u);
}

// ---- the connector against a streaming server ----

class McpSseTest : public ::testing::Test {
 protected:
  // A connector of `server` with the call's `timeout_ms` and response limit.
  void MakeConnector(int timeout_ms, int64_t max_response_bytes = 4 << 20) {
    config_.id = "sse";
    config_.kind = ConnectorKind::kMcp;
    config_.url = server_.url();
    std::string why;
    ASSERT_TRUE(ParseHttpUrl(config_.url, config_.address, config_.path_prefix, config_.tls, why)) << why;
    config_.tool_prefix = "sse.";
    config_.timeout_ms = timeout_ms;
    config_.max_response_bytes = max_response_bytes;
    McpConnectorDeps deps{registry_, store_, nullptr, io_.get_executor(), nullptr};
    auto made = McpConnector::Create(config_, pool_, clock_, std::move(deps));
    ASSERT_TRUE(made.ok()) << made.status();
    connector_ = *std::move(made);
  }

  struct Timed {
    DownstreamResult result;
    milliseconds took;
  };
  Timed Call(const std::string& tool = "sse.work", std::shared_ptr<const NotificationRelay> notifications = nullptr) {
    DownstreamRequest request;
    request.notifications = std::move(notifications);
    request.tool_name = tool;
    request.body = R"({"n":1})";
    request.idempotency_key = "key-" + std::to_string(++call_number_);
    request.execution_id = "exec-" + std::to_string(call_number_);
    const auto start = std::chrono::steady_clock::now();
    auto done = asio::co_spawn(io_, connector_->Call(request), asio::use_future);
    io_.restart();
    io_.run();
    Timed t{done.get(), std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start)};
    return t;
  }

  void TearDown() override {
    if (connector_) connector_->Stop();
  }

  FakeSseMcpServer server_;
  SystemClock clock_;
  asio::io_context io_;
  net::ConnectionPool pool_;  // after io_: its idle connections go first
  store::MemoryItemStore store_{clock_};
  McpToolRegistry registry_;
  ConnectorConfig config_;
  std::unique_ptr<McpConnector> connector_;
  int call_number_ = 0;
};

// Long enough that reaching it would fail every "well before" check below.
constexpr int kLongTimeoutMs = 60'000;
constexpr milliseconds kWellBefore{kLongTimeoutMs / 2};

TEST_F(McpSseTest, AStreamedResultAfterAPrimingEventIsTheCallsResult) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kResult);
  Timed t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  // The stream ended cleanly: its connection may serve the next call.
  const uint64_t reused = pool_.stats().reused;
  t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 2");
  EXPECT_GT(pool_.stats().reused, reused);
}

// A caller listening for progress (design §14): the server hears the execution id as the token; the
// caller gets only the progress naming it, before the result, with its own token back — not
// another call's, not a 20 KB one, not a log message, not what came after the result.
TEST_F(McpSseTest, OnlyTheCallsOwnProgressOfAReasonableSizeIsRelayedWithTheCallersToken) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kProgressOfEverySize);
  std::vector<json> relayed;
  auto relay = std::make_shared<NotificationRelay>();
  relay->token_json = "42";
  relay->relay = [&relayed](std::string notification, bool) {
    const json n = json::parse(notification);
    EXPECT_EQ(n["method"], "notifications/progress") << n;
    EXPECT_EQ(n["jsonrpc"], "2.0") << n;
    relayed.push_back(n["params"]);
  };
  const Timed t = Call("sse.work", relay);
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  ASSERT_EQ(server_.progress_tokens().size(), 1u);
  EXPECT_EQ(server_.progress_tokens()[0], "exec-1") << "the server hears the execution id";
  ASSERT_EQ(relayed.size(), 2u) << json(relayed);
  EXPECT_EQ(relayed[0], json({{"progressToken", 42}, {"progress", 1}, {"total", 5}, {"message", "small"}}));
  EXPECT_EQ(relayed[1]["progress"], 4);
  EXPECT_EQ(relayed[1]["progressToken"], 42);

  // Nobody listening: the server hears no token, and the same stream is read as before.
  const Timed plain = Call();
  ASSERT_EQ(plain.result.kind, Kind::kResponse) << plain.result.error;
  ASSERT_EQ(server_.progress_tokens().size(), 2u);
  EXPECT_TRUE(server_.progress_tokens()[1].is_null());
  EXPECT_EQ(relayed.size(), 2u);
}

// A token is echoed as the caller wrote it, as ids are: a number beyond 64 bits, or one written with
// an exponent, parsed and written again would come back as a double's digits.
TEST_F(McpSseTest, TheCallersProgressTokenComesBackAsItsOwnText) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kProgressOfEverySize);
  for (const std::string token : {"12345678901234567890123", "1e3", "-0.50", R"("t\u00e9")"}) {
    std::vector<std::string> relayed;
    auto relay = std::make_shared<NotificationRelay>();
    relay->token_json = token;
    relay->relay = [&relayed](std::string notification, bool) { relayed.push_back(std::move(notification)); };
    const Timed t = Call("sse.work", relay);
    ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
    ASSERT_EQ(relayed.size(), 2u) << token;
    for (const std::string& n : relayed) {
      EXPECT_NE(n.find(R"("params":{"progressToken":)" + token + ","), std::string::npos) << n;
      const json parsed = json::parse(n, nullptr, false);
      ASSERT_FALSE(parsed.is_discarded()) << n;
      EXPECT_EQ(parsed["method"], "notifications/progress") << n;
      EXPECT_TRUE(parsed["params"].contains("progress")) << n;
      EXPECT_EQ(parsed["params"].count("progressToken"), 1u) << "toolgate's own token replaced, not kept beside";
    }
  }
}

// A caller that set a logging level (design §14, logging/setLevel) hears the log messages on its
// call's stream at that level or above, and only those: the same stream's info message reaches a
// caller at "debug" or "info", not one at "warning", and a caller listening for log messages alone
// sends the server no progress token and hears no progress.
TEST_F(McpSseTest, LogMessagesOnTheCallsStreamAreRelayedFromTheCallersLevelUp) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kProgressOfEverySize);  // one "info" message among progress
  auto heard = [&](int min_severity, const std::string& token_json) {
    std::vector<json> relayed;
    auto relay = std::make_shared<NotificationRelay>();
    relay->token_json = token_json;
    relay->min_log_severity = min_severity;
    relay->relay = [&relayed](std::string notification, bool progress) {
      relayed.push_back(json::parse(notification));
      EXPECT_EQ(progress, relayed.back()["method"] == "notifications/progress") << notification;
    };
    const Timed t = Call("sse.work", relay);
    EXPECT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
    return relayed;
  };
  const std::vector<json> at_debug = heard(LogSeverity("debug"), "");
  ASSERT_EQ(at_debug.size(), 1u) << json(at_debug);
  EXPECT_EQ(at_debug[0], json({{"jsonrpc", "2.0"},
                               {"method", "notifications/message"},
                               {"params", {{"level", "info"}, {"data", "working"}}}}));
  EXPECT_TRUE(server_.progress_tokens().back().is_null()) << "no progress asked for: no token sent";
  EXPECT_EQ(heard(LogSeverity("info"), "").size(), 1u);
  EXPECT_EQ(heard(LogSeverity("warning"), "").size(), 0u);
  // With a token too: the call's own progress (2 of reasonable size) and the message, in order.
  const std::vector<json> both = heard(LogSeverity("info"), "5");
  ASSERT_EQ(both.size(), 3u) << json(both);
  EXPECT_EQ(both[0]["method"], "notifications/progress");
  EXPECT_EQ(both[1]["method"], "notifications/message");
  EXPECT_EQ(both[2]["method"], "notifications/progress");
  EXPECT_EQ(LogSeverity("emergency"), 7);
  EXPECT_EQ(LogSeverity("Info"), -1) << "the names are the specification's, lower case";
}

// A long call that reports often must not fail for it: the progress relayed does not count toward
// max_response_bytes; without a listener the same stream does, and so do a listener's other events.
TEST_F(McpSseTest, RelayedProgressDoesNotCountTowardTheResponseLimitEverythingElseDoes) {
  constexpr int64_t kLimit = 64 * 1024;
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs, kLimit));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kManyProgressThenResult);
  server_.set_progress_events(200);  // ~200 KB of progress
  int relayed = 0;
  auto relay = std::make_shared<NotificationRelay>();
  relay->token_json = R"("mine")";
  relay->relay = [&relayed](std::string, bool) { ++relayed; };
  const Timed listened = Call("sse.work", relay);
  ASSERT_EQ(listened.result.kind, Kind::kResponse) << listened.result.error;
  EXPECT_EQ(relayed, 200);

  const Timed unheard = Call();
  EXPECT_EQ(unheard.result.kind, Kind::kResponseInvalid) << "no listener: the stream counts whole";
  EXPECT_NE(unheard.result.error.find("body limit"), std::string::npos) << unheard.result.error;

  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndlessNotifications);  // progress naming another token
  const Timed endless = Call("sse.work", relay);
  EXPECT_EQ(endless.result.kind, Kind::kResponseInvalid) << endless.result.error;
  EXPECT_NE(endless.result.error.find("body limit"), std::string::npos) << endless.result.error;
  EXPECT_LT(endless.took, kWellBefore);
  EXPECT_EQ(relayed, 200) << "another token's progress is not relayed";
}

// The credit is what was relayed, no more: a batch of progress is credited its messages' own bytes
// (not the batch's once per message), and progress the connector would not relay (over 16 KB)
// counts like anything else.
TEST_F(McpSseTest, ABatchOfProgressIsCreditedItsOwnBytesAndProgressNotRelayedCounts) {
  constexpr int64_t kLimit = 64 * 1024;
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs, kLimit));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kBatchedProgressThenResult);
  int relayed = 0;
  auto relay = std::make_shared<NotificationRelay>();
  relay->token_json = "7";
  relay->relay = [&relayed](std::string, bool) { ++relayed; };
  const Timed batch = Call("sse.work", relay);  // ~50 KB of progress in one event, then the result
  ASSERT_EQ(batch.result.kind, Kind::kResponse) << batch.result.error;
  EXPECT_EQ(relayed, 50);

  server_.set_oversize_progress(5);  // then ~100 KB of progress too large to relay
  const Timed oversize = Call("sse.work", relay);
  EXPECT_EQ(oversize.result.kind, Kind::kResponseInvalid) << oversize.result.error;
  EXPECT_NE(oversize.result.error.find("body limit"), std::string::npos) << oversize.result.error;
  EXPECT_EQ(relayed, 100) << "the batch relayed again, the oversized ones not";
}

TEST_F(McpSseTest, TheServersRequestsAreAnsweredOnTheCallsSessionAndTheCallSucceeds) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kAskFirst);
  const Timed t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  EXPECT_LT(t.took, kWellBefore);

  // toolgate declared no client capability the server could ask it for.
  const std::optional<json> init = server_.initialize_params();
  ASSERT_TRUE(init.has_value());
  const json capabilities = init->value("capabilities", json::object());
  EXPECT_FALSE(capabilities.contains("sampling")) << capabilities;
  EXPECT_FALSE(capabilities.contains("elicitation")) << capabilities;
  EXPECT_FALSE(capabilities.contains("roots")) << capabilities;

  // What the server received: the ping answered with an empty result, the sampling request with
  // -32601, both under the session it gave at initialize and with the protocol version.
  const auto answers = server_.answers();
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[0].message["id"], 901);
  EXPECT_EQ(answers[0].message["result"], json::object());
  EXPECT_EQ(answers[1].message["jsonrpc"], "2.0");
  EXPECT_EQ(answers[1].message["id"], "sampling-1");  // the id as the server sent it, a string
  EXPECT_EQ(answers[1].message["error"]["code"], -32601);
  EXPECT_NE(answers[1].message["error"]["message"].get<std::string>().find("sampling/createMessage"),
            std::string::npos);
  EXPECT_FALSE(answers[1].message.contains("result"));
  for (const auto& a : answers) {
    ASSERT_TRUE(a.headers.count("mcp-session-id")) << a.message;
    EXPECT_EQ(a.headers.at("mcp-session-id"), FakeSseMcpServer::kSessionId);
    ASSERT_TRUE(a.headers.count("mcp-protocol-version")) << a.message;
    EXPECT_EQ(a.headers.at("mcp-protocol-version"), mcp::kClientProtocolVersion);
  }
}

TEST_F(McpSseTest, AResultOnAStreamTheServerNeverEndsEndsTheCallAndTheConnectionIsClosed) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kResultHeldOpen);
  const Timed t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  EXPECT_LT(t.took, kWellBefore);
  // The half-read stream was not kept for another request: toolgate closed it (bounded wait).
  for (int i = 0; i < 200 && !server_.held_stream_closed(); ++i) std::this_thread::sleep_for(milliseconds(25));
  EXPECT_TRUE(server_.held_stream_closed());

  // The next calls work, on connections that are not the abandoned one.
  server_.set_call_mode(FakeSseMcpServer::CallMode::kResult);
  for (int n = 2; n <= 3; ++n) {
    const Timed next = Call();
    ASSERT_EQ(next.result.kind, Kind::kResponse) << next.result.error;
    EXPECT_EQ(json::parse(next.result.body)["content"][0]["text"], "done " + std::to_string(n));
  }
}

TEST_F(McpSseTest, AServerThatNeverStopsAskingFailsTheCallAfterTheCap) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndlessRequests);
  const Timed t = Call();
  // A server misbehaving: FAILED downstream_error, which the breaker counts (not a timeout).
  EXPECT_EQ(t.result.kind, Kind::kResponseInvalid);
  EXPECT_NE(t.result.error.find("more than 16 requests"), std::string::npos) << t.result.error;
  EXPECT_LT(t.took, kWellBefore);
  // Exactly 16 were answered (-32601 each); the 17th ended the call unanswered.
  const auto answers = server_.answers();
  EXPECT_EQ(answers.size(), 16u);
  for (const auto& a : answers) EXPECT_EQ(a.message["error"]["code"], -32601) << a.message;
  EXPECT_EQ(server_.requests_sent(), 17);

  // The connector still works afterwards.
  server_.set_call_mode(FakeSseMcpServer::CallMode::kResult);
  const Timed next = Call();
  EXPECT_EQ(next.result.kind, Kind::kResponse) << next.result.error;
}

TEST_F(McpSseTest, AStreamLargerThanTheResponseLimitIsCutThere) {
  constexpr int64_t kLimit = 64 * 1024;
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs, kLimit));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndlessNotifications);
  const Timed t = Call();
  EXPECT_EQ(t.result.kind, Kind::kResponseInvalid) << t.result.error;
  EXPECT_NE(t.result.error.find("body limit"), std::string::npos) << t.result.error;
  EXPECT_LT(t.took, kWellBefore);
  EXPECT_TRUE(server_.answers().empty());
}

// ---- resuming a stream that ended before its response (Last-Event-ID) ----

TEST_F(McpSseTest, AStreamEndedBeforeTheResultIsResumedWithTheLastEventId) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndsBeforeResult);
  const Timed t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  EXPECT_LT(t.took, kWellBefore);
  const auto resumes = server_.resumes();
  ASSERT_EQ(resumes.size(), 1u);
  EXPECT_EQ(resumes[0].last_event_id, "c1-1");
  EXPECT_EQ(resumes[0].session_id, FakeSseMcpServer::kSessionId);
  EXPECT_EQ(server_.calls(), 1) << "resumed, not sent again";
}

TEST_F(McpSseTest, AConnectionBrokenMidEventResumesAfterTheLastCompleteEvent) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kBreaksBeforeResult);
  const Timed t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  const auto resumes = server_.resumes();
  ASSERT_EQ(resumes.size(), 1u);
  // The id line of the event cut short had arrived; that event had not.
  EXPECT_EQ(resumes[0].last_event_id, "c1-1");
  EXPECT_EQ(server_.calls(), 1);
}

TEST_F(McpSseTest, AStreamWithoutEventIdsIsNotResumed) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndsWithoutIds);
  const Timed t = Call();
  EXPECT_EQ(t.result.kind, Kind::kResponseInvalid);
  EXPECT_NE(t.result.error.find("no event ids to resume from"), std::string::npos) << t.result.error;
  EXPECT_TRUE(server_.resumes().empty());
  EXPECT_LT(t.took, kWellBefore);
}

TEST_F(McpSseTest, NoResumeWhenTheServersRetryWaitDoesNotFitTheDeadline) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndsBeforeResult);
  server_.set_retry_ms(kLongTimeoutMs);  // more than is left once the stream ended
  const Timed t = Call();
  EXPECT_EQ(t.result.kind, Kind::kResponseInvalid);
  EXPECT_NE(t.result.error.find("retry wait"), std::string::npos) << t.result.error;
  EXPECT_TRUE(server_.resumes().empty());
  EXPECT_LT(t.took, kWellBefore) << "the call ends at once rather than wait past its deadline";
}

TEST_F(McpSseTest, AResumeThatEndsWithoutTheResultIsResumedAgainAndTheResultCounts) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndsBeforeResult);
  server_.set_resumes_without_result(1);
  const Timed t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  const auto resumes = server_.resumes();
  ASSERT_EQ(resumes.size(), 2u);
  EXPECT_EQ(resumes[0].last_event_id, "c1-1");
  EXPECT_EQ(resumes[1].last_event_id, "c1-2") << "after the event the first resumed stream added";
  EXPECT_EQ(server_.calls(), 1);
}

TEST_F(McpSseTest, TheThirdResumeMayStillBringTheResult) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_call_mode(FakeSseMcpServer::CallMode::kBreaksBeforeResult);
  server_.set_resumes_without_result(2);  // the first call's stream and two resumed ones break
  const Timed t = Call();
  ASSERT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
  EXPECT_EQ(json::parse(t.result.body)["content"][0]["text"], "done 1");
  const auto resumes = server_.resumes();
  ASSERT_EQ(resumes.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(resumes[k].last_event_id, "c1-" + std::to_string(k + 1));
    EXPECT_EQ(resumes[k].session_id, FakeSseMcpServer::kSessionId);
  }
  EXPECT_EQ(server_.calls(), 1);
}

// A server whose every stream breaks (or ends) before the response: three GETs, then the call ends
// as the last stream did, the error saying why it was not resumed again.
TEST_F(McpSseTest, AStreamThatNeverBringsTheResultIsResumedAtMostThreeTimes) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_resumes_without_result(1000);
  struct Case {
    FakeSseMcpServer::CallMode mode;
    Kind kind;
  };
  int call = 0;
  for (const Case& c : {Case{FakeSseMcpServer::CallMode::kBreaksBeforeResult, Kind::kConnectionLost},
                        Case{FakeSseMcpServer::CallMode::kEndsBeforeResult, Kind::kResponseInvalid}}) {
    ++call;
    server_.set_call_mode(c.mode);
    const size_t before = server_.resumes().size();
    const Timed t = Call();
    EXPECT_EQ(t.result.kind, c.kind) << t.result.error;
    EXPECT_NE(t.result.error.find("resumed 3 time(s); at most 3 resumes"), std::string::npos) << t.result.error;
    EXPECT_LT(t.took, kWellBefore);
    const auto resumes = server_.resumes();
    ASSERT_EQ(resumes.size(), before + 3) << "call " << call;
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(resumes[before + k].last_event_id, "c" + std::to_string(call) + "-" + std::to_string(k + 1));
    }
    EXPECT_EQ(server_.calls(), call) << "resumed, never sent again";
  }
  // The connector still works afterwards.
  server_.set_call_mode(FakeSseMcpServer::CallMode::kResult);
  const Timed next = Call();
  ASSERT_EQ(next.result.kind, Kind::kResponse) << next.result.error;
  EXPECT_EQ(json::parse(next.result.body)["content"][0]["text"], "done 3");
}

// A server need not offer GET (MCP Streamable HTTP): its 405 ends the call at once, not retried.
TEST_F(McpSseTest, AServerThatAnswersTheResumingGetWith405IsNotAskedAgain) {
  ASSERT_NO_FATAL_FAILURE(MakeConnector(kLongTimeoutMs));
  server_.set_refuse_resumes(true);
  struct Case {
    FakeSseMcpServer::CallMode mode;
    Kind kind;
  };
  int call = 0;
  for (const Case& c : {Case{FakeSseMcpServer::CallMode::kBreaksBeforeResult, Kind::kConnectionLost},
                        Case{FakeSseMcpServer::CallMode::kEndsBeforeResult, Kind::kResponseInvalid}}) {
    ++call;
    server_.set_call_mode(c.mode);
    const size_t before = server_.resumes().size();
    const Timed t = Call();
    EXPECT_EQ(t.result.kind, c.kind) << t.result.error;
    EXPECT_NE(t.result.error.find("the server answered the resuming GET with HTTP 405"), std::string::npos)
        << t.result.error;
    EXPECT_EQ(t.result.error.find("resumed"), std::string::npos) << "no resume was made: " << t.result.error;
    EXPECT_LT(t.took, kWellBefore);
    const auto resumes = server_.resumes();
    ASSERT_EQ(resumes.size(), before + 1) << "call " << call;
    EXPECT_EQ(resumes[before].last_event_id, "c" + std::to_string(call) + "-1");
    EXPECT_EQ(server_.calls(), call);
  }
}

// ---- the same through the gateway: the outcome, the slot and the ledger ----

class McpSseGatewayTest : public ::testing::Test {
 protected:
  // `server_keys` join [server]; `connector_keys` the connector's table.
  void Start(const std::string& server_keys = "", const std::string& connector_keys = "") {
    const std::string config = testing::WithKeys(testing::BaseConfig(dir_.file("store.db")), "[server]", server_keys) +
                               "[connectors.sse]\nkind = \"mcp\"\nurl = \"" + server_.url() +
                               "\"\ntimeout_ms = 20000\nmax_in_flight = 4\n" + connector_keys +
                               "[connectors.sse.breaker]\nfailure_threshold = 10\ncooldown_s = 60\n";
    gw_ = std::make_unique<testing::InProcessGateway>(config, clock_);
    ASSERT_TRUE(gw_->Start());
    // Bounded wait for the server's tool list.
    for (int i = 0; i < 400 && Connector()["mcp"].value("tool_count", 0) < 1; ++i) {
      std::this_thread::sleep_for(milliseconds(25));
    }
    ASSERT_EQ(Connector()["mcp"].value("tool_count", 0), 1) << Connector();
  }
  json Connector() {
    const json all = testing::Body(gw_->Admin("GET", "/admin/connectors"));
    for (const auto& c : all.value("connectors", json::array())) {
      if (c["id"] == "sse") return c;
    }
    return json::object();
  }
  // Invokes sse.work and checks the answer, the slot and the ledger record of the execution.
  void ExpectFailed(const std::string& reason) {
    const api::ClientResult r = gw_->Invoke("sse.work", {{"input", json::object()}}, alice_);
    EXPECT_EQ(r.status, 502) << r.body;
    const json body = testing::Body(r);
    EXPECT_EQ(body["outcome"], "FAILED") << body;
    EXPECT_EQ(body["reason"], reason) << body;
    EXPECT_EQ(Connector()["in_flight"], 0) << "the slot is released";
    ASSERT_TRUE(body["execution_id"].is_string()) << body;
    const json record =
        testing::Body(gw_->Public("GET", "/v1/executions/" + body["execution_id"].get<std::string>(), "", alice_));
    EXPECT_EQ(record["outcome"], "FAILED") << record;
    EXPECT_EQ(record["reason"], reason) << record;
    ASSERT_TRUE(record["events"].is_array() && !record["events"].empty()) << record;
    std::vector<std::string> types;
    for (const auto& e : record["events"]) types.push_back(e["type"]);
    EXPECT_NE(std::find(types.begin(), types.end(), "TOOL_INVOKED"), types.end()) << record;
    EXPECT_EQ(types.back(), "TOOL_FAILED") << record;
  }

  FakeSseMcpServer server_;
  SystemClock clock_;
  testing::TempDir dir_;
  std::unique_ptr<testing::InProcessGateway> gw_;
  const std::string alice_ = testing::Token("tenant-a");
};

TEST_F(McpSseGatewayTest, ACallWhoseStreamNeverBringsTheResultFailsAfterThreeResumesAndLeavesNothingBehind) {
  server_.set_call_mode(FakeSseMcpServer::CallMode::kBreaksBeforeResult);
  server_.set_resumes_without_result(1000);
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_NO_FATAL_FAILURE(ExpectFailed("connection_lost"));
  EXPECT_EQ(server_.resumes().size(), 3u);
  EXPECT_EQ(server_.calls(), 1);

  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndsBeforeResult);
  ASSERT_NO_FATAL_FAILURE(ExpectFailed("downstream_error"));
  EXPECT_EQ(server_.resumes().size(), 6u);
  EXPECT_EQ(server_.calls(), 2);
}

TEST_F(McpSseGatewayTest, A405ToTheResumingGetFailsTheCallAtOnceAndLeavesNothingBehind) {
  server_.set_call_mode(FakeSseMcpServer::CallMode::kBreaksBeforeResult);
  server_.set_refuse_resumes(true);
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_NO_FATAL_FAILURE(ExpectFailed("connection_lost"));
  EXPECT_EQ(server_.resumes().size(), 1u);

  server_.set_call_mode(FakeSseMcpServer::CallMode::kEndsBeforeResult);
  ASSERT_NO_FATAL_FAILURE(ExpectFailed("downstream_error"));
  EXPECT_EQ(server_.resumes().size(), 2u);
  EXPECT_EQ(server_.calls(), 2);

  // Resuming works again once the server offers it: the call succeeds.
  server_.set_refuse_resumes(false);
  server_.set_resumes_without_result(0);
  const api::ClientResult ok = gw_->Invoke("sse.work", {{"input", json::object()}}, alice_);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(server_.resumes().size(), 3u);
  EXPECT_EQ(Connector()["in_flight"], 0);
}

std::string StreamedCall(const std::string& token, const std::string& key) {
  return testing::McpPostBytes(
      "1.1", token,
      testing::McpToolsCallBody("sse.work", json::object(),
                                {{"progressToken", "p"}, {"io.toolgate/idempotency_key", key}}));
}

// A streamed answer takes its share of the response budget as a whole answer does: with a client
// that does not read holding the budget, the next large streamed answer is not sent — its
// connection is reset after the progress — and the call, run and recorded once, answers its key.
TEST_F(McpSseGatewayTest, AStreamedAnswerTheBudgetCannotHoldResetsItsConnectionAndTheCallAnswersItsKeyLater) {
  server_.set_call_mode(FakeSseMcpServer::CallMode::kManyProgressThenResult);
  server_.set_progress_events(1);
  server_.set_result_bytes(800 * 1024);
  ASSERT_NO_FATAL_FAILURE(
      Start("max_response_buffer_bytes = 1572864\nwrite_timeout_ms = 30000\n", "max_response_bytes = 1048576\n"));
  const int holder = testing::ConnectLoopback(gw_->public_port(), 4096);
  ASSERT_GE(holder, 0);
  std::string request = StreamedCall(alice_, "holder-1");
  ASSERT_EQ(send(holder, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  // Bounded wait until the holder's call is done (its answer is then being written to it).
  for (int i = 0; i < 200 && (server_.calls() < 1 || Connector()["in_flight"] != 0); ++i) {
    std::this_thread::sleep_for(milliseconds(25));
  }
  ASSERT_EQ(server_.calls(), 1);
  // The answer's first result bytes reach the holder: its write has reserved the answer's bytes (the
  // reservation comes before the first byte), and the holder's 4 KB receive buffer leaves the rest
  // of its 800 KB unsent. Bounded at 10 s.
  std::string head;
  for (int i = 0; i < 400 && head.find("rrrr") == std::string::npos; ++i) {
    pollfd p{holder, POLLIN, 0};
    if (poll(&p, 1, 25) <= 0) continue;
    char chunk[4096];
    const ssize_t n = recv(holder, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    head.append(chunk, static_cast<size_t>(n));
  }
  ASSERT_NE(head.find("rrrr"), std::string::npos) << "the holder's answer never began: " << head.substr(0, 300);

  const int next = testing::ConnectLoopback(gw_->public_port(), 4096);
  ASSERT_GE(next, 0);
  request = StreamedCall(alice_, "next-1");
  ASSERT_EQ(send(next, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(next, buf, sizeof buf, 0);
    if (n <= 0) break;  // reset (or closed)
    got.append(buf, static_cast<size_t>(n));
  }
  close(next);
  EXPECT_NE(got.find("text/event-stream"), std::string::npos) << got.substr(0, 300);
  EXPECT_NE(got.find("notifications/progress"), std::string::npos) << got.substr(0, 300);
  EXPECT_EQ(got.find("rrrrrrrr"), std::string::npos) << "the answer was not sent";
  EXPECT_EQ(got.find("\r\n0\r\n\r\n"), std::string::npos) << "the stream did not end as if complete";
  EXPECT_EQ(server_.calls(), 2);
  // The holder goes away (a reset): its answer's budget comes back then, not at the write timeout
  // (30 s), though the kernel still counts the answer's bytes as unacknowledged.
  linger hard{1, 0};
  ASSERT_EQ(setsockopt(holder, SOL_SOCKET, SO_LINGER, &hard, sizeof hard), 0);
  close(holder);

  // The call ran once and was recorded: its key answers from the record, the server not asked again.
  const std::string keyed =
      testing::McpToolsCallBody("sse.work", json::object(), {{"io.toolgate/idempotency_key", "next-1"}}, 2);
  api::ClientResult again;
  const auto reset_at = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - reset_at < std::chrono::seconds(15)) {
    again = testing::McpPost(gw_->public_port(), alice_, keyed, std::chrono::seconds(20));
    if (again.status == 200) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  ASSERT_EQ(again.status, 200) << "the reset holder's budget was still held: " << again.body.substr(0, 300);
  const json result = testing::Body(again)["result"];
  EXPECT_EQ(result["content"][0]["text"].get<std::string>().size(), 800u * 1024);
  EXPECT_EQ(server_.calls(), 2) << "answered from the record";
  EXPECT_EQ(Connector()["in_flight"], 0);
}

// logging/setLevel (design §14) through the real binary, two instances on one store: the level a
// session sets on one instance is kept in the store, so its calls on either instance relay the
// server's log messages from that level up on the call's event stream; a session that set none,
// or another tenant's, gets plain JSON as before. Without a session, with a name that is not a
// level, or in the revision without sessions, setLevel is refused.
TEST_F(McpSseGatewayTest, ASessionsLoggingLevelHoldsOnEveryInstanceAndFiltersTheServersLogMessages) {
  server_.set_call_mode(FakeSseMcpServer::CallMode::kProgressOfEverySize);  // one "info" message per call
  const std::string config = testing::BaseConfig(dir_.file("fleet.db")) + "[connectors.sse]\nkind = \"mcp\"\nurl = \"" +
                             server_.url() + "\"\ntimeout_ms = 20000\nmax_in_flight = 8\n";
  testing::GatewayProcess a(config, dir_, "a");
  testing::GatewayProcess b(config, dir_, "b");
  ASSERT_TRUE(a.Start());
  ASSERT_TRUE(b.Start());
  const std::string bob = testing::Token("tenant-b");
  auto initialize = [](int port, const std::string& token) {
    const api::ClientResult r =
        testing::McpPost(port, token,
                         testing::McpRpcBody("initialize", {{"protocolVersion", "2025-06-18"},
                                                            {"capabilities", json::object()},
                                                            {"clientInfo", {{"name", "t"}, {"version", "1"}}}}));
    EXPECT_EQ(testing::Body(r)["result"]["capabilities"]["logging"], json::object()) << r.body;
    return testing::HeaderOf(r, "mcp-session-id");
  };
  auto post = [](int port, const std::string& token, const std::string& session, const std::string& body) {
    return testing::McpPost(port, token, body, std::chrono::seconds(20), session);
  };
  // The log messages a call relayed (its answer as JSON: none), after checking the answer itself.
  auto call = [&](int port, const std::string& token, const std::string& session) {
    const api::ClientResult r = post(port, token, session, testing::McpToolsCallBody("sse.work", json::object()));
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<json> messages;
    if (testing::HeaderOf(r, "content-type") != "text/event-stream") {
      EXPECT_EQ(testing::Body(r)["result"]["content"][0]["text"].get<std::string>().substr(0, 5), "done ") << r.body;
      return messages;
    }
    std::vector<json> events;
    for (size_t at = 0; (at = r.body.find("data: ", at)) != std::string::npos; at += 6) {
      events.push_back(json::parse(r.body.substr(at + 6, r.body.find('\n', at) - at - 6), nullptr, false));
    }
    EXPECT_FALSE(events.empty()) << r.body;
    if (events.empty()) return messages;
    EXPECT_EQ(events.back()["result"]["content"][0]["text"].get<std::string>().substr(0, 5), "done ")
        << "the answer comes last: " << r.body;
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      EXPECT_EQ(events[i]["method"], "notifications/message") << "no progress was asked for: " << r.body;
      messages.push_back(events[i]["params"]);
    }
    return messages;
  };
  auto set_level = [&](int port, const std::string& token, const std::string& session, const json& level) {
    return post(port, token, session, testing::McpRpcBody("logging/setLevel", {{"level", level}}));
  };

  const std::string session = initialize(a.public_port(), alice_);
  ASSERT_FALSE(session.empty());
  // Each instance fetches the server's tool list at start, on its own: a call before is an unknown tool.
  for (testing::GatewayProcess* gw : {&a, &b}) {
    const bool listed = testing::WaitUntil(
        [&] {
          const json list = testing::Body(
              post(gw->public_port(), alice_, session, testing::McpRpcBody("tools/list", json::object())));
          for (const json& t : list["result"]["tools"]) {
            if (t["name"] == "sse.work") return true;
          }
          return false;
        },
        std::chrono::seconds(30), milliseconds(100));
    ASSERT_TRUE(listed) << "sse.work never listed";
  }
  EXPECT_TRUE(call(b.public_port(), alice_, session).empty()) << "no level set: JSON as before";

  const api::ClientResult warning = set_level(a.public_port(), alice_, session, "warning");
  EXPECT_EQ(testing::Body(warning), json({{"jsonrpc", "2.0"}, {"id", 1}, {"result", json::object()}})) << warning.body;
  EXPECT_TRUE(call(a.public_port(), alice_, session).empty()) << "an info message is below warning";

  ASSERT_EQ(testing::Body(set_level(a.public_port(), alice_, session, "info"))["result"], json::object());
  const std::vector<json> on_a = call(a.public_port(), alice_, session);
  ASSERT_EQ(on_a.size(), 1u);
  EXPECT_EQ(on_a[0], json({{"level", "info"}, {"data", "working"}}));
  // The other instance read "none" for this session moments ago and keeps that for up to 5 s.
  std::vector<json> on_b;
  for (int i = 0; i < 20 && on_b.empty(); ++i) {
    on_b = call(b.public_port(), alice_, session);
    if (on_b.empty()) std::this_thread::sleep_for(milliseconds(500));
  }
  ASSERT_EQ(on_b.size(), 1u) << "the level set on one instance holds on the other";
  EXPECT_EQ(on_b[0]["data"], "working");

  // Log messages the server sends just before its answer all reach the client, in order: unlike
  // progress, none supersedes another. Then with a progress token too: every message, and of the
  // progress not yet written when the answer came, at least the latest.
  server_.set_call_mode(FakeSseMcpServer::CallMode::kLogsThenResult);
  server_.set_progress_events(6);
  const std::vector<json> burst = call(a.public_port(), alice_, session);
  ASSERT_EQ(burst.size(), 6u) << json(burst);
  for (int k = 1; k <= 6; ++k) EXPECT_EQ(burst[k - 1]["data"], "log " + std::to_string(k)) << json(burst);
  const api::ClientResult mixed = post(a.public_port(), alice_, session,
                                       testing::McpToolsCallBody("sse.work", json::object(), {{"progressToken", 9}}));
  int logs = 0, progress = 0;
  json last_progress;
  for (size_t at = 0; (at = mixed.body.find("data: ", at)) != std::string::npos; at += 6) {
    const json e = json::parse(mixed.body.substr(at + 6, mixed.body.find('\n', at) - at - 6), nullptr, false);
    if (e.value("method", "") == "notifications/message") {
      EXPECT_EQ(e["params"]["data"], "log " + std::to_string(++logs)) << mixed.body;
    } else if (e.value("method", "") == "notifications/progress") {
      ++progress;
      last_progress = e["params"];
    }
  }
  EXPECT_EQ(logs, 6) << mixed.body;
  EXPECT_GE(progress, 1) << mixed.body;
  EXPECT_EQ(last_progress["progress"], 6) << mixed.body;
  EXPECT_EQ(last_progress["progressToken"], 9) << mixed.body;
  // A token beyond 64 bits comes back as the client wrote it, through the whole route.
  std::string big_body = testing::McpToolsCallBody("sse.work", json::object(), {{"progressToken", "BIG"}});
  big_body.replace(big_body.find("\"BIG\""), 5, "12345678901234567890123");
  const api::ClientResult big = post(a.public_port(), alice_, session, big_body);
  EXPECT_NE(big.body.find(R"("progressToken":12345678901234567890123,)"), std::string::npos) << big.body;
  EXPECT_EQ(big.body.find("e+22"), std::string::npos) << big.body;
  server_.set_call_mode(FakeSseMcpServer::CallMode::kProgressOfEverySize);

  // Another tenant's session, and a call without a session, are untouched.
  const std::string bobs = initialize(b.public_port(), bob);
  EXPECT_TRUE(call(b.public_port(), bob, bobs).empty());
  EXPECT_TRUE(call(a.public_port(), alice_, "").empty());
  // Alice's session presented by Bob is not his: 404, as any foreign session.
  EXPECT_EQ(set_level(a.public_port(), bob, session, "debug").status, 404);

  const api::ClientResult no_session = set_level(a.public_port(), alice_, "", "info");
  EXPECT_EQ(no_session.status, 400) << no_session.body;
  EXPECT_EQ(testing::Body(no_session)["error"]["code"], -32600) << no_session.body;
  for (const json& bad : {json("INFO"), json("verbose"), json(3), json()}) {
    EXPECT_EQ(testing::Body(set_level(a.public_port(), alice_, session, bad))["error"]["code"], -32602) << bad;
  }
  api::ClientRequest modern;
  modern.address = {"127.0.0.1", a.public_port()};
  modern.method = "POST";
  modern.target = "/mcp";
  modern.body = testing::McpRpcBody(
      "logging/setLevel", {{"level", "info"}, {"_meta", {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"}}}});
  modern.headers = {{"Content-Type", "application/json"},
                    {"Accept", "application/json, text/event-stream"},
                    {"MCP-Protocol-Version", "2026-07-28"},
                    {"Mcp-Method", "logging/setLevel"},
                    {"Authorization", "Bearer " + alice_}};
  EXPECT_EQ(testing::Body(api::HttpCall(std::move(modern)))["error"]["code"], -32601)
      << "the revision without sessions has no setLevel";
}

}  // namespace
}  // namespace toolgate
