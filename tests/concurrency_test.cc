// ConnectorConcurrencyService: S6 limits and S7 release and lease rules, with manual clocks.

#include <set>

#include "fault_injecting_store.h"
#include "gtest/gtest.h"
#include "sync_point_store.h"
#include "toolgate/clock.h"
#include "toolgate/services/connector_concurrency_service.h"
#include "toolgate/store/forwarding_item_store.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

constexpr char kConn[] = "crm";

class ConcurrencyTest : public ::testing::Test {
 protected:
  ConcurrencyTest() : store_(clock_), slots_(store_, clock_) {
    config_.max_in_flight = 3;
    config_.lease_ttl_s = 35;
    config_.max_clock_skew_s = 5;
  }

  std::optional<SlotLease> Acquire(ConnectorConcurrencyService& s, const std::string& conn = kConn) {
    auto r = s.TryAcquire(conn, config_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }
  ConcurrencySnapshot Snapshot(const std::string& conn = kConn) {
    auto r = slots_.Read(conn, config_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ConcurrencySnapshot{};
  }

  ManualClock clock_;
  store::MemoryItemStore store_;
  ConnectorConcurrencyService slots_;
  ConcurrencyConfig config_;
};

TEST_F(ConcurrencyTest, AcquiresUpToTheLimitThenDefers) {
  std::vector<SlotLease> held;
  for (int i = 0; i < 3; ++i) {
    auto lease = Acquire(slots_);
    ASSERT_TRUE(lease.has_value()) << "slot " << i;
    held.push_back(*lease);
  }
  EXPECT_FALSE(Acquire(slots_).has_value());
  EXPECT_EQ(Snapshot().in_flight, 3);
  EXPECT_EQ(Snapshot().holders, 3);
  auto released = slots_.Release(held[0]);
  ASSERT_TRUE(released.ok());
  EXPECT_TRUE(*released);
  EXPECT_TRUE(Acquire(slots_).has_value());
}

TEST_F(ConcurrencyTest, ReleaseHappensExactlyOnceAndTheCountNeverGoesNegative) {
  auto lease = Acquire(slots_);
  ASSERT_TRUE(lease);
  EXPECT_TRUE(*slots_.Release(*lease));
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(*slots_.Release(*lease));
  EXPECT_EQ(Snapshot().in_flight, 0);
  EXPECT_EQ(Snapshot().holders, 0);
  SlotLease forged{kConn, "never-acquired", 0};
  EXPECT_FALSE(*slots_.Release(forged));
  EXPECT_EQ(Snapshot().in_flight, 0);
}

TEST_F(ConcurrencyTest, EachConnectorHasItsOwnCount) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Acquire(slots_, "full"));
  EXPECT_FALSE(Acquire(slots_, "full"));
  EXPECT_TRUE(Acquire(slots_, "other"));
  EXPECT_EQ(Snapshot("other").in_flight, 1);
}

TEST_F(ConcurrencyTest, AVanishedHoldersSlotReturnsAfterLeaseTtlPlusSkew) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Acquire(slots_));  // holders that will never release
  clock_.advance(std::chrono::seconds(35 + 5) - std::chrono::milliseconds(1));
  EXPECT_FALSE(Acquire(slots_)) << "a lease was reclaimed before lease_ttl_s + max_clock_skew_s";
  EXPECT_EQ(Snapshot().expired_holders, 0);
  clock_.advance(std::chrono::milliseconds(1));
  EXPECT_EQ(Snapshot().expired_holders, 3);
  auto lease = Acquire(slots_);  // reclaims the three, then takes one
  ASSERT_TRUE(lease);
  EXPECT_EQ(Snapshot().in_flight, 1);
  EXPECT_EQ(Snapshot().holders, 1);
}

TEST_F(ConcurrencyTest, AHostWhoseClockRunsAheadBySkewDoesNotTakeALiveSlot) {
  // Host A (clock_) holds every slot. Host B shares the store; its clock runs max_clock_skew_s ahead.
  std::vector<SlotLease> held;
  for (int i = 0; i < 3; ++i) held.push_back(*Acquire(slots_));
  ManualClock ahead(clock_.now_epoch_ms() + 5'000);
  ConnectorConcurrencyService host_b(store_, ahead);

  // Just before the leases expire on A's clock, the holders are alive; B must not reclaim.
  clock_.advance(std::chrono::seconds(35) - std::chrono::milliseconds(1));
  ahead.advance(std::chrono::seconds(35) - std::chrono::milliseconds(1));
  EXPECT_FALSE(Acquire(host_b));
  auto reclaimed = host_b.ReclaimExpired(kConn, config_);
  ASSERT_TRUE(reclaimed.ok());
  EXPECT_EQ(*reclaimed, 0);
  // The live holders release normally, each exactly once.
  for (const auto& l : held) EXPECT_TRUE(*slots_.Release(l));
  EXPECT_EQ(Snapshot().in_flight, 0);
}

TEST_F(ConcurrencyTest, AReclaimedLeaseReleasedLateChangesNothing) {
  std::vector<SlotLease> held;
  for (int i = 0; i < 3; ++i) held.push_back(*Acquire(slots_));
  clock_.advance(std::chrono::seconds(41));
  auto reclaimed = slots_.ReclaimExpired(kConn, config_);
  ASSERT_TRUE(reclaimed.ok());
  EXPECT_EQ(*reclaimed, 3);
  EXPECT_EQ(*slots_.ReclaimExpired(kConn, config_), 0);  // nothing is reclaimed twice
  auto fresh = Acquire(slots_);
  ASSERT_TRUE(fresh);
  EXPECT_FALSE(*slots_.Release(held[0]));  // the old holder's late release
  EXPECT_EQ(Snapshot().in_flight, 1);
}

TEST_F(ConcurrencyTest, AnOperatorsLimitIsSharedAndSurvivesAConfigSync) {
  ASSERT_TRUE(slots_.EnsureConnector(kConn, config_).ok());
  auto set = slots_.SetLimit(kConn, 1);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->max_in_flight, 1);
  EXPECT_TRUE(set->limit_set_by_operator);
  ConnectorConcurrencyService other_instance(store_, clock_);
  ASSERT_TRUE(other_instance.TryAcquire(kConn, config_)->has_value());
  EXPECT_FALSE(other_instance.TryAcquire(kConn, config_)->has_value());
  // A restart with the config's limit of 3 keeps the operator's 1.
  ASSERT_TRUE(slots_.EnsureConnector(kConn, config_).ok());
  EXPECT_EQ(Snapshot().max_in_flight, 1);
  EXPECT_EQ(slots_.SetLimit(kConn, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ConcurrencyTest, AConfigSetLimitFollowsTheConfig) {
  ASSERT_TRUE(slots_.EnsureConnector(kConn, config_).ok());
  EXPECT_EQ(Snapshot().max_in_flight, 3);
  config_.max_in_flight = 7;
  ASSERT_TRUE(slots_.EnsureConnector(kConn, config_).ok());
  EXPECT_EQ(Snapshot().max_in_flight, 7);
  EXPECT_FALSE(Snapshot().limit_set_by_operator);
}

TEST_F(ConcurrencyTest, AMalformedItemIsDataLoss) {
  ASSERT_TRUE(
      store_.Put(ConnectorConcurrencyService::Key(kConn), {{"in_flight_count", "three"}}, store::Condition::Always())
          .ok());
  EXPECT_EQ(slots_.Read(kConn, config_).status().code(), absl::StatusCode::kDataLoss);
}

// A count edited below its holders (here -5 with none held) would let the fleet past its limit by
// that much: it admits nothing until repaired, and the first caller that finds no room repairs it
// to the holders; from then on the limit holds exactly. A limit edited beyond any configurable one
// admits nothing either (it is no limit); an operator's `limits reset` ends it.
TEST_F(ConcurrencyTest, AnEditedCountOrLimitNeverLetsTheFleetPastItsLimit) {
  ASSERT_TRUE(Acquire(slots_).has_value());  // creates the item, one slot held
  const store::ItemKey key = ConnectorConcurrencyService::Key(kConn);
  ASSERT_TRUE(
      store_
          .Update(key, {store::UpdateOp::Set(store::Attr("in_flight_count"), int64_t{-5})}, store::Condition::Always())
          .ok());
  int granted = 0;
  for (int i = 0; i < 10; ++i) granted += Acquire(slots_).has_value() ? 1 : 0;
  EXPECT_EQ(granted, 2) << "one held before the edit, so two more of three";
  EXPECT_EQ(Snapshot().in_flight, 3);
  EXPECT_EQ(Snapshot().holders, 3);

  ASSERT_TRUE(store_
                  .Update(key, {store::UpdateOp::Set(store::Attr("max_in_flight"), int64_t{1} << 40)},
                          store::Condition::Always())
                  .ok());
  EXPECT_FALSE(Acquire(slots_).has_value()) << "a limit beyond any configurable one is no limit";
  ASSERT_TRUE(slots_.ResetLimit(kConn, config_).ok());
  EXPECT_EQ(Snapshot().max_in_flight, 3);
  EXPECT_FALSE(Acquire(slots_).has_value()) << "three held of three";
}

TEST(ConcurrencyConfigTest, ValidateRefusesNonsense) {
  ConcurrencyConfig c;
  EXPECT_TRUE(Validate(c).ok());
  c.max_in_flight = 0;
  EXPECT_FALSE(Validate(c).ok());
  c = {};
  c.lease_ttl_s = 0;
  EXPECT_FALSE(Validate(c).ok());
  c = {};
  c.max_clock_skew_s = -1;
  EXPECT_FALSE(Validate(c).ok());
  c = {};
  c.max_in_flight_per_tenant = c.max_in_flight;
  EXPECT_TRUE(Validate(c).ok());
  c.max_in_flight_per_tenant = c.max_in_flight + 1;
  EXPECT_FALSE(Validate(c).ok());
  c.max_in_flight_per_tenant = -1;
  EXPECT_FALSE(Validate(c).ok());
}

}  // namespace
}  // namespace toolgate

namespace toolgate {
namespace {

// concurrency_shards > 1: the limit split over several items, S6 and S7 intact for the sum.
class ShardedConcurrencyTest : public ConcurrencyTest {
 protected:
  ShardedConcurrencyTest() {
    config_.max_in_flight = 10;
    config_.shards = 4;
  }
};

TEST_F(ShardedConcurrencyTest, SharesAddUpToTheLimitAndTheFirstShardsTakeTheRemainder) {
  EXPECT_EQ(ConnectorConcurrencyService::ShareOf(10, 4, 0), 3);
  EXPECT_EQ(ConnectorConcurrencyService::ShareOf(10, 4, 1), 3);
  EXPECT_EQ(ConnectorConcurrencyService::ShareOf(10, 4, 2), 2);
  EXPECT_EQ(ConnectorConcurrencyService::ShareOf(10, 4, 3), 2);
  for (int max : {4, 5, 17, 100, 99999}) {
    for (int k : {1, 3, 4, 64}) {
      if (k > max) continue;
      int sum = 0;
      for (int i = 0; i < k; ++i) sum += ConnectorConcurrencyService::ShareOf(max, k, i);
      EXPECT_EQ(sum, max) << max << " over " << k;
    }
  }
  ASSERT_TRUE(slots_.EnsureConnector(kConn, config_).ok());
  const ConcurrencySnapshot s = Snapshot();
  EXPECT_EQ(s.max_in_flight, 10);
  EXPECT_EQ(s.shards, 4);
  for (int k = 0; k < 4; ++k) {
    auto item = store_.Get(ConnectorConcurrencyService::Key(kConn, k));
    ASSERT_TRUE(item.ok() && item->has_value()) << "shard " << k;
    EXPECT_EQ(store::GetInt(**item, "max_in_flight"), ConnectorConcurrencyService::ShareOf(10, 4, k));
  }
}

// A shard the store fails on does not keep the others' expired slots taken, and what they gave back
// is said in the error (the periodic reclaim logs only the error).
TEST_F(ShardedConcurrencyTest, OneShardsFailingReclaimStillReclaimsAndCountsTheOthers) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Acquire(slots_)) << "slot " << i;
  clock_.advance(std::chrono::seconds(41));
  testing::FaultInjectingStore faulty(store_);
  const store::ItemKey broken = ConnectorConcurrencyService::Key(kConn, 2);
  faulty.FailWhere([broken](const store::ItemKey& k) { return k == broken; });
  ConnectorConcurrencyService reclaimer(faulty, clock_);
  const auto reclaimed = reclaimer.ReclaimExpired(kConn, config_);
  ASSERT_FALSE(reclaimed.ok());
  EXPECT_EQ(reclaimed.status().code(), absl::StatusCode::kUnavailable);
  // Shards hold 3, 3, 2 and 2: shard 2's two stay taken, the other eight are back.
  EXPECT_NE(reclaimed.status().message().find("8 slot(s) of expired leases reclaimed on the other shards"),
            std::string_view::npos)
      << reclaimed.status();
  EXPECT_EQ(Snapshot().in_flight, 2);
  const auto rest = slots_.ReclaimExpired(kConn, config_);  // the store is back for it
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, 2);
}

TEST_F(ShardedConcurrencyTest, ExactlyTheLimitIsHandedOutAcrossShardsThenEveryCallerDefers) {
  std::vector<SlotLease> held;
  std::set<int> shards_used;
  for (int i = 0; i < 10; ++i) {
    auto lease = Acquire(slots_);
    ASSERT_TRUE(lease.has_value()) << "slot " << i;
    shards_used.insert(lease->shard);
    held.push_back(*lease);
  }
  EXPECT_EQ(shards_used.size(), 4u) << "a full connector holds slots in every shard";
  EXPECT_FALSE(Acquire(slots_).has_value());
  EXPECT_EQ(Snapshot().in_flight, 10);
  ASSERT_TRUE(*slots_.Release(held.back()));
  EXPECT_FALSE(*slots_.Release(held.back())) << "a double release is impossible in a shard too";
  held.pop_back();
  auto again = Acquire(slots_);  // the freed slot is found whichever shard it is in
  ASSERT_TRUE(again.has_value());
  held.push_back(*again);
  for (const auto& l : held) EXPECT_TRUE(*slots_.Release(l));
  EXPECT_EQ(Snapshot().in_flight, 0);
  EXPECT_EQ(Snapshot().holders, 0);
}

TEST_F(ShardedConcurrencyTest, AVanishedHoldersSlotsComeBackInEveryShard) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Acquire(slots_).has_value());  // then the holder dies
  clock_.advance(std::chrono::seconds(35 + 5) - std::chrono::milliseconds(1));
  EXPECT_FALSE(Acquire(slots_).has_value());
  clock_.advance(std::chrono::milliseconds(1));
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(Acquire(slots_).has_value()) << "slot " << i;
  EXPECT_FALSE(Acquire(slots_).has_value());
}

TEST_F(ShardedConcurrencyTest, AnOperatorsLimitIsSpreadOverTheShards) {
  ASSERT_TRUE(slots_.EnsureConnector(kConn, config_).ok());
  auto set = slots_.SetLimit(kConn, 6, 4);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->max_in_flight, 6);
  EXPECT_TRUE(set->limit_set_by_operator);
  int got = 0;
  while (Acquire(slots_).has_value() && got < 20) ++got;
  EXPECT_EQ(got, 6);
  EXPECT_EQ(slots_.SetLimit(kConn, 3, 4).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ShardedConcurrencyTest, ConfigRefusesMoreShardsThanSlots) {
  ConcurrencyConfig c = config_;
  c.shards = 11;
  EXPECT_FALSE(Validate(c).ok());
  c.shards = 65;
  c.max_in_flight = 1000;
  EXPECT_FALSE(Validate(c).ok());
  c.shards = 64;
  EXPECT_TRUE(Validate(c).ok());
}

}  // namespace
}  // namespace toolgate

namespace toolgate {
namespace {

using toolgate::testing::SyncPointStore;

// A store that applies every update twice, as a backend does when a request whose answer was lost
// is sent again. Returns the first answer.
class TwiceApplyingStore final : public store::ForwardingItemStore {
 public:
  using ForwardingItemStore::ForwardingItemStore;
  using ItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& condition, store::ReturnValues returns) override {
    auto first = ForwardingItemStore::Update(key, ops, condition, returns);
    (void)ForwardingItemStore::Update(key, ops, condition, returns);
    return first;
  }
};

TEST_F(ConcurrencyTest, AnAcquireOrReleaseAppliedTwiceCountsOnce) {
  TwiceApplyingStore twice(store_);
  ConnectorConcurrencyService slots(twice, clock_);
  std::vector<SlotLease> held;
  for (int i = 0; i < 3; ++i) {
    auto lease = Acquire(slots);
    ASSERT_TRUE(lease.has_value()) << "slot " << i;
    held.push_back(*lease);
    EXPECT_EQ(Snapshot().in_flight, i + 1) << "a resent acquire must not take a second slot";
  }
  EXPECT_FALSE(Acquire(slots).has_value());
  for (const auto& l : held) EXPECT_TRUE(*slots.Release(l));
  EXPECT_EQ(Snapshot().in_flight, 0);
  EXPECT_EQ(Snapshot().holders, 0);
}

// Found by the crash test: two callers race for slots whose holders died. Both find the semaphore
// full; the other caller reclaims every expired lease first, so this caller's reclaim finds none.
// It must still take the slot that is now free, not answer DEFER.
TEST_F(ConcurrencyTest, ACallerWhoseExpiredSlotsAnotherReclaimedStillTakesOne) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Acquire(slots_));  // holders that will never release
  clock_.advance(std::chrono::seconds(35 + 5));
  // The sync point: right after the first Get returns, between this caller's read of a full
  // semaphore and its own reclaim, where the other caller steps in.
  SyncPointStore racing(store_);
  racing.AfterRead(1, SyncPointStore::AnyKey(), [&] {
    auto n = slots_.ReclaimExpired(kConn, config_);  // the other caller, on the plain store
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 3);
  });
  ConnectorConcurrencyService slots(racing, clock_);
  auto lease = Acquire(slots);
  EXPECT_TRUE(lease.has_value()) << "deferred although every slot was free";
  EXPECT_EQ(Snapshot().in_flight, 1);
}

}  // namespace
}  // namespace toolgate
