// S1, S6 and S7 across independent processes sharing one store — a SQLite file, or a table on a
// DynamoDB-API server (dynalite) — and a holder killed with SIGKILL. The workers are separate executables
// (toolgate_store_worker); the parent releases them together and checks the outcome through the store and a
// shared-memory observer.

#include <fcntl.h>
#include <sys/mman.h>

#include <cstdio>
#include <memory>

#include "process_support.h"
#include "test_support.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/connector_concurrency_service.h"

namespace toolgate {
namespace {

using toolgate::testing::ChildProcess;
using toolgate::testing::TempDir;

constexpr int kWorkers = 8;
constexpr int64_t kT0 = 1'800'000'000'000;

breaker::Config BreakerConfig() {  // as in the worker
  breaker::Config c;
  c.failure_threshold = 3;
  c.cooldown_s = 20;
  c.probe_timeout_s = 30;
  return c;
}

void TripBreaker(store::ItemStore& store, const Clock& clock) {
  CircuitBreakerService breakers(store, clock, "parent");
  for (int i = 0; i < 3; ++i) {
    auto p = breakers.RequestPermission("crm", BreakerConfig());
    ASSERT_TRUE(p.ok() && p->allowed);
    ASSERT_TRUE(breakers.RecordFailure("crm", BreakerConfig(), *p, "t").ok());
  }
}

// Starts `n` workers with `args`, waits until each says "ready", then releases them together.
class MultiProcessTest : public ::testing::TestWithParam<std::string> {
 protected:
  // The store the workers share, opened by the parent too.
  std::unique_ptr<store::ItemStore> OpenShared(const Clock& clock) {
    db_ = toolgate::testing::LocatorFor(GetParam(), dir_);
    return toolgate::testing::OpenLocator(db_, clock);
  }
  TempDir dir_;
  std::string db_;
};

std::vector<std::unique_ptr<ChildProcess>> StartTogether(int n, const std::vector<std::string>& args) {
  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> argv = {TOOLGATE_STORE_WORKER};
    argv.insert(argv.end(), args.begin(), args.end());
    workers.push_back(std::make_unique<ChildProcess>(argv));
    EXPECT_TRUE(workers.back()->started());
  }
  for (auto& w : workers) EXPECT_EQ(w->ReadLine(), "ready");
  for (auto& w : workers) EXPECT_TRUE(w->WriteLine("go"));
  return workers;
}

TEST_P(MultiProcessTest, EightProcessesRaceTheCooldownAndExactlyOneRunsTheProbe) {
  ManualClock clock(kT0);
  auto store = OpenShared(clock);
  const std::string db = db_;
  ASSERT_NE(store, nullptr);
  TripBreaker(*store, clock);

  auto workers = StartTogether(kWorkers, {"--db", db, "--mode", "probe", "--now-ms", std::to_string(kT0 + 21'000)});
  int probes = 0, deferred = 0;
  for (auto& w : workers) {
    const auto line = w->ReadLine();
    ASSERT_TRUE(line.has_value());
    if (*line == "probe")
      ++probes;
    else if (*line == "deferred probe_in_flight")
      ++deferred;
    else
      ADD_FAILURE() << "worker said: " << *line;
    EXPECT_EQ(w->Wait(), 0);
  }
  EXPECT_EQ(probes, 1);
  EXPECT_EQ(deferred, kWorkers - 1);
  CircuitBreakerService breakers(*store, clock, "parent");
  auto s = breakers.Read("crm");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->state, breaker::State::kHalfOpen);
  EXPECT_TRUE(s->half_open_probe_in_flight);
}

TEST_P(MultiProcessTest, EightProcessesNeverExceedTheLimitAndLeaveNoSlotHeld) {
  const std::string observer_file = dir_.file("observer");
  {
    const int fd = open(observer_file.c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 4096), 0);
    close(fd);
  }
  SystemClock clock;
  auto store = OpenShared(clock);
  const std::string db = db_;
  ASSERT_NE(store, nullptr);

  auto workers = StartTogether(kWorkers, {"--db", db, "--mode", "semaphore", "--limit", "4", "--threads", "4",
                                          "--duration-ms", "3000", "--observer", observer_file});
  for (auto& w : workers) {
    EXPECT_EQ(w->ReadLine(std::chrono::seconds(60)), "done errors=0 double_release=0");
    EXPECT_EQ(w->Wait(), 0);
  }
  const int fd = open(observer_file.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  int64_t counters[3] = {};
  ASSERT_EQ(read(fd, counters, sizeof counters), static_cast<ssize_t>(sizeof counters));
  close(fd);
  const int64_t inside = counters[0], peak = counters[1], acquired = counters[2];
  std::printf("observed: at most %lld holders at once, %lld acquisitions\n", static_cast<long long>(peak),
              static_cast<long long>(acquired));
  EXPECT_EQ(inside, 0);
  EXPECT_LE(peak, 4) << "more than max_in_flight holders at once";
  EXPECT_GE(peak, 2) << "the processes never overlapped: the test proves nothing";
  EXPECT_GT(acquired, 20);  // progress, even under sanitizers

  ConnectorConcurrencyService slots(*store, clock);
  ConcurrencyConfig config;
  config.max_in_flight = 4;
  auto after = slots.Read("crm", config);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->in_flight, 0);
  EXPECT_EQ(after->holders, 0);
}

TEST_P(MultiProcessTest, ASigkilledHoldersSlotsAndProbeComeBackWithoutAnOperator) {
  ManualClock clock(kT0 - 21'000);
  auto store = OpenShared(clock);
  const std::string db = db_;
  ASSERT_NE(store, nullptr);
  TripBreaker(*store, clock);
  clock.set_epoch_ms(kT0);

  ChildProcess doomed({TOOLGATE_STORE_WORKER, "--db", db, "--mode", "hold", "--limit", "4", "--slots", "3", "--now-ms",
                       std::to_string(kT0)});
  ASSERT_EQ(doomed.ReadLine(), "held");
  doomed.Kill(SIGKILL);
  const int status = doomed.Wait();
  ASSERT_TRUE(WIFSIGNALED(status));

  ConnectorConcurrencyService slots(*store, clock);
  CircuitBreakerService breakers(*store, clock, "survivor");
  ConcurrencyConfig config;
  config.max_in_flight = 4;  // lease_ttl_s 35, max_clock_skew_s 5 as in the worker

  // Right after the crash: the dead holder's 3 slots and its probe are still taken.
  std::vector<SlotLease> mine;
  auto lease = slots.TryAcquire("crm", config);
  ASSERT_TRUE(lease.ok() && lease->has_value());
  mine.push_back(**lease);
  EXPECT_FALSE(slots.TryAcquire("crm", config)->has_value());
  EXPECT_EQ(breakers.RequestPermission("crm", BreakerConfig())->reason, DeferReason::kProbeInFlight);
  ASSERT_TRUE(*slots.Release(mine.back()));  // a live holder gives its slot back normally
  mine.clear();

  // After probe_timeout_s and the clock skew allowed, as for slots, the probe can be claimed again (S3).
  clock.advance(std::chrono::seconds(30));
  EXPECT_EQ(breakers.RequestPermission("crm", BreakerConfig())->reason, DeferReason::kProbeInFlight);
  clock.advance(std::chrono::seconds(BreakerConfig().max_clock_skew_s));
  auto probe = breakers.RequestPermission("crm", BreakerConfig());
  ASSERT_TRUE(probe.ok());
  EXPECT_TRUE(probe->probe);

  // Take the one free slot again; its lease runs until T0 + 35 s + 35 s.
  lease = slots.TryAcquire("crm", config);
  ASSERT_TRUE(lease.ok() && lease->has_value());
  mine.push_back(**lease);

  // The dead holder's slots come back after lease_ttl_s + max_clock_skew_s, not before (S7).
  clock.set_epoch_ms(kT0 + 40'000 - 1);
  EXPECT_FALSE(slots.TryAcquire("crm", config)->has_value());
  clock.set_epoch_ms(kT0 + 40'000);
  for (int i = 0; i < 3; ++i) {
    lease = slots.TryAcquire("crm", config);
    ASSERT_TRUE(lease.ok() && lease->has_value()) << "slot " << i << " did not come back";
    mine.push_back(**lease);
  }
  EXPECT_FALSE(slots.TryAcquire("crm", config)->has_value());
  for (const auto& l : mine) EXPECT_TRUE(*slots.Release(l));
  auto after = slots.Read("crm", config);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->in_flight, 0);
  EXPECT_EQ(after->holders, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, MultiProcessTest, ::testing::Values("sqlite", "dynamodb"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace toolgate
