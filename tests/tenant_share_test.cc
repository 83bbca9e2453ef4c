// A connector's per-tenant share of its slots (`max_in_flight_per_tenant`): no tenant holds more
// than its share, the others keep the rest, and an expired or abandoned lease comes back to its
// tenant's share too. On every store backend: the share is part of the acquire's one conditional
// write, which each adapter renders or evaluates itself.

#include <atomic>
#include <limits>

#include "fault_injecting_store.h"
#include "gtest/gtest.h"
#include "sync_point_store.h"
#include "test_support.h"
#include "toolgate/clock.h"
#include "toolgate/services/connector_concurrency_service.h"

namespace toolgate {
namespace {

using testing::Backend;
using testing::TempDir;

constexpr char kConn[] = "crm";

class TenantShareTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    store_ = GetParam().open(clock_, dir_);
    ASSERT_NE(store_, nullptr);
    slots_ = std::make_unique<ConnectorConcurrencyService>(*store_, clock_);
    config_.max_in_flight = 4;
    config_.max_in_flight_per_tenant = 2;
    ASSERT_TRUE(slots_->EnsureConnector(kConn, config_).ok());
  }

  // A slot for `tenant`, or nullopt with why in `refusal_`.
  std::optional<SlotLease> Acquire(const std::string& tenant) {
    refusal_ = SlotRefusal::kConnectorFull;
    auto r = slots_->TryAcquire(kConn, config_, tenant, &refusal_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }
  // How many of `tries` acquires for `tenant` were granted (the slots are kept).
  int Granted(const std::string& tenant, int tries) {
    int granted = 0;
    for (int i = 0; i < tries; ++i) granted += Acquire(tenant) ? 1 : 0;
    return granted;
  }
  ConcurrencySnapshot Snapshot() {
    auto r = slots_->Read(kConn, config_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ConcurrencySnapshot{};
  }
  // The tenant counters the semaphore's items hold, whatever their value.
  int Counters() {
    int n = 0;
    for (int k = 0; k < config_.shards; ++k) {
      auto item = store_->Get(ConnectorConcurrencyService::Key(kConn, k));
      EXPECT_TRUE(item.ok() && item->has_value());
      if (!item.ok() || !item->has_value()) continue;
      for (const auto& [name, value] : **item) n += name.rfind("tenant_in_flight#", 0) == 0 ? 1 : 0;
    }
    return n;
  }

  // An instance of an earlier version reclaims `lease` as expired: its holder goes, its tenant's
  // counter stays. Call it in ASSERT_NO_FATAL_FAILURE.
  void ReclaimAsAnEarlierVersion(const SlotLease& lease) {
    auto r = store_->Update(ConnectorConcurrencyService::Key(kConn, lease.shard),
                            {store::UpdateOp::Remove(store::AttributePath::In("holders", lease.lease_id)),
                             store::UpdateOp::Add(store::Attr("in_flight_count"), -1)},
                            store::Condition::Always());
    ASSERT_TRUE(r.ok() && r->applied);
  }

  ManualClock clock_;
  TempDir dir_;
  std::unique_ptr<store::ItemStore> store_;
  std::unique_ptr<ConnectorConcurrencyService> slots_;
  ConcurrencyConfig config_;
  SlotRefusal refusal_ = SlotRefusal::kConnectorFull;
};

TEST_P(TenantShareTest, ATenantHoldsAtMostItsShareAndTheOthersKeepTheRest) {
  std::vector<SlotLease> a;
  for (int i = 0; i < 2; ++i) {
    auto lease = Acquire("tenant-a");
    ASSERT_TRUE(lease) << "slot " << i;
    a.push_back(*lease);
  }
  EXPECT_FALSE(Acquire("tenant-a")) << "a third slot for a tenant whose share is two";
  EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
  EXPECT_EQ(Snapshot().in_flight, 2) << "a refused acquire took nothing";

  ASSERT_TRUE(Acquire("tenant-b"));
  ASSERT_TRUE(Acquire("tenant-b"));
  EXPECT_FALSE(Acquire("tenant-c"));
  EXPECT_EQ(refusal_, SlotRefusal::kConnectorFull) << "the connector is full, whatever the tenant's share";
  const ConcurrencySnapshot s = Snapshot();
  EXPECT_EQ(s.in_flight, 4);
  EXPECT_EQ(s.tenant_slots.size(), 2u);
  EXPECT_EQ(s.busiest_tenant(), 2);
  EXPECT_EQ(s.tenant_slots.at(ConnectorConcurrencyService::TenantTag("tenant-a")), 2);

  ASSERT_TRUE(*slots_->Release(a[0]));
  EXPECT_FALSE(*slots_->Release(a[0])) << "released once";
  EXPECT_TRUE(Acquire("tenant-c")) << "tenant-a's released slot is free for another tenant";
}

TEST_P(TenantShareTest, AReleasedSlotGoesBackToItsTenantsShareAndIdleTenantsLeaveNoCounter) {
  std::vector<SlotLease> held;
  for (const char* tenant : {"tenant-a", "tenant-a", "tenant-b"}) {
    auto lease = Acquire(tenant);
    ASSERT_TRUE(lease) << tenant;
    held.push_back(*lease);
  }
  ASSERT_TRUE(*slots_->Release(held[0]));
  auto again = Acquire("tenant-a");
  ASSERT_TRUE(again) << "a released slot counts against its tenant's share no longer";
  held[0] = *again;
  EXPECT_FALSE(Acquire("tenant-a"));
  EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
  for (const SlotLease& lease : held) ASSERT_TRUE(*slots_->Release(lease));
  EXPECT_EQ(Snapshot().in_flight, 0);
  EXPECT_TRUE(Snapshot().tenant_slots.empty());
  EXPECT_EQ(Counters(), 2) << "counters at zero stay until the periodic reclaim";
  ASSERT_TRUE(slots_->ReclaimExpired(kConn, config_).ok());
  EXPECT_EQ(Counters(), 0) << "a tenant with nothing in flight leaves nothing in the item";
  ASSERT_TRUE(Acquire("tenant-a")) << "an absent counter is zero";
}

TEST_P(TenantShareTest, AnExpiredLeaseComesBackToItsTenantsShare) {
  ASSERT_TRUE(Acquire("tenant-a"));  // holders that vanish without releasing
  ASSERT_TRUE(Acquire("tenant-a"));
  EXPECT_FALSE(Acquire("tenant-a"));
  clock_.advance(std::chrono::seconds(config_.lease_ttl_s + config_.max_clock_skew_s));
  ASSERT_TRUE(Acquire("tenant-a")) << "the expired leases reclaimed from the tenant's count too";
  ASSERT_TRUE(Acquire("tenant-a"));
  EXPECT_FALSE(Acquire("tenant-a"));
  EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
  const ConcurrencySnapshot s = Snapshot();
  EXPECT_EQ(s.in_flight, 2);
  EXPECT_EQ(s.busiest_tenant(), 2);
}

// An instance of an earlier version reclaims an expired lease without knowing its tenant's counter:
// the holder goes and the counter stays, refusing the tenant below its share. The periodic reclaim
// sets the counter to the holders that name it.
TEST_P(TenantShareTest, ACounterLeftHighByAnEarlierVersionsReclaimIsSetToItsHolders) {
  auto first = Acquire("tenant-a");
  ASSERT_TRUE(first);
  ASSERT_TRUE(Acquire("tenant-a"));
  ASSERT_NO_FATAL_FAILURE(ReclaimAsAnEarlierVersion(*first));
  EXPECT_FALSE(Acquire("tenant-a")) << "the counter still says two";
  ASSERT_TRUE(slots_->ReclaimExpired(kConn, config_).ok());
  EXPECT_EQ(Snapshot().busiest_tenant(), 1);
  ASSERT_TRUE(Acquire("tenant-a"));
  EXPECT_FALSE(Acquire("tenant-a")) << "two, and no more";
}

// Split over shards, a tenant's share is split as the limit is (the shards' parts add up to it), and
// each shard keeps its part: a tenant alone gets its whole share, and no tenant ever more. The price
// of the two splits: a second tenant can be refused below its share where a shard with room left
// for its part is full — never past it. What it gets is, shard by shard, the smaller of its part and
// the room the first left.
TEST_P(TenantShareTest, OverShardsATenantAloneGetsItsWholeShareAndNoTenantMore) {
  config_.max_in_flight = 8;
  config_.shards = 3;
  config_.max_in_flight_per_tenant = 4;
  ASSERT_TRUE(slots_->EnsureConnector(kConn, config_).ok());
  const int a = Granted("tenant-a", 12);
  EXPECT_EQ(a, 4);
  EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
  const int b = Granted("tenant-b", 12);
  const std::string tag_a = ConnectorConcurrencyService::TenantTag("tenant-a");
  const std::string tag_b = ConnectorConcurrencyService::TenantTag("tenant-b");
  int b_expected = 0;
  for (int k = 0; k < config_.shards; ++k) {
    const int room =
        ConnectorConcurrencyService::ShareOf(8, 3, k) - ConnectorConcurrencyService::TenantShareOf(4, 3, k, tag_a);
    b_expected += std::min(room, ConnectorConcurrencyService::TenantShareOf(4, 3, k, tag_b));
  }
  EXPECT_EQ(b, b_expected);
  EXPECT_GE(b, 2);
  EXPECT_LE(b, 4);
  const ConcurrencySnapshot s = Snapshot();
  EXPECT_EQ(s.in_flight, a + b);
  EXPECT_EQ(s.busiest_tenant(), 4);
  EXPECT_EQ(s.tenant_slots.size(), 2u);
}

// A share smaller than the shards: the shards outside the tenant's own have no part of it, and
// admit none of the tenant's calls, even on an item where the tenant has no counter yet.
TEST_P(TenantShareTest, AShareSmallerThanTheShardsIsHeldExactly) {
  config_.max_in_flight = 8;
  config_.shards = 4;
  config_.max_in_flight_per_tenant = 2;
  ASSERT_TRUE(slots_->EnsureConnector(kConn, config_).ok());
  EXPECT_EQ(Granted("tenant-a", 12), 2);
  const std::string tag_b = ConnectorConcurrencyService::TenantTag("tenant-b");
  int tried_elsewhere = 0;
  for (int i = 0; i < 20; ++i) {  // the prepared acquire of the usual path, on the shard it picks
    auto [write, lease] = slots_->PrepareAcquire(kConn, config_, "tenant-b");
    tried_elsewhere += ConnectorConcurrencyService::TenantShareOf(2, 4, lease.shard, tag_b) == 0 ? 1 : 0;
    auto r = store_->Update(write.key, write.ops, write.condition, write.returns);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->applied) {
      EXPECT_GT(ConnectorConcurrencyService::TenantShareOf(2, 4, lease.shard, tag_b), 0)
          << "a shard with no part of the share admitted the tenant";
    }
  }
  EXPECT_EQ(tried_elsewhere, 0) << "the usual path picks one of the tenant's own shards";
  EXPECT_EQ(Snapshot().busiest_tenant(), 2);
  EXPECT_EQ(Snapshot().in_flight, 4) << "two of each tenant, and no more";
}

// A share smaller than the shards leaves no shard unusable: each tenant's part starts on a shard of
// its own (from its tag), so tenants whose parts start on every shard fill the whole connector. (A
// split that gave every tenant the same first shards left the others idle: with 8 slots over 4 shards
// and a share of 2, a third tenant was refused with half the connector free.)
TEST_P(TenantShareTest, AShareSmallerThanTheShardsLeavesNoShardIdle) {
  config_.max_in_flight = 8;
  config_.shards = 4;
  config_.max_in_flight_per_tenant = 2;
  ASSERT_TRUE(slots_->EnsureConnector(kConn, config_).ok());
  std::vector<std::string> tenants(4);  // tenants[k]: one whose part starts on shard k
  int found = 0;
  for (int n = 0; n < 1000 && found < 4; ++n) {
    const std::string tenant = "tenant-" + std::to_string(n);
    const int first = ConnectorConcurrencyService::TenantFirstShard(ConnectorConcurrencyService::TenantTag(tenant), 4);
    if (tenants[static_cast<size_t>(first)].empty()) {
      tenants[static_cast<size_t>(first)] = tenant;
      ++found;
    }
  }
  ASSERT_EQ(found, 4);
  for (const std::string& tenant : tenants) EXPECT_EQ(Granted(tenant, 5), 2) << tenant;
  const ConcurrencySnapshot s = Snapshot();
  EXPECT_EQ(s.in_flight, 8) << "every slot of the connector was reachable";
  EXPECT_EQ(s.busiest_tenant(), 2);
  EXPECT_FALSE(Acquire("tenant-late"));
  EXPECT_EQ(refusal_, SlotRefusal::kConnectorFull);
}

// Racing callers of one tenant, on one store: the acquires that win are exactly the share, although
// the connector has room for all of them.
TEST_P(TenantShareTest, ABurstOfOneTenantGetsExactlyItsShare) {
  config_.max_in_flight = 16;
  config_.max_in_flight_per_tenant = 3;
  ASSERT_TRUE(slots_->EnsureConnector(kConn, config_).ok());
  std::atomic<int> won{0}, failed{0};
  testing::RunTogether(12, [&](int) {
    auto r = slots_->TryAcquire(kConn, config_, "tenant-a");
    if (!r.ok()) {
      failed.fetch_add(1);
      return;
    }
    if (r->has_value()) won.fetch_add(1);
  });
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(won.load(), 3);
  EXPECT_EQ(Snapshot().in_flight, 3);
  EXPECT_TRUE(Acquire("tenant-b"));
}

// Without a share, a tenant may take every slot, and the item counts no tenant.
TEST_P(TenantShareTest, WithoutAShareNoTenantIsCounted) {
  config_.max_in_flight_per_tenant = 0;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Acquire("tenant-a")) << i;
  EXPECT_FALSE(Acquire("tenant-b"));
  EXPECT_EQ(refusal_, SlotRefusal::kConnectorFull);
  EXPECT_EQ(Counters(), 0);
}

// A refused acquire leaves the tenants' counters alone: it reclaims expired leases and no more. The
// counters at zero are the periodic reclaim's (every instance, every few seconds), so a tenant at its
// share that retries at once puts no tidy's reads and writes on the connector's busiest item.
TEST_P(TenantShareTest, ARefusedAcquireLeavesTheCountersToThePeriodicReclaim) {
  auto b = Acquire("tenant-b");
  ASSERT_TRUE(b);
  ASSERT_TRUE(*slots_->Release(*b));  // tenant-b's counter at zero
  ASSERT_TRUE(Acquire("tenant-a"));
  ASSERT_TRUE(Acquire("tenant-a"));
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(Acquire("tenant-a"));
    EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
  }
  EXPECT_EQ(Counters(), 2) << "the refusals removed tenant-b's counter at zero";
  ASSERT_TRUE(slots_->ReclaimExpired(kConn, config_).ok());
  EXPECT_EQ(Counters(), 1) << "the periodic reclaim removes it";
}

// Two tidies that read the item before either wrote (every instance tidies every few seconds): the
// second's write is refused. Otherwise it would set a counter that an acquire raised in between
// back below its holders, and the tenant would get past its share.
TEST_P(TenantShareTest, TwoTidiesThatReadTogetherNeverSetACounterBelowItsHolders) {
  config_.max_in_flight_per_tenant = 3;
  auto first = Acquire("tenant-a");
  ASSERT_TRUE(first);
  ASSERT_TRUE(Acquire("tenant-a"));
  ASSERT_NO_FATAL_FAILURE(ReclaimAsAnEarlierVersion(*first));  // the counter stays at two for one holder
  const store::ItemKey key = ConnectorConcurrencyService::Key(kConn, first->shard);
  testing::SyncPointStore racing(*store_);
  ConnectorConcurrencyService tidier(racing, clock_);
  racing.BeforeWrite(1, testing::SyncPointStore::KeyIs(key), [&] {
    ASSERT_TRUE(slots_->ReclaimExpired(kConn, config_).ok());  // the other tidy: two -> one
    ASSERT_TRUE(Acquire("tenant-a"));                          // one -> two, two holders
  });
  ASSERT_TRUE(tidier.ReclaimExpired(kConn, config_).ok());  // read two for one holder; writes last
  ASSERT_EQ(racing.fired(), 1);
  EXPECT_EQ(Snapshot().busiest_tenant(), 2) << "the stale tidy set the counter below its two holders";
  EXPECT_TRUE(Acquire("tenant-a"));
  EXPECT_FALSE(Acquire("tenant-a")) << "three, the share, and no more";
  EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
}

// An acquire whose outcome is unknown (applied, its answer lost: a DynamoDB timeout) gives its slot
// back at once: the lease would otherwise hold one of the tenant's share until it expired.
TEST_P(TenantShareTest, AnAcquireWhoseOutcomeIsUnknownGivesItsSlotBack) {
  config_.max_in_flight_per_tenant = 1;
  testing::FaultInjectingStore faulty(*store_);
  ConnectorConcurrencyService slots(faulty, clock_);
  faulty.ApplyThenFailOnce([](const store::ItemKey&) { return true; });
  auto lost = slots.TryAcquire(kConn, config_, "tenant-a");
  EXPECT_FALSE(lost.ok());
  EXPECT_EQ(Snapshot().in_flight, 0) << "the slot the lost acquire took was given back";
  EXPECT_TRUE(Snapshot().tenant_slots.empty());
  EXPECT_TRUE(Acquire("tenant-a")) << "the tenant's share is free";
}

// A tenant counter that is not a number (an edited item) cannot take the reclaim's one off: the
// expired holder is removed alone and the counts are set from the holders. Before, every periodic
// reclaim failed on it, so the slot, the tenant's share and the tidy that would mend the counter
// stayed taken for good.
TEST_P(TenantShareTest, ACounterThatIsNotANumberDoesNotKeepAnExpiredSlotTaken) {
  auto lease = Acquire("tenant-a");  // its holder then vanishes without releasing
  ASSERT_TRUE(lease);
  const store::ItemKey key = ConnectorConcurrencyService::Key(kConn, lease->shard);
  const std::string counter = "tenant_in_flight#" + ConnectorConcurrencyService::TenantTag("tenant-a");
  ASSERT_TRUE(store_
                  ->Update(key, {store::UpdateOp::Set(store::Attr(counter), std::string("1"))},
                           store::Condition::Always(), store::ReturnValues::kNone)
                  .ok());
  clock_.advance(std::chrono::seconds(config_.lease_ttl_s + config_.max_clock_skew_s));
  auto reclaimed = slots_->ReclaimExpired(kConn, config_);
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status();
  EXPECT_EQ(*reclaimed, 1);
  EXPECT_EQ(Snapshot().in_flight, 0) << "the expired slot is free";
  EXPECT_EQ(Counters(), 0) << "the counter set from its holders (none): removed";
  ASSERT_TRUE(Acquire("tenant-a"));
  ASSERT_TRUE(Acquire("tenant-a"));
  EXPECT_FALSE(Acquire("tenant-a")) << "the share is two again, no more";
  EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
}

// A tidy count edited to the largest number does not overflow (undefined behaviour, caught by
// UBSan): the next tidy writes 1, unlike the count it read, and mends the counter.
TEST_P(TenantShareTest, ATidyCountAtItsLargestStartsAgain) {
  auto first = Acquire("tenant-a");
  ASSERT_TRUE(first);
  ASSERT_TRUE(Acquire("tenant-a"));
  ASSERT_NO_FATAL_FAILURE(ReclaimAsAnEarlierVersion(*first));  // the counter stays at two for one holder
  const store::ItemKey key = ConnectorConcurrencyService::Key(kConn, first->shard);
  ASSERT_TRUE(
      store_
          ->Update(key, {store::UpdateOp::Set(store::Attr("tenant_tidy_count"), std::numeric_limits<int64_t>::max())},
                   store::Condition::Always(), store::ReturnValues::kNone)
          .ok());
  ASSERT_TRUE(slots_->ReclaimExpired(kConn, config_).ok());
  EXPECT_EQ(Snapshot().busiest_tenant(), 1) << "the counter set to its one holder";
  auto item = store_->Get(key);
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ(store::GetInt(**item, "tenant_tidy_count"), 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, TenantShareTest, ::testing::ValuesIn(testing::AllBackends()), testing::BackendName);

}  // namespace
}  // namespace toolgate
