// The asynchronous store port (DESIGN §16 item 1) on every backend: SQLite's own (reads on the
// caller's thread, writes through the group-commit queue and the store's writer thread), DynamoDB's
// own (every request on the store's network loop), and the pooled adapter for memory. Coroutines on real io_contexts,
// checked for the same semantics as the synchronous port and for resuming on their own executor.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sqlite3.h>

#include "gtest/gtest.h"
#include "test_support.h"
#include "toolgate/store/async_item_store.h"
#include "toolgate/store/awaitable_item_store.h"
#include "toolgate/store/sqlite_item_store.h"

namespace toolgate::store {
namespace {

namespace asio = boost::asio;
using toolgate::testing::Backend;
using toolgate::testing::TempDir;

const ItemKey kCounter{"ASYNC#test", "counter"};
const ItemKey kWinner{"ASYNC#test", "winner"};

// An io_context run by a thread of its own until Join.
class Loop {
 public:
  Loop() : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~Loop() { Join(); }
  void Join() {
    work_.reset();
    if (thread_.joinable()) thread_.join();
  }
  asio::io_context& io() { return io_; }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

class AsyncItemStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    store_ = GetParam().open(clock_, dir_);
    ASSERT_NE(store_, nullptr);
    // SQLite and DynamoDB have the port natively; memory goes through the pooled adapter.
    port_ = dynamic_cast<AsyncItemStore*>(store_.get());
    if (port_ == nullptr) {
      pooled_ = std::make_unique<PooledAsyncItemStore>(*store_, 4);
      port_ = pooled_.get();
    }
  }
  void TearDown() override {
    pooled_.reset();
    store_.reset();
  }

  int64_t Counter() {
    auto item = store_->Get(kCounter);
    EXPECT_TRUE(item.ok() && item->has_value()) << item.status();
    return item.ok() && item->has_value() ? GetInt(**item, "n").value_or(-1) : -1;
  }

  ManualClock clock_{1'800'000'000'000};
  TempDir dir_;
  std::unique_ptr<ItemStore> store_;
  std::unique_ptr<PooledAsyncItemStore> pooled_;
  AsyncItemStore* port_ = nullptr;
};

TEST_P(AsyncItemStoreTest, EachOperationResumesTheCoroutineOnItsOwnLoopWithTheStoresAnswer) {
  Loop loop;
  std::atomic<int> checks_passed{0};
  std::atomic<bool> finished{false};
  asio::co_spawn(
      loop.io(),
      [&]() -> asio::awaitable<void> {
        auto on_loop = [&] { return std::this_thread::get_id() == loop.id(); };
        const ItemKey key{"ASYNC#test", "a"};
        std::vector<WriteRequest> first;
        first.push_back(WriteRequest::Put(key, Item{{"v", std::string("one")}}, Condition::ItemAbsent()));
        // Every awaitable named: g++ 12 destroys non-trivial temporaries inside co_await twice.
        auto put_op = AsyncWriteBatch(*port_, std::move(first), asio::use_awaitable);
        auto put = co_await std::move(put_op);
        EXPECT_TRUE(on_loop());
        EXPECT_EQ(put.size(), 1u);
        EXPECT_TRUE(put[0].ok() && put[0]->applied) << put[0].status();

        std::vector<WriteRequest> again;
        again.push_back(WriteRequest::Put(key, Item{{"v", std::string("two")}}, Condition::ItemAbsent()));
        auto refused_op = AsyncWriteBatch(*port_, std::move(again), asio::use_awaitable);
        auto refused = co_await std::move(refused_op);
        EXPECT_TRUE(on_loop());
        EXPECT_TRUE(refused[0].ok() && !refused[0]->applied) << "the item exists: the condition refuses it";

        auto got_op = AsyncGet(*port_, key, asio::use_awaitable);
        auto got = co_await std::move(got_op);
        EXPECT_TRUE(on_loop());
        EXPECT_TRUE(got.ok() && got->has_value()) << got.status();
        if (got.ok() && got->has_value()) {
          EXPECT_EQ(GetString(**got, "v").value_or(""), "one");
        }

        const ItemKey absent{"ASYNC#test", "absent"};
        auto missing_op = AsyncGet(*port_, absent, asio::use_awaitable);
        auto missing = co_await std::move(missing_op);
        EXPECT_TRUE(missing.ok() && !missing->has_value());

        QueryRequest q;
        q.pk = "ASYNC#test";
        auto page_op = AsyncQuery(*port_, q, asio::use_awaitable);
        auto page = co_await std::move(page_op);
        EXPECT_TRUE(on_loop());
        EXPECT_TRUE(page.ok()) << page.status();
        if (page.ok()) {
          EXPECT_EQ(page->items.size(), 1u);
          checks_passed = 1;
        }
        finished = true;
      },
      asio::detached);
  loop.Join();  // returns once the coroutine has ended: nothing else keeps the loop running
  EXPECT_TRUE(finished);
  EXPECT_EQ(checks_passed, 1);
}

TEST_P(AsyncItemStoreTest, ABatchDecidesEachWriteInOrderAndSkipsTheOneAfterARefusal) {
  ASSERT_TRUE(store_->Put(kWinner, Item{{"v", int64_t{1}}}, Condition::Always()).ok());
  Loop loop;
  AsyncItemStore::WriteResults results;
  asio::co_spawn(
      loop.io(),
      [&]() -> asio::awaitable<void> {
        std::vector<WriteRequest> batch;
        batch.push_back(WriteRequest::Put(kWinner, Item{{"v", int64_t{2}}}, Condition::ItemAbsent()));
        batch.push_back(
            WriteRequest::Put(ItemKey{"ASYNC#test", "follows"}, Item{}, Condition::Always()).AfterPrevious());
        batch.push_back(
            WriteRequest::Update(kCounter, {UpdateOp::Add(AttributePath::Top("n"), 5)}, Condition::Always()));
        auto op = AsyncWriteBatch(*port_, std::move(batch), asio::use_awaitable);
        results = co_await std::move(op);
      },
      asio::detached);
  loop.Join();
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(results[0]->applied);
  EXPECT_FALSE(results[1]->applied) << "chained: skipped after a refusal";
  EXPECT_TRUE(results[2]->applied);
  EXPECT_EQ(Counter(), 5);
  auto follows = store_->Get(ItemKey{"ASYNC#test", "follows"});
  ASSERT_TRUE(follows.ok());
  EXPECT_FALSE(follows->has_value());
}

// Coroutines on two loops at once: every increment lands once, and of the conditional puts of one
// key exactly one is applied — the port keeps the store's per-item atomicity.
TEST_P(AsyncItemStoreTest, ConcurrentCoroutinesOnTwoLoopsLoseNoUpdateAndOneConditionalPutWins) {
  constexpr int kPerLoop = 60;
  std::atomic<int> done{0};
  std::atomic<int> won{0};
  std::atomic<int> failed{0};
  {
    Loop a;
    Loop b;
    for (Loop* loop : {&a, &b}) {
      for (int i = 0; i < kPerLoop; ++i) {
        asio::co_spawn(
            loop->io(),
            [&, i]() -> asio::awaitable<void> {
              std::vector<WriteRequest> batch;
              batch.push_back(
                  WriteRequest::Update(kCounter, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always()));
              batch.push_back(WriteRequest::Put(kWinner, Item{{"by", int64_t{i}}}, Condition::ItemAbsent()));
              auto op = AsyncWriteBatch(*port_, std::move(batch), asio::use_awaitable);
              auto r = co_await std::move(op);
              if (r.size() != 2 || !r[0].ok() || !r[0]->applied || !r[1].ok()) ++failed;
              if (r.size() == 2 && r[1].ok() && r[1]->applied) ++won;
              ++done;
            },
            asio::detached);
      }
    }
  }  // both loops joined: every coroutine has ended
  EXPECT_EQ(done, 2 * kPerLoop);
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(won, 1);
  EXPECT_EQ(Counter(), 2 * kPerLoop);
}

// What a gateway relies on before it destroys its event loops: once WaitIdle returns, every batch
// submitted before it has been decided and its completion has returned (each completion here takes
// a while, so a WaitIdle that only waited for the commits would return too early).
TEST_P(AsyncItemStoreTest, WaitIdleReturnsOnlyOnceEveryCompletionHasReturned) {
  constexpr int kBatches = 40;
  std::atomic<int> applied{0};
  std::atomic<int> returned{0};
  for (int i = 0; i < kBatches; ++i) {
    std::vector<WriteRequest> batch;
    batch.push_back(WriteRequest::Put(ItemKey{"IDLE#test", "item-" + std::to_string(i)}, Item{{"i", int64_t{i}}},
                                      Condition::ItemAbsent()));
    port_->AsyncWriteBatch(std::move(batch), [&](AsyncItemStore::WriteResults r) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      if (r.size() == 1 && r[0].ok() && r[0]->applied) ++applied;
      ++returned;
    });
  }
  port_->WaitIdle();
  EXPECT_EQ(returned.load(), kBatches);
  EXPECT_EQ(applied.load(), kBatches);
  port_->WaitIdle();  // idle already: returns at once
  EXPECT_EQ(returned.load(), kBatches);
}

INSTANTIATE_TEST_SUITE_P(Backends, AsyncItemStoreTest, ::testing::ValuesIn(toolgate::testing::AllBackends()),
                         toolgate::testing::BackendName);

// ---- SQLite's own asynchronous path -------------------------------------------------------------

class SqliteAsyncTest : public ::testing::Test {
 protected:
  std::unique_ptr<SqliteItemStore> Open(bool read_only = false) {
    return toolgate::testing::OpenSqlite(dir_.file("store.db"), clock_, read_only);
  }
  // `synchronous = FULL`, as a gateway runs by default (the helper above opens NORMAL).
  std::unique_ptr<SqliteItemStore> OpenFull() {
    SqliteItemStore::Options o;
    o.path = dir_.file("store.db");
    o.synchronous_full = true;
    o.sweep_interval_ms = 0;
    auto s = SqliteItemStore::Open(o, clock_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  static std::vector<WriteRequest> Increment() {
    std::vector<WriteRequest> batch;
    batch.push_back(WriteRequest::Update(kCounter, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always()));
    return batch;
  }

  ManualClock clock_{1'800'000'000'000};
  TempDir dir_;
};

// Synchronous writers (the engine today) and asynchronous batches share one queue: whoever is at
// its front commits the group, so the two never contend for SQLite's lock, and nothing is lost.
TEST_F(SqliteAsyncTest, SynchronousAndAsynchronousWritersShareOneQueueAndLoseNothing) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 3;
  constexpr int kSyncEach = 40;
  constexpr int kAsync = 120;
  std::atomic<int> async_applied{0};
  std::atomic<int> sync_applied{0};
  {
    Loop loop;
    for (int i = 0; i < kAsync; ++i) {
      asio::co_spawn(
          loop.io(),
          [&]() -> asio::awaitable<void> {
            auto op = AsyncWriteBatch(*store, Increment(), asio::use_awaitable);
            auto r = co_await std::move(op);
            if (r.size() == 1 && r[0].ok() && r[0]->applied) ++async_applied;
          },
          asio::detached);
    }
    toolgate::testing::RunTogether(kThreads, [&](int) {
      for (int i = 0; i < kSyncEach; ++i) {
        auto r = store->WriteBatch(Increment());
        if (r.size() == 1 && r[0].ok() && r[0]->applied) ++sync_applied;
      }
    });
  }
  EXPECT_EQ(async_applied, kAsync);
  EXPECT_EQ(sync_applied, kThreads * kSyncEach);
  auto item = store->Get(kCounter);
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ(GetInt(**item, "n").value_or(-1), kAsync + kThreads * kSyncEach);
}

// Batches submitted faster than one commit takes are committed together: one transaction (one
// fsync with `full`) for many of them, and no thread of the submitter's waited.
TEST_F(SqliteAsyncTest, BatchesSubmittedTogetherAreCommittedInFewerTransactions) {
  auto store = OpenFull();
  ASSERT_NE(store, nullptr);
  constexpr int kBatches = 100;
  std::atomic<int> applied{0};
  std::atomic<int> completed{0};
  const int64_t groups_before = store->groups_committed();
  for (int i = 0; i < kBatches; ++i) {
    store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) {
      if (r.size() == 1 && r[0].ok() && r[0]->applied) ++applied;
      ++completed;
    });
  }
  for (int i = 0; i < 1000 && completed < kBatches; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(completed, kBatches);
  EXPECT_EQ(applied, kBatches);
  const int64_t groups = store->groups_committed() - groups_before;
  EXPECT_GE(groups, 1);
  EXPECT_LT(groups, kBatches) << "queued batches are committed as groups";
  std::printf("%d batches committed in %lld transactions\n", kBatches, static_cast<long long>(groups));
}

TEST_F(SqliteAsyncTest, DestroyingTheStoreCommitsWhatIsQueuedAndCallsEveryCompletion) {
  constexpr int kBatches = 50;
  std::atomic<int> applied{0};
  std::atomic<int> completed{0};
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < kBatches; ++i) {
      std::vector<WriteRequest> batch;
      batch.push_back(WriteRequest::Put(ItemKey{"ASYNC#test", "item-" + std::to_string(i)}, Item{{"i", int64_t{i}}},
                                        Condition::ItemAbsent()));
      store->AsyncWriteBatch(std::move(batch), [&](AsyncItemStore::WriteResults r) {
        if (r.size() == 1 && r[0].ok() && r[0]->applied) ++applied;
        ++completed;
      });
    }
  }  // destroyed with batches still queued
  EXPECT_EQ(completed, kBatches);
  EXPECT_EQ(applied, kBatches);
  auto reopened = Open();
  ASSERT_NE(reopened, nullptr);
  QueryRequest q;
  q.pk = "ASYNC#test";
  auto page = reopened->Query(q);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->items.size(), static_cast<size_t>(kBatches)) << "every queued batch was committed";
}

TEST_F(SqliteAsyncTest, AReadOnlyStoreRefusesAnAsynchronousBatchAtOnce) {
  { ASSERT_NE(Open(), nullptr); }  // creates the file
  auto store = Open(/*read_only=*/true);
  ASSERT_NE(store, nullptr);
  AsyncItemStore::WriteResults results;
  store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) { results = std::move(r); });
  ASSERT_EQ(results.size(), 1u) << "completed before AsyncWriteBatch returned";
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kFailedPrecondition);
}

// With `synchronous = NORMAL` a commit does not wait for the disk, so a batch submitted to an idle
// store is committed by the submitting thread (an event loop) and completed before AsyncWriteBatch
// returns: no hand-off to the writer thread and back. With FULL the writer thread commits it, so
// that no event loop ever waits for an fsync.
TEST_F(SqliteAsyncTest, AnIdleStoreCommitsOnTheSubmittingThreadOnlyWithoutFsync) {
  for (bool full : {false, true}) {
    SCOPED_TRACE(full ? "synchronous = FULL" : "synchronous = NORMAL");
    auto store = full ? OpenFull() : Open();
    ASSERT_NE(store, nullptr);
    const int64_t groups_before = store->groups_committed();
    std::atomic<bool> completed{false};
    std::thread::id completed_on;
    store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) {
      EXPECT_TRUE(r.size() == 1 && r[0].ok() && r[0]->applied);
      completed_on = std::this_thread::get_id();
      completed = true;
    });
    if (full) {
      for (int i = 0; i < 500 && !completed; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      ASSERT_TRUE(completed);
      EXPECT_NE(completed_on, std::this_thread::get_id()) << "FULL: the writer thread commits it";
    } else {
      ASSERT_TRUE(completed) << "NORMAL: committed before AsyncWriteBatch returned";
      EXPECT_EQ(completed_on, std::this_thread::get_id());
    }
    EXPECT_EQ(store->groups_committed(), groups_before + 1);
    store.reset();
  }
}

// SQLite runs a WAL checkpoint inside the commit that takes the WAL past 1,000 frames, and a
// checkpoint syncs the files. When an event loop led that commit, the store leaves the checkpoint to
// the writer thread: the next batch goes there, and the WAL stays bounded as with SQLite's own.
TEST_F(SqliteAsyncTest, CheckpointsRunOnTheWriterThreadWhenAnEventLoopLedTheCommit) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int kBatches = 1500;  // ~3 frames each: past the threshold several times
  const std::string big(6000, 'x');
  int on_submitter = 0;
  int elsewhere = 0;
  for (int i = 0; i < kBatches; ++i) {
    std::vector<WriteRequest> batch;
    batch.push_back(WriteRequest::Put(ItemKey{"WAL#test", "item-" + std::to_string(i % 50)}, Item{{"v", big}},
                                      Condition::Always()));
    std::atomic<bool> done{false};
    std::thread::id done_on;
    store->AsyncWriteBatch(std::move(batch), [&](AsyncItemStore::WriteResults r) {
      EXPECT_TRUE(r.size() == 1 && r[0].ok() && r[0]->applied);
      done_on = std::this_thread::get_id();
      done = true;
    });
    for (int k = 0; k < 500 && !done; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_TRUE(done);
    (done_on == std::this_thread::get_id() ? on_submitter : elsewhere)++;
  }
  EXPECT_GE(store->checkpoints_run(), 2);
  EXPECT_EQ(elsewhere, store->checkpoints_run()) << "each checkpoint took one batch to the writer thread";
  EXPECT_GT(on_submitter, kBatches * 9 / 10);
  // Bounded: without checkpoints the WAL would hold every frame written (~4,500 frames, ~18 MB).
  std::error_code ec;
  const auto wal_bytes = std::filesystem::file_size(dir_.file("store.db") + "-wal", ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_LT(wal_bytes, 1300u * 4120u) << "the WAL was reused after a checkpoint";
}

// An event loop never sleeps in SQLite's busy handler: while another process holds the database's
// write lock, an idle store's batch goes to the writer thread (which waits for the lock) instead of
// being committed on the submitting thread, and it is committed once the lock is free.
TEST_F(SqliteAsyncTest, AnotherProcesssWriteLockSendsTheBatchToTheWriterThread) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->WriteBatch(Increment())[0].ok());
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::atomic<bool> done{false};
  std::thread::id done_on;
  bool applied = false;
  const auto submitted = std::chrono::steady_clock::now();
  store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) {
    applied = r.size() == 1 && r[0].ok() && r[0]->applied;
    done_on = std::this_thread::get_id();
    done = true;
  });
  EXPECT_LT(std::chrono::steady_clock::now() - submitted, std::chrono::seconds(1)) << "the submitter did not wait";
  EXPECT_FALSE(done) << "not committed while another connection holds the write lock";
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done);
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  for (int i = 0; i < 500 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(done);
  EXPECT_TRUE(applied);
  EXPECT_NE(done_on, std::this_thread::get_id()) << "the writer thread committed it";
  EXPECT_EQ(GetInt(**store->Get(kCounter), "n").value_or(-1), 2);
}

// Another process holds the write lock past the busy timeout: the group waiting for it fails with
// "nothing written", and so do the batches queued behind it meanwhile, at once — they waited for the
// same lock, and would otherwise each wait the whole timeout again (a `sqlite3` shell left in a
// transaction kept calls several timeouts). Here the lock is given back the moment the first group
// fails: a batch queued behind it that then waited its own turn would be applied.
TEST_F(SqliteAsyncTest, BatchesQueuedBehindAGroupThatFoundTheStoreLockedFailWithIt) {
  SqliteItemStore::Options o;
  o.path = dir_.file("store.db");
  o.synchronous_full = true;  // every batch goes to the writer thread
  o.sweep_interval_ms = 0;
  o.busy_timeout_ms = 1000;
  auto opened = SqliteItemStore::Open(o, clock_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<SqliteItemStore> store = std::move(*opened);
  ASSERT_TRUE(store->WriteBatch(Increment())[0].ok());
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  absl::Status first, second;
  bool second_applied = false;
  store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) {
    first = r.at(0).status();
    EXPECT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);  // the lock is free now
  });
  // The writer thread is waiting for the lock by now (or, on a slow machine, takes both batches
  // into one group, which fails whole: the assertions below hold either way).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) {
    second = r.at(0).status();
    second_applied = r.at(0).ok() && r.at(0)->applied;
  });
  store->WaitIdle();
  sqlite3_close(other);
  EXPECT_TRUE(absl::IsUnavailable(first)) << first;
  EXPECT_TRUE(NothingWritten(first)) << "a lock that was never taken wrote nothing";
  EXPECT_FALSE(second_applied) << "the batch queued behind waited for the lock a second time";
  EXPECT_TRUE(NothingWritten(second)) << second;
  EXPECT_EQ(GetInt(**store->Get(kCounter), "n").value_or(-1), 1);
  ASSERT_TRUE(store->WriteBatch(Increment())[0].ok()) << "the next batch, after the lock, is applied";
  EXPECT_EQ(GetInt(**store->Get(kCounter), "n").value_or(-1), 2);
}

// Batches that met others queued send the next ones to the writer thread (a loop committing is a
// loop not serving its connections, and the writer groups their commits), until fewer than one in
// eight of the recent batches did: then an idle store's batches are committed by their submitter
// again.
TEST_F(SqliteAsyncTest, AfterBatchesMeetOthersQueuedTheWriterThreadCommitsUntilTheyStop) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->WriteBatch(Increment())[0].ok());
  // Twenty batches queue behind another connection's write lock.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("store.db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::atomic<int> applied{0};
  for (int i = 0; i < 20; ++i) {
    store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) {
      if (r.size() == 1 && r[0].ok() && r[0]->applied) ++applied;
    });
  }
  EXPECT_EQ(applied.load(), 0) << "nothing committed under the other connection's lock";
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  store->WaitIdle();
  ASSERT_EQ(applied.load(), 20);
  // Then one batch at a time, each finished before the next: who commits each?
  const std::thread::id submitter = std::this_thread::get_id();
  std::vector<bool> on_submitter;
  for (int i = 0; i < 40; ++i) {
    std::atomic<bool> here{false};
    store->AsyncWriteBatch(Increment(), [&](AsyncItemStore::WriteResults r) {
      if (r.size() == 1 && r[0].ok() && r[0]->applied) ++applied;
      here = std::this_thread::get_id() == submitter;
    });
    store->WaitIdle();
    on_submitter.push_back(here);
  }
  EXPECT_EQ(applied.load(), 60);
  for (int i = 0; i < 8; ++i) EXPECT_FALSE(on_submitter[i]) << "batch " << i << " of the quiet ones";
  const auto first = std::find(on_submitter.begin(), on_submitter.end(), true);
  ASSERT_NE(first, on_submitter.end()) << "the submitter never committed again";
  EXPECT_TRUE(std::all_of(first, on_submitter.end(), [](bool b) { return b; }))
      << "once quiet, every batch from " << (first - on_submitter.begin()) << " on is committed by its submitter";
  EXPECT_EQ(GetInt(**store->Get(kCounter), "n").value_or(-1), 61);
}

}  // namespace
}  // namespace toolgate::store
