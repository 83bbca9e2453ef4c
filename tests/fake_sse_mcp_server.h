#pragma once

// An MCP server over Streamable HTTP that answers tools/call with an SSE stream it writes as the
// call goes (chunked, kept alive): notifications and requests of its own before the result, a
// result whose stream is never ended, an endless run of requests, a stream larger than any limit.
// Plain POSIX sockets, a thread per connection, so it shares no code with toolgate's MCP client.
// It records what toolgate sent back — the answers to its requests, with their headers — as the
// independent observer of how toolgate handles a server's messages.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "loopback_http_server.h"
#include "nlohmann/json.hpp"

namespace toolgate::testing {

class FakeSseMcpServer {
 public:
  using json = nlohmann::json;

  // How tools/call is answered (always 200 text/event-stream, chunked).
  enum class CallMode {
    kResult,                // a priming event, a comment, the result; the stream ends
    kAskFirst,              // a progress notification, a ping and a sampling/createMessage request, each
                            // answer awaited (at most 10 s), then the result; the stream ends
    kResultHeldOpen,        // the result, then the stream stays open until toolgate closes the connection
    kEndlessRequests,       // request after request (elicitation/create), each answer awaited (3 s), never a result
    kEndlessNotifications,  // progress notifications until the connection breaks (at most 4 MiB), never a result
    // Resumability: events `c<n>-0` (priming, `retry: 50` or set_retry_ms) and `c<n>-1` (a progress notification),
    // then no result on this stream; a GET with `Last-Event-ID: c<n>-1` gets the result as event
    // `c<n>-2` (any other Last-Event-ID: 405; see set_resumes_without_result, set_refuse_resumes).
    kEndsBeforeResult,    // ... and the stream ends cleanly
    kBreaksBeforeResult,  // ... then half of event c<n>-2 (its id line included), and the connection is closed
    kEndsWithoutIds,      // a progress notification without an id, then the stream ends: nothing to resume
    // Progress naming the call's `_meta.progressToken` (1, then 2 with a 20 KB message), progress
    // naming another token (3), a notifications/message, progress naming the call's token (4), the
    // result, and progress after it (5); the stream ends.
    kProgressOfEverySize,
    // set_progress_events(n) progress notifications of ~1 KB naming the call's token, then a result
    // whose text is set_result_bytes(n) long; the stream ends.
    kManyProgressThenResult,
    // One event holding a batch of 50 progress notifications of ~1 KB naming the call's token, then
    // set_oversize_progress(n) events of one 20 KB progress notification naming it, then the result.
    kBatchedProgressThenResult,
    // set_progress_events(n) times: a notifications/message at level "error" ("log <k>") and a
    // progress notification naming the call's token (k); then the result, all in one chunk; the
    // stream ends.
    kLogsThenResult,
  };

  // A GET toolgate made to resume a stream.
  struct Resume {
    std::string last_event_id;
    std::string session_id;
  };

  // A message toolgate POSTed that is not a request: an answer to one of the server's requests.
  struct Answer {
    json message;
    std::map<std::string, std::string> headers;  // lowercased names
  };

  static constexpr char kSessionId[] = "session-7f3a";

  FakeSseMcpServer() = default;

  ~FakeSseMcpServer() {
    {
      std::lock_guard lock(mu_);  // no waiter can miss it between its check and its wait
      stopping_ = true;
    }
    cv_.notify_all();
    listener_.Stop();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(listener_.port()) + "/mcp"; }
  void set_call_mode(CallMode mode) { mode_ = mode; }
  // The `retry` of the resumable modes' priming event.
  void set_retry_ms(int ms) { retry_ms_ = ms; }
  // kEndsBeforeResult / kBreaksBeforeResult: the first `n` GETs resuming a call's stream (counted per
  // call: the k-th comes with `Last-Event-ID: c<n>-k`) send one more event, `c<n>-<k+1>` (a progress
  // notification), and then end or break as the call's stream did, still without the result; the
  // next GET gets it. 0 (the default): the first GET gets it.
  void set_resumes_without_result(int n) { resumes_without_result_ = n; }
  // Every GET is answered 405 (a server that does not offer resuming), whatever its Last-Event-ID.
  void set_refuse_resumes(bool refuse) { refuse_resumes_ = refuse; }
  void set_progress_events(int n) { progress_events_ = n; }
  void set_result_bytes(int n) { result_bytes_ = n; }
  void set_oversize_progress(int n) { oversize_progress_ = n; }

  std::vector<Answer> answers() const {
    std::lock_guard lock(mu_);
    return answers_;
  }
  std::optional<json> initialize_params() const {
    std::lock_guard lock(mu_);
    return initialize_params_;
  }
  int calls() const { return calls_.load(); }
  // The `_meta.progressToken` of each tools/call (null: none), in order.
  std::vector<json> progress_tokens() const {
    std::lock_guard lock(mu_);
    return progress_tokens_;
  }
  std::vector<Resume> resumes() const {
    std::lock_guard lock(mu_);
    return resumes_;
  }
  int connections_accepted() const { return listener_.accepted(); }
  // Requests the server sent on call streams (kAskFirst, kEndlessRequests).
  int requests_sent() const { return requests_sent_.load(); }
  // kResultHeldOpen: toolgate closed the connection of the stream the server held open.
  bool held_stream_closed() const { return held_stream_closed_.load(); }
  // kEndlessNotifications: the bytes of events written before the connection broke.
  int64_t stream_bytes_written() const { return stream_bytes_.load(); }

 private:
  using Request = LoopbackRequest;

  // Waits (bounded, stoppable) until `fd` is readable; false on timeout or stop.
  bool WaitReadable(int fd, std::chrono::milliseconds limit) {
    return ::toolgate::testing::WaitReadable(fd, limit, stopping_);
  }

  // One request from `fd` (keep-alive: `pending` carries bytes read past the previous one).
  bool ReadRequest(int fd, std::string& pending, Request& req) {
    return ReadLoopbackRequest(fd, pending, req, std::chrono::seconds(30), stopping_);
  }

  static bool SendJson(int fd, int status, const std::string& body, const std::string& extra_headers = "") {
    return SendAll(fd, "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\n" +
                           extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  }
  // One chunk of a chunked body.
  static bool SendChunk(int fd, const std::string& data) {
    char size[32];
    snprintf(size, sizeof size, "%zx\r\n", data.size());
    return SendAll(fd, size + data + "\r\n");
  }
  static std::string Event(const json& message) { return "event: message\ndata: " + message.dump() + "\n\n"; }

  // Waits (at most `limit`) until toolgate answered the server's request `id`.
  bool AwaitAnswer(const json& id, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] {
      if (stopping_) return true;
      for (const Answer& a : answers_) {
        if (a.message.value("id", json()) == id) return true;
      }
      return false;
    }) && !stopping_;
  }

  void Serve(int fd) {
    std::string pending;
    Request req;
    while (!stopping_ && ReadRequest(fd, pending, req)) {
      if (req.method == "GET") {
        if (!ResumeStream(fd, req)) return;
        continue;
      }
      const json msg = json::parse(req.body, nullptr, false);
      if (!msg.is_object()) {
        SendJson(fd, 400, R"({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}})");
        continue;
      }
      if (!msg.contains("method")) {  // an answer to one of the server's requests
        {
          std::lock_guard lock(mu_);
          answers_.push_back({msg, req.headers});
        }
        cv_.notify_all();
        SendAll(fd, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        continue;
      }
      const std::string method = msg["method"];
      if (!msg.contains("id")) {
        SendAll(fd, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        continue;
      }
      const json id = msg["id"];
      if (method == "initialize") {
        {
          std::lock_guard lock(mu_);
          initialize_params_ = msg.value("params", json());
        }
        const json result = {{"protocolVersion", msg["params"].value("protocolVersion", "2025-06-18")},
                             {"capabilities", {{"tools", json::object()}}},
                             {"serverInfo", {{"name", "sse-fixture"}, {"version", "1.0.0"}}}};
        SendJson(fd, 200, json{{"jsonrpc", "2.0"}, {"id", id}, {"result", result}}.dump(),
                 std::string("Mcp-Session-Id: ") + kSessionId + "\r\n");
        continue;
      }
      if (method == "tools/list") {  // one tool, `work`, for a gateway in front of this server
        const json tools = {{"tools", {{{"name", "work"}, {"inputSchema", {{"type", "object"}}}}}}};
        SendJson(fd, 200, json{{"jsonrpc", "2.0"}, {"id", id}, {"result", tools}}.dump());
        continue;
      }
      if (method != "tools/call") {
        SendJson(fd, 200,
                 json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", -32601}, {"message", "no"}}}}.dump());
        continue;
      }
      const int n = ++calls_;
      json token;
      if (msg.contains("params") && msg["params"].is_object() && msg["params"].contains("_meta") &&
          msg["params"]["_meta"].is_object()) {
        token = msg["params"]["_meta"].value("progressToken", json());
      }
      {
        std::lock_guard lock(mu_);
        progress_tokens_.push_back(token);
      }
      if (!StreamCall(fd, id, n, token)) return;
    }
  }

  // A GET on the endpoint: the rest of call n's stream after `Last-Event-ID: c<n>-k` (the result, or
  // once more without it: set_resumes_without_result), else 405 (also under set_refuse_resumes).
  bool ResumeStream(int fd, Request& req) {
    const std::string last = req.headers.count("last-event-id") ? req.headers["last-event-id"] : "";
    std::optional<json> result;
    {
      std::lock_guard lock(mu_);
      resumes_.push_back({last, req.headers.count("mcp-session-id") ? req.headers["mcp-session-id"] : ""});
      if (auto it = held_results_.find(last); it != held_results_.end()) result = it->second;
    }
    if (!result || refuse_resumes_) {
      return SendAll(fd, "HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\nContent-Length: 0\r\n\r\n");
    }
    const size_t dash = last.rfind('-');
    const std::string prefix = last.substr(0, dash + 1);
    const int k = std::stoi(last.substr(dash + 1));  // this is the k-th resume of the call
    const std::string next = prefix + std::to_string(k + 1);
    if (!SendAll(fd,
                 "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n")) {
      return false;
    }
    if (k > resumes_without_result_.load())
      return SendChunk(fd, "id: " + next + "\n" + Event(*result)) && SendAll(fd, "0\r\n\r\n");
    // Once more without the result: resumable after `next`.
    {
      std::lock_guard lock(mu_);
      held_results_[next] = *result;
    }
    const json progress = {{"jsonrpc", "2.0"},
                           {"method", "notifications/progress"},
                           {"params", {{"progressToken", "t"}, {"progress", k + 1}}}};
    if (!SendChunk(fd, "id: " + next + "\n" + Event(progress))) return false;
    if (mode_.load() == CallMode::kEndsBeforeResult) return SendAll(fd, "0\r\n\r\n");
    const std::string cut = "id: " + prefix + std::to_string(k + 2) + "\n" + Event(*result);
    SendChunk(fd, cut.substr(0, cut.size() / 2));
    return false;  // the connection is closed mid-event
  }

  // Answers a tools/call with an event stream; false when the connection cannot carry more.
  bool StreamCall(int fd, const json& id, int n, const json& token) {
    if (!SendAll(fd,
                 "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n")) {
      return false;
    }
    const json result = {{"jsonrpc", "2.0"},
                         {"id", id},
                         {"result", {{"content", {{{"type", "text"}, {"text", "done " + std::to_string(n)}}}}}}};
    switch (mode_.load()) {
      case CallMode::kResult:
        // A priming event (an id and empty data, as 2025-11-25 servers send), a comment, the result
        // split across two chunks with CRLF line ends; the second chunk and the body's end go
        // together, as a server that ends the stream with its last event sends them.
        if (!SendChunk(fd, "id: prime-0\nretry: 1000\ndata:\n\n: keep-alive\n\n")) return false;
        {
          const std::string event = "id: ev-1\r\ndata: " + result.dump() + "\r\n\r\n";
          const std::string second = event.substr(event.size() / 2);
          char size[32];
          snprintf(size, sizeof size, "%zx\r\n", second.size());
          return SendChunk(fd, event.substr(0, event.size() / 2)) && SendAll(fd, size + second + "\r\n0\r\n\r\n");
        }
      case CallMode::kAskFirst: {
        const json progress = {{"jsonrpc", "2.0"},
                               {"method", "notifications/progress"},
                               {"params", {{"progressToken", "t"}, {"progress", 1}, {"total", 2}}}};
        if (!SendChunk(fd, Event(progress))) return false;
        const json ping = {{"jsonrpc", "2.0"}, {"id", 900 + n}, {"method", "ping"}};
        ++requests_sent_;
        if (!SendChunk(fd, Event(ping)) || !AwaitAnswer(ping["id"], std::chrono::seconds(10))) return false;
        // The sampling request as two data lines (joined with "\n": still one JSON text).
        const json sampling = {
            {"jsonrpc", "2.0"},
            {"id", "sampling-" + std::to_string(n)},
            {"method", "sampling/createMessage"},
            {"params",
             {{"messages", json::array({{{"role", "user"}, {"content", {{"type", "text"}, {"text", "hi"}}}}})},
              {"maxTokens", 10}}}};
        const std::string text = sampling.dump();
        const size_t cut = text.find(",\"method\"");
        ++requests_sent_;
        if (!SendChunk(fd, "data: " + text.substr(0, cut + 1) + "\ndata: " + text.substr(cut + 1) + "\n\n") ||
            !AwaitAnswer(sampling["id"], std::chrono::seconds(10))) {
          return false;
        }
        return SendChunk(fd, Event(result)) && SendAll(fd, "0\r\n\r\n");
      }
      case CallMode::kResultHeldOpen: {
        if (!SendChunk(fd, Event(result))) return false;
        // Never ended: wait for toolgate to close the connection (EOF), at most 30 s.
        if (WaitReadable(fd, std::chrono::seconds(30))) {
          char buf[256];
          if (read(fd, buf, sizeof buf) == 0) held_stream_closed_ = true;
        }
        return false;
      }
      case CallMode::kEndlessRequests:
        for (int k = 1; k <= 100 && !stopping_; ++k) {
          const json request = {{"jsonrpc", "2.0"},
                                {"id", "ask-" + std::to_string(n) + "-" + std::to_string(k)},
                                {"method", "elicitation/create"},
                                {"params", {{"message", "name?"}, {"requestedSchema", {{"type", "object"}}}}}};
          ++requests_sent_;
          if (!SendChunk(fd, Event(request)) || !AwaitAnswer(request["id"], std::chrono::seconds(3))) return false;
        }
        return false;
      case CallMode::kEndsBeforeResult:
      case CallMode::kBreaksBeforeResult: {
        const std::string prefix = "c" + std::to_string(n) + "-";
        {
          std::lock_guard lock(mu_);
          held_results_[prefix + "1"] = result;
        }
        const json progress = {{"jsonrpc", "2.0"},
                               {"method", "notifications/progress"},
                               {"params", {{"progressToken", "t"}, {"progress", 1}}}};
        if (!SendChunk(fd, "id: " + prefix + "0\nretry: " + std::to_string(retry_ms_.load()) + "\ndata:\n\n") ||
            !SendChunk(fd, "id: " + prefix + "1\n" + Event(progress))) {
          return false;
        }
        if (mode_.load() == CallMode::kEndsBeforeResult) return SendAll(fd, "0\r\n\r\n");
        const std::string cut = "id: " + prefix + "2\n" + Event(result);
        SendChunk(fd, cut.substr(0, cut.size() / 2));
        return false;  // the connection is closed mid-event
      }
      case CallMode::kEndsWithoutIds: {
        const json progress = {{"jsonrpc", "2.0"},
                               {"method", "notifications/progress"},
                               {"params", {{"progressToken", "t"}, {"progress", 1}}}};
        return SendChunk(fd, Event(progress)) && SendAll(fd, "0\r\n\r\n");
      }
      case CallMode::kProgressOfEverySize: {
        auto progress = [](const json& named, int k, const std::string& message) {
          return Event({{"jsonrpc", "2.0"},
                        {"method", "notifications/progress"},
                        {"params", {{"progressToken", named}, {"progress", k}, {"total", 5}, {"message", message}}}});
        };
        const json log = {{"jsonrpc", "2.0"},
                          {"method", "notifications/message"},
                          {"params", {{"level", "info"}, {"data", "working"}}}};
        return SendChunk(fd, progress(token, 1, "small")) &&
               SendChunk(fd, progress(token, 2, std::string(20 * 1024, 'x'))) &&
               SendChunk(fd, progress("someone-else", 3, "not yours")) && SendChunk(fd, Event(log)) &&
               SendChunk(fd, progress(token, 4, "small")) && SendChunk(fd, Event(result)) &&
               SendChunk(fd, progress(token, 5, "late")) && SendAll(fd, "0\r\n\r\n");
      }
      case CallMode::kManyProgressThenResult: {
        for (int k = 1; k <= progress_events_.load(); ++k) {
          const json progress = {
              {"jsonrpc", "2.0"},
              {"method", "notifications/progress"},
              {"params", {{"progressToken", token}, {"progress", k}, {"message", std::string(1000, 'p')}}}};
          if (!SendChunk(fd, Event(progress))) return false;
        }
        const json big = {
            {"jsonrpc", "2.0"},
            {"id", id},
            {"result", {{"content", {{{"type", "text"}, {"text", std::string(result_bytes_.load(), 'r')}}}}}}};
        return SendChunk(fd, Event(big)) && SendAll(fd, "0\r\n\r\n");
      }
      case CallMode::kLogsThenResult: {
        std::string events;  // one chunk: toolgate reads them all, the answer too, at once
        for (int k = 1; k <= progress_events_.load(); ++k) {
          const json log = {{"jsonrpc", "2.0"},
                            {"method", "notifications/message"},
                            {"params", {{"level", "error"}, {"data", "log " + std::to_string(k)}}}};
          const json progress = {{"jsonrpc", "2.0"},
                                 {"method", "notifications/progress"},
                                 {"params", {{"progressToken", token}, {"progress", k}}}};
          events += Event(log) + Event(progress);
        }
        return SendChunk(fd, events + Event(result)) && SendAll(fd, "0\r\n\r\n");
      }
      case CallMode::kBatchedProgressThenResult: {
        auto progress = [&token](int k, size_t message_bytes) {
          return json{
              {"jsonrpc", "2.0"},
              {"method", "notifications/progress"},
              {"params", {{"progressToken", token}, {"progress", k}, {"message", std::string(message_bytes, 'b')}}}};
        };
        json batch = json::array();
        for (int k = 1; k <= 50; ++k) batch.push_back(progress(k, 1000));
        if (!SendChunk(fd, Event(batch))) return false;
        for (int k = 0; k < oversize_progress_.load(); ++k) {
          if (!SendChunk(fd, Event(progress(100 + k, 20 * 1024)))) return false;
        }
        return SendChunk(fd, Event(result)) && SendAll(fd, "0\r\n\r\n");
      }
      case CallMode::kEndlessNotifications: {
        const json progress = {
            {"jsonrpc", "2.0"},
            {"method", "notifications/progress"},
            {"params", {{"progressToken", "t"}, {"progress", 1}, {"message", std::string(900, 'x')}}}};
        const std::string event = Event(progress);
        while (!stopping_ && stream_bytes_.load() < (4 << 20)) {
          if (!SendChunk(fd, event)) return false;
          stream_bytes_ += static_cast<int64_t>(event.size());
        }
        return false;
      }
    }
    return false;
  }

  std::atomic<bool> stopping_{false};
  std::atomic<int> progress_events_{10};
  std::atomic<int> result_bytes_{10};
  std::atomic<int> oversize_progress_{0};
  std::atomic<CallMode> mode_{CallMode::kResult};
  std::atomic<int> retry_ms_{50};
  std::atomic<int> resumes_without_result_{0};
  std::atomic<bool> refuse_resumes_{false};
  std::atomic<int> calls_{0}, requests_sent_{0};
  std::atomic<bool> held_stream_closed_{false};
  std::atomic<int64_t> stream_bytes_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Answer> answers_;
  std::vector<Resume> resumes_;
  std::vector<json> progress_tokens_;
  std::map<std::string, json> held_results_;  // by the Last-Event-ID that resumes to them
  std::optional<json> initialize_params_;
  LoopbackListener listener_{64, [this](int fd) { Serve(fd); }};  // last: started once everything it uses exists
};

}  // namespace toolgate::testing
