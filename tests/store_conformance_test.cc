// One conformance suite for every ItemStore backend (design section 3): the same semantics on memory,
// SQLite and (later) DynamoDB.

#include <algorithm>
#include <atomic>

#include "gmock/gmock.h"
#include "test_support.h"
#include "toolgate/store/item_store.h"

namespace toolgate::store {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using toolgate::testing::Backend;
using toolgate::testing::RunTogether;
using toolgate::testing::TempDir;

class StoreConformanceTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    store_ = GetParam().open(clock_, dir_);
    ASSERT_NE(store_, nullptr);
  }

  Item MustGet(const ItemKey& k) {
    auto r = store_->Get(k);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r.ok() && r->has_value()) << "item absent";
    return r.ok() && r->has_value() ? **r : Item{};
  }
  bool PutIf(const ItemKey& k, const Item& item, const Condition& c) {
    auto r = store_->Put(k, item, c);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && r->applied;
  }
  bool Holds(const Condition& c) {
    // Evaluates `c` against the item at kKey through a conditional write of a marker attribute.
    auto r = store_->Update(kKey, {UpdateOp::Add(AttributePath::Top("probe_count"), 1)}, c);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && r->applied;
  }

  const ItemKey kKey{"PK#1", "SK#1"};
  ManualClock clock_;
  TempDir dir_;
  std::unique_ptr<ItemStore> store_;
};

TEST_P(StoreConformanceTest, GetOfAbsentItemIsEmpty) {
  auto r = store_->Get(kKey);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->has_value());
}

TEST_P(StoreConformanceTest, PutThenGetRoundTripsEveryValueType) {
  const Item item{{"s", "text with \"quotes\" and ünïcode"},
                  {"i", int64_t{-9007199254740993}},
                  {"d", 2.5},
                  {"whole_double", 3.0},
                  {"b", true},
                  {"m", AttributeMap{{"x", 1}, {"y", AttributeMap{{"z", "deep"}}}}}};
  ASSERT_TRUE(PutIf(kKey, item, Condition::Always()));
  const Item got = MustGet(kKey);
  EXPECT_EQ(got, item);
  EXPECT_TRUE(got.at("i").is_int());
  EXPECT_EQ(got.at("whole_double").as_number(), 3.0);
  if (GetParam().keeps_number_type) {
    EXPECT_TRUE(got.at("whole_double").is_double());
  }
  EXPECT_EQ(GetString(got, "s"), "text with \"quotes\" and ünïcode");
}

TEST_P(StoreConformanceTest, PutIfAbsentAppliesOnceAndKeepsTheFirstItem) {
  EXPECT_TRUE(PutIf(kKey, {{"v", 1}}, Condition::ItemAbsent()));
  EXPECT_FALSE(PutIf(kKey, {{"v", 2}}, Condition::ItemAbsent()));
  EXPECT_EQ(GetInt(MustGet(kKey), "v"), 1);
  EXPECT_TRUE(PutIf(kKey, {{"v", 3}}, Condition::ItemExists()));
  EXPECT_FALSE(PutIf({"PK#1", "other"}, {{"v", 3}}, Condition::ItemExists()));
}

TEST_P(StoreConformanceTest, ComparisonOperatorsOnNumbers) {
  ASSERT_TRUE(PutIf(kKey, {{"n", 10}, {"d", 2.5}}, Condition::Always()));
  const auto n = AttributePath::Top("n");
  EXPECT_TRUE(Holds(Condition::Eq(n, 10)));
  EXPECT_TRUE(Holds(Condition::Eq(n, 10.0)));  // numbers compare by value across int and double
  EXPECT_FALSE(Holds(Condition::Eq(n, 11)));
  EXPECT_TRUE(Holds(Condition::Ne(n, 11)));
  EXPECT_FALSE(Holds(Condition::Ne(n, 10)));
  EXPECT_TRUE(Holds(Condition::Lt(n, 11)));
  EXPECT_FALSE(Holds(Condition::Lt(n, 10)));
  EXPECT_TRUE(Holds(Condition::Le(n, 10)));
  EXPECT_FALSE(Holds(Condition::Le(n, 9)));
  EXPECT_TRUE(Holds(Condition::Gt(n, 9)));
  EXPECT_FALSE(Holds(Condition::Gt(n, 10)));
  EXPECT_TRUE(Holds(Condition::Ge(n, 10)));
  EXPECT_FALSE(Holds(Condition::Ge(n, 11)));
  EXPECT_TRUE(Holds(Condition::Lt(AttributePath::Top("d"), 3)));
  EXPECT_TRUE(Holds(Condition::Gt(AttributePath::Top("d"), 2)));
}

TEST_P(StoreConformanceTest, ComparisonOperatorsOnStringsUseByteOrder) {
  ASSERT_TRUE(PutIf(kKey, {{"s", "b"}}, Condition::Always()));
  const auto s = AttributePath::Top("s");
  EXPECT_TRUE(Holds(Condition::Eq(s, "b")));
  EXPECT_TRUE(Holds(Condition::Lt(s, "c")));
  EXPECT_TRUE(Holds(Condition::Gt(s, "B")));  // 'b' (0x62) > 'B' (0x42)
  EXPECT_FALSE(Holds(Condition::Ge(s, "ba")));
}

TEST_P(StoreConformanceTest, AbsentAttributesAndMismatchedTypesFollowDynamoDb) {
  ASSERT_TRUE(PutIf(kKey, {{"n", 1}, {"s", "1"}}, Condition::Always()));
  const auto missing = AttributePath::Top("missing");
  EXPECT_FALSE(Holds(Condition::Eq(missing, 1)));
  EXPECT_TRUE(Holds(Condition::Ne(missing, 1)));
  EXPECT_FALSE(Holds(Condition::Lt(missing, 1)));
  EXPECT_FALSE(Holds(Condition::Ge(missing, 1)));
  const auto s = AttributePath::Top("s");
  EXPECT_FALSE(Holds(Condition::Eq(s, 1)));  // "1" is not 1
  EXPECT_TRUE(Holds(Condition::Ne(s, 1)));
  EXPECT_FALSE(Holds(Condition::Lt(s, 2)));
  EXPECT_FALSE(Holds(Condition::Gt(s, 0)));
}

TEST_P(StoreConformanceTest, ExistsAndNotExistsOnTopLevelAndNestedPaths) {
  ASSERT_TRUE(PutIf(kKey, {{"holders", AttributeMap{{"a", 5}}}}, Condition::Always()));
  EXPECT_TRUE(Holds(Condition::Exists(AttributePath::Top("holders"))));
  EXPECT_FALSE(Holds(Condition::NotExists(AttributePath::Top("holders"))));
  EXPECT_TRUE(Holds(Condition::Exists(AttributePath::In("holders", "a"))));
  EXPECT_FALSE(Holds(Condition::Exists(AttributePath::In("holders", "b"))));
  EXPECT_TRUE(Holds(Condition::NotExists(AttributePath::In("holders", "b"))));
  EXPECT_TRUE(Holds(Condition::NotExists(AttributePath::In("nope", "a"))));
  EXPECT_TRUE(Holds(Condition::Eq(AttributePath::In("holders", "a"), 5)));
}

TEST_P(StoreConformanceTest, AndOrNotCombine) {
  ASSERT_TRUE(PutIf(kKey, {{"a", 1}, {"b", 2}}, Condition::Always()));
  const auto a = AttributePath::Top("a"), b = AttributePath::Top("b");
  EXPECT_TRUE(Holds(Condition::And({Condition::Eq(a, 1), Condition::Eq(b, 2)})));
  EXPECT_FALSE(Holds(Condition::And({Condition::Eq(a, 1), Condition::Eq(b, 3)})));
  EXPECT_TRUE(Holds(Condition::Or({Condition::Eq(a, 9), Condition::Eq(b, 2)})));
  EXPECT_FALSE(Holds(Condition::Or({Condition::Eq(a, 9), Condition::Eq(b, 9)})));
  EXPECT_TRUE(Holds(Condition::Not(Condition::Eq(a, 9))));
  EXPECT_FALSE(Holds(Condition::Not(Condition::Eq(a, 1))));
}

TEST_P(StoreConformanceTest, ComparesOneAttributeWithAnother) {
  ASSERT_TRUE(PutIf(kKey, {{"count", 3}, {"max", 4}}, Condition::Always()));
  const auto lt = Condition::Compare(Condition::Attr(AttributePath::Top("count")), Condition::Op::kLt,
                                     Condition::Attr(AttributePath::Top("max")));
  EXPECT_TRUE(Holds(lt));
  ASSERT_TRUE(store_->Update(kKey, {UpdateOp::Add(AttributePath::Top("count"), 1)}, Condition::Always()).ok());
  EXPECT_FALSE(Holds(lt));
}

TEST_P(StoreConformanceTest, UpdateSetAddRemoveAndReturnsTheNewItem) {
  auto r = store_->Update(kKey,
                          {UpdateOp::Set(AttributePath::Top("s"), "x"), UpdateOp::Add(AttributePath::Top("n"), 5),
                           UpdateOp::Set(AttributePath::Top("m"), AttributeMap{})},
                          Condition::ItemAbsent());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied);  // an update creates an absent item (upsert)
  EXPECT_EQ(GetInt(r->item, "n"), 5);
  r = store_->Update(kKey,
                     {UpdateOp::Add(AttributePath::Top("n"), -2), UpdateOp::Remove(AttributePath::Top("s")),
                      UpdateOp::Remove(AttributePath::Top("never_there"))},
                     Condition::Exists(AttributePath::Top("s")));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied);
  EXPECT_EQ(GetInt(r->item, "n"), 3);
  EXPECT_FALSE(r->item.contains("s"));
  EXPECT_EQ(MustGet(kKey), r->item);
}

TEST_P(StoreConformanceTest, FailedConditionChangesNothing) {
  ASSERT_TRUE(PutIf(kKey, {{"n", 1}}, Condition::Always()));
  auto r =
      store_->Update(kKey, {UpdateOp::Add(AttributePath::Top("n"), 100)}, Condition::Eq(AttributePath::Top("n"), 2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->applied);
  EXPECT_EQ(GetInt(MustGet(kKey), "n"), 1);
}

TEST_P(StoreConformanceTest, NestedMapSetAndRemove) {
  ASSERT_TRUE(PutIf(kKey, {{"holders", AttributeMap{}}}, Condition::Always()));
  auto r = store_->Update(kKey,
                          {UpdateOp::Set(AttributePath::In("holders", "lease-1"), int64_t{1000}),
                           UpdateOp::Set(AttributePath::In("holders", "lease-2"), int64_t{2000})},
                          Condition::NotExists(AttributePath::In("holders", "lease-1")));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied);
  EXPECT_EQ(GetMap(r->item, "holders")->size(), 2u);
  r = store_->Update(kKey, {UpdateOp::Remove(AttributePath::In("holders", "lease-1"))},
                     Condition::Exists(AttributePath::In("holders", "lease-1")));
  ASSERT_TRUE(r.ok() && r->applied);
  const Item got = MustGet(kKey);
  ASSERT_NE(GetMap(got, "holders"), nullptr);
  EXPECT_THAT(*GetMap(got, "holders"), ElementsAre(Pair("lease-2", AttributeValue(int64_t{2000}))));
  // A second removal of the same holder fails its condition: no double release.
  r = store_->Update(kKey, {UpdateOp::Remove(AttributePath::In("holders", "lease-1"))},
                     Condition::Exists(AttributePath::In("holders", "lease-1")));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->applied);
}

TEST_P(StoreConformanceTest, MalformedUpdatesAreInvalidArgumentNotStoreErrors) {
  ASSERT_TRUE(PutIf(kKey, {{"s", "text"}}, Condition::Always()));
  auto r = store_->Update(kKey, {UpdateOp::Add(AttributePath::Top("s"), 1)}, Condition::Always());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsStoreError(r.status()));
  r = store_->Update(kKey, {UpdateOp::Set(AttributePath::In("no_such_map", "k"), 1)}, Condition::Always());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = store_->Update(kKey, {UpdateOp::Set(AttributePath::In("s", "k"), 1)}, Condition::Always());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Get({"", "x"}).status().code(), absl::StatusCode::kInvalidArgument);
  // The failed update left the item alone.
  EXPECT_EQ(GetString(MustGet(kKey), "s"), "text");
}

TEST_P(StoreConformanceTest, EraseIsConditional) {
  ASSERT_TRUE(PutIf(kKey, {{"v", 1}}, Condition::Always()));
  auto r = store_->Erase(kKey, Condition::Eq(AttributePath::Top("v"), 2));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->applied);
  r = store_->Erase(kKey, Condition::Eq(AttributePath::Top("v"), 1));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->applied);
  EXPECT_FALSE(store_->Get(kKey)->has_value());
}

TEST_P(StoreConformanceTest, QueryReturnsOnePartitionInSortKeyOrderWithPaging) {
  for (int i : {5, 1, 3, 2, 4})
    ASSERT_TRUE(PutIf({"P", "EVENT#" + std::to_string(i)}, {{"i", i}}, Condition::Always()));
  ASSERT_TRUE(PutIf({"P", "OTHER#1"}, {{"i", 99}}, Condition::Always()));
  ASSERT_TRUE(PutIf({"Q", "EVENT#9"}, {{"i", 9}}, Condition::Always()));

  QueryRequest q{"P", "EVENT#", 2, std::nullopt, false};
  std::vector<std::string> seen;
  for (int page = 0; page < 10; ++page) {
    auto r = store_->Query(q);
    ASSERT_TRUE(r.ok()) << r.status();
    for (auto& [sk, item] : r->items) seen.push_back(sk);
    if (!r->last_sk) break;
    q.after = r->last_sk;
  }
  EXPECT_THAT(seen, ElementsAre("EVENT#1", "EVENT#2", "EVENT#3", "EVENT#4", "EVENT#5"));

  q = QueryRequest{"P", "EVENT#", 3, std::nullopt, true};
  auto r = store_->Query(q);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->items.size(), 3u);
  EXPECT_EQ(r->items[0].first, "EVENT#5");
  EXPECT_EQ(r->items[2].first, "EVENT#3");
  ASSERT_TRUE(r->last_sk.has_value());
  q.after = r->last_sk;
  r = store_->Query(q);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->items.size(), 2u);
  EXPECT_EQ(r->items[0].first, "EVENT#2");
  EXPECT_EQ(r->items[1].first, "EVENT#1");
  EXPECT_FALSE(r->last_sk.has_value());

  r = store_->Query({"P", "", 100, std::nullopt, false});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->items.size(), 6u);  // every sk of P, none of Q
  EXPECT_EQ(store_->Query({"P", "", 0, std::nullopt, false}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreConformanceTest, ExpiredItemsReadAsAbsentButConditionsSeeThemUntilSwept) {
  const int64_t now = clock_.now_epoch_sec();
  ASSERT_TRUE(PutIf(kKey, {{"v", 1}, {"ttl", now + 10}}, Condition::Always()));
  ASSERT_TRUE(PutIf({"PK#1", "SK#2"}, {{"v", 2}}, Condition::Always()));
  EXPECT_TRUE(store_->Get(kKey)->has_value());
  clock_.advance(std::chrono::seconds(10));
  EXPECT_FALSE(store_->Get(kKey)->has_value());
  auto q = store_->Query({"PK#1", "", 10, std::nullopt, false});
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->items.size(), 1u);
  EXPECT_EQ(q->items[0].first, "SK#2");
  // As on DynamoDB, a condition sees the stored item until it is deleted; writers that mean
  // "absent or expired" say so.
  EXPECT_FALSE(PutIf(kKey, {{"v", 3}}, Condition::ItemAbsent()));
  EXPECT_TRUE(PutIf(kKey, {{"v", 3}}, Condition::ItemAbsentOrExpired(clock_.now_epoch_sec())));
  EXPECT_EQ(GetInt(MustGet(kKey), "v"), 3);  // the new item has no ttl
}

TEST_P(StoreConformanceTest, AddUnder64ConcurrentThreadsIsExact) {
  constexpr int kThreads = 64, kAddsEach = 50;
  std::atomic<int> errors{0};
  RunTogether(kThreads, [&](int) {
    for (int i = 0; i < kAddsEach; ++i) {
      auto r = store_->Update(kKey, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::Always());
      if (!r.ok() || !r->applied) errors.fetch_add(1);
    }
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(GetInt(MustGet(kKey), "n"), kThreads * kAddsEach);
}

TEST_P(StoreConformanceTest, ConcurrentPutIfAbsentHasExactlyOneWinner) {
  constexpr int kThreads = 64;
  std::atomic<int> winners{0}, errors{0};
  RunTogether(kThreads, [&](int i) {
    auto r = store_->Put(kKey, {{"winner", i}}, Condition::ItemAbsent());
    if (!r.ok())
      errors.fetch_add(1);
    else if (r->applied)
      winners.fetch_add(1);
  });
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(winners.load(), 1);
}

// Scan pages come in key order on memory and SQLite but in DynamoDB's hash order: the contract is
// that paging visits every matching item once, so the test compares the set.
TEST_P(StoreConformanceTest, BatchWriteThatRequiresThePreviousIsSkippedWhenItWasNot) {
  // An anchor chained to its event: written only when the event was.
  ASSERT_TRUE(PutIf({"C", "EVENT#1"}, Item{{"v", 1}}, Condition::ItemAbsent()));
  const std::vector<WriteRequest> lost = {
      WriteRequest::Put({"C", "EVENT#1"}, Item{{"v", 2}}, Condition::ItemAbsent()),
      WriteRequest::Put({"C", "HEAD"}, Item{{"last", 1}}, Condition::Always()).AfterPrevious()};
  auto results = store_->WriteBatch(lost);
  ASSERT_EQ(results.size(), 2u);
  ASSERT_TRUE(results[0].ok() && results[1].ok());
  EXPECT_FALSE(results[0]->applied);
  EXPECT_FALSE(results[1]->applied);
  auto head = store_->Get({"C", "HEAD"});
  ASSERT_TRUE(head.ok());
  EXPECT_FALSE(head->has_value()) << "the chained write ran although the write before it was refused";

  const std::vector<WriteRequest> won = {
      WriteRequest::Put({"C", "EVENT#2"}, Item{{"v", 2}}, Condition::ItemAbsent()),
      WriteRequest::Put({"C", "HEAD"}, Item{{"last", 2}}, Condition::Always()).AfterPrevious()};
  results = store_->WriteBatch(won);
  ASSERT_TRUE(results[0].ok() && results[1].ok());
  EXPECT_TRUE(results[0]->applied);
  EXPECT_TRUE(results[1]->applied);
  EXPECT_EQ(GetInt(MustGet({"C", "HEAD"}), "last"), 2);
}

// Two writes chained to the same one further back: each follows that one, not the write just
// before it (a replay's kept result and its intent, both after the record's finish).
TEST_P(StoreConformanceTest, BatchWriteChainedFurtherBackFollowsThatWriteNotTheOneBefore) {
  ASSERT_TRUE(PutIf({"C", "KEPT"}, Item{{"v", 1}}, Condition::ItemAbsent()));
  const std::vector<WriteRequest> batch = {
      WriteRequest::Put({"C", "RECORD"}, Item{{"v", 1}}, Condition::ItemAbsent()),
      WriteRequest::Put({"C", "KEPT"}, Item{{"v", 2}}, Condition::ItemAbsent()).AfterPrevious(),
      WriteRequest::Put({"C", "INTENT"}, Item{{"v", 1}}, Condition::Always()).AfterEarlier(2)};
  auto results = store_->WriteBatch(batch);
  ASSERT_EQ(results.size(), 3u);
  ASSERT_TRUE(results[0].ok() && results[1].ok() && results[2].ok());
  EXPECT_TRUE(results[0]->applied);
  EXPECT_FALSE(results[1]->applied) << "KEPT exists: refused";
  EXPECT_TRUE(results[2]->applied) << "chained to the record, skipped because of the refusal just before it";
  EXPECT_EQ(GetInt(MustGet({"C", "INTENT"}), "v"), 1);

  // The record refused: both chained to it are skipped, whatever the one before says.
  const std::vector<WriteRequest> refused = {
      WriteRequest::Put({"C", "RECORD"}, Item{{"v", 2}}, Condition::ItemAbsent()),
      WriteRequest::Put({"C", "OTHER"}, Item{{"v", 1}}, Condition::Always()),
      WriteRequest::Put({"C", "INTENT"}, Item{{"v", 2}}, Condition::Always()).AfterEarlier(2)};
  results = store_->WriteBatch(refused);
  ASSERT_TRUE(results[0].ok() && results[1].ok() && results[2].ok());
  EXPECT_FALSE(results[0]->applied);
  EXPECT_TRUE(results[1]->applied);
  EXPECT_FALSE(results[2]->applied) << "ran although the write it is chained to was refused";
  EXPECT_EQ(GetInt(MustGet({"C", "INTENT"}), "v"), 1);
}

// A put-if-absent sees every write before it in its batch, whatever way the store decides it
// (SQLite inserts without reading first unless it holds the item decoded from an earlier write).
TEST_P(StoreConformanceTest, PutIfAbsentInABatchSeesTheWritesBeforeIt) {
  const std::vector<WriteRequest> batch = {
      WriteRequest::Put(kKey, Item{{"v", 1}}, Condition::ItemAbsent()),
      WriteRequest::Put(kKey, Item{{"v", 2}}, Condition::ItemAbsent()),
      WriteRequest::Update(kKey, {UpdateOp::Add(AttributePath::Top("n"), 1)}, Condition::ItemExists()),
      WriteRequest::Put(kKey, Item{{"v", 3}}, Condition::ItemAbsent()),
      WriteRequest::Erase(kKey, Condition::ItemExists()),
      WriteRequest::Put(kKey, Item{{"v", 4}}, Condition::ItemAbsent())};
  auto results = store_->WriteBatch(batch);
  ASSERT_EQ(results.size(), batch.size());
  std::vector<bool> applied;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    applied.push_back(r->applied);
  }
  EXPECT_EQ(applied, (std::vector<bool>{true, false, true, false, true, true}));
  const Item last = MustGet(kKey);
  EXPECT_EQ(GetInt(last, "v"), 4);
  EXPECT_FALSE(GetInt(last, "n").has_value()) << "the erase before the last put did not take the update with it";
  // A refused put-if-absent of an item written by an earlier batch leaves it as it was.
  results = store_->WriteBatch({WriteRequest::Put(kKey, Item{{"v", 5}}, Condition::ItemAbsent())});
  ASSERT_TRUE(results[0].ok());
  EXPECT_FALSE(results[0]->applied);
  EXPECT_EQ(GetInt(MustGet(kKey), "v"), 4);
}

TEST_P(StoreConformanceTest, ScanWalksEveryPartitionWithPaging) {
  for (const char* pk : {"TENANT#b", "TENANT#a", "OTHER#x", "TENANT#c"}) {
    for (const char* sk : {"EXEC#2", "EXEC#1", "INTENT#1"})
      ASSERT_TRUE(PutIf({pk, sk}, {{"v", 1}}, Condition::Always()));
  }
  ASSERT_TRUE(PutIf({"TENANT#a", "EXEC#9"}, {{"ttl", clock_.now_epoch_sec()}}, Condition::Always()));  // expired
  ScanRequest req{"TENANT#", "EXEC#", 2, std::nullopt};
  std::vector<std::string> seen;
  for (int page = 0; page < 50; ++page) {
    auto r = store_->Scan(req);
    ASSERT_TRUE(r.ok()) << r.status();
    for (auto& [key, item] : r->items) seen.push_back(key.pk + "/" + key.sk);
    if (!r->last_key) break;
    req.after = r->last_key;
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_THAT(seen, ElementsAre("TENANT#a/EXEC#1", "TENANT#a/EXEC#2", "TENANT#b/EXEC#1", "TENANT#b/EXEC#2",
                                "TENANT#c/EXEC#1", "TENANT#c/EXEC#2"));
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConformanceTest, ::testing::ValuesIn(toolgate::testing::AllBackends()),
                         toolgate::testing::BackendName);

}  // namespace
}  // namespace toolgate::store
