#include "api/public_routes.h"

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <limits>

#include <boost/asio/use_awaitable.hpp>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/api_support.h"
#include "api/invocation.h"
#include "api/openapi.h"
#include "api/views.h"
#include "spdlog/spdlog.h"
#include "toolgate/domain/ids.h"
#include "toolgate/domain/outcome.h"

namespace toolgate::api {

// The routes reach what they share with the gateway by its names (config, engine, pool, ...).
struct PublicRoutes::Impl : GatewayContext {
  explicit Impl(GatewayContext& g) : GatewayContext(g) {}

  std::atomic<bool> probing{false};  // a /readyz probe write is under way (WritesReady)

  // /readyz's store read, shared by the process (StoreReadable).
  static constexpr int64_t kNoRead = std::numeric_limits<int64_t>::min();
  static constexpr int64_t kReadReuseMs = 1000;
  std::atomic<int64_t> read_started_ms{kNoRead};   // monotonic start of the read under way
  std::atomic<int64_t> read_answered_ms{kNoRead};  // monotonic time the last read answered
  std::atomic<bool> read_ok{false};                // what it answered

  asio::awaitable<HttpResponse> Handle(HttpRequest req) {
    if (req.path == "/healthz" && req.method == "GET") co_return Json(200, {{"status", "ok"}});
    if (req.path == "/readyz" && req.method == "GET") {
      if (draining) co_return Json(503, {{"status", "draining"}});  // whatever the store does
      if (!co_await StoreReadable()) co_return Json(503, {{"status", "store_unavailable"}});
      co_return co_await WritesReady();
    }
    if (req.path == "/openapi.json" && req.method == "GET") {
      co_return HttpResponse{200, OpenApiFor("public", ""), "application/json", {{"Cache-Control", "no-cache"}}, "",
                             {}};
    }
    if (req.path.rfind("/v1/", 0) != 0) co_return Error(404, "not_found", "no such route");

    auto token = BearerToken(req);
    if (!token) co_return Error(401, "unauthenticated", "an Authorization: Bearer token is required");
    absl::StatusOr<auth::Principal> principal = verifier.Verify(*token);
    if (!principal.ok()) co_return Error(401, "unauthenticated", std::string(principal.status().message()));
    auto route_op = Route(std::move(req), *principal);
    HttpResponse answer = co_await std::move(route_op);
    answer.tenant_id = principal->tenant_id;
    co_return answer;
  }

  // Whether the store answers a read. One read at a time for the whole process, its answer reused
  // for a second: /readyz is unauthenticated, and a read per request let anyone turn a flood of
  // them into store reads (on DynamoDB, consistent reads of the one item the whole fleet shares:
  // throttled, they would make every instance answer 503 and a balancer drain the fleet). While a
  // read is under way the others answer from the last one; a read that has not answered for a
  // second is a store that does not answer (not ready), and so is one not yet answered at all.
  asio::awaitable<bool> StoreReadable() {
    const int64_t now = clock.now_monotonic_ms();
    const int64_t answered = read_answered_ms.load();
    if (answered != kNoRead && now - answered < kReadReuseMs) co_return read_ok.load();
    int64_t under_way = kNoRead;
    if (!read_started_ms.compare_exchange_strong(under_way, now)) {
      if (answered == kNoRead || now - under_way >= kReadReuseMs) co_return false;
      co_return read_ok.load();
    }
    absl::Cleanup done = [this] { read_started_ms = kNoRead; };  // however the read ends
    // A read that ended between this check's first look and its claim answers it (its answer is
    // stored before its claim is let go).
    if (const int64_t again = read_answered_ms.load(); again != kNoRead && now - again < kReadReuseMs) {
      co_return read_ok.load();
    }
    const bool ok = co_await RunBlocking(health_pool, [this] { return engine.store().Get({"HEALTH", "READYZ"}).ok(); });
    read_ok = ok;
    read_answered_ms = clock.now_monotonic_ms();
    co_return ok;
  }

  // The rest of /readyz, after the store read: whether its writes go in (StoreWriteHealth). While
  // writes go in (one applied within the last 10 s), it writes nothing. While writes fail, one call a
  // second (per process) writes a probe item, since a balancer sends no traffic to an instance that
  // is not ready and no call's write would ever tell it that writes work again; the calls in between
  // answer from what the last probe left. With no write seen for 10 s (a fresh or idle instance) it
  // probes too, at most once per 10 s while the probes go in: otherwise an instance on a store it may
  // not write would answer ready until its first call failed. One probe at a time: under a held lock
  // each waits out the busy timeout, and they must not pile up on health_pool's two threads, one of
  // which stays free for the reads.
  asio::awaitable<HttpResponse> WritesReady() {
    StoreWriteHealth& health = engine.write_health();
    if (!health.failing() && !health.WritesUnconfirmed()) co_return Json(200, {{"status", "ready"}});
    if (!probing.exchange(true)) {
      absl::Cleanup done = [this] { probing = false; };  // an exception must not end the probes for good
      if (health.ClaimProbe()) {
        absl::Status probe = co_await RunBlocking(health_pool, [this] { return engine.ProbeStoreWrite(); });
        if (!probe.ok()) spdlog::warn("readyz: the store still refuses writes: {}", probe.ToString());
      }
    }
    if (!health.failing()) co_return Json(200, {{"status", "ready"}});
    co_return Json(503, {{"status", "store_unwritable"}, {"error", UnwritableReason(health.snapshot())}});
  }

  // What /readyz says to anyone about failing writes: the kind of trouble, never the store's own
  // message (it may name the file, the table, the endpoint), which `toolgate status` shows.
  static std::string UnwritableReason(const StoreWriteHealth::Snapshot& s) {
    const std::string& m = s.last_failure_message;
    std::string kind = "the store refuses writes";
    if (absl::StrContains(m, "disk is full") || absl::StrContains(m, "disk full")) {
      kind = "the store's disk is full";
    } else if (absl::StrContains(m, "read-only")) {
      kind = "the store is read-only";
    } else if (absl::StrContains(m, "busy") || absl::StrContains(m, "locked")) {
      kind = "the store's write lock is held by another process";
    } else if (absl::StrContains(m, "throttl")) {
      kind = "the store is throttling writes";
    }
    return absl::StrCat(kind, " (last failed write at ", Rfc3339(s.last_failure_ms),
                        "); `toolgate status` shows the store's own message");
  }

  // The /v1 routes, for an authenticated caller.
  asio::awaitable<HttpResponse> Route(HttpRequest req, const auth::Principal& principal_ref) {
    const auth::Principal* principal = &principal_ref;
    if (HasTenantFields(req, nullptr)) {
      co_return Error(400, "tenant_from_token_only", "tenant_id and account_id come from the token, never the request");
    }

    // /v1/tools/{tool}/invoke
    constexpr std::string_view kTools = "/v1/tools/";
    constexpr std::string_view kInvoke = "/invoke";
    if (req.path.rfind(kTools, 0) == 0 && req.path.size() > kTools.size() + kInvoke.size() &&
        req.path.compare(req.path.size() - kInvoke.size(), kInvoke.size(), kInvoke) == 0) {
      if (req.method != "POST") co_return Error(405, "method_not_allowed", "use POST");
      const std::string tool = req.path.substr(kTools.size(), req.path.size() - kTools.size() - kInvoke.size());
      auto invoke_op = Invoke(std::move(req), *principal, tool);
      co_return co_await std::move(invoke_op);
    }
    constexpr std::string_view kExec = "/v1/executions";
    if (req.path == kExec && req.method == "GET") co_return co_await ListExecutions(req, *principal);
    if (req.path.rfind(std::string(kExec) + "/", 0) == 0) {
      std::string rest = req.path.substr(kExec.size() + 1);
      if (rest.size() > 7 && rest.compare(rest.size() - 7, 7, "/replay") == 0) {
        if (req.method != "POST") co_return Error(405, "method_not_allowed", "use POST");
        const std::string original = rest.substr(0, rest.size() - 7);
        auto replay_op = Replay(std::move(req), *principal, original);
        co_return co_await std::move(replay_op);
      }
      if (req.method == "DELETE") co_return co_await CancelExecution(rest, *principal);
      if (req.method != "GET") co_return Error(405, "method_not_allowed", "use GET");
      co_return co_await GetExecution(rest, *principal);
    }
    co_return Error(404, "not_found", "no such route");
  }

  asio::awaitable<HttpResponse> Invoke(HttpRequest req, const auth::Principal& principal, const std::string& tool) {
    if (!IsValidToolName(tool)) co_return Error(400, "invalid_tool_name", "tool names are [A-Za-z0-9_.-]{1,200}");
    ParsedBody parsed = ParseJsonObject(req.body, /*empty_is_object=*/false);
    if (parsed.error) co_return *parsed.error;
    std::string().swap(req.body);  // parsed: its text is not held for as long as the call runs
    json& body = parsed.value;
    if (HasTenantFields(req, &body)) {
      co_return Error(400, "tenant_from_token_only", "tenant_id and account_id come from the token, never the request");
    }
    if (!body.contains("input") || !body["input"].is_object()) {
      co_return Error(400, "invalid_request", "\"input\" is required and must be a JSON object");
    }
    InvokeRequest ir;
    ir.principal = principal;
    ir.tool_name = tool;
    ir.input_json = Dump(body["input"]);
    // Parsed once: the admission reads the tree, and lets go of it once it has checked the input.
    ir.input = std::make_shared<const json>(std::move(body["input"]));
    // The key is the body's `idempotency_key`, or the `Idempotency-Key` header many HTTP clients send
    // (bare, or quoted as its draft standard writes a structured-field string); both present must
    // agree — a client that set one and thought it set the other would otherwise run twice.
    std::string header_key = req.Header("idempotency-key");
    if (header_key.size() >= 2 && header_key.front() == '"' && header_key.back() == '"') {
      header_key = header_key.substr(1, header_key.size() - 2);
    }
    if (body.contains("idempotency_key")) {
      const json& k = body["idempotency_key"];
      if (!k.is_string() || k.get<std::string>().empty() || k.get<std::string>().size() > 255) {
        co_return Error(400, "invalid_request", "idempotency_key must be a string of 1..255 characters");
      }
      ir.idempotency_key = k.get<std::string>();
      if (!header_key.empty() && header_key != ir.idempotency_key) {
        co_return Error(400, "invalid_request", "the Idempotency-Key header and the body's idempotency_key differ");
      }
    } else if (!header_key.empty()) {
      if (header_key.size() > 255) co_return Error(400, "invalid_request", "Idempotency-Key must be 1..255 characters");
      ir.idempotency_key = std::move(header_key);
    }
    for (char c : ir.idempotency_key) {
      if (c < 0x21 || c > 0x7e) co_return Error(400, "invalid_request", "idempotency_key must be printable ASCII");
    }
    if (body.contains("action_type")) {
      const json& a = body["action_type"];
      if (!a.is_string() || !IsValidToolName(a.get<std::string>())) {
        co_return Error(400, "invalid_request", "action_type must match [A-Za-z0-9_.-]{1,200}");
      }
      ir.action_type = a.get<std::string>();
    }
    // Queued calls (§15): checked before anything runs, so a bad field queues nothing.
    absl::StatusOr<QueueRequest> queue = ReadQueueRequest(body, PrefersAsync(req.Header("prefer")), config.queue);
    if (!queue.ok()) {
      co_return Error(400, "invalid_request", std::string(queue.status().message()));
    }
    if (queue->queued) {
      auto enqueue_op = RunEnqueue(*this, std::move(ir), queue->order);
      co_return ToHttp(co_await std::move(enqueue_op));
    }
    ir.queue_on_defer = queue->on_defer;
    auto execute_op = Execute(std::move(ir));
    co_return co_await std::move(execute_op);
  }

  // POST /v1/executions/{id}/replay (design S12): operator or admin; `force` is admin only.
  asio::awaitable<HttpResponse> Replay(HttpRequest req, const auth::Principal& principal, const std::string& id) {
    ParsedBody body = ParseJsonObject(req.body, /*empty_is_object=*/true);
    if (body.error) co_return *body.error;
    if (HasTenantFields(req, &body.value)) {
      co_return Error(400, "tenant_from_token_only", "tenant_id and account_id come from the token, never the request");
    }
    const json& b = body.value;
    if (auto bad = CheckReplayBody(b)) co_return *bad;
    ReplayOrder order{principal, id, b["replay_reason"], b["requested_by"], b.value("force", false), /*job_id=*/{}};
    auto prepared = co_await RunBlocking(pool, [&] { return engine.replayer().Prepare(order); });
    if (auto* refusal = std::get_if<InvokeResult>(&prepared)) co_return ToHttp(*refusal);
    InvokeRequest ir = std::move(std::get<InvokeRequest>(prepared));
    bool reached_tool = false;
    auto execute_op = Execute(ir, &reached_tool);
    HttpResponse answer = co_await std::move(execute_op);
    if (!reached_tool) {
      co_await RunBlocking(pool, [&] {
        engine.replayer().Finish(ir, reached_tool);
        return 0;
      });
    }
    co_return answer;
  }

  // The shared invocation path (api/invocation.h) for a validated invocation or replay.
  // `reached_tool` (optional) tells whether its ledger has TOOL_INVOKED or REPLAY_DEDUPED.
  asio::awaitable<HttpResponse> Execute(InvokeRequest ir, bool* reached_tool = nullptr) {
    auto run = RunInvocation(*this, std::move(ir));
    InvokeResult answer = co_await std::move(run);
    if (reached_tool != nullptr) *reached_tool = answer.reached_tool;
    co_return ToHttp(std::move(answer));
  }

  asio::awaitable<HttpResponse> GetExecution(const std::string& id, const auth::Principal& principal) {
    if (!LooksLikeUuid(id)) co_return Error(404, "not_found", "execution not found");
    co_return co_await RunBlocking(pool, [&]() -> HttpResponse {
      auto rec = engine.executions().Get(principal.tenant_id, id);
      if (!rec.ok()) {
        if (rec.status().code() == absl::StatusCode::kNotFound) return Error(404, "not_found", "execution not found");
        return Error(503, "store_unavailable", "the store cannot be read right now");
      }
      auto events = engine.ledger().ReadExecution(*rec);
      if (absl::IsDataLoss(events.status())) {
        // The record still says how the call ended (a queued call's status_url is polled here); its
        // events, damaged, are left out and said to be.
        spdlog::error("execution {}: its ledger cannot be read: {}", id, events.status().ToString());
        json view = ExecutionViewJson(*rec, {});
        view["events_error"] = "this execution's ledger cannot be read";
        return Json(200, view);
      }
      if (!events.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
      return Json(200, ExecutionViewJson(*rec, *events));
    });
  }

  // DELETE /v1/executions/{id} (§17.5): the tenant cancels its own call while it is QUEUED.
  asio::awaitable<HttpResponse> CancelExecution(const std::string& id, const auth::Principal& principal) {
    if (!LooksLikeUuid(id)) co_return Error(404, "not_found", "execution not found");
    co_return co_await RunBlocking(pool, [&]() -> HttpResponse {
      const std::string actor = principal.subject.empty() ? "tenant:" + principal.tenant_id : principal.subject;
      absl::StatusOr<ExecutionRecord> ended = engine.queued_calls().Cancel(principal.tenant_id, id, actor);
      if (absl::IsNotFound(ended.status())) return Error(404, "not_found", "execution not found");
      if (absl::IsFailedPrecondition(ended.status()))
        return Error(409, "not_queued", std::string(ended.status().message()));
      if (!ended.ok()) {
        spdlog::warn("cancel of {}: {}", id, ended.status().ToString());
        return Error(503, "store_unavailable", "the store cannot be written right now");
      }
      return Json(200, ExecutionJson(*ended));
    });
  }

  asio::awaitable<HttpResponse> ListExecutions(const HttpRequest& req, const auth::Principal& principal) {
    ExecutionStore::ListFilter f;
    auto q = [&](const char* k) -> std::string {
      auto it = req.query.find(k);
      return it == req.query.end() ? "" : it->second;
    };
    f.tool = q("tool");
    // The admin listing's forms (§17.9): comma-separated outcomes, since/until as epoch ms or RFC 3339.
    const std::string outcomes = q("outcome");
    for (absl::string_view o : absl::StrSplit(outcomes, ',', absl::SkipEmpty())) {
      if (!ParseOutcome(std::string_view(o.data(), o.size()))) {
        co_return Error(400, "invalid_request",
                        absl::StrCat("outcome: unknown outcome '", std::string(o),
                                     "' (SUCCEEDED, FAILED, DEFERRED, BLOCKED, ...; comma-separated)"));
      }
      f.outcomes.emplace_back(o);
    }
    for (auto [name, target] : {std::pair{"since", &f.since_ms}, std::pair{"until", &f.until_ms}}) {
      if (const std::string v = q(name); !v.empty()) {
        *target = ParseTimeMs(v);
        if (!*target) {
          co_return Error(400, "invalid_request",
                          absl::StrCat(name, " must be epoch milliseconds or RFC 3339 (e.g. 2026-11-30T10:00Z)"));
        }
      }
    }
    if (const std::string limit = q("limit"); !limit.empty()) {
      if (limit.size() > 3 || limit.find_first_not_of("0123456789") != std::string::npos || std::stoi(limit) < 1 ||
          std::stoi(limit) > 200) {
        co_return Error(400, "invalid_request", "limit must be 1..200");
      }
      f.limit = std::stoi(limit);
    }
    if (const std::string after = q("after"); !after.empty()) {
      if (!LooksLikeUuid(after)) co_return Error(400, "invalid_request", "after must be a cursor from a previous page");
      f.after = after;
    }
    co_return co_await RunBlocking(pool, [&]() -> HttpResponse {
      auto page = engine.executions().List(principal.tenant_id, f);
      if (!page.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
      json list = json::array();
      for (const auto& r : page->executions) list.push_back(ExecutionJson(r));
      return Json(200, {{"executions", list}, {"next", page->next ? json(*page->next) : json(nullptr)}});
    });
  }
};

PublicRoutes::PublicRoutes(GatewayContext& context) : impl_(std::make_unique<Impl>(context)) {}
PublicRoutes::~PublicRoutes() = default;
asio::awaitable<HttpResponse> PublicRoutes::Handle(HttpRequest request) {
  auto op = impl_->Handle(std::move(request));
  co_return co_await std::move(op);
}

}  // namespace toolgate::api
