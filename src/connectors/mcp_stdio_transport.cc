// The stdio transport of an MCP connector (`kind = "mcp_stdio"`, design §14): a child process per
// instance, newline-delimited JSON-RPC over its stdin and stdout.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
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
#include "toolgate/domain/control_bytes.h"
#include "toolgate/domain/json_depth.h"
#include "toolgate/engine/event_log.h"

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
// taken as frozen (alive, but stuck): it is killed and restarted like one that exited. So is one
// that reads nothing of its stdin while this many requests in a row time out before their lines
// were written, whatever it sends meanwhile (notifications say nothing about whether it reads).
constexpr int kSilentTimeoutsBeforeRestart = 3;
// What a server writes to its stderr is logged a line at a time (it is the server's own log, and
// an untrusted one): each line cut at this length, and at most this many lines a second per
// connector; the rest are counted and the count logged.
constexpr size_t kMaxStderrLineBytes = 2048;
constexpr int kStderrLinesPerSecond = 20;

// Everything the coroutines of one transport share; they hold it by shared_ptr, so it outlives the
// transport while one of them is still suspended.
struct StdioState : std::enable_shared_from_this<StdioState> {
  StdioState(const ConnectorConfig& c, const Clock& clk, asio::any_io_executor ex)
      : id(c.id),
        command(c.command),
        env(c.env),
        max_line(c.max_response_bytes),
        max_queued(c.max_response_bytes),
        timeout(c.timeout_ms),
        clock(clk),
        executor(std::move(ex)) {}

  struct Pending {
    std::shared_ptr<asio::steady_timer> timer;  // cancelled when the answer (or the end) comes
    std::optional<RpcOutcome> outcome;
    json progress_token;      // the request's `_meta.progressToken`, when `notify` listens
    NotificationSink notify;  // gets the notifications/progress naming it (log messages name no request)
    uint64_t line_end = 0;    // where its line ends in the child's stdin (written_bytes), once all written
  };

  // A line waiting to be written to the child's stdin; `request` is null for a notification or an
  // answer to the server.
  struct Write {
    std::string line;
    std::shared_ptr<Pending> request;
  };

  std::function<void()> tools_changed;  // the transport's handler
  const std::string id;
  const std::vector<std::string> command;
  const std::map<std::string, std::string> env;
  const size_t max_line;
  // Bytes that may wait to be written to the child's stdin (its unread requests): beyond it a
  // request fails at once rather than piling up in toolgate's memory while the child does not read.
  const size_t max_queued;
  const milliseconds timeout;  // the connector's timeout_ms
  const Clock& clock;
  asio::any_io_executor executor;

  pid_t pid = -1;
  std::unique_ptr<asio::posix::stream_descriptor> in;   // the child's stdin
  std::unique_ptr<asio::posix::stream_descriptor> out;  // the child's stdout
  uint64_t generation = 0;                              // one per child started
  std::chrono::steady_clock::time_point started_at{};
  std::chrono::steady_clock::time_point restart_at{};
  milliseconds backoff = kFirstBackoff;
  std::chrono::steady_clock::time_point last_heard{};  // the child's last JSON-RPC message
  int silent_timeouts = 0;                             // requests timed out in a row with nothing heard
  int unread_timeouts = 0;  // requests timed out in a row before the child had read their line
  std::map<std::string, std::shared_ptr<Pending>> pending;  // by the request id's JSON text
  std::deque<Write> writes;                                 // not begun; the one being written is WriteLoop's
  size_t queued_bytes = 0;                                  // in `writes` and the line being written
  bool writing = false;
  uint64_t written_bytes = 0;                          // to this child's stdin
  std::chrono::steady_clock::time_point last_write{};  // since when the line being written waits for the pipe
  bool stopped = false;
  // The stderr rate limit (kStderrLinesPerSecond), per connector: the current second's lines.
  std::chrono::steady_clock::time_point stderr_window{};
  int stderr_lines = 0;
  int64_t stderr_dropped = 0;

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

  // Starts the child with pipes on its stdin, stdout and stderr. kConnectFailed when it cannot be
  // started.
  RpcOutcome Spawn() {
    RpcOutcome result;
    int to_child[2], from_child[2], err_from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0) return Failed(absl::StrCat("pipe: ", std::strerror(errno)));
    if (pipe2(from_child, O_CLOEXEC) != 0) {
      const int e = errno;
      close(to_child[0]);
      close(to_child[1]);
      return Failed(absl::StrCat("pipe: ", std::strerror(e)));
    }
    if (pipe2(err_from_child, O_CLOEXEC) != 0) {
      const int e = errno;
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
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
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1], err_from_child[0], err_from_child[1]}) {
        close(fd);
      }
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
      // Not toolgate's own stderr: what the server writes there would be lines of toolgate's log
      // (forged ones included) and bytes for the operator's terminal. It is read and logged as
      // the server's (StderrLoop).
      dup2(err_from_child[1], STDERR_FILENO);
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
    close(err_from_child[1]);
    for (int fd : {to_child[1], from_child[0], err_from_child[0]}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    pid = child;
    in = std::make_unique<asio::posix::stream_descriptor>(executor, to_child[1]);
    out = std::make_unique<asio::posix::stream_descriptor>(executor, from_child[0]);
    auto err = std::make_unique<asio::posix::stream_descriptor>(executor, err_from_child[0]);
    ++generation;
    written_bytes = 0;
    started_at = clock.now_monotonic();
    silent_timeouts = 0;
    unread_timeouts = 0;
    spdlog::info("connector {}: MCP server started (pid {}): {}", id, pid, command.front());
    asio::co_spawn(executor, ReadLoop(shared_from_this(), generation), asio::detached);
    asio::co_spawn(executor, StderrLoop(shared_from_this(), std::move(err)), asio::detached);
    return result;
  }

  // Logs the child's stderr a line at a time until its end (every process holding it gone: the
  // lines a server writes as it dies are read too), or until the connector stops.
  static asio::awaitable<void> StderrLoop(std::shared_ptr<StdioState> self,
                                          std::unique_ptr<asio::posix::stream_descriptor> err) {
    std::array<char, 4096> chunk;
    std::string line;
    bool cut = false;  // the line passed kMaxStderrLineBytes: the rest of it is skipped
    for (;;) {
      boost::system::error_code ec;
      auto read_op = err->async_read_some(asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, ec));
      const size_t n = co_await std::move(read_op);
      for (size_t i = 0; i < n; ++i) {
        if (chunk[i] == '\n') {
          if (!cut) self->LogStderrLine(line, false);
          line.clear();
          cut = false;
        } else if (!cut && line.size() == kMaxStderrLineBytes) {
          self->LogStderrLine(line, true);
          line.clear();
          cut = true;
        } else if (!cut) {
          line += chunk[i];
        }
      }
      if (ec) break;
    }
    if (!line.empty()) self->LogStderrLine(line, false);
    self->LogStderrDropped();
  }

  void LogStderrLine(const std::string& line, bool truncated) {
    const auto now = clock.now_monotonic();
    if (now - stderr_window >= std::chrono::seconds(1)) {
      LogStderrDropped();
      stderr_window = now;
      stderr_lines = 0;
    }
    if (++stderr_lines > kStderrLinesPerSecond) {
      ++stderr_dropped;
      return;
    }
    json fields = {{"connector", id}, {"stderr", Printable(line)}};
    if (truncated) fields["truncated"] = true;
    LogEvent(spdlog::level::info, "mcp_server_stderr", "MCP server stderr", std::move(fields));
  }

  void LogStderrDropped() {
    if (stderr_dropped == 0) return;
    LogEvent(spdlog::level::warn, "mcp_server_stderr_dropped",
             absl::StrCat("MCP server stderr: lines over ", kStderrLinesPerSecond, " a second not logged"),
             {{"connector", id}, {"dropped_lines", stderr_dropped}});
    stderr_dropped = 0;
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
      if (has_id && !Send(json{{"jsonrpc", "2.0"},
                               {"id", m["id"]},
                               {"error", {{"code", -32601}, {"message", "not supported by toolgate"}}}}
                              .dump())) {
        // Its requests come faster than it reads the answers: they would pile up without end.
        ChildGone(Kind::kResponseInvalid,
                  absl::StrCat("the MCP server sends requests without reading the answers (more than ", max_queued,
                               " bytes wait to be written to its stdin)"));
        return;
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
    unread_timeouts = 0;              // it reads its stdin
    if (it == pending.end()) return;  // a late answer to a request that timed out
    RpcOutcome outcome;
    outcome.message = std::move(m);
    it->second->outcome = std::move(outcome);
    it->second->timer->cancel();
    pending.erase(it);
  }

  // Queues `line` for the child's stdin. False, and nothing queued, when max_queued bytes already
  // wait (a line always fits an empty queue: a request the connector took can always be sent).
  bool Send(std::string line, std::shared_ptr<Pending> request = nullptr) {
    line += '\n';
    if (queued_bytes > 0 && queued_bytes + line.size() > max_queued) return false;
    queued_bytes += line.size();
    writes.push_back(Write{std::move(line), std::move(request)});
    if (!writing) {
      writing = true;
      asio::co_spawn(executor, WriteLoop(shared_from_this(), generation), asio::detached);
    }
    return true;
  }

  // A request's line that the child has not begun to read is taken back when the request ends
  // unanswered; one it has begun stays (the child would read half a frame).
  void Unsend(const std::shared_ptr<Pending>& request) {
    for (auto it = writes.begin(); it != writes.end(); ++it) {
      if (it->request == request) {
        queued_bytes -= it->line.size();
        writes.erase(it);
        return;
      }
    }
  }

  // Whether a line has waited for the child's stdin to take a byte for the connector's whole
  // timeout: the child has stopped reading.
  bool StoppedReading() const { return writing && clock.now_monotonic() - last_write >= timeout; }

  // Whether the child has read the whole line of `request` (not merely found it in the pipe).
  bool HasRead(const Pending& request) const {
    if (request.line_end == 0) return false;
    int in_pipe = 0;
    if (!in || ioctl(in->native_handle(), FIONREAD, &in_pipe) != 0) return true;  // cannot tell: no evidence
    return written_bytes - static_cast<uint64_t>(in_pipe) >= request.line_end;
  }

  static asio::awaitable<void> WriteLoop(std::shared_ptr<StdioState> self, uint64_t generation) {
    while (self->generation == generation && self->in && !self->writes.empty()) {
      // Out of the queue while it is written (so Unsend never takes half a line); the frame keeps it.
      Write w = std::move(self->writes.front());
      self->writes.pop_front();
      for (size_t done = 0; done < w.line.size();) {
        self->last_write = self->clock.now_monotonic();
        boost::system::error_code ec;
        auto write_op = self->in->async_write_some(asio::buffer(w.line.data() + done, w.line.size() - done),
                                                   asio::redirect_error(asio::use_awaitable, ec));
        const size_t n = co_await std::move(write_op);
        if (self->generation != generation) co_return;
        if (ec) {
          self->writing = false;
          self->ChildGone(Kind::kConnectionLost, absl::StrCat("writing to the MCP server: ", ec.message()));
          co_return;
        }
        done += n;
        self->written_bytes += n;
      }
      self->queued_bytes -= w.line.size();
      if (w.request) w.request->line_end = self->written_bytes;
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

  asio::awaitable<RpcOutcome> Request(const json& request, std::string text, milliseconds timeout,
                                      NotificationSink notify) override {
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
    if (!s.Send(std::move(text), pending)) {
      // The child does not read what it was sent: like a server that cannot be reached, nothing of
      // this request reached it. One that has read nothing for the whole timeout is frozen.
      s.pending.erase(key);
      const std::string why = absl::StrCat(
          "more than ", s.max_queued, " bytes wait to be written to the MCP server's stdin (it does not read them)");
      if (s.StoppedReading()) {
        s.ChildGone(Kind::kConnectionLost,
                    absl::StrCat(why, "; it has read nothing for ", s.timeout.count(), " ms (frozen: killed)"));
      }
      co_return StdioState::Failed(why);
    }
    boost::system::error_code ec;
    auto wait_op = pending->timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await std::move(wait_op);
    if (pending->outcome) co_return std::move(*pending->outcome);
    if (auto it = keep->pending.find(key); it != keep->pending.end() && it->second == pending) keep->pending.erase(it);
    if (keep->generation == generation) {
      // A line the child has not read is taken back if it can be, and says the child stopped
      // reading; a request timed out with nothing heard since says it stopped answering.
      const bool unread = !keep->HasRead(*pending);
      if (unread) keep->Unsend(pending);
      keep->unread_timeouts = unread ? keep->unread_timeouts + 1 : 0;
      if (keep->last_heard < sent_at) ++keep->silent_timeouts;
      if (keep->unread_timeouts >= kSilentTimeoutsBeforeRestart) {
        keep->ChildGone(Kind::kConnectionLost,
                        absl::StrCat("it read none of ", keep->unread_timeouts,
                                     " requests in a row before they timed out (frozen: killed)"));
      } else if (keep->silent_timeouts >= kSilentTimeoutsBeforeRestart) {
        keep->ChildGone(Kind::kConnectionLost, absl::StrCat("it answered nothing while ", keep->silent_timeouts,
                                                            " requests in a row timed out (frozen: killed)"));
      }
    }
    RpcOutcome timed_out;
    timed_out.kind = Kind::kTimeout;
    timed_out.error = "no answer from the MCP server in time";
    co_return timed_out;
  }

  asio::awaitable<RpcOutcome> Notify(const json& notification, milliseconds) override {
    StdioState& s = *state_;
    if (!s.running()) co_return StdioState::Failed("the MCP server is not running");
    if (!s.Send(notification.dump(-1, ' ', false, json::error_handler_t::replace))) {
      co_return StdioState::Failed(
          absl::StrCat("more than ", s.max_queued, " bytes wait to be written to the MCP server's stdin"));
    }
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
