// The pure rules: ids, clocks and the breaker state machine's decisions.

#include <set>

#include "gtest/gtest.h"
#include "toolgate/clock.h"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/domain/ids.h"

namespace toolgate {
namespace {

using breaker::PermissionPlan;
using breaker::Snapshot;
using breaker::State;

TEST(IdsTest, UuidV7HasVersionVariantAndSortsByTime) {
  ManualClock clock(1'700'000'000'000);
  const std::string a = NewUuidV7(clock);
  clock.advance(std::chrono::milliseconds(1));
  const std::string b = NewUuidV7(clock);
  EXPECT_TRUE(LooksLikeUuid(a)) << a;
  EXPECT_EQ(a[14], '7');  // version nibble
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos) << a;  // variant 10xx
  EXPECT_LT(a, b);
  std::set<std::string> many;
  for (int i = 0; i < 10000; ++i) many.insert(NewUuidV7(clock));  // same millisecond: random bits differ
  EXPECT_EQ(many.size(), 10000u);
  EXPECT_FALSE(LooksLikeUuid("not-a-uuid"));
  EXPECT_FALSE(LooksLikeUuid("0190b6f0-1234-7abc-8def-01234567890g"));
}

TEST(ClockTest, ManualClockMovesOnlyWhenTold) {
  ManualClock clock(5'500);
  EXPECT_EQ(clock.now_epoch_ms(), 5'500);
  EXPECT_EQ(clock.now_epoch_sec(), 5);
  const auto mono = clock.now_monotonic();
  clock.advance(std::chrono::milliseconds(600));
  EXPECT_EQ(clock.now_epoch_sec(), 6);
  EXPECT_EQ(clock.now_monotonic() - mono, std::chrono::milliseconds(600));
  clock.set_epoch_ms(1'000);  // wall time may go back; monotonic time does not
  EXPECT_EQ(clock.now_epoch_ms(), 1'000);
  EXPECT_EQ(clock.now_monotonic() - mono, std::chrono::milliseconds(600));
}

TEST(BreakerRulesTest, OpenUntilRoundsUpToWholeSeconds) {
  breaker::Config c;
  c.cooldown_s = 20;
  EXPECT_EQ(breaker::OpenUntil(1'000'000, c), 1'000 + 20);
  EXPECT_EQ(breaker::OpenUntil(1'000'001, c), 1'001 + 20);
  EXPECT_EQ(breaker::OpenUntil(1'000'999, c), 1'001 + 20);
}

TEST(BreakerRulesTest, PlanFollowsTheStateMachine) {
  breaker::Config c;
  Snapshot s;
  EXPECT_EQ(breaker::PlanPermission(s, c, 0).step, PermissionPlan::Step::kAllow);

  s.exists = true;
  s.state = State::kOpen;
  s.open_until_epoch_sec = 100;
  PermissionPlan p = breaker::PlanPermission(s, c, 99'250);
  EXPECT_EQ(p.step, PermissionPlan::Step::kDefer);
  EXPECT_EQ(p.reason, DeferReason::kBreakerOpen);
  EXPECT_EQ(p.retry_after_ms, 750);
  EXPECT_EQ(breaker::PlanPermission(s, c, 100'000).step, PermissionPlan::Step::kClaimProbe);

  s.state = State::kHalfOpen;
  s.half_open_probe_in_flight = true;
  s.half_open_probe_expires_at = 130;
  p = breaker::PlanPermission(s, c, 129'999);
  EXPECT_EQ(p.step, PermissionPlan::Step::kDefer);
  EXPECT_EQ(p.reason, DeferReason::kProbeInFlight);
  EXPECT_EQ(breaker::PlanPermission(s, c, 130'000).step, PermissionPlan::Step::kTakeOverProbe);
  s.half_open_probe_in_flight = false;  // given back
  EXPECT_EQ(breaker::PlanPermission(s, c, 100'000).step, PermissionPlan::Step::kTakeOverProbe);

  s.state = State::kForcedOpen;
  p = breaker::PlanPermission(s, c, 1'000'000'000);
  EXPECT_EQ(p.step, PermissionPlan::Step::kDefer);
  EXPECT_EQ(p.reason, DeferReason::kBreakerOpen);
}

TEST(BreakerRulesTest, ShouldOpenAppliesEveryThreshold) {
  breaker::Config c;
  c.failure_threshold = 3;
  EXPECT_FALSE(breaker::ShouldOpen(2, 2, 1, c));
  EXPECT_TRUE(breaker::ShouldOpen(3, 3, 1, c));
  c.failure_rate_threshold = 0.5;
  c.min_calls = 10;
  EXPECT_FALSE(breaker::ShouldOpen(5, 9, 1, c));   // too few calls
  EXPECT_FALSE(breaker::ShouldOpen(4, 10, 1, c));  // 40 % < 50 %
  EXPECT_TRUE(breaker::ShouldOpen(5, 10, 1, c));
  c.min_distinct_tenants = 2;
  EXPECT_FALSE(breaker::ShouldOpen(5, 10, 1, c));
  EXPECT_TRUE(breaker::ShouldOpen(5, 10, 2, c));
}

TEST(BreakerRulesTest, SlowCallsAreFailuresOnlyWhenConfigured) {
  breaker::Config c;
  EXPECT_FALSE(breaker::IsSlowCall(c, 1'000'000));
  c.slow_call_ms = 2000;
  EXPECT_FALSE(breaker::IsSlowCall(c, 2000));
  EXPECT_TRUE(breaker::IsSlowCall(c, 2001));
}

TEST(BreakerRulesTest, ValidateNamesTheBadField) {
  breaker::Config c;
  EXPECT_TRUE(breaker::Validate(c).ok());
  c.cooldown_s = 0;
  EXPECT_NE(breaker::Validate(c).message().find("cooldown_s"), absl::string_view::npos);
  c = {};
  c.cooldown_s = 3601;
  EXPECT_FALSE(breaker::Validate(c).ok());
  c = {};
  c.failure_rate_threshold = 1.5;
  EXPECT_NE(breaker::Validate(c).message().find("failure_rate_threshold"), absl::string_view::npos);
  c = {};
  c.failure_threshold = 0;
  EXPECT_FALSE(breaker::Validate(c).ok());
}

TEST(BreakerRulesTest, StateNamesRoundTrip) {
  for (State s : {State::kClosed, State::kOpen, State::kHalfOpen, State::kForcedOpen}) {
    EXPECT_EQ(breaker::ParseState(breaker::ToString(s)), s);
  }
  EXPECT_FALSE(breaker::ParseState("closed").has_value());
}

}  // namespace
}  // namespace toolgate
