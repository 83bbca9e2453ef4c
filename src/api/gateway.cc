#include "api/gateway.h"

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <pthread.h>
#include <sched.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "api/admin_replays.h"
#include "api/admin_routes.h"
#include "api/api_support.h"
#include "api/descriptor_limit.h"
#include "api/gateway_context.h"
#include "api/http.h"
#include "api/mcp_routes.h"
#include "api/mcp_session.h"
#include "api/public_routes.h"
#include "api/callback_deliverer.h"
#include "api/queue_dispatcher.h"
#include "api/recent_calls.h"
#include "api/routes.h"
#include "api/webhook_notifier.h"
#include "spdlog/spdlog.h"
#include "toolgate/engine/store_clock_watch.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/auth/jwt_verifier.h"
#include "toolgate/connectors/connectors.h"
#include "toolgate/engine/engine.h"
#include "toolgate/engine/event_log.h"
#include "toolgate/store/memory_item_store.h"

#ifndef TOOLGATE_REVISION
#define TOOLGATE_REVISION "unknown"
#endif
#ifndef TOOLGATE_VERSION
#define TOOLGATE_VERSION "0.0.0"
#endif

namespace toolgate::api {

using json = nlohmann::json;

namespace {

// An io_context whose unfinished work can be destroyed before it is (~Gateway).
struct EventLoop : asio::io_context {
  using asio::execution_context::shutdown;
  using asio::io_context::io_context;
};

// A streamed answer (an MCP call's event stream) as the access log sees it: its line is written
// when the stream has produced its last piece, or when its client left before that (the connection
// drops the stream), with the time to then — not the time to the first event, when the handler
// returned.
class AccessLoggedStream final : public ResponseStream {
 public:
  using Log = std::function<void(bool complete)>;
  AccessLoggedStream(std::shared_ptr<ResponseStream> inner, Log log) : inner_(std::move(inner)), log_(std::move(log)) {}
  ~AccessLoggedStream() override {
    if (!log_) return;
    try {
      log_(false);
    } catch (...) {  // a log line is never worth a destructor's exception
    }
  }
  AccessLoggedStream(const AccessLoggedStream&) = delete;
  AccessLoggedStream& operator=(const AccessLoggedStream&) = delete;

  asio::awaitable<std::optional<std::string>> Next() override {
    auto next_op = inner_->Next();
    std::optional<std::string> piece = co_await std::move(next_op);
    if (!piece && log_) std::exchange(log_, nullptr)(true);
    co_return piece;
  }

 private:
  std::shared_ptr<ResponseStream> inner_;
  Log log_;  // empty once written
};

// The cores this process may run on: its CPU affinity (taskset, a container's cpuset), not every
// core of the machine.
unsigned UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return static_cast<unsigned>(CPU_COUNT(&set));
  return std::thread::hardware_concurrency();
}

// [server] io_threads, with 0 read as one per core the process may run on (at most 16: past that
// the store, not the loops, is the limit).
int EventLoopThreads(const Config& config) {
  if (config.server.io_threads > 0) return config.server.io_threads;
  return static_cast<int>(std::clamp(UsableCores(), 1u, 16u));
}

}  // namespace

// The process: the engine over the store, the two listeners and their routes, the background loops.
struct Gateway::Impl {
  // The downstream pool keeps idle connections per address and loop: 64 with one loop, 32 each with
  // two, at least 16 each (the first loop's MCP, queue and callback traffic needs some).
  Impl(Config c, const Clock& clk)
      : config(std::move(c)),
        clock(clk),
        downstream_pool(std::max<size_t>(16, 64 / static_cast<size_t>(EventLoopThreads(config)))),
        pool(static_cast<size_t>(config.server.store_threads)) {
    for (int k = 1; k < EventLoopThreads(config); ++k) {
      loops.push_back(std::make_unique<EventLoop>(1));
      loops_work.push_back(asio::make_work_guard(*loops.back()));
    }
  }

  absl::Status OpenEngine() {
    if (!config.slo.webhook_url.empty()) {
      notifier = std::make_unique<WebhookNotifier>(io, config.slo.webhook_address, config.slo.webhook_path);
    }
    Engine::Options options;
    options.alarm_notifier = notifier.get();
    options.store.on_retry = [this](std::string_view op, std::string_view reason) {
      if (engine) engine->metrics().StoreRetry(config.store.backend, std::string(op), std::string(reason));
    };
    options.store.on_write_units = [this](const store::ItemKey& key, double units) {
      if (engine) engine->metrics().StoreWriteUnits(config.store.backend, key, units);
    };
    options.wrap_store = wrap_store;
    auto opened = Engine::Open(config, clock, std::move(options));
    if (!opened.ok()) return opened.status();
    engine = std::move(*opened);
    if (absl::Status s = engine->PrepareConnectors(); !s.ok()) return s;
    // Whether this instance may write the store, known from the start (StoreWriteHealth): a gateway
    // started on a store it may not write (a read-only mount, a role without write access) is not
    // ready before its first call fails on it. Not fatal: the store may take writes again later.
    if (absl::Status probe = engine->ProbeStoreWrite(); !probe.ok()) {
      spdlog::error("store: a write at start failed (/readyz answers 503 store_unwritable until writes go in): {}",
                    probe.ToString());
    }
    McpConnectorDeps mcp{engine->mcp_tools(), engine->store(),
                         [this](std::function<void()> work) { asio::post(pool, std::move(work)); }, io.get_executor(),
                         &engine->invoker()};
    absl::StatusOr<Connectors> made = MakeConnectors(config, downstream_pool, clock, &mcp);
    if (!made.ok()) return made.status();
    connectors = *std::move(made);
    context = std::make_unique<GatewayContext>(GatewayContext{config, clock, *engine, pool, health_pool,
                                                              downstream_pool, *verifier, admin_token, recent,
                                                              in_flight, draining, connectors});
    public_routes = std::make_unique<PublicRoutes>(*context);
    if (mcp_session_secret.empty()) {
      spdlog::warn(
          "mcp: no session key configured ([mcp] session_secret_env or an HS256 secret): Mcp-Session-Id "
          "values are signed with a random key, so only this instance accepts the ones it issues");
    }
    mcp_routes = std::make_unique<McpRoutes>(*context, McpSessionIds::DeriveKey(mcp_session_secret));
    admin_routes = std::make_unique<AdminRoutes>(*context);
    return absl::OkStatus();
  }

  // Every evaluate_interval_ms: flush this instance's SLO counts and evaluate (design §8 asks for
  // at least every 10 s). Store work on the pool; ends when draining starts (Stop flushes once more).
  asio::awaitable<void> EvaluateSlosForever() {
    asio::steady_timer timer(io);
    while (!draining) {
      co_await RunBlocking(pool, [this] {
        if (absl::Status s = engine->slo_evaluator().Tick(); !s.ok())
          spdlog::warn("SLO evaluation failed: {}", s.ToString());
        return 0;
      });
      timer.expires_after(std::chrono::milliseconds(config.slo.interval_ms));
      co_await timer.async_wait(asio::use_awaitable);
    }
  }

  // Every request of either listener: routed, then counted (toolgate_http_responses_total) and,
  // with [log] access = true, logged — by route pattern, never with a header (no token).
  asio::awaitable<HttpResponse> Serve(const char* listener, HttpRequest r) {
    const auto started = clock.now_monotonic();
    const std::string method = r.method, path = r.path;
    HttpResponse answer;
    if (std::string_view(listener) == "admin") {
      auto op = admin_routes->Handle(std::move(r));
      answer = co_await std::move(op);
    } else if (McpRoutes::Serves(r.path)) {
      auto op = mcp_routes->Handle(std::move(r));
      answer = co_await std::move(op);
    } else {
      auto op = public_routes->Handle(std::move(r));
      answer = co_await std::move(op);
    }
    const std::string route(MatchRoute(listener, method, path));
    engine->metrics().HttpResponse(listener, route, answer.status);
    if (config.log.access) {
      std::string execution_id;
      if (answer.content_type == "application/json" && answer.body.size() <= 64 * 1024 && !answer.body.empty() &&
          answer.body.front() == '{') {
        const json j = json::parse(answer.body, nullptr, /*allow_exceptions=*/false);
        if (j.is_object() && j.contains("execution_id") && j["execution_id"].is_string()) {
          execution_id = j["execution_id"];
        } else if (j.is_object() && j.contains("result") && j["result"].is_object()) {
          // An MCP tools/call answer names its execution in the result's _meta (§14).
          const json& r = j["result"];
          if (auto meta = r.find("_meta"); meta != r.end() && meta->is_object()) {
            if (auto id = meta->find("io.toolgate/execution_id"); id != meta->end() && id->is_string())
              execution_id = *id;
          }
        }
      }
      json fields = {
          {"listener", listener}, {"method", method}, {"route", route}, {"path", path}, {"status", answer.status}};
      if (!execution_id.empty()) fields["execution_id"] = execution_id;
      if (!answer.tenant_id.empty()) fields["tenant"] = answer.tenant_id;
      std::string message = method + " " + path + " " + std::to_string(answer.status);
      auto log = [&clock = clock, started, fields = std::move(fields),
                  message = std::move(message)](std::optional<bool> stream_complete) mutable {
        const double ms = std::chrono::duration<double, std::milli>(clock.now_monotonic() - started).count();
        fields["latency_ms"] = std::round(ms * 1000) / 1000;
        if (stream_complete) {
          fields["streamed"] = true;
          fields["complete"] = *stream_complete;  // false: the client left before the stream's end
        }
        LogEvent(spdlog::level::info, "http_request", message, std::move(fields));
      };
      if (answer.stream) {
        answer.stream = std::make_shared<AccessLoggedStream>(
            std::move(answer.stream), [log = std::move(log)](bool complete) mutable { log(complete); });
      } else {
        log(std::nullopt);
      }
    }
    co_return answer;
  }

  // One line at start saying what this instance found in the store: breakers not CLOSED, kill
  // switches in force, limits set by operators (an operator restarting at 3 a.m. sees them at once).
  void LogRestoredState() {
    json breakers = json::array(), limits = json::array(), kills = json::array();
    for (const auto& [id, c] : config.connectors) {
      if (auto b = engine->breakers().Read(id); b.ok() && b->state != breaker::State::kClosed) {
        json e = {
            {"connector", id}, {"state", std::string(breaker::ToString(b->state))}, {"generation", b->generation}};
        if (b->state == breaker::State::kForcedOpen) {
          e["forced_by"] = b->forced_by;
          e["forced_reason"] = b->forced_reason;
        }
        breakers.push_back(e);
      }
      if (auto s = engine->slots().Read(id, c.concurrency); s.ok() && s->limit_set_by_operator) {
        limits.push_back({{"connector", id},
                          {"max_in_flight", s->max_in_flight},
                          {"config_max_in_flight", c.concurrency.max_in_flight}});
      }
    }
    if (auto list = engine->kill_switches().List(); list.ok()) {
      for (const auto& k : *list)
        kills.push_back({{"scope", k.scope}, {"key", k.key}, {"reason", k.reason}, {"requested_by", k.requested_by}});
    }
    LogEvent(breakers.empty() && limits.empty() && kills.empty() ? spdlog::level::info : spdlog::level::warn,
             "restored_state",
             absl::StrCat("restored from the store: ", breakers.size(), " breaker(s) not CLOSED, ", kills.size(),
                          " kill switch(es) in force, ", limits.size(), " limit(s) set by operators"),
             {{"breakers_not_closed", breakers}, {"kill_switches", kills}, {"operator_limits", limits}});
  }

  // Slots whose lease ended with no release (their instance was killed, or lost the store) are
  // reclaimed by the next acquire that finds the connector full; until then `status`, the admin
  // views and the in-flight gauge counted them as calls in flight, for as long as no connector
  // filled up. Every kReclaimEvery each connector's expired leases are reclaimed here too: one read
  // per connector, a conditional write per expired lease (S7: exactly one reclaimer wins each).
  asio::awaitable<void> ReclaimExpiredLeasesForever() {
    static constexpr std::chrono::seconds kReclaimEvery{5};
    asio::steady_timer timer(io);
    while (!draining) {
      timer.expires_after(kReclaimEvery);
      co_await timer.async_wait(asio::use_awaitable);
      if (draining) break;
      co_await RunBlocking(pool, [this] {
        for (const auto& [id, c] : config.connectors) {
          absl::StatusOr<int> n = engine->slots().ReclaimExpired(id, c.concurrency);
          if (!n.ok()) {
            spdlog::warn("connector {}: expired slot leases not reclaimed: {}", id, n.status().ToString());
          } else if (*n > 0) {
            spdlog::info(
                "connector {}: {} slot(s) of expired leases reclaimed (an instance that stopped without "
                "releasing them)",
                id, *n);
          }
        }
        return 0;
      });
      CheckClockAgainstStore();
    }
  }

  // This host's clock against DynamoDB's (the latest answer's Date): the gauge, and a warning when
  // it is too far off for the leases' clock skew (StoreClockWatch). SQLite and memory stores are one
  // host's: nothing to compare.
  void CheckClockAgainstStore() {
    auto* dynamo = dynamic_cast<store::DynamoDbItemStore*>(&engine->base_store());
    if (dynamo == nullptr) return;
    const std::optional<store::DynamoDbItemStore::ClockReading> reading = dynamo->clock_reading();
    if (!reading) return;
    engine->metrics().StoreClockAhead(static_cast<double>(reading->ahead_ms) / 1000);
    if (auto say = clock_watch.Observe(reading->ahead_ms, clock.now_monotonic_ms())) {
      if (say->warning) {
        LogEvent(spdlog::level::warn, "clock_skew", say->text, {{"ahead_ms", reading->ahead_ms}});
      } else {
        LogEvent(spdlog::level::info, "clock_skew_ended", say->text, {{"ahead_ms", reading->ahead_ms}});
      }
    }
  }

  // Outcomes of calls the store did not take (it was unreachable, or another process held SQLite's
  // lock past its busy timeout), written again as they fall due (UnrecordedOutcomes' backoff).
  asio::awaitable<void> RetryUnrecordedOutcomesForever() {
    asio::steady_timer timer(io);
    UnrecordedOutcomes& unrecorded = engine->unrecorded_outcomes();
    while (!draining) {
      timer.expires_after(std::chrono::seconds(1));
      co_await timer.async_wait(asio::use_awaitable);
      if (draining) break;
      if (unrecorded.held() > 0) co_await RunBlocking(pool, [&unrecorded] { return unrecorded.RetryDue(); });
    }
  }

  // Asio reprograms a loop's timerfd (one system call) whenever a timer is set to expire before
  // every other timer of the loop: on a loop with few connections that is each operation's deadline
  // (a request's read, its answer's write, the downstream call's), four per call. A timer that
  // always expires sooner (every kTick) keeps an ordinary deadline from being the first: the timerfd
  // is then reprogrammed about twice per tick instead. A shorter wait (a retry's jittered backoff, a
  // connector's timeout_ms under kTick, a poll) is first now and then, and reprograms as before.
  static asio::awaitable<void> KeepATimerFirstForever() {
    static constexpr std::chrono::milliseconds kTick{100};
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (;;) {
      timer.expires_after(kTick);
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

  Config config;
  const Clock& clock;
  std::function<std::unique_ptr<store::ItemStore>(store::ItemStore&)> wrap_store;  // GatewayOptions
  std::unique_ptr<AlarmNotifier> notifier;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<auth::JwtVerifier> verifier;
  std::string admin_token;
  RecentCalls recent;
  StoreClockWatch clock_watch{config.SmallestClockSkewS()};

  // The main event loop: both listeners' accepts, the admin listener's connections, connectors'
  // background work (an MCP connector's calls too), the queue, callbacks, SLO evaluation and stop. Run
  // by one thread, so all of that is single-threaded, as before there were several loops.
  EventLoop io{1};
  // The other io_threads - 1 event loops, one thread each: the public listener's connections are
  // dealt out over `io` and these (HttpServer), each served wholly on its loop.
  std::vector<std::unique_ptr<EventLoop>> loops;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> loops_work;
  ConnectionPool downstream_pool;  // after the loops: its idle sockets must close before they are destroyed
  Connectors connectors;
  asio::thread_pool pool;
  // Two threads: the probe write (one at a time) may wait out a held lock on one while reads go on.
  asio::thread_pool health_pool{2};
  std::unique_ptr<GatewayContext> context;
  std::unique_ptr<PublicRoutes> public_routes;
  std::unique_ptr<McpRoutes> mcp_routes;
  std::string mcp_session_secret;  // signs Mcp-Session-Id values (empty: a random key)
  std::unique_ptr<AdminRoutes> admin_routes;
  std::unique_ptr<QueueDispatcher> dispatcher;
  std::unique_ptr<CallbackDeliverer> callbacks;
  std::unique_ptr<HttpServer> public_server, admin_server;
  int public_port = 0, admin_port = 0;
  std::atomic<int> in_flight{0};
  std::atomic<bool> draining{false};
};

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gateway::~Gateway() {
  if (!impl_) return;
  impl_->pool.join();
  impl_->health_pool.join();
  // A call's batch still in the store's queue (a commit slower than the drain) posts its answer to
  // the call's loop when it is committed: let it do so while the loops exist.
  if (impl_->engine) {
    if (store::AsyncItemStore* port = impl_->engine->async_port()) port->WaitIdle();
  }
  // Every loop's unfinished work is destroyed before any loop is: a coroutine of one loop may wait
  // on another (an MCP call carried over to the main loop, a token fetch shared across loops), and
  // destroying it touches both.
  for (auto& loop : impl_->loops) loop->shutdown();
  impl_->io.shutdown();
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(Config config, const Clock& clock, GatewayOptions options) {
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
  // RFC 7518 §3.2: an HS256 key of at least 256 bits. A shorter one falls to an offline search from
  // any one token it signed, and with it every tenant's identity (and the MCP session key below).
  constexpr size_t kMinSecretBytes = 32;
  if (!vo.hs256_secret.empty() && vo.hs256_secret.size() < kMinSecretBytes) {
    return absl::InvalidArgumentError(absl::StrCat("auth.hs256_secret_env: $", config.auth.hs256_secret_env,
                                                   " must hold a secret of at least ", kMinSecretBytes,
                                                   " bytes (RFC 7518 section 3.2); it holds ", vo.hs256_secret.size()));
  }
  // The callbacks' HMAC key likewise: a short one, guessed from one signed delivery, lets anyone sign
  // deliveries every receiver accepts.
  if (!config.queue.callback_allowlist.empty()) {
    const size_t held = ReadCallbackSecret(config.queue).size();
    if (held < kMinSecretBytes) {
      const std::string source = config.queue.callback_secret_env.empty()
                                     ? "queue.callback_secret_file: " + config.queue.callback_secret_file
                                     : "queue.callback_secret_env: $" + config.queue.callback_secret_env;
      return absl::InvalidArgumentError(
          absl::StrCat(source, " must hold a secret of at least ", kMinSecretBytes, " bytes; it holds ", held));
    }
  }
  if (vo.hs256_secret.empty() && vo.jwks_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("auth: no way to verify tokens: set $", config.auth.hs256_secret_env,
                                                   " (HS256, development) or auth.jwks_file"));
  }
  auto verifier = auth::JwtVerifier::Create(vo, clock);
  if (!verifier.ok()) return verifier.status();
  if (absl::Status s = ApplyConnectionCaps(config); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(std::move(config), clock);
  impl->wrap_store = std::move(options.wrap_store);
  impl->verifier = std::move(*verifier);
  impl->admin_token = std::move(admin_token);
  // Mcp-Session-Id values are signed with a key every instance of a fleet derives from the same
  // config: [mcp] session_secret_env, else the HS256 secret (mcp_session.h).
  if (!impl->config.mcp.session_secret_env.empty()) {
    if (const char* s = std::getenv(impl->config.mcp.session_secret_env.c_str()); s != nullptr)
      impl->mcp_session_secret = s;
  }
  if (impl->mcp_session_secret.empty()) impl->mcp_session_secret = vo.hs256_secret;
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

absl::Status Gateway::Start() {
  Impl& i = *impl_;
  if (absl::Status s = i.OpenEngine(); !s.ok()) return s;
  ServerLimits limits;
  limits.max_body_bytes = i.config.server.max_body_bytes;
  limits.max_header_bytes = i.config.server.max_header_bytes;
  limits.request_timeout = std::chrono::milliseconds(i.config.server.request_timeout_ms);
  limits.write_timeout = std::chrono::milliseconds(i.config.server.write_timeout_ms);
  limits.max_connections = i.config.server.max_connections;
  limits.response_budget = std::make_shared<ByteBudget>(i.config.server.max_response_buffer_bytes);  // both listeners
  limits.request_budget = std::make_shared<ByteBudget>(i.config.server.max_request_buffer_bytes);
  // What a listener answers on its own (a malformed or oversized request, over its connection cap)
  // has no route: counted as route "unrouted".
  limits.own_answer = [&i](int status) { i.engine->metrics().HttpResponse("public", "unrouted", status); };
  i.engine->metrics().BuildInfo(TOOLGATE_VERSION, TOOLGATE_REVISION);
  i.LogRestoredState();
  spdlog::info("event loops: {} (server.io_threads = {}), store threads: {}", i.loops.size() + 1,
               i.config.server.io_threads, i.config.server.store_threads);
  std::vector<asio::io_context*> public_loops{&i.io};
  for (auto& loop : i.loops) public_loops.push_back(loop.get());
  i.public_server = std::make_unique<HttpServer>(
      i.io, limits, [&i](HttpRequest r) { return i.Serve("public", std::move(r)); }, std::move(public_loops));
  ServerLimits admin_limits = limits;
  admin_limits.max_body_bytes = 64 * 1024;
  admin_limits.max_connections = i.config.admin.max_connections;
  admin_limits.own_answer = [&i](int status) { i.engine->metrics().HttpResponse("admin", "unrouted", status); };
  i.admin_server =
      std::make_unique<HttpServer>(i.io, admin_limits, [&i](HttpRequest r) { return i.Serve("admin", std::move(r)); });
  // Which listener could not bind, and where: "address in use" alone leaves an operator guessing.
  const char* listener = "server.listen";
  const HostPort* address = &i.config.server.listen;
  try {
    i.public_port = i.public_server->Start(i.config.server.listen);
    i.mcp_routes->SetListenPort(i.public_port);
    listener = "admin.listen";
    address = &i.config.admin.listen;
    i.admin_port = i.admin_server->Start(i.config.admin.listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", listener, " ", address->ToString(), ": ", e.what()));
  }
  for (auto& [id, connector] : i.connectors) connector->Start(i.io.get_executor());
  asio::co_spawn(i.io, i.EvaluateSlosForever(), asio::detached);
  asio::co_spawn(i.io, i.ReclaimExpiredLeasesForever(), asio::detached);
  asio::co_spawn(i.io, Impl::KeepATimerFirstForever(), asio::detached);
  for (auto& loop : i.loops) asio::co_spawn(*loop, Impl::KeepATimerFirstForever(), asio::detached);
  asio::co_spawn(i.io, i.RetryUnrecordedOutcomesForever(), asio::detached);
  asio::co_spawn(i.io, i.admin_routes->replays().RunJobsForever(), asio::detached);  // resumes bulk replays
  i.dispatcher = std::make_unique<QueueDispatcher>(*i.context, i.io);                // queued calls (§15)
  i.dispatcher->Start();
  // Callbacks of queued calls (§15): also on an instance without an allowlist, so deliveries owed
  // before a config change still end (CALLBACK_FAILED without a secret).
  i.callbacks = std::make_unique<CallbackDeliverer>(*i.context, i.io, ReadCallbackSecret(i.config.queue));
  i.callbacks->Start();
  if (auto* memory = dynamic_cast<store::MemoryItemStore*>(&i.engine->base_store())) {
    asio::co_spawn(i.io, i.SweepMemoryStoreForever(memory), asio::detached);
  }
  return absl::OkStatus();
}

int Gateway::public_port() const { return impl_->public_port; }
int Gateway::admin_port() const { return impl_->admin_port; }

namespace {
// Checks `done` every 20 ms until it holds or `deadline` passes (a stop's drains).
template <typename Done>
asio::awaitable<void> PollUntil(asio::io_context& io, std::chrono::steady_clock::time_point deadline, Done done) {
  asio::steady_timer timer(io);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(asio::use_awaitable);
  }
}
}  // namespace

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
          co_await PollUntil(i.io, deadline, [&i] { return i.in_flight.load() == 0; });
          // Their answers delivered: a call recorded SUCCEEDED whose answer a stop cut off would be
          // sent again by a client that retries. Each write has write_timeout_ms.
          const auto delivered_by =
              std::chrono::steady_clock::now() + std::chrono::milliseconds(i.config.server.write_timeout_ms);
          co_await PollUntil(i.io, delivered_by, [&i] {
            return i.public_server->RequestsInProgress() + i.admin_server->RequestsInProgress() == 0;
          });
          // The last calls' SLO counts, so a restart or a rolling deploy loses none; bulk replay
          // jobs given back, so a restart (or another instance) goes on with them at once.
          co_await RunBlocking(i.pool, [&i] {
            // Outcomes still held get one more try, due or not; what the store still refuses is
            // left IN_PROGRESS (replayable once abandoned), each named in the log.
            if (UnrecordedOutcomes& held = i.engine->unrecorded_outcomes(); held.held() > 0) {
              held.RetryDue(/*all=*/true);
              held.LogLeft();
            }
            i.admin_routes->replays().ReleaseClaims();
            if (absl::Status s = i.engine->slo_counters().Flush(); !s.ok())
              spdlog::warn("SLO counts lost at shutdown: {}", s.ToString());
            return 0;
          });
          for (auto& [id, connector] : i.connectors) connector->Stop();  // MCP server processes end here
          for (auto& loop : i.loops) loop->stop();
          i.io.stop();
        },
        asio::detached);
  });
}

void Gateway::Run() {
  Impl& i = *impl_;
  // The other loops' threads end with the main loop, also when it ends by an exception.
  struct LoopThreads {
    Impl& i;
    std::vector<std::thread> threads;
    ~LoopThreads() {
      for (auto& loop : i.loops) loop->stop();
      for (auto& t : threads) t.join();
    }
  } loop_threads{i, {}};
  for (auto& loop : i.loops) {
    const std::string name = "loop-" + std::to_string(loop_threads.threads.size() + 1);
    loop_threads.threads.emplace_back([&loop, name] {
      pthread_setname_np(pthread_self(), name.c_str());  // for top -H, perf and gdb
      loop->run();
    });
  }
  i.io.run();
  for (auto& t : loop_threads.threads) t.join();
  loop_threads.threads.clear();
  i.pool.join();
  i.health_pool.join();
  spdlog::info("stopped");
}

}  // namespace toolgate::api
