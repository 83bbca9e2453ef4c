#pragma once

// A fake downstream for integration tests, written on plain POSIX sockets so that it shares no code
// with the gateway under test. It records every request and the peak number served at once — the
// independent observer for the concurrency and single-probe invariants.

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "loopback_http_server.h"

namespace toolgate::testing {

class FakeDownstream {
 public:
  using Request = LoopbackRequest;
  struct Reply {
    int status = 200;
    std::string body = R"({"ok":true})";
    std::vector<std::pair<std::string, std::string>> headers;
    int delay_ms = 0;
    bool close_without_reply = false;  // read the request, then drop the connection
    int reset_after_body_bytes = -1;   // >= 0: announce the whole body, send this much of it, then reset
  };
  using Behavior = std::function<Reply(const Request&)>;

  enum class Connections {
    kClose,            // "Connection: close" after every response (the default)
    kKeepAlive,        // keep connections open for further requests
    kAnnounceButDrop,  // say keep-alive, then close: the client's next use of it finds it stale
  };
  void set_connections(Connections c) { connections_ = c; }
  // Off: requests are served and counted (peak, concurrent) but not kept (long soak runs).
  void set_record(bool record) { record_ = record; }
  int connections_accepted() const { return listener_.accepted(); }
  // Connections this fake has closed (on loopback, their FIN sent).
  int connections_closed() const { return listener_.closed(); }

  FakeDownstream() = default;
  ~FakeDownstream() { listener_.Stop(); }

  int port() const { return listener_.port(); }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }

  void set_behavior(Behavior b) {
    std::lock_guard lock(mu_);
    behavior_ = std::move(b);
  }

  std::vector<Request> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  int count(const std::string& path) const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& r : requests_) n += r.path == path ? 1 : 0;
    return n;
  }
  int total() const {
    std::lock_guard lock(mu_);
    return static_cast<int>(requests_.size());
  }
  int peak_concurrent() const { return peak_.load(); }
  int concurrent() const { return current_.load(); }
  void reset_counts() {
    std::lock_guard lock(mu_);
    requests_.clear();
    peak_ = current_.load();
  }

 private:
  void Serve(int fd) {
    std::string pending;
    while (ServeOne(fd, pending) && connections_.load() == Connections::kKeepAlive) {
    }
  }

  // Serves one request (read within 10 s); true when the connection may carry another.
  bool ServeOne(int fd, std::string& pending) {
    Request req;
    if (!ReadLoopbackRequest(fd, pending, req, std::chrono::seconds(10), listener_.stopping())) return false;
    Behavior behavior;
    {
      std::lock_guard lock(mu_);
      if (record_.load()) requests_.push_back(req);
      behavior = behavior_;
    }
    const int now = current_.fetch_add(1) + 1;
    int seen = peak_.load();
    while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
    }
    Reply reply = behavior ? behavior(req) : Reply{};
    if (reply.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(reply.delay_ms));
    current_.fetch_sub(1);
    if (reply.close_without_reply) return false;
    const bool announce_keep_alive = connections_.load() != Connections::kClose;
    std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " X\r\nContent-Type: application/json\r\n";
    for (const auto& [k, v] : reply.headers) out += k + ": " + v + "\r\n";
    out += "Content-Length: " + std::to_string(reply.body.size()) +
           (announce_keep_alive ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n") + reply.body;
    if (reply.reset_after_body_bytes >= 0) {
      out.resize(out.size() - reply.body.size() +
                 std::min(reply.body.size(), static_cast<size_t>(reply.reset_after_body_bytes)));
      (void)send(fd, out.data(), out.size(), MSG_NOSIGNAL);
      linger hard{1, 0};  // close with RST, not FIN: the connection is reset mid-body
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
      return false;
    }
    return SendAll(fd, out);
  }

  mutable std::mutex mu_;
  Behavior behavior_;
  std::vector<Request> requests_;
  std::atomic<int> current_{0};
  std::atomic<Connections> connections_{Connections::kClose};
  std::atomic<int> peak_{0};
  std::atomic<bool> record_{true};
  LoopbackListener listener_{512, [this](int fd) { Serve(fd); }};  // last: serves with everything above
};

}  // namespace toolgate::testing
