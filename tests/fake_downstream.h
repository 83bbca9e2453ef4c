#pragma once

// A fake downstream for integration tests, written on plain POSIX sockets so that it shares no code
// with the gateway under test. It records every request and the peak number served at once — the
// independent observer for the concurrency and single-probe invariants.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace toolgate::testing {

class FakeDownstream {
 public:
  struct Request {
    std::string method;
    std::string path;
    std::map<std::string, std::string> headers;  // lowercased names
    std::string body;
  };
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
  int connections_accepted() const { return accepted_.load(); }

  FakeDownstream() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    listen(listen_fd_, 512);
    socklen_t len = sizeof addr;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~FakeDownstream() {
    stopping_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    acceptor_.join();
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [this] { return open_connections_ == 0; });
  }

  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

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
  void AcceptLoop() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      accepted_.fetch_add(1);
      {
        std::lock_guard lock(mu_);
        ++open_connections_;
      }
      std::thread([this, fd] {
        Serve(fd);
        close(fd);
        std::lock_guard lock(mu_);
        --open_connections_;
        cv_.notify_all();
      }).detach();
    }
  }

  // Reads one request (headers, then Content-Length bytes), with a 10 s bound.
  bool ReadRequest(int fd, Request& req) {
    std::string data;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    size_t header_end = std::string::npos;
    size_t content_length = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (header_end == std::string::npos) {
        header_end = data.find("\r\n\r\n");
        if (header_end != std::string::npos) {
          std::string head = data.substr(0, header_end);
          size_t line_end = head.find("\r\n");
          std::string first = head.substr(0, line_end);
          const auto sp1 = first.find(' '), sp2 = first.rfind(' ');
          req.method = first.substr(0, sp1);
          req.path = first.substr(sp1 + 1, sp2 - sp1 - 1);
          size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
          while (pos < head.size()) {
            size_t e = head.find("\r\n", pos);
            if (e == std::string::npos) e = head.size();
            std::string line = head.substr(pos, e - pos);
            const auto colon = line.find(':');
            if (colon != std::string::npos) {
              std::string name = line.substr(0, colon);
              for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
              std::string value = line.substr(colon + 1);
              while (!value.empty() && value.front() == ' ') value.erase(0, 1);
              req.headers[name] = value;
            }
            pos = e + 2;
          }
          if (auto it = req.headers.find("content-length"); it != req.headers.end()) {
            content_length = std::stoul(it->second);
          }
        }
      }
      if (header_end != std::string::npos && data.size() >= header_end + 4 + content_length) {
        req.body = data.substr(header_end + 4, content_length);
        return true;
      }
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[8192];
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) return false;
      data.append(buf, static_cast<size_t>(n));
    }
    return false;
  }

  void Serve(int fd) {
    while (ServeOne(fd) && connections_.load() == Connections::kKeepAlive) {
    }
  }

  // Serves one request; true when the connection may carry another.
  bool ServeOne(int fd) {
    Request req;
    if (!ReadRequest(fd, req)) return false;
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
    size_t off = 0;
    while (off < out.size()) {
      const ssize_t n = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int open_connections_ = 0;
  Behavior behavior_;
  std::vector<Request> requests_;
  std::atomic<int> current_{0};
  std::atomic<int> accepted_{0};
  std::atomic<Connections> connections_{Connections::kClose};
  std::atomic<int> peak_{0};
  std::atomic<bool> record_{true};
};

}  // namespace toolgate::testing
