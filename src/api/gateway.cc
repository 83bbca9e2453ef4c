#include "api/gateway.h"

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "api/http.h"
#include "api/dashboard.h"
#include "api/descriptor_limit.h"
#include "api/json_limits.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "toolgate/auth/jwt_verifier.h"
#include "toolgate/domain/ids.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/slo_evaluator.h"
#include "toolgate/engine/tool_invoker.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/intent_store.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/slo_counters.h"
#include "toolgate/store/forwarding_item_store.h"
#include "toolgate/store/memory_item_store.h"
#include "toolgate/store/sqlite_item_store.h"
#include "toolgate/store_factory.h"

namespace toolgate::api {

using json = nlohmann::json;

namespace {

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

HttpResponse Json(int status, const json& body) { return {status, Dump(body), "application/json", {}}; }
HttpResponse Error(int status, std::string_view code, std::string_view message) {
  return {status, ErrorJson(code, message), "application/json", {}};
}

// The body of RunBlocking. `f` is a coroutine parameter so that it lives in the coroutine frame (a
// lambda coroutine's captures would die with the lambda object before the pool runs it).
template <typename F>
asio::awaitable<std::invoke_result_t<F>> CallOnPool(F f) {
  co_return f();
}

// Runs blocking work (store calls) on the pool and resumes the caller with its result.
template <typename F>
asio::awaitable<std::invoke_result_t<F>> RunBlocking(asio::thread_pool& pool, F f) {
  co_return co_await asio::co_spawn(pool, CallOnPool(std::move(f)), asio::use_awaitable);
}

// Times every store operation for toolgate_store_operation_seconds.
class MeteredItemStore final : public store::ForwardingItemStore {
 public:
  MeteredItemStore(store::ItemStore& target, const Clock& clock, Metrics& metrics)
      : ForwardingItemStore(target), clock_(clock), metrics_(metrics) {}

  template <typename F>
  auto Timed(const char* op, F f) -> decltype(f()) {
    const auto start = clock_.now_monotonic();
    auto r = f();
    metrics_.StoreOperation(std::string(backend_name()), op,
                            std::chrono::duration<double>(clock_.now_monotonic() - start).count());
    return r;
  }

  absl::StatusOr<std::optional<store::Item>> Get(const store::ItemKey& key) override {
    return Timed("get", [&] { return ForwardingItemStore::Get(key); });
  }
  absl::StatusOr<store::WriteResult> Put(const store::ItemKey& key, const store::Item& item,
                                         const store::Condition& c) override {
    return Timed("put", [&] { return ForwardingItemStore::Put(key, item, c); });
  }
  using ForwardingItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& c, store::ReturnValues r) override {
    return Timed("update", [&] { return ForwardingItemStore::Update(key, ops, c, r); });
  }
  absl::StatusOr<store::WriteResult> Erase(const store::ItemKey& key, const store::Condition& c) override {
    return Timed("erase", [&] { return ForwardingItemStore::Erase(key, c); });
  }
  absl::StatusOr<store::QueryPage> Query(const store::QueryRequest& q) override {
    return Timed("query", [&] { return ForwardingItemStore::Query(q); });
  }

 private:
  const Clock& clock_;
  Metrics& metrics_;
};

// Breaker transitions into the audit ledger and the metrics. Operator overrides are audited by the
// admin route itself, with their reason and requester.
class TransitionAuditor final : public BreakerTransitionListener {
 public:
  TransitionAuditor(Metrics& metrics) : metrics_(metrics) {}
  void set_ledger(Ledger* ledger) { ledger_ = ledger; }
  void OnTransition(const BreakerTransition& t) override {
    metrics_.OnTransition(t);
    if (ledger_ == nullptr) return;
    using Cause = BreakerTransition::Cause;
    std::string type;
    switch (t.cause) {
      case Cause::kFailureThreshold:
      case Cause::kProbeFailed: type = "CIRCUIT_OPENED"; break;
      case Cause::kProbeClaimed:
      case Cause::kProbeTakenOver: type = "CIRCUIT_HALF_OPENED"; break;
      case Cause::kProbeSucceeded: type = "CIRCUIT_CLOSED"; break;
      default: return;  // operator actions and returned probes
    }
    const json data = {{"connector_id", t.connector_id},
                       {"from", std::string(breaker::ToString(t.from))},
                       {"to", std::string(breaker::ToString(t.to))},
                       {"cause", std::string(ToString(t.cause))},
                       {"generation", t.generation}};
    if (auto e = ledger_->Audit(type, "system", Dump(data)); !e.ok()) {
      spdlog::warn("audit of {} for {} not written: {}", type, t.connector_id, e.status().ToString());
    }
  }

 private:
  Metrics& metrics_;
  Ledger* ledger_ = nullptr;
};

// The last five minutes of calls per connector, on this instance, for /admin/connectors.
class RecentCalls {
 public:
  void Add(const std::string& connector, int64_t now_ms, int64_t latency_ms, bool error) {
    std::lock_guard lock(mu_);
    auto& q = calls_[connector];
    q.push_back({now_ms, latency_ms, error});
    while (q.size() > 20000 || (!q.empty() && q.front().at_ms < now_ms - 300'000)) q.pop_front();
  }
  json Summary(const std::string& connector, int64_t now_ms) {
    std::lock_guard lock(mu_);
    std::vector<int64_t> latencies;
    int64_t errors = 0;
    for (const auto& c : calls_[connector]) {
      if (c.at_ms < now_ms - 300'000) continue;
      latencies.push_back(c.latency_ms);
      errors += c.error ? 1 : 0;
    }
    std::sort(latencies.begin(), latencies.end());
    auto pct = [&](double p) -> json {
      if (latencies.empty()) return nullptr;
      return latencies[std::min(latencies.size() - 1, static_cast<size_t>(p * static_cast<double>(latencies.size())))];
    };
    return {{"calls", latencies.size()},
            {"error_ratio", latencies.empty() ? json(nullptr) : json(static_cast<double>(errors) / static_cast<double>(latencies.size()))},
            {"latency", {{"p50", pct(0.50)}, {"p95", pct(0.95)}, {"p99", pct(0.99)}}}};
  }

 private:
  struct Call {
    int64_t at_ms;
    int64_t latency_ms;
    bool error;
  };
  std::mutex mu_;
  std::map<std::string, std::deque<Call>> calls_;
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::optional<std::string> BearerToken(const HttpRequest& req) {
  const std::string h = req.Header("authorization");
  constexpr std::string_view kPrefix = "Bearer ";
  if (h.size() <= kPrefix.size() || h.compare(0, kPrefix.size(), kPrefix) != 0) return std::nullopt;
  return h.substr(kPrefix.size());
}

bool HasTenantFields(const HttpRequest& req, const json* body) {
  for (const char* f : {"tenant_id", "account_id"}) {
    if (req.query.count(f)) return true;
    if (body && body->is_object() && body->contains(f)) return true;
  }
  return false;
}

json EventJson(const LedgerEvent& e) {
  json data = json::parse(e.data, nullptr, false);
  if (data.is_discarded()) data = e.data;
  return {{"seq", e.seq}, {"type", e.type}, {"at", e.at}, {"actor", e.actor}, {"data", data}, {"hash", e.hash}};
}

// Required admin change fields: reason (1..1000) and requested_by (1..200).
std::optional<HttpResponse> CheckAudit(const json& body) {
  for (auto [field, max] : {std::pair{"reason", 1000}, std::pair{"requested_by", 200}}) {
    if (!body.contains(field) || !body[field].is_string() || body[field].get<std::string>().empty() ||
        body[field].get<std::string>().size() > static_cast<size_t>(max)) {
      return Error(400, "invalid_request", absl::StrCat(field, " is required: a string of 1..", max, " characters"));
    }
  }
  return std::nullopt;
}

// Alarm changes POSTed as JSON to [alerts] webhook_url, on the event loop, never blocking a call:
// up to 5 attempts with backoff (1, 2, 4, 8 s); at most 100 deliveries outstanding, beyond that an
// announcement is dropped (and logged) rather than queued without bound.
class WebhookNotifier final : public AlarmNotifier {
 public:
  WebhookNotifier(asio::io_context& io, HostPort address, std::string path)
      : io_(io), address_(std::move(address)), path_(std::move(path)) {}
  void Notify(std::string payload) override {
    if (outstanding_.fetch_add(1) >= 100) {
      --outstanding_;
      spdlog::error("alert webhook: 100 deliveries outstanding, dropping: {}", payload);
      return;
    }
    asio::co_spawn(io_, Deliver(std::move(payload)), asio::detached);
  }

 private:
  asio::awaitable<void> Deliver(std::string payload) {
    asio::steady_timer timer(io_);
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (attempt > 0) {
        timer.expires_after(std::chrono::seconds(1 << (attempt - 1)));
        co_await timer.async_wait(asio::use_awaitable);
      }
      ClientRequest req;
      req.address = address_;
      req.method = "POST";
      req.target = path_;
      req.headers = {{"Content-Type", "application/json"}};
      req.body = payload;
      req.timeout = std::chrono::seconds(5);
      req.max_response_bytes = 64 * 1024;
      auto call = AsyncHttpCall(std::move(req), nullptr);
      ClientResult r = co_await std::move(call);
      if (r.ok && r.status >= 200 && r.status < 300) {
        --outstanding_;
        co_return;
      }
      spdlog::warn("alert webhook: attempt {} failed ({})", attempt + 1,
                   r.ok ? "HTTP " + std::to_string(r.status) : r.timed_out ? "timeout" : "no connection");
    }
    spdlog::error("alert webhook: gave up after 5 attempts: {}", payload);
    --outstanding_;
  }

  asio::io_context& io_;
  HostPort address_;
  std::string path_;
  std::atomic<int> outstanding_{0};
};

json Optional(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json SloViewJson(const SloView& v) {
  json burn = json::object();
  json events = json::object();
  for (const auto& [w, rate] : v.burn_rates) burn[w] = rate;
  for (const auto& [w, c] : v.windows) events[w] = {{"total", c.total}, {"bad", c.bad}};
  json alarms = json::array();
  for (const auto& a : v.alarms) {
    alarms.push_back({{"tier", std::string(a.tier->name)},
                      {"severity", std::string(slo::ToString(a.tier->severity))},
                      {"factor", a.tier->factor},
                      {"long_window", std::string(a.tier->long_window)},
                      {"short_window", std::string(a.tier->short_window)},
                      {"firing", a.firing},
                      {"since", a.since_ms > 0 ? json(Rfc3339(a.since_ms)) : json(nullptr)},
                      {"long_burn_rate", a.verdict.long_burn},
                      {"short_burn_rate", a.verdict.short_burn},
                      {"long_window_events", a.verdict.long_events}});
  }
  json out = {{"connector", v.connector},
              {"slo", std::string(slo::ToString(v.sli))},
              {"target", v.target},
              {"error_budget_remaining", v.budget_remaining},
              {"budget_exhausted_in_s", v.seconds_to_exhaustion ? json(*v.seconds_to_exhaustion) : json(nullptr)},
              {"period_events", {{"total", v.period.total}, {"bad", v.period.bad}}},
              {"burn_rates", burn},
              {"window_events", events},
              {"alarms", alarms}};
  if (v.sli == slo::Sli::kToolLatency) out["latency_threshold_ms"] = v.latency_threshold_ms;
  return out;
}

json SloSnapshotJson(const SloSnapshot& s) {
  json list = json::array();
  for (const auto& v : s.slos) list.push_back(SloViewJson(v));
  return {{"evaluated_at", s.evaluated_at_ms > 0 ? json(Rfc3339(s.evaluated_at_ms)) : json(nullptr)},
          {"error", s.error.empty() ? json(nullptr) : json(s.error)},
          {"slos", list}};
}

}  // namespace

struct Gateway::Impl {
  Impl(Config c, const Clock& clk)
      : config(std::move(c)),
        clock(clk),
        auditor(metrics),
        pool(static_cast<size_t>(config.server.store_threads)) {}

  absl::Status OpenStore() {
    StoreOpenOptions open_options;
    open_options.on_retry = [this](std::string_view op, std::string_view reason) {
      metrics.StoreRetry(config.store.backend, std::string(op), std::string(reason));
    };
    auto opened = OpenConfiguredStore(config.store, clock, open_options);
    if (!opened.ok()) return opened.status();
    base_store = std::move(*opened);
    metered = std::make_unique<MeteredItemStore>(*base_store, clock, metrics);
    store::ItemStore& st = *metered;
    instance_id = NewUuidV7(clock);
    breakers = std::make_unique<CircuitBreakerService>(st, clock, instance_id, &auditor, config.server.breaker_cache_ms);
    slots = std::make_unique<ConnectorConcurrencyService>(st, clock);
    kill_switches = std::make_unique<KillSwitchService>(st, clock, config.kill_switch_refresh_ms);
    ledger = std::make_unique<Ledger>(st, clock, LedgerRetention{config.ledger.retention_s, config.ledger.deferred_retention_s});
    auditor.set_ledger(ledger.get());
    executions = std::make_unique<ExecutionStore>(st, clock);
    intents = std::make_unique<IntentStore>(st, clock, config.idempotency_retention_h);
    slo_counters = std::make_unique<SloCounters>(st, clock);
    if (!config.slo.webhook_url.empty()) {
      notifier = std::make_unique<WebhookNotifier>(io, config.slo.webhook_address, config.slo.webhook_path);
    }
    slo_evaluator = std::make_unique<SloEvaluator>(config, *slo_counters, *ledger, metrics, clock, notifier.get());
    invoker = std::make_unique<ToolInvoker>(ToolInvoker::Services{st, clock, config, *breakers, *slots, *kill_switches,
                                                                  *ledger, *executions, *intents, metrics,
                                                                  slo_counters.get()});
    for (const auto& [id, c] : config.connectors) {
      if (absl::Status s = slots->EnsureConnector(id, c.concurrency); !s.ok()) {
        return absl::UnavailableError(absl::StrCat("store: cannot set up connector ", id, ": ", s.message()));
      }
    }
    return absl::OkStatus();
  }

  // ---- public listener -------------------------------------------------------------------------

  asio::awaitable<HttpResponse> HandlePublic(HttpRequest req) {
    if (req.path == "/healthz" && req.method == "GET") co_return Json(200, {{"status", "ok"}});
    if (req.path == "/readyz" && req.method == "GET") {
      const bool ready = co_await RunBlocking(pool, [this] { return metered->Get({"HEALTH", "READYZ"}).ok(); });
      if (draining) co_return Json(503, {{"status", "draining"}});
      co_return ready ? Json(200, {{"status", "ready"}}) : Json(503, {{"status", "store_unavailable"}});
    }
    if (req.path.rfind("/v1/", 0) != 0) co_return Error(404, "not_found", "no such route");

    auto token = BearerToken(req);
    if (!token) co_return Error(401, "unauthenticated", "an Authorization: Bearer token is required");
    absl::StatusOr<auth::Principal> principal = verifier->Verify(*token);
    if (!principal.ok()) co_return Error(401, "unauthenticated", std::string(principal.status().message()));
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
      if (req.method != "GET") co_return Error(405, "method_not_allowed", "use GET");
      co_return co_await GetExecution(rest, *principal);
    }
    co_return Error(404, "not_found", "no such route");
  }

  asio::awaitable<HttpResponse> Invoke(HttpRequest req, const auth::Principal& principal, const std::string& tool) {
    if (!IsValidToolName(tool)) co_return Error(400, "invalid_tool_name", "tool names are [a-z0-9_.-]{1,128}");
    if (!JsonDepthWithin(req.body, kMaxJsonDepth)) {
      co_return Error(400, "invalid_json", absl::StrCat("the body nests deeper than ", kMaxJsonDepth, " levels"));
    }
    const json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) co_return Error(400, "invalid_json", "the body is not valid JSON");
    if (!body.is_object()) co_return Error(400, "invalid_request", "the body must be a JSON object");
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
    if (body.contains("idempotency_key")) {
      const json& k = body["idempotency_key"];
      if (!k.is_string() || k.get<std::string>().empty() || k.get<std::string>().size() > 255) {
        co_return Error(400, "invalid_request", "idempotency_key must be a string of 1..255 characters");
      }
      ir.idempotency_key = k.get<std::string>();
      for (char c : ir.idempotency_key) {
        if (c < 0x21 || c > 0x7e) co_return Error(400, "invalid_request", "idempotency_key must be printable ASCII");
      }
    }
    if (body.contains("action_type")) {
      const json& a = body["action_type"];
      if (!a.is_string() || !IsValidToolName(a.get<std::string>())) {
        co_return Error(400, "invalid_request", "action_type must match [a-z0-9_.-]{1,128}");
      }
      ir.action_type = a.get<std::string>();
    }
    auto execute_op = Execute(std::move(ir));
    co_return co_await std::move(execute_op);
  }

  // POST /v1/executions/{id}/replay (design S12): operator or admin; `force` is admin only.
  asio::awaitable<HttpResponse> Replay(HttpRequest req, const auth::Principal& principal, const std::string& id) {
    if (!principal.HasRole("operator") && !principal.HasRole("admin")) {
      co_return Error(403, "forbidden", "replay needs the operator or admin role");
    }
    if (!JsonDepthWithin(req.body, kMaxJsonDepth)) co_return Error(400, "invalid_json", "the body nests too deep");
    const json body = json::parse(req.body.empty() ? "{}" : req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) co_return Error(400, "invalid_json", "the body must be a JSON object");
    if (HasTenantFields(req, &body)) {
      co_return Error(400, "tenant_from_token_only", "tenant_id and account_id come from the token, never the request");
    }
    for (auto [field, max] : {std::pair{"replay_reason", 1000}, std::pair{"requested_by", 200}}) {
      if (!body.contains(field) || !body[field].is_string() || body[field].get<std::string>().empty() ||
          body[field].get<std::string>().size() > static_cast<size_t>(max)) {
        co_return Error(400, "invalid_request", absl::StrCat(field, " is required: a string of 1..", max, " characters"));
      }
    }
    if (body.contains("force") && !body["force"].is_boolean()) co_return Error(400, "invalid_request", "force must be a boolean");
    const bool force = body.value("force", false);
    if (force && !principal.HasRole("admin")) co_return Error(403, "forbidden", "force needs the admin role");
    if (!LooksLikeUuid(id)) co_return Error(404, "not_found", "execution not found");

    // Blocking: find the original, reserve a replay, and say so on the original's ledger.
    std::optional<HttpResponse> refusal;
    InvokeRequest ir;
    auto prepare = [&]() {
      absl::StatusOr<ExecutionRecord> original = executions->Get(principal.tenant_id, id);
      if (original.ok() && !original->replay_of.empty()) {
        original = executions->Get(principal.tenant_id, original->replay_of);  // a replay's replay: of its original
      }
      if (!original.ok()) {
        refusal = original.status().code() == absl::StatusCode::kNotFound
                      ? Error(404, "not_found", "execution not found")
                      : Error(503, "store_unavailable", "the store cannot be read right now");
        return;
      }
      if (original->input_json.empty()) {
        refusal = Error(409, "not_replayable", "this execution's input was not kept, so it cannot be replayed");
        return;
      }
      absl::StatusOr<bool> reserved =
          executions->ReserveReplay(principal.tenant_id, original->execution_id, config.max_replays_per_execution);
      if (!reserved.ok()) {
        refusal = Error(503, "store_unavailable", "the store cannot be written right now");
        return;
      }
      if (!*reserved) {
        metrics.Replay("refused");
        refusal = Error(409, "replay_limit_reached",
                        absl::StrCat("this execution already has ", config.max_replays_per_execution, " replays"));
        return;
      }
      ir.execution_id = NewUuidV7(clock);
      Ledger::Tail tail{original->last_seq, original->last_hash, original->expires_at_s};
      const json requested = {{"execution_id", ir.execution_id},
                              {"replay_reason", body["replay_reason"]},
                              {"requested_by", body["requested_by"]},
                              {"sub", principal.subject},
                              {"force", force}};
      const std::string actor = principal.subject.empty() ? "tenant:" + principal.tenant_id : principal.subject;
      if (auto e = ledger->Append(Ledger::ExecutionChain(original->execution_id), tail, "REPLAY_REQUESTED", actor,
                                  Dump(requested));
          !e.ok()) {
        refusal = Error(503, "store_unavailable", "the store cannot be written right now");
        return;
      }
      ir.principal = principal;
      ir.tool_name = original->tool_name;
      ir.input_json = original->input_json;
      ir.action_type = original->action_type;
      ReplayContext replay;
      replay.original_id = original->execution_id;
      replay.original_intent_key = original->intent_key;
      replay.original_outcome = original->outcome;
      replay.original_result_json = original->result_json;
      replay.succeeded_in = original->execution_id;
      if (original->outcome != "SUCCEEDED" && !original->replay_succeeded_in.empty()) {
        replay.original_outcome = "SUCCEEDED";  // an earlier replay succeeded
        replay.original_result_json = original->replay_result_json;
        replay.succeeded_in = original->replay_succeeded_in;
      }
      replay.reason = body["replay_reason"];
      replay.requested_by = body["requested_by"];
      replay.force = force;
      ir.replay = std::move(replay);
    };
    co_await RunBlocking(pool, [&] {
      prepare();
      return 0;
    });
    if (refusal) co_return *refusal;
    auto execute_op = Execute(std::move(ir));
    co_return co_await std::move(execute_op);
  }

  // Admission, the downstream call and the outcome of a validated invocation or replay.
  asio::awaitable<HttpResponse> Execute(InvokeRequest ir) {
    if (draining) co_return Error(503, "shutting_down", "toolgate is shutting down; retry on another instance");

    ++in_flight;
    struct Done {
      std::atomic<int>& n;
      ~Done() { --n; }
    } done{in_flight};
    auto admit = [this, &ir] { return invoker->Admit(ir); };
    auto admitted = co_await RunBlocking(pool, admit);
    if (auto* answer = std::get_if<InvokeResponse>(&admitted)) co_return ToHttp(std::move(*answer));
    std::unique_ptr<ToolInvoker::Ticket> ticket = std::move(std::get<std::unique_ptr<ToolInvoker::Ticket>>(admitted));
    const DownstreamRequest& ds = ToolInvoker::Downstream(*ticket);
    ClientRequest call;
    call.address = ds.connector->address;
    call.method = "POST";
    call.target = ds.path;
    call.headers = {{"Content-Type", "application/json"},
                    {"Idempotency-Key", ds.idempotency_key},
                    {"X-Toolgate-Execution-Id", ds.execution_id},
                    {"X-Toolgate-Tenant-Id", ds.tenant_id}};
    call.body = ds.body;
    call.timeout = std::chrono::milliseconds(ds.connector->timeout_ms);
    call.max_response_bytes = ds.connector->max_response_bytes;
    const std::string connector_id = ds.connector->id;
    const auto start = clock.now_monotonic();
    auto call_op = AsyncHttpCall(std::move(call), &downstream_pool);
    ClientResult r = co_await std::move(call_op);
    DownstreamResult result;
    result.latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock.now_monotonic() - start).count();
    if (r.ok) {
      result.kind = DownstreamResult::Kind::kResponse;
      result.status = r.status;
      result.body = std::move(r.body);
      for (const auto& [k, v] : r.headers) {
        if (k == "retry-after" && !v.empty() && v.size() < 8 && v.find_first_not_of("0123456789") == std::string::npos) {
          result.retry_after_s = std::stoll(v);
        }
      }
    } else if (r.timed_out) {
      result.kind = DownstreamResult::Kind::kTimeout;
    } else if (r.too_large) {
      result.kind = DownstreamResult::Kind::kResponseInvalid;
    } else if (!r.connected) {
      result.kind = DownstreamResult::Kind::kConnectFailed;
    } else {
      result.kind = DownstreamResult::Kind::kConnectionLost;
    }
    const bool error = !r.ok || r.status >= 500;
    recent.Add(connector_id, clock.now_epoch_ms(), result.latency_ms, error);
    // Named, with only reference captures: g++ 12 mishandles non-trivial temporaries inside co_await.
    auto complete = [this, &ticket, &result] { return invoker->Complete(std::move(ticket), result); };
    InvokeResponse answer = co_await RunBlocking(pool, complete);
    co_return ToHttp(std::move(answer));
  }

  static HttpResponse ToHttp(InvokeResponse r) {
    HttpResponse h{r.http_status, std::move(r.body_json), "application/json", {}};
    if (r.retry_after_s) h.headers.emplace_back("Retry-After", std::to_string(*r.retry_after_s));
    return h;
  }

  json ExecutionJson(const ExecutionRecord& r) {
    json j = {{"execution_id", r.execution_id}, {"tool_name", r.tool_name}, {"connector_id", r.connector_id},
              {"outcome", r.outcome},           {"created_at", Rfc3339(r.created_at_ms)}};
    if (!r.reason.empty()) j["reason"] = r.reason;
    if (!r.replay_of.empty()) j["replay_of"] = r.replay_of;
    if (r.latency_ms >= 0) j["latency_ms"] = r.latency_ms;
    if (r.downstream_status) j["downstream_status"] = r.downstream_status;
    if (!r.idempotency_key.empty()) j["idempotency_key"] = r.idempotency_key;
    if (r.unguarded) j["unguarded"] = true;
    if (r.expires_at_s > 0) j["expires_at"] = Rfc3339(r.expires_at_s * 1000);
    return j;
  }

  asio::awaitable<HttpResponse> GetExecution(const std::string& id, const auth::Principal& principal) {
    if (!LooksLikeUuid(id)) co_return Error(404, "not_found", "execution not found");
    co_return co_await RunBlocking(pool, [&]() -> HttpResponse {
      auto rec = executions->Get(principal.tenant_id, id);
      if (!rec.ok()) {
        if (rec.status().code() == absl::StatusCode::kNotFound) return Error(404, "not_found", "execution not found");
        return Error(503, "store_unavailable", "the store cannot be read right now");
      }
      auto events = ledger->Read(Ledger::ExecutionChain(id));
      if (!events.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
      json j = ExecutionJson(*rec);
      j["events"] = json::array();
      j["replays"] = json::array();
      for (const auto& e : *events) {
        j["events"].push_back(EventJson(e));
        if (e.type == "REPLAY_REQUESTED") j["replays"].push_back(j["events"].back()["data"]["execution_id"]);
      }
      if (rec->outcome == "SUCCEEDED") j["result"] = json::parse(rec->result_json, nullptr, false);
      return Json(200, j);
    });
  }

  asio::awaitable<HttpResponse> ListExecutions(const HttpRequest& req, const auth::Principal& principal) {
    ExecutionStore::ListFilter f;
    auto q = [&](const char* k) -> std::string {
      auto it = req.query.find(k);
      return it == req.query.end() ? "" : it->second;
    };
    f.tool = q("tool");
    f.outcome = q("outcome");
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
      auto page = executions->List(principal.tenant_id, f);
      if (!page.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
      json list = json::array();
      for (const auto& r : page->executions) list.push_back(ExecutionJson(r));
      return Json(200, {{"executions", list}, {"next", page->next ? json(*page->next) : json(nullptr)}});
    });
  }

  // ---- admin listener --------------------------------------------------------------------------

  asio::awaitable<HttpResponse> HandleAdmin(HttpRequest req) {
    // The dashboard page holds no data (it reads the routes below, which need the token), so a
    // browser can load it and then ask for the token.
    if (req.path == "/" && req.method == "GET") {
      co_return HttpResponse{200, std::string(kDashboardHtml), "text/html; charset=utf-8",
                             {{"Cache-Control", "no-store"},
                              {"Content-Security-Policy",
                               "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:"}}};
    }
    if (!admin_token.empty()) {
      auto token = BearerToken(req);
      if (!token || token->size() != admin_token.size() ||
          CRYPTO_memcmp_shim(token->data(), admin_token.data(), admin_token.size()) != 0) {
        co_return Error(401, "unauthenticated", "the admin listener needs its bearer token");
      }
    }
    if (req.path == "/metrics" && req.method == "GET") {
      co_await RunBlocking(pool, [this] {
        for (const auto& [id, c] : config.connectors) {
          if (auto b = breakers->Read(id); b.ok()) metrics.BreakerState(id, b->state);
          if (auto s = slots->Read(id, c.concurrency); s.ok()) {
            metrics.InFlight(id, static_cast<double>(s->in_flight), static_cast<double>(s->max_in_flight));
          }
        }
        return 0;
      });
      co_return HttpResponse{200, metrics.Serialize(), "text/plain; version=0.0.4", {}};
    }
    if (req.path == "/admin/connectors" && req.method == "GET") {
      co_return co_await RunBlocking(pool, [this] { return Connectors(); });
    }
    if (req.path == "/admin/slo" && req.method == "GET") co_return Json(200, SloSnapshotJson(slo_evaluator->Snapshot()));
    if (req.path == "/admin/series" && req.method == "GET") co_return Json(200, SeriesJson());
    if (req.path == "/admin/audit" && req.method == "GET") co_return co_await RunBlocking(pool, [&] { return Audit(req); });
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
      const std::string rest = req.path.substr(kConn.size());
      const auto slash = rest.find('/');
      const std::string id = rest.substr(0, slash);
      const std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
      auto it = config.connectors.find(id);
      if (it == config.connectors.end()) co_return Error(404, "unknown_connector", "no such connector");
      const ConnectorConfig& c = it->second;
      const json body = json::parse(req.body.empty() ? "{}" : req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) co_return Error(400, "invalid_json", "the body must be a JSON object");
      if (action == "breaker/close" && req.method == "POST") co_return co_await CloseBreaker(c, body);
      if (action == "breaker/open" && req.method == "POST") co_return co_await RunBlocking(pool, [&] { return OpenBreaker(c, body); });
      if (action == "limits" && req.method == "PUT") co_return co_await RunBlocking(pool, [&] { return SetLimits(c, body); });
      co_return Error(404, "not_found", "no such route");
    }
    co_return Error(404, "not_found", "no such route");
  }

  static int CRYPTO_memcmp_shim(const char* a, const char* b, size_t n) {
    unsigned char diff = 0;
    for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff;
  }

  HttpResponse Connectors() {
    const SloSnapshot snapshot = slo_evaluator->Snapshot();
    json list = json::array();
    const int64_t now_ms = clock.now_epoch_ms();
    for (const auto& [id, c] : config.connectors) {
      auto b = breakers->Read(id);
      auto s = slots->Read(id, c.concurrency);
      if (!b.ok() || !s.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
      metrics.BreakerState(id, b->state);
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
                      {"in_flight", s->in_flight},
                      {"max_in_flight", s->max_in_flight},
                      {"limit_set_by_operator", s->limit_set_by_operator},
                      {"error_ratio_5m", recent_calls["error_ratio"]},
                      {"latency_ms_5m", recent_calls["latency"]},
                      {"calls_5m_this_instance", recent_calls["calls"]},
                      {"slo", ConnectorSloJson(snapshot, id)}});
    }
    return Json(200, {{"connectors", list}});
  }

  // Per connector: each SLO's budget, 1 h burn rate and firing tiers (the full picture is /admin/slo).
  static json ConnectorSloJson(const SloSnapshot& snapshot, const std::string& id) {
    json out = json::object();
    for (const auto& v : snapshot.slos) {
      if (v.connector != id) continue;
      json firing = json::array();
      for (const auto& a : v.alarms) {
        if (a.firing) firing.push_back({{"tier", std::string(a.tier->name)}, {"severity", std::string(slo::ToString(a.tier->severity))}});
      }
      out[std::string(slo::ToString(v.sli))] = {{"target", v.target},
                                                {"error_budget_remaining", v.budget_remaining},
                                                {"burn_rate_1h", v.burn_rates.at("1h")},
                                                {"firing", firing}};
    }
    if (snapshot.evaluated_at_ms == 0) out["status"] = "not_evaluated_yet";
    return out;
  }

  // The last hour, minute by minute, fleet-wide, per connector (the dashboard's sparklines).
  json SeriesJson() {
    const SloSnapshot snapshot = slo_evaluator->Snapshot();
    json connectors = json::object();
    for (const auto& [id, minutes] : snapshot.last_hour) {
      json points = json::array();
      for (const auto& m : minutes) {
        points.push_back({{"minute", Rfc3339(m.epoch_minute * 60'000)},
                          {"calls", m.counts.total},
                          {"errors", m.counts.error_bad},
                          {"slow", m.counts.latency_bad},
                          {"error_ratio", m.counts.total > 0 ? json(static_cast<double>(m.counts.error_bad) /
                                                                    static_cast<double>(m.counts.total))
                                                             : json(nullptr)},
                          {"p50_ms", Optional(m.p50_ms)},
                          {"p95_ms", Optional(m.p95_ms)},
                          {"p99_ms", Optional(m.p99_ms)}});
      }
      connectors[id] = points;
    }
    return {{"evaluated_at", snapshot.evaluated_at_ms > 0 ? json(Rfc3339(snapshot.evaluated_at_ms)) : json(nullptr)},
            {"connectors", connectors}};
  }

  // Every evaluate_interval_ms: flush this instance's SLO counts and evaluate (design §8 asks for
  // at least every 10 s). Store work on the pool; ends when draining starts (Stop flushes once more).
  asio::awaitable<void> EvaluateSlosForever() {
    asio::steady_timer timer(io);
    while (!draining) {
      co_await RunBlocking(pool, [this] {
        if (absl::Status s = slo_evaluator->Tick(); !s.ok()) spdlog::warn("SLO evaluation failed: {}", s.ToString());
        return 0;
      });
      timer.expires_after(std::chrono::milliseconds(config.slo.interval_ms));
      co_await timer.async_wait(asio::use_awaitable);
    }
  }

  // The memory store has no sweeper of its own (SQLite's runs in the store; DynamoDB deletes by TTL):
  // expired items — chains past their retention, old SLO minutes — are deleted here.
  asio::awaitable<void> SweepMemoryStoreForever(store::MemoryItemStore* memory) {
    asio::steady_timer timer(io);
    while (!draining) {
      timer.expires_after(std::chrono::seconds(config.store.sweep_interval_s));
      co_await timer.async_wait(asio::use_awaitable);
      if (draining) break;
      co_await RunBlocking(pool, [memory] { return memory->SweepExpired(); });
    }
  }

  HttpResponse Audit(const HttpRequest& req) {
    int limit = 100;
    std::optional<int64_t> since;
    if (auto it = req.query.find("limit"); it != req.query.end()) {
      if (it->second.empty() || it->second.size() > 4 || it->second.find_first_not_of("0123456789") != std::string::npos ||
          std::stoi(it->second) < 1 || std::stoi(it->second) > 1000) {
        return Error(400, "invalid_request", "limit must be 1..1000");
      }
      limit = std::stoi(it->second);
    }
    if (auto it = req.query.find("since"); it != req.query.end()) {
      if (it->second.empty() || it->second.size() > 15 || it->second.find_first_not_of("0123456789") != std::string::npos) {
        return Error(400, "invalid_request", "since is epoch milliseconds");
      }
      since = std::stoll(it->second);
    }
    auto events = ledger->ReadAudit(limit, since);
    if (!events.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
    json list = json::array();
    for (const auto& e : *events) list.push_back(EventJson(e));
    return Json(200, {{"events", list}});
  }

  static std::string Actor(const json& body) { return "operator:" + body["requested_by"].get<std::string>(); }

  HttpResponse Audited(std::string_view type, const json& body, json data, HttpResponse answer) {
    data["reason"] = body["reason"];
    data["requested_by"] = body["requested_by"];
    if (auto e = ledger->Audit(type, Actor(body), Dump(data)); !e.ok()) {
      spdlog::error("audit {} not written: {}", std::string(type), e.status().ToString());
      return Error(503, "store_unavailable", "the change was made but its audit event could not be written");
    }
    return answer;
  }

  HttpResponse ListKillSwitches() {
    auto list = kill_switches->List();
    if (!list.ok()) return Error(503, "store_unavailable", "the store cannot be read right now");
    json out = json::array();
    for (const auto& k : *list) {
      out.push_back({{"scope", k.scope}, {"key", k.key}, {"reason", k.reason}, {"requested_by", k.requested_by}, {"at", k.at}});
    }
    return Json(200, {{"kill_switches", out}});
  }

  HttpResponse SetKillSwitch(const HttpRequest& req) {
    const json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return Error(400, "invalid_json", "the body must be a JSON object");
    if (auto bad = CheckAudit(body)) return *bad;
    if (!body.contains("scope") || !body["scope"].is_string() || !body.contains("key") || !body["key"].is_string()) {
      return Error(400, "invalid_request", "scope and key are required strings");
    }
    KillSwitch k{body["scope"], body["key"], body["reason"], body["requested_by"], Actor(body), ""};
    if (absl::Status s = KillSwitchService::ValidateSwitch(k.scope, k.key); !s.ok()) {
      return Error(400, "invalid_request", std::string(s.message()));
    }
    auto set = kill_switches->Set(k);
    if (!set.ok()) return Error(503, "store_unavailable", "the store cannot be written right now");
    const json state = {{"scope", set->scope}, {"key", set->key}, {"reason", set->reason},
                        {"requested_by", set->requested_by}, {"at", set->at}};
    return Audited("KILL_SWITCH_SET", body, {{"scope", k.scope}, {"key", k.key}}, Json(200, state));
  }

  HttpResponse ClearKillSwitch(const HttpRequest& req, const std::string& scope_and_key) {
    const auto slash = scope_and_key.find('/');
    if (slash == std::string::npos) return Error(404, "not_found", "use /admin/kill-switches/{scope}/{key}");
    const std::string scope = scope_and_key.substr(0, slash), key = scope_and_key.substr(slash + 1);
    const json body = json::parse(req.body.empty() ? "{}" : req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return Error(400, "invalid_json", "the body must be a JSON object");
    if (auto bad = CheckAudit(body)) return *bad;
    if (absl::Status s = KillSwitchService::ValidateSwitch(scope, key); !s.ok()) {
      return Error(400, "invalid_request", std::string(s.message()));
    }
    auto cleared = kill_switches->Clear(scope, key);
    if (!cleared.ok()) return Error(503, "store_unavailable", "the store cannot be written right now");
    if (!*cleared) return Error(404, "not_found", "no such kill switch");
    return Audited("KILL_SWITCH_CLEARED", body, {{"scope", scope}, {"key", key}},
                   Json(200, {{"scope", scope}, {"key", key}, {"cleared", true}}));
  }

  json BreakerJson(const breaker::Snapshot& b) {
    return {{"state", std::string(breaker::ToString(b.state))},
            {"open_until_epoch_sec", b.open_until_epoch_sec},
            {"half_open_probe_in_flight", b.half_open_probe_in_flight},
            {"generation", b.generation}};
  }

  asio::awaitable<HttpResponse> CloseBreaker(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) co_return *bad;
    const bool force = body.contains("force") && body["force"].is_boolean() && body["force"].get<bool>();
    json health = {{"checked", false}};
    if (!force) {
      // Never close blind: the connector's health endpoint must answer 2xx first.
      ClientRequest check;
      check.address = c.address;
      check.target = c.path_prefix + c.health_path;
      check.timeout = std::chrono::milliseconds(std::min(c.timeout_ms, 5000));
      auto check_op = AsyncHttpCall(std::move(check));
      ClientResult r = co_await std::move(check_op);
      health = {{"checked", true}, {"status", r.status}, {"error", r.error}};
      if (!r.ok || r.status < 200 || r.status >= 300) {
        co_return Json(409, {{"error", "connector_unhealthy"},
                             {"message", "the connector's health check failed; fix it or pass force: true"},
                             {"health", health}});
      }
    }
    co_return co_await RunBlocking(pool, [&]() -> HttpResponse {
      auto closed = breakers->ManualClose(c.id, c.breaker);
      if (!closed.ok()) return Error(503, "store_unavailable", "the store cannot be written right now");
      metrics.BreakerState(c.id, closed->state);
      return Audited("CIRCUIT_MANUALLY_CLOSED", body, {{"connector_id", c.id}, {"force", force}, {"health", health}},
                     Json(200, {{"id", c.id}, {"breaker", BreakerJson(*closed)}}));
    });
  }

  HttpResponse OpenBreaker(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) return *bad;
    auto opened = breakers->ForceOpen(c.id, c.breaker);
    if (!opened.ok()) return Error(503, "store_unavailable", "the store cannot be written right now");
    metrics.BreakerState(c.id, opened->state);
    return Audited("CIRCUIT_FORCED_OPEN", body, {{"connector_id", c.id}},
                   Json(200, {{"id", c.id}, {"breaker", BreakerJson(*opened)}}));
  }

  HttpResponse SetLimits(const ConnectorConfig& c, const json& body) {
    if (auto bad = CheckAudit(body)) return *bad;
    if (!body.contains("max_in_flight") || !body["max_in_flight"].is_number_integer() ||
        body["max_in_flight"].get<int64_t>() < 1 || body["max_in_flight"].get<int64_t>() > 100000) {
      return Error(400, "invalid_request", "max_in_flight must be an integer in 1..100000");
    }
    auto before = slots->Read(c.id, c.concurrency);
    if (body["max_in_flight"].get<int64_t>() < c.concurrency.shards) {
      return Error(400, "invalid_request", "max_in_flight must be at least the connector's concurrency_shards (" +
                                               std::to_string(c.concurrency.shards) + ")");
    }
    auto set = slots->SetLimit(c.id, static_cast<int>(body["max_in_flight"].get<int64_t>()), c.concurrency.shards);
    if (!set.ok()) return Error(503, "store_unavailable", "the store cannot be written right now");
    return Audited("LIMIT_CHANGED", body,
                   {{"connector_id", c.id},
                    {"from", before.ok() ? json(before->max_in_flight) : json(nullptr)},
                    {"to", set->max_in_flight}},
                   Json(200, {{"id", c.id}, {"in_flight", set->in_flight}, {"max_in_flight", set->max_in_flight}}));
  }

  Config config;
  const Clock& clock;
  Metrics metrics;
  TransitionAuditor auditor;
  std::unique_ptr<store::ItemStore> base_store;
  std::unique_ptr<MeteredItemStore> metered;
  std::string instance_id;
  std::unique_ptr<CircuitBreakerService> breakers;
  std::unique_ptr<ConnectorConcurrencyService> slots;
  std::unique_ptr<KillSwitchService> kill_switches;
  std::unique_ptr<Ledger> ledger;
  std::unique_ptr<ExecutionStore> executions;
  std::unique_ptr<IntentStore> intents;
  std::unique_ptr<SloCounters> slo_counters;
  std::unique_ptr<AlarmNotifier> notifier;
  std::unique_ptr<SloEvaluator> slo_evaluator;
  std::unique_ptr<ToolInvoker> invoker;
  std::unique_ptr<auth::JwtVerifier> verifier;
  std::string admin_token;
  RecentCalls recent;

  asio::io_context io;
  ConnectionPool downstream_pool;  // after io: its idle sockets must close before io is destroyed
  asio::thread_pool pool;
  std::unique_ptr<HttpServer> public_server, admin_server;
  int public_port = 0, admin_port = 0;
  std::atomic<int> in_flight{0};
  std::atomic<bool> draining{false};
};

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gateway::~Gateway() {
  if (impl_) impl_->pool.join();
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(Config config, const Clock& clock) {
  std::string admin_token;
  if (!config.admin.admin_token_env.empty()) {
    const char* v = std::getenv(config.admin.admin_token_env.c_str());
    if (v == nullptr || std::string(v).size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat("admin.admin_token_env: $", config.admin.admin_token_env,
                                                     " must hold a token of at least 16 characters"));
    }
    admin_token = v;
  }
  if (!IsLoopback(config.admin.listen.host) && admin_token.empty()) {
    return absl::InvalidArgumentError(
        "admin.listen is not a loopback address: set admin.admin_token_env so the admin listener needs a token");
  }
  auth::JwtVerifier::Options vo;
  if (!config.auth.hs256_secret_env.empty()) {
    if (const char* s = std::getenv(config.auth.hs256_secret_env.c_str()); s != nullptr) vo.hs256_secret = s;
  }
  vo.jwks_file = config.auth.jwks_file;
  vo.issuer = config.auth.issuer;
  vo.audience = config.auth.audience;
  vo.leeway_s = config.auth.leeway_s;
  if (vo.hs256_secret.empty() && vo.jwks_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("auth: no way to verify tokens: set $", config.auth.hs256_secret_env,
                                                   " (HS256, development) or auth.jwks_file"));
  }
  auto verifier = auth::JwtVerifier::Create(vo, clock);
  if (!verifier.ok()) return verifier.status();
  if (absl::Status s = ApplyConnectionCaps(config); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(std::move(config), clock);
  impl->verifier = std::move(*verifier);
  impl->admin_token = std::move(admin_token);
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

absl::Status Gateway::Start() {
  Impl& i = *impl_;
  if (absl::Status s = i.OpenStore(); !s.ok()) return s;
  ServerLimits limits;
  limits.max_body_bytes = i.config.server.max_body_bytes;
  limits.max_header_bytes = i.config.server.max_header_bytes;
  limits.request_timeout = std::chrono::milliseconds(i.config.server.request_timeout_ms);
  limits.write_timeout = std::chrono::milliseconds(i.config.server.write_timeout_ms);
  limits.max_connections = i.config.server.max_connections;
  limits.response_budget = std::make_shared<ResponseBudget>(i.config.server.max_response_buffer_bytes);  // both listeners
  i.public_server = std::make_unique<HttpServer>(i.io, limits, [&i](HttpRequest r) { return i.HandlePublic(std::move(r)); });
  ServerLimits admin_limits = limits;
  admin_limits.max_body_bytes = 64 * 1024;
  admin_limits.max_connections = i.config.admin.max_connections;
  i.admin_server = std::make_unique<HttpServer>(i.io, admin_limits, [&i](HttpRequest r) { return i.HandleAdmin(std::move(r)); });
  try {
    i.public_port = i.public_server->Start(i.config.server.listen);
    i.admin_port = i.admin_server->Start(i.config.admin.listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot listen: ", e.what()));
  }
  asio::co_spawn(i.io, i.EvaluateSlosForever(), asio::detached);
  if (auto* memory = dynamic_cast<store::MemoryItemStore*>(i.base_store.get())) {
    asio::co_spawn(i.io, i.SweepMemoryStoreForever(memory), asio::detached);
  }
  return absl::OkStatus();
}

int Gateway::public_port() const { return impl_->public_port; }
int Gateway::admin_port() const { return impl_->admin_port; }

void Gateway::Stop() {
  asio::post(impl_->io, [this] {
    Impl& i = *impl_;
    if (i.draining.exchange(true)) return;
    spdlog::info("shutting down: no new connections; waiting for {} in-flight invocation(s)", i.in_flight.load());
    i.public_server->StopAccepting();
    i.admin_server->StopAccepting();
    asio::co_spawn(
        i.io,
        [&i]() -> asio::awaitable<void> {
          int max_timeout_ms = 0;
          for (const auto& [id, c] : i.config.connectors) max_timeout_ms = std::max(max_timeout_ms, c.timeout_ms);
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_timeout_ms + 5000);
          asio::steady_timer timer(i.io);
          while (i.in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
            timer.expires_after(std::chrono::milliseconds(20));
            co_await timer.async_wait(asio::use_awaitable);
          }
          // The last calls' SLO counts, so a restart or a rolling deploy loses none.
          co_await RunBlocking(i.pool, [&i] {
            if (absl::Status s = i.slo_counters->Flush(); !s.ok()) spdlog::warn("SLO counts lost at shutdown: {}", s.ToString());
            return 0;
          });
          i.io.stop();
        },
        asio::detached);
  });
}

void Gateway::Run() {
  Impl& i = *impl_;
  asio::signal_set signals(i.io, SIGINT, SIGTERM);
  signals.async_wait([this](const boost::system::error_code& ec, int) {
    if (!ec) Stop();
  });
  std::vector<std::thread> threads;
  for (int t = 1; t < i.config.server.io_threads; ++t) threads.emplace_back([&i] { i.io.run(); });
  i.io.run();
  for (auto& t : threads) t.join();
  i.pool.join();
  spdlog::info("stopped");
}

}  // namespace toolgate::api
