// The stdio transport of an MCP connector (`kind = "mcp_stdio"`, design §14): a child process per
// instance, newline-delimited JSON-RPC over its stdin and stdout.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/connectors/mcp_client.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate::mcp {

namespace asio = boost::asio;
using json = nlohmann::json;
using Kind = DownstreamResult::Kind;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kFirstBackoff{200};
constexpr milliseconds kMaxBackoff{30'000};
constexpr std::chrono::seconds kHealthyLifetime{60};
// A server that answers nothing — no message at all — while this many requests in a row time out is
// taken as frozen (alive, but stuck): it is killed and restarted like one that exited.
constexpr int kSilentTimeoutsBeforeRestart = 3;

// Everything the coroutines of one transport share; they hold it by shared_ptr, so it outlives the
// transport while one of them is still suspended.
struct StdioState : std::enable_shared_from_this<StdioState> {
  StdioState(const ConnectorConfig& c, const Clock& clk, asio::any_io_executor ex)
      : id(c.id), command(c.command), env(c.env), max_line(c.max_response_bytes), clock(clk), executor(std::move(ex)) {}

  struct Pending {
    std::shared_ptr<asio::steady_timer> timer;  // cancelled when the answer (or the end) comes
    std::optional<RpcOutcome> outcome;
    json progress_token;      // the request's `_meta.progressToken`, when `notify` listens
    NotificationSink notify;  // gets the notifications/progress naming it (log messages name no request)
  };

  std::function<void()> tools_changed;  // the transport's handler
  const std::string id;
  const std::vector<std::string> command;
  const std::map<std::string, std::string> env;
  const size_t max_line;
  const Clock& clock;
  asio::any_io_executor executor;

  pid_t pid = -1;
  std::unique_ptr<asio::posix::stream_descriptor> in;   // the child's stdin
  std::unique_ptr<asio::posix::stream_descriptor> out;  // the child's stdout
  uint64_t generation = 0;                              // one per child started
  std::chrono::steady_clock::time_point started_at{};
  std::chrono::steady_clock::time_point restart_at{};
  milliseconds backoff = kFirstBackoff;
  std::chrono::steady_clock::time_point last_heard{};       // the child's last JSON-RPC message
  int silent_timeouts = 0;                                  // requests timed out in a row with nothing heard
  std::map<std::string, std::shared_ptr<Pending>> pending;  // by the request id's JSON text
  std::deque<std::string> writes;
  size_t queued_bytes = 0;  // in `writes`
  bool writing = false;
  bool stopped = false;

  bool running() const { return pid > 0; }

  std::vector<std::string> ChildEnvironment() const {
    std::map<std::string, std::string> vars;
    for (const char* name : {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ"}) {
      if (const char* v = std::getenv(name)) vars[name] = v;
    }
    for (const auto& [k, v] : env) vars[k] = v;
    std::vector<std::string> out;
    for (const auto& [k, v] : vars) out.push_back(k + "=" + v);
    return out;
  }

  // Starts the child with pipes on its stdin and stdout. kConnectFailed when it cannot be started.
  RpcOutcome Spawn() {
    RpcOutcome result;
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0) return Failed(absl::StrCat("pipe: ", std::strerror(errno)));
    if (pipe2(from_child, O_CLOEXEC) != 0) {
      const int e = errno;
      close(to_child[0]);
      close(to_child[1]);
      return Failed(absl::StrCat("pipe: ", std::strerror(e)));
    }
    // Everything the child needs is built before fork: after it, only async-signal-safe calls.
    std::vector<std::string> env_strings = ChildEnvironment();
    std::vector<char*> argv, envp;
    for (const std::string& a : command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (std::string& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t child = fork();
    if (child < 0) {
      const int e = errno;
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
      return Failed(absl::StrCat("fork: ", std::strerror(e)));
    }
    if (child == 0) {
      // The server must not outlive toolgate (a crash or SIGKILL included).
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      // A group of its own, killed whole: a server started through a wrapper (`npx`, `uvx`, `sh -c`)
      // is the wrapper's child, which neither PDEATHSIG nor a kill of the wrapper reaches.
      setpgid(0, 0);
      dup2(to_child[0], STDIN_FILENO);
      dup2(from_child[1], STDOUT_FILENO);
      close_range(3, ~0U, 0);  // toolgate's sockets and files are not the server's
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execvpe(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    setpgid(child, child);  // as the child does: whichever runs first, the group exists before a kill
    close(to_child[0]);
    close(from_child[1]);
    fcntl(to_child[1], F_SETFL, fcntl(to_child[1], F_GETFL) | O_NONBLOCK);
    fcntl(from_child[0], F_SETFL, fcntl(from_child[0], F_GETFL) | O_NONBLOCK);
    pid = child;
    in = std::make_unique<asio::posix::stream_descriptor>(executor, to_child[1]);
    out = std::make_unique<asio::posix::stream_descriptor>(executor, from_child[0]);
    ++generation;
    started_at = clock.now_monotonic();
    silent_timeouts = 0;
    spdlog::info("connector {}: MCP server started (pid {}): {}", id, pid, command.front());
    asio::co_spawn(executor, ReadLoop(shared_from_this(), generation), asio::detached);
    return result;
  }

  static RpcOutcome Failed(std::string why) {
    RpcOutcome r;
    r.kind = Kind::kConnectFailed;
    r.error = std::move(why);
    return r;
  }

  // Reads the child's stdout line by line until it ends, then ends the child.
  static asio::awaitable<void> ReadLoop(std::shared_ptr<StdioState> self, uint64_t generation) {
    asio::streambuf buffer(self->max_line + 1);
    std::string why = "the MCP server closed its stdout";
    Kind kind = Kind::kConnectionLost;
    while (self->generation == generation && self->out) {
      boost::system::error_code ec;
      auto read_op = asio::async_read_until(*self->out, buffer, '\n', asio::redirect_error(asio::use_awaitable, ec));
      const size_t n = co_await std::move(read_op);
      if (self->generation != generation) co_return;
      if (ec) {
        if (ec == asio::error::not_found) {
          why = absl::StrCat("the MCP server wrote a line longer than ", self->max_line, " bytes");
          kind = Kind::kResponseInvalid;
        } else if (ec != asio::error::eof) {
          why = absl::StrCat("reading from the MCP server: ", ec.message());
        }
        break;
      }
      std::string line(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + n);
      buffer.consume(n);
      self->Dispatch(line);
    }
    if (self->generation == generation) self->ChildGone(kind, why);
  }

  void Dispatch(const std::string& line) {
    json m = ParseJsonWithin(line);
    if (!m.is_object()) return;  // a stray line (some servers log to stdout): skipped
    last_heard = clock.now_monotonic();
    silent_timeouts = 0;
    const bool has_id = m.contains("id") && !m["id"].is_null();
    if (m.contains("method")) {
      // The server asks something of toolgate (sampling, roots, ...): not offered.
      if (has_id && queued_bytes > max_line) {
        // Its requests come faster than it reads the answers: they would pile up without end.
        ChildGone(Kind::kResponseInvalid,
                  absl::StrCat("the MCP server sends requests without reading the answers (more than ", max_line,
                               " bytes wait to be written to its stdin)"));
        return;
      }
      if (has_id) {
        Send(json{{"jsonrpc", "2.0"},
                  {"id", m["id"]},
                  {"error", {{"code", -32601}, {"message", "not supported by toolgate"}}}}
                 .dump());
      }
      if (StringMember(m, "method") == "notifications/tools/list_changed" && tools_changed) tools_changed();
      if (!has_id && StringMember(m, "method") == "notifications/progress") {
        // One stream for every request: the token names the request (toolgate sends unique ones).
        for (auto& [key, p] : pending) {
          if (p->notify && IsProgressFor(m, p->progress_token)) {
            (void)p->notify(std::move(m));  // a line is bounded by max_response_bytes alone
            break;
          }
        }
      }
      return;  // other notifications are skipped
    }
    if (!has_id || !(m.contains("result") || m.contains("error"))) return;
    auto it = pending.find(m["id"].dump());
    if (it == pending.end()) return;  // a late answer to a request that timed out
    RpcOutcome outcome;
    outcome.message = std::move(m);
    it->second->outcome = std::move(outcome);
    it->second->timer->cancel();
    pending.erase(it);
  }

  void Send(std::string line) {
    line += '\n';
    queued_bytes += line.size();
    writes.push_back(std::move(line));
    if (!writing) {
      writing = true;
      asio::co_spawn(executor, WriteLoop(shared_from_this(), generation), asio::detached);
    }
  }

  static asio::awaitable<void> WriteLoop(std::shared_ptr<StdioState> self, uint64_t generation) {
    while (self->generation == generation && self->in && !self->writes.empty()) {
      boost::system::error_code ec;
      auto write_op = asio::async_write(*self->in, asio::buffer(self->writes.front()),
                                        asio::redirect_error(asio::use_awaitable, ec));
      co_await std::move(write_op);
      if (self->generation != generation) co_return;
      if (ec) {
        self->writing = false;
        self->ChildGone(Kind::kConnectionLost, absl::StrCat("writing to the MCP server: ", ec.message()));
        co_return;
      }
      self->queued_bytes -= self->writes.front().size();
      self->writes.pop_front();
    }
    if (self->generation == generation) self->writing = false;
  }

  // The child ended (or must): every request in flight is lost, the child is reaped, and the next
  // one starts after the backoff.
  void ChildGone(Kind kind, const std::string& why) {
    if (!running()) return;
    const pid_t gone = pid;
    pid = -1;
    ++generation;  // the loops of the old child end
    in.reset();
    out.reset();
    writes.clear();
    queued_bytes = 0;
    writing = false;
    // Its whole process group, before the leader is reaped (until then the group's id cannot be
    // another's): what the server started goes with it, even if the server itself has exited.
    kill(-gone, SIGKILL);
    kill(gone, SIGKILL);  // and the child itself, should its group not be its own: the wait below must end
    int status = 0;
    waitpid(gone, &status, 0);
    const auto lived = clock.now_monotonic() - started_at;
    backoff = lived >= kHealthyLifetime ? kFirstBackoff : std::min(kMaxBackoff, backoff * 2);
    restart_at = clock.now_monotonic() + backoff;
    if (!stopped) {
      spdlog::warn("connector {}: MCP server (pid {}) ended: {}; {} call(s) in flight lost; restart in {} ms", id, gone,
                   why, pending.size(), backoff.count());
    }
    for (auto& [request_id, p] : pending) {
      RpcOutcome lost;
      lost.kind = kind;
      lost.error = why;
      p->outcome = std::move(lost);
      p->timer->cancel();
    }
    pending.clear();
  }
};

class StdioTransport final : public McpTransport {
 public:
  StdioTransport(const ConnectorConfig& config, const Clock& clock, asio::any_io_executor executor)
      : state_(std::make_shared<StdioState>(config, clock, std::move(executor))) {
    state_->tools_changed = [this] { ToolsChanged(); };
    // A write to a child that just died must be an error (EPIPE), not the end of toolgate. Sockets
    // need nothing (Asio sends with MSG_NOSIGNAL); pipes raise SIGPIPE process-wide.
    signal(SIGPIPE, SIG_IGN);
  }
  ~StdioTransport() override { Stop(); }

  asio::awaitable<RpcOutcome> Connect(milliseconds timeout) override {
    std::shared_ptr<StdioState> keep = state_;
    StdioState& s = *keep;
    if (s.stopped) co_return StdioState::Failed("the connector is stopping");
    if (s.running()) co_return RpcOutcome{};
    auto now = s.clock.now_monotonic();
    // A restart due within the call's time: wait for it rather than fail the call.
    if (now < s.restart_at && s.restart_at - now < timeout / 2) {
      asio::steady_timer timer(s.executor, s.restart_at - now);
      boost::system::error_code ec;
      auto wait_op = timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      co_await std::move(wait_op);
      if (s.stopped) co_return StdioState::Failed("the connector is stopping");
      if (s.running()) co_return RpcOutcome{};
      now = s.clock.now_monotonic();
    }
    if (now < s.restart_at) {
      co_return StdioState::Failed(absl::StrCat("the MCP server is restarting (in ",
                                                std::chrono::duration_cast<milliseconds>(s.restart_at - now).count(),
                                                " ms)"));
    }
    RpcOutcome started = s.Spawn();
    if (started.kind != Kind::kResponse) {
      s.backoff = std::min(kMaxBackoff, s.backoff * 2);
      s.restart_at = now + s.backoff;
      spdlog::warn("connector {}: cannot start the MCP server: {}", s.id, started.error);
    }
    co_return started;
  }

  asio::awaitable<RpcOutcome> Request(const json& request, milliseconds timeout, NotificationSink notify) override {
    StdioState& s = *state_;
    std::shared_ptr<StdioState> keep = state_;
    if (!s.running()) co_return StdioState::Failed("the MCP server is not running");
    auto pending = std::make_shared<StdioState::Pending>();
    if (notify) {
      pending->progress_token = ProgressTokenOf(request);
      if (!pending->progress_token.is_null()) pending->notify = std::move(notify);
    }
    pending->timer = std::make_shared<asio::steady_timer>(s.executor);
    pending->timer->expires_after(timeout);
    const std::string key = request["id"].dump();
    s.pending[key] = pending;
    const auto sent_at = s.clock.now_monotonic();
    const uint64_t generation = s.generation;
    s.Send(request.dump(-1, ' ', false, json::error_handler_t::replace));
    boost::system::error_code ec;
    auto wait_op = pending->timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await std::move(wait_op);
    if (pending->outcome) co_return std::move(*pending->outcome);
    if (auto it = keep->pending.find(key); it != keep->pending.end() && it->second == pending) keep->pending.erase(it);
    if (keep->generation == generation && keep->last_heard < sent_at &&
        ++keep->silent_timeouts >= kSilentTimeoutsBeforeRestart) {
      keep->ChildGone(Kind::kConnectionLost, absl::StrCat("it answered nothing while ", keep->silent_timeouts,
                                                          " requests in a row timed out (frozen: killed)"));
    }
    RpcOutcome timed_out;
    timed_out.kind = Kind::kTimeout;
    timed_out.error = "no answer from the MCP server in time";
    co_return timed_out;
  }

  asio::awaitable<RpcOutcome> Notify(const json& notification, milliseconds) override {
    StdioState& s = *state_;
    if (!s.running()) co_return StdioState::Failed("the MCP server is not running");
    s.Send(notification.dump(-1, ' ', false, json::error_handler_t::replace));
    co_return RpcOutcome{};
  }

  uint64_t generation() const override { return state_->generation; }
  void Initialized(const std::string&) override {}
  void DropSession() override {}

  void Stop() override {
    StdioState& s = *state_;
    if (s.stopped) return;
    s.stopped = true;
    s.ChildGone(Kind::kConnectionLost, "the connector stopped");
  }

 private:
  std::shared_ptr<StdioState> state_;
};

}  // namespace

std::unique_ptr<McpTransport> MakeStdioTransport(const ConnectorConfig& config, const Clock& clock,
                                                 asio::any_io_executor executor) {
  return std::make_unique<StdioTransport>(config, clock, std::move(executor));
}

}  // namespace toolgate::mcp
