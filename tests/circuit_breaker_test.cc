// CircuitBreakerService over the memory store with a manual clock: every transition and S1–S5.

#include <algorithm>

#include "breaker_test_support.h"
#include "gtest/gtest.h"
#include "sync_point_store.h"
#include "toolgate/clock.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

using breaker::State;
using Cause = BreakerTransition::Cause;
using Permit = CircuitBreakerService::Permit;
using toolgate::testing::CountingItemStore;
using toolgate::testing::RecordingListener;
using toolgate::testing::SyncPointStore;

constexpr char kConn[] = "crm";

class CircuitBreakerTest : public ::testing::Test {
 protected:
  CircuitBreakerTest() : base_(clock_), store_(base_), breakers_(store_, clock_, "test-instance", &listener_) {
    config_.failure_threshold = 3;
    config_.window_s = 30;
    config_.cooldown_s = 20;
    config_.probe_timeout_s = 30;
  }

  Permit Ask() {
    auto p = breakers_.RequestPermission(kConn, config_);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : Permit{};
  }
  void Fail(const Permit& p, const std::string& tenant = "t1") {
    ASSERT_TRUE(breakers_.RecordFailure(kConn, config_, p, tenant).ok());
  }
  void Succeed(const Permit& p) { ASSERT_TRUE(breakers_.RecordSuccess(kConn, config_, p).ok()); }
  breaker::Snapshot Stored() {
    auto s = breakers_.Read(kConn);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : breaker::Snapshot{};
  }
  std::optional<int64_t> StoredTtl() {
    auto item = base_.Get(CircuitBreakerService::Key(kConn));
    if (!item.ok() || !item->has_value()) return std::nullopt;
    return store::GetInt(**item, "ttl");
  }
  void Trip() {
    for (int i = 0; i < config_.failure_threshold; ++i) Fail(Ask());
    ASSERT_EQ(Stored().state, State::kOpen);
  }
  // Every move a test made is one breaker::kTransitions lists: /metrics starts each listed move's
  // counter at 0 (Metrics::KnownConnector), so a move missing from the list would be born uncounted.
  void TearDown() override {
    for (const BreakerTransition& t : listener_.transitions()) {
      const bool listed = std::any_of(breaker::kTransitions.begin(), breaker::kTransitions.end(),
                                      [&t](const breaker::Transition& k) { return k.from == t.from && k.to == t.to; });
      EXPECT_TRUE(listed) << breaker::ToString(t.from) << " -> " << breaker::ToString(t.to) << " (" << ToString(t.cause)
                          << ") is not in breaker::kTransitions";
    }
  }

  ManualClock clock_;
  store::MemoryItemStore base_;
  CountingItemStore store_;
  RecordingListener listener_;
  breaker::Config config_;
  CircuitBreakerService breakers_;
};

TEST_F(CircuitBreakerTest, AnAbsentBreakerIsClosedAndSuccessesCostNoWrite) {
  for (int i = 0; i < 100; ++i) {
    Permit p = Ask();
    ASSERT_TRUE(p.allowed);
    EXPECT_FALSE(p.probe);
    Succeed(p);
  }
  EXPECT_EQ(store_.writes.load(), 0);
  EXPECT_FALSE(Stored().exists);
}

// An MCP connector's own traffic (design §17.7): allowed while CLOSED, counted like a call's, and
// never the probe — past the cooldown it is refused and writes nothing, so a call still wins the probe.
TEST_F(CircuitBreakerTest, PermissionWithoutProbeCountsWhileClosedAndNeverClaimsTheProbe) {
  for (int i = 0; i < config_.failure_threshold; ++i) {
    auto p = breakers_.RequestPermissionWithoutProbe(kConn, config_);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE(p->allowed);
    EXPECT_FALSE(p->probe);
    Fail(*p, "");
  }
  ASSERT_EQ(Stored().state, State::kOpen) << "background failures open the breaker like calls' do";
  const int64_t generation = Stored().generation;
  auto open = breakers_.RequestPermissionWithoutProbe(kConn, config_);
  ASSERT_TRUE(open.ok());
  EXPECT_FALSE(open->allowed);
  EXPECT_EQ(open->reason, DeferReason::kBreakerOpen);
  clock_.advance(std::chrono::seconds(config_.cooldown_s + 1));
  const int writes = store_.writes.load();
  auto cooled = breakers_.RequestPermissionWithoutProbe(kConn, config_);
  ASSERT_TRUE(cooled.ok());
  EXPECT_FALSE(cooled->allowed) << "past the cooldown the probe is a call's, not background traffic's";
  EXPECT_EQ(store_.writes.load(), writes) << "nothing written";
  EXPECT_EQ(Stored().state, State::kOpen);
  EXPECT_EQ(Stored().generation, generation);
  Permit probe = Ask();
  ASSERT_TRUE(probe.probe) << "a call still claims the probe";
  auto half_open = breakers_.RequestPermissionWithoutProbe(kConn, config_);
  ASSERT_TRUE(half_open.ok());
  EXPECT_FALSE(half_open->allowed);
  Succeed(probe);
  auto closed = breakers_.RequestPermissionWithoutProbe(kConn, config_);
  ASSERT_TRUE(closed.ok());
  EXPECT_TRUE(closed->allowed);
}

TEST_F(CircuitBreakerTest, SuccessesCostNoWriteEvenWhileFailuresAreCounted) {
  Fail(Ask());
  const int writes = store_.writes.load();
  for (int i = 0; i < 50; ++i) Succeed(Ask());
  EXPECT_EQ(store_.writes.load(), writes);
  EXPECT_EQ(Stored().window_failures, 1);
}

TEST_F(CircuitBreakerTest, OpensAtTheThresholdWithinTheWindowExactlyOnce) {
  clock_.set_epoch_ms(1'800'000'000'400);
  Fail(Ask());
  Fail(Ask());
  EXPECT_EQ(Stored().state, State::kClosed);
  EXPECT_EQ(Stored().window_failures, 2);
  Fail(Ask());
  const breaker::Snapshot s = Stored();
  EXPECT_EQ(s.state, State::kOpen);
  EXPECT_EQ(s.open_until_epoch_sec, 1'800'000'001 + 20);  // now rounded up + cooldown
  EXPECT_FALSE(s.half_open_probe_in_flight);
  EXPECT_EQ(listener_.count(Cause::kFailureThreshold), 1);
  const auto t = listener_.transitions().back();
  EXPECT_EQ(t.from, State::kClosed);
  EXPECT_EQ(t.to, State::kOpen);
}

TEST_F(CircuitBreakerTest, FailuresSpreadBeyondTheWindowDoNotOpen) {
  for (int i = 0; i < 10; ++i) {
    Fail(Ask());
    Fail(Ask());
    clock_.advance(std::chrono::seconds(31));  // a new window each time
  }
  EXPECT_EQ(Stored().state, State::kClosed);
  EXPECT_EQ(listener_.count(Cause::kFailureThreshold), 0);
}

TEST_F(CircuitBreakerTest, OpenDefersUntilCooldownThenExactlyOneProbe) {
  Trip();
  Permit p = Ask();
  EXPECT_FALSE(p.allowed);
  EXPECT_EQ(p.reason, DeferReason::kBreakerOpen);
  EXPECT_GT(p.retry_after_ms, 19'000);
  EXPECT_LE(p.retry_after_ms, 21'000);

  clock_.advance(std::chrono::seconds(19));
  EXPECT_FALSE(Ask().allowed);
  clock_.advance(std::chrono::seconds(2));
  Permit probe = Ask();
  ASSERT_TRUE(probe.allowed);
  EXPECT_TRUE(probe.probe);
  EXPECT_EQ(Stored().state, State::kHalfOpen);
  EXPECT_TRUE(Stored().half_open_probe_in_flight);
  Permit other = Ask();
  EXPECT_FALSE(other.allowed);
  EXPECT_EQ(other.reason, DeferReason::kProbeInFlight);
  EXPECT_EQ(listener_.count(Cause::kProbeClaimed), 1);
}

TEST_F(CircuitBreakerTest, ProbeSuccessClosesWithCountersReset) {
  Trip();
  clock_.advance(std::chrono::seconds(21));
  Permit probe = Ask();
  ASSERT_TRUE(probe.probe);
  Succeed(probe);
  const breaker::Snapshot s = Stored();
  EXPECT_EQ(s.state, State::kClosed);
  EXPECT_FALSE(s.half_open_probe_in_flight);
  EXPECT_EQ(s.window_failures, 0);
  EXPECT_EQ(listener_.count(Cause::kProbeSucceeded), 1);
  // Closed again: it takes a full threshold of new failures to reopen.
  Fail(Ask());
  Fail(Ask());
  EXPECT_EQ(Stored().state, State::kClosed);
}

TEST_F(CircuitBreakerTest, ProbeFailureReopensForAnotherCooldown) {
  Trip();
  clock_.advance(std::chrono::seconds(21));
  Permit probe = Ask();
  ASSERT_TRUE(probe.probe);
  Fail(probe);
  const breaker::Snapshot s = Stored();
  EXPECT_EQ(s.state, State::kOpen);
  EXPECT_FALSE(s.half_open_probe_in_flight);
  EXPECT_EQ(s.open_until_epoch_sec, clock_.now_epoch_sec() + 20);
  EXPECT_EQ(listener_.count(Cause::kProbeFailed), 1);
  EXPECT_FALSE(Ask().allowed);
}

TEST_F(CircuitBreakerTest, AStuckProbeIsTakenOverAfterItsTimeoutAndItsLateResultIgnored) {
  Trip();
  clock_.advance(std::chrono::seconds(21));
  Permit stuck = Ask();
  ASSERT_TRUE(stuck.probe);
  clock_.advance(std::chrono::seconds(29));
  EXPECT_EQ(Ask().reason, DeferReason::kProbeInFlight);
  clock_.advance(std::chrono::seconds(1));  // probe_timeout_s has passed...
  EXPECT_EQ(Ask().reason, DeferReason::kProbeInFlight);
  clock_.advance(std::chrono::seconds(config_.max_clock_skew_s));  // ...and the clock skew allowed
  Permit second = Ask();
  ASSERT_TRUE(second.probe);
  EXPECT_GT(second.generation, stuck.generation);
  EXPECT_EQ(listener_.count(Cause::kProbeTakenOver), 1);

  // The new probe fails and reopens; then the stuck probe's success arrives late.
  Fail(second);
  ASSERT_EQ(Stored().state, State::kOpen);
  Succeed(stuck);
  EXPECT_EQ(Stored().state, State::kOpen) << "a late success from an old probe closed a reopened breaker";
  EXPECT_EQ(listener_.count(Cause::kProbeSucceeded), 0);
}

TEST_F(CircuitBreakerTest, ALateFailureFromBeforeTheOpeningIsNotCounted) {
  Permit early = Ask();  // a slow call that started while CLOSED
  Trip();
  clock_.advance(std::chrono::seconds(21));
  Succeed(Ask());  // probe closes the breaker
  ASSERT_EQ(Stored().state, State::kClosed);
  Fail(early);
  EXPECT_EQ(Stored().window_failures, 0);
}

TEST_F(CircuitBreakerTest, EveryWriteRefreshesTheTtlAndTheTtlOutlivesTheCooldown) {
  Fail(Ask());
  EXPECT_EQ(StoredTtl(), clock_.now_epoch_sec() + 14 * 86400);
  clock_.advance(std::chrono::seconds(5));
  Fail(Ask());
  EXPECT_EQ(StoredTtl(), clock_.now_epoch_sec() + 14 * 86400);
  clock_.advance(std::chrono::seconds(5));
  Fail(Ask());  // opens
  ASSERT_EQ(Stored().state, State::kOpen);
  EXPECT_EQ(StoredTtl(), clock_.now_epoch_sec() + 14 * 86400);
  EXPECT_GT(*StoredTtl(), Stored().open_until_epoch_sec);  // S4: TTL never ends an active OPEN
  clock_.advance(std::chrono::seconds(21));
  Permit probe = Ask();
  EXPECT_EQ(StoredTtl(), clock_.now_epoch_sec() + 14 * 86400);
  Succeed(probe);
  EXPECT_EQ(StoredTtl(), clock_.now_epoch_sec() + 14 * 86400);
}

TEST_F(CircuitBreakerTest, ForcedOpenHoldsPastAnyCooldownUntilClosedByHand) {
  auto forced = breakers_.ForceOpen(kConn, config_);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->state, State::kForcedOpen);
  EXPECT_EQ(StoredTtl(), std::nullopt);  // never expires into CLOSED
  clock_.advance(std::chrono::hours(24 * 30));
  Permit p = Ask();
  EXPECT_FALSE(p.allowed);
  EXPECT_EQ(p.reason, DeferReason::kBreakerOpen);
  auto closed = breakers_.ManualClose(kConn, config_);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_TRUE(closed->changed);
  EXPECT_EQ(closed->before.state, State::kForcedOpen);
  EXPECT_EQ(closed->before.generation + 1, closed->after.generation);
  EXPECT_EQ(closed->after.state, State::kClosed);
  EXPECT_TRUE(Ask().allowed);
  EXPECT_EQ(listener_.count(Cause::kForcedOpen), 1);
  EXPECT_EQ(listener_.count(Cause::kManualClose), 1);
}

// A breaker item nobody can read (edited by hand, corrupted) stops every call; the runbook's override
// replaces it, reported as a transition, with a generation above any the old item can have had.
TEST_F(CircuitBreakerTest, AnOperatorsOverrideReplacesAnItemThatCannotBeRead) {
  ASSERT_TRUE(base_
                  .Put(CircuitBreakerService::Key(kConn), {{"state", "HALF_BROKEN"}, {"generation", "x"}},
                       store::Condition::Always())
                  .ok());
  EXPECT_EQ(breakers_.Read(kConn).status().code(), absl::StatusCode::kDataLoss);
  auto forced = breakers_.ForceOpen(kConn, config_, {"alice", "the breaker item is corrupt"});
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->state, State::kForcedOpen);
  EXPECT_EQ(Stored().state, State::kForcedOpen);
  EXPECT_EQ(Stored().forced_by, "alice");
  EXPECT_GE(Stored().generation, clock_.now_epoch_ms());
  EXPECT_EQ(listener_.count(Cause::kForcedOpen), 1);
  ASSERT_TRUE(base_.Put(CircuitBreakerService::Key(kConn), {{"state", 42}}, store::Condition::Always()).ok());
  auto closed = breakers_.ManualClose(kConn, config_);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_TRUE(closed->changed);
  EXPECT_EQ(Stored().state, State::kClosed);
  EXPECT_TRUE(Ask().allowed) << "calls flow again";
}

TEST_F(CircuitBreakerTest, ForceOpenKeepsWhoAndWhyAndAClosedBreakerClosesWithoutAWrite) {
  auto forced = breakers_.ForceOpen(kConn, config_, {"alice", "crm is double-charging"});
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(Stored().forced_by, "alice");
  EXPECT_EQ(Stored().forced_reason, "crm is double-charging");
  ASSERT_TRUE(breakers_.ManualClose(kConn, config_).ok());
  const int64_t generation = Stored().generation;
  auto again = breakers_.ManualClose(kConn, config_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->changed);
  EXPECT_EQ(Stored().generation, generation);  // nothing written
  EXPECT_TRUE(Stored().forced_by.empty());
  EXPECT_EQ(listener_.count(Cause::kManualClose), 1);
}

TEST_F(CircuitBreakerTest, AReturnedProbeCanBeClaimedAtOnce) {
  Trip();
  clock_.advance(std::chrono::seconds(21));
  Permit first = Ask();
  ASSERT_TRUE(first.probe);
  ASSERT_TRUE(breakers_.ReturnProbe(kConn, first).ok());
  EXPECT_FALSE(Stored().half_open_probe_in_flight);
  Permit next = Ask();
  ASSERT_TRUE(next.probe);
  EXPECT_EQ(listener_.count(Cause::kProbeReturned), 1);
  // The returned permit's results no longer count.
  Succeed(first);
  EXPECT_EQ(Stored().state, State::kHalfOpen);
  Succeed(next);
  EXPECT_EQ(Stored().state, State::kClosed);
}

TEST_F(CircuitBreakerTest, FailureRateThresholdNeedsTheRatioOverMinCalls) {
  config_.failure_threshold = 3;
  config_.failure_rate_threshold = 0.5;
  config_.min_calls = 6;
  Fail(Ask());  // the window starts counting calls
  for (int i = 0; i < 5; ++i) Succeed(Ask());
  Fail(Ask());
  Fail(Ask());  // 3 failures of 8 calls: 37.5 %
  EXPECT_EQ(Stored().state, State::kClosed);
  EXPECT_EQ(Stored().window_calls, 8);
  Fail(Ask());  // 4 of 9
  EXPECT_EQ(Stored().state, State::kClosed);
  Fail(Ask());  // 5 of 10: 50 %
  EXPECT_EQ(Stored().state, State::kOpen);
}

TEST_F(CircuitBreakerTest, OneTenantAloneCannotOpenWhenDistinctTenantsAreRequired) {
  config_.min_distinct_tenants = 2;
  for (int i = 0; i < 10; ++i) Fail(Ask(), "broken-credentials-tenant");
  EXPECT_EQ(Stored().state, State::kClosed);
  Fail(Ask(), "another-tenant");
  EXPECT_EQ(Stored().state, State::kOpen);
  EXPECT_EQ(listener_.count(Cause::kFailureThreshold), 1);
}

TEST_F(CircuitBreakerTest, AnItemItDidNotWriteIsDataLoss) {
  ASSERT_TRUE(base_.Put(CircuitBreakerService::Key(kConn), {{"state", "BOGUS"}}, store::Condition::Always()).ok());
  auto p = breakers_.RequestPermission(kConn, config_);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(p.status().message().find("crm"), absl::string_view::npos);
}

TEST_F(CircuitBreakerTest, AnExpiredBreakerItemStartsAfreshAsClosed) {
  Fail(Ask());
  clock_.advance(std::chrono::hours(24 * 15));  // past the 14-day TTL, not yet swept
  EXPECT_FALSE(Stored().exists);
  Fail(Ask());
  Fail(Ask());
  Fail(Ask());
  EXPECT_EQ(Stored().state, State::kOpen);
}

TEST_F(CircuitBreakerTest, ACachedClosedBreakerSeesAnotherInstancesOpeningWithinTheCacheTime) {
  CircuitBreakerService cached(store_, clock_, "cached-instance", nullptr, /*cache_ms=*/500);
  ASSERT_TRUE(cached.RequestPermission(kConn, config_)->allowed);
  const int reads = store_.reads.load();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(cached.RequestPermission(kConn, config_)->allowed);
  EXPECT_EQ(store_.reads.load(), reads) << "a cached CLOSED breaker was read again";
  ASSERT_TRUE(breakers_.ForceOpen(kConn, config_).ok());  // another instance
  clock_.advance(std::chrono::milliseconds(499));
  EXPECT_TRUE(cached.RequestPermission(kConn, config_)->allowed);  // still within the cache time
  clock_.advance(std::chrono::milliseconds(1));
  EXPECT_FALSE(cached.RequestPermission(kConn, config_)->allowed);
}

// S1/S7: a live probe is never taken over, by a host whose clock runs up to max_clock_skew_s ahead
// either, whatever the fraction of a second it was claimed at (its expiry is kept in whole seconds,
// rounded up). A probe claimed at .760 of a second was taken over 3.24 s into a 4 s probe_timeout_s.
TEST_F(CircuitBreakerTest, AProbeClaimOutlivesItsTimeoutOnEveryHostWithinTheSkew) {
  Trip();
  clock_.advance(std::chrono::milliseconds(20'760));  // past the cooldown, at .760 of a second
  const int64_t claimed_ms = clock_.now_epoch_ms();
  Permit probe = Ask();
  ASSERT_TRUE(probe.probe);
  // Another host, its clock max_clock_skew_s ahead, just before the claim's probe_timeout_s has run
  // on the prober's clock: the claim holds.
  ManualClock ahead(claimed_ms + (config_.probe_timeout_s + config_.max_clock_skew_s) * 1000 - 1);
  CircuitBreakerService other(store_, ahead, "host-ahead");
  auto denied = other.RequestPermission(kConn, config_);
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_FALSE(denied->allowed) << "a live probe was taken over";
  EXPECT_EQ(denied->reason, DeferReason::kProbeInFlight);
  // Its timeout and the skew passed on that host's clock (kept in whole seconds, so within one
  // more): taken over.
  ahead.advance(std::chrono::milliseconds(1001));
  auto taken = other.RequestPermission(kConn, config_);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_TRUE(taken->probe);
  EXPECT_EQ(listener_.count(Cause::kProbeTakenOver), 0) << "the other instance has no listener";
  EXPECT_GT(taken->generation, probe.generation);
}

// An OPEN written by a host whose clock ran ten minutes ahead ends, on every other host, when
// their cooldown could have: a cooldown ending later than cooldown_s + max_clock_skew_s from now
// is taken as over (one probe, S1), not held for as long as that host was ahead.
TEST_F(CircuitBreakerTest, ACooldownEndingLaterThanAnyHostCouldSetIsOver) {
  ManualClock ahead(clock_.now_epoch_ms() + 600'000);
  CircuitBreakerService far(store_, ahead, "host-ahead");
  for (int i = 0; i < config_.failure_threshold; ++i) {
    auto p = far.RequestPermission(kConn, config_);
    ASSERT_TRUE(p.ok() && p->allowed);
    ASSERT_TRUE(far.RecordFailure(kConn, config_, *p, "t1").ok());
  }
  ASSERT_EQ(Stored().state, State::kOpen);
  ASSERT_GT(Stored().open_until_epoch_sec, clock_.now_epoch_sec() + 600);
  Permit probe = Ask();
  EXPECT_TRUE(probe.probe) << "an OPEN from a clock 10 min ahead held the breaker for 10 min";
  EXPECT_EQ(Ask().reason, DeferReason::kProbeInFlight) << "one probe";
  Succeed(probe);
  EXPECT_EQ(Stored().state, State::kClosed);

  // Within what this host's config and the skew allow, a cooldown holds as written.
  Trip();
  const int64_t until = Stored().open_until_epoch_sec;
  clock_.advance(std::chrono::seconds(config_.cooldown_s - 1));
  EXPECT_EQ(Ask().reason, DeferReason::kBreakerOpen);
  clock_.set_epoch_ms(until * 1000);
  EXPECT_TRUE(Ask().probe);
}

// A cached snapshot ages by the monotonic clock: a wall clock stepped an hour back must not keep a
// cached CLOSED fresh while another instance has opened the breaker.
TEST_F(CircuitBreakerTest, ACachedSnapshotAgesByTheMonotonicClockNotTheWallClock) {
  CircuitBreakerService cached(store_, clock_, "cached-instance", nullptr, /*cache_ms=*/250);
  ASSERT_TRUE(cached.RequestPermission(kConn, config_)->allowed);
  ASSERT_TRUE(breakers_.ForceOpen(kConn, config_).ok());   // another instance
  clock_.set_epoch_ms(clock_.now_epoch_ms() - 3'600'000);  // a step back; monotonic time goes on
  clock_.advance(std::chrono::milliseconds(250));
  EXPECT_FALSE(cached.RequestPermission(kConn, config_)->allowed) << "an hour-old wall time kept the cache fresh";
}

TEST_F(CircuitBreakerTest, ACachedBreakerReadsAfreshWhenTheCooldownEndsSoOnlyOneProbeRuns) {
  CircuitBreakerService a(store_, clock_, "a", &listener_, 5000);
  CircuitBreakerService b(store_, clock_, "b", &listener_, 5000);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(a.RecordFailure(kConn, config_, *a.RequestPermission(kConn, config_), "t").ok());
  EXPECT_FALSE(a.RequestPermission(kConn, config_)->allowed);  // a saw its own opening at once
  EXPECT_FALSE(b.RequestPermission(kConn, config_)->allowed);
  clock_.advance(std::chrono::seconds(21));  // past the cooldown, inside the cache time
  auto pa = a.RequestPermission(kConn, config_);
  auto pb = b.RequestPermission(kConn, config_);
  ASSERT_TRUE(pa.ok() && pb.ok());
  EXPECT_EQ(int{pa->probe} + int{pb->probe}, 1);
}

// S1 under the interleaving that matters: a caller reads OPEN past its cooldown and, before its
// claim is written, another caller claims the probe. The late claim must lose, not run a second probe.
TEST_F(CircuitBreakerTest, ACallerWhoseProbeClaimIsOvertakenBetweenReadAndWriteDefers) {
  Trip();
  clock_.advance(std::chrono::seconds(21));
  SyncPointStore racing(store_);
  CircuitBreakerService late(racing, clock_, "late-instance", &listener_);
  Permit winner;
  racing.BeforeWrite(1, SyncPointStore::KeyIs(CircuitBreakerService::Key(kConn)), [&] { winner = Ask(); });
  auto lost = late.RequestPermission(kConn, config_);
  ASSERT_TRUE(lost.ok()) << lost.status();
  ASSERT_EQ(racing.fired(), 1) << "the other caller never stepped in: the test proves nothing";
  EXPECT_TRUE(winner.probe);
  EXPECT_FALSE(lost->allowed);
  EXPECT_EQ(lost->reason, DeferReason::kProbeInFlight);
  EXPECT_EQ(listener_.count(Cause::kProbeClaimed), 1);
  EXPECT_EQ(Stored().generation, winner.generation);
}

// The first failure of a window creates the breaker item; when another failure creates it first,
// between this caller's read of "absent" and its write, this failure is counted on a second try.
TEST_F(CircuitBreakerTest, AFailureWhoseWriteIsOvertakenBetweenReadAndWriteStillCounts) {
  const Permit p = Ask();
  SyncPointStore racing(store_);
  CircuitBreakerService late(racing, clock_, "late-instance", &listener_);
  racing.BeforeWrite(1, SyncPointStore::KeyIs(CircuitBreakerService::Key(kConn)), [&] { Fail(Ask(), "t2"); });
  ASSERT_TRUE(late.RecordFailure(kConn, config_, p, "t1").ok());
  ASSERT_EQ(racing.fired(), 1) << "the other caller never stepped in: the test proves nothing";
  const breaker::Snapshot s = Stored();
  EXPECT_EQ(s.state, State::kClosed);
  EXPECT_EQ(s.window_failures, 2) << "a failure was lost to the race";
  EXPECT_EQ(s.window_calls, 2);
}

}  // namespace
}  // namespace toolgate
