// The HTTP request path end to end: raw bytes written to a real toolgate (memory store, both
// listeners on loopback, in this process so the sanitizers watch the server's code) and the answer
// read back. The first input byte picks the listener (even: public, odd: admin). What must hold:
// whatever arrives, an answer that comes is HTTP (1.0 or 1.1, as asked) with a status below 500 or one of toolgate's
// own 5xx (502, 503, 504, 501), never a crash, a hang past the timeouts, or a 500.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

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

std::string Exchange(int port, const uint8_t* data, size_t size) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) std::abort();  // the server died
  size_t off = 0;
  while (off < size) {
    const ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413, 431) and close before reading everything
    off += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  std::string answer;
  char buf[8192];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
    if (answer.size() > (8 << 20)) break;
  }
  close(fd);
  return answer;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  setenv("TOOLGATE_JWT_SECRET", "fuzz-secret-0123456789abcdef", 1);
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
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int port = data[0] % 2 == 0 ? g_server->gateway->public_port() : g_server->gateway->admin_port();
  const std::string answer = Exchange(port, data + 1, size - 1);
  if (answer.empty()) return 0;  // e.g. nothing that looked like a request: the server just closed
  // The answer speaks the request's version (HTTP/1.0 or 1.1).
  if (answer.rfind("HTTP/1.1 ", 0) != 0 && answer.rfind("HTTP/1.0 ", 0) != 0) {
    std::fprintf(stderr, "not an HTTP answer: %.200s\n", answer.c_str());
    std::abort();
  }
  const int status = std::atoi(answer.c_str() + 9);
  if (status < 200 || status > 599) std::abort();
  if (status == 500) {
    std::fprintf(stderr, "500: %.2000s\n", answer.c_str());
    std::abort();
  }
  return 0;
}
