// Micro-benchmarks of the hot store operations: breaker permission check, slot acquire+release,
// failure recording — on the memory and SQLite backends, one thread and contended.
// Results and the machine they ran on: docs/performance.md.

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <mutex>

#include "toolgate/clock.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
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
    case kMemory: return "memory";
    case kSqliteNormal: return "sqlite synchronous=NORMAL";
    default: return "sqlite synchronous=FULL";
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

BENCHMARK(BM_BreakerPermission)->Arg(kMemory)->Arg(kSqliteNormal)->Threads(1)->Threads(8)->UseRealTime();
BENCHMARK(BM_AcquireRelease)->Arg(kMemory)->Arg(kSqliteNormal)->Arg(kSqliteFull)->Threads(1)->Threads(8)->UseRealTime();
BENCHMARK(BM_RecordFailure)->Arg(kMemory)->Arg(kSqliteNormal)->Threads(1)->Threads(8)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
