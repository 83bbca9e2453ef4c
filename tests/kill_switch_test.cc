// KillSwitchService reading switches back from the store: a switch is what its item's key names.

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sync_point_store.h"
#include "toolgate/clock.h"
#include "toolgate/store/forwarding_item_store.h"
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

// An http connector forwards any name below its prefix as the path, and many routers take
// `crm.Delete` or `crm.delete.` for `crm.delete`: an action-type switch stops every spelling that
// differs only in ASCII case or trailing '.', '-' and '_', whether it is the call's tool name or its
// action type, alone and under a tenant. Stopping a tool really spelled otherwise errs the safe way.
TEST(KillSwitchTest, AnActionTypeSwitchStopsEverySpellingALooseRouterTakesForItsName) {
  ManualClock clock;
  store::MemoryItemStore store(clock);
  KillSwitchService switches(store, clock, /*refresh_ms=*/0);
  ASSERT_TRUE(switches.Set({"action_type", "crm.delete", "incident", "oncall", "", ""}).ok());
  ASSERT_TRUE(switches.Set({"tenant_action", "t1/email.send", "incident", "oncall", "", ""}).ok());
  // The scope of the switch that stops the call; "" when none does.
  auto stopped_by = [&](std::string_view tenant, std::string_view action_type, std::string_view tool) {
    auto match = switches.Match(tenant, "crm", action_type, tool);
    EXPECT_TRUE(match.ok()) << match.status();
    return match.ok() && match->has_value() ? (*match)->scope : std::string();
  };
  for (const char* name : {"crm.delete", "crm.Delete", "CRM.DELETE", "crm.delete.", "crm.delete_", "crm.Delete-._"}) {
    EXPECT_EQ(stopped_by("t1", "crm.write", name), "action_type") << "tool " << name;
    EXPECT_EQ(stopped_by("t1", name, "crm.x"), "action_type") << "action type " << name;
  }
  for (const char* name : {"email.send", "Email.Send", "EMAIL.SEND.", "email.send-"}) {
    EXPECT_EQ(stopped_by("t1", name, "crm.x"), "tenant_action") << "action type " << name;
    EXPECT_EQ(stopped_by("t1", "crm.write", name), "tenant_action") << "tool " << name;
    EXPECT_EQ(stopped_by("t2", name, name), "") << "another tenant's " << name;
  }
  // Other names are other names: a character changed, added or moved, or a leading one.
  for (const char* name : {"crm.deleted", "crm.delet", "crm_delete", "crm.de.lete", ".crm.delete", "crm.delete.x"}) {
    EXPECT_EQ(stopped_by("t1", name, name), "") << name;
  }
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

// A clock that counts the monotonic readings made of it: a caller of Match reads it once, holding
// the snapshot's lock, before it waits for another caller's refresh.
class CountingClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now_system() const override { return manual.now_system(); }
  std::chrono::steady_clock::time_point now_monotonic() const override {
    readings.fetch_add(1);
    return manual.now_monotonic();
  }
  ManualClock manual;
  mutable std::atomic<int> readings{0};
};

// Counts the reads of the kill switches' list; the first one runs `during_first_read` before it
// answers, and the first `failing_reads` fail (the store down).
class ListCountingStore final : public store::ForwardingItemStore {
 public:
  using ForwardingItemStore::ForwardingItemStore;
  absl::StatusOr<store::QueryPage> Query(const store::QueryRequest& request) override {
    if (request.pk != "KILLSWITCH") return ForwardingItemStore::Query(request);
    auto r = ForwardingItemStore::Query(request);
    const int n = lists.fetch_add(1);
    if (n == 0 && during_first_read) during_first_read();
    if (n < failing_reads) return absl::UnavailableError("the store is down");
    return r;
  }
  std::function<void()> during_first_read;
  int failing_reads = 0;
  std::atomic<int> lists{0};
};

// Starts `n` callers of Match on threads of their own and returns once each is waiting for the
// refresh under way (each has read the clock under the snapshot's lock); bounded at 10 s.
std::vector<std::future<absl::StatusOr<std::optional<KillSwitch>>>> CallersWaiting(KillSwitchService& switches,
                                                                                   const CountingClock& clock, int n) {
  const int before = clock.readings.load();
  std::vector<std::future<absl::StatusOr<std::optional<KillSwitch>>>> callers;
  for (int i = 0; i < n; ++i) {
    callers.push_back(std::async(std::launch::async,
                                 [&switches] { return switches.Match("t1", "crm", "crm.update", "crm.update"); }));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (clock.readings.load() < before + n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GE(clock.readings.load(), before + n) << "the callers never reached the refresh";
  return callers;
}

// An instance's kill switches over a store that counts their list's reads, and the callers started
// to wait for a refresh.
class KillSwitchRefreshTest : public ::testing::Test {
 protected:
  CountingClock clock;
  store::MemoryItemStore base{clock.manual};
  ListCountingStore store{base};
  KillSwitchService switches{store, clock, /*refresh_ms=*/1000};
  std::vector<std::future<absl::StatusOr<std::optional<KillSwitch>>>> waiting;
};

// The store down: callers that waited for a refresh whose read failed get its error at once. Each
// reading the list again in turn would hold the last of them for all their retry budgets together.
TEST_F(KillSwitchRefreshTest, CallersThatWaitedForAFailedRefreshShareItsError) {
  store.failing_reads = 1;
  store.during_first_read = [&] { waiting = CallersWaiting(switches, clock, 2); };
  auto first = switches.Match("t1", "crm", "crm.update", "crm.update");
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
  ASSERT_EQ(waiting.size(), 2u);
  for (auto& w : waiting) {
    auto r = w.get();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  }
  EXPECT_EQ(store.lists.load(), 1) << "each caller that waited read the list again";
  // A caller that comes after the failed refresh reads again: the error is shared, never kept.
  auto later = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(store.lists.load(), 2);
}

// A list read slower than refresh_ms answers for the callers that waited for it: it is as recent as
// anything they could read, and reading it again each would multiply the wait.
TEST_F(KillSwitchRefreshTest, CallersThatWaitedForASlowRefreshShareItsList) {
  KillSwitchService setter(base, clock.manual, /*refresh_ms=*/1000);  // another instance
  ASSERT_TRUE(setter.Set(KillSwitch{"connector", "crm", "incident", "oncall", "oncall", ""}).ok());
  store.during_first_read = [&] {
    waiting = CallersWaiting(switches, clock, 2);
    clock.manual.advance(std::chrono::milliseconds(1500));  // the read took longer than refresh_ms
  };
  auto first = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->has_value());
  ASSERT_EQ(waiting.size(), 2u);
  for (auto& w : waiting) {
    auto r = w.get();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->has_value()) << "a caller that waited was not stopped";
    EXPECT_EQ((*r)->key, "crm");
  }
  EXPECT_EQ(store.lists.load(), 1) << "each caller that waited read the list again";
  // A caller that comes after that refresh does not take its list: it reads again, and sees a switch
  // set elsewhere meanwhile.
  ASSERT_TRUE(setter.Set(KillSwitch{"tenant", "t1", "abuse", "oncall", "oncall", ""}).ok());
  auto later = switches.Match("t2", "other", "other.x", "other.x");
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(store.lists.load(), 2);
  auto t1 = switches.Match("t1", "other", "other.x", "other.x");
  ASSERT_TRUE(t1.ok()) << t1.status();
  ASSERT_TRUE(t1->has_value()) << "the switch set after the shared list was read is not in force";
  EXPECT_EQ((*t1)->scope, "tenant");
}

// The store down during a refresh, and a switch set on this instance meanwhile (the store took it):
// a caller that waited for that refresh does not take its error — it reads again and is stopped.
TEST_F(KillSwitchRefreshTest, ACallerThatWaitedNeverSharesAnErrorOlderThanItsInstancesOwnSwitch) {
  absl::Status set;
  store.failing_reads = 1;
  store.during_first_read = [&] {
    waiting = CallersWaiting(switches, clock, 1);
    set = switches.Set(KillSwitch{"connector", "crm", "incident", "oncall", "oncall", ""}).status();
  };
  auto first = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(first.ok()) << "its read failed, but the switch set here meanwhile stops it: " << first.status();
  ASSERT_TRUE(first->has_value());
  ASSERT_TRUE(set.ok()) << set;
  ASSERT_EQ(waiting.size(), 1u);
  auto r = waiting[0].get();
  ASSERT_TRUE(r.ok()) << "the caller that waited took the error of a read older than its instance's switch: "
                      << r.status();
  ASSERT_TRUE(r->has_value()) << "the caller that waited was not stopped";
  EXPECT_EQ((*r)->key, "crm");
  EXPECT_EQ(store.lists.load(), 2);
}

// A switch this instance sets after the list was read is never answered around: a caller that
// waited for that refresh reads the list again and is stopped.
TEST_F(KillSwitchRefreshTest, ACallerThatWaitedNeverSharesAListOlderThanItsInstancesOwnSwitch) {
  absl::Status set;
  store.during_first_read = [&] {
    waiting = CallersWaiting(switches, clock, 1);
    set = switches.Set(KillSwitch{"connector", "crm", "incident", "oncall", "oncall", ""}).status();
  };
  auto first = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(set.ok()) << set;
  ASSERT_EQ(waiting.size(), 1u);
  auto r = waiting[0].get();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value()) << "the caller that waited answered from a list without its instance's switch";
  EXPECT_EQ((*r)->key, "crm");
  EXPECT_EQ(store.lists.load(), 2);
}

// The list unreadable (a throttled or failing Query of the one KILLSWITCH partition every instance
// reads): a switch the last list held still stops its calls — on a connector with on_store_error =
// "allow" the store's error would otherwise run them unguarded through a switch set minutes before.
// A switch this instance sets or clears meanwhile counts too; a call no known switch stops gets the
// store's error, as before.
TEST_F(KillSwitchRefreshTest, ASwitchTheLastListHeldStillStopsItsCallsWhileTheListCannotBeRead) {
  KillSwitchService setter(base, clock.manual, /*refresh_ms=*/1000);  // another instance
  ASSERT_TRUE(setter.Set(KillSwitch{"connector", "crm", "incident", "oncall", "oncall", ""}).ok());
  auto read = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(read.ok() && read->has_value()) << read.status();
  clock.manual.advance(std::chrono::milliseconds(1500));  // stale: the next lookup reads the list
  store.failing_reads = 1000;
  auto stopped = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(stopped.ok()) << "the store's error instead of the switch the last list held: " << stopped.status();
  ASSERT_TRUE(stopped->has_value());
  EXPECT_EQ((*stopped)->key, "crm");
  EXPECT_EQ(switches.Match("t2", "other", "other.x", "other.x").status().code(), absl::StatusCode::kUnavailable)
      << "a call no known switch stops";
  EXPECT_GE(store.lists.load(), 3) << "each lookup tried the list again";

  ASSERT_TRUE(switches.Set(KillSwitch{"tenant", "t9", "abuse", "oncall", "oncall", ""}).ok());
  auto own = switches.Match("t9", "other", "other.x", "other.x");
  ASSERT_TRUE(own.ok() && own->has_value()) << "a switch this instance set is in force here: " << own.status();
  ASSERT_TRUE(switches.Clear("connector", "crm").ok());
  EXPECT_EQ(switches.Match("t1", "crm", "crm.update", "crm.update").status().code(), absl::StatusCode::kUnavailable)
      << "a switch this instance cleared stops nothing here";

  store.failing_reads = 0;
  auto back = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->has_value()) << "the list read again once the store is back";
}

// A switch set here while an older list was being read is not dropped by that list: should the next
// read fail, it still stops its calls.
TEST_F(KillSwitchRefreshTest, ASwitchSetHereWhileAnOlderListWasReadOutlivesThatList) {
  absl::Status set;
  store.during_first_read = [&] {
    set = switches.Set(KillSwitch{"connector", "crm", "incident", "oncall", "oncall", ""}).status();
  };
  auto first = switches.Match("t2", "other", "other.x", "other.x");  // reads the list, the set made during it
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(set.ok()) << set;
  store.failing_reads = 1000;  // the read that follows fails
  auto stopped = switches.Match("t1", "crm", "crm.update", "crm.update");
  ASSERT_TRUE(stopped.ok()) << "the switch set here was dropped by the older list: " << stopped.status();
  ASSERT_TRUE(stopped->has_value());
  EXPECT_EQ((*stopped)->key, "crm");
}

}  // namespace
}  // namespace toolgate
