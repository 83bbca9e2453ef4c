#pragma once

// A small MCP server for integration tests: Streamable HTTP with JSON answers and no sessions, on
// FakeDownstream's plain POSIX sockets, so it shares no code with toolgate's MCP client. It answers
// `initialize`, `ping`, `tools/list` (two tools: `work` and `other`) and `tools/call`, and counts what
// reached it — per method, and the peak number of tools/call running at once — as the independent
// observer of the breaker's single probe and the connector's in-flight limit.

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fake_downstream.h"
#include "nlohmann/json.hpp"

namespace toolgate::testing {

class FakeMcpServer {
 public:
  // How tools/call is answered.
  enum class CallMode {
    kText,           // a text result: "done <n>"
    kIsError,        // a result marked isError (a tool-level error)
    kHttp500,        // HTTP 500 without a JSON-RPC answer (the server is failing)
    kInternalError,  // JSON-RPC error -32603
    kAnswer,         // the members set by set_call_answer, in a JSON-RPC envelope with the call's id
    kRawResult,      // the text set by set_call_raw_result as the result, spliced in unparsed
  };

  FakeMcpServer() {
    downstream_.set_behavior([this](const FakeDownstream::Request& r) { return Handle(r); });
  }

  std::string url() const { return downstream_.base_url() + "/mcp"; }

  void set_call_mode(CallMode mode) { call_mode_ = mode; }
  void set_call_delay_ms(int ms) { call_delay_ms_ = ms; }
  // Run by each tools/call before it is answered (after the delay); empty: none.
  void set_call_hold(std::function<void()> hold) {
    std::lock_guard lock(answer_mu_);
    call_hold_ = std::move(hold);
  }
  // tools/call answered {"jsonrpc":"2.0","id":<the call's>, ...members} (kAnswer): any result or
  // error, well formed or not.
  // tools/call answered with `text` as its result, as is (however deep it nests: never parsed here).
  void set_call_raw_result(std::string text) {
    std::lock_guard<std::mutex> lock(answer_mu_);
    raw_result_ = std::move(text);
    call_mode_ = CallMode::kRawResult;
  }
  void set_call_answer(nlohmann::json members) {
    std::lock_guard<std::mutex> lock(answer_mu_);
    call_answer_ = std::move(members);
    call_mode_ = CallMode::kAnswer;
  }
  // tools/list answered HTTP 500 (a failing server; initialize and ping still work).
  void set_list_fails(bool fails) { list_fails_ = fails; }
  // Sessions: each initialize answers a new Mcp-Session-Id, and every one issued stays live; a
  // request naming none of them gets HTTP 404 (the server forgot it). forget_sessions() makes every
  // session issued so far stale.
  void set_sessions(bool on) { sessions_ = on; }
  void forget_sessions() { forgotten_through_ = initializes_.load(); }
  // Each tools/call as it came: the Mcp-Session-Id it named ("" without one) and its arguments.
  struct SeenCall {
    std::string session;
    nlohmann::json arguments;
  };
  std::vector<SeenCall> seen_calls() {
    std::lock_guard<std::mutex> lock(answer_mu_);
    return seen_calls_;
  }
  // initialize answered with this JSON-RPC error object (null: answered normally).
  void set_initialize_error(nlohmann::json error) {
    std::lock_guard<std::mutex> lock(answer_mu_);
    initialize_error_ = std::move(error);
  }
  // The serverInfo.name initialize answers (kServerName until set).
  void set_server_name(std::string name) {
    std::lock_guard<std::mutex> lock(answer_mu_);
    server_name_ = std::move(name);
  }

  int calls() const { return calls_.load(); }
  int lists() const { return lists_.load(); }
  int initializes() const { return initializes_.load(); }
  int peak_calls() const { return peak_calls_.load(); }
  void reset_counts() {
    calls_ = 0;
    lists_ = 0;
    initializes_ = 0;
    peak_calls_ = in_calls_.load();
  }

  static constexpr char kServerName[] = "fixture-mcp";
  static constexpr char kServerVersion[] = "3.1.4";

 private:
  using json = nlohmann::json;

  static FakeDownstream::Reply Answer(const json& id, json result) {
    return {200, json{{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}}.dump()};
  }

  FakeDownstream::Reply Handle(const FakeDownstream::Request& r) {
    const json msg = json::parse(r.body, nullptr, false);
    if (!msg.is_object() || !msg.contains("method") || !msg["method"].is_string()) {
      return {400, R"({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}})"};
    }
    const std::string method = msg["method"];
    if (!msg.contains("id")) return {202, ""};  // a notification
    const json id = msg["id"];
    const json params = msg.value("params", json::object());
    const auto sent = r.headers.find("mcp-session-id");
    const std::string session = sent == r.headers.end() ? "" : sent->second;
    if (sessions_ && method != "initialize") {
      const int n = session.size() > 1 && session[0] == 's' ? std::atoi(session.c_str() + 1) : 0;
      if (n <= forgotten_through_.load() || n > initializes_.load()) {
        return {404, R"({"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"session not found"}})"};
      }
    }
    if (method == "initialize") {
      const int session_number = ++initializes_;
      {
        std::lock_guard<std::mutex> lock(answer_mu_);
        if (!initialize_error_.is_null()) {
          return {200, json{{"jsonrpc", "2.0"}, {"id", id}, {"error", initialize_error_}}.dump()};
        }
      }
      const std::string version = params.is_object() ? params.value("protocolVersion", "2025-06-18") : "2025-06-18";
      std::string name;
      {
        std::lock_guard<std::mutex> lock(answer_mu_);
        name = server_name_;
      }
      FakeDownstream::Reply reply = Answer(id, {{"protocolVersion", version},
                                                {"capabilities", {{"tools", json::object()}}},
                                                {"serverInfo", {{"name", name}, {"version", kServerVersion}}}});
      if (sessions_) reply.headers.emplace_back("Mcp-Session-Id", "s" + std::to_string(session_number));
      return reply;
    }
    if (method == "ping") return Answer(id, json::object());
    if (method == "tools/list") {
      ++lists_;
      if (list_fails_) return {500, R"({"error":"failing"})"};
      const json schema = {{"type", "object"}};
      return Answer(id, {{"tools",
                          {{{"name", "work"}, {"description", "does some work"}, {"inputSchema", schema}},
                           {{"name", "other"}, {"description", "does other work"}, {"inputSchema", schema}}}}});
    }
    if (method == "tools/call") {
      {
        std::lock_guard<std::mutex> lock(answer_mu_);
        seen_calls_.push_back({session, params.is_object() ? params.value("arguments", json()) : json()});
      }
      const int n = ++calls_;
      const int now = ++in_calls_;
      int seen = peak_calls_.load();
      while (now > seen && !peak_calls_.compare_exchange_weak(seen, now)) {
      }
      if (call_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(call_delay_ms_.load()));
      std::function<void()> hold;
      {
        std::lock_guard lock(answer_mu_);
        hold = call_hold_;
      }
      if (hold) hold();
      --in_calls_;
      switch (call_mode_.load()) {
        case CallMode::kText:
          return Answer(id, {{"content", {{{"type", "text"}, {"text", "done " + std::to_string(n)}}}}});
        case CallMode::kIsError:
          return Answer(id, {{"content", {{{"type", "text"}, {"text", "bad arguments: try again with a number"}}}},
                             {"isError", true}});
        case CallMode::kHttp500:
          return {500, R"({"error":"failing"})"};
        case CallMode::kInternalError:
          return {200,
                  json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", -32603}, {"message", "internal"}}}}.dump()};
        case CallMode::kAnswer: {
          json answer{{"jsonrpc", "2.0"}, {"id", id}};
          std::lock_guard<std::mutex> lock(answer_mu_);
          answer.update(call_answer_);
          return {200, answer.dump()};
        }
        case CallMode::kRawResult: {
          std::lock_guard<std::mutex> lock(answer_mu_);
          return {200, R"({"jsonrpc":"2.0","id":)" + id.dump() + R"(,"result":)" + raw_result_ + "}"};
        }
      }
    }
    return {200,
            json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", -32601}, {"message", "no such method"}}}}.dump()};
  }

  std::atomic<CallMode> call_mode_{CallMode::kText};
  std::mutex answer_mu_;
  json call_answer_ = json::object();      // guarded by answer_mu_
  std::string raw_result_;                 // guarded by answer_mu_
  json initialize_error_;                  // guarded by answer_mu_
  std::string server_name_ = kServerName;  // guarded by answer_mu_
  std::function<void()> call_hold_;        // guarded by answer_mu_
  std::atomic<bool> sessions_{false};
  std::vector<SeenCall> seen_calls_;       // guarded by answer_mu_
  std::atomic<int> forgotten_through_{0};  // sessions s1..sN are stale
  std::atomic<int> call_delay_ms_{0};
  std::atomic<bool> list_fails_{false};
  std::atomic<int> calls_{0}, lists_{0}, initializes_{0}, in_calls_{0}, peak_calls_{0};
  FakeDownstream downstream_;  // last: its threads stop before the counters go
};

}  // namespace toolgate::testing
