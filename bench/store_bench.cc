// Micro-benchmarks of the hot store operations: breaker permission check, slot acquire+release,
// failure recording — on the memory and SQLite backends, one thread and contended.
// Results and the machine they ran on: docs/performance.md.

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>
#include <memory>
#include <mutex>

#include "toolgate/clock.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/store/forwarding_item_store.h"
#include "toolgate/store/memory_item_store.h"
#include "toolgate/store/sqlite_item_store.h"

namespace {

using namespace toolgate;  // NOLINT: benchmark program

enum Backend : int64_t { kMemory = 0, kSqliteNormal = 1, kSqliteFull = 2 };

// One store per backend for the whole run, shared by every benchmark thread.
struct Env {
  SystemClock clock;
  std::unique_ptr<store::ItemStore> store;
  std::unique_ptr<CircuitBreakerService> breakers;
  std::unique_ptr<ConnectorConcurrencyService> slots;
  std::string dir;
};

Env& EnvFor(int64_t backend) {
  static std::mutex mu;
  static std::unique_ptr<Env> envs[3];
  std::lock_guard lock(mu);
  auto& env = envs[backend];
  if (env) return *env;
  env = std::make_unique<Env>();
  if (backend == kMemory) {
    env->store = std::make_unique<store::MemoryItemStore>(env->clock);
  } else {
    char tmpl[] = "/tmp/toolgate-bench-XXXXXX";
    env->dir = mkdtemp(tmpl);
    store::SqliteItemStore::Options o;
    o.path = env->dir + "/bench.db";
    o.synchronous_full = backend == kSqliteFull;
    o.sweep_interval_ms = 0;
    env->store = std::move(store::SqliteItemStore::Open(o, env->clock).value());
  }
  env->breakers = std::make_unique<CircuitBreakerService>(*env->store, env->clock, "bench");
  env->slots = std::make_unique<ConnectorConcurrencyService>(*env->store, env->clock);
  return *env;
}

const char* Label(int64_t backend) {
  switch (backend) {
    case kMemory:
      return "memory";
    case kSqliteNormal:
      return "sqlite synchronous=NORMAL";
    default:
      return "sqlite synchronous=FULL";
  }
}

breaker::Config NeverOpens() {
  breaker::Config c;
  c.failure_threshold = 1'000'000'000;
  c.window_s = 86400;
  return c;
}

// A CLOSED breaker: one store read.
void BM_BreakerPermission(benchmark::State& state) {
  Env& env = EnvFor(state.range(0));
  const breaker::Config config = NeverOpens();
  for (auto _ : state) {
    auto p = env.breakers->RequestPermission("bench-permission", config);
    if (!p.ok() || !p->allowed) state.SkipWithError("permission failed");
    benchmark::DoNotOptimize(p);
  }
  state.SetLabel(Label(state.range(0)));
}

// Two conditional writes: the acquire and the release.
void BM_AcquireRelease(benchmark::State& state) {
  Env& env = EnvFor(state.range(0));
  ConcurrencyConfig config;
  config.max_in_flight = 100000;
  const std::string conn = "bench-slots";
  if (state.thread_index() == 0) (void)env.slots->EnsureConnector(conn, config);
  for (auto _ : state) {
    auto lease = env.slots->TryAcquire(conn, config);
    if (!lease.ok() || !lease->has_value()) {
      state.SkipWithError("acquire failed");
      break;
    }
    auto released = env.slots->Release(**lease);
    if (!released.ok() || !*released) state.SkipWithError("release failed");
  }
  state.SetLabel(Label(state.range(0)));
}

// A read and one conditional ADD on the breaker item (the threshold is never reached).
void BM_RecordFailure(benchmark::State& state) {
  Env& env = EnvFor(state.range(0));
  const breaker::Config config = NeverOpens();
  const std::string conn = "bench-failures-" + std::to_string(state.range(0));
  for (auto _ : state) {
    auto p = env.breakers->RequestPermission(conn, config);
    if (!p.ok() || !p->allowed) {
      state.SkipWithError("permission failed");
      break;
    }
    if (!env.breakers->RecordFailure(conn, config, *p, "tenant").ok()) state.SkipWithError("record failed");
  }
  state.SetLabel(Label(state.range(0)));
}

// Acquire+release on a DynamoDB-API server, 1 vs K shards: range(0) = shards. The endpoint comes from
// TOOLGATE_BENCH_DYNAMODB_ENDPOINT (bench/dynamodb.sh starts dynalite and sets it); skipped without it.
void BM_AcquireReleaseDynamoDb(benchmark::State& state) {
  static std::mutex mu;
  static std::unique_ptr<Env> env_holder;
  const char* endpoint = std::getenv("TOOLGATE_BENCH_DYNAMODB_ENDPOINT");
  if (endpoint == nullptr) {
    state.SkipWithError("TOOLGATE_BENCH_DYNAMODB_ENDPOINT is not set (run bench/dynamodb.sh)");
    for (auto _ : state) {
    }
    return;
  }
  {
    std::lock_guard lock(mu);
    if (!env_holder) {
      env_holder = std::make_unique<Env>();
      store::DynamoDbItemStore::Options o;
      o.endpoint = endpoint;
      o.table = "toolgate_bench";
      o.credentials = {"AKIDBENCH", "bench-secret-for-toolgate-benchmarks-0123", ""};
      o.request_timeout_ms = 10000;
      auto opened = store::DynamoDbItemStore::Open(o, env_holder->clock);
      if (!opened.ok() || !(*opened)->InitTable().ok()) {
        state.SkipWithError("cannot open the DynamoDB table");
        for (auto _ : state) {
        }
        return;
      }
      env_holder->store = std::move(*opened);
      env_holder->slots = std::make_unique<ConnectorConcurrencyService>(*env_holder->store, env_holder->clock);
    }
  }
  Env& env = *env_holder;
  ConcurrencyConfig config;
  config.max_in_flight = 64;  // never full: every acquire is one conditional write on one shard item
  config.shards = static_cast<int>(state.range(0));
  const std::string conn = "bench-shards-" + std::to_string(config.shards);
  if (state.thread_index() == 0 && !env.slots->EnsureConnector(conn, config).ok()) state.SkipWithError("ensure failed");
  int64_t deferred = 0;
  for (auto _ : state) {
    auto lease = env.slots->TryAcquire(conn, config);
    if (!lease.ok()) {
      state.SkipWithError(("acquire failed: " + lease.status().ToString()).c_str());
      break;
    }
    if (!lease->has_value()) {
      ++deferred;
      continue;
    }
    auto released = env.slots->Release(**lease);
    if (!released.ok() || !*released) state.SkipWithError("release failed");
  }
  state.counters["deferred"] = static_cast<double>(deferred);
  state.SetLabel("dynamodb-api, " + std::to_string(config.shards) + " shard(s)");
}

// A simulator of DynamoDB's hot-key limit: every item takes at most `writes_per_s` writes per second
// (a token bucket per key); a write over the limit waits for its token, as a client retrying
// throttled writes does. Over the memory store, so the store itself is never the bottleneck.
class HotKeyLimitedStore final : public store::ForwardingItemStore {
 public:
  HotKeyLimitedStore(store::ItemStore& target, double writes_per_s)
      : ForwardingItemStore(target), interval_(std::chrono::duration<double>(1.0 / writes_per_s)) {}
  using ItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& condition, store::ReturnValues returns) override {
    Throttle(key);
    return ForwardingItemStore::Update(key, ops, condition, returns);
  }
  absl::StatusOr<store::WriteResult> Put(const store::ItemKey& key, const store::Item& item,
                                         const store::Condition& condition) override {
    Throttle(key);
    return ForwardingItemStore::Put(key, item, condition);
  }

 private:
  void Throttle(const store::ItemKey& key) {
    std::chrono::steady_clock::time_point slot;
    {
      std::lock_guard lock(mu_);
      auto& next = next_free_[key.pk + "/" + key.sk];
      const auto now = std::chrono::steady_clock::now();
      slot = std::max(next, now);
      next = slot + std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval_);
    }
    std::this_thread::sleep_until(slot);
  }
  std::chrono::duration<double> interval_;
  std::mutex mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> next_free_;
};

// Acquire+release under the simulated 1,000 writes/s per item: range(0) = shards.
void BM_AcquireReleaseHotKeySimulator(benchmark::State& state) {
  static SystemClock clock;
  static store::MemoryItemStore memory(clock);
  static HotKeyLimitedStore limited(memory, 1000.0);
  static ConnectorConcurrencyService slots(limited, clock);
  ConcurrencyConfig config;
  config.max_in_flight = 64;
  config.shards = static_cast<int>(state.range(0));
  const std::string conn = "sim-shards-" + std::to_string(config.shards);
  if (state.thread_index() == 0 && !slots.EnsureConnector(conn, config).ok()) state.SkipWithError("ensure failed");
  for (auto _ : state) {
    auto lease = slots.TryAcquire(conn, config);
    if (!lease.ok() || !lease->has_value()) {
      state.SkipWithError("acquire failed");
      break;
    }
    if (!slots.Release(**lease).ok()) state.SkipWithError("release failed");
  }
  state.SetLabel("1,000 writes/s per item, " + std::to_string(config.shards) + " shard(s)");
}

BENCHMARK(BM_AcquireReleaseHotKeySimulator)->Arg(1)->Arg(4)->Arg(16)->Threads(32)->UseRealTime()->MinTime(2);

BENCHMARK(BM_AcquireReleaseDynamoDb)->Arg(1)->Arg(4)->Arg(16)->Threads(16)->Threads(32)->UseRealTime()->MinTime(3);

BENCHMARK(BM_BreakerPermission)->Arg(kMemory)->Arg(kSqliteNormal)->Threads(1)->Threads(8)->UseRealTime();
BENCHMARK(BM_AcquireRelease)->Arg(kMemory)->Arg(kSqliteNormal)->Arg(kSqliteFull)->Threads(1)->Threads(8)->UseRealTime();
BENCHMARK(BM_RecordFailure)->Arg(kMemory)->Arg(kSqliteNormal)->Threads(1)->Threads(8)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
