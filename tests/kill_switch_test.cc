// KillSwitchService reading switches back from the store: a switch is what its item's key names.

#include "gtest/gtest.h"
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

}  // namespace
}  // namespace toolgate
