// QueueService (design §15, §17.4) on every store backend: the queue layout, claims as leases,
// take-over after a lease, the per-tenant bound, and exactly one winner among racing claimants.

#include "toolgate/services/queue_service.h"

#include "toolgate/services/callback_outbox.h"
#include "toolgate/services/replay_job_store.h"

#include <atomic>
#include <set>

#include "gtest/gtest.h"
#include "test_support.h"

namespace toolgate {
namespace {

using toolgate::testing::Backend;
using toolgate::testing::RunTogether;
using toolgate::testing::TempDir;

constexpr char kConn[] = "crm";
constexpr int kSkewS = 5;

class QueueServiceTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    store_ = GetParam().open(clock_, dir_);
    ASSERT_NE(store_, nullptr);
    queue_ = std::make_unique<QueueService>(*store_, clock_);
  }

  QueueItem Item(const std::string& tenant, const std::string& id, int64_t ready_delay_ms = 0) {
    QueueItem q;
    q.connector_id = kConn;
    q.tenant_id = tenant;
    q.execution_id = id;
    q.enqueued_at_ms = clock_.now_epoch_ms();
    q.ready_at_ms = q.enqueued_at_ms + ready_delay_ms;
    q.deadline_ms = q.enqueued_at_ms + 3'600'000;
    return q;
  }
  void Enqueue(const QueueItem& q) {
    auto r = queue_->Enqueue(q, 100);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(*r);
  }
  std::optional<QueueItem> Next(const std::string& tenant) {
    auto r = queue_->NextReady(kConn, tenant, kSkewS);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }
  std::optional<QueueClaim> Claim(const QueueItem& seen, const std::string& owner, int64_t lease_ms = 10'000) {
    auto r = queue_->Claim(seen, owner, lease_ms, kSkewS);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }
  bool ApplyAll(const std::vector<store::WriteRequest>& writes) {
    bool all = true;
    for (const auto& r : store_->WriteBatch(writes)) {
      EXPECT_TRUE(r.ok()) << r.status();
      all = all && r.ok() && r->applied;
    }
    return all;
  }
  QueueStats Stats() {
    auto s = queue_->Stats(kConn);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : QueueStats{};
  }

  ManualClock clock_;
  TempDir dir_;
  std::unique_ptr<store::ItemStore> store_;
  std::unique_ptr<QueueService> queue_;
};

TEST_P(QueueServiceTest, OldestReadyItemOfATenantComesFirst) {
  Enqueue(Item("t1", "exec-a"));
  clock_.advance(std::chrono::milliseconds(5));
  Enqueue(Item("t1", "exec-b"));
  Enqueue(Item("t2", "exec-c"));
  auto next = Next("t1");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->execution_id, "exec-a");
  EXPECT_EQ(Next("t2")->execution_id, "exec-c");
  EXPECT_FALSE(Next("t3"));
  auto tenants = queue_->Tenants(kConn);
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  EXPECT_EQ(*tenants, (std::vector<std::string>{"t1", "t2"}));
  const QueueStats s = Stats();
  EXPECT_EQ(s.depth, 3);
  EXPECT_EQ(s.tenants, 2);
  EXPECT_EQ(s.oldest_enqueued_ms, next->enqueued_at_ms);
}

// A dispatcher's workers pass over the items their siblings are claiming: the next oldest instead.
TEST_P(QueueServiceTest, ItemsBeingClaimedByASiblingArePassedOver) {
  Enqueue(Item("t1", "exec-a"));
  clock_.advance(std::chrono::milliseconds(5));
  Enqueue(Item("t1", "exec-b"));
  auto second = queue_->NextReady(kConn, "t1", kSkewS, 200, {"exec-a"});
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->execution_id, "exec-b");
  auto none = queue_->NextReady(kConn, "t1", kSkewS, 200, {"exec-b", "exec-a"});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(Next("t1")->execution_id, "exec-a") << "nothing skipped: the head";
}

TEST_P(QueueServiceTest, AnItemNotReadyYetIsSkippedUntilItsTime) {
  Enqueue(Item("t1", "exec-later", 2000));
  clock_.advance(std::chrono::milliseconds(1));
  Enqueue(Item("t1", "exec-now"));
  EXPECT_EQ(Next("t1")->execution_id, "exec-now");
  clock_.advance(std::chrono::milliseconds(2000));
  EXPECT_EQ(Next("t1")->execution_id, "exec-later");
}

TEST_P(QueueServiceTest, AnItemPastItsDeadlineIsDueWhateverItsReadyAt) {
  QueueItem q = Item("t1", "exec-late", 60'000);
  q.deadline_ms = q.enqueued_at_ms + 1000;
  Enqueue(q);
  EXPECT_FALSE(Next("t1"));
  clock_.advance(std::chrono::milliseconds(1000));
  auto due = Next("t1");
  ASSERT_TRUE(due) << "a call past its deadline must be seen, to end it EXPIRED";
  EXPECT_LE(due->deadline_ms, clock_.now_epoch_ms());
}

TEST_P(QueueServiceTest, AClaimHidesTheItemUntilItsLeaseAndSkewHavePassed) {
  Enqueue(Item("t1", "exec-a"));
  auto seen = Next("t1");
  ASSERT_TRUE(seen);
  auto claim = Claim(*seen, "instance-1", 10'000);
  ASSERT_TRUE(claim);
  EXPECT_EQ(claim->item.attempt, 1);
  EXPECT_FALSE(claim->took_over);
  EXPECT_FALSE(Claim(*seen, "instance-2")) << "the same read cannot be claimed twice";
  EXPECT_FALSE(Next("t1")) << "a live claim is not ready";
  clock_.advance(std::chrono::milliseconds(10'000 + kSkewS * 1000 - 1));
  EXPECT_FALSE(Next("t1")) << "skew not yet allowed for";
  clock_.advance(std::chrono::milliseconds(1));
  auto again = Next("t1");
  ASSERT_TRUE(again) << "an expired claim may be taken over";
  auto takeover = Claim(*again, "instance-2");
  ASSERT_TRUE(takeover);
  EXPECT_TRUE(takeover->took_over);
  EXPECT_EQ(takeover->item.attempt, 2);
  // The first claimant lost it: its completion changes nothing.
  EXPECT_FALSE(ApplyAll(QueueService::CompleteRequests(*claim)));
  EXPECT_EQ(Stats().depth, 1);
  EXPECT_TRUE(ApplyAll(QueueService::CompleteRequests(*takeover)));
  EXPECT_EQ(Stats().depth, 0);
  EXPECT_FALSE(Next("t1"));
  auto tenants = queue_->Tenants(kConn);
  ASSERT_TRUE(tenants.ok());
  EXPECT_TRUE(tenants->empty());
}

TEST_P(QueueServiceTest, RequeuePutsTheItemBackUnclaimedAtItsNewTime) {
  Enqueue(Item("t1", "exec-a"));
  auto claim = Claim(*Next("t1"), "instance-1");
  ASSERT_TRUE(claim);
  auto back = queue_->Requeue(*claim, clock_.now_epoch_ms() + 3000);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back);
  EXPECT_FALSE(Next("t1"));
  clock_.advance(std::chrono::milliseconds(3000));
  auto ready = Next("t1");
  ASSERT_TRUE(ready);
  EXPECT_TRUE(ready->claim_owner.empty());
  EXPECT_EQ(ready->attempt, 1);
  auto twice = queue_->Requeue(*claim, 0);
  ASSERT_TRUE(twice.ok());
  EXPECT_FALSE(*twice) << "a claim is given back once";
}

TEST_P(QueueServiceTest, TheTenantBoundRefusesTheCallBeyondIt) {
  QueueItem a = Item("t1", "exec-a"), b = Item("t1", "exec-b"), c = Item("t2", "exec-c");
  ASSERT_TRUE(*queue_->Enqueue(a, 1));
  auto full = queue_->Enqueue(b, 1);
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(*full);
  EXPECT_TRUE(*queue_->Enqueue(c, 1)) << "another tenant's bound is its own";
  auto gone = queue_->Get(kConn, "t1", b.enqueued_at_ms, "exec-b");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value()) << "a refused call leaves no item";
  EXPECT_EQ(Stats().depth, 2);
}

TEST_P(QueueServiceTest, RemovingAnUnclaimedItemWorksOnceAndNeverUnderALiveClaim) {
  QueueItem a = Item("t1", "exec-a"), b = Item("t1", "exec-b");
  Enqueue(a);
  Enqueue(b);
  const int64_t now = clock_.now_epoch_ms();
  EXPECT_TRUE(ApplyAll(QueueService::RemoveUnclaimedRequests(a, now, kSkewS)));
  EXPECT_FALSE(ApplyAll(QueueService::RemoveUnclaimedRequests(a, now, kSkewS))) << "gone already";
  ASSERT_TRUE(Claim(*Next("t1"), "instance-1"));
  EXPECT_FALSE(ApplyAll(QueueService::RemoveUnclaimedRequests(b, now, kSkewS))) << "claimed: running";
  EXPECT_EQ(Stats().depth, 1);
}

// A tenant's count drifts from its items only by a write applied twice or not at all (no write
// spans two items): a count-down sent again after an unknown first outcome, or an item gone by its
// TTL. The tests write the drift themselves, as a count moved by hand or a bare erase.
void AddToCount(store::ItemStore& store, const std::string& tenant, int64_t delta) {
  auto r = store.Update(QueueService::TenantKey(kConn, tenant), {store::UpdateOp::Add(store::Attr("count"), delta)},
                        store::Condition::Always(), store::ReturnValues::kNone);
  ASSERT_TRUE(r.ok() && r->applied) << r.status();
}

int64_t CountOf(store::ItemStore& store, const std::string& tenant) {
  auto item = store.Get(QueueService::TenantKey(kConn, tenant));
  EXPECT_TRUE(item.ok()) << item.status();
  if (!item.ok() || !item->has_value()) return -1000;
  return store::GetInt(**item, "count").value_or(-1000);
}

// Counted down twice (or more), a tenant's count reaches zero with calls still queued. Dropped from
// the tenant list then, they would never be dispatched: they stay listed, and the count is set to
// them. An entry whose queue is truly empty is still dropped.
TEST_P(QueueServiceTest, ACountCountedDownTwiceLeavesNoCallStranded) {
  QueueItem a = Item("t1", "exec-a"), b = Item("t1", "exec-b"), c = Item("t2", "exec-c");
  Enqueue(a);
  Enqueue(b);
  Enqueue(c);
  const int64_t now = clock_.now_epoch_ms();
  ASSERT_TRUE(ApplyAll(QueueService::RemoveUnclaimedRequests(a, now, kSkewS)));
  AddToCount(*store_, "t1", -1);
  AddToCount(*store_, "t1", -1);
  ASSERT_EQ(CountOf(*store_, "t1"), -1) << "the drift this test is about";

  auto tenants = queue_->Tenants(kConn);
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  EXPECT_EQ(*tenants, (std::vector<std::string>{"t1", "t2"})) << "t1 still has exec-b queued";
  EXPECT_EQ(CountOf(*store_, "t1"), 1) << "set to the calls queued";
  EXPECT_EQ(CountOf(*store_, "t2"), 1) << "a count that did not drift is left alone";
  auto next = Next("t1");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->execution_id, "exec-b");

  // Below zero over an empty queue: set to zero, and the entry dropped only at the next look (an
  // enqueue's ADD bringing -1 back to 0 must not lose its entry to this look's erase).
  ASSERT_TRUE(ApplyAll(QueueService::RemoveUnclaimedRequests(b, now, kSkewS)));
  AddToCount(*store_, "t1", -1);
  tenants = queue_->Tenants(kConn);
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  EXPECT_EQ(*tenants, (std::vector<std::string>{"t2"})) << "t1's queue is empty now";
  EXPECT_EQ(CountOf(*store_, "t1"), 0) << "kept, at zero";
  tenants = queue_->Tenants(kConn);
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  EXPECT_EQ(*tenants, (std::vector<std::string>{"t2"}));
  auto entry = store_->Get(QueueService::TenantKey(kConn, "t1"));
  ASSERT_TRUE(entry.ok());
  EXPECT_FALSE(entry->has_value()) << "at zero over an empty queue: dropped";
}

// An item gone without its count-down (its TTL) leaves the count standing over an empty queue. The
// dispatchers' periodic Stats sets it to zero — only once it has stood, unchanged, for
// kCountRepairAfterMs (an enqueue's count can come a moment before its item); a count that moved in
// between starts the wait again, and a read without repair_counts (the admin view) changes nothing.
TEST_P(QueueServiceTest, ACountStandingOverAnEmptyQueueIsSetRightOnceItHasStood) {
  QueueItem a = Item("t1", "exec-a"), b = Item("t2", "exec-b");
  Enqueue(a);
  Enqueue(b);
  ASSERT_TRUE(store_->Erase(QueueService::ItemKey(a), store::Condition::Always()).ok());
  auto stats = [&](bool repair) {
    auto s = queue_->Stats(kConn, repair);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->depth : -1;
  };
  constexpr auto kHalf = std::chrono::milliseconds(QueueService::kCountRepairAfterMs / 2 + 1);

  EXPECT_EQ(stats(true), 2) << "the depth counts what the counts say";
  EXPECT_EQ(CountOf(*store_, "t1"), 1) << "first seen over an empty queue: left";
  clock_.advance(kHalf);
  EXPECT_EQ(stats(true), 2);
  EXPECT_EQ(CountOf(*store_, "t1"), 1) << "stood only half the wait";
  clock_.advance(kHalf);
  EXPECT_EQ(stats(false), 2) << "the admin view repairs nothing";
  EXPECT_EQ(CountOf(*store_, "t1"), 1);
  EXPECT_EQ(stats(true), 2) << "stood unchanged for kCountRepairAfterMs: repaired by this read";
  EXPECT_EQ(CountOf(*store_, "t1"), 0);
  EXPECT_EQ(CountOf(*store_, "t2"), 1) << "a tenant with its call queued keeps its count";
  EXPECT_EQ(stats(true), 1);
  auto tenants = queue_->Tenants(kConn);
  ASSERT_TRUE(tenants.ok());
  EXPECT_EQ(*tenants, (std::vector<std::string>{"t2"}));

  // A count that moves while its queue stays empty waits again from its new value.
  Enqueue(a);
  ASSERT_TRUE(store_->Erase(QueueService::ItemKey(a), store::Condition::Always()).ok());
  EXPECT_EQ(stats(true), 2);
  clock_.advance(kHalf);
  AddToCount(*store_, "t1", 1);
  EXPECT_EQ(stats(true), 3) << "a new count: seen afresh";
  clock_.advance(kHalf);
  EXPECT_EQ(stats(true), 3) << "it has stood only half the wait";
  EXPECT_EQ(CountOf(*store_, "t1"), 2);
  clock_.advance(kHalf);
  stats(true);
  EXPECT_EQ(CountOf(*store_, "t1"), 0);

  // A queue that fills again under the same count starts the wait afresh once it is empty again.
  QueueItem c = Item("t3", "exec-c");
  Enqueue(c);
  ASSERT_TRUE(store_->Erase(QueueService::ItemKey(c), store::Condition::Always()).ok());
  stats(true);  // t3: 1 over an empty queue, first seen
  clock_.advance(kHalf);
  ASSERT_TRUE(store_
                  ->Put(QueueService::ItemKey(c),
                        {{"connector_id", kConn},
                         {"tenant_id", "t3"},
                         {"execution_id", "exec-c"},
                         {"enqueued_at_ms", c.enqueued_at_ms}},
                        store::Condition::Always())
                  .ok());
  stats(true);  // not empty: forgotten
  ASSERT_TRUE(store_->Erase(QueueService::ItemKey(c), store::Condition::Always()).ok());
  clock_.advance(kHalf);
  stats(true);  // empty again: first seen again
  EXPECT_EQ(CountOf(*store_, "t3"), 1) << "the wait counted across a refill";
  clock_.advance(kHalf);
  stats(true);
  EXPECT_EQ(CountOf(*store_, "t3"), 1) << "stood only half the wait since the refill";
  clock_.advance(kHalf);
  stats(true);
  EXPECT_EQ(CountOf(*store_, "t3"), 0);
}

// An expired item a store still holds (DynamoDB keeps one until its sweep, and drops it from a page
// only after the page's Limit) is not an empty queue: the live call behind it keeps the count.
TEST_P(QueueServiceTest, AnExpiredItemStillStoredAheadOfALiveOneIsNotAnEmptyQueue) {
  QueueItem gone = Item("t1", "exec-gone");
  ASSERT_TRUE(*queue_->Enqueue(gone, 100, clock_.now_epoch_ms() / 1000 - 1));
  clock_.advance(std::chrono::milliseconds(5));
  Enqueue(Item("t1", "exec-live"));
  for (int i = 0; i < 4; ++i) {
    auto s = queue_->Stats(kConn, /*repair_counts=*/true);
    ASSERT_TRUE(s.ok()) << s.status();
    clock_.advance(std::chrono::milliseconds(QueueService::kCountRepairAfterMs));
  }
  EXPECT_EQ(CountOf(*store_, "t1"), 2) << "a count over a live call was taken for one over an empty queue";
  EXPECT_EQ(Next("t1")->execution_id, "exec-live");
}

TEST_P(QueueServiceTest, OfManyRacingClaimantsExactlyOneWinsEachItem) {
  for (int i = 0; i < 5; ++i) Enqueue(Item("t1", "exec-" + std::to_string(i)));
  std::atomic<int> wins{0};
  std::mutex mu;
  std::set<std::string> won;
  RunTogether(8, [&](int worker) {
    for (int round = 0; round < 10; ++round) {
      auto seen = queue_->NextReady(kConn, "t1", kSkewS);
      if (!seen.ok() || !seen->has_value()) continue;
      auto claim = queue_->Claim(**seen, "w" + std::to_string(worker), 60'000, kSkewS);
      if (claim.ok() && claim->has_value()) {
        ++wins;
        std::lock_guard<std::mutex> l(mu);
        EXPECT_TRUE(won.insert((*claim)->item.execution_id).second) << "claimed twice: " << (*claim)->item.execution_id;
      }
    }
  });
  EXPECT_EQ(wins.load(), 5);
  EXPECT_EQ(won.size(), 5u);
}

// A queue item with a callback owes a delivery once it ends (completed, or removed unrun), in the
// same batch; a lost claim owes none. Deliveries are claimed as leases: one winner per read, taken
// over after the lease, rescheduled by their claimant only.
TEST_P(QueueServiceTest, AnEndedItemWithACallbackOwesOneDeliveryClaimedAsALease) {
  CallbackOutbox outbox(*store_, clock_, kSkewS);
  QueueItem q = Item("t1", "e-cb");
  q.callback_url = "http://127.0.0.1:1/hook";
  Enqueue(q);
  QueueItem other = Item("t1", "e-none");
  Enqueue(other);
  auto seen = Next("t1");
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->callback_url, q.callback_url);
  auto claim = Claim(*seen, "i1");
  ASSERT_TRUE(claim);
  EXPECT_TRUE(outbox.Due(10)->empty()) << "nothing is owed before the call ends";
  QueueClaim stale = *claim;
  stale.item.attempt += 1;  // someone else's claim
  ApplyAll(QueueService::CompleteRequests(stale));
  EXPECT_TRUE(outbox.Due(10)->empty()) << "a lost claim's end owes nothing";
  EXPECT_TRUE(ApplyAll(QueueService::CompleteRequests(*claim)));
  auto due = outbox.Due(10);
  ASSERT_TRUE(due.ok()) << due.status();
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].execution_id, "e-cb");
  EXPECT_EQ((*due)[0].delivery_id(), "dlv_e-cb");
  EXPECT_EQ((*due)[0].url, q.callback_url);
  // Removing the other (no callback) owes nothing more.
  ApplyAll(QueueService::RemoveUnclaimedRequests(other, clock_.now_epoch_ms(), kSkewS));
  EXPECT_EQ(*outbox.Pending(), 1);

  auto first = outbox.Claim((*due)[0], "i1", 5'000);
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->attempts, 1);
  EXPECT_GT((*first)->first_attempt_ms, 0);
  auto second = outbox.Claim((*due)[0], "i2", 5'000);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->has_value()) << "the same read cannot be claimed twice";
  EXPECT_TRUE(outbox.Due(10)->empty()) << "claimed: not due";
  clock_.advance(std::chrono::milliseconds(5'001));
  EXPECT_TRUE(outbox.Due(10)->empty()) << "a host ahead by the skew must not take a live claim";
  auto early = outbox.Claim(**first, "i2", 5'000);  // what it read when it was claimed
  ASSERT_TRUE(early.ok());
  EXPECT_FALSE(early->has_value()) << "nor take it over with a read of the claim";
  clock_.advance(std::chrono::seconds(kSkewS));
  auto expired = outbox.Due(10);
  ASSERT_EQ(expired->size(), 1u) << "its lease and the skew ran out: claimable again";
  auto takeover = outbox.Claim((*expired)[0], "i2", 5'000);
  ASSERT_TRUE(takeover.ok() && takeover->has_value());
  EXPECT_EQ((*takeover)->first_attempt_ms, (*first)->first_attempt_ms) << "the retry window counts from the first";
  EXPECT_FALSE(*outbox.Retry(**first, clock_.now_epoch_ms(), "late")) << "a lost claim cannot reschedule";
  EXPECT_TRUE(*outbox.Retry(**takeover, clock_.now_epoch_ms() + 1'000, "HTTP 503"));
  EXPECT_TRUE(outbox.Due(10)->empty()) << "not due before its backoff";
  clock_.advance(std::chrono::milliseconds(1'000));
  auto again = outbox.Due(10);
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].last_error, "HTTP 503");
  auto last = outbox.Claim((*again)[0], "i1", 5'000);
  ASSERT_TRUE(last.ok() && last->has_value());
  const store::WriteRequest done = CallbackOutbox::DoneRequest(**last);
  auto erased = store_->Erase(done.key, done.condition);
  ASSERT_TRUE(erased.ok() && erased->applied);
  EXPECT_EQ(*outbox.Pending(), 0);
}

// A tenant whose receiver fails keeps many deliveries waiting out their backoff at the head of the
// partition (the oldest). The scan goes on where the last one stopped, so a later tenant's delivery
// is found within ceil(pending / scan_limit) scans, not hidden until the older ones give up; and a
// tenant the caller does not want now (its share in flight) is passed over without being returned.
TEST_P(QueueServiceTest, DeliveriesBehindAnotherTenantsBackoffAreFoundWithinAFewScans) {
  CallbackOutbox outbox(*store_, clock_, kSkewS);
  const int64_t later_ms = clock_.now_epoch_ms() + 3'600'000;
  std::vector<store::WriteRequest> writes;
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "a-%04d", i);
    store::WriteRequest w = CallbackOutbox::AddRequest(id, "alice", kConn, "http://127.0.0.1:1/x", 0);
    w.item["due_ms"] = later_ms;  // in its backoff
    writes.push_back(std::move(w));
  }
  writes.push_back(CallbackOutbox::AddRequest("b-0000", "bob", kConn, "http://127.0.0.1:2/y", 0));
  ASSERT_TRUE(ApplyAll(writes));

  constexpr int kScan = 10;
  auto all = [](const CallbackDelivery&) { return true; };
  std::vector<std::string> found;
  int scans = 0;
  for (; scans < 3 && found.empty(); ++scans) {
    auto due = outbox.Due(32, all, kScan);
    ASSERT_TRUE(due.ok()) << due.status();
    for (const auto& d : *due) found.push_back(d.execution_id);
  }
  EXPECT_EQ(found, std::vector<std::string>{"b-0000"}) << "after " << scans << " scans of " << kScan;
  // The scan wraps: the same delivery is found again within a cycle.
  found.clear();
  for (int i = 0; i < 3 && found.empty(); ++i) {
    const auto due = outbox.Due(32, all, kScan);
    ASSERT_TRUE(due.ok()) << due.status();
    for (const auto& d : *due) found.push_back(d.execution_id);
  }
  EXPECT_EQ(found, std::vector<std::string>{"b-0000"}) << "not found again after wrapping";
  // Passed over when not wanted, found when wanted again.
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(outbox
                    .Due(
                        32, [](const CallbackDelivery& d) { return d.tenant_id != "bob"; }, kScan)
                    ->empty());
  }
  clock_.advance(std::chrono::hours(1));  // alice's come due
  std::set<std::string> tenants;
  for (int i = 0; i < 3; ++i) {
    const auto due = outbox.Due(32, all, kScan);
    ASSERT_TRUE(due.ok()) << due.status();
    for (const auto& d : *due) tenants.insert(d.tenant_id);
  }
  EXPECT_EQ(tenants, (std::set<std::string>{"alice", "bob"}));
}

// A bulk replay job's claim, like every claim no one connector owns, is taken over only once its
// lease and the fleet's clock skew have passed on the taker's clock: a host running that far ahead
// never takes a live holder's job.
TEST_P(QueueServiceTest, ABulkReplayJobsClaimIsTakenOverOnlyOnceItsLeaseAndTheSkewHavePassed) {
  ReplayJobStore jobs(*store_, clock_, kSkewS);
  ReplayJob job;
  job.job_id = "job-1";
  job.planned = 1;
  ASSERT_TRUE(jobs.Create(job, {ReplayJobEntry{"t1", "e-1"}}).ok());
  auto a = jobs.Claim("job-1", "instance-a", 2'000);
  ASSERT_TRUE(a.ok() && a->has_value()) << a.status();
  auto early = jobs.Claim("job-1", "instance-b", 2'000);
  ASSERT_TRUE(early.ok());
  EXPECT_FALSE(early->has_value()) << "held";
  clock_.advance(std::chrono::milliseconds(2'001));
  auto within_skew = jobs.Claim("job-1", "instance-b", 2'000);
  ASSERT_TRUE(within_skew.ok());
  EXPECT_FALSE(within_skew->has_value()) << "lapsed by this clock, but live by a holder's up to the skew behind";
  auto renewed = jobs.Claim("job-1", "instance-a", 2'000);
  ASSERT_TRUE(renewed.ok() && renewed->has_value()) << "its holder renews it";
  clock_.advance(std::chrono::milliseconds(2'001) + std::chrono::seconds(kSkewS));
  auto taken = jobs.Claim("job-1", "instance-b", 2'000);
  ASSERT_TRUE(taken.ok() && taken->has_value());
  EXPECT_EQ((*taken)->owner, "instance-b");
}

INSTANTIATE_TEST_SUITE_P(Backends, QueueServiceTest, ::testing::ValuesIn(toolgate::testing::AllBackends()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace toolgate
