// A `kind = "mcp_stdio"` server that writes more than toolgate will hold (design §14 "MCP
// connectors"): a line longer than max_response_bytes — a too-big answer, or bytes without end and
// no newline — or requests faster than it reads the answers. Each ends the call FAILED
// downstream_error well before its timeout, the child is killed and reaped, and the next call gets
// a new one. The server is a small Node script started by the connector.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

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

// An MCP server on stdin/stdout. Tools: `pid` (answers its process id), `big` (a valid answer of
// 64 KB on one line), `endless` (64 KB chunks without a newline, forever), `asks` (stops reading
// stdin and sends requests of its own without end), `freeze` (blocks its only thread: alive, silent).
constexpr const char* kServer = R"JS(
const rl = require('readline').createInterface({input: process.stdin});
const send = (o) => process.stdout.write(JSON.stringify(o) + '\n');
rl.on('line', (l) => {
  let m;
  try { m = JSON.parse(l); } catch (e) { return; }
  if (m.id === undefined || m.method === undefined) return;
  const answer = (result) => send({jsonrpc: '2.0', id: m.id, result});
  if (m.method === 'initialize') {
    return answer({protocolVersion: m.params.protocolVersion, capabilities: {tools: {}},
                   serverInfo: {name: 'fixture', version: '1'}});
  }
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
    config_.max_response_bytes = 16 * 1024;
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
  Timed Call(const std::string& tool) {
    DownstreamRequest request;
    request.tool_name = "local." + tool;
    request.body = "{}";
    request.idempotency_key = "key-" + std::to_string(++call_number_);
    request.execution_id = "exec-" + std::to_string(call_number_);
    const auto start = std::chrono::steady_clock::now();
    auto done = asio::co_spawn(io_, connector_->Call(request), asio::use_future);
    // The child's stdout is always being read: run the loop until the call is done, not until idle.
    io_.restart();
    const auto give_up = start + 2 * milliseconds(kTimeoutMs);
    while (done.wait_for(std::chrono::seconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < give_up) {
      io_.run_for(milliseconds(20));
    }
    if (done.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      ADD_FAILURE() << "the call never ended";
      return Timed{};
    }
    return Timed{done.get(), std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start)};
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

TEST_F(McpStdioTest, AnAnswerWithinTheLimitIsTheResult) {
  const pid_t pid = ServerPid();
  EXPECT_GT(pid, 0);
  EXPECT_EQ(ServerPid(), pid) << "one server serves call after call";
}

// Whether `pid` has ended: gone, or a zombie not yet reaped by whoever adopted it.
bool Ended(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
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

}  // namespace
}  // namespace toolgate
