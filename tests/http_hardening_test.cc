// The HTTP layer under hostile clients, through the real `toolgate serve` binary on loopback: request
// framing byte by byte on raw sockets (RFC 9112: Transfer-Encoding, Content-Length, Host, Expect,
// encoded slashes, duplicate credentials), connection caps and descriptor exhaustion (CPU time and
// answers measured from outside), slow readers (the process's RSS measured from outside), and the
// client's report of a local resource error.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <iostream>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <thread>

#include "fake_downstream.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"
#include "wait_until.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using testing::HeaderOf;
using testing::TempDir;
using testing::Token;
using testing::WaitUntil;
using Reply = FakeDownstream::Reply;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// UBSan checks a vptr by probing the vtable's memory through a pipe it opens: in a process out of
// descriptors that fails, and it reports a false "invalid vptr" (and aborts the server).
constexpr char kNoDescriptorsUnderSanitizers[] =
    "under the sanitizers a process without descriptors fails their own checks (UBSan opens a pipe to probe memory)";

// ---- raw HTTP on a socket ---------------------------------------------------------------------

struct RawResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
  std::string Header(const std::string& name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return "";
  }
  json Json() const {
    json j = json::parse(body, nullptr, false);
    return j.is_discarded() ? json() : j;
  }
};

// Splits what a server sent into responses (toolgate frames each with Content-Length; a 1xx has no
// body). `rest` receives an incomplete tail.
std::vector<RawResponse> ParseResponses(std::string_view bytes, std::string* rest = nullptr) {
  std::vector<RawResponse> out;
  for (;;) {
    const auto head_end = bytes.find("\r\n\r\n");
    if (bytes.rfind("HTTP/1.", 0) != 0 || head_end == std::string_view::npos) break;
    RawResponse r;
    r.status = std::atoi(std::string(bytes.substr(9, 3)).c_str());
    size_t content_length = 0;
    size_t pos = bytes.find("\r\n") + 2;
    while (pos < head_end) {
      const size_t e = bytes.find("\r\n", pos);
      const std::string line(bytes.substr(pos, e - pos));
      const auto colon = line.find(':');
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (name == "content-length") content_length = std::stoul(value);
      r.headers.emplace_back(std::move(name), std::move(value));
      pos = e + 2;
    }
    if (r.status >= 200 && bytes.size() < head_end + 4 + content_length) break;
    if (r.status >= 200) r.body = std::string(bytes.substr(head_end + 4, content_length));
    bytes.remove_prefix(head_end + 4 + (r.status >= 200 ? content_length : 0));
    out.push_back(std::move(r));
  }
  if (rest != nullptr) *rest = std::string(bytes);
  return out;
}

// A TCP client that writes exact bytes and reads with deadlines. `rcvbuf` > 0 shrinks the receive
// buffer before connecting (a slow reader whose window stays small).
class RawClient {
 public:
  explicit RawClient(int port, int rcvbuf = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) Close();
  }
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool Send(std::string_view bytes) {
    size_t off = 0;
    while (fd_ >= 0 && off < bytes.size()) {
      const ssize_t n = send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return fd_ >= 0;
  }

  // Reads what arrives until `done(received)` holds, the peer closes, or `timeout` passes; whether
  // the peer closed.
  bool ReadWhile(const std::function<bool(const std::string&)>& done, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (fd_ >= 0 && !done(received_)) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[16384];
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        return true;
      }
      received_.append(buf, static_cast<size_t>(n));
    }
    return closed_;
  }
  // Everything until the server closes the connection (or `timeout`): whether it closed.
  bool ReadUntilClose(milliseconds timeout = seconds(5)) {
    return ReadWhile([](const std::string&) { return false; }, timeout);
  }
  // The next `n` final responses (1xx excluded) not returned before, or fewer if the connection
  // ends or time runs out.
  std::vector<RawResponse> ReadResponses(size_t n, milliseconds timeout = seconds(5)) {
    auto finals = [n, this](const std::string& got) {
      size_t count = 0;
      for (const auto& r : ParseResponses(std::string_view(got).substr(consumed_))) count += r.status >= 200 ? 1 : 0;
      return count >= n;
    };
    ReadWhile(finals, timeout);
    std::string rest;
    std::vector<RawResponse> out;
    for (auto& r : ParseResponses(std::string_view(received_).substr(consumed_), &rest)) {
      if (r.status >= 200) out.push_back(std::move(r));
    }
    consumed_ = received_.size() - rest.size();
    return out;
  }
  const std::string& received() const { return received_; }
  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  std::string received_;
  size_t consumed_ = 0;  // bytes of received_ that ReadResponses has returned
  bool closed_ = false;
};

// ---- the toolgate process from outside ----------------------------------------------------------

int64_t ProcStatusKb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atoll(line.c_str() + field.size() + 1);
  }
  return -1;
}

// User + system CPU time the process has used, in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string f;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::atoll(f.c_str());
    if (i == 15) stime = std::atoll(f.c_str());
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// toolgate makes itself not dumpable (app/cli_serve.cc), so its /proc/<pid>/fd is root's alone: a
// test run by another user cannot count its descriptors from outside.
// Listing the directory is not enough: reading where an entry points (what OpenSockets does) needs
// CAP_SYS_PTRACE, which root in a container may lack.
bool DescriptorsReadable(pid_t pid) {
  char target[256];
  return readlink(("/proc/" + std::to_string(pid) + "/fd/0").c_str(), target, sizeof target) > 0;
}
constexpr char kDescriptorsUnreadable[] =
    "counts toolgate's descriptors in /proc/<pid>/fd, which only root with CAP_SYS_PTRACE may read (toolgate "
    "is not dumpable): run as root, as CI does";

int OpenDescriptors(pid_t pid) {
  DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.' ? 1 : 0;
  closedir(d);
  return n;
}

// Sockets only (what a kept or closed connection changes): the store may open files of its own
// (SQLite connections of more store threads) while a test watches connections.
int OpenSockets(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  char target[64];
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const ssize_t len = readlink((dir + "/" + e->d_name).c_str(), target, sizeof(target) - 1);
    if (len > 0 && std::string_view(target, static_cast<size_t>(len)).rfind("socket:", 0) == 0) ++n;
  }
  closedir(d);
  return n;
}

rlimit DescriptorLimitOf(pid_t pid) {
  rlimit r{};
  prlimit(pid, RLIMIT_NOFILE, nullptr, &r);
  return r;
}

void SetSoftDescriptorLimit(pid_t pid, rlim_t soft) {
  rlimit r = DescriptorLimitOf(pid);
  r.rlim_cur = soft;
  ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, &r, nullptr), 0) << std::strerror(errno);
}

// Lowers this process's soft descriptor limit for as long as it lives (children started meanwhile
// inherit it); the hard limit is left alone, so it can be restored.
class ScopedSoftDescriptorLimit {
 public:
  explicit ScopedSoftDescriptorLimit(rlim_t soft) {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lowered = saved_;
    lowered.rlim_cur = std::min(soft, saved_.rlim_max);
    setrlimit(RLIMIT_NOFILE, &lowered);
  }
  ~ScopedSoftDescriptorLimit() { setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  rlimit saved_{};
};

// Counts the lines of `log` holding `needle`.
int CountLines(const std::string& log, const std::string& needle) {
  int n = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos ? 1 : 0;
  return n;
}

// ---- the fixture --------------------------------------------------------------------------------

class HttpHardeningTest : public ::testing::Test {
 protected:
  std::string Config(const std::string& server_extra = "", const std::string& admin_extra = "",
                     const std::string& store = "", const std::string& crm_extra = "") {
    const std::string store_table =
        store.empty() ? "[store]\npath = \"" + dir_.file("store.db") + "\"\nsqlite_synchronous = \"normal\"\n" : store;
    return "[server]\nlisten = \"127.0.0.1:0\"\n" + server_extra + "[admin]\nlisten = \"127.0.0.1:0\"\n" + admin_extra +
           store_table + "[connectors.crm]\nbase_url = \"" + crm_.base_url() +
           "\"\ntimeout_ms = 2000\nmax_in_flight = 64\n" + crm_extra +
           "[connectors.crm.breaker]\nfailure_threshold = 3\ncooldown_s = 60\n";
  }
  GatewayProcess& Start(const std::string& config) {
    gateways_.push_back(std::make_unique<GatewayProcess>(config, dir_, "gw" + std::to_string(gateways_.size())));
    EXPECT_TRUE(gateways_.back()->Start());
    return *gateways_.back();
  }
  // A request with a valid token; `extra` are header lines ending in \r\n.
  std::string Request(const std::string& method, const std::string& target, const std::string& extra = "",
                      const std::string& body = "", const std::string& version = "HTTP/1.1") const {
    std::string r = method + " " + target + " " + version + "\r\nAuthorization: Bearer " + alice_ + "\r\n" + extra;
    if (!body.empty() && extra.find("Content-Length") == std::string::npos &&
        extra.find("Transfer-Encoding") == std::string::npos) {
      r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    return r + "\r\n" + body;
  }
  // Sends `bytes` on a new connection and reads until the server closes it.
  std::vector<RawResponse> Exchange(int port, const std::string& bytes, bool* closed = nullptr) {
    RawClient c(port);
    EXPECT_TRUE(c.connected());
    c.Send(bytes);
    const bool did_close = c.ReadUntilClose(seconds(5));
    if (closed != nullptr) *closed = did_close;
    return ParseResponses(c.received());
  }

  TempDir dir_;
  FakeDownstream crm_;
  std::vector<std::unique_ptr<GatewayProcess>> gateways_;
  const std::string alice_ = Token("tenant-a");
};

// ---- request framing ------------------------------------------------------------------------------

// A body that is a second request: if the server took the body's length from anything but a final
// chunked coding (or Content-Length alone), the hidden invoke would run.
std::string HiddenInvoke(const std::string& token) {
  const std::string inner = R"({"input":{}})";
  return "0\r\n\r\nPOST /v1/tools/crm.smuggled/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(inner.size()) + "\r\n\r\n" + inner;
}

TEST_F(HttpHardeningTest, ATransferEncodingNotEndingInChunkedIs400AndTheConnectionCloses) {
  GatewayProcess& gw = Start(Config());
  for (const std::string te : {"gzip", "identity", "xchunked", "chunked, identity", "chunked;x=1", "chunkedx", ""}) {
    SCOPED_TRACE("Transfer-Encoding: " + te);
    bool closed = false;
    const auto answers =
        Exchange(gw.public_port(),
                 Request("POST", "/v1/tools/crm.x/invoke", "Host: x\r\nTransfer-Encoding: " + te + "\r\n") +
                     HiddenInvoke(alice_),
                 &closed);
    ASSERT_EQ(answers.size(), 1u) << "one request, one answer: nothing hidden in the body may run";
    EXPECT_EQ(answers[0].status, 400);
    EXPECT_EQ(answers[0].Json()["error"], "invalid_framing") << answers[0].body;
    EXPECT_EQ(answers[0].Header("connection"), "close");
    EXPECT_TRUE(closed);
  }
  // Codings toolgate cannot undo before a final chunked: 501, and the connection closes too.
  bool closed = false;
  const auto gzip_chunked =
      Exchange(gw.public_port(),
               Request("POST", "/v1/tools/crm.x/invoke", "Host: x\r\nTransfer-Encoding: gzip, chunked\r\n") +
                   HiddenInvoke(alice_),
               &closed);
  ASSERT_EQ(gzip_chunked.size(), 1u);
  EXPECT_EQ(gzip_chunked[0].status, 501);
  EXPECT_EQ(gzip_chunked[0].Json()["error"], "unsupported_transfer_coding");
  EXPECT_TRUE(closed);
  // Two Transfer-Encoding lines are one list: "gzip" then "chunked" is the same as above.
  const auto split =
      Exchange(gw.public_port(), Request("POST", "/v1/tools/crm.x/invoke",
                                         "Host: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n") +
                                     HiddenInvoke(alice_));
  ASSERT_EQ(split.size(), 1u);
  EXPECT_EQ(split[0].status, 501);
  EXPECT_EQ(crm_.count("/crm.smuggled"), 0);
  EXPECT_EQ(crm_.total(), 0);
}

TEST_F(HttpHardeningTest, TransferEncodingWithContentLengthOrInHttp10Is400) {
  GatewayProcess& gw = Start(Config());
  const std::string cl = "Content-Length: " + std::to_string(HiddenInvoke(alice_).size()) + "\r\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"chunked after Content-Length", "Host: x\r\n" + cl + "Transfer-Encoding: chunked\r\n"},
      {"chunked before Content-Length", "Host: x\r\nTransfer-Encoding: chunked\r\n" + cl},
      {"gzip before Content-Length", "Host: x\r\nTransfer-Encoding: gzip\r\n" + cl},
      {"gzip after Content-Length", "Host: x\r\n" + cl + "Transfer-Encoding: gzip\r\n"},
  };
  for (const auto& [name, headers] : cases) {
    SCOPED_TRACE(name);
    bool closed = false;
    const auto answers =
        Exchange(gw.public_port(), Request("POST", "/v1/tools/crm.x/invoke", headers) + HiddenInvoke(alice_), &closed);
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_EQ(answers[0].status, 400);
    EXPECT_EQ(answers[0].Json()["error"], "invalid_framing") << answers[0].body;
    EXPECT_TRUE(closed);
  }
  // HTTP/1.0 has no transfer codings: its framing is faulty whatever the coding says.
  const auto http10 = Exchange(
      gw.public_port(), Request("POST", "/v1/tools/crm.x/invoke", "Transfer-Encoding: chunked\r\n", "", "HTTP/1.0") +
                            HiddenInvoke(alice_));
  ASSERT_EQ(http10.size(), 1u);
  EXPECT_EQ(http10[0].status, 400);
  EXPECT_EQ(http10[0].Json()["error"], "invalid_framing");
  EXPECT_EQ(crm_.total(), 0);
  // A well-framed chunked request still works.
  crm_.set_behavior([](const auto&) { return Reply{200, R"({"ok":true})"}; });
  const std::string body = R"({"input":{}})";
  std::ostringstream chunk;
  chunk << std::hex << body.size() << "\r\n" << body << "\r\n0\r\n\r\n";
  const auto chunked = Exchange(
      gw.public_port(),
      Request("POST", "/v1/tools/crm.ok/invoke", "Host: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n") +
          chunk.str());
  ASSERT_EQ(chunked.size(), 1u);
  EXPECT_EQ(chunked[0].status, 200) << chunked[0].body;
}

TEST_F(HttpHardeningTest, Http11NeedsExactlyOneHostAndDuplicateCredentialsOrLengthsAre400) {
  GatewayProcess& gw = Start(Config());
  struct Case {
    std::string name, request, error;
  };
  const std::string body = R"({"input":{}})";
  const std::vector<Case> cases = {
      {"no Host", "GET /healthz HTTP/1.1\r\n\r\n", "missing_host"},
      {"two Hosts", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate_header"},
      {"two Authorizations",
       "GET /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + alice_ + "\r\nAuthorization: Bearer " +
           Token("tenant-b") + "\r\n\r\n",
       "duplicate_header"},
      {"two equal Content-Lengths",
       Request("POST", "/v1/tools/crm.x/invoke", "Host: x\r\nContent-Length: 12\r\nContent-Length: 12\r\n", body),
       "duplicate_header"},
      // Headers toolgate decides by: the Origin checks and MCP's revision, session, method and tool.
      {"two Origins", "GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: http://x\r\norigin: http://evil\r\n\r\n",
       "duplicate_header"},
      {"two Mcp-Names",
       Request("POST", "/mcp", "Host: x\r\nMcp-Name: crm.get_deal\r\nMCP-NAME: crm.send_email\r\n", body),
       "duplicate_header"},
      {"two Mcp-Session-Ids", Request("POST", "/mcp", "Host: x\r\nMcp-Session-Id: a\r\nMcp-Session-Id: b\r\n", body),
       "duplicate_header"},
      {"two MCP-Protocol-Versions",
       Request("POST", "/mcp", "Host: x\r\nMCP-Protocol-Version: 2025-06-18\r\nMCP-Protocol-Version: 2026-07-28\r\n",
               body),
       "duplicate_header"},
      {"a Content-Length list",
       Request("POST", "/v1/tools/crm.x/invoke", "Host: x\r\nContent-Length: 12, 12\r\n", body), "invalid_framing"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    bool closed = false;
    const auto answers = Exchange(gw.public_port(), c.request, &closed);
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_EQ(answers[0].status, 400);
    EXPECT_EQ(answers[0].Json()["error"], c.error) << answers[0].body;
    EXPECT_TRUE(closed);
  }
  // The admin listener applies the same rules.
  const auto admin = Exchange(gw.admin_port(), "GET /admin/connectors HTTP/1.1\r\n\r\n");
  ASSERT_EQ(admin.size(), 1u);
  EXPECT_EQ(admin[0].status, 400);
  // HTTP/1.0 has no Host requirement.
  const auto http10 = Exchange(gw.public_port(), "GET /healthz HTTP/1.0\r\n\r\n");
  ASSERT_EQ(http10.size(), 1u);
  EXPECT_EQ(http10[0].status, 200);
  EXPECT_EQ(crm_.total(), 0);
}

TEST_F(HttpHardeningTest, AnEncodedSlashOrNulInThePathIsRefusedBeforeRouting) {
  GatewayProcess& gw = Start(Config());
  for (const std::string target :
       {"/v1/tools/crm.x%2Finvoke", "/v1/tools/crm.x%2finvoke", "/v1/tools/crm.x%2F..%2Fy/invoke",
        "/v1/tools/crm.x%00/invoke", "/healthz%00", "/v1/tools/../invoke", "/v1/tools/%2e%2e/invoke",
        "/v1/tools/%2E/invoke", "/v1/./tools/crm.x/invoke", "/v1/tools/crm.x/invoke/.."}) {
    SCOPED_TRACE(target);
    const auto answers =
        Exchange(gw.public_port(), Request("POST", target, "Host: x\r\nConnection: close\r\n", R"({"input":{}})"));
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_EQ(answers[0].status, 400);
    EXPECT_EQ(answers[0].Json()["error"], "invalid_path") << answers[0].body;
  }
  EXPECT_EQ(crm_.total(), 0);
  // In the query an encoded slash is data: it reaches the route (which refuses the cursor itself).
  const auto query =
      Exchange(gw.public_port(), Request("GET", "/v1/executions?after=a%2Fb", "Host: x\r\nConnection: close\r\n"));
  ASSERT_EQ(query.size(), 1u);
  EXPECT_EQ(query[0].status, 400);
  EXPECT_EQ(query[0].Json()["error"], "invalid_request");
}

// A keep-alive connection gets room for a body before reading it (up to 16 KB) and gives back what is
// beyond 4 KB once a request is answered and nothing else waits in its buffer. Bodies larger and
// smaller than both, one after another and pipelined (the next requests already buffered when an
// answer goes out), each reach the downstream whole and in order.
TEST_F(HttpHardeningTest, BodiesOfEverySizeOnOneKeepAliveConnectionArriveWholeAndInOrder) {
  GatewayProcess& gw = Start(Config());
  RawClient c(gw.public_port());
  ASSERT_TRUE(c.connected());
  auto invoke = [this](size_t pad) {
    return Request("POST", "/v1/tools/crm.echo/invoke", "Host: x\r\nContent-Type: application/json\r\n",
                   R"({"input":{"pad":")" + std::string(pad, 'p') + R"("}})");
  };
  const std::vector<size_t> pads = {40000, 6000, 100, 20000, 30000, 5000, 10};
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(c.Send(invoke(pads[i])));
    const auto answers = c.ReadResponses(1);
    ASSERT_EQ(answers.size(), 1u) << i;
    EXPECT_EQ(answers[0].status, 200) << answers[0].body;
  }
  ASSERT_TRUE(c.Send(invoke(pads[4]) + invoke(pads[5]) + invoke(pads[6])));
  const auto pipelined = c.ReadResponses(3);
  ASSERT_EQ(pipelined.size(), 3u);
  for (const auto& a : pipelined) EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_FALSE(c.closed());
  const auto seen = crm_.requests();
  ASSERT_EQ(seen.size(), pads.size());
  for (size_t i = 0; i < pads.size(); ++i) {
    const json body = json::parse(seen[i].body, nullptr, false);
    ASSERT_TRUE(body.is_object() && body.contains("pad")) << i << ": " << seen[i].body.substr(0, 100);
    EXPECT_EQ(body["pad"].get<std::string>(), std::string(pads[i], 'p')) << i;
  }
}

TEST_F(HttpHardeningTest, ExpectContinueGetsA100BeforeTheBodyUnlessTheRequestIsRefusedFirst) {
  crm_.set_behavior([](const auto&) { return Reply{200, R"({"ok":true})"}; });
  GatewayProcess& gw = Start(Config("max_body_bytes = 4096\n"));
  const std::string body = R"({"input":{"pad":")" + std::string(2000, 'x') + "\"}}";
  RawClient c(gw.public_port());
  ASSERT_TRUE(
      c.Send(Request("POST", "/v1/tools/crm.ok/invoke",
                     "Host: x\r\nExpect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n")));
  // The interim answer comes before any body byte is sent (curl waits 1 s for it otherwise).
  c.ReadWhile([](const std::string& got) { return got.find("\r\n\r\n") != std::string::npos; }, seconds(5));
  ASSERT_EQ(c.received(), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(c.Send(body));
  const auto final_answer = c.ReadResponses(1);
  ASSERT_EQ(final_answer.size(), 1u);
  EXPECT_EQ(final_answer[0].status, 200) << final_answer[0].body;

  // Too large: the 413 comes at once, without a 100.
  RawClient big(gw.public_port());
  ASSERT_TRUE(big.Send(
      Request("POST", "/v1/tools/crm.ok/invoke", "Host: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n")));
  const auto refused = big.ReadResponses(1);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].status, 413);
  EXPECT_EQ(big.received().find("100 Continue"), std::string::npos);
  // Refused for its framing: no 100 either.
  RawClient hostless(gw.public_port());
  ASSERT_TRUE(
      hostless.Send(Request("POST", "/v1/tools/crm.ok/invoke", "Expect: 100-continue\r\nContent-Length: 10\r\n")));
  const auto no_host = hostless.ReadResponses(1);
  ASSERT_EQ(no_host.size(), 1u);
  EXPECT_EQ(no_host[0].status, 400);
  EXPECT_EQ(hostless.received().find("100 Continue"), std::string::npos);
  EXPECT_EQ(crm_.total(), 1);
}

// ---- connection caps and descriptor exhaustion -------------------------------------------------

TEST_F(HttpHardeningTest, AtTheConnectionCapNewClientsGetA503AtOnceAndTheAdminListenerStillServes) {
  // Started with a soft descriptor limit of 256 (when the hard limit is higher).
  const bool can_lower = DescriptorLimitOf(getpid()).rlim_max > 512;
  std::unique_ptr<ScopedSoftDescriptorLimit> low;
  if (can_lower) low = std::make_unique<ScopedSoftDescriptorLimit>(256);
  GatewayProcess& gw = Start(Config("max_connections = 20\n"));
  low.reset();
  if (can_lower) {
    // Started with a soft limit of 256, toolgate raised it to the hard limit and said so.
    EXPECT_EQ(DescriptorLimitOf(gw.pid()).rlim_cur, DescriptorLimitOf(gw.pid()).rlim_max);
    EXPECT_THAT(gw.Log(), ::testing::HasSubstr("raised the soft limit from 256"));
  }
  if (!DescriptorsReadable(gw.pid())) GTEST_SKIP() << kDescriptorsUnreadable;
  const int fds_before = OpenSockets(gw.pid());
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 20; ++i) {
    idle.push_back(std::make_unique<RawClient>(gw.public_port()));
    ASSERT_TRUE(idle.back()->connected());
  }
  // The twenty idle connections take every place; wait (bounded) until toolgate has accepted them.
  for (int i = 0; i < 250 && OpenSockets(gw.pid()) < fds_before + 20; ++i)
    std::this_thread::sleep_for(milliseconds(20));
  const int base_fds = OpenSockets(gw.pid());
  ASSERT_GE(base_fds, fds_before + 20);
  std::vector<std::unique_ptr<RawClient>> over;
  const double cpu_before = CpuSeconds(gw.pid());
  const auto window_start = Clock::now();
  for (int i = 0; i < 30; ++i) {
    over.push_back(std::make_unique<RawClient>(gw.public_port()));
    ASSERT_TRUE(over.back()->connected());
  }
  for (auto& c : over) {
    const auto answers = c->ReadResponses(1, seconds(2));
    ASSERT_EQ(answers.size(), 1u) << "a client over the cap got no answer";
    EXPECT_EQ(answers[0].status, 503);
    EXPECT_EQ(answers[0].Json()["error"], "too_many_connections");
    EXPECT_EQ(answers[0].Header("retry-after"), "1");
    EXPECT_EQ(answers[0].Header("connection"), "close");
    EXPECT_TRUE(c->ReadUntilClose(seconds(2))) << "the refused connection is closed";
  }
  // The operators' listener has its own cap: it answers while the public one is full.
  auto admin = gw.Admin("GET", "/admin/connectors");
  ASSERT_EQ(admin.status, 200) << admin.body;
  EXPECT_EQ(Body(admin)["connectors"][0]["breaker"]["state"], "CLOSED");
  // Holding the cap costs no CPU: measured over two seconds of it.
  std::this_thread::sleep_until(window_start + seconds(2));
  const double cpu_used = CpuSeconds(gw.pid()) - cpu_before;
  std::printf("CPU seconds used by toolgate in 2 s at the connection cap: %.3f\n", cpu_used);
  if (!testing::kSanitizedBuild) {  // the sanitizers' own CPU makes the figure meaningless
    EXPECT_LT(cpu_used, 0.5);
  }
  EXPECT_LE(OpenSockets(gw.pid()), base_fds + 4) << "refused connections are closed, not kept";
  idle.clear();
  over.clear();
  // Once the idle clients leave, the listener serves again (the server notices each close at once).
  std::optional<api::ClientResult> health;
  for (int i = 0; i < 50 && (!health || health->status != 200); ++i) {
    health = gw.Public("GET", "/healthz");
    if (health->status != 200) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(health->status, 200) << health->body;
}

TEST_F(HttpHardeningTest, DescriptorExhaustionIsBackedOffInsteadOfSpinningAndServingResumes) {
  if (testing::kSanitizedBuild) GTEST_SKIP() << kNoDescriptorsUnderSanitizers;
  // Four event loops: connections are accepted onto each in turn, so while descriptors are short
  // the accept is retried onto loops that have not served a connection yet.
  GatewayProcess& gw = Start(Config("io_threads = 4\n"));
  if (!DescriptorsReadable(gw.pid())) GTEST_SKIP() << kDescriptorsUnreadable;
  const rlim_t original = DescriptorLimitOf(gw.pid()).rlim_cur;
  // Leave toolgate four spare descriptors, then open more idle connections than that.
  SetSoftDescriptorLimit(gw.pid(), static_cast<rlim_t>(OpenDescriptors(gw.pid()) + 4));
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 40; ++i) {
    idle.push_back(std::make_unique<RawClient>(gw.public_port()));
    ASSERT_TRUE(idle.back()->connected());  // the kernel completes the handshake; toolgate cannot accept
  }
  const double cpu_before = CpuSeconds(gw.pid());
  std::this_thread::sleep_for(seconds(2));
  const double cpu_used = CpuSeconds(gw.pid()) - cpu_before;
  std::printf("CPU seconds used by toolgate in 2 s of descriptor exhaustion: %.3f\n", cpu_used);
  EXPECT_LT(cpu_used, 0.5);
  const std::string log = gw.Log();
  EXPECT_GE(CountLines(log, "accept failed"), 1) << log;
  EXPECT_LE(CountLines(log, "accept failed"), 4) << "logged at most once a second:\n" << log;
  // Descriptors come back: the connections waiting in the backlog are served within the back-off's
  // longest wait (1 s).
  SetSoftDescriptorLimit(gw.pid(), original);
  RawClient& waiting = *idle.back();
  ASSERT_TRUE(waiting.Send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  const auto answers = waiting.ReadResponses(1, seconds(5));
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].status, 200);
  idle.clear();
  EXPECT_EQ(gw.Public("GET", "/healthz").status, 200);
}

TEST_F(HttpHardeningTest, AnExplicitCapTheDescriptorLimitCannotHoldIsRefusedAtStart) {
  GatewayProcess gw(Config("max_connections = 5000\n"), dir_);
  setenv("TOOLGATE_JWT_SECRET", testing::kJwtSecret, 1);  // as GatewayProcess::Start does
  const std::string err = dir_.file("refused.err");
  testing::ChildProcess p(
      {"/bin/sh", "-c", "ulimit -n 1024 && exec \"$0\" serve --config \"$1\"", TOOLGATE_BINARY, gw.config_path()}, err);
  ASSERT_TRUE(p.started());
  const auto started = Clock::now();
  if (auto line = p.ReadLine(seconds(20))) {
    p.Kill();
    p.Wait();
    FAIL() << "toolgate started with a cap its descriptor limit cannot hold: " << *line;
  }
  if (Clock::now() - started >= seconds(20)) p.Kill();  // hung: neither started nor refused
  const int status = p.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  std::ifstream in(err);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, ::testing::HasSubstr("server.max_connections"));
  EXPECT_THAT(text, ::testing::HasSubstr("1024"));
}

// The engine's half: a downstream connect that fails for want of descriptors must be DEFERRED
// gateway_overloaded and never count toward the breaker (HttpConnector maps the client's
// local_resource_error to kLocalResource).
TEST_F(HttpHardeningTest, ALocalDescriptorShortageNeverOpensTheBreaker) {
  if (testing::kSanitizedBuild) GTEST_SKIP() << kNoDescriptorsUnderSanitizers;
  GatewayProcess& gw = Start(Config("", "", "[store]\nbackend = \"memory\"\n"));
  RawClient keep(gw.public_port());
  ASSERT_TRUE(keep.Send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_EQ(keep.ReadResponses(1).size(), 1u);
  const rlim_t original = DescriptorLimitOf(gw.pid()).rlim_cur;
  SetSoftDescriptorLimit(gw.pid(), 0);  // no new descriptor at all: every downstream connect fails with EMFILE
  std::vector<RawResponse> answers;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(keep.Send(Request("POST", "/v1/tools/crm.update/invoke", "Host: x\r\n", R"({"input":{}})")));
  }
  answers = keep.ReadResponses(5, seconds(10));
  SetSoftDescriptorLimit(gw.pid(), original);
  ASSERT_EQ(answers.size(), 5u);
  for (const auto& a : answers) {
    EXPECT_EQ(a.status, 503) << a.body;
    EXPECT_EQ(a.Json()["outcome"], "DEFERRED");
    EXPECT_EQ(a.Json()["reason"], "gateway_overloaded");
  }
  auto admin = gw.Admin("GET", "/admin/connectors");
  ASSERT_EQ(admin.status, 200);
  EXPECT_EQ(Body(admin)["connectors"][0]["breaker"]["state"], "CLOSED");
  EXPECT_EQ(crm_.total(), 0);
}

// ---- slow readers ---------------------------------------------------------------------------------

// Bytes toolgate's sockets on `port` hold that their clients have not acknowledged (the kernel's
// send queues: /proc/net/tcp's tx_queue), summed.
int64_t UnacknowledgedBytes(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the column names
  int64_t sum = 0;
  char local_port[8];
  std::snprintf(local_port, sizeof local_port, ":%04X", port);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string slot, local, remote, state, queues;
    f >> slot >> local >> remote >> state >> queues;
    if (local.size() < 5 || local.compare(local.size() - 5, 5, local_port) != 0 || state != "01") continue;
    sum += std::stoll(queues.substr(0, queues.find(':')), nullptr, 16);
  }
  return sum;
}

TEST_F(HttpHardeningTest, SlowReadersOfALargeExecutionHoldAtMostTheResponseBudget) {
  // Under the sanitizers toolgate needs minutes for the 300 answers, so none is slow next to the
  // write timeout, and its memory is the sanitizers'.
  if (testing::kSanitizedBuild) GTEST_SKIP() << "timing and memory figures mean nothing under the sanitizers";
  // A result of about 1 MB: a thousand strings of a thousand bytes.
  json rows = json::array();
  for (int i = 0; i < 1000; ++i) rows.push_back(std::string(1000, static_cast<char>('a' + i % 26)));
  const std::string big = json{{"rows", rows}}.dump();
  crm_.set_behavior([big](const auto&) { return Reply{200, big}; });
  // Building each answer reads, parses and serialises the 1 MB item on a store thread, and glibc
  // keeps each thread's arena at its peak: that working set grows with store_threads whether the
  // clients read or not (300 clients that read at once: +100 MB with 16 threads, +23 MB with 4).
  // Four keep it small, so that what is measured is what the slow readers hold.
  // A 16 MB budget (the smallest the connector's 4 MB answers allow, ×4) fills with 16 answers, so it
  // is reached within the write timeout even on a loaded machine that builds answers slowly.
  constexpr int64_t kBudget = 16 << 20;
  GatewayProcess& gw = Start(Config(
      "write_timeout_ms = 3000\nstore_threads = 4\nmax_response_buffer_bytes = " + std::to_string(kBudget) + "\n"));
  auto invoked = gw.Invoke("crm.export", {{"input", json::object()}}, alice_);
  ASSERT_EQ(invoked.status, 200) << invoked.body;
  const std::string id = Body(invoked)["execution_id"];
  const std::string get =
      "GET /v1/executions/" + id + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + alice_ + "\r\n\r\n";
  auto first = gw.Public("GET", "/v1/executions/" + id, "", alice_);
  ASSERT_EQ(first.status, 200);
  const size_t full_size = first.body.size();
  ASSERT_GT(full_size, 1'000'000u);
  const int64_t baseline_kb = ProcStatusKb(gw.pid(), "VmRSS");

  // Clients that ask and never read, with a small receive window (as a slow mobile client has).
  constexpr int kReaders = 300;
  std::vector<std::unique_ptr<RawClient>> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.push_back(std::make_unique<RawClient>(gw.public_port(), 4096));
    ASSERT_TRUE(readers.back()->connected());
    ASSERT_TRUE(readers.back()->Send(get));
  }
  // Sampled until the write timeout has passed for every one of them.
  // The send queues are sampled only before the first write timeout can pass: /proc/net/tcp is read
  // line by line, not at one instant, so once answers are reset and others take their bytes, one
  // read can count both.
  int64_t peak_kb = 0, peak_unacknowledged = 0;
  const auto first_timeout = Clock::now() + milliseconds(2800);
  for (const auto until = Clock::now() + seconds(4); Clock::now() < until;) {
    peak_kb = std::max(peak_kb, ProcStatusKb(gw.pid(), "VmRSS"));
    if (Clock::now() < first_timeout) {
      peak_unacknowledged = std::max(peak_unacknowledged, UnacknowledgedBytes(gw.public_port()));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  peak_kb = std::max(peak_kb, ProcStatusKb(gw.pid(), "VmHWM"));
  std::printf(
      "%d slow readers of a %zu-byte execution: toolgate RSS %lld kB before, peak %lld kB; peak bytes unread "
      "in its send queues %lld\n",
      kReaders, full_size, static_cast<long long>(baseline_kb), static_cast<long long>(peak_kb),
      static_cast<long long>(peak_unacknowledged));
  // What slow readers hold, in toolgate's memory or in its sockets' send queues, is bounded by the
  // budget, plus the small answers it does not count (a 503 each).
  EXPECT_GT(peak_unacknowledged, static_cast<int64_t>(full_size)) << "no answer was held: nothing was measured";
  EXPECT_LT(peak_unacknowledged, kBudget + kReaders * 1024);
  EXPECT_LT(peak_kb, baseline_kb + kBudget / 1024 + 64 * 1024);
  // While they hold the budget, toolgate still answers.
  EXPECT_EQ(gw.Public("GET", "/healthz").status, 200);

  // What each got: 503 gateway_overloaded (the budget was full), the start of the 200, reset when
  // the write timeout passed before the client took it, or — for a late one whose turn came while
  // this loop reads — all of it. As timed-out answers give their bytes back, later ones take them:
  // the bound is on what is held at once (above), not on how many are answered.
  int overloaded = 0, cut_off = 0, complete = 0, other = 0;
  for (auto& r : readers) {
    r->ReadWhile(
        [full_size](const std::string& got) {
          return (got.rfind("HTTP/1.1 503", 0) == 0 && !ParseResponses(got).empty()) || got.size() > full_size;
        },
        seconds(5));
    const auto answers = ParseResponses(r->received());
    if (!answers.empty() && answers[0].status == 503) {
      EXPECT_EQ(answers[0].Json()["error"], "gateway_overloaded");
      EXPECT_EQ(answers[0].Header("retry-after"), "1");
      ++overloaded;
    } else if (!answers.empty() && answers[0].status == 200 && answers[0].body.size() == full_size) {
      ++complete;
    } else if (r->received().rfind("HTTP/1.1 200", 0) == 0 && r->closed()) {
      ++cut_off;
    } else {
      ++other;
      if (other < 3)
        std::printf("unexpected: %zu bytes, closed %d: %.80s\n", r->received().size(), r->closed(),
                    r->received().c_str());
    }
  }
  std::printf("slow readers: %d answered 503 gateway_overloaded, %d cut off by the write timeout, %d read in time\n",
              overloaded, cut_off, complete);
  EXPECT_GT(overloaded, 0);
  EXPECT_GT(cut_off, 0);
  EXPECT_EQ(other, 0);
  readers.clear();
  // The budget came back: a fresh client gets the execution.
  auto again = gw.Public("GET", "/v1/executions/" + id, "", alice_);
  EXPECT_EQ(again.status, 200) << again.body.substr(0, 200);
  EXPECT_EQ(again.body.size(), full_size);
}

// One large answer held for a client that does not read keeps its bytes from the budget until the
// write timeout resets it — also once the kernel has taken most of the answer — and meanwhile the
// next large answer is 503 gateway_overloaded. Small and deterministic, so it also runs under the
// sanitizers.
TEST_F(HttpHardeningTest, ALargeAnswerHoldsTheBudgetUntilDeliveredOrResetAndTheNextIsOverloaded) {
  json rows = json::array();
  for (int i = 0; i < 600; ++i) rows.push_back(std::string(1000, 'r'));
  const std::string big = json{{"rows", rows}}.dump();  // about 600 KB: one fits the 1 MiB budget, two do not
  crm_.set_behavior([big](const auto&) { return Reply{200, big}; });
  // A write timeout the slow instrumented builds cannot outrun before the second answer is loaded.
  GatewayProcess& gw = Start(Config("write_timeout_ms = 8000\nmax_response_buffer_bytes = 1048576\n", "", "",
                                    "max_response_bytes = 1048576\n"));
  auto invoked = gw.Invoke("crm.export", {{"input", json::object()}}, alice_);
  ASSERT_EQ(invoked.status, 200) << invoked.body;
  const std::string id = Body(invoked)["execution_id"];

  // The budget the answer above held comes back when toolgate sees it delivered, polled up to 100 ms
  // later (and on another event loop than this connection's, perhaps): a request that comes first is
  // answered 503 itself, and is sent again on a fresh connection. A 200's status line is proof enough
  // that its answer holds the budget: it was reserved before the first byte was written, and the
  // client reads no more than that line's few kilobytes, so the rest of it stays undelivered however
  // large the kernel lets toolgate's send queue grow and however slow the build. Bounded by the clock.
  std::unique_ptr<RawClient> held;
  for (int attempt = 0; attempt < 10 && !held; ++attempt) {
    auto slow = std::make_unique<RawClient>(gw.public_port(), 4096);
    ASSERT_TRUE(slow->Send("GET /v1/executions/" + id + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + alice_ +
                           "\r\n\r\n"));
    slow->ReadWhile([](const std::string& got) { return got.size() >= 12; }, seconds(20));
    ASSERT_GE(slow->received().size(), 12u) << "no answer: " << slow->received();
    if (slow->received().rfind("HTTP/1.1 200", 0) == 0) {
      held = std::move(slow);
      break;
    }
    // Not held: only an early 503 may explain it.
    slow->ReadWhile([](const std::string& got) { return !ParseResponses(got).empty(); }, seconds(2));
    const auto answers = ParseResponses(slow->received());
    ASSERT_FALSE(answers.empty()) << "neither held nor answered: " << slow->received().substr(0, 200);
    ASSERT_EQ(answers[0].status, 503) << slow->received().substr(0, 200);
    std::this_thread::sleep_for(milliseconds(200));
  }
  ASSERT_TRUE(held) << "the budget never came back from the first answer";
  RawClient& slow = *held;
  auto overloaded = gw.Public("GET", "/v1/executions/" + id, "", alice_);
  EXPECT_EQ(overloaded.status, 503) << overloaded.body.substr(0, 200);
  EXPECT_EQ(Body(overloaded)["error"], "gateway_overloaded");
  EXPECT_EQ(HeaderOf(overloaded, "retry-after"), "1");
  // Once the kernel has taken most of the answer (toolgate wrote it all, the client still reads
  // nothing), the budget is still held: it comes back on delivery, not when the write completes.
  // How much the kernel takes depends on its buffer tuning and the build's speed, so this part is
  // checked when it gets there (it does here in the plain builds), before the write timeout.
  const auto give_up = std::chrono::steady_clock::now() + seconds(3);  // well inside the 8 s write timeout
  while (std::chrono::steady_clock::now() < give_up && UnacknowledgedBytes(gw.public_port()) < 500'000) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  if (UnacknowledgedBytes(gw.public_port()) >= 500'000) {
    auto still = gw.Public("GET", "/v1/executions/" + id, "", alice_);
    EXPECT_EQ(still.status, 503) << "the budget came back when the kernel took the answer: "
                                 << still.body.substr(0, 200);
  } else {
    std::cerr << "note: the kernel took less than 500 KB of the answer within 3 s; that part is not checked\n";
  }
  // The write timeout resets the slow client's connection: the kernel drops what it held.
  for (int i = 0; i < 3000 && UnacknowledgedBytes(gw.public_port()) > 0; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(UnacknowledgedBytes(gw.public_port()), 0);
  slow.ReadUntilClose(seconds(5));
  EXPECT_TRUE(slow.closed());
  EXPECT_EQ(slow.received().rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_LT(slow.received().size(), big.size()) << "the slow client got the whole answer";
  // The budget came back.
  auto again = gw.Public("GET", "/v1/executions/" + id, "", alice_);
  EXPECT_EQ(again.status, 200) << again.body.substr(0, 200);
}

// A stop lets calls in flight finish and records them; it must also deliver their answers. It ended
// the event loops once the last call was recorded, so a large answer a client had not read yet was
// cut off with a reset — a call recorded SUCCEEDED that its client, told nothing, would send again.
// A stop now waits for every answer being delivered, up to write_timeout_ms.
TEST_F(HttpHardeningTest, AStopDeliversTheAnswersItsLastCallsGaveBeforeItEnds) {
  json rows = json::array();
  for (int i = 0; i < 600; ++i) rows.push_back(std::string(1000, 'r'));
  const std::string big = json{{"rows", rows}}.dump();  // ~600 KB: far more than the sockets' buffers hold
  crm_.set_behavior([big](const auto&) { return Reply{200, big, {}, 300}; });
  GatewayProcess& gw = Start(Config("write_timeout_ms = 20000\n", "", "", "max_response_bytes = 1048576\n"));
  RawClient slow(gw.public_port(), 4096);
  const std::string body = R"({"input":{}})";
  ASSERT_TRUE(slow.Send("POST /v1/tools/crm.export/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + alice_ +
                        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                        "\r\n\r\n" + body));
  for (int i = 0; i < 500 && crm_.total() == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  ASSERT_EQ(crm_.total(), 1);
  gw.SendTerminate();  // while the call is at the downstream
  // The answer's first bytes reach the client (its 4 KB receive buffer leaves most of the ~600 KB
  // unsent), so the call was recorded; the rest waits in the sockets, unread, well past that moment:
  // the stop ended the loops then, before.
  slow.ReadWhile([](const std::string& got) { return got.find("HTTP/1.1 200") != std::string::npos; }, seconds(20));
  ASSERT_NE(slow.received().find("HTTP/1.1 200"), std::string::npos) << "the answer never began";
  std::this_thread::sleep_for(milliseconds(1500));
  slow.ReadWhile([](const std::string& got) { return !ParseResponses(got).empty(); }, seconds(20));
  const auto answers = ParseResponses(slow.received());
  ASSERT_EQ(answers.size(), 1u) << slow.received().size() << " bytes: " << slow.received().substr(0, 200);
  EXPECT_EQ(answers[0].status, 200);
  EXPECT_EQ(answers[0].Json()["outcome"], "SUCCEEDED");
  EXPECT_EQ(answers[0].Json()["result"], json::parse(big));
  EXPECT_EQ(gw.AwaitExit(), 0);
}

// ---- the client's local resource errors ------------------------------------------------------------

TEST(HttpClientTest, AConnectThatFailsForWantOfDescriptorsIsALocalResourceErrorAndSendsNothing) {
  if (testing::kSanitizedBuild) GTEST_SKIP() << kNoDescriptorsUnderSanitizers;
  namespace asio = boost::asio;
  asio::io_context io;
  {
    // The event loop's own descriptors (epoll, its interrupter and timer) are made on first use.
    asio::ip::tcp::socket warm(io);
    warm.open(asio::ip::tcp::v4());
    asio::steady_timer timer(io);
  }
  api::ClientRequest request;
  request.address = {"127.0.0.1", 1};
  request.timeout = seconds(2);
  std::future<api::ClientResult> f = asio::co_spawn(io, api::AsyncHttpCall(request), asio::use_future);
  {
    ScopedSoftDescriptorLimit none(0);  // no new descriptor for this process
    io.run();
  }
  const api::ClientResult r = f.get();
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.local_resource_error) << r.error;
  EXPECT_FALSE(r.connected);
  EXPECT_FALSE(r.sent);
  EXPECT_THAT(r.error, ::testing::HasSubstr("open files"));

  // A refused connection is the downstream's answer, not a local shortage.
  const api::ClientResult refused = api::HttpCall(request);
  EXPECT_FALSE(refused.ok);
  EXPECT_FALSE(refused.local_resource_error) << refused.error;
}

TEST(HttpClientTest, LocalResourceErrorsAreTheFourErrnosOfThisHost) {
  namespace errc = boost::system::errc;
  for (int e : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) {
    EXPECT_TRUE(api::IsLocalResourceError(boost::system::error_code(e, boost::system::system_category()))) << e;
  }
  EXPECT_TRUE(api::IsLocalResourceError(boost::asio::error::no_descriptors));
  EXPECT_TRUE(api::IsLocalResourceError(boost::asio::error::no_buffer_space));
  EXPECT_TRUE(api::IsLocalResourceError(boost::asio::error::no_memory));
  for (int e : {ECONNREFUSED, ETIMEDOUT, ECONNRESET, EHOSTUNREACH, EADDRNOTAVAIL}) {
    EXPECT_FALSE(api::IsLocalResourceError(boost::system::error_code(e, boost::system::system_category()))) << e;
  }
  EXPECT_FALSE(api::IsLocalResourceError(boost::system::error_code()));
}

// A call in flight holds its input until the downstream answers; bodies over 64 KiB take their size
// from the process's request budget while they are served, and one the budget cannot hold is 503
// gateway_overloaded before anything is parsed or sent. Small bodies never ask the budget.
TEST_F(HttpHardeningTest, ALargeInputHoldsTheRequestBudgetWhileItsCallRunsAndTheNextIsOverloaded) {
  crm_.set_behavior([](const auto& r) {
    return r.body.size() > 100'000 ? Reply{200, R"({"ok":true})", {}, 1800} : Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start(Config("max_request_buffer_bytes = 1048576\n"));  // the least: one max_body_bytes
  const std::string input = json{{"input", {{"text", std::string(600'000, 'x')}}}}.dump();  // two do not fit
  const std::string call = Request("POST", "/v1/tools/crm.export/invoke",
                                   "Host: x\r\nConnection: close\r\nContent-Type: application/json\r\n", input);

  RawClient first(gw.public_port());
  ASSERT_TRUE(first.Send(call));
  ASSERT_TRUE(WaitUntil([&] { return crm_.concurrent() == 1; }, seconds(20))) << "the first call never arrived";
  auto refused = Exchange(gw.public_port(), call);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].status, 503) << refused[0].body.substr(0, 200);
  EXPECT_EQ(json::parse(refused[0].body, nullptr, false).value("error", ""), "gateway_overloaded");
  EXPECT_EQ(refused[0].Header("retry-after"), "1");
  EXPECT_EQ(crm_.total(), 1) << "the refused call reached the downstream";
  // A small call is not held back by the full budget.
  auto small = gw.Invoke("crm.export", {{"input", {{"text", "hi"}}}}, alice_);
  EXPECT_EQ(small.status, 200) << small.body;

  const auto answers = first.ReadResponses(1, seconds(20));
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].status, 200) << answers[0].body.substr(0, 200);
  // The first call's budget came back with its answer.
  auto again = Exchange(gw.public_port(), call);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].status, 200) << again[0].body.substr(0, 200);
  EXPECT_EQ(crm_.total(), 3);
}

// A body of more JSON values than toolgate's API takes (100,000) is refused before it is parsed, on
// /v1 and on /mcp: a parsed value costs 8-20 times its text. At the limit it is served.
TEST_F(HttpHardeningTest, ABodyOfMoreJsonValuesThanTheLimitIsRefusedBeforeItIsParsed) {
  GatewayProcess& gw = Start(Config());
  // {"input":{"a":[0,...]}}: the body, its input, a, and the elements.
  auto numbers = [](int n) {
    std::string a = "[0";
    for (int i = 1; i < n; ++i) a += ",0";
    return a + "]";
  };
  const std::string at_limit = R"({"input":{"a":)" + numbers(100'000 - 3) + "}}";
  const std::string over = R"({"input":{"a":)" + numbers(100'000 - 2) + "}}";
  const std::string headers = "Host: x\r\nConnection: close\r\nContent-Type: application/json\r\n";
  auto served = Exchange(gw.public_port(), Request("POST", "/v1/tools/crm.export/invoke", headers, at_limit));
  ASSERT_EQ(served.size(), 1u);
  EXPECT_EQ(served[0].status, 200) << served[0].body.substr(0, 300);
  auto refused = Exchange(gw.public_port(), Request("POST", "/v1/tools/crm.export/invoke", headers, over));
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].status, 400);
  const json error = json::parse(refused[0].body, nullptr, false);
  EXPECT_EQ(error.value("error", ""), "invalid_json");
  EXPECT_NE(error.value("message", "").find("more than 100000 JSON values"), std::string::npos) << refused[0].body;
  EXPECT_EQ(crm_.total(), 1);

  const std::string mcp = R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"crm.export",)"
                          R"("arguments":{"a":)" +
                          numbers(100'000) + "}}}";
  auto mcp_refused = Exchange(
      gw.public_port(),
      Request("POST", "/mcp",
              headers + "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n", mcp));
  ASSERT_EQ(mcp_refused.size(), 1u);
  EXPECT_EQ(mcp_refused[0].status, 400);
  const json rpc = json::parse(mcp_refused[0].body, nullptr, false);
  EXPECT_EQ(rpc["error"].value("code", 0), -32700) << mcp_refused[0].body;
  EXPECT_NE(rpc["error"].value("message", "").find("more than 100000 JSON values"), std::string::npos);
  EXPECT_EQ(crm_.total(), 1);
}

// A body that repeats a key means the last to toolgate's parser and may mean the first to a proxy or
// filter in front (a WAF that checks `input.to`): refused on `/v1` and `/mcp`, never run.
TEST_F(HttpHardeningTest, ABodyThatRepeatsAKeyIsRefusedAndNeverRun) {
  GatewayProcess& gw = Start(Config());
  const std::string headers = "Host: x\r\nConnection: close\r\nContent-Type: application/json\r\n";
  for (const std::string body :
       {R"({"input":{"to":"a@example.com","to":"b@example.com"}})", R"({"input":{},"input":{"to":"b@example.com"}})"}) {
    auto refused = Exchange(gw.public_port(), Request("POST", "/v1/tools/crm.export/invoke", headers, body));
    ASSERT_EQ(refused.size(), 1u);
    EXPECT_EQ(refused[0].status, 400) << body;
    const json error = json::parse(refused[0].body, nullptr, false);
    EXPECT_EQ(error.value("error", ""), "invalid_json") << refused[0].body;
    EXPECT_NE(error.value("message", "").find("repeats a key"), std::string::npos) << refused[0].body;
  }
  const std::string mcp = R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"crm.export",)"
                          R"("name":"crm.other","arguments":{}}})";
  auto mcp_refused = Exchange(
      gw.public_port(),
      Request("POST", "/mcp",
              headers + "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n", mcp));
  ASSERT_EQ(mcp_refused.size(), 1u);
  EXPECT_EQ(mcp_refused[0].status, 400) << mcp_refused[0].body;
  const json rpc = json::parse(mcp_refused[0].body, nullptr, false);
  EXPECT_EQ(rpc["error"].value("code", 0), -32600) << mcp_refused[0].body;
  EXPECT_EQ(crm_.total(), 0) << "a body that means two things never reached the downstream";
  auto fine = Exchange(gw.public_port(), Request("POST", "/v1/tools/crm.export/invoke", headers,
                                                 R"({"input":{"a":{"to":1},"b":{"to":2}}})"));
  ASSERT_EQ(fine.size(), 1u);
  EXPECT_EQ(fine[0].status, 200) << "the same key in two objects is no repeat";
}

// A call in flight holds its input as text, a few times over (the record, the downstream request,
// the bytes on the wire), and no parsed tree of it: 20 calls of 200 KB of small numbers each grew
// the resident set by ~40x their bodies while they ran (a tree costs ~8x the text, and there were
// four); now by a few times. Read from outside, in /proc.
TEST_F(HttpHardeningTest, LargeInputsInFlightCostAFewTimesTheirTextNotTheirParsedTrees) {
  if (testing::kSanitizedBuild) GTEST_SKIP() << "memory figures mean nothing under the sanitizers";
  crm_.set_behavior([](const auto& r) {
    return r.body.size() > 100'000 ? Reply{200, R"({"ok":true})", {}, 1800} : Reply{200, R"({"ok":true})"};
  });
  GatewayProcess& gw = Start(Config());
  std::string numbers = "[0";
  for (int i = 1; i < 99'000; ++i) numbers += ",0";
  const std::string body = R"({"input":{"a":)" + numbers + "]}}";
  const std::string call = Request("POST", "/v1/tools/crm.export/invoke",
                                   "Host: x\r\nConnection: close\r\nContent-Type: application/json\r\n", body);
  auto warm = Exchange(gw.public_port(), call);  // the allocator's caches and the store's pages, warmed
  ASSERT_EQ(warm.size(), 1u);
  ASSERT_EQ(warm[0].status, 200) << warm[0].body.substr(0, 200);
  const int64_t baseline_kb = ProcStatusKb(gw.pid(), "VmRSS");

  constexpr int kCalls = 20;
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kCalls; ++i) {
    clients.push_back(std::make_unique<RawClient>(gw.public_port()));
    ASSERT_TRUE(clients.back()->Send(call));
  }
  ASSERT_TRUE(WaitUntil([&] { return crm_.concurrent() == kCalls; }, seconds(20)))
      << crm_.concurrent() << " of " << kCalls << " calls reached the downstream";
  int64_t peak_kb = 0;
  for (int i = 0; i < 25; ++i) {
    peak_kb = std::max(peak_kb, ProcStatusKb(gw.pid(), "VmRSS"));
    std::this_thread::sleep_for(milliseconds(20));
  }
  for (auto& c : clients) {
    const auto answers = c->ReadResponses(1, seconds(20));
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_EQ(answers[0].status, 200) << answers[0].body.substr(0, 200);
  }
  const int64_t per_call_kb = (peak_kb - baseline_kb) / kCalls;
  std::printf("%d calls of a %zu-byte body in flight: RSS %lld kB before, peak %lld kB, %lld kB per call\n", kCalls,
              body.size(), static_cast<long long>(baseline_kb), static_cast<long long>(peak_kb),
              static_cast<long long>(per_call_kb));
  // ~7 MB each before (four trees of ~1.2 MB and the text six times over); 1.5-1.7 MB now. One tree
  // kept per call was measured at 2.76 MB: the bound lets the allocator's slack through, not a tree.
  EXPECT_LT(per_call_kb, 2250) << "a call in flight holds its input parsed, or more copies of its text";
}

}  // namespace
}  // namespace toolgate
