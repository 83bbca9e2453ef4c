// A `kind = "mcp_stdio"` server that writes more than toolgate will hold (design §14 "MCP
// connectors"): a line longer than max_response_bytes — a too-big answer, or bytes without end and
// no newline — or requests faster than it reads the answers. Each ends the call FAILED
// downstream_error well before its timeout, the child is killed and reaped, and the next call gets
// a new one. The server is a small Node script started by the connector.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <malloc.h>
#include <signal.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "test_support.h"
#include "wait_until.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/connectors/mcp_connector.h"
#include "toolgate/domain/downstream_outcome.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

namespace asio = boost::asio;
using json = nlohmann::json;
using Kind = DownstreamResult::Kind;
using std::chrono::milliseconds;

// What the test servers below share: stdin read a line at a time, each request (a line with an id
// and a method) given to `handle` with its `answer`, `initialize` answered here with `capabilities`.
constexpr const char* kServerLines = R"JS(
const rl = require('readline').createInterface({input: process.stdin});
const send = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const serve = (capabilities, handle) => rl.on('line', (l) => {
  let m;
  try { m = JSON.parse(l); } catch (e) { return; }
  if (m.id === undefined || m.method === undefined) return;
  const answer = (result) => send({jsonrpc: '2.0', id: m.id, result});
  if (m.method === 'initialize') {
    return answer({protocolVersion: m.params.protocolVersion, capabilities,
                   serverInfo: {name: 'fixture', version: '1'}});
  }
  handle(m, answer);
});
)JS";

// An MCP server on stdin/stdout. Tools: `pid` (answers its process id), `big` (a valid answer of
// 64 KB on one line), `endless` (64 KB chunks without a newline, forever), `asks` (stops reading
// stdin and sends requests of its own without end), `freeze` (blocks its only thread: alive, silent),
// `deaf` (answers, then stops reading stdin and sends a notification every 5 ms: alive, talkative,
// deaf).
const std::string kServer = std::string(kServerLines) + R"JS(
serve({tools: {}}, (m, answer) => {
  if (m.method === 'tools/list') return answer({tools: []});
  if (m.method !== 'tools/call') return send({jsonrpc: '2.0', id: m.id, error: {code: -32601, message: 'no'}});
  const tool = m.params.name;
  if (tool === 'big') return answer({content: [{type: 'text', text: 'x'.repeat(65536)}]});
  if (tool === 'endless') {
    const chunk = 'y'.repeat(65536);
    const more = () => { while (process.stdout.write(chunk)) {} process.stdout.once('drain', more); };
    return more();
  }
  if (tool === 'asks') {
    rl.close();
    process.stdin.pause();
    let n = 0;
    const more = () => {
      while (process.stdout.write(JSON.stringify({jsonrpc: '2.0', id: 's' + n++, method: 'roots/list'}) + '\n')) {}
      process.stdout.once('drain', more);
    };
    return more();
  }
  if (tool === 'deaf') {
    rl.close();
    process.stdin.pause();
    setInterval(() => send({jsonrpc: '2.0', method: 'notifications/message', params: {level: 'info', data: 'here'}}), 5);
  }
  if (tool === 'freeze') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  answer({content: [{type: 'text', text: String(process.pid)}]});
});
)JS";

constexpr int kTimeoutMs = 60'000;
constexpr milliseconds kWellBefore{kTimeoutMs / 2};

class McpStdioTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(kTimeoutMs); }

  void Make(int timeout_ms, std::vector<std::string> command = {"/usr/bin/node", "-e", kServer}) {
    if (connector_) connector_->Stop();
    config_.id = "local";
    config_.kind = ConnectorKind::kMcpStdio;
    config_.command = std::move(command);
    config_.tool_prefix = "local.";
    config_.timeout_ms = timeout_ms;
    config_.max_response_bytes = max_response_bytes_;
    McpConnectorDeps deps{registry_, store_, nullptr, io_.get_executor(), nullptr};
    auto made = McpConnector::Create(config_, pool_, clock_, std::move(deps));
    ASSERT_TRUE(made.ok()) << made.status();
    connector_ = *std::move(made);
  }

  void TearDown() override {
    if (connector_) connector_->Stop();
  }

  struct Timed {
    DownstreamResult result;
    milliseconds took;
  };
  // The server pid a `pid` call's answer names; -1 (after a pause of 100 ms, for a server being
  // started again) when the call was not answered.
  static pid_t ServedBy(const Timed& t) {
    if (t.result.kind == Kind::kResponse) {
      return std::stoi(json::parse(t.result.body)["content"][0]["text"].get<std::string>());
    }
    std::this_thread::sleep_for(milliseconds(100));
    return -1;
  }
  Timed Call(const std::string& tool, const std::string& body = "{}") { return CallAtOnce(1, tool, body).front(); }

  // `n` calls of `tool` started together (each its own coroutine on the loop), each timed.
  std::vector<Timed> CallAtOnce(int n, const std::string& tool, const std::string& body = "{}") {
    std::vector<std::future<Timed>> calls;
    for (int i = 0; i < n; ++i) {
      DownstreamRequest request;
      request.tool_name = "local." + tool;
      request.body = body;
      request.idempotency_key = "key-" + std::to_string(++call_number_);
      request.execution_id = "exec-" + std::to_string(call_number_);
      calls.push_back(asio::co_spawn(io_, TimedCall(*connector_, std::move(request)), asio::use_future));
    }
    // The child's stdout is always being read: run the loop until the calls are done, not until idle.
    io_.restart();
    const auto give_up = std::chrono::steady_clock::now() + 2 * milliseconds(kTimeoutMs);
    const auto all_done = [&] {
      for (auto& c : calls) {
        if (c.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
      }
      return true;
    };
    while (!all_done() && std::chrono::steady_clock::now() < give_up) io_.run_for(milliseconds(20));
    std::vector<Timed> out;
    for (auto& c : calls) {
      if (c.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        ADD_FAILURE() << "a call never ended";
        out.push_back(Timed{});
      } else {
        out.push_back(c.get());
      }
    }
    return out;
  }

  static asio::awaitable<Timed> TimedCall(McpConnector& connector, DownstreamRequest request) {
    const auto start = std::chrono::steady_clock::now();
    DownstreamResult result = co_await connector.Call(request);
    co_return Timed{std::move(result),
                    std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start)};
  }

  // The server's process id, from its `pid` tool.
  pid_t ServerPid() {
    const Timed t = Call("pid");
    EXPECT_EQ(t.result.kind, Kind::kResponse) << t.result.error;
    const json result = json::parse(t.result.body, nullptr, false);
    if (result.is_discarded() || !result.contains("content")) {
      ADD_FAILURE() << t.result.body;
      return -1;
    }
    return static_cast<pid_t>(std::stol(result["content"][0]["text"].get<std::string>()));
  }

  // A call `tool` that makes the server write too much: FAILED downstream_error soon, the server
  // gone, a new one for the next call.
  void ExpectTooMuch(const std::string& tool, const std::string& why) {
    const pid_t before = ServerPid();
    ASSERT_GT(before, 0);
    const Timed t = Call(tool);
    EXPECT_EQ(t.result.kind, Kind::kResponseInvalid) << t.result.error;
    EXPECT_NE(t.result.error.find(why), std::string::npos) << t.result.error;
    EXPECT_LT(t.took, kWellBefore) << "the limit ends the call, not its timeout";
    const Classification c = ClassifyDownstream(t.result, false, config_.breaker, 1000);
    EXPECT_EQ(c.outcome, Outcome::kFailed);
    EXPECT_EQ(c.reason, OutcomeReason{FailureReason::kDownstreamError});
    EXPECT_EQ(c.breaker, BreakerEffect::kFailure) << "a server writing garbage is a broken server";
    // Killed and reaped: no such process any more.
    EXPECT_EQ(kill(before, 0), -1);
    EXPECT_EQ(errno, ESRCH);
    const pid_t after = ServerPid();
    EXPECT_GT(after, 0);
    EXPECT_NE(after, before) << "the next call runs on a new server";
  }

  SystemClock clock_;
  asio::io_context io_;
  net::ConnectionPool pool_;
  store::MemoryItemStore store_{clock_};
  McpToolRegistry registry_;
  ConnectorConfig config_;
  size_t max_response_bytes_ = 16 * 1024;
  std::unique_ptr<McpConnector> connector_;
  int call_number_ = 0;
};

TEST_F(McpStdioTest, AnAnswerLongerThanMaxResponseBytesFailsTheCallAndReplacesTheServer) {
  ExpectTooMuch("big", "a line longer than 16384 bytes");
}

TEST_F(McpStdioTest, OutputWithoutEndOrNewlineIsCutAtTheLimit) {
  ExpectTooMuch("endless", "a line longer than 16384 bytes");
}

TEST_F(McpStdioTest, RequestsFasterThanTheServerReadsTheAnswersEndIt) {
  ExpectTooMuch("asks", "sends requests without reading the answers");
}

// A server that is alive but answers nothing (frozen) is killed after three requests in a row time
// out with nothing heard from it, and the next call gets a new one: not a connector stuck forever.
TEST_F(McpStdioTest, AServerThatAnswersNothingIsReplacedAfterThreeTimeoutsInARow) {
  Make(3000);  // room for the first start under the sanitizers
  const pid_t frozen = ServerPid();
  ASSERT_GT(frozen, 0);
  EXPECT_EQ(Call("freeze").result.kind, Kind::kTimeout);
  EXPECT_EQ(Call("pid").result.kind, Kind::kTimeout);
  EXPECT_EQ(kill(frozen, 0), 0) << "two silent timeouts are not yet a frozen server";
  EXPECT_EQ(Call("pid").result.kind, Kind::kTimeout);
  EXPECT_EQ(kill(frozen, 0), -1) << "the third silent timeout kills it";
  EXPECT_EQ(errno, ESRCH);
  // The restart comes after its backoff: calls meanwhile fail fast; one after it runs.
  pid_t after = -1;
  for (int i = 0; i < 20 && after <= 0; ++i) {
    const Timed t = Call("pid");
    if (t.result.kind == Kind::kResponse)
      after = std::stoi(json::parse(t.result.body)["content"][0]["text"].get<std::string>());
    else
      std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_GT(after, 0) << "no new server";
  EXPECT_NE(after, frozen);
}

// Whether `pid` has ended: gone, or a zombie not yet reaped by whoever adopted it.
bool Ended(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

// This process's resident memory, in kB (VmRSS).
int64_t ResidentKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

// A server that stops reading its stdin but keeps sending notifications: what toolgate would write
// to it is not held without bound (the review saw 100 calls of 900 KB grow toolgate by 200 MB), the
// calls that find more than max_response_bytes waiting fail at once, as a connector failure, and the
// server is replaced (its notifications do not make it look alive).
TEST_F(McpStdioTest, AServerThatStopsReadingIsNotQueuedWithoutBoundAndIsReplaced) {
  // Every block of 64 KB or more mapped on its own and unmapped when freed (no dynamic threshold):
  // the resident size then counts the large buffers held, not those the allocator keeps for later.
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  // Room for the burst's own work (each call parses and writes its half megabyte on this one loop:
  // ~0.1 s a call under AddressSanitizer, so the burst's last refusal comes seconds after its first).
  const int timeout_ms = testing::kSanitizedBuild ? 15000 : 4000;
  const milliseconds at_once(testing::kSanitizedBuild ? 12000 : 1000);
  Make(timeout_ms);
  const pid_t deaf = ServerPid();
  ASSERT_GT(deaf, 0);
  ASSERT_EQ(Call("deaf").result.kind, Kind::kResponse);
  const std::string half_megabyte = json{{"pad", std::string(512 * 1024, 'x')}}.dump();
  const int64_t rss_before = ResidentKb();
  const std::vector<Timed> burst = CallAtOnce(16, "pid", half_megabyte);
  const int64_t rss_after = ResidentKb();
  int refused = 0;
  for (const Timed& t : burst) {
    if (t.result.kind != Kind::kConnectFailed) continue;
    ++refused;
    EXPECT_LT(t.took, at_once) << "a call that cannot be sent fails at once";
    EXPECT_NE(t.result.error.find("bytes wait to be written"), std::string::npos) << t.result.error;
    const Classification c = ClassifyDownstream(t.result, false, config_.breaker, 1000);
    EXPECT_EQ(c.reason, OutcomeReason{FailureReason::kConnectionFailed});
    EXPECT_EQ(c.breaker, BreakerEffect::kFailure) << "a server that does not read is a broken server";
  }
  EXPECT_GE(refused, 14) << "at most one line beyond the bound is queued";
  if (!testing::kSanitizedBuild) {  // a sanitizer's allocator keeps freed blocks (its quarantine) resident
    EXPECT_LT(rss_after - rss_before, 4 * 1024) << "8 MB were queued for a server that reads nothing";
  }
  // Once it has read nothing for the whole timeout, the next call ends it, and one after its
  // backoff runs on a new server.
  pid_t after = -1;
  const auto until = std::chrono::steady_clock::now() + milliseconds(3 * timeout_ms + 10000);
  while (after <= 0 && std::chrono::steady_clock::now() < until) {
    const Timed t = Call("pid", half_megabyte);
    EXPECT_LT(t.took, milliseconds(timeout_ms - 1000)) << "no call waits for its timeout any more";
    after = ServedBy(t);
  }
  EXPECT_GT(after, 0) << "no new server";
  EXPECT_NE(after, deaf);
  EXPECT_TRUE(Ended(deaf)) << "the deaf server was not ended";
}

// Requests that time out before the server has read them say it is frozen, whatever it sends
// meanwhile: the third in a row replaces it. Within the bound (4 MiB here), each waits its timeout.
TEST_F(McpStdioTest, RequestsTimingOutUnreadReplaceAServerThatOnlySendsNotifications) {
  max_response_bytes_ = 4 << 20;
  Make(1500);
  const pid_t deaf = ServerPid();
  ASSERT_GT(deaf, 0);
  ASSERT_EQ(Call("deaf").result.kind, Kind::kResponse);
  // Larger than what the pipe and the server's own input buffer take together.
  const std::string request = json{{"pad", std::string(300 * 1024, 'x')}}.dump();
  EXPECT_EQ(Call("pid", request).result.kind, Kind::kTimeout);
  EXPECT_EQ(Call("pid", request).result.kind, Kind::kTimeout);
  EXPECT_FALSE(Ended(deaf)) << "two unread requests are not yet a frozen server";
  EXPECT_EQ(Call("pid", request).result.kind, Kind::kTimeout);
  EXPECT_TRUE(testing::WaitUntil([&] { return Ended(deaf); }, milliseconds(2000)))
      << "the third unread request in a row ends it, notifications or not";
  // The next call, after the restart's backoff, runs on a new server.
  pid_t after = -1;
  for (int i = 0; i < 10 && after <= 0; ++i) {
    const Timed t = Call("pid");
    after = ServedBy(t);
  }
  EXPECT_GT(after, 0) << "no new server";
  EXPECT_NE(after, deaf);
}

TEST_F(McpStdioTest, AnAnswerWithinTheLimitIsTheResult) {
  const pid_t pid = ServerPid();
  EXPECT_GT(pid, 0);
  EXPECT_EQ(ServerPid(), pid) << "one server serves call after call";
}

// Servers are often started through a wrapper (`npx`, `uvx`, `sh -c`): the server is then the
// wrapper's child, or the wrapper started more. Killing the child alone left those running, adopted
// by init, one more at every restart of a frozen server and after toolgate had stopped. The child's
// whole process group goes with it.
TEST_F(McpStdioTest, WhatTheServerStartedEndsWithIt) {
  testing::TempDir dir;
  const std::string pid_file = dir.file("started.pid");
  // The wrapper starts a process that never reads stdin (so no end of input ends it), then becomes
  // the server.
  Make(kTimeoutMs,
       {"/bin/sh", "-c", "sleep 300 & echo $! > '" + pid_file + "'; exec /usr/bin/node -e \"$0\"", kServer});
  const pid_t server = ServerPid();
  ASSERT_GT(server, 0);
  pid_t started = -1;
  std::ifstream(pid_file) >> started;
  ASSERT_GT(started, 0);
  ASSERT_FALSE(Ended(started));

  connector_->Stop();
  bool ended = false;
  for (int i = 0; i < 100 && !ended; ++i) {
    ended = Ended(started);
    if (!ended) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(ended) << "pid " << started << " outlived the connector";
  EXPECT_TRUE(Ended(server));
  if (!ended) kill(started, SIGKILL);
}

// A server's tool list (design §14, §17.7). tools/list: one tool (`count`) until a call of `grow`,
// then pages of one 100 KB tool each, each with a nextCursor, without end. With `storm` as its
// argument it sends notifications/tools/list_changed 20 ms after every tools/list it answers. Every
// tools/call answers how many tools/list requests reached it so far.
const std::string kListServer = std::string(kServerLines) + R"JS(
const storm = process.argv.includes('storm');
let lists = 0, grown = false;
serve({tools: {listChanged: true}}, (m, answer) => {
  if (m.method === 'tools/list') {
    ++lists;
    if (storm) setTimeout(() => send({jsonrpc: '2.0', method: 'notifications/tools/list_changed'}), 20);
    if (!grown) return answer({tools: [{name: 'count', inputSchema: {type: 'object'}}]});
    return answer({tools: [{name: 'big' + lists, description: 'd'.repeat(100 * 1024), inputSchema: {type: 'object'}}],
                   nextCursor: 'after' + lists});
  }
  if (m.method !== 'tools/call') return send({jsonrpc: '2.0', id: m.id, error: {code: -32601, message: 'no'}});
  if (m.params.name === 'grow') grown = true;
  answer({content: [{type: 'text', text: String(lists)}]});
});
)JS";

class McpToolListTest : public McpStdioTest {
 protected:
  // The tools/list requests that reached the server so far (its `count` tool).
  int ListsSoFar() {
    const Timed t = Call("count");
    if (t.result.kind != Kind::kResponse) {
      ADD_FAILURE() << t.result.error;
      return -1;
    }
    return std::stoi(json::parse(t.result.body)["content"][0]["text"].get<std::string>());
  }
  absl::Status Refresh() {
    std::future<absl::Status> done = asio::co_spawn(io_, connector_->RefreshTools(), asio::use_future);
    io_.restart();
    const auto give_up = std::chrono::steady_clock::now() + milliseconds(kTimeoutMs);
    while (done.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < give_up) {
      io_.run_for(milliseconds(20));
    }
    if (done.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return absl::DeadlineExceededError("hung");
    return done.get();
  }
  void RunFor(milliseconds how_long) {
    io_.restart();
    const auto end = std::chrono::steady_clock::now() + how_long;
    while (std::chrono::steady_clock::now() < end) io_.run_for(milliseconds(20));
  }
};

// A server could page its list without end, each page up to max_response_bytes: 100 pages were
// gathered into one list and served to every agent's tools/list (a review saw 7.4 GB of memory and a
// 43 s answer from one such server). The list is bounded by what a store item holds (350 KB): past
// it no further page is asked for and the list is refused whole, the last one staying in use.
TEST_F(McpToolListTest, AToolListLargerThanAStoreItemIsRefusedWithoutAskingForEveryPage) {
  max_response_bytes_ = 256 * 1024;  // each 100 KB page fits in an answer
  Make(kTimeoutMs, {"/usr/bin/node", "-e", kListServer});
  ASSERT_TRUE(Refresh().ok());
  ASSERT_EQ(registry_.ToolCount("local"), 1u);
  Call("grow");
  const int before = ListsSoFar();
  const absl::Status grown = Refresh();
  EXPECT_EQ(grown.code(), absl::StatusCode::kResourceExhausted) << grown;
  EXPECT_NE(grown.message().find("larger than 350 KB"), std::string::npos) << grown;
  EXPECT_EQ(ListsSoFar() - before, 4) << "the fourth 100 KB page passes 350 KB: no fifth is asked for";
  EXPECT_EQ(registry_.ToolCount("local"), 1u) << "the last list stays in use";
  EXPECT_TRUE(registry_.ConnectorOf("local.count").has_value());
}

// notifications/tools/list_changed after every list made the refresh loop fetch (and save) the list
// again at once, ~35 times a second without any call. A fetch it asks for now comes at least 1 s
// after the one before, the interval doubling while the notifications keep coming.
TEST_F(McpToolListTest, AServerThatSaysItsToolsChangedAfterEveryListIsNotFetchedAgainAtOnce) {
  Make(kTimeoutMs, {"/usr/bin/node", "-e", kListServer, "storm"});
  connector_->Start(io_.get_executor());
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        RunFor(milliseconds(100));
        return registry_.HasList("local");
      },
      std::chrono::seconds(30)));
  RunFor(milliseconds(3500));
  const int lists = ListsSoFar();
  // Fetched at 0 s, then at least 1 s and 2 s apart: 3 in 3.5 s (a fourth only if the first came late).
  EXPECT_GE(lists, 2) << "a notification still brings a fetch";
  EXPECT_LE(lists, 4) << "one fetch per notification would be ~100";
  connector_->Stop();
}

}  // namespace
}  // namespace toolgate
