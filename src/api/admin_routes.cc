#include "api/admin_routes.h"

#include <atomic>
#include <memory>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/admin_replays.h"
#include "api/api_support.h"
#include "api/views.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/control_bytes.h"
#include "toolgate/domain/ids.h"
#include "api/dashboard.h"
#include "api/openapi.h"
#include "api/process_metrics.h"
#include "api/routes.h"
#include "toolgate/engine/event_log.h"
#include "toolgate/engine/operator_status.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/domain/json_depth.h"

namespace toolgate::api {

// The routes reach what they share with the gateway by its names (config, engine, pool, ...).
struct AdminRoutes::Impl : GatewayContext {
  explicit Impl(GatewayContext& g) : GatewayContext(g), replays(g) {}

  AdminReplays replays;  // /admin/executions, /admin/replays (operator replays, bulk jobs)

  // How long a scrape waits for the store's gauges to be read.
  static constexpr int kStoreGaugeWaitMs = 2000;
  // A pass of the store's gauges is reading (RefreshStoreGauges); shared with the pass itself.
  std::shared_ptr<std::atomic<bool>> gauges_refreshing = std::make_shared<std::atomic<bool>>(false);

  // Reads the breakers, slots and kill switches into their gauges. On the pool: blocking reads.
  static void ReadStoreGauges(const Config& config, const Clock& clock, Engine& engine) {
    const int64_t now_s = clock.now_epoch_ms() / 1000;
    for (const auto& [id, c] : config.connectors) {
      if (auto b = engine.breakers().Read(id); b.ok()) {
        engine.metrics().BreakerState(id, b->state);
        const bool cooling = b->state == breaker::State::kOpen && b->open_until_epoch_sec > now_s;
        engine.metrics().BreakerCooldownRemaining(id,
                                                  cooling ? static_cast<double>(b->open_until_epoch_sec - now_s) : 0.0);
      }
      if (auto s = engine.slots().Read(id, c.concurrency); s.ok()) {
        engine.metrics().InFlight(id, static_cast<double>(s->in_flight), static_cast<double>(s->max_in_flight));
      }
    }
    if (auto kills = engine.kill_switches().List(); kills.ok()) {
      std::map<std::string, int> per_scope;
      for (const auto& k : *kills) ++per_scope[k.scope];
      engine.metrics().KillSwitchesActive(per_scope);
    }
  }

  // The store's gauges brought up to date by one pass of reads at a time, which a scrape waits for
  // kStoreGaugeWaitMs at most. With the store unreachable each read waits out its own timeout: a
  // scrape that waited for all of them (a breaker and the slots per connector, then the kill
  // switches) took 30 s, past Prometheus' scrape timeout, and the whole scrape was lost, the gauge
  // that says the store is failing included. A pass still reading when the wait ends goes on in the
  // background, and no other starts meanwhile; its values are the next scrape's.
  asio::awaitable<void> RefreshStoreGauges() {
    if (gauges_refreshing->exchange(true)) co_return;
    auto read = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor);
    read->expires_after(std::chrono::milliseconds(kStoreGaugeWaitMs));
    auto finished = std::make_shared<std::atomic<bool>>(false);
    // The pass holds what it needs, none of it this object's: the gateway joins the pool before it
    // lets the engine and the config go, but may let these routes go first.
    asio::post(pool,
               [&config = config, &clock = clock, &engine = engine, refreshing = gauges_refreshing, read, finished] {
                 ReadStoreGauges(config, clock, engine);
                 finished->store(true);
                 refreshing->store(false);
                 asio::post(read->get_executor(), [read] { read->cancel(); });
               });
    if (finished->load()) co_return;
    boost::system::error_code ignored;  // cancelled (read) or expired (the pass goes on)
    co_await read->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }

  asio::awaitable<HttpResponse> Handle(HttpRequest req) {
    if (std::optional<HttpResponse> refused = RefuseCrossSite(req)) co_return *refused;
    // The dashboard page holds no data (it reads the routes below, which need the token), so a
    // browser can load it and then ask for the token.
    if (req.path == "/" && req.method == "GET") {
      co_return HttpResponse{200,
                             std::string(kDashboardHtml),
                             "text/html; charset=utf-8",
                             {{"Cache-Control", "no-store"},
                              {"Content-Security-Policy",
                               "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:"}},
                             "",
                             {}};
    }
    // The API description holds no data either.
    if (req.path == "/openapi.json" && req.method == "GET") {
      co_return HttpResponse{200, OpenApiFor("admin", ""), "application/json", {{"Cache-Control", "no-cache"}}, "", {}};
    }
    if (!admin_token.empty()) {
      auto token = BearerToken(req);
      if (!token || token->size() != admin_token.size() ||
          CRYPTO_memcmp_shim(token->data(), admin_token.data(), admin_token.size()) != 0) {
        co_return Error(401, "unauthenticated", "the admin listener needs its bearer token");
      }
    }
    // From here the caller is authenticated (the token, or a loopback listener without one): a
    // refused write is audited (§17.9). What the checks above refuse is not — a 401 names nobody,
    // and a cross-site refusal is what any web page could make an operator's browser send. Nor is a
    // replay answered with its execution's outcome (BLOCKED 403): the request was carried out, and
    // EXECUTION_REPLAYED records what became of it.
    const bool write = req.method != "GET" && req.method != "HEAD";
    if (!write) {
      auto route_op = Route(std::move(req));
      co_return co_await std::move(route_op);
    }
    const std::string method = req.method, path = req.path, body = req.body;
    auto route_op = Route(std::move(req));
    HttpResponse answer = co_await std::move(route_op);
    if (answer.status >= 400 && answer.status < 500 && !answer.execution_outcome) {
      co_await RunBlocking(pool, [&] {
        AuditRefusal(method, path, body, answer);
        return 0;
      });
    }
    co_return answer;
  }

  // Every admin route after the listener's checks and authentication.
  asio::awaitable<HttpResponse> Route(HttpRequest req) {
    if (req.path == "/metrics" && req.method == "GET") {
      auto metrics_op = Metrics();
      co_return co_await std::move(metrics_op);
    }
    if (AdminReplays::Serves(req.path)) {
      auto replays_op = replays.Handle(std::move(req));
      co_return co_await std::move(replays_op);
    }
    if (req.path == "/admin/connectors" && req.method == "GET") {
      co_return co_await RunBlocking(pool, [this] { return Connectors(); });
    }
    if (req.path == "/admin/status" && req.method == "GET")
      co_return co_await RunBlocking(pool, [this] { return Status(); });
    if (req.path == "/admin/slo" && req.method == "GET")
      co_return Json(200, SloSnapshotJson(engine.slo_evaluator().Snapshot()));
    if (req.path == "/admin/series" && req.method == "GET")
      co_return Json(200, SeriesJson(engine.slo_evaluator().Snapshot()));
    if (req.path == "/admin/audit" && req.method == "GET")
      co_return co_await RunBlocking(pool, [&] { return Audit(req); });
    if (req.path == "/admin/kill-switches") {
      if (req.method == "GET") co_return co_await RunBlocking(pool, [this] { return ListKillSwitches(); });
      if (req.method == "PUT") co_return co_await RunBlocking(pool, [&] { return SetKillSwitch(req); });
      co_return Error(405, "method_not_allowed", "use GET or PUT");
    }
    constexpr std::string_view kKill = "/admin/kill-switches/";
    if (req.path.rfind(kKill, 0) == 0) {
      if (req.method != "DELETE") co_return Error(405, "method_not_allowed", "use DELETE");
      co_return co_await RunBlocking(pool, [&] { return ClearKillSwitch(req, req.path.substr(kKill.size())); });
    }
    constexpr std::string_view kConn = "/admin/connectors/";
    if (req.path.rfind(kConn, 0) == 0) {
      auto connector_op = ConnectorRoute(req, req.path.substr(kConn.size()));
      co_return co_await std::move(connector_op);
    }
    co_return Error(404, "not_found", "no such route");
  }

  // GET /metrics: the gauges read from the store (breakers, slots, kill switches) and the store's own
  // (DynamoDB's requests in flight) brought up to date, then every metric in Prometheus' text format.
  asio::awaitable<HttpResponse> Metrics() {
    co_await RefreshStoreGauges();
    engine.metrics().StoreWritesFailing(engine.write_health().failing());
    const net::ConnectionPool::Stats pool_stats = downstream_pool.stats();
    engine.metrics().DownstreamPool(pool_stats.connections_opened, pool_stats.tls_handshakes, pool_stats.reused);
    if (auto* dynamo = dynamic_cast<store::DynamoDbItemStore*>(&engine.base_store())) {
      const store::DynamoDbItemStore::RequestLoad load = dynamo->request_load();
      engine.metrics().StoreRequests("dynamodb", load.in_flight, load.waiting, load.limit);
    }
    co_return HttpResponse{
        200, engine.metrics().Serialize() + ProcessMetricsText(), "text/plain; version=0.0.4", {}, "", {}};
  }

  // /admin/connectors/{id}/{action}: breaker close/open, queue purge, limits set/reset.
  asio::awaitable<HttpResponse> ConnectorRoute(const HttpRequest& req, std::string rest) {
    const auto slash = rest.find('/');
    const std::string id = rest.substr(0, slash);
    const std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
    auto it = config.connectors.find(id);
    if (it == config.connectors.end()) co_return Error(404, "unknown_connector", "no such connector");
    const ConnectorConfig& c = it->second;
    ParsedBody parsed = ParseJsonObject(req.body, /*empty_is_object=*/true);
    if (parsed.error) co_return *parsed.error;
    const json& body = parsed.value;
    if (action == "breaker/close" && req.method == "POST") co_return co_await CloseBreaker(c, body);
    if (action == "breaker/open" && req.method == "POST")
      co_return co_await RunBlocking(pool, [&] { return OpenBreaker(c, body); });
    if (action == "queue" && req.method == "DELETE")
      co_return co_await RunBlocking(pool, [&] { return PurgeQueue(c, body); });
    if (action == "limits" && req.method == "PUT")
      co_return co_await RunBlocking(pool, [&] { return SetLimits(c, body); });
    if (action == "limits" && req.method == "DELETE") {
      co_return co_await RunBlocking(pool, [&] { return ResetLimits(c, body); });
    }
    co_return Error(404, "not_found", "no such route");
  }

  // ADMIN_REQUEST_REFUSED: which route refused what, with the caller's requested_by and reason when
  // the body named them (bounded: the body is the caller's), and the answer's error and message (a
  // refused close names the health check and what it answered).
  void AuditRefusal(const std::string& method, const std::string& path, const std::string& body,
                    const HttpResponse& answer) {
    const json request = ParseBoundedJson(body);  // the caller's: nesting bounded
    const json reply = ParseJsonWithin(answer.body);
    auto text = [](const json& j, const char* field, size_t max) -> std::string {
      if (!j.is_object() || !j.contains(field) || !j[field].is_string()) return "";
      return Printable(j[field].get<std::string>().substr(0, max));  // a refused field may be anything
    };
    json data = {{"method", method},
                 {"path", path.substr(0, 300)},
                 {"route", std::string(MatchRoute("admin", method, path))},
                 {"status", answer.status},
                 {"error", text(reply, "error", 100)}};
    if (std::string m = text(reply, "message", 500); !m.empty()) data["message"] = m;
    const std::string requested_by = text(request, "requested_by", 200);
    if (!requested_by.empty()) data["requested_by"] = requested_by;
    std::string reason = text(request, "reason", 1000);
    if (reason.empty()) reason = text(request, "replay_reason", 1000);
    if (!reason.empty()) data["reason"] = reason;
    const std::string actor = requested_by.empty() ? "admin" : "admin:" + requested_by;
    json logged = data;
    logged["actor"] = actor;
    LogEvent(spdlog::level::warn, "admin_request_refused",
             absl::StrCat("admin ", method, " ", data["route"].get<std::string>(), " refused (", answer.status, ")"),
             logged);
    if (auto e = engine.ledger().Audit("ADMIN_REQUEST_REFUSED", actor, Dump(data)); !e.ok()) {
      spdlog::error("audit ADMIN_REQUEST_REFUSED not written: {}", e.status().ToString());
    }
  }

  // No CSRF and no DNS rebinding (design §6): a browser page elsewhere must not drive the admin
  // listener through an operator's browser. The Host must name this listener (its address,
  // localhost, or [admin] allowed_hosts); an Origin, when sent, must be this listener's own; a write
  // must be `Content-Type: application/json`, which a cross-site "simple" request cannot send
  // without a preflight this listener never answers.
  std::optional<HttpResponse> RefuseCrossSite(const HttpRequest& req) const {
    const std::string host = req.Header("host");
    if (!AllowedHost(HostName(host))) {
      return Error(403, "forbidden_host", "the Host header does not name this admin listener");
    }
    if (const std::string origin = req.Header("origin"); !origin.empty() && origin != "http://" + host) {
      return Error(403, "forbidden_origin", "cross-origin requests to the admin listener are refused");
    }
    const bool write = req.method != "GET" && req.method != "HEAD" && req.method != "OPTIONS";
    if (write) {
      const std::string type = req.Header("content-type");
      const std::string media = type.substr(0, type.find(';'));
      if (absl::AsciiStrToLower(absl::StripAsciiWhitespace(media)) != "application/json") {
        return Error(415, "unsupported_media_type", "admin changes must be sent as Content-Type: application/json");
      }
    }
    return std::nullopt;
  }

  // "127.0.0.1:9901" → "127.0.0.1"; "[::1]:9901" → "::1"; lowercased.
  static std::string HostName(const std::string& host) {
    std::string name = host;
    if (!name.empty() && name.front() == '[') {
      name = name.substr(1, name.find(']') == std::string::npos ? std::string::npos : name.find(']') - 1);
    } else if (const auto colon = name.rfind(':'); colon != std::string::npos) {
      name = name.substr(0, colon);
    }
    return absl::AsciiStrToLower(name);
  }

  bool AllowedHost(const std::string& name) const {
    if (name.empty()) return false;
    if (name == "localhost" || name == absl::AsciiStrToLower(config.admin.listen.host)) return true;
    // A wildcard listener answers on every address of the host; a loopback address is still this host.
    if ((config.admin.listen.host == "0.0.0.0" || config.admin.listen.host == "::") && IsLoopback(name)) return true;
    for (const std::string& allowed : config.admin.allowed_hosts) {
      if (name == absl::AsciiStrToLower(allowed)) return true;
    }
    return false;
  }

  static int CRYPTO_memcmp_shim(const char* a, const char* b, size_t n) {
    unsigned char diff = 0;
    for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff;
  }

  HttpResponse Connectors() {
    const SloSnapshot snapshot = engine.slo_evaluator().Snapshot();
    json list = json::array();
    const int64_t now_ms = clock.now_epoch_ms();
    for (const auto& [id, c] : config.connectors) {
      auto b = engine.breakers().Read(id);
      auto s = engine.slots().Read(id, c.concurrency);
      auto q = engine.queue().Stats(id);
      if (!b.ok() || !s.ok() || !q.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
      const int64_t queue_age_s =
          q->oldest_enqueued_ms == 0 ? 0 : std::max<int64_t>(0, (now_ms - q->oldest_enqueued_ms) / 1000);
      engine.metrics().Queue(id, static_cast<double>(q->depth), static_cast<double>(queue_age_s));
      engine.metrics().BreakerState(id, b->state);
      json recent_calls = recent.Summary(id, now_ms);
      list.push_back({{"id", id},
                      {"base_url", c.base_url},
                      {"breaker",
                       {{"state", std::string(breaker::ToString(b->state))},
                        {"open_until_epoch_sec", b->open_until_epoch_sec},
                        {"cooldown_remaining_s", std::max<int64_t>(0, b->open_until_epoch_sec - now_ms / 1000)},
                        {"half_open_probe_in_flight", b->half_open_probe_in_flight},
                        {"generation", b->generation},
                        {"window_failures", b->window_failures}}},
                      {"throttled_until_epoch_sec", b->throttled_until_epoch_sec},
                      {"throttled_remaining_s", std::max<int64_t>(0, b->throttled_until_epoch_sec - now_ms / 1000)},
                      {"in_flight", s->in_flight},
                      {"max_in_flight", s->max_in_flight},
                      {"config_max_in_flight", c.concurrency.max_in_flight},
                      {"max_in_flight_per_tenant", c.concurrency.max_in_flight_per_tenant},
                      {"tenants_in_flight", s->tenant_slots.size()},
                      {"busiest_tenant_in_flight", s->busiest_tenant()},
                      {"limit_set_by_operator", s->limit_set_by_operator},
                      {"limit", LimitNoteJson(*s)},
                      {"queue_depth", q->depth},
                      {"queue_oldest_age_s", queue_age_s},
                      {"queue_tenants", q->tenants},
                      {"error_ratio_5m", recent_calls["error_ratio"]},
                      {"latency_ms_5m", recent_calls["latency"]},
                      {"calls_5m_this_instance", recent_calls["calls"]},
                      {"slo", ConnectorSloJson(snapshot, id)},
                      {"kind", std::string(ConnectorKindName(c))}});
      if (c.is_mcp()) {
        absl::StatusOr<json> mcp = McpServerJson(engine, c);
        if (!mcp.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
        list.back()["mcp"] = *std::move(mcp);
      }
    }
    return Json(200, {{"connectors", list}});
  }

  // GET /admin/status: the fleet-wide view (engine/operator_status.h). This instance's counts are
  // flushed first so that what it just answered is included.
  HttpResponse Status() {
    if (absl::Status f = engine.slo_counters().Flush(); !f.ok())
      spdlog::warn("SLO counts not flushed: {}", f.ToString());
    auto doc = OperatorStatusJson(engine, clock);
    if (!doc.ok()) {
      // The cause, for the operator this listener answers: the store's own words, and what this
      // instance last saw of its writes (a full disk fails writes before it fails reads).
      const json store = StoreHealthJson(engine);
      std::string message = absl::StrCat("the store (", std::string(engine.store().backend_name()),
                                         ") cannot be read: ", doc.status().ToString());
      if (store["writes_failing"] == true && store["last_write_failure"].is_object()) {
        absl::StrAppend(&message, "; its writes fail too, the last at ",
                        store["last_write_failure"]["at"].get<std::string>(), ": ",
                        store["last_write_failure"]["message"].get<std::string>());
      }
      return Json(503, {{"error", "store_unavailable"}, {"message", message}, {"store", store}});
    }
    return Json(200, *doc);
  }

  HttpResponse Audit(const HttpRequest& req) {
    int limit = 100;
    std::optional<int64_t> since;
    if (auto it = req.query.find("limit"); it != req.query.end()) {
      if (it->second.empty() || it->second.size() > 4 ||
          it->second.find_first_not_of("0123456789") != std::string::npos || std::stoi(it->second) < 1 ||
          std::stoi(it->second) > 1000) {
        return Error(400, "invalid_request", "limit must be 1..1000");
      }
      limit = std::stoi(it->second);
    }
    // §17.9: since (inclusive) and until (exclusive) as on the execution listings.
    std::optional<int64_t> until;
    for (auto [name, target] : {std::pair{"since", &since}, std::pair{"until", &until}}) {
      if (auto it = req.query.find(name); it != req.query.end()) {
        *target = ParseTimeMs(it->second);
        if (!*target) {
          return Error(400, "invalid_request",
                       absl::StrCat(name, " must be epoch milliseconds or RFC 3339 (e.g. 2026-11-30T10:00Z)"));
        }
      }
    }
    if (since && until && *since >= *until) {
      return Error(400, "invalid_request", "since must be before until");
    }
    auto events = engine.ledger().ReadAudit(limit, since, until);
    if (!events.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
    json list = json::array();
    for (const auto& e : *events) list.push_back(EventJson(e));
    return Json(200, {{"events", list}});
  }

  // The same spelling as a refused write's, a replay's and a replay job's actor (admin:<requested_by>),
  // so that one operator's actions read as one actor in the audit.
  static std::string Actor(const json& body) { return "admin:" + body["requested_by"].get<std::string>(); }

  HttpResponse Audited(std::string_view type, const json& body, json data, HttpResponse answer) {
    data["reason"] = body["reason"];
    data["requested_by"] = body["requested_by"];
    json logged = data;
    logged["actor"] = Actor(body);
    logged["audit_type"] = std::string(type);
    LogEvent(spdlog::level::warn, absl::AsciiStrToLower(std::string(type)),
             absl::StrCat("admin change ", std::string(type), " by ", Actor(body)), logged);
    if (auto e = engine.ledger().Audit(type, Actor(body), Dump(data)); !e.ok()) {
      spdlog::error("audit {} not written: {}", std::string(type), e.status().ToString());
      return Error(503, "store_unavailable", "the change was made but its audit event could not be written");
    }
    return answer;
  }

  HttpResponse ListKillSwitches() {
    auto list = engine.kill_switches().List();
    if (!list.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
    json out = json::array();
    for (const auto& k : *list) {
      out.push_back(
          {{"scope", k.scope}, {"key", k.key}, {"reason", k.reason}, {"requested_by", k.requested_by}, {"at", k.at}});
    }
    return Json(200, {{"kill_switches", out}});
  }

  HttpResponse SetKillSwitch(const HttpRequest& req) {
    ParsedBody parsed = ParseJsonObject(req.body, /*empty_is_object=*/false);
    if (parsed.error) return *parsed.error;
    const json& body = parsed.value;
    if (auto bad = CheckAudit(body)) return *bad;
    if (!body.contains("scope") || !body["scope"].is_string() || !body.contains("key") || !body["key"].is_string()) {
      return Error(400, "invalid_request", "scope and key are required strings");
    }
    KillSwitch k{body["scope"], body["key"], body["reason"], body["requested_by"], Actor(body), ""};
    if (absl::Status s = KillSwitchService::ValidateSwitch(k.scope, k.key); !s.ok()) {
      return Error(400, "invalid_request", std::string(s.message()));
    }
    // A switch that can never match is refused, as `breaker close` refuses an unknown connector.
    if (k.scope == "connector" && !config.connectors.count(k.key)) {
      return Error(404, "unknown_connector", absl::StrCat("no connector '", k.key, "' is configured"));
    }
    auto set = engine.kill_switches().Set(k);
    if (!set.ok()) return StoreWriteError(set.status());
    const json state = {{"scope", set->scope},
                        {"key", set->key},
                        {"reason", set->reason},
                        {"requested_by", set->requested_by},
                        {"at", set->at}};
    return Audited("KILL_SWITCH_SET", body, {{"scope", k.scope}, {"key", k.key}}, Json(200, state));
  }

  HttpResponse ClearKillSwitch(const HttpRequest& req, const std::string& scope_and_key) {
    const auto slash = scope_and_key.find('/');
    if (slash == std::string::npos) return Error(404, "not_found", "use /admin/kill-switches/{scope}/{key}");
    const std::string scope = scope_and_key.substr(0, slash), key = scope_and_key.substr(slash + 1);
    ParsedBody parsed = ParseJsonObject(req.body, /*empty_is_object=*/true);
    if (parsed.error) return *parsed.error;
    const json& body = parsed.value;
    if (auto bad = CheckAudit(body)) return *bad;
    if (absl::Status s = KillSwitchService::ValidateSwitch(scope, key); !s.ok()) {
      return Error(400, "invalid_request", std::string(s.message()));
    }
    auto cleared = engine.kill_switches().Clear(scope, key);
    if (!cleared.ok()) return StoreWriteError(cleared.status());
    if (!*cleared) return Error(404, "not_found", "no such kill switch");
    return Audited("KILL_SWITCH_CLEARED", body, {{"scope", scope}, {"key", key}},
                   Json(200, {{"scope", scope}, {"key", key}, {"cleared", true}}));
  }

  asio::awaitable<HttpResponse> CloseBreaker(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) co_return *bad;
    const bool force = body.contains("force") && body["force"].is_boolean() && body["force"].get<bool>();
    json health = {{"checked", false}};
    if (!force) {
      // Never close blind: the connector's health check must pass first.
      auto check_op = connectors.at(c.id)->CheckHealth();
      HealthReport r = co_await std::move(check_op);
      health = {{"checked", true}, {"target", r.target}, {"status", r.status}, {"error", r.error}};
      if (!r.healthy) {
        const std::string result = r.error.empty() ? "answered " + std::to_string(r.status) : r.error;
        co_return Json(409,
                       {{"error", "connector_unhealthy"},
                        {"message", "the connector's health check GET " + r.target + " failed (" + result +
                                        "); fix it, or close with \"force\": true (CLI: --force) to skip the check"},
                        {"health", health}});
      }
    }
    co_return co_await RunBlocking(pool, [&]() -> HttpResponse {
      auto closed = engine.breakers().ManualClose(c.id, c.breaker);
      if (!closed.ok()) return StoreWriteError(closed.status());
      engine.metrics().BreakerState(c.id, closed->after.state);
      json answer = {{"id", c.id}, {"breaker", BreakerJson(closed->after)}, {"changed", closed->changed}};
      if (!closed->changed) return Json(200, answer);  // already CLOSED: nothing written, nothing audited
      return Audited("CIRCUIT_MANUALLY_CLOSED", body,
                     {{"connector_id", c.id},
                      {"force", force},
                      {"health", health},
                      {"previous_state", std::string(breaker::ToString(closed->before.state))},
                      {"previous_generation", closed->before.generation},
                      {"generation", closed->after.generation}},
                     Json(200, answer));
    });
  }

  HttpResponse OpenBreaker(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) return *bad;
    auto opened = engine.breakers().ForceOpen(c.id, c.breaker, {body["requested_by"], body["reason"]});
    if (!opened.ok()) return StoreWriteError(opened.status());
    engine.metrics().BreakerState(c.id, opened->state);
    return Audited("CIRCUIT_FORCED_OPEN", body, {{"connector_id", c.id}},
                   Json(200, {{"id", c.id}, {"breaker", BreakerJson(*opened)}}));
  }

  // DELETE /admin/connectors/{id}/queue (§15): every queued call not yet running ends EXPIRED
  // (EXECUTION_EXPIRED reason purged); `running` counts the calls still claimed after the purge's
  // settle time, left to finish. Audited QUEUE_PURGED.
  HttpResponse PurgeQueue(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) return *bad;
    auto purged = engine.queued_calls().Purge(c.id, Actor(body));
    if (!purged.ok()) return StoreWriteError(purged.status());
    return Audited("QUEUE_PURGED", body,
                   {{"connector_id", c.id}, {"purged", purged->purged}, {"running", purged->running}},
                   Json(200, {{"id", c.id}, {"purged", purged->purged}, {"running", purged->running}}));
  }

  HttpResponse SetLimits(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) return *bad;
    if (!body.contains("max_in_flight") || !body["max_in_flight"].is_number_integer() ||
        body["max_in_flight"].get<int64_t>() < 1 || body["max_in_flight"].get<int64_t>() > 100000) {
      return Error(400, "invalid_request", "max_in_flight must be an integer in 1..100000");
    }
    auto before = engine.slots().Read(c.id, c.concurrency);
    if (body["max_in_flight"].get<int64_t>() < c.concurrency.shards) {
      return Error(400, "invalid_request",
                   "max_in_flight must be at least the connector's concurrency_shards (" +
                       std::to_string(c.concurrency.shards) + ")");
    }
    auto set = engine.slots().SetLimit(c.id, static_cast<int>(body["max_in_flight"].get<int64_t>()),
                                       c.concurrency.shards, {body["requested_by"], body["reason"]});
    if (!set.ok()) return StoreWriteError(set.status());
    json answer = {{"id", c.id},
                   {"in_flight", set->in_flight},
                   {"max_in_flight", set->max_in_flight},
                   {"limit_set_by_operator", true},
                   {"limit", LimitNoteJson(*set)}};
    // A limit at or below the per-tenant share leaves the share nothing to divide: one tenant may
    // hold every slot again. Allowed (an operator cutting a downstream's load must be able to), and
    // said, since the config's checks never see an operator's limit.
    if (const int share = c.concurrency.max_in_flight_per_tenant; share > 0 && set->max_in_flight <= share) {
      answer["warning"] =
          absl::StrCat("max_in_flight_per_tenant (", share, ") is not below the new limit (", set->max_in_flight,
                       "): one tenant can hold every slot until the limit is raised above it or reset");
      spdlog::warn("connector {}: {}", c.id, answer["warning"].get<std::string>());
    }
    return Audited("LIMIT_CHANGED", body,
                   {{"connector_id", c.id},
                    {"from", before.ok() ? json(before->max_in_flight) : json(nullptr)},
                    {"to", set->max_in_flight}},
                   Json(200, std::move(answer)));
  }

  // DELETE /admin/connectors/{id}/limits: the config's limit again, audited as a LIMIT_CHANGED.
  HttpResponse ResetLimits(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) return *bad;
    auto before = engine.slots().Read(c.id, c.concurrency);
    auto reset = engine.slots().ResetLimit(c.id, c.concurrency);
    if (!reset.ok()) return StoreWriteError(reset.status());
    return Audited("LIMIT_CHANGED", body,
                   {{"connector_id", c.id},
                    {"from", before.ok() ? json(before->max_in_flight) : json(nullptr)},
                    {"to", reset->max_in_flight},
                    {"reset_to_config", true}},
                   Json(200, {{"id", c.id},
                              {"in_flight", reset->in_flight},
                              {"max_in_flight", reset->max_in_flight},
                              {"limit_set_by_operator", false}}));
  }
};

AdminRoutes::AdminRoutes(GatewayContext& context) : impl_(std::make_unique<Impl>(context)) {}
AdminRoutes::~AdminRoutes() = default;
AdminReplays& AdminRoutes::replays() { return impl_->replays; }
asio::awaitable<HttpResponse> AdminRoutes::Handle(HttpRequest request) {
  auto op = impl_->Handle(std::move(request));
  co_return co_await std::move(op);
}

}  // namespace toolgate::api
