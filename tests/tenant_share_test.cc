// A connector's per-tenant share of its slots (`max_in_flight_per_tenant`): no tenant holds more
// than its share, the others keep the rest, and an expired or abandoned lease comes back to its
// tenant's share too. On every store backend: the share is part of the acquire's one conditional
// write, which each adapter renders or evaluates itself.

#include <atomic>

#include "gtest/gtest.h"
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
  const store::ItemKey key = ConnectorConcurrencyService::Key(kConn, first->shard);
  auto old_reclaim = store_->Update(key,
                                    {store::UpdateOp::Remove(store::AttributePath::In("holders", first->lease_id)),
                                     store::UpdateOp::Add(store::Attr("in_flight_count"), -1)},
                                    store::Condition::Always());
  ASSERT_TRUE(old_reclaim.ok() && old_reclaim->applied);
  EXPECT_FALSE(Acquire("tenant-a")) << "the counter still says two";
  ASSERT_TRUE(slots_->ReclaimExpired(kConn, config_).ok());
  EXPECT_EQ(Snapshot().busiest_tenant(), 1);
  ASSERT_TRUE(Acquire("tenant-a"));
  EXPECT_FALSE(Acquire("tenant-a")) << "two, and no more";
}

// Split over shards, a tenant's share is split as the limit is (the shards' parts add up to it), and
// each shard keeps its part: a tenant alone gets its whole share, and no tenant ever more. The price
// of the two splits: a second tenant can be refused below its share while a shard where its own part
// is used up still has room (here 3 of 4: shard 0 is full, shard 1 has room but its part of one is
// held) — never past it.
TEST_P(TenantShareTest, OverShardsATenantAloneGetsItsWholeShareAndNoTenantMore) {
  config_.max_in_flight = 8;
  config_.shards = 3;
  config_.max_in_flight_per_tenant = 4;
  ASSERT_TRUE(slots_->EnsureConnector(kConn, config_).ok());
  const int a = Granted("tenant-a", 12);
  EXPECT_EQ(a, 4);
  EXPECT_EQ(refusal_, SlotRefusal::kTenantShare);
  const int b = Granted("tenant-b", 12);
  EXPECT_GE(b, 3);
  EXPECT_LE(b, 4);
  const ConcurrencySnapshot s = Snapshot();
  EXPECT_EQ(s.in_flight, a + b);
  EXPECT_EQ(s.busiest_tenant(), 4);
  EXPECT_EQ(s.tenant_slots.size(), 2u);
}

// A share smaller than the shards: the shards past it have no part of it, and admit none of the
// tenant's calls, even on an item where the tenant has no counter yet.
TEST_P(TenantShareTest, AShareSmallerThanTheShardsIsHeldExactly) {
  config_.max_in_flight = 8;
  config_.shards = 4;
  config_.max_in_flight_per_tenant = 2;
  ASSERT_TRUE(slots_->EnsureConnector(kConn, config_).ok());
  EXPECT_EQ(Granted("tenant-a", 12), 2);
  for (int i = 0; i < 20; ++i) {  // the prepared acquire of the usual path, on the shard it picks
    auto [write, lease] = slots_->PrepareAcquire(kConn, config_, "tenant-b");
    auto r = store_->Update(write.key, write.ops, write.condition, write.returns);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->applied) EXPECT_LT(lease.shard, 2) << "a shard with no part of the share admitted the tenant";
  }
  EXPECT_EQ(Snapshot().busiest_tenant(), 2);
  EXPECT_EQ(Snapshot().in_flight, 4) << "two of each tenant, and no more";
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

INSTANTIATE_TEST_SUITE_P(Backends, TenantShareTest, ::testing::ValuesIn(testing::AllBackends()), testing::BackendName);

}  // namespace
}  // namespace toolgate
