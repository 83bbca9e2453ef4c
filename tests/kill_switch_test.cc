// KillSwitchService reading switches back from the store: a switch is what its item's key names.

#include <chrono>
#include <future>
#include <optional>
#include <thread>

#include "gtest/gtest.h"
#include "sync_point_store.h"
#include "toolgate/clock.h"
#include "toolgate/services/kill_switch_service.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

// An item stripped of its attributes (edited by hand) still stops what its key names: a switch that
// silently stopped nothing would let through what an operator meant to stop.
TEST(KillSwitchTest, AnItemWithoutItsAttributesStillStopsWhatItsKeyNames) {
  ManualClock clock;
  store::MemoryItemStore store(clock);
  KillSwitchService switches(store, clock, /*refresh_ms=*/0);
  ASSERT_TRUE(store.Put({"KILLSWITCH", "connector#crm"}, {}, store::Condition::Always()).ok());
  auto listed = switches.List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].scope, "connector");
  EXPECT_EQ((*listed)[0].key, "crm");
  auto match = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(match.ok()) << match.status();
  ASSERT_TRUE(match->has_value()) << "the edited switch no longer stopped its connector";
  EXPECT_EQ((*match)->scope, "connector");
  auto other = switches.Match("t1", "billing", "billing.charge", "billing.charge");
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
  auto cleared = switches.Clear("connector", "crm");
  ASSERT_TRUE(cleared.ok());
  EXPECT_TRUE(*cleared);
}

// The lookup a call makes on its event loop (MatchFromFreshCopy) never waits for a refresh's store
// read (a round trip on DynamoDB, retried for seconds when it is down): it answers "no fresh copy"
// at once, and the call goes to the store threads. It waited for the whole read while the refresh
// held the service's lock across it.
TEST(KillSwitchTest, ALookupNeverWaitsForARefreshsStoreRead) {
  ManualClock clock;
  store::MemoryItemStore base(clock);
  testing::SyncPointStore store(base);
  KillSwitchService switches(store, clock, /*refresh_ms=*/1000);
  std::promise<std::optional<std::optional<KillSwitch>>> looked_up;
  std::future<std::optional<std::optional<KillSwitch>>> lookup = looked_up.get_future();
  std::thread loop;
  bool answered_during_the_read = false;
  store.AfterRead(1, testing::SyncPointStore::KeyIs({"KILLSWITCH", ""}), [&] {
    loop =
        std::thread([&] { looked_up.set_value(switches.MatchFromFreshCopy("t1", "crm", "crm.update", "crm.update")); });
    answered_during_the_read = lookup.wait_for(std::chrono::seconds(2)) == std::future_status::ready;
  });
  auto refreshed = switches.Match("t1", "crm", "crm.update", "crm.update");
  loop.join();
  ASSERT_EQ(store.fired(), 1);
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_TRUE(answered_during_the_read) << "the lookup waited for the refresh's store read";
  EXPECT_FALSE(lookup.get().has_value()) << "a stale snapshot was answered from";
  EXPECT_TRUE(switches.MatchFromFreshCopy("t1", "crm", "crm.update", "crm.update").has_value());
}

// A switch this instance sets while a refresh is reading the list may be missing from what it read:
// that list is not trusted for refresh_ms, so the next call reads again and is stopped.
TEST(KillSwitchTest, ASwitchSetWhileTheListWasReadStopsTheNextCall) {
  ManualClock clock;
  store::MemoryItemStore base(clock);
  testing::SyncPointStore store(base);
  KillSwitchService switches(store, clock, /*refresh_ms=*/1000);
  absl::Status set;
  store.AfterRead(1, testing::SyncPointStore::KeyIs({"KILLSWITCH", ""}), [&] {
    set = switches.Set(KillSwitch{"connector", "crm", "incident", "oncall", "oncall", ""}).status();
  });
  auto during = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_EQ(store.fired(), 1);
  ASSERT_TRUE(set.ok()) << set;
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_FALSE(switches.MatchFromFreshCopy("t1", "crm", "crm.update", "crm.update").has_value())
      << "the list read before the switch was set is trusted";
  auto next = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(next->has_value()) << "the next call was not stopped";
  EXPECT_EQ((*next)->key, "crm");
}

}  // namespace
}  // namespace toolgate
