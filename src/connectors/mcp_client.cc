#include "toolgate/connectors/mcp_client.h"

#include <algorithm>
#include <limits>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/connectors/credentials.h"
#include "toolgate/connectors/http_connector.h"
#include "toolgate/net/event_stream.h"
#include "toolgate/domain/json_depth.h"

#ifndef TOOLGATE_VERSION
#define TOOLGATE_VERSION "0.1.0"
#endif

namespace toolgate::mcp {

namespace asio = boost::asio;
using json = nlohmann::json;
using Kind = DownstreamResult::Kind;
using std::chrono::milliseconds;

namespace {

// Requests of its own a server may send on the stream of one of toolgate's (each answered) before
// toolgate gives up on that request: a server that never stops asking must not hold a call forever.
constexpr int kMaxServerRequestsPerCall = 16;
// GETs with Last-Event-ID after a request's stream ended or broke before its response (design §14).
constexpr int kMaxStreamResumes = 3;

bool Succeeded(const RpcOutcome& o) {
  return o.kind == Kind::kResponse && o.message && o.message->is_object() && o.message->contains("result");
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The JSON-RPC response to `id` among the messages of one answer (an object, a batch array, or
// the events of an SSE stream); nullopt when there is none.
std::optional<json> PickResponse(const json& message, const json& id) {
  auto matches = [&](const json& m) {
    return m.is_object() && m.contains("id") && m["id"] == id && (m.contains("result") || m.contains("error"));
  };
  if (matches(message)) return message;
  if (message.is_array()) {
    for (const json& m : message) {
      if (matches(m)) return m;
    }
  }
  return std::nullopt;
}

bool IsToolsChanged(const json& m) { return StringMember(m, "method") == "notifications/tools/list_changed"; }

class HttpTransport final : public McpTransport {
 public:
  HttpTransport(const ConnectorConfig& config, net::ConnectionPool& pool, const Clock& clock,
                std::shared_ptr<const net::TlsClientContext> tls,
                std::shared_ptr<ConnectorCredentials> credentials = nullptr)
      : config_(config),
        pool_(pool),
        clock_(clock),
        tls_(std::move(tls)),
        credentials_(credentials ? std::move(credentials)
                                 : std::make_shared<ConnectorCredentials>(config.id, config.auth, clock, &pool,
                                                                          config.auth.token_tls ? tls_ : nullptr)) {}

  std::unique_ptr<McpTransport> ForAnotherLoop() const override {
    return std::make_unique<HttpTransport>(config_, pool_, clock_, tls_, credentials_);
  }

  asio::awaitable<RpcOutcome> Connect(milliseconds) override { co_return RpcOutcome{}; }

  asio::awaitable<RpcOutcome> Request(const json& request, std::string text, milliseconds timeout,
                                      NotificationSink notify) override {
    const SessionHeaders headers = Current();
    StreamReading reading(static_cast<size_t>(config_.max_response_bytes));
    reading.id = request["id"];
    reading.method = request.value("method", "");
    if (notify) {
      reading.progress_token = ProgressTokenOf(request);
      reading.notify = std::move(notify);
    }
    reading.session = headers;
    reading.deadline = clock_.now_monotonic() + timeout;
    auto post_op = Post(std::move(text), timeout, headers, &reading);
    Posted posted = co_await std::move(post_op);
    RpcOutcome out = std::move(posted.outcome);
    if (!reading.response && reading.stream_started) {
      auto resume_op = Resume(reading, std::move(out));
      out = co_await std::move(resume_op);
      posted.streamed = true;
    }
    if (reading.too_many_requests) {
      out.kind = Kind::kResponseInvalid;
      out.error = absl::StrCat("the MCP server sent more than ", kMaxServerRequestsPerCall,
                               " requests of its own on the stream of one ", reading.method.substr(0, 64),
                               " (each answered -32601) without answering it");
      co_return out;
    }
    if (reading.over_limit) {
      out.kind = Kind::kResponseInvalid;
      out.error = absl::StrCat("the MCP server's event stream for one ", reading.method.substr(0, 64), " went past ",
                               config_.max_response_bytes,
                               " bytes besides the notifications relayed (max_response_bytes: the body limit)");
      co_return out;
    }
    if (reading.events.failed()) {
      out.kind = Kind::kResponseInvalid;
      out.error =
          absl::StrCat("the MCP server's event stream for one ", reading.method.substr(0, 64), " needed more than ",
                       config_.max_response_bytes, " bytes held at once (max_response_bytes)");
      co_return out;
    }
    if (out.kind != Kind::kResponse && (reading.resumed > 0 || !reading.not_resumed.empty())) {
      // The stream broke, or a resuming GET failed or timed out: say how far resuming got.
      out.error =
          absl::StrCat(out.error, " (no response on the event stream",
                       reading.resumed > 0 ? absl::StrCat(", resumed ", reading.resumed, " time(s)") : std::string(),
                       reading.not_resumed.empty() ? std::string() : "; " + reading.not_resumed, ")");
    }
    if (out.kind != Kind::kResponse || out.stale_session || out.http_status < 200 || out.http_status >= 300)
      co_return out;
    const json& id = request["id"];
    if (posted.streamed) {
      if (!reading.response) {
        // The body ended: an event cut short of its blank line still counts (no more requests are
        // answered now: the server closed the stream).
        reading.events.Finish();
        while (auto event = reading.events.Next()) {
          json m = ParseJsonWithin(event->data);
          if (!m.is_discarded() && (reading.response = PickResponse(m, id))) break;
        }
      }
      out.message = std::move(reading.response);
    } else {
      json m = ParseJsonWithin(posted.body);
      if (!m.is_discarded()) out.message = PickResponse(m, id);
    }
    if (!out.message) {
      out.kind = Kind::kResponseInvalid;
      out.error = absl::StrCat(
          "HTTP ", out.http_status, " (", posted.content_type.substr(0, 64), ") held no JSON-RPC response with id ",
          id.dump(),
          posted.streamed ? absl::StrCat(" (the event stream ended first",
                                         reading.resumed > 0 ? absl::StrCat(", resumed ", reading.resumed, " time(s)")
                                                             : std::string(),
                                         reading.not_resumed.empty() ? std::string() : "; " + reading.not_resumed, ")")
                          : std::string());
      co_return out;
    }
    if (request.value("method", "") == "initialize" && !posted.session_id.empty()) session_id_ = posted.session_id;
    co_return out;
  }

  asio::awaitable<RpcOutcome> Notify(const json& notification, milliseconds timeout) override {
    auto post_op = Post(MessageText(notification), timeout, Current(), nullptr);
    Posted posted = co_await std::move(post_op);
    co_return std::move(posted.outcome);
  }

  uint64_t generation() const override { return generation_; }
  void Initialized(const std::string& protocol_version) override { protocol_version_ = protocol_version; }
  void DropSession() override {
    session_id_.clear();
    protocol_version_.clear();
    ++generation_;
  }

 private:
  // A message as the body of its POST.
  static std::string MessageText(const json& message) {
    return message.dump(-1, ' ', false, json::error_handler_t::replace);
  }

  // The session a request goes out under.
  struct SessionHeaders {
    std::string session_id;        // Mcp-Session-Id; empty: none
    std::string protocol_version;  // MCP-Protocol-Version; empty: none (before initialize)
  };
  SessionHeaders Current() const { return {session_id_, protocol_version_}; }

  // The SSE stream answering one request, read event by event as it arrives.
  struct StreamReading {
    explicit StreamReading(size_t max_bytes) : events(max_bytes) {}
    json id;             // the request's
    std::string method;  // the request's, for messages
    SessionHeaders session;
    std::chrono::steady_clock::time_point deadline;  // the request's
    net::EventStreamParser events;
    std::optional<json> response;  // the response with `id`, once it came
    bool stream_started = false;   // a 2xx event stream answered (this POST or the last resume GET)
    int resumes = 0;               // GETs with Last-Event-ID made (at most kMaxStreamResumes)
    int resumed = 0;               // of those, the ones answered with an event stream
    std::string resume_from;       // the last event id of the streams before this one
    std::optional<int64_t> retry_ms;
    std::string not_resumed;  // why the last stream was not resumed, for the error
    int requests_answered = 0;
    bool too_many_requests = false;
    json progress_token;      // the request's `_meta.progressToken` (null: none), when `notify` listens
    NotificationSink notify;  // gets the progress naming it and the log messages on its stream
    // With `notify`: the stream's bytes, and the data bytes of the notifications relayed (their
    // events' framing, a few bytes each, still counts). What is relayed does not count toward
    // max_response_bytes (a long call that reports often must not fail for it); what is not
    // (another token's progress, one the sink refused, anything else) does.
    int64_t stream_bytes = 0;
    int64_t relayed_bytes = 0;
    bool over_limit = false;  // the rest went past max_response_bytes
  };

  struct Posted {
    RpcOutcome outcome;
    std::string body;
    std::string content_type;
    std::string session_id;
    bool streamed = false;  // the body was an event stream, read into the StreamReading
  };

  // One POST of `body` (a message's text) under `session`, with one re-send after a 401 to a fetched
  // token (design §13). With `reading`, a 2xx `text/event-stream` answer is read into it as it
  // arrives (see OnStreamData) rather than gathered into `body`. With `last_event_id`, a GET resuming
  // the stream after that event instead (`body` empty). Parameters by value: a coroutine starts when
  // awaited, after a caller's temporaries (Current()) are gone.
  asio::awaitable<Posted> Post(std::string body, milliseconds timeout, SessionHeaders session, StreamReading* reading,
                               std::string last_event_id = "") {
    const auto start = clock_.now_monotonic();
    auto left = [&] {
      return std::max(milliseconds(1),
                      timeout - std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - start));
    };
    // Kept for a re-send only where one can happen: a tool call's arguments may be a megabyte.
    const bool may_resend = credentials_->RefreshesOn401();
    auto send_op = SendOnce(may_resend ? std::string(body) : std::move(body), left(), session, reading, last_event_id);
    Sent sent = co_await std::move(send_op);
    if (may_resend && sent.result.ok && sent.result.status == 401) {
      credentials_->InvalidateToken(sent.authorization);
      auto resend_op = SendOnce(body, left(), session, reading, last_event_id);
      sent = co_await std::move(resend_op);
    }
    Posted posted;
    if (sent.credentials_error) {
      posted.outcome.kind = Kind::kCredentialsUnavailable;
      posted.outcome.error = std::move(*sent.credentials_error);
      co_return posted;
    }
    net::ClientResult& r = sent.result;
    for (const auto& [k, v] : r.headers) {
      if (k == "content-type") posted.content_type = v;
      if (k == "mcp-session-id") posted.session_id = v;
    }
    const int status = r.status;
    const bool ok = r.ok;
    posted.streamed = r.body_streamed;
    if (ok) posted.body = std::move(r.body);
    DownstreamResult d = FromClientResult(std::move(r));
    posted.outcome.kind = d.kind;
    posted.outcome.error = std::move(d.error);
    posted.outcome.retry_after_s = d.retry_after_s;
    if (ok) {
      posted.outcome.http_status = status;
      posted.outcome.stale_session = sent.with_session && (status == 404 || status == 400);
      if (status < 200 || status >= 300) posted.outcome.error = absl::StrCat("the MCP server answered HTTP ", status);
    }
    co_return posted;
  }

  struct Sent {
    net::ClientResult result;
    std::string authorization;  // to drop that token after a 401; never logged
    bool with_session = false;
    std::optional<std::string> credentials_error;
  };

  asio::awaitable<Sent> SendOnce(std::string body, milliseconds timeout, SessionHeaders session, StreamReading* reading,
                                 std::string last_event_id) {
    const auto start = clock_.now_monotonic();
    Sent sent;
    auto headers_op = credentials_->Headers(timeout);
    absl::StatusOr<ConnectorCredentials::HeaderList> credentials = co_await std::move(headers_op);
    if (!credentials.ok()) {
      spdlog::warn("connector {}: credentials unavailable: {}", config_.id,
                   std::string(credentials.status().message()));
      sent.credentials_error = std::string(credentials.status().message());
      co_return sent;
    }
    net::ClientRequest call;
    call.address = config_.address;
    if (config_.tls) call.tls = tls_;
    call.target = config_.path_prefix;
    if (last_event_id.empty()) {
      call.method = "POST";
      call.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json, text/event-stream"}};
    } else {
      call.method = "GET";
      call.headers = {{"Accept", "text/event-stream"}, {"Last-Event-ID", last_event_id}};
    }
    sent.with_session = !session.session_id.empty();
    if (sent.with_session) call.headers.emplace_back("Mcp-Session-Id", session.session_id);
    if (!session.protocol_version.empty()) call.headers.emplace_back("MCP-Protocol-Version", session.protocol_version);
    for (auto& [name, value] : *credentials) {
      if (name == "Authorization") sent.authorization = value;
      call.headers.emplace_back(std::move(name), std::move(value));
    }
    call.body = std::move(body);
    // A tool call may have acted before a kept-alive connection dropped without an answer: it is not
    // sent again on a new one. Listing, pings, session set-up and resuming GETs are.
    call.idempotent = reading == nullptr || reading->method != "tools/call";
    call.timeout =
        std::max(milliseconds(1), timeout - std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - start));
    call.max_response_bytes = config_.max_response_bytes;
    // A stream whose notifications are relayed is held to the limit by OnStreamData, without them.
    if (reading != nullptr && reading->notify) call.max_streamed_bytes = std::numeric_limits<int64_t>::max();
    if (reading != nullptr) {
      call.stream_body = [reading](int status, const std::vector<std::pair<std::string, std::string>>& headers) {
        if (status < 200 || status >= 300) return false;
        bool event_stream = false;
        for (const auto& [name, value] : headers) {
          if (name == "content-type") event_stream = Lower(value).find("text/event-stream") != std::string::npos;
          // Answers to the server's requests go under the session the request went out with; an
          // initialize gets its session with this answer.
          if (name == "mcp-session-id" && reading->session.session_id.empty()) reading->session.session_id = value;
        }
        if (event_stream) reading->stream_started = true;
        return event_stream;
      };
      call.on_body_data = [this, reading](std::string_view data) { return OnStreamData(reading, std::string(data)); };
    }
    auto call_op = net::AsyncHttpCall(std::move(call), &pool_);
    sent.result = co_await std::move(call_op);
    co_return sent;
  }

  // The request's stream ended or broke before its response (MCP Streamable HTTP, "Resumability and
  // Redelivery"): when the server gave event ids, GET the endpoint with Last-Event-ID (the id as of
  // the last complete event) after the server's `retry` wait, and read that stream the same way; at
  // most kMaxStreamResumes times, and only while the request's deadline leaves time. `out` is the
  // outcome of the stream that ended; the answer is the last stream's (the original when no GET was
  // made or the server would not resume: not 2xx or not an event stream).
  asio::awaitable<RpcOutcome> Resume(StreamReading& reading, RpcOutcome out) {
    while (!reading.response && reading.stream_started && !reading.too_many_requests && !reading.events.failed() &&
           !reading.over_limit) {
      const bool ended = out.kind == Kind::kResponse && out.http_status >= 200 && out.http_status < 300;
      if (!ended && out.kind != Kind::kConnectionLost) break;
      // Taken before Finish: an event the break cut short must come again.
      std::string from = reading.events.dispatched_event_id();
      if (from.empty()) from = reading.resume_from;
      if (reading.events.retry_ms()) reading.retry_ms = reading.events.retry_ms();
      if (ended) {
        // A clean end: an event cut short of its blank line still counts.
        reading.events.Finish();
        while (auto event = reading.events.Next()) {
          json m = ParseJsonWithin(event->data);
          if (!m.is_discarded() && (reading.response = PickResponse(m, reading.id))) break;
        }
        if (reading.response) break;
      }
      if (from.empty()) {
        reading.not_resumed = "no event ids to resume from";
        break;
      }
      if (reading.resumes >= kMaxStreamResumes) {
        reading.not_resumed = absl::StrCat("at most ", kMaxStreamResumes, " resumes");
        break;
      }
      const milliseconds wait(std::clamp<int64_t>(reading.retry_ms.value_or(0), 0, 60'000));
      const auto left = std::chrono::duration_cast<milliseconds>(reading.deadline - clock_.now_monotonic());
      if (left <= wait + milliseconds(10)) {
        reading.not_resumed = absl::StrCat("the server's retry wait (", wait.count(), " ms) does not fit the ",
                                           std::max<int64_t>(0, left.count()), " ms left");
        break;
      }
      if (wait.count() > 0) {
        asio::steady_timer timer(co_await asio::this_coro::executor, wait);
        boost::system::error_code ec;
        auto wait_op = timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        co_await std::move(wait_op);
      }
      ++reading.resumes;
      spdlog::debug("connector {}: the event stream of {} ended before its response: resuming after event {}",
                    config_.id, reading.method.substr(0, 64), from.substr(0, 64));
      reading.resume_from = from;
      reading.events = net::EventStreamParser(static_cast<size_t>(config_.max_response_bytes));
      reading.stream_started = false;
      const milliseconds get_left = std::max(
          milliseconds(1), std::chrono::duration_cast<milliseconds>(reading.deadline - clock_.now_monotonic()));
      auto get_op = Post(std::string(), get_left, reading.session, &reading, from);
      Posted resumed = co_await std::move(get_op);
      if (!reading.stream_started) {
        // Not resumable here (405, or not a stream): the original ending stands.
        reading.not_resumed =
            resumed.outcome.http_status != 0
                ? absl::StrCat("the server answered the resuming GET with HTTP ", resumed.outcome.http_status)
                : absl::StrCat("the resuming GET failed: ", resumed.outcome.error.substr(0, 128));
        break;
      }
      ++reading.resumed;
      out = std::move(resumed.outcome);
    }
    co_return out;
  }

  // More of the request's event stream arrived: handles every event it completed. False (stop
  // reading) once the response came, when the server sent too many requests of its own, or when the
  // stream went past max_response_bytes besides the notifications relayed (StreamReading::over_limit).
  asio::awaitable<bool> OnStreamData(StreamReading* reading, std::string data) {
    reading->stream_bytes += static_cast<int64_t>(data.size());
    reading->events.Feed(data);
    if (reading->events.failed()) co_return false;
    while (std::optional<net::EventStreamParser::Event> event = reading->events.Next()) {
      auto handle_op = HandleEvent(*reading, std::move(event->data));
      if (!co_await std::move(handle_op)) co_return false;
    }
    if (reading->notify && reading->stream_bytes - reading->relayed_bytes > config_.max_response_bytes) {
      reading->over_limit = true;
      co_return false;
    }
    co_return true;
  }

  // One event of the stream: the response (stop), a request of the server's (answered), a
  // notification (tools/list_changed acted on, the others dropped) or anything else (skipped).
  asio::awaitable<bool> HandleEvent(StreamReading& reading, std::string data) {
    json parsed = ParseJsonWithin(data);
    if (parsed.is_discarded()) {
      if (!data.empty()) spdlog::debug("connector {}: an SSE event that is not JSON was skipped", config_.id);
      co_return true;
    }
    const bool batch = parsed.is_array();
    json messages = batch ? std::move(parsed) : json::array({std::move(parsed)});
    int64_t credited = 0;  // of this event's bytes, those of the notifications relayed (at most all of them)
    for (json& m : messages) {
      if (PickResponse(m, reading.id)) {
        reading.response = std::move(m);
        co_return false;
      }
      if (!m.is_object() || !m.contains("method") || !m["method"].is_string()) continue;  // another response
      const std::string method = m["method"];
      if (!m.contains("id")) {
        if (IsToolsChanged(m)) {
          ToolsChanged();
        } else if (reading.notify && ((!reading.progress_token.is_null() && IsProgressFor(m, reading.progress_token)) ||
                                      method == "notifications/message")) {
          // Its own bytes: the event's data, or in a batch what the message takes of it.
          const auto size = static_cast<int64_t>(batch ? m.dump().size() : data.size());
          if (reading.notify(std::move(m))) {
            const int64_t credit = std::min(size, static_cast<int64_t>(data.size()) - credited);
            credited += credit;
            reading.relayed_bytes += credit;
          }
        } else {
          spdlog::debug("connector {}: MCP notification {} during {} dropped", config_.id, method.substr(0, 64),
                        reading.method.substr(0, 64));
        }
        continue;
      }
      if (reading.requests_answered >= kMaxServerRequestsPerCall) {
        spdlog::warn("connector {}: the MCP server sent more than {} requests during one {}: the call ends", config_.id,
                     kMaxServerRequestsPerCall, reading.method.substr(0, 64));
        reading.too_many_requests = true;
        co_return false;
      }
      ++reading.requests_answered;
      auto answer_op = AnswerServerRequest(reading, method, m["id"]);
      co_await std::move(answer_op);
    }
    co_return true;
  }

  // Answers a request the server sent during one of toolgate's: `ping` with an empty result, any
  // other method -32601 — toolgate is a gateway and declares no client capability (sampling,
  // elicitation, roots) in its initialize. POSTed under the request's session; the server answers 202.
  asio::awaitable<void> AnswerServerRequest(const StreamReading& reading, const std::string& method, json id) {
    json answer = {{"jsonrpc", "2.0"}, {"id", std::move(id)}};
    if (method == "ping") {
      answer["result"] = json::object();
    } else {
      answer["error"] = {{"code", -32601},
                         {"message", absl::StrCat("toolgate does not offer ", method.substr(0, 64),
                                                  " to MCP servers: it is a gateway and declares no client "
                                                  "capabilities")}};
    }
    spdlog::debug("connector {}: MCP server request {} during {} answered {}", config_.id, method.substr(0, 64),
                  reading.method.substr(0, 64), method == "ping" ? "with an empty result" : "-32601");
    const milliseconds left =
        std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(reading.deadline - clock_.now_monotonic()));
    auto post_op = Post(MessageText(answer), left, reading.session, nullptr);
    Posted posted = co_await std::move(post_op);
    const RpcOutcome& out = posted.outcome;
    if (out.kind != Kind::kResponse || out.http_status < 200 || out.http_status >= 300) {
      spdlog::warn("connector {}: the answer to the MCP server's {} was not accepted: {}", config_.id,
                   method.substr(0, 64), out.error.empty() ? absl::StrCat("HTTP ", out.http_status) : out.error);
    }
  }

  const ConnectorConfig& config_;
  net::ConnectionPool& pool_;
  const Clock& clock_;
  const std::shared_ptr<const net::TlsClientContext> tls_;
  const std::shared_ptr<ConnectorCredentials> credentials_;  // thread-safe; shared with ForAnotherLoop's
  std::string session_id_;
  std::string protocol_version_;
  uint64_t generation_ = 1;
};

}  // namespace

namespace {

// What a call that could not set up its session ends with. A refusal of toolgate's `initialize` (a
// JSON-RPC error, even -32602, or an HTTP 4xx) names toolgate's request, not the agent's call: it is
// the connector's failure (an unreadable answer, counted toward the breaker), never `tool_rejected`.
// A 429 stays a throttle.
RpcOutcome InitializeFailed(RpcOutcome init) {
  if (init.kind != Kind::kResponse || init.http_status == 429) return init;
  RpcOutcome failed;
  failed.kind = Kind::kResponseInvalid;
  failed.http_status = init.http_status;
  const json* error = init.message && init.message->is_object() && init.message->contains("error")
                          ? &(*init.message)["error"]
                          : nullptr;
  failed.error = error != nullptr ? absl::StrCat("the MCP server refused initialize: JSON-RPC error ",
                                                 error->is_object() && error->contains("code") ? (*error)["code"].dump()
                                                                                               : std::string("?"),
                                                 " ", StringMember(*error, "message").substr(0, 200))
                                  : absl::StrCat("the MCP server refused initialize: HTTP ", init.http_status);
  return failed;
}

}  // namespace

json ProgressTokenOf(const json& request) {
  const auto params = request.find("params");
  if (params == request.end() || !params->is_object()) return nullptr;
  const auto meta = params->find("_meta");
  if (meta == params->end() || !meta->is_object()) return nullptr;
  const auto token = meta->find("progressToken");
  if (token == meta->end() || !(token->is_string() || token->is_number_integer())) return nullptr;
  return *token;
}

bool IsProgressFor(const json& m, const json& token) {
  if (StringMember(m, "method") != "notifications/progress") return false;
  const auto params = m.find("params");
  if (params == m.end() || !params->is_object()) return false;
  const auto named = params->find("progressToken");
  return named != params->end() && *named == token;
}

std::string StringMember(const json& message, const char* key) {
  if (!message.is_object()) return "";
  const auto it = message.find(key);
  return it != message.end() && it->is_string() ? it->get<std::string>() : "";
}

std::unique_ptr<McpTransport> MakeHttpTransport(const ConnectorConfig& config, net::ConnectionPool& pool,
                                                const Clock& clock, std::shared_ptr<const net::TlsClientContext> tls) {
  return std::make_unique<HttpTransport>(config, pool, clock, std::move(tls));
}

// The initialize under way: who waits for it, and how it ended.
struct McpClient::InitFlight {
  bool done = false;
  RpcOutcome outcome;
  std::vector<std::weak_ptr<asio::steady_timer>> waiters;
};

McpClient::McpClient(std::string connector_id, std::unique_ptr<McpTransport> transport, const Clock& clock)
    : connector_id_(std::move(connector_id)), transport_(std::move(transport)), clock_(clock) {}
McpClient::~McpClient() = default;

void McpClient::Stop() { transport_->Stop(); }

milliseconds McpClient::Left(std::chrono::steady_clock::time_point deadline) const {
  return std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(deadline - clock_.now_monotonic()));
}

json McpClient::NewRequest(const std::string& method, const json& params) {
  json request = {{"jsonrpc", "2.0"}, {"id", next_id_++}, {"method", method}};
  if (!params.is_null()) request["params"] = params;
  return request;
}

namespace {

// `request` as sent, with `arguments` (JSON object text, or empty: none) as its params' `arguments`.
std::string RequestText(const json& request, std::string_view arguments) {
  if (arguments.empty()) return request.dump(-1, ' ', false, json::error_handler_t::replace);
  json envelope = request;  // small: its params have no arguments
  json params = envelope.contains("params") ? std::move(envelope["params"]) : json::object();
  envelope.erase("params");
  std::string text = envelope.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string params_text = params.dump(-1, ' ', false, json::error_handler_t::replace);
  text.pop_back();         // the envelope's '}'
  params_text.pop_back();  // the params' '}'
  text.reserve(text.size() + params_text.size() + arguments.size() + 32);
  absl::StrAppend(&text, ",\"params\":", params_text, params_text.size() > 1 ? "," : "", "\"arguments\":");
  text.append(arguments);
  text.append("}}");
  return text;
}

}  // namespace

asio::awaitable<RpcOutcome> McpClient::Call(std::string method, json params, milliseconds timeout,
                                            NotificationSink notify, std::string_view arguments) {
  const auto deadline = clock_.now_monotonic() + timeout;
  auto connect_op = transport_->Connect(timeout);
  RpcOutcome connected = co_await std::move(connect_op);
  if (connected.kind != Kind::kResponse) co_return connected;
  for (int round = 0;; ++round) {
    auto init_op = EnsureInitialized(deadline);
    RpcOutcome init = co_await std::move(init_op);
    if (!Succeeded(init)) co_return InitializeFailed(std::move(init));
    const uint64_t generation = transport_->generation();
    json request = NewRequest(method, params);
    auto request_op = transport_->Request(request, RequestText(request, arguments), Left(deadline), notify);
    RpcOutcome out = co_await std::move(request_op);
    if (!out.stale_session || round > 0) co_return out;
    // The server forgot the session: initialize once more (once for every caller that saw it go).
    spdlog::info("connector {}: MCP session went stale (HTTP {}), initializing again", connector_id_, out.http_status);
    if (transport_->generation() == generation) transport_->DropSession();
  }
}

asio::awaitable<RpcOutcome> McpClient::EnsureInitialized(std::chrono::steady_clock::time_point deadline) {
  for (int round = 0; round < 3; ++round) {
    if (initialized_generation_ == transport_->generation()) {
      RpcOutcome ok;
      ok.message = json{{"result", json::object()}};
      co_return ok;
    }
    if (init_ && !init_->done) {
      // Another caller's initialize is under way: wait for it (at most until this call's deadline).
      std::shared_ptr<InitFlight> flight = init_;
      auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor);
      timer->expires_after(Left(deadline));
      flight->waiters.push_back(timer);
      boost::system::error_code ec;
      auto wait_op = timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      co_await std::move(wait_op);
      if (!flight->done) {
        RpcOutcome timed_out;
        timed_out.kind = Kind::kTimeout;
        timed_out.error = "timed out waiting for the MCP server's initialize";
        co_return timed_out;
      }
      if (!Succeeded(flight->outcome)) co_return flight->outcome;
      continue;
    }
    auto flight = std::make_shared<InitFlight>();
    init_ = flight;
    auto init_op = Initialize(deadline);
    RpcOutcome out = co_await std::move(init_op);
    flight->done = true;
    flight->outcome = out;
    for (const auto& w : flight->waiters) {
      if (auto t = w.lock()) t->cancel();
    }
    if (!Succeeded(out)) co_return out;
  }
  RpcOutcome unstable;
  unstable.kind = Kind::kConnectionLost;
  unstable.error = "the MCP session kept changing during initialize";
  co_return unstable;
}

asio::awaitable<RpcOutcome> McpClient::Initialize(std::chrono::steady_clock::time_point deadline) {
  const uint64_t generation = transport_->generation();
  const json params = {{"protocolVersion", kClientProtocolVersion},
                       {"capabilities", json::object()},
                       {"clientInfo", {{"name", "toolgate"}, {"version", TOOLGATE_VERSION}}}};
  json request = NewRequest("initialize", params);
  auto request_op = transport_->Request(request, RequestText(request, {}), Left(deadline), {});
  RpcOutcome out = co_await std::move(request_op);
  if (!Succeeded(out)) {
    if (out.kind == Kind::kResponse && out.message) {
      spdlog::warn("connector {}: MCP initialize refused: {}", connector_id_, out.message->dump().substr(0, 300));
    }
    co_return out;
  }
  const json& result = (*out.message)["result"];
  const std::string version = StringMember(result, "protocolVersion");
  if (version != kClientProtocolVersion && version != kFallbackProtocolVersion && version != "2025-03-26") {
    RpcOutcome unsupported;
    unsupported.kind = Kind::kResponseInvalid;
    unsupported.error =
        absl::StrCat("the MCP server speaks protocol revision '", version.substr(0, 32), "', which toolgate does not");
    co_return unsupported;
  }
  transport_->Initialized(version);
  json notification = {{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}};
  auto notify_op = transport_->Notify(notification, Left(deadline));
  RpcOutcome notified = co_await std::move(notify_op);
  if (notified.kind != Kind::kResponse) co_return notified;
  ServerInfo info;
  info.protocol_version = version;
  if (auto s = result.find("serverInfo"); s != result.end() && s->is_object()) {
    if (s->contains("name") && (*s)["name"].is_string()) info.name = (*s)["name"];
    if (s->contains("version") && (*s)["version"].is_string()) info.version = (*s)["version"];
  }
  server_info_ = std::move(info);
  initialized_generation_ = generation;
  spdlog::info("connector {}: MCP server {} {} initialized (protocol {})", connector_id_, server_info_->name,
               server_info_->version, version);
  co_return out;
}

}  // namespace toolgate::mcp
