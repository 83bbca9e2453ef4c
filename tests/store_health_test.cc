// A store that can be read but not written (a full disk, a volume gone read-only): /readyz says
// store_unwritable instead of staying 200 on its read, one probe write a second at most finds the
// store writable again with no traffic but /readyz, a refused conditional write is no store trouble,
// and GET /admin/status and `toolgate status` show the failure and each connector's queue.
//
// The gateway in process on a manual clock (the probe's one-second limit is checked at its exact
// millisecond), real SQLite, real HTTP on loopback; a fault-injecting store between the SQLite store
// and the engine fails or refuses writes while reads go through, and counts the probe writes it sees.

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "fault_injecting_store.h"
#include "sync_point_store.h"
#include "in_process_gateway.h"
#include "toolgate/engine/store_write_health.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/services/queue_service.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using testing::Body;
using testing::FaultInjectingStore;
using ::testing::HasSubstr;
using testing::InProcessGateway;
using testing::TempDir;

constexpr char kDiskFull[] = "sqlite commit: database or disk is full";

int64_t RealNowMs() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class StoreHealthTest : public ::testing::Test {
 protected:
  StoreHealthTest() : clock_(RealNowMs() / 1000 * 1000) {}

  InProcessGateway& Start() {
    std::string config = testing::BaseConfig(dir_.file("store.db"));
    config += "[connectors.crm]\nbase_url = \"http://127.0.0.1:9\"\ntimeout_ms = 1000\nmax_in_flight = 4\n";
    api::GatewayOptions options;
    options.wrap_store = [this](store::ItemStore& opened) {
      auto made = std::make_unique<FaultInjectingStore>(opened);
      fault_ = made.get();
      return made;
    };
    gw_ = std::make_unique<InProcessGateway>(config, clock_, std::move(options));
    EXPECT_TRUE(gw_->Start());
    EXPECT_NE(fault_, nullptr);
    return *gw_;
  }

  // Every write fails with `error` (reads go through), but the probe's when `probe_passes`; every
  // probe write is counted, failed or not.
  void FailWrites(absl::Status error = absl::UnavailableError(kDiskFull), bool probe_passes = false) {
    fault_->FailWritesWhere(
        [this, probe_passes](const store::ItemKey& key) {
          const bool probe = key.pk == "HEALTH";
          if (probe) probe_writes_.fetch_add(1);
          return !(probe && probe_passes);
        },
        std::move(error));
  }
  void WritesWork() {
    fault_->FailWritesWhere([this](const store::ItemKey& key) {
      if (key.pk == "HEALTH") probe_writes_.fetch_add(1);
      return false;
    });
  }

  // An admin change: one store write, with no call's outcome left to flush or write again.
  api::ClientResult SetKillSwitch() {
    return gw_->Admin(
        "PUT", "/admin/kill-switches",
        json{{"scope", "connector"}, {"key", "crm"}, {"reason", "drill"}, {"requested_by", "oncall"}}.dump());
  }
  api::ClientResult Readyz() { return gw_->Public("GET", "/readyz"); }
  json Crm(const json& status) {
    for (const auto& c : status["connectors"]) {
      if (c["id"] == "crm") return c;
    }
    return json();
  }

  ManualClock clock_;
  TempDir dir_;
  FaultInjectingStore* fault_ = nullptr;
  std::atomic<int> probe_writes_{0};
  std::unique_ptr<InProcessGateway> gw_;
};

TEST_F(StoreHealthTest, ReadyzSaysStoreUnwritableWhileReadsStillWork) {
  Start();
  ASSERT_EQ(Readyz().status, 200);
  FailWrites();
  EXPECT_NE(SetKillSwitch().status, 200);

  const api::ClientResult ready = Readyz();
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(Body(ready)["status"], "store_unwritable");
  EXPECT_THAT(Body(ready)["error"].get<std::string>(), HasSubstr("disk is full"));
  // The store's own message stays off the public listener.
  EXPECT_THAT(ready.body, ::testing::Not(HasSubstr(kDiskFull)));
  // Reads still work: the check that only read stayed 200 here.
  EXPECT_EQ(gw_->Admin("GET", "/admin/kill-switches").status, 200);
  EXPECT_EQ(gw_->Admin("GET", "/admin/connectors").status, 200);

  const std::string metrics = gw_->Admin("GET", "/metrics").body;
  EXPECT_THAT(metrics, HasSubstr("\ntoolgate_store_writes_failing 1\n"));
}

TEST_F(StoreHealthTest, AProbeWriteClearsItWithNoTrafficButReadyz) {
  Start();
  FailWrites();
  EXPECT_NE(SetKillSwitch().status, 200);
  EXPECT_EQ(Readyz().status, 503);
  EXPECT_EQ(probe_writes_.load(), 1) << "the first /readyz that finds writes failing probes at once";

  // The store takes writes again — only the probe's, so nothing else can be what clears it.
  FailWrites(absl::UnavailableError(kDiskFull), /*probe_passes=*/true);
  EXPECT_EQ(Readyz().status, 503) << "within the second after a probe: no new probe, the last one's answer";
  EXPECT_EQ(probe_writes_.load(), 1);
  clock_.advance(milliseconds(1000));
  const api::ClientResult ready = Readyz();
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(probe_writes_.load(), 2);

  // Healthy again, /readyz writes nothing while a write went in within 10 s, however often it is asked.
  WritesWork();
  for (int i = 0; i < 5; ++i) {
    clock_.advance(milliseconds(1500));
    EXPECT_EQ(Readyz().status, 200);
  }
  EXPECT_EQ(probe_writes_.load(), 2);
  EXPECT_THAT(gw_->Admin("GET", "/metrics").body, HasSubstr("\ntoolgate_store_writes_failing 0\n"));
}

TEST_F(StoreHealthTest, ManyReadyzCallsMakeAtMostOneProbeWriteASecond) {
  Start();
  FailWrites();
  EXPECT_NE(SetKillSwitch().status, 200);
  auto burst = [this](int threads, int each) {
    std::atomic<int> not_503{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t) {
      callers.emplace_back([this, each, &not_503] {
        for (int i = 0; i < each; ++i) {
          if (Readyz().status != 503) not_503.fetch_add(1);
        }
      });
    }
    for (auto& c : callers) c.join();
    return not_503.load();
  };
  EXPECT_EQ(burst(8, 5), 0);
  EXPECT_EQ(probe_writes_.load(), 1);
  clock_.advance(milliseconds(999));
  EXPECT_EQ(burst(8, 5), 0);
  EXPECT_EQ(probe_writes_.load(), 1) << "999 ms after the last probe";
  clock_.advance(milliseconds(1));
  EXPECT_EQ(burst(8, 5), 0);
  EXPECT_EQ(probe_writes_.load(), 2) << "one second after the last probe: exactly one more";
  clock_.advance(milliseconds(5000));
  EXPECT_EQ(burst(8, 5), 0);
  EXPECT_EQ(probe_writes_.load(), 3) << "a probe a second at most, not one per second that passed";
}

// An instance that has seen no write go in for 10 s (fresh, or idle behind a balancer) does not take
// "nothing failed" for "writes work": a store it may not write (a volume mounted read-only, a role
// without write access) was ready until the first call failed on it.
TEST_F(StoreHealthTest, AnInstanceWithNoWriteForTenSecondsProbesBeforeItAnswersReady) {
  Start();
  clock_.advance(milliseconds(StoreWriteHealth::kConfirmWithinMs));
  FailWrites();  // no call, no admin change: only /readyz can find out
  const api::ClientResult ready = Readyz();
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(Body(ready)["status"], "store_unwritable");
  EXPECT_EQ(probe_writes_.load(), 1);
}

// A probe that fails with a code a call's write would not be judged by (a timeout, credentials the
// store no longer accepts) still leaves the writes unconfirmed: not ready.
TEST_F(StoreHealthTest, AProbeThatFailsWithAnyCodeIsNotReady) {
  Start();
  clock_.advance(milliseconds(StoreWriteHealth::kConfirmWithinMs));
  FailWrites(absl::DeadlineExceededError("store: no answer within the request timeout"));
  const api::ClientResult ready = Readyz();
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(Body(ready)["status"], "store_unwritable");
  EXPECT_EQ(probe_writes_.load(), 1);
  EXPECT_EQ(Readyz().status, 503) << "the next check answers from what the probe found";
}

// While the probes go in, an idle instance probes once per 10 s, however often it is asked.
TEST_F(StoreHealthTest, AnIdleInstanceWhoseWritesGoInProbesOnceInTenSeconds) {
  Start();
  WritesWork();
  clock_.advance(milliseconds(StoreWriteHealth::kConfirmWithinMs));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Readyz().status, 200);
  EXPECT_EQ(probe_writes_.load(), 1);
  clock_.advance(milliseconds(StoreWriteHealth::kConfirmWithinMs - 1));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Readyz().status, 200);
  EXPECT_EQ(probe_writes_.load(), 1) << "the probe's write went in less than 10 s ago";
  clock_.advance(milliseconds(1));
  EXPECT_EQ(Readyz().status, 200);
  EXPECT_EQ(probe_writes_.load(), 2);
  // A call's write confirms as well as a probe's: with traffic, /readyz writes nothing.
  clock_.advance(milliseconds(StoreWriteHealth::kConfirmWithinMs));
  EXPECT_EQ(SetKillSwitch().status, 200);
  EXPECT_EQ(Readyz().status, 200);
  EXPECT_EQ(probe_writes_.load(), 2);
}

// A call whose opening batch the store wrote nothing of (SQLite's lock, held past the busy timeout)
// is answered DEFERRED store_unavailable at once: no release, and not the long way (every shard, a
// reclaim, another acquire), whose writes would each wait for the lock as long again — a `sqlite3`
// shell holding it for 14 s kept a call 14 s, then ran it. An outcome the store cannot know (a
// DynamoDB timeout) still gives back the slot it may have taken and goes the long way once.
TEST_F(StoreHealthTest, ACallWhoseOpeningTheStoreFailedIsAnsweredWithoutMoreWrites) {
  Start();
  std::atomic<int> slot_writes{0};
  auto fail_writes = [this, &slot_writes](absl::Status error) {
    fault_->FailWritesWhere(
        [&slot_writes](const store::ItemKey& key) {
          if (key.pk == "CONNECTOR#crm" && key.sk.rfind("CONCURRENCY", 0) == 0) slot_writes.fetch_add(1);
          return true;
        },
        std::move(error));
  };
  fail_writes(store::MarkNothingWritten(absl::UnavailableError("sqlite begin: database is locked (store busy)")));
  api::ClientResult r = gw_->Invoke("crm.x", {{"input", json::object()}}, testing::Token("tenant-a"));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(Body(r)["outcome"], "DEFERRED");
  EXPECT_EQ(Body(r)["reason"], "store_unavailable");
  EXPECT_EQ(slot_writes.load(), 1) << "the opening batch's acquire, and nothing after it";

  slot_writes = 0;
  fail_writes(absl::UnavailableError("dynamodb: no answer within the request timeout"));
  r = gw_->Invoke("crm.x", {{"input", json::object()}}, testing::Token("tenant-a"));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(Body(r)["reason"], "store_unavailable");
  EXPECT_EQ(slot_writes.load(), 4) << "an unknown outcome goes the long way once: two acquires, each given back";
}

// A kill switch's block that the store cannot record is answered DEFERRED store_unavailable, and
// counted so: once, as what the caller was told — not as a block too.
TEST_F(StoreHealthTest, ABlockTheStoreCouldNotRecordIsCountedOnceAsWhatTheCallerWasTold) {
  Start();
  ASSERT_EQ(SetKillSwitch().status, 200);
  FailWrites();
  api::ClientResult r = gw_->Invoke("crm.x", {{"input", json::object()}}, testing::Token("tenant-a"));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(Body(r)["reason"], "store_unavailable");
  const std::string metrics = gw_->Admin("GET", "/metrics").body;
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("outcome=\"BLOCKED\"} 1")));
  EXPECT_THAT(metrics, ::testing::Not(::testing::ContainsRegex("toolgate_blocked_total\\{[^}]*\\} 1")));
  EXPECT_THAT(metrics,
              ::testing::ContainsRegex("toolgate_deferred_total\\{[^}]*reason=\"store_unavailable\"[^}]*\\} 1"));
}

// An in-process gateway on real SQLite with sync points between the store and the engine (and,
// with `fault_under`, a fault-injecting store beneath them, so a write held at a sync point can then
// fail). `server` adds lines to [server]. Members in this order: the gateway goes first.
struct SyncPointGateway {
  bool Start(const std::string& server = "", bool fault_under = false) {
    std::string config = testing::BaseConfig(dir.file("store.db"));
    config.insert(config.find("[admin]"), server);
    config += "[connectors.crm]\nbase_url = \"http://127.0.0.1:9\"\n";
    api::GatewayOptions options;
    options.wrap_store = [this, fault_under](store::ItemStore& opened) {
      store::ItemStore* below = &opened;
      if (fault_under) {
        fault = std::make_unique<FaultInjectingStore>(opened);
        below = fault.get();
      }
      auto made = std::make_unique<testing::SyncPointStore>(*below);
      racing = made.get();
      return made;
    };
    gw = std::make_unique<InProcessGateway>(config, clock, std::move(options));
    return gw->Start() && racing != nullptr;
  }

  TempDir dir;
  ManualClock clock{RealNowMs() / 1000 * 1000};
  std::unique_ptr<FaultInjectingStore> fault;
  testing::SyncPointStore* racing = nullptr;
  std::unique_ptr<InProcessGateway> gw;
};

// A scrape waits for the store's gauges a bounded time, not for every read: with the store
// unreachable each read waits out its own timeout, and a scrape that waited for all of them took
// 30 s — past Prometheus' scrape timeout, so the whole scrape was lost, `toolgate_store_writes_failing`
// with it. Here the breaker's read is held until the scrape has been answered (10 s at most).
TEST(MetricsScrapeTest, AScrapeIsAnsweredWhileTheStoresGaugesAreStillBeingRead) {
  SyncPointGateway g;
  ASSERT_TRUE(g.Start());
  InProcessGateway& gw = *g.gw;
  testing::SyncPointStore* racing = g.racing;
  std::mutex mu;
  std::condition_variable cv;
  bool scraped = false, read_held_to_the_end = false;
  racing->AfterRead(1, testing::SyncPointStore::KeyIs({"CONNECTOR#crm", "BREAKER"}), [&] {
    std::unique_lock lock(mu);
    read_held_to_the_end = !cv.wait_for(lock, std::chrono::seconds(10), [&] { return scraped; });
  });
  const api::ClientResult first = gw.Admin("GET", "/metrics");
  {
    std::lock_guard lock(mu);
    scraped = true;
  }
  cv.notify_all();
  EXPECT_EQ(first.status, 200);
  EXPECT_THAT(first.body, HasSubstr("\ntoolgate_store_writes_failing 0\n"));
  // The scrape did not wait for the held read (it would have waited its 10 s out).
  for (int i = 0; i < 500 && racing->fired() == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  ASSERT_EQ(racing->fired(), 1);
  EXPECT_FALSE(read_held_to_the_end) << "the scrape waited for the store's reads to the end";
  // The pass finished in the background; the next scrape reads again and carries the gauges.
  const api::ClientResult second = gw.Admin("GET", "/metrics");
  EXPECT_EQ(second.status, 200);
  EXPECT_THAT(second.body, HasSubstr("toolgate_breaker_state{connector=\"crm\""));
}

// A write lock held by another process fills the store threads with calls' writes waiting out the
// busy timeout (6–9 s in a walkthrough); /readyz reads on threads of its own and is not queued
// behind them. Here both store threads are held by reads the test keeps until /readyz has answered.
TEST(ReadyzTest, ReadinessIsAnsweredWhileEveryStoreThreadIsHeld) {
  SyncPointGateway g;
  ASSERT_TRUE(g.Start("store_threads = 2\n"));
  InProcessGateway& gw = *g.gw;
  testing::SyncPointStore* racing = g.racing;

  std::mutex mu;
  std::condition_variable cv;
  int holding = 0;
  bool answered = false;
  auto hold = [&] {
    std::unique_lock lock(mu);
    ++holding;
    cv.notify_all();
    cv.wait_for(lock, std::chrono::seconds(15), [&] { return answered; });
  };
  auto held_tenant = [](const store::ItemKey& k) { return k.pk == "TENANT#tenant-held"; };
  racing->AfterRead(1, held_tenant, hold);
  racing->AfterRead(2, held_tenant, hold);
  const std::string token = testing::Token("tenant-held");
  std::atomic<int> lookups_answered{0};
  std::vector<std::thread> lookups;
  for (int i = 0; i < 2; ++i) {
    lookups.emplace_back([&, i] {
      gw.Public("GET", "/v1/executions/0190a5b4-0000-7000-8000-00000000000" + std::to_string(i), "", token);
      lookups_answered.fetch_add(1);
    });
  }
  bool both_held = false;
  {
    std::unique_lock lock(mu);
    both_held = cv.wait_for(lock, std::chrono::seconds(10), [&] { return holding == 2; });
  }
  EXPECT_TRUE(both_held) << "both store threads should be held by a lookup";

  const api::ClientResult ready = gw.Public("GET", "/readyz");
  const int answered_before = lookups_answered.load();
  {
    std::lock_guard lock(mu);
    answered = true;
  }
  cv.notify_all();
  for (auto& t : lookups) t.join();
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(answered_before, 0) << "/readyz waited for the store threads to come free";
  EXPECT_EQ(lookups_answered.load(), 2);
}

// While writes fail, one probe write at a time: a probe waiting out a held lock (held here at the
// store) leaves the other /readyz calls answering from what is known, with no second probe, even past
// the one-second spacing; once it ends, probes go on.
TEST(ReadyzTest, OneProbeAtATimeAndReadinessAnsweredWhileItWaits) {
  SyncPointGateway g;
  ASSERT_TRUE(g.Start("", /*fault_under=*/true));  // a probe held at a sync point then fails
  InProcessGateway& gw = *g.gw;
  testing::SyncPointStore* racing = g.racing;
  FaultInjectingStore* fault = g.fault.get();
  fault->FailWritesWhere([](const store::ItemKey&) { return true; }, absl::UnavailableError(kDiskFull));
  EXPECT_NE(
      gw.Admin("PUT", "/admin/kill-switches",
               json{{"scope", "connector"}, {"key", "crm"}, {"reason", "drill"}, {"requested_by", "oncall"}}.dump())
          .status,
      200);

  std::mutex mu;
  std::condition_variable cv;
  bool probe_held = false, released = false;
  std::atomic<int> later_probes{0};
  auto probe_key = [](const store::ItemKey& k) { return k.pk == "HEALTH" && k.sk.rfind("WRITE#", 0) == 0; };
  racing->BeforeWrite(1, probe_key, [&] {
    std::unique_lock lock(mu);
    probe_held = true;
    cv.notify_all();
    cv.wait_for(lock, std::chrono::seconds(15), [&] { return released; });
  });
  racing->BeforeWrite(2, probe_key, [&] { later_probes.fetch_add(1); });
  api::ClientResult first;
  std::thread prober([&] { first = gw.Public("GET", "/readyz"); });
  bool held = false;
  {
    std::unique_lock lock(mu);
    held = cv.wait_for(lock, std::chrono::seconds(10), [&] { return probe_held; });
  }
  EXPECT_TRUE(held) << "the first /readyz should have started a probe";

  g.clock.advance(milliseconds(1500));  // past the spacing: only the probe under way holds the next back
  const api::ClientResult during = gw.Public("GET", "/readyz");
  const int probes_during = later_probes.load();
  {
    std::lock_guard lock(mu);
    released = true;
  }
  cv.notify_all();
  prober.join();
  EXPECT_EQ(during.status, 503) << during.body;
  EXPECT_EQ(Body(during)["status"], "store_unwritable");
  EXPECT_EQ(probes_during, 0) << "a second probe started while one was under way";
  EXPECT_EQ(first.status, 503) << first.body;

  // The probe ended (failed): the next, a second later, probes again and finds the store writable.
  fault->FailWritesWhere([](const store::ItemKey&) { return false; });
  g.clock.advance(milliseconds(1500));
  const api::ClientResult after = gw.Public("GET", "/readyz");
  EXPECT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(later_probes.load(), 1);
}

// /readyz is unauthenticated: a flood of it is one store read a second per process, not one read a
// request (on DynamoDB, consistent reads of the one item the fleet shares, which throttled would make
// every instance answer 503).
TEST(ReadyzTest, AFloodOfReadinessChecksIsOneStoreReadASecond) {
  SyncPointGateway g;
  ASSERT_TRUE(g.Start());
  ASSERT_EQ(g.gw->Public("GET", "/readyz").status, 200);
  std::atomic<int> reads{0};
  for (int n = 1; n <= 200; ++n) {
    g.racing->AfterRead(n, testing::SyncPointStore::KeyIs({"HEALTH", "READYZ"}), [&] { reads.fetch_add(1); });
  }
  auto burst = [&g] {
    std::atomic<int> ready{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 8; ++t) {
      callers.emplace_back([&g, &ready] {
        for (int i = 0; i < 5; ++i) {
          if (g.gw->Public("GET", "/readyz").status == 200) ready.fetch_add(1);
        }
      });
    }
    for (auto& c : callers) c.join();
    return ready.load();
  };
  g.clock.advance(milliseconds(1000));  // the read above is a second old
  EXPECT_EQ(burst(), 40);
  EXPECT_EQ(reads.load(), 1) << "40 readiness checks within a second";
  g.clock.advance(milliseconds(999));
  EXPECT_EQ(burst(), 40);
  EXPECT_EQ(reads.load(), 1) << "999 ms after the read";
  g.clock.advance(milliseconds(1));
  EXPECT_EQ(burst(), 40);
  EXPECT_EQ(reads.load(), 2) << "a second after the read: exactly one more";
}

// A store that does not answer a read is not ready, and the other checks do not wait for the read:
// within a second of its start they answer from the last read, past it they answer 503.
TEST(ReadyzTest, AReadThatDoesNotAnswerIsNotReadyAndNoCheckWaitsForIt) {
  SyncPointGateway g;
  ASSERT_TRUE(g.Start());
  ASSERT_EQ(g.gw->Public("GET", "/readyz").status, 200);
  g.clock.advance(milliseconds(1000));
  std::mutex mu;
  std::condition_variable cv;
  bool read_held = false, released = false;
  g.racing->AfterRead(1, testing::SyncPointStore::KeyIs({"HEALTH", "READYZ"}), [&] {
    std::unique_lock lock(mu);
    read_held = true;
    cv.notify_all();
    cv.wait_for(lock, std::chrono::seconds(15), [&] { return released; });
  });
  api::ClientResult first;
  std::atomic<bool> first_answered{false};
  std::thread reader([&] {
    first = g.gw->Public("GET", "/readyz");
    first_answered = true;
  });
  bool held = false;
  {
    std::unique_lock lock(mu);
    held = cv.wait_for(lock, std::chrono::seconds(10), [&] { return read_held; });
  }
  EXPECT_TRUE(held) << "the /readyz a second after the last read should read again";
  const api::ClientResult soon = g.gw->Public("GET", "/readyz");
  g.clock.advance(milliseconds(1000));
  const api::ClientResult late = g.gw->Public("GET", "/readyz");
  const bool first_answered_while_held = first_answered.load();
  {
    std::lock_guard lock(mu);
    released = true;
  }
  cv.notify_all();
  reader.join();
  EXPECT_EQ(soon.status, 200) << "within the read's first second: the last read's answer";
  EXPECT_EQ(late.status, 503) << late.body;
  EXPECT_EQ(Body(late)["status"], "store_unavailable");
  EXPECT_FALSE(first_answered_while_held);
  EXPECT_EQ(first.status, 200) << "the held read answered in the end";
}

TEST_F(StoreHealthTest, RefusedConditionalWritesAreNoStoreTrouble) {
  Start();
  // Every write's condition fails (the store answered: the slot was full, the probe was taken).
  fault_->RefuseWritesWhere([](const store::ItemKey&) { return true; });
  SetKillSwitch();
  gw_->Invoke("crm.x", {{"input", json::object()}}, testing::Token("tenant-a"));
  EXPECT_EQ(Readyz().status, 200);
  // The services' own words for a refusal: AlreadyExists, a FailedPrecondition that is no read-only store.
  FailWrites(absl::AlreadyExistsError("execution e1 exists"));
  EXPECT_NE(SetKillSwitch().status, 200);
  EXPECT_EQ(Readyz().status, 200);
  FailWrites(absl::FailedPreconditionError("the execution is no longer queued"));
  EXPECT_NE(SetKillSwitch().status, 200);
  EXPECT_EQ(Readyz().status, 200);
  EXPECT_EQ(probe_writes_.load(), 0);
  // A read-only store is store trouble.
  FailWrites(absl::FailedPreconditionError("sqlite step: attempt to write a readonly database (store is read-only)"));
  EXPECT_NE(SetKillSwitch().status, 200);
  const api::ClientResult ready = Readyz();
  EXPECT_EQ(ready.status, 503);
  EXPECT_THAT(Body(ready)["error"].get<std::string>(), HasSubstr("read-only"));
}

TEST_F(StoreHealthTest, StatusShowsTheWriteFailureAndEachConnectorsQueue) {
  Start();
  {
    json before = Body(gw_->Admin("GET", "/admin/status"));
    EXPECT_EQ(before["store"]["backend"], "sqlite");
    EXPECT_EQ(before["store"]["writes_failing"], false) << before.dump();
    EXPECT_TRUE(before["store"]["last_write_failure"].is_null());
    EXPECT_TRUE(before["store"]["last_write_success_at"].is_string()) << "the start's writes";
    EXPECT_EQ(Crm(before)["queue_depth"], 0);
  }
  // One call queued (not ready for a day, so no dispatcher takes it), seven seconds ago.
  QueueService queue(*fault_, clock_);
  QueueItem item;
  item.connector_id = "crm";
  item.tenant_id = "tenant-a";
  item.execution_id = "0190b7e0-0000-7000-8000-000000000001";
  item.tool_name = "crm.x";
  item.action_type = "crm.x";
  item.enqueued_at_ms = clock_.now_epoch_ms();
  item.ready_at_ms = item.enqueued_at_ms + 86'400'000;
  item.deadline_ms = item.enqueued_at_ms + 2 * 86'400'000;
  ASSERT_EQ(queue.Enqueue(item, 100).value_or(false), true);
  clock_.advance(milliseconds(7000));

  FailWrites();
  EXPECT_NE(SetKillSwitch().status, 200);
  const json status = Body(gw_->Admin("GET", "/admin/status"));
  const json& store = status["store"];
  EXPECT_EQ(store["writes_failing"], true) << status.dump();
  EXPECT_THAT(store["last_write_failure"]["message"].get<std::string>(), HasSubstr(kDiskFull));
  EXPECT_EQ(store["last_write_failure"]["at"], Rfc3339(clock_.now_epoch_ms()));
  EXPECT_EQ(Crm(status)["queue_depth"], 1);
  EXPECT_EQ(Crm(status)["queue_oldest_age_s"], 7);

  // The operator's view: `toolgate status` against this gateway's admin listener.
  const std::string cli_config = dir_.file("cli.toml");
  FILE* f = fopen(cli_config.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fprintf(f,
          "[admin]\nlisten = \"127.0.0.1:%d\"\n[store]\npath = \"%s\"\n[connectors.crm]\nbase_url = "
          "\"http://127.0.0.1:9\"\n",
          gw_->admin_port(), dir_.file("store.db").c_str());
  fclose(f);
  auto [code, out] = testing::RunCli({"status", "--config", cli_config}, dir_);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("WRITES FAILING"));
  EXPECT_THAT(out, HasSubstr(kDiskFull));
  EXPECT_THAT(out, HasSubstr("QUEUED"));
}

TEST_F(StoreHealthTest, StatusNamesTheCauseWhenTheStoreCannotBeRead) {
  Start();
  FailWrites();
  EXPECT_NE(SetKillSwitch().status, 200);
  fault_->SetDown(true);  // reads fail too
  const api::ClientResult r = gw_->Admin("GET", "/admin/status");
  EXPECT_EQ(r.status, 503);
  const std::string message = Body(r)["message"].get<std::string>();
  EXPECT_THAT(message, HasSubstr("cannot be read"));
  EXPECT_THAT(message, HasSubstr("injected: store unreachable"));
  EXPECT_THAT(message, HasSubstr(kDiskFull)) << "what the writes said before the reads failed";
  EXPECT_EQ(Readyz().status, 503);
  EXPECT_EQ(Body(Readyz())["status"], "store_unavailable");
}

// The recording itself: which outcomes say the store is in trouble, and which say nothing.
TEST(StoreWriteHealthTest, OnlyStoreTroubleMarksWritesFailingAndOnlyAnAppliedWriteClearsIt) {
  ManualClock clock(1'700'000'000'000);
  StoreWriteHealth health(clock);
  EXPECT_FALSE(health.failing());
  health.Record(absl::StatusOr<store::WriteResult>(store::WriteResult::ConditionFailed()));
  health.Record(absl::StatusOr<store::WriteResult>(absl::AlreadyExistsError("exists")));
  health.Record(absl::StatusOr<store::WriteResult>(absl::InvalidArgumentError("ADD to a string")));
  health.Record(absl::StatusOr<store::WriteResult>(absl::FailedPreconditionError("the execution is RUNNING")));
  EXPECT_FALSE(health.failing());
  EXPECT_EQ(health.snapshot().last_failure_ms, 0);

  for (absl::Status trouble :
       {absl::UnavailableError(kDiskFull), absl::DataLossError("damaged"), absl::InternalError("sqlite 1"),
        absl::FailedPreconditionError("(store is read-only)"),
        absl::PermissionDeniedError("dynamodb AccessDeniedException: not authorized to perform PutItem")}) {
    health.Record(absl::StatusOr<store::WriteResult>(trouble));
    EXPECT_TRUE(health.failing()) << trouble;
    EXPECT_EQ(health.snapshot().last_failure_message, trouble.message());
    // A refusal after it proves nothing about the store either way.
    health.Record(absl::StatusOr<store::WriteResult>(store::WriteResult::ConditionFailed()));
    EXPECT_TRUE(health.failing());
    store::WriteResult applied;
    applied.applied = true;
    health.Record(absl::StatusOr<store::WriteResult>(applied));
    EXPECT_FALSE(health.failing());
  }

  // A batch: its first store trouble wins over the writes applied before it.
  store::WriteResult applied;
  applied.applied = true;
  clock.advance(milliseconds(5));
  health.Record(std::vector<absl::StatusOr<store::WriteResult>>{applied, absl::UnavailableError(kDiskFull)});
  EXPECT_TRUE(health.failing());
  EXPECT_EQ(health.snapshot().last_failure_ms, clock.now_epoch_ms());
  health.Record(std::vector<absl::StatusOr<store::WriteResult>>{store::WriteResult::ConditionFailed()});
  EXPECT_TRUE(health.failing());
  health.Record(std::vector<absl::StatusOr<store::WriteResult>>{store::WriteResult::ConditionFailed(), applied});
  EXPECT_FALSE(health.failing());
  EXPECT_EQ(health.snapshot().last_success_ms, clock.now_epoch_ms());

  // The probe's limit: once, then not again until a full second has passed.
  EXPECT_TRUE(health.ClaimProbe());
  EXPECT_FALSE(health.ClaimProbe());
  clock.advance(milliseconds(999));
  EXPECT_FALSE(health.ClaimProbe());
  clock.advance(milliseconds(1));
  EXPECT_TRUE(health.ClaimProbe());
  EXPECT_FALSE(health.ClaimProbe());
}

}  // namespace
}  // namespace toolgate
