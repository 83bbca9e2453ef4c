// What only the SQLite backend promises: durability across reopen, attrs readable as JSON,
// clear errors (not crashes) for read-only and corrupt files, and the TTL sweeper.

#include <grp.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "test_support.h"
#include "toolgate/store/item_json.h"

namespace toolgate::store {
namespace {

using toolgate::testing::OpenSqlite;
using toolgate::testing::TempDir;

const ItemKey kKey{"CONNECTOR#crm", "BREAKER"};

// Runs one SQL statement on the file with the plain SQLite API, as an operator's sqlite3 shell would.
std::string RawSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_exec(
        db, sql.c_str(),
        [](void* o, int n, char** values, char**) {
          for (int i = 0; i < n; ++i) *static_cast<std::string*>(o) += values[i] ? values[i] : "NULL";
          return 0;
        },
        &out, nullptr);
  }
  sqlite3_close(db);
  return out;
}

TEST(SqliteStoreTest, ItemsSurviveReopenAndAreReadableJson) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  {
    auto store = OpenSqlite(path, clock);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(
        store->Put(kKey, {{"state", "OPEN"}, {"open_until_epoch_sec", int64_t{1800000020}}}, Condition::Always()).ok());
  }
  auto reopened = OpenSqlite(path, clock);
  ASSERT_NE(reopened, nullptr);
  auto item = reopened->Get(kKey);
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ(GetString(**item, "state"), "OPEN");
  EXPECT_EQ(RawSql(path, "SELECT attrs FROM items WHERE pk='CONNECTOR#crm'"),
            R"({"open_until_epoch_sec":1800000020,"state":"OPEN"})");
}

TEST(SqliteStoreTest, TwoStoresOnOneFileSeeEachOthersWrites) {
  TempDir dir;
  ManualClock clock;
  auto a = OpenSqlite(dir.file("store.db"), clock);
  auto b = OpenSqlite(dir.file("store.db"), clock);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Put(kKey, {{"v", 1}}, Condition::ItemAbsent())->applied);
  auto second = b->Put(kKey, {{"v", 2}}, Condition::ItemAbsent());
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->applied);
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 1);
}

TEST(SqliteStoreTest, AReadOnlyStoreRefusesWritesWithAClearError) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  ASSERT_TRUE(OpenSqlite(path, clock)->Put(kKey, {{"v", 1}}, Condition::Always()).ok());
  auto ro = OpenSqlite(path, clock, /*read_only=*/true);
  ASSERT_NE(ro, nullptr);
  EXPECT_EQ(GetInt(**ro->Get(kKey), "v"), 1);
  auto w = ro->Put(kKey, {{"v", 2}}, Condition::Always());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsStoreError(w.status()));
  EXPECT_NE(w.status().message().find("read-only"), absl::string_view::npos);
  EXPECT_EQ(GetInt(**ro->Get(kKey), "v"), 1);
}

// `toolgate store check` asks this: a store that reads well but that this user cannot write is one
// `serve` refuses at start.
TEST(SqliteStoreTest, CheckWritableTellsAStoreThisUserCannotWriteOrWhoseLockIsHeld) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  ASSERT_TRUE(OpenSqlite(path, clock)->Put(kKey, {{"v", 1}}, Condition::Always()).ok());
  EXPECT_TRUE(SqliteItemStore::CheckWritable(path, 100).ok());

  // Another process in a write transaction: the lock is not had within the busy timeout.
  sqlite3* holder = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &holder), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(holder, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  const absl::Status busy = SqliteItemStore::CheckWritable(path, 50);
  EXPECT_EQ(busy.code(), absl::StatusCode::kUnavailable) << busy;
  sqlite3_exec(holder, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(holder);
  EXPECT_TRUE(SqliteItemStore::CheckWritable(path, 100).ok());

  // The file read-only for this user. root may write any file: the check then runs in a child
  // process as nobody, on the file root owns (mode 0644, in a directory nobody may write).
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::group_read |
                                         std::filesystem::perms::others_read);
  if (geteuid() != 0) {
    const absl::Status ro = SqliteItemStore::CheckWritable(path, 100);
    EXPECT_EQ(ro.code(), absl::StatusCode::kFailedPrecondition) << ro;
    EXPECT_THAT(std::string(ro.message()), ::testing::HasSubstr("read-only"));
  } else {
    std::filesystem::permissions(std::filesystem::path(path).parent_path(), std::filesystem::perms::all);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) {
        _exit(100);
      }
      if (access(path.c_str(), R_OK) != 0) _exit(101);  // a parent directory nobody may not enter
      const absl::Status ro = SqliteItemStore::CheckWritable(path, 100);
      const bool says_read_only = std::string(ro.message()).find("read-only") != std::string::npos;
      _exit(ro.code() == absl::StatusCode::kFailedPrecondition && says_read_only ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 100 || WEXITSTATUS(status) == 101) {
      GTEST_SKIP() << "cannot run a child as nobody with the store's directory reachable (" << WEXITSTATUS(status)
                   << ")";
    }
    EXPECT_EQ(WEXITSTATUS(status), 0) << "as nobody, CheckWritable did not say the store is read-only";
  }
  // Nothing was written: the store reads as it did.
  EXPECT_EQ(GetInt(**OpenSqlite(path, clock, /*read_only=*/true)->Get(kKey), "v"), 1);
}

TEST(SqliteStoreTest, AFileThatIsNotADatabaseIsDataLossAtOpen) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("garbage.db");
  {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < 4096; ++i) f.put(static_cast<char>(i * 7 + 3));
  }
  SqliteItemStore::Options o;
  o.path = path;
  o.sweep_interval_ms = 0;
  auto store = SqliteItemStore::Open(o, clock);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_TRUE(IsStoreError(store.status()));
}

// A store made before this layout (a WITHOUT ROWID table keyed by (pk, sk)) is moved, at open and
// once, to the rowid table with its unique key index: every item, its ttl and its order kept.
TEST(SqliteStoreTest, AStoreMadeWithTheWithoutRowidTableIsMovedToTheRowidOneWithEveryItem) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  {
    auto store = OpenSqlite(path, clock);
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(store->Put({"P", "s" + std::to_string(i)}, {{"n", int64_t{i}}}, Condition::Always()).ok());
    }
    ASSERT_TRUE(
        store->Put({"P", "kept"}, {{"n", int64_t{9}}, {"ttl", int64_t{4'000'000'000}}}, Condition::Always()).ok());
  }
  // The layout stores had before, made from this one as it would have been written.
  RawSql(path,
         "BEGIN; CREATE TABLE old_items (pk TEXT NOT NULL, sk TEXT NOT NULL, attrs TEXT NOT NULL, ttl INTEGER, "
         "PRIMARY KEY (pk, sk)) WITHOUT ROWID; INSERT INTO old_items SELECT pk, sk, attrs, ttl FROM items; "
         "DROP TABLE items; ALTER TABLE old_items RENAME TO items; "
         "CREATE INDEX items_ttl ON items(ttl) WHERE ttl IS NOT NULL; COMMIT;");
  ASSERT_NE(RawSql(path, "SELECT sql FROM sqlite_master WHERE name = 'items'").find("WITHOUT ROWID"),
            std::string::npos);

  auto store = OpenSqlite(path, clock);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(RawSql(path, "SELECT sql FROM sqlite_master WHERE name = 'items'").find("WITHOUT ROWID"),
            std::string::npos);
  EXPECT_EQ(RawSql(path, "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name"), "items_keyitems_ttl");
  auto page = store->Query({"P", "", 100, std::nullopt, false});
  ASSERT_TRUE(page.ok()) << page.status();
  std::vector<std::string> sks;
  for (const auto& [sk, item] : page->items) sks.push_back(sk);
  EXPECT_EQ(sks, (std::vector<std::string>{"kept", "s0", "s1", "s2", "s3", "s4"}));
  auto kept = store->Get({"P", "kept"});
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ(GetInt(**kept, "ttl"), 4'000'000'000);
  // (pk, sk) is still a key: a conditional insert of one that exists is refused.
  auto refused = store->Put({"P", "s1"}, {{"n", int64_t{7}}}, Condition::ItemAbsent());
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->applied);
  // Opened again: nothing more to move.
  store.reset();
  auto again = OpenSqlite(path, clock);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items"), "6");
}

// A seek never reads a large item whole: the b-trees a seek descends hold keys and row ids alone. In
// the WITHOUT ROWID layout, every comparison with a large row in an interior cell read that whole
// row into a buffer of its size (80 inputs of 1 MB: ~6,200 calls/s down to ~370). Seen in SQLite's
// own record of the largest allocation it asked for.
TEST(SqliteStoreTest, ASeekNeverReadsALargeItemWhole) {
  TempDir dir;
  ManualClock clock;
  auto store = OpenSqlite(dir.file("store.db"), clock);
  ASSERT_NE(store, nullptr);
  const std::string large(1'000'000, 'x');
  for (int i = 0; i < 40; ++i) {
    char sk[16];
    std::snprintf(sk, sizeof sk, "E%03d", i * 2);  // large and small items side by side
    ASSERT_TRUE(store->Put({"EXEC", sk}, {{"input", large}}, Condition::Always()).ok());
  }
  sqlite3_int64 current = 0, largest = 0;
  ASSERT_EQ(sqlite3_status64(SQLITE_STATUS_MALLOC_SIZE, &current, &largest, /*reset=*/1), SQLITE_OK);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 40; ++i) {
      char sk[16];
      std::snprintf(sk, sizeof sk, "E%03d", i * 2 + 1);
      ASSERT_TRUE(store->Put({"EXEC", sk}, {{"n", int64_t{round}}}, Condition::Always()).ok());
      ASSERT_TRUE(store->Get({"EXEC", sk}).ok());
      ASSERT_TRUE(store->Get({"BREAKER", sk}).ok());
    }
  }
  ASSERT_EQ(sqlite3_status64(SQLITE_STATUS_MALLOC_SIZE, &current, &largest, /*reset=*/0), SQLITE_OK);
  EXPECT_LT(largest, 64 * 1024) << "a seek read a large item into memory";
}

TEST(SqliteStoreTest, AMissingDirectoryIsUnavailableAtOpen) {
  ManualClock clock;
  SqliteItemStore::Options o;
  o.path = "/nonexistent-dir-for-toolgate-test/store.db";
  auto store = SqliteItemStore::Open(o, clock);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable) << store.status();
}

// The writer keeps items it updated decoded (design §16); a write by anyone else — another store on
// the file (another process), an operator's sqlite3 shell, the sweeper — must still be what the next
// conditional write sees.
TEST(SqliteStoreTest, AConditionalWriteSeesWhatOthersWroteSinceItsLastUpdate) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  auto a = OpenSqlite(path, clock);
  auto b = OpenSqlite(path, clock);
  ASSERT_TRUE(a && b);
  const AttributePath v = AttributePath::Top("v");
  ASSERT_TRUE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always())->applied);  // v = 1, kept decoded by a
  ASSERT_TRUE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{1}))->applied);   // 2
  ASSERT_TRUE(b->Update(kKey, {UpdateOp::Add(v, 10)}, Condition::Eq(v, int64_t{2}))->applied);  // 12, by b
  EXPECT_FALSE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{2}))->applied)
      << "a decided on its own stale copy";
  auto next = a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{12}));
  ASSERT_TRUE(next.ok() && next->applied);
  EXPECT_EQ(GetInt(next->item, "v"), 13);
  RawSql(path, "UPDATE items SET attrs='{\"v\":100}' WHERE sk='BREAKER'");
  EXPECT_EQ(GetInt(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always())->item, "v"), 101);
  RawSql(path, "DELETE FROM items WHERE sk='BREAKER'");
  EXPECT_TRUE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::ItemAbsent())->applied)
      << "a still saw the deleted item";
  // Its own writes in between: a Put and an Erase of an item it keeps are followed too.
  ASSERT_TRUE(a->Put(kKey, {{"v", 7}}, Condition::Always())->applied);
  EXPECT_EQ(GetInt(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always())->item, "v"), 8);
  ASSERT_TRUE(a->Erase(kKey, Condition::Always())->applied);
  EXPECT_TRUE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::ItemAbsent())->applied);
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 1);
  // An item inserted with the updated_soon hint (an execution record) is kept decoded from its insert,
  // and followed the same way.
  const ItemKey record{"EXEC#e1", "RECORD"};
  WriteRequest insert = WriteRequest::Put(record, {{"v", 1}}, Condition::ItemAbsent(), ReturnValues::kNone);
  insert.updated_soon = true;
  auto inserted = a->WriteBatch({insert});
  ASSERT_TRUE(inserted[0].ok() && inserted[0]->applied);
  auto updated = a->Update(record, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{1}));
  ASSERT_TRUE(updated.ok() && updated->applied);
  EXPECT_EQ(GetInt(updated->item, "v"), 2);
  RawSql(path, "UPDATE items SET attrs='{\"v\":50}' WHERE sk='RECORD'");
  EXPECT_FALSE(a->Update(record, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{2}))->applied);
  EXPECT_EQ(GetInt(a->Update(record, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{50}))->item, "v"), 51);
  // A second insert of it is refused, cached or not.
  EXPECT_FALSE(a->WriteBatch({insert})[0]->applied);
}

// The writer updates an item it keeps decoded where it keeps it; an update refused half-way (its
// second op is invalid) must leave neither the file nor the kept copy with its first op.
TEST(SqliteStoreTest, AnUpdateRefusedHalfWayLeavesTheKeptItemAsStored) {
  TempDir dir;
  ManualClock clock;
  auto a = OpenSqlite(dir.file("store.db"), clock);
  ASSERT_TRUE(a);
  const AttributePath v = AttributePath::Top("v");
  const AttributePath s = AttributePath::Top("s");
  const AttributePath half = AttributePath::Top("half");
  ASSERT_TRUE(a->Update(kKey, {UpdateOp::Set(s, "text"), UpdateOp::Add(v, 1)}, Condition::Always())->applied);
  auto refused = a->Update(kKey, {UpdateOp::Set(half, 1), UpdateOp::Add(s, 1)}, Condition::Always());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  auto next = a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{1}));
  ASSERT_TRUE(next.ok() && next->applied) << next.status();
  EXPECT_EQ(next->item.count("half"), 0u) << "the refused update's first op stayed in the kept copy";
  EXPECT_EQ(GetInt(next->item, "v"), 2);
  EXPECT_EQ((**a->Get(kKey)).count("half"), 0u);
  EXPECT_EQ(GetInt(**a->Get(kKey), "v"), 2);
}

// Two stores on one file: `a` writes, `b` (another connection) reads what reached the file.
class SqliteKeptItemTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(a && b); }
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  std::unique_ptr<SqliteItemStore> a = OpenSqlite(path, clock);
  std::unique_ptr<SqliteItemStore> b = OpenSqlite(path, clock);
  const AttributePath v = AttributePath::Top("v");
};

// An item the writer keeps decoded and several batches of one commit update (a connector's
// CONCURRENCY item under load) has its row written once, before the commit, with the last value;
// a Put or an Erase of it in between is followed.
TEST_F(SqliteKeptItemTest, UpdatesOfAKeptItemInOneCommitWriteItsRowOnceWithTheLastValue) {
  ASSERT_TRUE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always())->applied);  // v = 1, kept by a
  const ItemKey other{"CONNECTOR#crm", "OTHER"};

  // One batch is one commit: five conditional updates, each deciding on the one before it.
  std::vector<WriteRequest> batch;
  for (int64_t i = 1; i <= 5; ++i)
    batch.push_back(WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, i)));
  batch.push_back(WriteRequest::Put(other, {{"x", 1}}, Condition::ItemAbsent()));
  const int64_t rows_before = a->rows_written();
  auto results = a->WriteBatch(batch);
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(results[i].ok() && results[i]->applied) << i;
    EXPECT_EQ(GetInt(results[i]->item, "v"), static_cast<int64_t>(i) + 2);
  }
  EXPECT_EQ(a->rows_written() - rows_before, 2) << "the kept item's row once, the other item's once";
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 6) << "another connection sees the last value";
  EXPECT_EQ(RawSql(path, "SELECT json_extract(attrs, '$.v') FROM items WHERE sk = 'BREAKER'"), "6");

  // Updated, then erased, in one commit: no row; erased, then updated again: the new row.
  auto erased = a->WriteBatch({WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always()),
                               WriteRequest::Erase(kKey, Condition::Always())});
  ASSERT_TRUE(erased[0].ok() && erased[1].ok() && erased[1]->applied);
  EXPECT_FALSE(b->Get(kKey)->has_value()) << "the erased item's change was written after its erase";
  auto again = a->WriteBatch({WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::ItemAbsent()),
                              WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{1})),
                              WriteRequest::Erase(kKey, Condition::Eq(v, int64_t{2})),
                              WriteRequest::Update(kKey, {UpdateOp::Add(v, 5)}, Condition::ItemAbsent())});
  for (const auto& r : again) ASSERT_TRUE(r.ok() && r->applied);
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 5);

  // Updated, then put whole, then updated: the put's value plus the last update.
  auto put = a->WriteBatch({WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{5})),
                            WriteRequest::Put(kKey, {{"v", 100}}, Condition::Always()),
                            WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{100}))});
  for (const auto& r : put) ASSERT_TRUE(r.ok() && r->applied);
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 101);
  EXPECT_EQ(GetInt(**a->Get(kKey), "v"), 101);
}

// The kept item is changed where it is kept and written at the commit. An update of it that fails
// half-way after another update of it in the same commit is undone where it is kept: it is refused
// alone, the earlier change and the rest of the commit stand, and nothing of the refused one reaches
// the file — also when an op before the failing one replaced a whole map.
TEST_F(SqliteKeptItemTest, AnUpdateFailingHalfWayOnAnItemChangedEarlierInTheCommitIsRefusedAlone) {
  const AttributePath s = AttributePath::Top("s");
  const AttributePath half = AttributePath::Top("half");
  const AttributePath m = AttributePath::Top("m");
  ASSERT_TRUE(
      a->Update(kKey,
                {UpdateOp::Set(s, "text"), UpdateOp::Set(m, AttributeMap{{"k", int64_t{1}}}), UpdateOp::Add(v, 1)},
                Condition::Always())
          ->applied);
  const ItemKey other{"CONNECTOR#crm", "OTHER"};
  auto results = a->WriteBatch(
      {WriteRequest::Put(other, {{"x", 1}}, Condition::ItemAbsent()),
       WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always()),
       WriteRequest::Update(kKey,
                            {UpdateOp::Set(half, 1), UpdateOp::Add(AttributePath::In("m", "k"), 1),
                             UpdateOp::Set(m, "no longer a map"), UpdateOp::Remove(v), UpdateOp::Add(s, 1)},
                            Condition::Always()),
       WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{2}))});
  ASSERT_TRUE(results[0].ok() && results[0]->applied) << results[0].status();
  ASSERT_TRUE(results[1].ok() && results[1]->applied) << results[1].status();
  EXPECT_EQ(results[2].status().code(), absl::StatusCode::kInvalidArgument) << results[2].status();
  ASSERT_TRUE(results[3].ok() && results[3]->applied) << "the refused update left its ops in the kept copy";
  EXPECT_TRUE(b->Get(other)->has_value());
  const Item stored = **b->Get(kKey);
  EXPECT_EQ(GetInt(stored, "v"), 3);
  EXPECT_EQ(stored.count("half"), 0u);
  ASSERT_TRUE(stored.at("m").is_map()) << "the replaced map was not put back";
  EXPECT_EQ(stored.at("m").as_map().at("k").as_int(), 1);
  EXPECT_EQ(stored.at("s").as_string(), "text");
  EXPECT_EQ(RawSql(path, "SELECT json_extract(attrs, '$.m.k') FROM items WHERE sk = 'BREAKER'"), "1");
}

// An item not kept at the start of a commit (another connection committed since: the sweeper,
// another process) and updated several times in it also has its row written once.
TEST_F(SqliteKeptItemTest, AnItemNotKeptYetAndUpdatedSeveralTimesInOneCommitIsWrittenOnce) {
  ASSERT_TRUE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always())->applied);          // v = 1, kept by a
  ASSERT_TRUE(b->Put({"CONNECTOR#crm", "ELSEWHERE"}, {{"x", 1}}, Condition::Always()).ok());  // a forgets
  std::vector<WriteRequest> batch;
  for (int64_t i = 1; i <= 4; ++i)
    batch.push_back(WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, i)));
  const int64_t rows_before = a->rows_written();
  for (const auto& r : a->WriteBatch(batch)) ASSERT_TRUE(r.ok() && r->applied) << r.status();
  EXPECT_EQ(a->rows_written() - rows_before, 1);
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 5);
}

// More items changed in one commit than the writer keeps decoded: what it drops to stay bounded is
// never an item whose change is not written yet.
TEST_F(SqliteKeptItemTest, MoreChangedItemsInOneCommitThanTheWriterKeepsAreAllWritten) {
  ASSERT_TRUE(a->Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Always())->applied);  // v = 1, kept by a
  constexpr int kItems = 1500;                                                        // past the writer's bound (512)
  auto key = [](int i) { return ItemKey{"EXEC#many", absl::StrCat("ITEM#", 10000 + i)}; };
  std::vector<WriteRequest> inserts;
  for (int i = 0; i < kItems; ++i) inserts.push_back(WriteRequest::Put(key(i), {{"v", 1}}, Condition::ItemAbsent()));
  for (const auto& r : a->WriteBatch(inserts)) ASSERT_TRUE(r.ok() && r->applied);
  // One commit: the kept item changed first, then more items than the writer keeps (each kept
  // after its update, pushing others out), then the first one again, deciding on its change.
  std::vector<WriteRequest> updates;
  updates.push_back(WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{1})));
  for (int i = 0; i < kItems; ++i) {
    updates.push_back(
        WriteRequest::Update(key(i), {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{1}), ReturnValues::kNone));
  }
  updates.push_back(WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{2})));
  for (const auto& r : a->WriteBatch(updates)) ASSERT_TRUE(r.ok() && r->applied);
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 3);
  EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items WHERE pk = 'EXEC#many' AND json_extract(attrs, '$.v') = 2"),
            std::to_string(kItems));
  // And the same with no second update: the change is written though nothing reads it again.
  updates.pop_back();
  updates.front() = WriteRequest::Update(kKey, {UpdateOp::Add(v, 1)}, Condition::Eq(v, int64_t{3}));
  for (int i = 0; i < kItems; ++i) updates[i + 1].condition = Condition::Eq(v, int64_t{2});
  for (const auto& r : a->WriteBatch(updates)) ASSERT_TRUE(r.ok() && r->applied);
  EXPECT_EQ(GetInt(**b->Get(kKey), "v"), 4);
}

// A kept item's row is rewritten in place (UPDATE, not a delete and an insert); its ttl column, by
// which the sweep deletes, follows the item's ttl whether an update keeps it, changes it or removes
// it, the ttl index stays consistent with the rows, and an item an update creates gets its row.
TEST_F(SqliteKeptItemTest, AKeptItemsRowRewrittenInPlaceKeepsItsTtlColumnTrue) {
  const AttributePath ttl = AttributePath::Top("ttl");
  const ItemKey rec{"TENANT#t", "EXEC#1"};
  WriteRequest insert = WriteRequest::Put(rec, {{"v", 1}, {"ttl", 1000}}, Condition::ItemAbsent());
  insert.updated_soon = true;  // kept from its insert, as an execution record is
  ASSERT_TRUE(a->WriteBatch({insert})[0]->applied);
  auto row = [&](const std::string& sk) {
    return RawSql(path, "SELECT quote(ttl) || ',' || json_extract(attrs, '$.v') FROM items WHERE sk = '" + sk + "'");
  };
  auto update = [&](std::vector<UpdateOp> ops) {
    ops.push_back(UpdateOp::Add(v, 1));
    auto r = a->WriteBatch({WriteRequest::Update(rec, std::move(ops), Condition::ItemExists())});
    return r[0].ok() && r[0]->applied;
  };
  ASSERT_TRUE(update({}));
  EXPECT_EQ(row("EXEC#1"), "1000,2") << "ttl kept";
  ASSERT_TRUE(update({UpdateOp::Set(ttl, 2000)}));
  EXPECT_EQ(row("EXEC#1"), "2000,3") << "ttl changed";
  ASSERT_TRUE(update({UpdateOp::Remove(ttl)}));
  EXPECT_EQ(row("EXEC#1"), "NULL,4") << "ttl removed";
  ASSERT_TRUE(update({UpdateOp::Set(ttl, clock.now_epoch_sec() + 5)}));
  EXPECT_EQ(row("EXEC#1"), absl::StrCat(clock.now_epoch_sec() + 5, ",5")) << "ttl set again";
  EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items WHERE pk = 'TENANT#t'"), "1");

  // An update that creates its item writes a row for it, ttl included.
  auto created = a->WriteBatch({WriteRequest::Update(
      {"TENANT#t", "EXEC#2"}, {UpdateOp::Set(ttl, clock.now_epoch_sec() + 5), UpdateOp::Add(v, 1)},
      Condition::Always())});
  ASSERT_TRUE(created[0].ok() && created[0]->applied);
  EXPECT_EQ(row("EXEC#2"), absl::StrCat(clock.now_epoch_sec() + 5, ",1"));
  auto read = b->Get({"TENANT#t", "EXEC#2"});
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  EXPECT_EQ(GetInt(**read, "v"), 1);

  EXPECT_TRUE(a->CheckIntegrity().ok()) << "the ttl index no longer matches the rows";
  clock.advance(std::chrono::seconds(5));
  EXPECT_EQ(*a->SweepExpired(), 2) << "the sweep deletes by the ttl column the in-place writes kept";
  EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items WHERE pk = 'TENANT#t'"), "0");
}

TEST(SqliteStoreTest, ACorruptRowIsDataLossNamingItsKeyAndOtherRowsStillRead) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  auto store = OpenSqlite(path, clock);
  ASSERT_TRUE(store->Put(kKey, {{"v", 1}}, Condition::Always()).ok());
  ASSERT_TRUE(store->Put({"CONNECTOR#crm", "CONCURRENCY"}, {{"v", 2}}, Condition::Always()).ok());
  RawSql(path, "UPDATE items SET attrs='{not json' WHERE sk='BREAKER'");
  auto bad = store->Get(kKey);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("BREAKER"), absl::string_view::npos);
  // A conditional write on it fails the same way and changes nothing.
  EXPECT_EQ(store->Update(kKey, {UpdateOp::Add(AttributePath::Top("v"), 1)}, Condition::Always()).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(GetInt(**store->Get({"CONNECTOR#crm", "CONCURRENCY"}), "v"), 2);
  RawSql(path, "UPDATE items SET attrs='[1,2]' WHERE sk='BREAKER'");
  EXPECT_EQ(store->Get(kKey).status().code(), absl::StatusCode::kDataLoss);
  // An unconditional put replaces it whole (the operator's override of a corrupt breaker item).
  auto replaced = store->Put(kKey, {{"v", 9}}, Condition::Always());
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_TRUE(replaced->applied);
  EXPECT_EQ(GetInt(**store->Get(kKey), "v"), 9);
  // A conditional one still needs to read it.
  RawSql(path, "UPDATE items SET attrs='{not json' WHERE sk='BREAKER'");
  EXPECT_EQ(store->Put(kKey, {{"v", 10}}, Condition::ItemExists()).status().code(), absl::StatusCode::kDataLoss);
}

// An item's expiry is its row's ttl column, as the sweep and queries have it: every read takes the
// item's ttl from there, whatever its attrs text says.
TEST(SqliteStoreTest, ReadsTakeAnItemsTtlFromItsRowsColumn) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  auto store = OpenSqlite(path, clock);
  const int64_t now = clock.now_epoch_sec();
  const ItemKey key{"P", "S"};
  ASSERT_TRUE(store->Put(key, {{"v", 1}, {"ttl", now + 100}}, Condition::Always()).ok());
  RawSql(path, "UPDATE items SET attrs = json_set(attrs, '$.ttl', 1) WHERE pk = 'P'");  // attrs alone
  auto read = store->Get(key);
  ASSERT_TRUE(read.ok() && read->has_value()) << "an attrs ttl in the past hid a row whose column keeps it";
  EXPECT_EQ(GetInt(**read, "ttl"), now + 100);
  auto page = store->Query({"P", "", 10, std::nullopt, false});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(GetInt(page->items[0].second, "ttl"), now + 100);

  RawSql(path, "UPDATE items SET ttl = NULL WHERE pk = 'P'");
  read = store->Get(key);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_FALSE(GetInt(**read, "ttl").has_value()) << "no ttl in the column: the item does not expire";
  RawSql(path, "UPDATE items SET ttl = " + std::to_string(now) + " WHERE pk = 'P'");
  read = store->Get(key);
  ASSERT_TRUE(read.ok());
  EXPECT_FALSE(read->has_value()) << "the column says expired";
}

// The sweep deletes for every instance on the file by this host's wall clock: while that clock
// stands stepped away from where monotonic time says it should be (a day ahead for a few seconds),
// nothing is deleted; stepped back, or kept for kKeepClockStepAfterMs, sweeping resumes.
// The store's directory deleted (or its volume unmounted) under a running gateway: SQLite went on
// writing to the unlinked file, every call answered 200, and a restart began an empty store — the
// kill switches, executions and ledger gone without a word. Once the file at the path is no longer
// the one opened, every operation fails kUnavailable naming it, until it is back.
// Reads `key` every 10 ms until `done` says the answer is the one awaited, for up to 5 s; the last answer.
template <typename Done>
absl::StatusOr<std::optional<Item>> GetUntil(SqliteItemStore& store, const ItemKey& key, Done done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  absl::StatusOr<std::optional<Item>> got = store.Get(key);
  while (!done(got) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    got = store.Get(key);
  }
  return got;
}

bool Served(const absl::StatusOr<std::optional<Item>>& r) { return r.ok(); }
bool Refused(const absl::StatusOr<std::optional<Item>>& r) { return !r.ok(); }

// A store whose files are checked every 50 ms (the sweeper's tick, at most kFileCheckMs).
absl::StatusOr<std::unique_ptr<SqliteItemStore>> OpenWatched(const std::string& path, const Clock& clock) {
  store::SqliteItemStore::Options o;
  o.path = path;
  o.synchronous_full = false;
  o.sweep_interval_ms = 50;
  return SqliteItemStore::Open(o, clock);
}

TEST(SqliteStoreTest, AStoreWhoseFileIsRemovedOrReplacedRefusesEveryOperationUntilItIsBack) {
  TempDir dir;
  SystemClock clock;
  const std::string path = dir.file("store.db");
  auto opened = OpenWatched(path, clock);
  ASSERT_TRUE(opened.ok()) << opened.status();
  SqliteItemStore& store = **opened;
  ASSERT_TRUE(store.Put({"KILLSWITCH", "tenant#evil"}, {{"reason", "fraud"}}, Condition::Always()).ok());
  EXPECT_TRUE(store.FileStillOpened());

  auto refused_within = [&] { return GetUntil(store, {"KILLSWITCH", "tenant#evil"}, Refused).status(); };
  std::filesystem::rename(path, dir.file("moved.db"));
  EXPECT_FALSE(store.FileStillOpened());
  const absl::Status refused = refused_within();
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("store.db was removed or replaced")) << refused;
  auto write = store.Put({"KILLSWITCH", "tenant#other"}, {{"reason", "x"}}, Condition::Always());
  EXPECT_TRUE(absl::IsUnavailable(write.status())) << write.status();
  const std::vector<absl::StatusOr<WriteResult>> batch =
      store.WriteBatch({WriteRequest::Put({"P", "a"}, {{"v", int64_t{1}}}, Condition::Always())});
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_TRUE(absl::IsUnavailable(batch[0].status())) << batch[0].status();
  // The asynchronous port, which the gateway's calls use, refuses too: reads and writes.
  std::promise<absl::Status> async_read;
  store.AsyncGet({"KILLSWITCH", "tenant#evil"},
                 [&](absl::StatusOr<std::optional<Item>> r) { async_read.set_value(r.status()); });
  const absl::Status read_refused = async_read.get_future().get();
  EXPECT_TRUE(absl::IsUnavailable(read_refused)) << read_refused;
  std::promise<absl::Status> async_query;
  store.AsyncQuery({.pk = "KILLSWITCH"}, [&](absl::StatusOr<QueryPage> r) { async_query.set_value(r.status()); });
  const absl::Status query_refused = async_query.get_future().get();
  EXPECT_TRUE(absl::IsUnavailable(query_refused)) << query_refused;
  std::promise<absl::Status> async_write;
  store.AsyncWriteBatch({WriteRequest::Put({"P", "b"}, {{"v", int64_t{1}}}, Condition::Always())},
                        [&](AsyncItemStore::WriteResults r) {
                          async_write.set_value(r.size() == 1 ? r[0].status() : absl::InternalError("results"));
                        });
  const absl::Status write_refused = async_write.get_future().get();
  EXPECT_TRUE(absl::IsUnavailable(write_refused)) << write_refused;

  // Back where it was: served again, with what it held.
  std::filesystem::rename(dir.file("moved.db"), path);
  const absl::StatusOr<std::optional<Item>> back = GetUntil(store, {"KILLSWITCH", "tenant#evil"}, Served);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->has_value());

  // A new, empty file at the path is not the store: refused too.
  std::filesystem::rename(path, dir.file("moved.db"));
  auto fresh = OpenSqlite(path, clock);
  ASSERT_NE(fresh, nullptr);
  const absl::Status replaced = refused_within();
  EXPECT_TRUE(absl::IsUnavailable(replaced)) << replaced;
}

// The -wal or -shm of a store in use removed (a clean-up script taking them for temporary files) is
// SQLite's split brain: a process opening the store afterwards works on a log of its own. The store
// refuses work from then on, naming the file, until it is back; connections that others open and
// close meanwhile (the CLI's) remove nothing.
TEST(SqliteStoreTest, AStoreWhoseWalOrShmIsRemovedRefusesEveryOperationUntilItIsBack) {
  for (const std::string suffix : {"-wal", "-shm"}) {
    SCOPED_TRACE(suffix);
    TempDir dir;
    SystemClock clock;
    const std::string path = dir.file("store.db");
    auto opened = OpenWatched(path, clock);
    ASSERT_TRUE(opened.ok()) << opened.status();
    SqliteItemStore& store = **opened;
    ASSERT_TRUE(store.Put({"KILLSWITCH", "tenant#evil"}, {{"reason", "fraud"}}, Condition::Always()).ok());
    {
      auto other = OpenSqlite(path, clock);  // another process's store, opened and closed
      ASSERT_NE(other, nullptr);
      ASSERT_TRUE(other->Get({"KILLSWITCH", "tenant#evil"}).ok());
    }
    EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items"), "1");  // and an operator's shell
    ASSERT_TRUE(SqliteItemStore::CheckWritable(path, 100).ok());
    ASSERT_TRUE(std::filesystem::exists(path + suffix));
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    ASSERT_TRUE(store.FileStillOpened());
    ASSERT_TRUE(store.Get({"KILLSWITCH", "tenant#evil"}).ok());

    std::filesystem::rename(path + suffix, path + suffix + ".moved");
    EXPECT_FALSE(store.FileStillOpened());
    // Until the check sees it, an operation may go through, or meet SQLite's own error over the
    // missing file; from then on every one is refused, naming it.
    auto refused_naming_it = [&](const absl::StatusOr<std::optional<Item>>& r) {
      return absl::IsUnavailable(r.status()) && absl::StrContains(r.status().message(), "split brain");
    };
    const absl::StatusOr<std::optional<Item>> got = GetUntil(store, {"KILLSWITCH", "tenant#evil"}, refused_naming_it);
    EXPECT_TRUE(absl::IsUnavailable(got.status())) << got.status();
    EXPECT_THAT(std::string(got.status().message()), ::testing::HasSubstr("store.db" + suffix + " was removed"));
    EXPECT_THAT(std::string(got.status().message()), ::testing::HasSubstr("split brain"));
    auto write = store.Put({"KILLSWITCH", "tenant#other"}, {{"reason", "x"}}, Condition::Always());
    EXPECT_TRUE(absl::IsUnavailable(write.status())) << write.status();

    std::filesystem::rename(path + suffix + ".moved", path + suffix);
    const absl::StatusOr<std::optional<Item>> back = GetUntil(store, {"KILLSWITCH", "tenant#evil"}, Served);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(back->has_value());
  }
}

TEST(SqliteStoreTest, TheSweepDeletesNothingWhileTheWallClockStandsStepped) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  auto store = OpenSqlite(path, clock);
  const int64_t now = clock.now_epoch_sec();
  ASSERT_TRUE(store->Put({"P", "intent"}, {{"ttl", now + 3600}}, Condition::Always()).ok());
  ASSERT_TRUE(store->Put({"P", "old"}, {{"ttl", now + 5}}, Condition::Always()).ok());

  clock.step_wall(std::chrono::hours(25));
  EXPECT_EQ(*store->SweepExpired(), 0) << "a clock a day ahead swept live items";
  clock.advance(std::chrono::seconds(1));
  EXPECT_EQ(*store->SweepExpired(), 0) << "the second sweep of the step took it as the time";
  clock.step_wall(-std::chrono::hours(25));
  EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items"), "2");
  clock.advance(std::chrono::seconds(4));  // "old" has expired by the clock as it is again
  EXPECT_EQ(*store->SweepExpired(), 1);
  EXPECT_EQ(RawSql(path, "SELECT sk FROM items"), "intent");

  // A step that stays is the clock's time once it has lasted long enough.
  clock.step_wall(std::chrono::hours(2));
  EXPECT_EQ(*store->SweepExpired(), 0);
  clock.advance(std::chrono::milliseconds(SqliteItemStore::kKeepClockStepAfterMs - 1));
  EXPECT_EQ(*store->SweepExpired(), 0);
  clock.advance(std::chrono::milliseconds(1));
  EXPECT_EQ(*store->SweepExpired(), 1);
  EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items"), "0");
}

TEST(SqliteStoreTest, SweepDeletesOnlyExpiredRows) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  auto store = OpenSqlite(path, clock);
  const int64_t now = clock.now_epoch_sec();
  for (int i = 0; i < 1200; ++i) {  // more than one sweep batch
    ASSERT_TRUE(store->Put({"P", "old#" + std::to_string(i)}, {{"ttl", now + 5}}, Condition::Always()).ok());
  }
  ASSERT_TRUE(store->Put({"P", "young"}, {{"ttl", now + 500}}, Condition::Always()).ok());
  ASSERT_TRUE(store->Put({"P", "forever"}, {{"v", 1}}, Condition::Always()).ok());
  EXPECT_EQ(*store->SweepExpired(), 0);
  clock.advance(std::chrono::seconds(5));
  EXPECT_EQ(*store->SweepExpired(), 1200);
  EXPECT_EQ(RawSql(path, "SELECT count(*) FROM items"), "2");
  EXPECT_TRUE(store->CheckIntegrity().ok());
}

TEST(SqliteStoreTest, TheBackgroundSweeperRunsByItself) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  SqliteItemStore::Options o;
  o.path = path;
  o.synchronous_full = false;
  o.sweep_interval_ms = 20;
  auto store = SqliteItemStore::Open(o, clock);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Put({"P", "S"}, {{"ttl", clock.now_epoch_sec()}}, Condition::Always()).ok());
  // Bounded wait for the sweeper thread (it runs every 20 ms); the item is already hidden from reads.
  std::string count;
  for (int i = 0; i < 250 && count != "0"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    count = RawSql(path, "SELECT count(*) FROM items");
  }
  EXPECT_EQ(count, "0");
}

// A store that coalesces its WAL writes (the default) hands each commit's frames to the file in one
// write, where SQLite asks for two per page; one that does not goes through SQLite's own VFS.
TEST(SqliteStoreTest, EachCommitsWalFramesReachTheFileInOneWrite) {
  TempDir dir;
  ManualClock clock;
  for (const bool coalesce : {true, false}) {
    SCOPED_TRACE(coalesce ? "coalescing" : "SQLite's own VFS");
    SqliteItemStore::Options o;
    o.path = dir.file(coalesce ? "on.db" : "off.db");
    o.synchronous_full = false;
    o.sweep_interval_ms = 0;
    o.coalesce_wal_writes = coalesce;
    auto store = SqliteItemStore::Open(o, clock);
    ASSERT_TRUE(store.ok()) << store.status();
    const auto before = SqliteItemStore::wal_writes();
    const int64_t groups_before = (*store)->groups_committed();
    for (int i = 0; i < 50; ++i) {  // items of ~6 KB: a commit writes two pages or more
      ASSERT_TRUE(
          (*store)->Put({"P", "k" + std::to_string(i)}, {{"v", std::string(6000, 'x')}}, Condition::Always())->applied);
    }
    const auto after = SqliteItemStore::wal_writes();
    const int64_t commits = (*store)->groups_committed() - groups_before;
    ASSERT_EQ(commits, 50);
    if (coalesce) {
      EXPECT_EQ(after.issued - before.issued, commits) << "one write per commit";
      EXPECT_GE(after.requested - before.requested, 4 * commits) << "SQLite asked for a header and a page per frame";
    } else {
      EXPECT_EQ(after.requested, before.requested);
      EXPECT_EQ(after.issued, before.issued);
    }
    EXPECT_EQ(RawSql(o.path, "SELECT count(*), sum(length(attrs)) FROM items WHERE pk='P'"),
              absl::StrCat(50, 50 * std::string(R"({"v":""})").size() + 50 * 6000));
  }
}

// Another connection, through SQLite's own VFS, reads each commit as soon as the store reports it:
// the frames are in the file before the commit is published in the WAL index.
TEST(SqliteStoreTest, ACommitIsInTheFileBeforeAnotherConnectionCanSeeIt) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  auto store = OpenSqlite(path, clock);
  ASSERT_NE(store, nullptr);
  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &reader, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* get = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(reader, "SELECT attrs FROM items WHERE pk='P' AND sk=?1", -1, &get, nullptr), SQLITE_OK);
  for (int i = 0; i < 200; ++i) {
    const std::string sk = "k" + std::to_string(i);
    const std::string value(100 + 37 * i, static_cast<char>('a' + i % 26));
    ASSERT_TRUE(store->Put({"P", sk}, {{"v", value}}, Condition::Always())->applied);
    sqlite3_bind_text(get, 1, sk.c_str(), -1, SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(get), SQLITE_ROW) << sk << ": " << sqlite3_errmsg(reader);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(get, 0))),
              nlohmann::json({{"v", value}}).dump());
    sqlite3_reset(get);
  }
  sqlite3_finalize(get);
  sqlite3_close(reader);
  EXPECT_TRUE(store->CheckIntegrity().ok());
}

// A commit larger than one write of SQLite's unix VFS carries (128 KB), and one larger than the page
// cache (the pager then writes frames before the commit and reads them back) or the buffer (4 MB).
TEST(SqliteStoreTest, LargeCommitsReachTheFileWholeAndReadBack) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("store.db");
  auto store = OpenSqlite(path, clock);
  ASSERT_NE(store, nullptr);
  int64_t expected_bytes = 0;
  for (const int items : {8, 60}) {  // 8 x 100 KB: 800 KB; 60 x 100 KB: 6 MB, past the cache and buffer
    std::vector<WriteRequest> batch;
    for (int i = 0; i < items; ++i) {
      batch.push_back(WriteRequest::Put({"L" + std::to_string(items), "k" + std::to_string(i)},
                                        {{"v", std::string(100'000, static_cast<char>('a' + i % 26))}},
                                        Condition::Always()));
    }
    const auto before = SqliteItemStore::wal_writes();
    for (const auto& r : store->WriteBatch(batch)) ASSERT_TRUE(r.ok() && r->applied) << r.status();
    EXPECT_GT(SqliteItemStore::wal_writes().issued - before.issued, items * 100'000 / (128 * 1024))
        << "no write longer than the unix VFS carries";
    expected_bytes += int64_t{items} * (100'000 + 8);
  }
  EXPECT_EQ(RawSql(path, "SELECT count(*), sum(length(attrs)) FROM items WHERE pk LIKE 'L%'"),
            absl::StrCat(68, expected_bytes));
  EXPECT_EQ(RawSql(path, "PRAGMA integrity_check"), "ok");
  auto one = store->Get({"L60", "k59"});
  ASSERT_TRUE(one.ok() && one->has_value());
  EXPECT_EQ(GetString(**one, "v"), std::string(100'000, static_cast<char>('a' + 59 % 26)));
}

// Raw connections through the coalescing VFS, for what the store's own statements cannot provoke:
// a transaction that spills pages into the WAL before it ends (its cache is 8 pages here).
sqlite3* OpenRaw(const std::string& path, const char* vfs) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=8;", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  return db;
}
std::string Exec(sqlite3* db, const std::string& sql) {
  std::string out;
  char* error = nullptr;
  sqlite3_exec(
      db, sql.c_str(),
      [](void* o, int n, char** values, char**) {
        for (int i = 0; i < n; ++i)
          *static_cast<std::string*>(o) += (i ? "|" : "") + std::string(values[i] ? values[i] : "NULL");
        return 0;
      },
      &out, &error);
  if (error != nullptr) {
    out = std::string("error: ") + error;
    sqlite3_free(error);
  }
  return out;
}
// 100 rows of 3,000 characters, each a repeated digit of its key: about 100 pages.
constexpr char kHundredRows[] =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) "
    "INSERT OR REPLACE INTO t SELECT x, replace(hex(zeroblob(1500)), '0', CAST((x + %d) %% 10 AS TEXT)) FROM c;";
std::string HundredRows(int shift) {
  char sql[512];
  std::snprintf(sql, sizeof sql, kHundredRows, shift);
  return sql;
}
// Rows whose value is not what HundredRows(shift) wrote.
std::string WrongRows(int shift) {
  return absl::StrCat("SELECT count(*) FROM t WHERE v != replace(hex(zeroblob(1500)), '0', CAST((k + ", shift,
                      ") % 10 AS TEXT))");
}

// A transaction that spilled frames into the WAL and was rolled back leaves them held by the VFS;
// the next writer (here another connection, through SQLite's own VFS) writes its commit at the same
// offsets. The held frames must never reach the file after that. `before` runs on the connection
// through the VFS first, and must answer `before_answers`.
void ExpectRolledBackFramesNeverOverwriteAnotherWritersCommit(const std::string& before,
                                                              const std::string& before_answers) {
  TempDir dir;
  const std::string path = dir.file("raw.db");
  const char* vfs = SqliteItemStore::coalescing_vfs_name();
  ASSERT_NE(vfs, nullptr);
  sqlite3* a = OpenRaw(path, vfs);
  ASSERT_EQ(Exec(a, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)"), "");
  // An empty WAL: the rollback then reloads its pages from the database file, not the WAL (a read
  // of the WAL would have written what the VFS held, at a harmless moment).
  ASSERT_EQ(Exec(a, "PRAGMA wal_checkpoint(TRUNCATE)"), "0|0|0");
  ASSERT_EQ(Exec(a, before), before_answers);
  ASSERT_EQ(Exec(a, "BEGIN IMMEDIATE; " + HundredRows(1) + " ROLLBACK;"), "");
  sqlite3* b = OpenRaw(path, nullptr);
  ASSERT_EQ(Exec(b, "BEGIN IMMEDIATE; DELETE FROM t; " + HundredRows(2) + " COMMIT;"), "");
  // a reads b's commit from the WAL: a read is where a VFS holding writes would write them first.
  EXPECT_EQ(Exec(a, "SELECT count(*), sum(length(v)) FROM t"), "100|300000");
  EXPECT_EQ(Exec(a, WrongRows(2)), "0");
  sqlite3_close(a);
  sqlite3_close(b);
  sqlite3* c = OpenRaw(path, nullptr);
  EXPECT_EQ(Exec(c, "PRAGMA integrity_check"), "ok");
  EXPECT_EQ(Exec(c, WrongRows(2)), "0");
  sqlite3_close(c);
}

TEST(SqliteStoreTest, ARolledBackTransactionsHeldFramesNeverOverwriteAnotherWritersCommit) {
  ExpectRolledBackFramesNeverOverwriteAnotherWritersCommit("", "");
}

// The same after the connection used locking_mode = EXCLUSIVE, where SQLite takes and releases no
// WAL write lock (so the VFS cannot see a write transaction end) and keeps the WAL mode's state when
// switched back to NORMAL: nothing is held while it holds the database file exclusively.
TEST(SqliteStoreTest, AfterExclusiveLockingModeHeldFramesStillNeverOverwriteAnotherWritersCommit) {
  ExpectRolledBackFramesNeverOverwriteAnotherWritersCommit(
      "PRAGMA locking_mode=EXCLUSIVE; INSERT INTO t VALUES (1000, 'x'); PRAGMA locking_mode=NORMAL;",
      "exclusivenormal");
}

// A transaction that writes a page again after spilling it makes SQLite rewrite the frame headers of
// the transaction after its commit frame (new checksums). With `synchronous = NORMAL` nothing syncs
// after that, so the rewritten headers must be in the file when COMMIT returns: a copy of the files
// taken then (as a crash would leave them) recovers the commit.
TEST(SqliteStoreTest, ACommitsRewrittenChecksumsAreInTheFileWhenItReturns) {
  TempDir dir;
  const std::string path = dir.file("raw.db");
  const char* vfs = SqliteItemStore::coalescing_vfs_name();
  ASSERT_NE(vfs, nullptr);
  sqlite3* a = OpenRaw(path, vfs);
  ASSERT_EQ(Exec(a, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT); " + HundredRows(1)), "");
  ASSERT_EQ(Exec(a, "BEGIN IMMEDIATE; " + HundredRows(2) + " UPDATE t SET v = replace(v, '3', '4') WHERE k = 1; " +
                        "UPDATE t SET v = replace(v, '4', '3') WHERE k = 1; COMMIT;"),
            "");
  // The files as they are now, without the WAL index: opening the copy recovers from the WAL alone,
  // checking every frame's checksum.
  std::filesystem::copy_file(path, dir.file("copy.db"));
  std::filesystem::copy_file(path + "-wal", dir.file("copy.db-wal"));
  sqlite3* copy = OpenRaw(dir.file("copy.db"), nullptr);
  EXPECT_EQ(Exec(copy, "SELECT count(*) FROM t"), "100");
  EXPECT_EQ(Exec(copy, WrongRows(2)), "0") << "the commit was lost on recovery";
  sqlite3_close(copy);
  sqlite3_close(a);
}

// ItemToJsonText writes the text itself (no JSON tree per write); it must be exactly what nlohmann
// writes for the same item, escapes, UTF-8 and invalid bytes included.
TEST(ItemJsonTest, TheTextIsNlohmannsDumpByteForByte) {
  const Item item{
      {"plain", "abc"},
      {"quote\"d", "a\"b\\c/d"},
      {"control", std::string("tab\there\nnul\0x", 14)},
      {"utf8", "caf\xc3\xa9 \xe2\x82\xac"},
      {"broken",
       "bad\xff\xfe"
       "bytes"},
      {"del", "x\x7fy"},
      {"ascii",
       [] {
         std::string all;
         for (int c = 0; c < 0x80; ++c) all += static_cast<char>(c);
         return all;
       }()},
      {"escapes at the ends", "\"middle\\"},
      {"empty", ""},
      {"n", int64_t{-9223372036854775807 - 1}},
      {"big", int64_t{1'800'000'000'123}},
      {"d", 0.1},
      {"whole", 2.0},
      {"t", true},
      {"f", false},
      {"holders", AttributeMap{{"0190-a", int64_t{5}}, {"0190-b", AttributeMap{}}, {"z", AttributeMap{{"k", "v"}}}}},
      {"none", AttributeMap{}}};
  const std::string expected = ItemToJson(item).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  EXPECT_EQ(ItemToJsonText(item), expected);
  EXPECT_EQ(ItemToJsonText({}), "{}");
  auto back = ItemFromJsonText(ItemToJsonText(item));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back).at("holders"), item.at("holders"));
}

TEST(ItemJsonTest, AJsonStringIsWrittenAsNlohmannDumpsIt) {
  std::string every_byte;
  for (int c = 0; c < 256; ++c) every_byte += static_cast<char>(c);
  for (const std::string& s : {std::string(), std::string("tenant:a"), std::string("a\"b\\c\n\x01\x1f\x7f"),
                               std::string("caf\xc3\xa9"), std::string("bad\xff"), every_byte}) {
    std::string out = "prefix";
    AppendJsonString(out, s);
    EXPECT_EQ(out, "prefix" + nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)) << s;
  }
}

// Strings are scanned sixteen bytes at a time where the CPU allows: a byte to escape (or one above
// 0x7f) at every place in and across those blocks, alone, next to another and at a string's end.
TEST(ItemJsonTest, EveryByteToEscapeIsFoundWhereverItStands) {
  const auto dump = [](const std::string& s) {
    return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  int checked = 0;
  for (const std::string& special :
       std::vector<std::string>{"\"", "\\", "\n", std::string(1, '\0'), "\x1f", "\x7f", "\xc3\xa9", "\xff"}) {
    for (size_t length = 0; length <= 40; ++length) {
      for (size_t at = 0; at <= length; ++at) {
        std::string s(length, 'a');
        s.insert(at, special);
        std::string twice = s;
        twice.insert(std::min(at + special.size() + at % 3, twice.size()), special);
        for (const std::string& text : {s, twice}) {
          std::string out = "[";
          AppendJsonString(out, text);
          ASSERT_EQ(out, "[" + dump(text)) << "length " << length << ", at " << at;
          ++checked;
        }
      }
    }
    std::string plain(40, 'b');  // and none at all, at every length
    for (size_t length = 0; length <= plain.size(); ++length) {
      std::string out;
      AppendJsonString(out, plain.substr(0, length));
      ASSERT_EQ(out, dump(plain.substr(0, length)));
    }
  }
  EXPECT_EQ(checked, 8 * 2 * (41 * 42 / 2));
}

// ItemFromJsonText builds the item from the parser's events; it must read what the JSON tree read.
TEST(ItemJsonTest, ReadsWhatTheJsonTreeReads) {
  std::string nested_32 = "1";  // 32 objects, the deepest an item may nest
  for (int i = 0; i < 32; ++i) nested_32 = R"({"a":)" + nested_32 + "}";
  const std::string nested_33 = R"({"a":)" + nested_32 + "}";
  const std::vector<std::string> texts = {R"({"a":{"b":true},"n":-3,"d":0.5,"s":"x\"y\u00e9"})",
                                          R"({"dup":1,"dup":"last"})",
                                          R"({"dup":{"x":1},"dup":{"y":2}})",
                                          R"({"big":9223372036854775807,"small":-9223372036854775808,"e":1e300})",
                                          R"({"too big":9223372036854775808})",
                                          R"({"a":null})",
                                          R"({"a":[1]})",
                                          R"({"a":{"b":[]}})",
                                          R"([{"a":1}])",
                                          R"("text")",
                                          R"(1)",
                                          R"({} {})",
                                          R"({"a":1)",
                                          "",
                                          nested_32,
                                          nested_33};
  for (const std::string& text : texts) {
    const absl::StatusOr<Item> events = ItemFromJsonText(text);
    const nlohmann::json tree = nlohmann::json::parse(text, nullptr, false);
    const absl::StatusOr<Item> from_tree =
        tree.is_discarded() ? absl::StatusOr<Item>(absl::DataLossError("not JSON")) : ItemFromJson(tree);
    EXPECT_EQ(events.ok(), from_tree.ok()) << text << ": " << events.status() << " / " << from_tree.status();
    if (events.ok() && from_tree.ok()) {
      EXPECT_EQ(*events, *from_tree) << text;
    }
    if (!events.ok()) {
      EXPECT_EQ(events.status().code(), absl::StatusCode::kDataLoss) << text;
    }
  }
  EXPECT_TRUE(ItemFromJsonText(nested_32).ok());
  EXPECT_NE(ItemFromJsonText(nested_33).status().message().find("deeper than 32"), std::string_view::npos);
  EXPECT_NE(ItemFromJsonText(R"({"a":{"b":[]}})").status().message().find("'b'"), std::string_view::npos);
  EXPECT_EQ(GetString(*ItemFromJsonText(R"({"dup":1,"dup":"last"})"), "dup"), "last");
}

TEST(ItemJsonTest, RejectsWhatIsNotAnItem) {
  EXPECT_FALSE(ItemFromJsonText("[]").ok());
  EXPECT_FALSE(ItemFromJsonText(R"({"a":null})").ok());
  EXPECT_FALSE(ItemFromJsonText(R"({"a":[1]})").ok());
  EXPECT_FALSE(ItemFromJsonText(R"({"a":18446744073709551615})").ok());
  EXPECT_FALSE(ItemFromJsonText("{").ok());
  std::string deep;
  for (int i = 0; i < 40; ++i) deep += R"({"a":)";
  deep += "1";
  for (int i = 0; i < 40; ++i) deep += "}";
  EXPECT_EQ(ItemFromJsonText(deep).status().code(), absl::StatusCode::kDataLoss);
  auto ok = ItemFromJsonText(R"({"a":{"b":true},"n":-3,"d":0.5})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(GetInt(*ok, "n"), -3);
}

}  // namespace
}  // namespace toolgate::store
