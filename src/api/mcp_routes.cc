#include "api/mcp_routes.h"

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <cctype>
#include <deque>
#include <set>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "api/api_support.h"
#include "api/invocation.h"
#include "api/mcp_protocol.h"
#include "api/mcp_results.h"
#include "api/mcp_log_levels.h"
#include "api/mcp_session.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/domain/outcome.h"
#include "toolgate/domain/json_depth.h"

#ifndef TOOLGATE_VERSION
#define TOOLGATE_VERSION "0.0.0"
#endif

namespace toolgate::api {

namespace {

constexpr std::string_view kModernVersion = "2026-07-28";  // per-request _meta, no initialize, no sessions
// Revisions with initialize and sessions, oldest first: the last is the answer to a client asking
// for one toolgate does not speak.
const std::vector<std::string> kInitializeVersions = {"2025-06-18", "2025-11-25"};
constexpr char kMetaVersion[] = "io.modelcontextprotocol/protocolVersion";
constexpr char kMetaIdempotencyKey[] = "io.toolgate/idempotency_key";
constexpr char kMetaMode[] = "io.toolgate/mode";  // "queued": answer at once with the execution id (§15)
constexpr int64_t kSessionTtlMs = int64_t{24} * 3600 * 1000;
constexpr int64_t kToolsListTtlMs = 10'000;    // kill switches change what a tenant sees
constexpr int64_t kDiscoverTtlMs = 3'600'000;  // versions and capabilities change with a deploy
constexpr int kUnauthenticated = -32001;       // implementation-defined range

bool IsInitializeVersion(std::string_view v) {
  return std::find(kInitializeVersions.begin(), kInitializeVersions.end(), v) != kInitializeVersions.end();
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// scheme://host[:port] of a URL or an Origin header, lowercased, the default port left out.
std::string NormalizeOrigin(std::string url) {
  url = Lower(std::move(url));
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return url;
  const size_t path = url.find('/', scheme_end + 3);
  if (path != std::string::npos) url.resize(path);
  const std::string scheme = url.substr(0, scheme_end);
  for (const auto& [s, port] : {std::pair{"http", ":80"}, std::pair{"https", ":443"}}) {
    const std::string p = port;
    if (scheme == s && url.size() > p.size() && url.compare(url.size() - p.size(), p.size(), p) == 0 &&
        url[url.size() - p.size() - 1] != ':') {
      url.resize(url.size() - p.size());
    }
  }
  return url;
}

std::string UrlHost(const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }

// An Mcp-Name value: plain, or the =?base64?…?= sentinel form (2026-07-28 Value Encoding).
std::optional<std::string> DecodeHeaderValue(const std::string& v) {
  constexpr std::string_view kPrefix = "=?base64?", kSuffix = "?=";
  if (v.size() >= kPrefix.size() + kSuffix.size() && v.compare(0, kPrefix.size(), kPrefix) == 0 &&
      v.compare(v.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
    std::string out;
    if (!absl::Base64Unescape(v.substr(kPrefix.size(), v.size() - kPrefix.size() - kSuffix.size()), &out)) {
      return std::nullopt;
    }
    return out;
  }
  return v;
}

// One tool as MCP clients see it, before kill switches.
struct McpTool {
  std::string name;
  std::string description;
  json input_schema;
  std::string connector_id;
  std::string action_type;  // effective (DESIGN §1): the config's, else the tool name
  json definition;          // an MCP server's Tool object (exposed name): listed as it is; null for http tools
};

bool AcceptsEventStream(const HttpRequest& req) {
  return Lower(req.Header("accept")).find("text/event-stream") != std::string::npos;
}

std::string SseEvent(const std::string& data) { return absl::StrCat("event: message\ndata: ", data, "\n\n"); }

// A tools/call whose client listens for progress or log messages (design §14): the notifications
// the server sends while the call runs, then the call's answer, as the events of one SSE stream.
// Fed and read on the call's event loop (Notify may be called from any thread: it posts there).
class ProgressStream final : public ResponseStream, public std::enable_shared_from_this<ProgressStream> {
 public:
  // Notifications not yet written, at most: a client reading slower than the server reports keeps
  // the latest progress (each says where the call is; an older one is superseded) and, when only
  // log messages are left to drop, loses the oldest of them. With the connector's 16 KB cap on
  // each, a slow or departed client holds at most 256 KB of them.
  static constexpr size_t kMaxPending = 16;

  explicit ProgressStream(const asio::any_io_executor& loop) : loop_(loop), wake_(loop) {}

  // `progress`: superseded by later progress (a log message is not: each says something of its own).
  void Notify(std::string notification_json, bool progress) {
    asio::post(loop_, [self = shared_from_this(), notification = std::move(notification_json), progress]() mutable {
      if (self->answer_taken_) return;  // the stream has ended
      if (self->pending_.size() >= kMaxPending) {
        auto oldest_progress =
            std::find_if(self->pending_.begin(), self->pending_.end(), [](const Pending& p) { return p.progress; });
        self->pending_.erase(oldest_progress != self->pending_.end() ? oldest_progress : self->pending_.begin());
      }
      self->pending_.push_back({SseEvent(notification), progress});
      self->wake_.cancel();
    });
  }
  // The call's JSON-RPC response; posted too, so what the server sent before it is written before
  // it. Of the progress not yet written only the latest stays (the answer supersedes the rest);
  // log messages all stay, in order.
  void Finish(std::string response_json) {
    asio::post(loop_, [self = shared_from_this(), response = std::move(response_json)]() mutable {
      auto& pending = self->pending_;
      auto last_progress = std::find_if(pending.rbegin(), pending.rend(), [](const Pending& p) { return p.progress; });
      if (last_progress != pending.rend()) {
        const Pending* keep = &*last_progress;
        pending.erase(std::remove_if(pending.begin(), pending.end(),
                                     [keep](const Pending& p) { return p.progress && &p != keep; }),
                      pending.end());
      }
      self->answer_ = std::move(response);
      self->wake_.cancel();
    });
  }

  // Until progress or the answer came.
  asio::awaitable<void> WaitFirst() {
    while (pending_.empty() && !answer_) {
      auto wait_op = Wait();
      co_await std::move(wait_op);
    }
  }
  // The answer, when it came before any progress (then no stream is needed), else nullopt.
  std::optional<std::string> AnswerAlone() {
    if (!pending_.empty() || !answer_) return std::nullopt;
    answer_taken_ = true;
    return std::move(*answer_);
  }

  asio::awaitable<std::optional<std::string>> Next() override {
    while (pending_.empty() && !answer_) {
      auto wait_op = Wait();
      co_await std::move(wait_op);
    }
    if (!pending_.empty()) {
      std::string event = std::move(pending_.front().event);
      pending_.pop_front();
      co_return event;
    }
    if (answer_taken_) co_return std::nullopt;
    answer_taken_ = true;
    co_return SseEvent(std::exchange(*answer_, std::string()));
  }

 private:
  asio::awaitable<void> Wait() {
    wake_.expires_at(asio::steady_timer::time_point::max());
    boost::system::error_code ec;
    auto wait_op = wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await std::move(wait_op);
  }

  asio::any_io_executor loop_;
  asio::steady_timer wake_;  // cancelled when an event comes
  struct Pending {
    std::string event;
    bool progress = false;
  };
  std::deque<Pending> pending_;
  std::optional<std::string> answer_;
  bool answer_taken_ = false;
};

}  // namespace

struct McpRoutes::Impl : GatewayContext {
  Impl(GatewayContext& g, std::string session_key)
      : GatewayContext(g), sessions(std::move(session_key), kSessionTtlMs) {}

  McpSessionIds sessions;
  McpLogLevels log_levels{engine.store(), clock};
  std::string public_url;
  std::set<std::string> allowed_origins;

  // What one JSON-RPC request is answered under.
  struct Call {
    const HttpRequest& req;
    const auth::Principal& principal;
    mcp::JsonRpcMessage& msg;  // tools/call takes the arguments out of it
    bool modern = false;       // 2026-07-28
  };

  void SetListenPort(int port) {
    const HostPort& listen = config.server.listen;
    public_url = config.mcp.public_url.empty() ? absl::StrCat("http://", UrlHost(listen.host), ":", port)
                                               : config.mcp.public_url;
    allowed_origins.insert(config.mcp.allowed_origins.begin(), config.mcp.allowed_origins.end());
    allowed_origins.insert(NormalizeOrigin(public_url));
    if (config.mcp.public_url.empty() && IsLoopback(listen.host)) {
      for (const char* host : {"localhost", "127.0.0.1", "[::1]"})
        allowed_origins.insert(absl::StrCat("http://", host, ":", port));
    }
  }

  std::string ResourceMetadataUrl() const { return public_url + "/.well-known/oauth-protected-resource/mcp"; }

  asio::awaitable<HttpResponse> Handle(HttpRequest req) {
    if (req.path != "/mcp") {
      if (req.method != "GET") co_return WithAllow(Error(405, "method_not_allowed", "use GET"), "GET");
      co_return Json(200, {{"resource", public_url + "/mcp"},
                           {"authorization_servers", config.mcp.authorization_servers},
                           {"bearer_methods_supported", {"header"}}});
    }
    // DNS-rebinding guard (§17.7): only a present Origin is checked, before anything else.
    if (const std::string origin = req.Header("origin");
        !origin.empty() && !allowed_origins.count(NormalizeOrigin(origin))) {
      co_return Plain(403, mcp::ErrorResponse("null", mcp::kInvalidRequest, "this Origin is not allowed"));
    }
    if (req.method == "GET") {
      co_return WithAllow(Plain(405, mcp::ErrorResponse("null", mcp::kInvalidRequest,
                                                        "toolgate offers no server-initiated stream: POST requests")),
                          "POST, DELETE");
    }
    if (req.method != "POST" && req.method != "DELETE") {
      co_return WithAllow(Plain(405, mcp::ErrorResponse("null", mcp::kInvalidRequest, "use POST")), "POST, DELETE");
    }
    auto token = BearerToken(req);
    absl::StatusOr<auth::Principal> principal =
        absl::UnauthenticatedError("an Authorization: Bearer token is required");
    if (token) principal = verifier.Verify(*token);
    if (!principal.ok()) {
      HttpResponse r =
          Plain(401, mcp::ErrorResponse("null", kUnauthenticated, std::string(principal.status().message())));
      r.headers.emplace_back("WWW-Authenticate", "Bearer resource_metadata=\"" + ResourceMetadataUrl() + "\"");
      co_return r;
    }
    if (HasTenantFields(req, nullptr)) {
      co_return Plain(400, mcp::ErrorResponse("null", mcp::kInvalidRequest,
                                              "tenant_id and account_id come from the token, never the request"));
    }
    // The access log names the tenant of every authenticated answer, as on /v1 (§17.12).
    HttpResponse answer;
    if (req.method == "DELETE") {
      answer = EndSession(req, *principal);
    } else {
      auto post = Post(req, *principal);
      answer = co_await std::move(post);
    }
    if (answer.tenant_id.empty()) answer.tenant_id = principal->tenant_id;
    co_return answer;
  }

  // DELETE /mcp: sessions keep no state, so ending one only acknowledges it (mcp_session.h).
  HttpResponse EndSession(const HttpRequest& req, const auth::Principal& principal) {
    const std::string id = req.Header("mcp-session-id");
    if (id.empty()) return Plain(400, mcp::ErrorResponse("null", mcp::kInvalidRequest, "Mcp-Session-Id is required"));
    if (!sessions.Verify(id, principal.tenant_id, clock.now_epoch_ms())) {
      return Plain(404, mcp::ErrorResponse("null", mcp::kInvalidRequest, "no such session"));
    }
    return HttpResponse{204, "", "application/json", {}, {}, {}};
  }

  asio::awaitable<HttpResponse> Post(HttpRequest& req, const auth::Principal& principal) {
    auto parsed = mcp::ParseJsonRpc(req.body);
    if (auto* e = std::get_if<mcp::JsonRpcError>(&parsed))
      co_return Reply(req, 400, mcp::ErrorResponse(e->id_json, e->code, e->message));
    std::string().swap(req.body);  // parsed: its text is not held for as long as a call runs
    mcp::JsonRpcMessage& msg = std::get<mcp::JsonRpcMessage>(parsed);
    const std::string header_version = req.Header("mcp-protocol-version");
    const bool known_header =
        header_version.empty() || header_version == kModernVersion || IsInitializeVersion(header_version);
    if (msg.kind != mcp::JsonRpcMessage::Kind::kRequest) {
      if (!known_header) co_return UnsupportedVersion(req, "null", header_version);
      co_return HttpResponse{202, "", "application/json", {}, {}, {}};  // notifications and client responses
    }

    std::string meta_version;
    if (msg.params.is_object()) {
      if (auto meta = msg.params.find("_meta"); meta != msg.params.end() && meta->is_object()) {
        if (auto v = meta->find(kMetaVersion); v != meta->end() && v->is_string()) meta_version = v->get<std::string>();
      }
    }
    Call c{req, principal, msg};
    if (!meta_version.empty() || header_version == kModernVersion) {
      if (auto refused = CheckModernRevision(c, header_version, meta_version)) co_return *refused;
      c.modern = true;
    } else if (msg.method != "initialize") {
      if (auto refused = CheckSessionRevision(c, header_version, known_header)) co_return *refused;
    }

    // S11: tenant and account come only from the token; a request naming either in its params is
    // refused, as a /v1 body naming them is (a tool's own arguments may name anything).
    if (msg.params.is_object() && (msg.params.contains("tenant_id") || msg.params.contains("account_id"))) {
      co_return InvalidParams(c,
                              "tenant_from_token_only: tenant_id and account_id come from the token, never the "
                              "request");
    }
    if (msg.method == "initialize" && !c.modern) co_return Initialize(c);
    if (msg.method == "ping") co_return Result(c, json::object());
    if (msg.method == "server/discover") co_return Discover(c);
    if (msg.method == "tools/list") {
      auto list = ToolsList(c);
      co_return co_await std::move(list);
    }
    if (msg.method == "tools/call") {
      auto call = ToolsCall(c);
      co_return co_await std::move(call);
    }
    if (msg.method == "logging/setLevel" && !c.modern) {
      auto set = SetLogLevel(c);
      co_return co_await std::move(set);
    }
    co_return Reply(
        req, c.modern ? 404 : 200,
        mcp::ErrorResponse(msg.id_json, mcp::kMethodNotFound, "method not found: " + msg.method.substr(0, 200)));
  }

  // 2026-07-28: every request names its revision in _meta, mirrored in headers that must match.
  std::optional<HttpResponse> CheckModernRevision(const Call& c, const std::string& header_version,
                                                  const std::string& meta_version) {
    if (meta_version.empty()) {
      return HeaderMismatch(
          c, absl::StrCat("MCP-Protocol-Version is ", header_version, " but params._meta has no ", kMetaVersion));
    }
    if (meta_version != kModernVersion) return UnsupportedVersion(c.req, c.msg.id_json, meta_version);
    if (header_version != meta_version) {
      return HeaderMismatch(c, absl::StrCat("MCP-Protocol-Version header '", header_version, "' does not match ",
                                            kMetaVersion, " '", meta_version, "'"));
    }
    return CheckMirroredHeaders(c, /*required=*/true);
  }

  // Mcp-Method and Mcp-Name, which mirror the body for proxies that route on headers: required and
  // checked in 2026-07-28, which defines them; in earlier revisions checked when sent, so that no
  // proxy in front routes or filters on a name the body does not call.
  std::optional<HttpResponse> CheckMirroredHeaders(const Call& c, bool required) {
    if (const std::string m = c.req.Header("mcp-method"); (required || !m.empty()) && m != c.msg.method) {
      return HeaderMismatch(c, absl::StrCat("Mcp-Method header '", m, "' does not match method '", c.msg.method, "'"));
    }
    if (c.msg.method == "tools/call" || c.msg.method == "resources/read" || c.msg.method == "prompts/get") {
      const std::string raw = c.req.Header("mcp-name");
      if (!required && raw.empty()) return std::nullopt;
      const char* field = c.msg.method == "resources/read" ? "uri" : "name";
      const auto value = c.msg.params.find(field);
      const std::string body_name = value != c.msg.params.end() && value->is_string() ? value->get<std::string>() : "";
      const std::optional<std::string> header_name = DecodeHeaderValue(raw);
      if (!header_name || header_name->empty() || *header_name != body_name) {
        return HeaderMismatch(c, absl::StrCat("Mcp-Name header does not match params.", field));
      }
    }
    return std::nullopt;
  }

  // Earlier revisions: a known MCP-Protocol-Version (or none), and a session only if toolgate issued it.
  std::optional<HttpResponse> CheckSessionRevision(const Call& c, const std::string& header_version,
                                                   bool known_header) {
    if (!known_header) return UnsupportedVersion(c.req, c.msg.id_json, header_version);
    if (std::optional<HttpResponse> mismatch = CheckMirroredHeaders(c, /*required=*/false)) return mismatch;
    // The session is optional; one the client sends must be one toolgate issued (else 404: the
    // client initializes again).
    if (const std::string sid = c.req.Header("mcp-session-id"); !sid.empty()) {
      if (!sessions.Verify(sid, c.principal.tenant_id, clock.now_epoch_ms())) {
        return Reply(c.req, 404,
                     mcp::ErrorResponse(c.msg.id_json, mcp::kInvalidRequest, "session not found: initialize again"));
      }
    }
    return std::nullopt;
  }

  HttpResponse Initialize(const Call& c) {
    std::string version = kInitializeVersions.back();
    if (c.msg.params.is_object()) {
      if (auto v = c.msg.params.find("protocolVersion");
          v != c.msg.params.end() && v->is_string() && IsInitializeVersion(v->get<std::string>())) {
        version = v->get<std::string>();
      }
    }
    json capabilities = Capabilities();
    capabilities["logging"] = json::object();  // logging/setLevel: session revisions only
    HttpResponse r =
        Result(c, {{"protocolVersion", version}, {"capabilities", capabilities}, {"serverInfo", ServerInfo()}});
    r.headers.emplace_back("Mcp-Session-Id", sessions.Issue(c.principal.tenant_id, version, clock.now_epoch_ms()));
    return r;
  }

  // logging/setLevel (design §14): the session's level, kept in the store for every instance
  // (McpLogLevels). From then on its calls to MCP servers relay the servers' log messages at that
  // level or above on the call's event stream. It needs a session: without one, later calls could
  // not be told apart from another client's.
  asio::awaitable<HttpResponse> SetLogLevel(const Call& c) {
    const json& params = c.msg.params;
    const auto level = params.is_object() ? params.find("level") : params.end();
    const int severity = level != params.end() && level->is_string() ? LogSeverity(level->get<std::string>()) : -1;
    if (severity < 0) {
      co_return InvalidParams(
          c, "params.level must be one of debug, info, notice, warning, error, critical, alert, emergency");
    }
    const std::string sid = c.req.Header("mcp-session-id");
    const std::optional<McpSessionIds::Session> session =
        sid.empty() ? std::nullopt : sessions.Verify(sid, c.principal.tenant_id, clock.now_epoch_ms());
    if (!session) {
      co_return Reply(c.req, 400,
                      mcp::ErrorResponse(c.msg.id_json, mcp::kInvalidRequest,
                                         "logging/setLevel needs a session: initialize, then send its Mcp-Session-Id"));
    }
    const int64_t expires_at_s = (session->issued_at_ms + kSessionTtlMs) / 1000 + 1;
    auto save_op =
        RunBlocking(pool, [&] { return log_levels.Set(c.principal.tenant_id, sid, severity, expires_at_s); });
    const absl::Status saved = co_await std::move(save_op);
    if (!saved.ok()) {
      spdlog::warn("mcp logging/setLevel: the level could not be saved: {}", saved.ToString());
      co_return Reply(c.req, 200,
                      mcp::ErrorResponse(c.msg.id_json, mcp::kInternalError,
                                         "the level could not be saved (the store is unavailable): try again"));
    }
    co_return Result(c, json::object());
  }

  // The level the request's session set (-1: none, or no session): from this instance's cache, or
  // one store read on the pool.
  asio::awaitable<int> SessionLogSeverity(const Call& c) {
    if (c.modern) co_return -1;
    const std::string sid = c.req.Header("mcp-session-id");
    if (sid.empty()) co_return -1;  // verified already (CheckSessionRevision)
    if (std::optional<int> known = log_levels.Cached(c.principal.tenant_id, sid)) co_return *known;
    auto read_op = RunBlocking(pool, [&] { return log_levels.Get(c.principal.tenant_id, sid); });
    co_return co_await std::move(read_op);
  }

  HttpResponse Discover(const Call& c) {
    std::vector<std::string> versions = kInitializeVersions;
    versions.emplace_back(kModernVersion);
    return Result(c, {{"supportedVersions", versions},
                      {"capabilities", Capabilities()},
                      {"serverInfo", ServerInfo()},
                      {"ttlMs", kDiscoverTtlMs},
                      {"cacheScope", "public"},
                      {"_meta", {{"io.modelcontextprotocol/serverInfo", ServerInfo()}}}});
  }

  static json Capabilities() { return {{"tools", {{"listChanged", false}}}}; }
  static json ServerInfo() { return {{"name", "toolgate"}, {"version", TOOLGATE_VERSION}}; }

  // Every tool an MCP client may be shown, before kill switches: the [tools."x"] entries of
  // configured connectors, sorted by name. MCP connectors' tools (design §14) join the list here.
  // The [tools] of http connectors, and every MCP connector's tools as its server lists them (the
  // last known list while the server is down).
  std::vector<McpTool> GatherTools() const {
    std::vector<McpTool> tools;
    for (const auto& [name, tc] : config.tools) {
      const ConnectorConfig* connector = engine.invoker().ResolveConnector(name);
      if (connector == nullptr || connector->is_mcp()) continue;  // an MCP tool comes from its server's list
      json schema = tc.input_schema.empty() ? json() : json::parse(tc.input_schema, nullptr, false);
      if (!schema.is_object()) schema = {{"type", "object"}};
      tools.push_back(
          {name, tc.description, std::move(schema), connector->id, tc.action_type.empty() ? name : tc.action_type, {}});
    }
    for (const ::toolgate::McpTool& t : engine.mcp_tools().Tools()) {
      json definition = ParseJsonWithin(t.definition_json);
      if (!definition.is_object()) continue;
      std::string action_type = t.name;
      if (auto tc = config.tools.find(t.name); tc != config.tools.end() && !tc->second.action_type.empty()) {
        action_type = tc->second.action_type;
      }
      tools.push_back({t.name, "", json(), t.connector_id, std::move(action_type), std::move(definition)});
    }
    std::sort(tools.begin(), tools.end(), [](const McpTool& a, const McpTool& b) { return a.name < b.name; });
    return tools;
  }

  asio::awaitable<HttpResponse> ToolsList(const Call& c) {
    std::vector<McpTool> tools = GatherTools();
    const std::string& tenant = c.principal.tenant_id;
    // Tools a kill switch blocks for this tenant are left out, by the check the invoker makes (S8).
    // When the store cannot say, a tool stays listed: a call to it is still checked.
    auto visible = co_await RunBlocking(pool, [&] {
      std::vector<bool> show(tools.size(), true);
      for (size_t i = 0; i < tools.size(); ++i) {
        auto match = engine.kill_switches().Match(tenant, tools[i].connector_id, tools[i].action_type, tools[i].name);
        if (!match.ok()) {
          spdlog::warn("mcp tools/list: kill switches unreadable, listing {}: {}", tools[i].name,
                       match.status().ToString());
        } else if (match->has_value()) {
          show[i] = false;
        }
      }
      return show;
    });
    json list = json::array();
    for (size_t i = 0; i < tools.size(); ++i) {
      if (!visible[i]) continue;
      if (tools[i].definition.is_object()) {
        list.push_back(std::move(tools[i].definition));
        continue;
      }
      json t = {{"name", tools[i].name}, {"inputSchema", tools[i].input_schema}};
      if (!tools[i].description.empty()) t["description"] = tools[i].description;
      list.push_back(std::move(t));
    }
    json result = {{"tools", std::move(list)}};
    if (c.modern) {
      result["ttlMs"] = kToolsListTtlMs;
      result["cacheScope"] = "private";  // kill switches make the list the tenant's own
    }
    co_return Result(c, result);
  }

  asio::awaitable<HttpResponse> ToolsCall(const Call& c) {
    const json& params = c.msg.params;
    if (!params.is_object()) co_return InvalidParams(c, "params must be an object");
    const auto name = params.find("name");
    if (name == params.end() || !name->is_string()) co_return InvalidParams(c, "params.name must be a string");
    const std::string tool = name->get<std::string>();
    const ConnectorConfig* connector = IsValidToolName(tool) ? engine.invoker().ResolveConnector(tool) : nullptr;
    if (connector == nullptr) co_return InvalidParams(c, "unknown tool: " + tool.substr(0, 200));
    const bool from_mcp_server = connector->is_mcp();
    auto arguments = std::make_shared<json>(json::object());
    if (auto a = c.msg.params.find("arguments"); a != c.msg.params.end()) {
      if (!a->is_object()) co_return InvalidParams(c, "params.arguments must be an object");
      *arguments = std::move(*a);  // taken out of the message, not copied
    }
    InvokeRequest ir;
    ir.principal = c.principal;
    ir.tool_name = tool;
    ir.input_json = Dump(*arguments);
    // Parsed once: the admission reads the tree, and lets go of it once it has checked the input.
    ir.input = std::move(arguments);
    json progress_token;  // null: the client does not listen for progress
    if (auto meta = params.find("_meta"); meta != params.end() && meta->is_object()) {
      // A string or a number (the schema's ProgressToken); anything else is not a token: no progress.
      if (auto token = meta->find("progressToken");
          token != meta->end() && (token->is_string() || token->is_number())) {
        progress_token = *token;
      }
      if (auto key = meta->find(kMetaIdempotencyKey); key != meta->end()) {
        if (!key->is_string() || !IsValidIdempotencyKey(key->get<std::string>())) {
          co_return InvalidParams(
              c, absl::StrCat("_meta[\"", kMetaIdempotencyKey, "\"] must be 1..255 printable ASCII characters"));
        }
        ir.idempotency_key = key->get<std::string>();
      }
      if (auto mode = meta->find(kMetaMode); mode != meta->end()) {
        if (!mode->is_string() || (*mode != "sync" && *mode != "queued")) {
          co_return InvalidParams(c, absl::StrCat("_meta[\"", kMetaMode, "\"] must be \"sync\" or \"queued\""));
        }
        if (*mode == "queued") {
          auto queued = ToolsCallQueued(c, tool, std::move(ir), from_mcp_server);
          co_return co_await std::move(queued);
        }
      }
    }
    // Only an MCP server reports progress or logs, and only on an event stream (chunked: HTTP/1.1)
    // can they reach the client.
    if (from_mcp_server && AcceptsEventStream(c.req) && c.req.version >= 11) {
      auto level_op = SessionLogSeverity(c);
      const int log_severity = co_await std::move(level_op);
      if (!progress_token.is_null() || log_severity >= 0) {
        auto streamed = ToolsCallWithProgress(c, tool, std::move(ir), progress_token, log_severity);
        co_return co_await std::move(streamed);
      }
    }
    auto run = RunInvocation(*this, std::move(ir));
    InvokeResult answer = co_await std::move(run);
    co_return Answered(c, mcp::ToCallAnswer(tool, std::move(answer), from_mcp_server));
  }

  // A tools/call whose client listens for progress or log messages (design §14): the call runs
  // beside this handler, which answers when the first of the server's notifications or the call's
  // answer comes — the answer first, as any call's; a notification first, an SSE stream of the
  // notifications and then the answer. The call goes on to its end (and its record) if the client
  // leaves the stream. `token`: null for no progress; `log_severity`: -1 for no log messages.
  asio::awaitable<HttpResponse> ToolsCallWithProgress(const Call& c, const std::string& tool, InvokeRequest ir,
                                                      const json& token, int log_severity) {
    const asio::any_io_executor loop = co_await asio::this_coro::executor;
    auto stream = std::make_shared<ProgressStream>(loop);
    auto relay = std::make_shared<NotificationRelay>();
    // The token as the client wrote it (a number beyond 64 bits keeps its digits), as ids are.
    if (!token.is_null())
      relay->token_json = c.msg.progress_token_json.empty() ? Dump(token) : c.msg.progress_token_json;
    relay->min_log_severity = log_severity;
    relay->relay = [stream](std::string notification_json, bool progress) {
      stream->Notify(std::move(notification_json), progress);
    };
    ir.notifications = std::move(relay);
    asio::co_spawn(loop, RunWithProgress(*this, std::move(ir), stream, tool, c.msg.id_json, c.modern), asio::detached);
    auto first_op = stream->WaitFirst();
    co_await std::move(first_op);
    if (std::optional<std::string> answer = stream->AnswerAlone()) co_return Reply(c.req, 200, std::move(*answer));
    HttpResponse r{200, "", "text/event-stream", {{"Cache-Control", "no-cache"}}, c.principal.tenant_id, stream};
    co_return r;
  }

  // Arguments by value: the coroutine outlives the handler that starts it.
  static asio::awaitable<void> RunWithProgress(Impl& self, InvokeRequest ir, std::shared_ptr<ProgressStream> stream,
                                               std::string tool, std::string id_json, bool modern) {
    std::string response;
    try {
      auto run = RunInvocation(self, std::move(ir));
      InvokeResult answer = co_await std::move(run);
      response = AnswerText(id_json, modern, mcp::ToCallAnswer(tool, std::move(answer), true));
    } catch (const std::exception& e) {
      spdlog::error("mcp tools/call {}: {}", tool.substr(0, 200), e.what());
      response = mcp::ErrorResponse(id_json, mcp::kInternalError, "internal error");
    } catch (...) {  // the stream must end whatever happened, or its connection would wait forever
      spdlog::error("mcp tools/call {}: unknown exception", tool.substr(0, 200));
      response = mcp::ErrorResponse(id_json, mcp::kInternalError, "internal error");
    }
    stream->Finish(std::move(response));
  }

  // A call's answer as the JSON-RPC response: a result, or the error (with its data) it maps to.
  HttpResponse Answered(const Call& c, mcp::CallAnswer a) {
    return Reply(c.req, 200, AnswerText(c.msg.id_json, c.modern, std::move(a)));
  }
  static std::string AnswerText(const std::string& id_json, bool modern, mcp::CallAnswer a) {
    if (a.is_rpc_error) {
      const json* data = a.error_data.is_null() ? nullptr : &a.error_data;
      return mcp::ErrorResponse(id_json, a.error_code, a.error_message, data);
    }
    if (modern) a.result["resultType"] = "complete";
    return mcp::ResultResponse(id_json, a.result);
  }

  // A queued tools/call (§17.7): 202 from the engine becomes a result holding the execution id and
  // status_url; anything else (invalid input, BLOCKED, queue full) is answered as a call's would be.
  asio::awaitable<HttpResponse> ToolsCallQueued(const Call& c, const std::string& tool, InvokeRequest ir,
                                                bool from_mcp_server) {
    QueueOrder order;  // no callback: an MCP client polls the status_url
    order.deadline_s = config.queue.default_deadline_s;
    order.max_per_tenant = config.queue.max_per_tenant;
    auto enqueue = RunEnqueue(*this, std::move(ir), order);
    InvokeResult answer = co_await std::move(enqueue);
    if (answer.refused() || !IsWaiting(answer.outcome)) {
      // As a call's answer would be: an MCP server's recorded result (an idempotency hit) unchanged.
      co_return Answered(c, mcp::ToCallAnswer(tool, std::move(answer), from_mcp_server));
    }
    const std::string& id = answer.execution_id;
    json structured = {
        {"execution_id", id}, {"outcome", answer.outcome}, {"status_url", answer.details.value("status_url", "")}};
    json result = {{"content", json::array({{{"type", "text"},
                                             {"text", "The call is queued as execution " + id +
                                                          "; it has not run yet. Its outcome will be at " +
                                                          structured["status_url"].get<std::string>() + "."}}})},
                   {"structuredContent", structured},
                   {"isError", false},
                   {"_meta", {{"io.toolgate/execution_id", id}}}};
    co_return Result(c, std::move(result));
  }

  // ---- answers -------------------------------------------------------------------------------------

  HttpResponse Result(const Call& c, json result) {
    if (c.modern) result["resultType"] = "complete";
    return Reply(c.req, 200, mcp::ResultResponse(c.msg.id_json, result));
  }
  HttpResponse InvalidParams(const Call& c, std::string_view message) {
    return Reply(c.req, 200, mcp::ErrorResponse(c.msg.id_json, mcp::kInvalidParams, message));
  }
  HttpResponse HeaderMismatch(const Call& c, std::string_view message) {
    return Reply(c.req, 400, mcp::ErrorResponse(c.msg.id_json, mcp::kHeaderMismatch, message));
  }
  HttpResponse UnsupportedVersion(const HttpRequest& req, const std::string& id_json, const std::string& requested) {
    std::vector<std::string> supported = kInitializeVersions;
    supported.emplace_back(kModernVersion);
    const json data = {{"supported", supported}, {"requested", requested.substr(0, 64)}};
    return Reply(req, 400,
                 mcp::ErrorResponse(id_json, mcp::kUnsupportedProtocolVersion,
                                    "unsupported protocol version: " + requested.substr(0, 64), &data));
  }

  // A JSON-RPC answer as JSON, or as one SSE event when the client accepts only an event stream.
  static HttpResponse Reply(const HttpRequest& req, int status, std::string body) {
    const std::string accept = Lower(req.Header("accept"));
    if (accept.find("text/event-stream") != std::string::npos && accept.find("application/json") == std::string::npos) {
      return HttpResponse{
          status, "event: message\ndata: " + body + "\n\n", "text/event-stream", {{"Cache-Control", "no-cache"}}, "",
          {}};
    }
    return HttpResponse{status, std::move(body), "application/json", {}, {}, {}};
  }
  static HttpResponse Plain(int status, std::string body) {
    return HttpResponse{status, std::move(body), "application/json", {}, {}, {}};
  }
  static HttpResponse WithAllow(HttpResponse r, const char* allow) {
    r.headers.emplace_back("Allow", allow);
    return r;
  }
};

McpRoutes::McpRoutes(GatewayContext& context, std::string session_key)
    : impl_(std::make_unique<Impl>(context, std::move(session_key))) {}
McpRoutes::~McpRoutes() = default;
void McpRoutes::SetListenPort(int port) { impl_->SetListenPort(port); }

bool McpRoutes::Serves(const std::string& path) {
  return path == "/mcp" || path == "/.well-known/oauth-protected-resource" ||
         path == "/.well-known/oauth-protected-resource/mcp";
}

asio::awaitable<HttpResponse> McpRoutes::Handle(HttpRequest request) {
  auto op = impl_->Handle(std::move(request));
  co_return co_await std::move(op);
}

}  // namespace toolgate::api
