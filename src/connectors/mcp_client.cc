#include "toolgate/connectors/mcp_client.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "toolgate/connectors/credentials.h"
#include "toolgate/connectors/http_connector.h"

#ifndef TOOLGATE_VERSION
#define TOOLGATE_VERSION "0.1.0"
#endif

namespace toolgate::mcp {

namespace asio = boost::asio;
using json = nlohmann::json;
using Kind = DownstreamResult::Kind;
using std::chrono::milliseconds;

namespace {

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

// text/event-stream (WHATWG): events separated by a blank line, each event's `data:` lines joined by
// "\n". Other fields (event, id, retry) and comments are skipped.
bool IsToolsChanged(const json& m) {
  return m.is_object() && m.value("method", "") == "notifications/tools/list_changed";
}

std::optional<json> PickFromEventStream(const std::string& body, const json& id, bool& tools_changed) {
  std::string data;
  bool has_data = false;
  auto dispatch = [&]() -> std::optional<json> {
    std::optional<json> found;
    if (has_data) {
      json m = json::parse(data, nullptr, false);
      if (!m.is_discarded()) found = PickResponse(m, id);
      tools_changed |= IsToolsChanged(m);
    }
    data.clear();
    has_data = false;
    return found;
  };
  size_t pos = 0;
  while (pos <= body.size()) {
    size_t end = body.find('\n', pos);
    if (end == std::string::npos) end = body.size();
    std::string line = body.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    pos = end + 1;
    if (line.empty()) {
      if (auto m = dispatch()) return m;
      if (end == body.size()) break;
      continue;
    }
    if (line.rfind("data:", 0) == 0) {
      std::string value = line.substr(5);
      if (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (has_data) data += '\n';
      data += value;
      has_data = true;
    }
    if (end == body.size()) break;
  }
  return dispatch();
}

class HttpTransport final : public McpTransport {
 public:
  HttpTransport(const ConnectorConfig& config, net::ConnectionPool& pool, const Clock& clock,
                std::shared_ptr<const net::TlsClientContext> tls)
      : config_(config),
        pool_(pool),
        clock_(clock),
        tls_(std::move(tls)),
        credentials_(config.id, config.auth, clock, &pool, config.auth.token_tls ? tls_ : nullptr) {}

  asio::awaitable<RpcOutcome> Connect(milliseconds) override { co_return RpcOutcome{}; }

  asio::awaitable<RpcOutcome> Request(const json& request, milliseconds timeout) override {
    auto post_op = Post(request, timeout);
    Posted posted = co_await std::move(post_op);
    RpcOutcome out = std::move(posted.outcome);
    if (out.kind != Kind::kResponse || out.stale_session || out.http_status < 200 || out.http_status >= 300)
      co_return out;
    const std::string type = Lower(posted.content_type);
    const json& id = request["id"];
    if (type.find("text/event-stream") != std::string::npos) {
      bool tools_changed = false;
      out.message = PickFromEventStream(posted.body, id, tools_changed);
      if (tools_changed) ToolsChanged();
    } else {
      json m = json::parse(posted.body, nullptr, false);
      if (!m.is_discarded()) out.message = PickResponse(m, id);
    }
    if (!out.message) {
      out.kind = Kind::kResponseInvalid;
      out.error = absl::StrCat("HTTP ", out.http_status, " (", posted.content_type.substr(0, 64),
                               ") held no JSON-RPC response with id ", id.dump());
      co_return out;
    }
    if (request.value("method", "") == "initialize" && !posted.session_id.empty()) session_id_ = posted.session_id;
    co_return out;
  }

  asio::awaitable<RpcOutcome> Notify(const json& notification, milliseconds timeout) override {
    auto post_op = Post(notification, timeout);
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
  struct Posted {
    RpcOutcome outcome;
    std::string body;
    std::string content_type;
    std::string session_id;
  };

  // One POST of `message`, with one re-send after a 401 to a fetched token (design §13).
  asio::awaitable<Posted> Post(const json& message, milliseconds timeout) {
    const auto start = clock_.now_monotonic();
    auto left = [&] {
      return std::max(milliseconds(1),
                      timeout - std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - start));
    };
    const std::string body = message.dump(-1, ' ', false, json::error_handler_t::replace);
    auto send_op = SendOnce(body, left());
    Sent sent = co_await std::move(send_op);
    if (sent.result.ok && sent.result.status == 401 && credentials_.RefreshesOn401()) {
      credentials_.InvalidateToken(sent.authorization);
      auto resend_op = SendOnce(body, left());
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

  asio::awaitable<Sent> SendOnce(const std::string& body, milliseconds timeout) {
    const auto start = clock_.now_monotonic();
    Sent sent;
    auto headers_op = credentials_.Headers(timeout);
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
    call.method = "POST";
    call.target = config_.path_prefix;
    call.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json, text/event-stream"}};
    sent.with_session = !session_id_.empty();
    if (sent.with_session) call.headers.emplace_back("Mcp-Session-Id", session_id_);
    if (!protocol_version_.empty()) call.headers.emplace_back("MCP-Protocol-Version", protocol_version_);
    for (auto& [name, value] : *credentials) {
      if (name == "Authorization") sent.authorization = value;
      call.headers.emplace_back(std::move(name), std::move(value));
    }
    call.body = body;
    call.timeout =
        std::max(milliseconds(1), timeout - std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - start));
    call.max_response_bytes = config_.max_response_bytes;
    auto call_op = net::AsyncHttpCall(std::move(call), &pool_);
    sent.result = co_await std::move(call_op);
    co_return sent;
  }

  const ConnectorConfig& config_;
  net::ConnectionPool& pool_;
  const Clock& clock_;
  const std::shared_ptr<const net::TlsClientContext> tls_;
  ConnectorCredentials credentials_;
  std::string session_id_;
  std::string protocol_version_;
  uint64_t generation_ = 1;
};

}  // namespace

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

asio::awaitable<RpcOutcome> McpClient::Call(std::string method, json params, milliseconds timeout) {
  const auto deadline = clock_.now_monotonic() + timeout;
  auto connect_op = transport_->Connect(timeout);
  RpcOutcome connected = co_await std::move(connect_op);
  if (connected.kind != Kind::kResponse) co_return connected;
  for (int round = 0;; ++round) {
    auto init_op = EnsureInitialized(deadline);
    RpcOutcome init = co_await std::move(init_op);
    if (!Succeeded(init)) co_return init;
    const uint64_t generation = transport_->generation();
    json request = NewRequest(method, params);
    auto request_op = transport_->Request(request, Left(deadline));
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
  auto request_op = transport_->Request(request, Left(deadline));
  RpcOutcome out = co_await std::move(request_op);
  if (!Succeeded(out)) {
    if (out.kind == Kind::kResponse && out.message) {
      spdlog::warn("connector {}: MCP initialize refused: {}", connector_id_, out.message->dump().substr(0, 300));
    }
    co_return out;
  }
  const json& result = (*out.message)["result"];
  const std::string version = result.is_object() ? result.value("protocolVersion", "") : "";
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
