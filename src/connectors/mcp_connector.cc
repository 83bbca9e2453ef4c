#include "toolgate/connectors/mcp_connector.h"

#include <map>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate {

namespace asio = boost::asio;
using json = nlohmann::json;
using Kind = DownstreamResult::Kind;
using std::chrono::milliseconds;

namespace {

constexpr char kMetaIdempotencyKey[] = "io.toolgate/idempotency_key";
constexpr char kMetaExecutionId[] = "io.toolgate/execution_id";
constexpr int kMaxListPages = 100;
constexpr milliseconds kFirstListRetry{1000};
constexpr milliseconds kMaxListRetry{30'000};
constexpr milliseconds kSecondListFetch{2'000};
// The least time between two fetches of the tool list that notifications/tools/list_changed ask
// for: 1 s, doubled by each notification that comes within it, up to 30 s, and back to 1 s once a
// wait runs its course without one. A server sending them without end (each fetch of a list up to
// 350 KB, and its store write) gets a fetch every 30 s, not one per notification.
constexpr milliseconds kMinListInterval{1'000};
constexpr milliseconds kMaxListInterval{30'000};
// A notification larger than this (its JSON text, as relayed) is not relayed: what progress says
// (token, progress, total, a message) is small, a log message should be, and the client's stream
// holds up to 16 of them (docs/mcp.md "Progress and log messages").
constexpr size_t kMaxNotificationBytes = 16 * 1024;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool Succeeded(const mcp::RpcOutcome& o) {
  return o.kind == Kind::kResponse && o.message && o.message->is_object() && o.message->contains("result");
}

// Why an exchange gave no result, for logs and health reports.
std::string Describe(const mcp::RpcOutcome& o) {
  if (o.kind == Kind::kResponse && o.message && o.message->contains("error")) {
    return absl::StrCat("JSON-RPC error ", Dump((*o.message)["error"]).substr(0, 200));
  }
  if (!o.error.empty()) return o.error;
  return absl::StrCat("HTTP ", o.http_status);
}

// MCP tool names (design §14).
bool IsValidServerToolName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

// What a tools/call exchange means for the engine (design §14).
DownstreamResult ToDownstream(mcp::RpcOutcome out) {
  DownstreamResult r;
  r.kind = out.kind;
  r.status = out.http_status == 0 ? 200 : out.http_status;
  r.retry_after_s = out.retry_after_s;
  r.error = std::move(out.error);
  if (out.kind != Kind::kResponse) return r;
  if (!out.message) {
    if (r.status >= 200 && r.status < 300) r.kind = Kind::kResponseInvalid;  // 2xx without an answer
    return r;
  }
  json& m = *out.message;
  if (auto e = m.find("error"); e != m.end()) {
    r.kind = Kind::kRpcError;
    r.rpc_code =
        e->is_object() && e->contains("code") && (*e)["code"].is_number_integer() ? (*e)["code"].get<int>() : -32603;
    json error = e->is_object() ? std::move(*e) : json{{"code", r.rpc_code}, {"message", "malformed error"}};
    r.body = Dump(error);
    r.error = absl::StrCat("JSON-RPC error ", r.rpc_code, ": ", mcp::StringMember(error, "message").substr(0, 200));
    r.parsed_body = std::move(error);
    return r;
  }
  json& result = m["result"];
  if (!result.is_object()) {
    r.kind = Kind::kResponseInvalid;
    r.error = "the MCP server's tools/call result is not an object";
    return r;
  }
  const bool is_error = result.contains("isError") && result["isError"].is_boolean() && result["isError"].get<bool>();
  r.kind = is_error ? Kind::kToolError : Kind::kResponse;
  r.status = 200;
  r.body = Dump(result);
  r.parsed_body = std::move(result);
  return r;
}

// Runs `work` with `run_blocking` (the store pool) and resumes the caller on its own executor with
// the result; without a pool, runs it here.
template <typename T>
asio::awaitable<T> OffLoop(const std::function<void(std::function<void()>)>& run_blocking, std::function<T()> work) {
  if (!run_blocking) co_return work();
  auto initiate = [&run_blocking, work = std::move(work)](auto handler) mutable {
    auto waiting = std::make_shared<decltype(handler)>(std::move(handler));
    run_blocking([waiting, work = std::move(work)]() mutable {
      T value = work();
      auto executor = asio::get_associated_executor(*waiting);
      asio::post(executor, [waiting, value = std::move(value)]() mutable { std::move (*waiting)(std::move(value)); });
    });
  };
  auto op = asio::async_initiate<decltype(asio::use_awaitable), void(T)>(std::move(initiate), asio::use_awaitable);
  co_return co_await std::move(op);
}

}  // namespace

// The refresh loop's view of the connector: whether it is stopping, and its timer.
struct McpConnector::Shared {
  bool stopped = false;
  bool refresh_now = false;  // tools/list_changed arrived
  bool cooling = false;      // the refresh loop waits out the least interval: notifications do not end it
  std::unique_ptr<asio::steady_timer> timer;

  // notifications/tools/list_changed, on the main loop: the refresh loop's wait ends now, unless it
  // is the wait that keeps fetches the least interval apart.
  void ToolsChanged() {
    refresh_now = true;
    if (timer && !cooling) timer->cancel();
  }
};

// Over HTTP, one client per event loop and tenant, each with a session of its own, keyed by the loop
// (its io_context) and the tenant: a server that keeps state per session (what a tool remembered, a
// subscription, a log level) never shows one tenant's to another. The map is shared by every loop;
// each client is used only on its own loop. Bounded: past kMaxClients, the least recently used
// client with no call under way is let go (its session left to the server to expire).
struct McpConnector::LoopClients {
  static constexpr size_t kMaxClients = 4096;
  struct Entry {
    std::shared_ptr<mcp::McpClient> client;
    uint64_t last_used = 0;
  };
  absl::Mutex mu;
  std::map<std::pair<const asio::execution_context*, std::string>, Entry> clients ABSL_GUARDED_BY(mu);
  uint64_t uses ABSL_GUARDED_BY(mu) = 0;
};

absl::StatusOr<std::unique_ptr<McpConnector>> McpConnector::Create(const ConnectorConfig& config,
                                                                   net::ConnectionPool& pool, const Clock& clock,
                                                                   McpConnectorDeps deps) {
  std::unique_ptr<mcp::McpTransport> transport;
  if (config.kind == ConnectorKind::kMcpStdio) {
    transport = mcp::MakeStdioTransport(config, clock, deps.event_loop);
  } else {
    std::shared_ptr<const net::TlsClientContext> tls;
    if (config.tls || config.auth.token_tls) {
      net::TlsOptions options{config.tls_options.ca_file, config.tls_options.client_cert_file,
                              config.tls_options.client_key_file};
      absl::StatusOr<std::shared_ptr<const net::TlsClientContext>> made = net::MakeTlsClientContext(options);
      if (!made.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("connectors.", config.id, ".tls: ", made.status().message()));
      }
      tls = *std::move(made);
    }
    transport = mcp::MakeHttpTransport(config, pool, clock, std::move(tls));
  }
  auto connector = std::make_unique<McpConnector>(config, clock, std::move(deps), std::move(transport));
  // The last list any instance saw, until the server gives a fresh one (design §17.7).
  absl::StatusOr<std::optional<McpServerRecord>> saved = McpToolRegistry::Load(connector->deps_.store, config.id);
  if (!saved.ok()) {
    spdlog::warn("connector {}: saved MCP tool list unreadable: {}", config.id, saved.status().ToString());
  } else if (saved->has_value()) {
    const json tools = ParseJsonWithin((*saved)->tools_json);
    if (connector->Publish(tools)) {
      spdlog::info("connector {}: {} MCP tool(s) from the saved list", config.id,
                   connector->deps_.tools.ToolCount(config.id));
    }
  }
  return connector;
}

McpConnector::McpConnector(const ConnectorConfig& config, const Clock& clock, McpConnectorDeps deps,
                           std::unique_ptr<mcp::McpTransport> transport)
    : config_(config),
      clock_(clock),
      deps_(std::move(deps)),
      client_(config.id, std::move(transport), clock),
      shared_(std::make_shared<Shared>()),
      loop_clients_(std::make_unique<LoopClients>()) {}

McpConnector::~McpConnector() { Stop(); }

bool McpConnector::Publish(const json& tools) {
  if (!tools.is_array()) return false;
  std::vector<McpTool> list;
  for (const json& t : tools) {
    const std::string name =
        t.is_object() && t.contains("name") && t["name"].is_string() ? t["name"].get<std::string>() : "";
    const std::string exposed = config_.tool_prefix + name;
    if (!IsValidServerToolName(name) || !IsValidToolName(exposed)) {
      spdlog::warn("connector {}: MCP tool '{}' left out: not a valid tool name", config_.id, name.substr(0, 200));
      continue;
    }
    json definition = t;
    definition["name"] = exposed;
    list.push_back(McpTool{exposed, name, config_.id, Dump(definition)});
  }
  deps_.tools.Publish(config_.id, std::move(list));
  return true;
}

asio::awaitable<std::optional<CircuitBreakerService::Permit>> McpConnector::BackgroundPermit() {
  if (deps_.background == nullptr) {
    CircuitBreakerService::Permit unchecked;
    unchecked.allowed = true;
    co_return unchecked;
  }
  auto permit_op = OffLoop<std::optional<CircuitBreakerService::Permit>>(
      deps_.run_blocking,
      [background = deps_.background, &config = config_] { return background->PermitBackground(config); });
  co_return co_await std::move(permit_op);
}

void McpConnector::RecordBackground(const CircuitBreakerService::Permit& permit, DownstreamResult result) {
  if (deps_.background == nullptr) return;
  auto record = [background = deps_.background, &config = config_, permit, result = std::move(result)] {
    background->RecordBackground(config, permit, result);
  };
  if (deps_.run_blocking) {
    deps_.run_blocking(std::move(record));
  } else {
    record();
  }
}

asio::awaitable<absl::Status> McpConnector::RefreshTools() {
  // No slot, never the probe: only while the breaker is CLOSED (design §17.7).
  auto permit_op = BackgroundPermit();
  const std::optional<CircuitBreakerService::Permit> permit = co_await std::move(permit_op);
  if (!permit) co_return absl::FailedPreconditionError("tools/list: the connector's breaker is not closed");
  const milliseconds timeout(config_.timeout_ms);
  json tools = json::array();
  size_t list_bytes = 2;  // "[]": the list's JSON text, as it is saved, grows by each page's tools
  std::optional<std::string> cursor;
  DownstreamResult last;  // the last exchange, for the breaker
  for (int page = 0; page < kMaxListPages; ++page) {
    json params = cursor ? json{{"cursor", *cursor}} : json(nullptr);
    const auto sent = clock_.now_monotonic();
    auto list_op = client_.Call("tools/list", std::move(params), timeout);
    mcp::RpcOutcome out = co_await std::move(list_op);
    const bool succeeded = Succeeded(out);
    const std::string why = succeeded ? "" : Describe(out);
    last = ToDownstream(out);
    last.latency_ms = std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - sent).count();
    if (!succeeded) {
      RecordBackground(*permit, std::move(last));
      co_return absl::UnavailableError(absl::StrCat("tools/list: ", why));
    }
    const json& result = (*out.message)["result"];
    if (!result.is_object() || !result.contains("tools") || !result["tools"].is_array()) {
      RecordBackground(*permit, std::move(last));  // the server answered: not its failure
      co_return absl::UnavailableError("tools/list: the answer holds no tools array");
    }
    // A list larger than a store item holds is refused whole, and no further page is asked for:
    // pages of up to max_response_bytes each, 100 of them, would otherwise be gathered, copied and
    // served to every agent's tools/list (gigabytes from one server).
    for (const json& t : result["tools"]) list_bytes += Dump(t).size() + 1;
    if (list_bytes > McpToolRegistry::kMaxListBytes) {
      RecordBackground(*permit, std::move(last));  // the server answered: not its failure
      co_return absl::ResourceExhaustedError(
          absl::StrCat("tools/list: the server's tool list is larger than ", McpToolRegistry::kMaxListBytes / 1024,
                       " KB (more than ", list_bytes, " bytes after ", page + 1,
                       " page(s)), what toolgate holds for one connector: it is refused"));
    }
    for (const json& t : result["tools"]) tools.push_back(t);
    auto next = result.find("nextCursor");
    if (next == result.end() || !next->is_string() || next->get<std::string>().empty()) break;
    cursor = next->get<std::string>();
  }
  RecordBackground(*permit, std::move(last));
  Publish(tools);
  McpServerRecord record;
  record.tools_json = Dump(tools);
  if (record.tools_json != last_tools_json_) {
    if (!last_tools_json_.empty()) {
      spdlog::info("connector {}: the MCP server's tools changed ({} tool(s) listed)", config_.id,
                   deps_.tools.ToolCount(config_.id));
    }
    last_tools_json_ = record.tools_json;
  }
  if (std::optional<mcp::McpClient::ServerInfo> info = client_.server_info()) {
    record.server_name = info->name;
    record.server_version = info->version;
    record.protocol_version = info->protocol_version;
  }
  record.tool_count = static_cast<int64_t>(deps_.tools.ToolCount(config_.id));
  record.refreshed_at_ms = clock_.now_epoch_ms();
  if (deps_.run_blocking) {
    deps_.run_blocking([&store = deps_.store, id = config_.id, record = std::move(record)] {
      if (absl::Status s = McpToolRegistry::Save(store, id, record); !s.ok()) {
        spdlog::warn("connector {}: MCP tool list not saved in the store: {}", id, s.ToString());
      }
    });
  }
  co_return absl::OkStatus();
}

asio::awaitable<DownstreamResult> McpConnector::Call(const DownstreamRequest& request) {
  // `request` lives in the caller's frame, which waits here until the call is over.
  const asio::any_io_executor caller = co_await asio::this_coro::executor;
  if (std::shared_ptr<mcp::McpClient> client = ClientFor(caller, request.tenant_id)) {
    auto here = CallWith(*client, request);
    co_return co_await std::move(here);
  }
  auto on_loop = asio::co_spawn(deps_.event_loop, Call(request), asio::use_awaitable);
  co_return co_await std::move(on_loop);
}

std::shared_ptr<mcp::McpClient> McpConnector::ClientFor(const asio::any_io_executor& caller,
                                                        const std::string& tenant) {
  const std::shared_ptr<mcp::McpClient> main(std::shared_ptr<void>(), &client_);  // not owned
  if (!deps_.event_loop) return main;
  const asio::execution_context& loop = asio::query(caller, asio::execution::context);
  const bool on_main = &loop == &asio::query(deps_.event_loop, asio::execution::context);
  if (!on_main) {
    // Only another of the gateway's event loops (an io_context, each run by one thread) gets clients
    // of its own; a call from any other executor (a thread pool's, say) is carried over.
    using LoopExecutor = asio::io_context::executor_type;
    const bool on_a_loop =
        caller.target<LoopExecutor>() != nullptr || caller.target<asio::strand<LoopExecutor>>() != nullptr;
    if (!on_a_loop) return nullptr;
  }
  // A stdio server is one child on the main loop's pipes, one stream: no sessions to keep apart.
  if (config_.kind == ConnectorKind::kMcpStdio) return on_main ? main : nullptr;
  return TenantClient(loop, tenant);
}

std::shared_ptr<mcp::McpClient> McpConnector::TenantClient(const asio::execution_context& loop,
                                                           const std::string& tenant) {
  LoopClients& all = *loop_clients_;
  absl::MutexLock lock(&all.mu);
  auto [it, made] = all.clients.try_emplace({&loop, tenant});
  it->second.last_used = ++all.uses;
  if (!made) return it->second.client;
  std::unique_ptr<mcp::McpTransport> transport = client_.transport().ForAnotherLoop();
  if (!transport) {  // an HTTP transport always has a twin: never here
    all.clients.erase(it);
    return std::shared_ptr<mcp::McpClient>(std::shared_ptr<void>(), &client_);
  }
  auto client = std::make_shared<mcp::McpClient>(config_.id, std::move(transport), clock_);
  // The server says its tools changed, on this session: the main loop refreshes the list.
  client->transport().OnToolsChanged(
      [main = deps_.event_loop, shared = shared_] { asio::post(main, [shared] { shared->ToolsChanged(); }); });
  it->second.client = client;
  if (all.clients.size() > LoopClients::kMaxClients) {
    auto oldest = all.clients.end();
    for (auto c = all.clients.begin(); c != all.clients.end(); ++c) {
      if (c->second.client.use_count() > 1 || c == it) continue;  // a call under way holds it
      if (oldest == all.clients.end() || c->second.last_used < oldest->second.last_used) oldest = c;
    }
    if (oldest != all.clients.end()) all.clients.erase(oldest);
  }
  return client;
}

asio::awaitable<HealthReport> McpConnector::CheckHealth() {
  if (!deps_.event_loop) {
    auto here = CheckHealthOnLoop();
    co_return co_await std::move(here);
  }
  auto on_loop = asio::co_spawn(deps_.event_loop, CheckHealthOnLoop(), asio::use_awaitable);
  co_return co_await std::move(on_loop);
}

asio::awaitable<DownstreamResult> McpConnector::CallWith(mcp::McpClient& client, const DownstreamRequest& request) {
  const auto start = clock_.now_monotonic();
  const auto deadline = start + milliseconds(config_.timeout_ms);
  auto left = [&] { return std::chrono::duration_cast<milliseconds>(deadline - clock_.now_monotonic()); };
  std::string name = request.tool_name;
  if (name.rfind(config_.tool_prefix, 0) == 0) name = name.substr(config_.tool_prefix.size());
  // The arguments go as the admission left them: the dump of a JSON object (ToolInvoker::CheckInput),
  // on one line, never parsed again (a tree of a large input costs many times its text).
  const std::string_view arguments = request.body.empty() ? std::string_view("{}") : std::string_view(request.body);
  json params = {{"name", name},
                 {"_meta", {{kMetaIdempotencyKey, request.idempotency_key}, {kMetaExecutionId, request.execution_id}}}};
  mcp::NotificationSink notify;
  if (const std::shared_ptr<const NotificationRelay>& relay = request.notifications) {
    // The server hears a token of toolgate's, unique to the call (a stdio server's notifications
    // share one stream), and the caller gets its own back.
    if (!relay->token_json.empty()) params["_meta"]["progressToken"] = request.execution_id;
    notify = [relay, id = config_.id](json m) {
      const std::string method = m.value("method", "");
      json p = m.contains("params") && m["params"].is_object() ? std::move(m["params"]) : json::object();
      const bool progress = method == "notifications/progress";
      if (progress) {
        if (relay->token_json.empty()) return false;
        p.erase("progressToken");  // toolgate's own: the caller's goes in its place, as its text
      } else if (method == "notifications/message") {
        const json* level = p.contains("level") ? &p["level"] : nullptr;
        const int severity = level != nullptr && level->is_string() ? LogSeverity(level->get<std::string>()) : -1;
        if (relay->min_log_severity < 0 || severity < relay->min_log_severity) return false;
      } else {
        return false;
      }
      std::string params_text = p.dump(-1, ' ', false, json::error_handler_t::replace);
      if (progress) {  // the caller's token spliced in as it sent it (a number parsed would lose digits)
        params_text =
            "{\"progressToken\":" + relay->token_json + (params_text.size() > 2 ? "," : "") + params_text.substr(1);
      }
      std::string text = R"({"jsonrpc":"2.0","method":)" + json(method).dump() + R"(,"params":)" + params_text + "}";
      if (text.size() > kMaxNotificationBytes) {
        spdlog::debug("connector {}: a {} of {} bytes was not relayed", id, method, text.size());
        return false;
      }
      relay->relay(std::move(text), method == "notifications/progress");
      return true;
    };
  }
  std::vector<DownstreamResult::FailedAttempt> failed;
  for (int attempt = 1;; ++attempt) {
    auto call_op = client.Call("tools/call", params, std::max(left(), milliseconds(1)), notify, arguments);
    mcp::RpcOutcome out = co_await std::move(call_op);
    DownstreamResult result = ToDownstream(std::move(out));
    result.latency_ms = std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - start).count();
    // Only a connection never made is safe to try again: the server saw nothing (design §13).
    const milliseconds wait(std::min<int64_t>(config_.retry.max_backoff_ms,
                                              int64_t{config_.retry.backoff_ms} << std::min(attempt - 1, 20)));
    const bool again =
        result.kind == Kind::kConnectFailed && attempt < config_.retry.max_attempts && wait + milliseconds(1) < left();
    if (!again) {
      result.failed_attempts = std::move(failed);
      co_return result;
    }
    failed.push_back({attempt, FailureReason::kConnectionFailed, 0, result.latency_ms});
    asio::steady_timer timer(co_await asio::this_coro::executor, wait);
    auto wait_op = timer.async_wait(asio::use_awaitable);
    co_await std::move(wait_op);
  }
}

asio::awaitable<HealthReport> McpConnector::CheckHealthOnLoop() {
  HealthReport report;
  report.target = config_.kind == ConnectorKind::kMcp
                      ? absl::StrCat(config_.url, " (JSON-RPC ping)")
                      : absl::StrCat(config_.command.front(), " (JSON-RPC ping over stdio)");
  // The operator asked: the ping goes whatever the breaker says; it counts toward the breaker only
  // where background traffic would (CLOSED), like a tools/list (design §17.7).
  auto permit_op = BackgroundPermit();
  const std::optional<CircuitBreakerService::Permit> permit = co_await std::move(permit_op);
  const auto sent = clock_.now_monotonic();
  auto ping_op = client_.Call("ping", json(nullptr), milliseconds(std::min(config_.timeout_ms, 5000)));
  mcp::RpcOutcome out = co_await std::move(ping_op);
  report.status = out.http_status;
  report.healthy = Succeeded(out);
  if (!report.healthy) report.error = Describe(out);
  if (permit) {
    DownstreamResult result = ToDownstream(std::move(out));
    result.latency_ms = std::chrono::duration_cast<milliseconds>(clock_.now_monotonic() - sent).count();
    RecordBackground(*permit, std::move(result));
  }
  co_return report;
}

void McpConnector::Start(asio::any_io_executor event_loop) {
  shared_->timer = std::make_unique<asio::steady_timer>(event_loop);
  // The server says its tools changed: refresh now (the loop's wait ends early).
  client_.transport().OnToolsChanged([shared = shared_] { shared->ToolsChanged(); });
  asio::co_spawn(event_loop, RefreshForever(this, shared_), asio::detached);
}

asio::awaitable<void> McpConnector::RefreshForever(McpConnector* self, std::shared_ptr<Shared> shared) {
  milliseconds retry = kFirstListRetry;
  milliseconds least_interval = kMinListInterval;
  std::optional<uint64_t> confirmed_session;
  while (!shared->stopped) {
    shared->refresh_now = false;
    const auto started = self->clock_.now_monotonic();
    auto refresh_op = self->RefreshTools();
    absl::Status refreshed = co_await std::move(refresh_op);
    if (shared->stopped) co_return;
    milliseconds wait = std::chrono::seconds(self->config_.tools_ttl_s);
    if (refreshed.ok()) {
      retry = kFirstListRetry;
      // Servers may register their tools once they see notifications/initialized, and not every
      // transport carries tools/list_changed to toolgate: a new session's list is fetched twice.
      if (self->client_.session() != confirmed_session) {
        confirmed_session = self->client_.session();
        wait = std::min(wait, kSecondListFetch);
      }
    } else {
      if (refreshed.code() == absl::StatusCode::kFailedPrecondition) {
        // The breaker is open: the server is left alone until a call's probe closes it.
        spdlog::debug("connector {}: MCP tool list not refreshed: {}", self->config_.id,
                      std::string(refreshed.message()));
      } else {
        spdlog::warn("connector {}: MCP tool list not refreshed ({} tool(s) still listed): {}", self->config_.id,
                     self->deps_.tools.ToolCount(self->config_.id), refreshed.ToString());
      }
      wait = std::min(wait, retry);
      retry = std::min(kMaxListRetry, retry * 2);
    }
    boost::system::error_code ec;
    if (!shared->refresh_now) {  // a notification that came during the fetch is not put off to the next
      shared->timer->expires_after(wait);
      auto wait_op = shared->timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      co_await std::move(wait_op);
    }
    if (!shared->refresh_now || shared->stopped) {
      least_interval = kMinListInterval;  // the wait ran its course: the server was quiet
      continue;
    }
    // Ended early by tools/list_changed: the next fetch still waits until `least_interval` after
    // this one began, whatever more notifications say meanwhile (only Stop ends that wait).
    const auto since = std::chrono::duration_cast<milliseconds>(self->clock_.now_monotonic() - started);
    if (since < least_interval) {
      shared->cooling = true;
      shared->timer->expires_after(least_interval - since);
      auto cool_op = shared->timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      co_await std::move(cool_op);
      shared->cooling = false;
    }
    least_interval = std::min(kMaxListInterval, least_interval * 2);
  }
}

void McpConnector::Stop() {
  if (shared_->stopped) return;
  shared_->stopped = true;
  if (shared_->timer) shared_->timer->cancel();
  // The other loops' clients are HTTP ones, whose Stop does nothing: they end with the connector.
  client_.Stop();
}

}  // namespace toolgate
