// The HTTP request path end to end: raw bytes written to a real toolgate (memory store, both
// listeners on loopback, in this process so the sanitizers watch the server's code) and the answer
// read back. The first input byte picks the listener (even: public, odd: admin). What must hold:
// whatever arrives, an answer that comes is HTTP (1.0 or 1.1, as asked) with a status below 500 or one of toolgate's
// own 5xx (502, 503, 504, 501), never a crash, a hang past the timeouts, or a 500.
// And the framing rules (RFC 9112): when the first request's header, read here by a deliberately
// plain parser, has a Transfer-Encoding not ending in chunked, Transfer-Encoding with Content-Length
// or in HTTP/1.0, no Host in HTTP/1.1, two Host / Authorization / Content-Length headers, or %2F /
// %00 in its path, the answer is exactly one refusal (400, or 413/431/501 when a limit or coding
// is hit first) with Connection: close and no 100 Continue before it: nothing after it — a request
// hidden in the body — is ever answered.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "api/gateway.h"
#include "spdlog/spdlog.h"
#include "toolgate/clock.h"
#include "toolgate/config.h"

namespace {

struct Server {
  toolgate::SystemClock clock;
  std::unique_ptr<toolgate::api::Gateway> gateway;
  std::thread thread;
};

Server* g_server = nullptr;

// libFuzzer's own alarm (SIGALRM, for -timeout) interrupts system calls, and a socket call with a
// socket timeout fails with EINTR whatever SA_RESTART says (signal(7)): that once aborted a run as
// "the server died". So the socket is non-blocking, every call is retried on EINTR, and the waits
// are poll()s bounded by a deadline. A connection that cannot be made is retried (a loaded machine
// can drop a loopback SYN); only a server that takes none for kConnectTime ends the run — that is a
// finding (a listener that stopped accepting), reported with the reason of each failed attempt.
using SteadyClock = std::chrono::steady_clock;
constexpr std::chrono::seconds kExchangeTime{5};
constexpr std::chrono::seconds kConnectTime{15};  // under the -timeout of 20 s that scripts/fuzz.sh gives
constexpr std::chrono::milliseconds kConnectPause{50};

// Whether `fd` became ready for `events` (or reports an error the next call returns) before `deadline`.
bool WaitFor(int fd, short events, SteadyClock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
    if (left <= 0) return false;
    pollfd ready{fd, events, 0};
    const int n = poll(&ready, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

// One attempt to connect to the server before `deadline`: the socket, or -1 with errno's reason in `error`.
int TryConnect(int port, SteadyClock::time_point deadline, int& error) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    error = errno;
    return -1;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  error = 0;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    error = errno;
    if (error == EINPROGRESS || error == EINTR) {
      socklen_t length = sizeof error;
      if (!WaitFor(fd, POLLOUT, deadline)) {
        error = ETIMEDOUT;
      } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
        error = errno;
      }
    }
  }
  if (error == 0) return fd;
  close(fd);
  return -1;
}

int Connect(int port) {
  const SteadyClock::time_point started = SteadyClock::now(), give_up = started + kConnectTime;
  std::string reasons;
  for (int attempt = 1;; ++attempt) {
    int error = 0;
    const int fd = TryConnect(port, std::min(give_up, SteadyClock::now() + kExchangeTime), error);
    if (fd >= 0) return fd;
    if (attempt <= 10) reasons += std::string(reasons.empty() ? "" : "; ") + std::strerror(error);
    if (SteadyClock::now() + kConnectPause >= give_up) break;
    std::this_thread::sleep_for(kConnectPause);
  }
  int descriptors = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++descriptors;
    closedir(dir);
  }
  std::fprintf(stderr,
               "the server took no connection on port %d for %lld s (%s; %d descriptors open in this process)\n", port,
               static_cast<long long>(kConnectTime.count()), reasons.c_str(), descriptors - 2);
  std::abort();
}

std::string Exchange(int port, const uint8_t* data, size_t size) {
  const int fd = Connect(port);
  const SteadyClock::time_point deadline = SteadyClock::now() + kExchangeTime;
  size_t off = 0;
  while (off < size) {
    const ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN && WaitFor(fd, POLLOUT, deadline)) {
      continue;
    } else {
      break;  // the server may answer (413, 431) and close before reading everything
    }
  }
  shutdown(fd, SHUT_WR);
  std::string answer;
  char buf[8192];
  while (answer.size() <= (8 << 20)) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      answer.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN && WaitFor(fd, POLLIN, deadline)) {
      continue;
    } else {
      break;  // the server closed, or took longer than the exchange's time
    }
  }
  close(fd);
  return answer;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.erase(0, 1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

// Whether the first request of `input` breaks a framing rule the server must refuse it for. Only
// header blocks this plain reading is sure about count (CRLF lines, no folded lines, a well-formed
// request line); anything else is left to the general checks.
bool BreaksAFramingRule(std::string_view input) {
  const size_t end = input.find("\r\n\r\n");
  if (end == std::string_view::npos) return false;
  const std::string head(input.substr(0, end));
  std::vector<std::string> lines;
  for (size_t pos = 0;;) {
    const size_t e = head.find("\r\n", pos);
    lines.push_back(head.substr(pos, e == std::string::npos ? std::string::npos : e - pos));
    if (e == std::string::npos) break;
    pos = e + 2;
  }
  const std::string& request_line = lines[0];
  const size_t sp1 = request_line.find(' '), sp2 = request_line.rfind(' ');
  if (sp1 == std::string::npos || sp2 <= sp1 + 1 || request_line.find(' ', sp1 + 1) != sp2) return false;
  const std::string version = request_line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return false;
  int hosts = 0, authorizations = 0, lengths = 0, encodings = 0;
  std::vector<std::string> codings;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.empty() || line[0] == ' ' || line[0] == '\t' || line.find_first_of("\r\n") != std::string::npos)
      return false;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;  // malformed: the server refuses it anyway
    const std::string name = Lower(line.substr(0, colon)), value = line.substr(colon + 1);
    hosts += name == "host";
    authorizations += name == "authorization";
    lengths += name == "content-length";
    if (name != "transfer-encoding") continue;
    ++encodings;
    for (size_t pos = 0;;) {
      const size_t comma = value.find(',', pos);
      if (std::string c = Lower(Trim(value.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos)));
          !c.empty()) {
        codings.push_back(c);
      }
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  const std::string target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string path = Lower(target.substr(0, target.find('?')));
  return (encodings > 0 && (codings.empty() || codings.back() != "chunked" || lengths > 0 || version == "HTTP/1.0")) ||
         (hosts == 0 && version == "HTTP/1.1") || hosts > 1 || authorizations > 1 || lengths > 1 ||
         path.find("%2f") != std::string::npos || path.find("%00") != std::string::npos;
}

int CountOf(const std::string& s, std::string_view needle) {
  int n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
  return n;
}

// The framing rules' answer: one refusal, closing the connection, no 100 Continue before it.
void CheckRefusedAlone(const std::string& answer) {
  const int status = std::atoi(answer.c_str() + 9);
  const int responses = CountOf(answer, "\r\nServer: toolgate\r\n");
  const bool refusal = status == 400 || status == 413 || status == 431 || status == 501;
  if (!refusal || responses != 1 || answer.find("\r\nConnection: close\r\n") == std::string::npos) {
    std::fprintf(stderr, "a request breaking a framing rule was not refused alone (%d responses): %.2000s\n", responses,
                 answer.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  setenv("TOOLGATE_JWT_SECRET", "fuzz-secret-0123456789abcdef-0123456789abcdef", 1);
  auto config = toolgate::ParseConfig(R"(
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
request_timeout_ms = 1000
store_threads = 4
[admin]
listen = "127.0.0.1:0"
[store]
backend = "memory"
[slo]
evaluate_interval_ms = 1000
[connectors.crm]
base_url = "http://127.0.0.1:1"
timeout_ms = 500
max_in_flight = 4
[connectors.crm.breaker]
failure_threshold = 1000000
[tools."crm.send_email"]
action_type = "email.send"
)",
                                      "fuzz.toml");
  if (!config.ok()) std::abort();
  g_server = new Server;
  auto gw = toolgate::api::Gateway::Create(*config, g_server->clock);
  if (!gw.ok()) std::abort();
  g_server->gateway = std::move(*gw);
  if (!g_server->gateway->Start().ok()) std::abort();
  g_server->thread = std::thread([] { g_server->gateway->Run(); });
  // libFuzzer ends the process with exit(): stop the server first, so no server thread still runs
  // while the process's static objects are destroyed (ASan would report that as a use after free).
  std::atexit([] {
    g_server->gateway->Stop();
    g_server->thread.join();
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int port = data[0] % 2 == 0 ? g_server->gateway->public_port() : g_server->gateway->admin_port();
  const std::string answer = Exchange(port, data + 1, size - 1);
  if (answer.empty()) return 0;  // e.g. nothing that looked like a request: the server just closed
  // `Expect: 100-continue` is answered first with an interim 100; the final answer follows.
  constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  const std::string final_answer = answer.rfind(kContinue, 0) == 0 ? answer.substr(kContinue.size()) : answer;
  if (final_answer.empty()) return 0;  // the client stopped sending: the server gave up waiting for the body
  // The answer speaks the request's version (HTTP/1.0 or 1.1).
  if (final_answer.rfind("HTTP/1.1 ", 0) != 0 && final_answer.rfind("HTTP/1.0 ", 0) != 0) {
    std::fprintf(stderr, "not an HTTP answer: %.200s\n", answer.c_str());
    std::abort();
  }
  const int status = std::atoi(final_answer.c_str() + 9);
  if (status < 200 || status > 599) {
    std::fprintf(stderr, "no final status: %.2000s\n", answer.c_str());
    std::abort();
  }
  if (status == 500) {
    std::fprintf(stderr, "500: %.2000s\n", answer.c_str());
    std::abort();
  }
  if (BreaksAFramingRule(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1)))
    CheckRefusedAlone(answer);
  return 0;
}
