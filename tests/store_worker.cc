// A worker process for the multi-process tests: several of these share one store (SQLite or DynamoDB), as several
// toolgate processes on one host do. It reports on stdout, one line per event, and waits for "go" on
// stdin so that the parent can release all workers together.
//
//   toolgate_store_worker --db FILE --mode probe     [--now-ms T]
//       ready / go / prints "probe" or "deferred <reason>"
//   toolgate_store_worker --db FILE --mode semaphore --limit N --duration-ms D --threads K --observer FILE
//       acquire -> hold (until the limit is reached, at most 10 ms) -> release in a loop; the observer file
//       (shared memory) counts holders
//   toolgate_store_worker --db FILE --mode hold --limit N --slots S [--now-ms T]
//       takes S slots and the probe, prints "held", then waits to be killed

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "toolgate/clock.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/store/dynamodb_item_store.h"
#include "toolgate/store/sqlite_item_store.h"

namespace {

using namespace toolgate;  // NOLINT: a small test program

int Fail(const std::string& msg) {
  std::printf("error %s\n", msg.c_str());
  std::fflush(stdout);
  return 1;
}

void Say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

bool WaitForGo() {
  std::string line;
  return static_cast<bool>(std::getline(std::cin, line)) && line == "go";
}

// The observer's shared counters, in a file every worker maps.
struct Observed {
  int64_t inside;
  int64_t peak;
  int64_t acquired;
};

breaker::Config BreakerConfig() {
  breaker::Config c;
  c.failure_threshold = 3;
  c.cooldown_s = 20;
  c.probe_timeout_s = 30;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  auto arg = [&](const std::string& k, const std::string& def = "") { return args.count(k) ? args[k] : def; };

  std::unique_ptr<Clock> clock;
  if (!arg("--now-ms").empty()) {
    clock = std::make_unique<ManualClock>(std::stoll(arg("--now-ms")));
  } else {
    clock = std::make_unique<SystemClock>();
  }
  // --db is a SQLite file or "dynamodb://host:port/table" (a table on a DynamoDB-API server).
  std::unique_ptr<store::ItemStore> opened_store;
  const std::string db = arg("--db");
  if (db.rfind("dynamodb://", 0) == 0) {
    const std::string rest = db.substr(11);
    store::DynamoDbItemStore::Options o;
    o.endpoint = "http://" + rest.substr(0, rest.find('/'));
    o.table = rest.substr(rest.find('/') + 1);
    o.credentials = {"AKIDTOOLGATETEST", "toolgate-test-secret", ""};
    o.request_timeout_ms = 10000;
    auto opened = store::DynamoDbItemStore::Open(o, *clock);
    if (!opened.ok()) return Fail(opened.status().ToString());
    opened_store = std::move(*opened);
  } else {
    store::SqliteItemStore::Options o;
    o.path = db;
    o.synchronous_full = false;
    o.sweep_interval_ms = 0;
    auto opened = store::SqliteItemStore::Open(o, *clock);
    if (!opened.ok()) return Fail(opened.status().ToString());
    opened_store = std::move(*opened);
  }
  store::ItemStore& store = *opened_store;

  const std::string mode = arg("--mode");
  ConcurrencyConfig slots_config;
  slots_config.max_in_flight = std::stoi(arg("--limit", "4"));

  if (mode == "probe") {
    CircuitBreakerService breakers(store, *clock, "worker-" + std::to_string(getpid()));
    Say("ready");
    if (!WaitForGo()) return Fail("no go");
    auto p = breakers.RequestPermission("crm", BreakerConfig());
    if (!p.ok()) return Fail(p.status().ToString());
    if (p->probe)
      Say("probe");
    else if (p->allowed)
      Say("allowed");
    else
      Say("deferred " + std::string(ToString(p->reason)));
    return 0;
  }

  if (mode == "semaphore") {
    const int fd = open(arg("--observer").c_str(), O_RDWR);
    if (fd < 0) return Fail("observer file");
    void* mem = mmap(nullptr, sizeof(Observed), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mem == MAP_FAILED) return Fail("mmap");
    auto* observed = static_cast<Observed*>(mem);
    std::atomic_ref<int64_t> inside(observed->inside), peak(observed->peak), acquired(observed->acquired);

    ConnectorConcurrencyService slots(store, *clock);
    const int threads = std::stoi(arg("--threads", "1"));
    const auto duration = std::chrono::milliseconds(std::stoll(arg("--duration-ms", "2000")));
    Say("ready");
    if (!WaitForGo()) return Fail("no go");
    std::atomic<int> errors{0}, double_release{0};
    const auto deadline = std::chrono::steady_clock::now() + duration;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int i = 0; i < 100000 && std::chrono::steady_clock::now() < deadline; ++i) {
          auto lease = slots.TryAcquire("crm", slots_config);
          if (!lease.ok()) {
            errors.fetch_add(1);
            continue;
          }
          if (!lease->has_value()) {  // full: try again soon, without flooding the store the holders need
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
          }
          const int64_t now_inside = inside.fetch_add(1) + 1;
          int64_t seen = peak.load();
          while (now_inside > seen && !peak.compare_exchange_weak(seen, now_inside)) {
          }
          acquired.fetch_add(1);
          // Hold the slot until the limit is reached or 10 ms pass. A store round trip under a sanitizer
          // can take far longer than a fixed short hold, and holders that never meet prove nothing; holding
          // for company makes the other workers contend for a full semaphore, which is what is under test.
          const auto hold_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(10);
          std::this_thread::sleep_for(std::chrono::microseconds(300));
          while (inside.load() < slots_config.max_in_flight && std::chrono::steady_clock::now() < hold_until)
            std::this_thread::sleep_for(std::chrono::microseconds(200));
          inside.fetch_sub(1);
          auto released = slots.Release(**lease);
          if (!released.ok())
            errors.fetch_add(1);
          else if (!*released)
            double_release.fetch_add(1);
        }
      });
    }
    for (auto& t : pool) t.join();
    Say("done errors=" + std::to_string(errors.load()) + " double_release=" + std::to_string(double_release.load()));
    return 0;
  }

  if (mode == "hold") {
    ConnectorConcurrencyService slots(store, *clock);
    CircuitBreakerService breakers(store, *clock, "doomed-worker");
    const int n = std::stoi(arg("--slots", "1"));
    for (int i = 0; i < n; ++i) {
      auto lease = slots.TryAcquire("crm", slots_config);
      if (!lease.ok() || !lease->has_value()) return Fail("could not take slot " + std::to_string(i));
    }
    auto p = breakers.RequestPermission("crm", BreakerConfig());
    if (!p.ok() || !p->probe) return Fail("could not claim the probe");
    Say("held");
    std::this_thread::sleep_for(std::chrono::seconds(120));  // until killed; bounded all the same
    return 0;
  }
  return Fail("unknown mode '" + mode + "'");
}
