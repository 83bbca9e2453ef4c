#pragma once

// The socket half of the tests' fake HTTP servers (fake_downstream.h, fake_sse_mcp_server.h):
// a listener on 127.0.0.1 at a port the kernel chooses, a thread that accepts on it and a thread per
// connection, and a bounded reader of HTTP/1.1 requests. Plain POSIX sockets, so the fakes share no
// code with the gateway under test; what a fake answers stays its own.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace toolgate::testing {

// One request as a fake server read it.
struct LoopbackRequest {
  std::string method;
  std::string path;
  std::map<std::string, std::string> headers;  // lowercased names
  std::string body;
};

// Writes all of `bytes` (no SIGPIPE); false when the peer is gone.
inline bool SendAll(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Waits until `fd` is readable: false when `limit` passed or `stop` was set first.
inline bool WaitReadable(int fd, std::chrono::milliseconds limit, const std::atomic<bool>& stop) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!stop && std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) > 0) return true;
  }
  return false;
}

namespace loopback_internal {

// The request line and headers of `head` (the bytes before the blank line) into `req`.
inline void ParseHead(const std::string& head, LoopbackRequest& req) {
  const size_t line_end = head.find("\r\n");
  const std::string first = head.substr(0, line_end);
  const size_t sp1 = first.find(' '), sp2 = first.rfind(' ');
  req.method = first.substr(0, sp1);
  req.path = sp1 == std::string::npos || sp2 <= sp1 ? "" : first.substr(sp1 + 1, sp2 - sp1 - 1);
  size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string::npos) e = head.size();
    const std::string line = head.substr(pos, e - pos);
    if (const size_t colon = line.find(':'); colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      req.headers[name] = value;
    }
    pos = e + 2;
  }
}

}  // namespace loopback_internal

// Reads one request from `fd`: the head, then Content-Length bytes of body. `pending` carries the
// bytes read past it to the next call (keep-alive). False on EOF, a read error, `limit` passing or
// `stop` being set.
inline bool ReadLoopbackRequest(int fd, std::string& pending, LoopbackRequest& req, std::chrono::milliseconds limit,
                                const std::atomic<bool>& stop) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until && !stop) {
    if (const size_t header_end = pending.find("\r\n\r\n"); header_end != std::string::npos) {
      req = LoopbackRequest{};
      loopback_internal::ParseHead(pending.substr(0, header_end), req);
      const auto it = req.headers.find("content-length");
      const size_t length = it == req.headers.end() ? 0 : std::stoul(it->second);
      if (pending.size() >= header_end + 4 + length) {
        req.body = pending.substr(header_end + 4, length);
        pending.erase(0, header_end + 4 + length);
        return true;
      }
    }
    if (!WaitReadable(fd, std::chrono::milliseconds(100), stop)) continue;
    char buf[8192];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    pending.append(buf, static_cast<size_t>(n));
  }
  return false;
}

// A listening socket on 127.0.0.1 (port 0) and the thread that accepts on it. Each connection is
// served by `serve(fd)` on a thread of its own, then closed. Stop (or the destructor) stops
// accepting and waits, at most 30 s, for the connections being served: the owner makes its `serve`
// return first (its own stop flag, or stopping(), which Stop sets). Declare it after everything
// `serve` uses, so it is destroyed first.
class LoopbackListener {
 public:
  LoopbackListener(int backlog, std::function<void(int fd)> serve) : serve_(std::move(serve)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    listen(listen_fd_, backlog);
    socklen_t len = sizeof addr;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;
  ~LoopbackListener() { Stop(); }

  void Stop() {
    if (!acceptor_.joinable()) return;
    stopping_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    close(listen_fd_);
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [this] { return open_connections_ == 0; });
  }

  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }
  // Connections this side has closed.
  int closed() const { return closed_.load(); }
  const std::atomic<bool>& stopping() const { return stopping_; }

 private:
  void AcceptLoop() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      accepted_.fetch_add(1);
      {
        std::lock_guard lock(mu_);
        ++open_connections_;
      }
      std::thread([this, fd] {
        serve_(fd);
        close(fd);
        closed_.fetch_add(1);
        std::lock_guard lock(mu_);
        --open_connections_;
        cv_.notify_all();
      }).detach();
    }
  }

  std::function<void(int fd)> serve_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> closed_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  int open_connections_ = 0;
  std::thread acceptor_;  // last: started once everything it uses exists
};

}  // namespace toolgate::testing
