// The pure rules: ids, clocks and the breaker state machine's decisions.

#include <algorithm>
#include <cctype>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "toolgate/clock.h"
#include "toolgate/domain/breaker_rules.h"
#include "toolgate/domain/control_bytes.h"
#include "toolgate/domain/downstream_outcome.h"
#include "toolgate/domain/ids.h"
#include "toolgate/domain/json_depth.h"

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
  EXPECT_EQ(a[14], '7');                                               // version nibble
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos) << a;  // variant 10xx
  EXPECT_LT(a, b);
  std::set<std::string> many;
  for (int i = 0; i < 10000; ++i) many.insert(NewUuidV7(clock));  // same millisecond: random bits differ
  EXPECT_EQ(many.size(), 10000u);
  EXPECT_FALSE(LooksLikeUuid("not-a-uuid"));
  EXPECT_FALSE(LooksLikeUuid("0190b6f0-1234-7abc-8def-01234567890g"));
}

// Listings are newest first by id: ids made in one millisecond must sort in the order they were made,
// on one thread and across threads; a clock stepped back by more than a second restarts the stamps.
TEST(IdsTest, UuidV7IsMonotonicWithinAMillisecondAndAcrossThreads) {
  ManualClock clock(1'700'000'100'000);
  std::string previous = NewUuidV7(clock);
  for (int i = 0; i < 5000; ++i) {  // one millisecond: the counter, then a carry into the next
    const std::string id = NewUuidV7(clock);
    ASSERT_LT(previous, id) << "id " << i;
    ASSERT_EQ(id[14], '7');
    previous = id;
  }
  std::vector<std::vector<std::string>> per_thread(4);
  std::vector<std::thread> threads;
  for (auto& ids : per_thread) {
    threads.emplace_back([&clock, &ids] {
      for (int i = 0; i < 2000; ++i) ids.push_back(NewUuidV7(clock));
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> all;
  for (const auto& ids : per_thread) {
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
    EXPECT_LT(previous, ids.front());
    all.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(all.size(), 8000u);
  ManualClock earlier(1'600'000'000'000);
  const std::string restarted = NewUuidV7(earlier);
  EXPECT_LT(restarted, previous);
  EXPECT_EQ(restarted.substr(0, 8), NewUuidV7(earlier).substr(0, 8)) << "stamped with the clock's time";
}

TEST(IdsTest, LeaseIdsAreElevenBase64UrlCharactersAndDistinct) {
  std::set<std::string> many;
  std::set<char> seen_chars;
  for (int i = 0; i < 100000; ++i) {
    const std::string id = NewLeaseId();
    ASSERT_EQ(id.size(), 11u) << id;
    for (char c : id) {
      ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << id;
      seen_chars.insert(c);
    }
    many.insert(id);
  }
  EXPECT_EQ(many.size(), 100000u) << "64 random bits: no repeat in 100,000";
  EXPECT_EQ(seen_chars.size(), 64u) << "every base64url character in use: the bits are spread";
  std::vector<std::string> from_threads[2];
  std::thread t0([&] {
    for (int i = 0; i < 1000; ++i) from_threads[0].push_back(NewLeaseId());
  });
  std::thread t1([&] {
    for (int i = 0; i < 1000; ++i) from_threads[1].push_back(NewLeaseId());
  });
  t0.join();
  t1.join();
  std::set<std::string> both(from_threads[0].begin(), from_threads[0].end());
  both.insert(from_threads[1].begin(), from_threads[1].end());
  EXPECT_EQ(both.size(), 2000u) << "each thread's generator is seeded on its own";
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

// What reaches a log line or an operator's terminal from outside shows as written and drives nothing.
TEST(PrintableTest, ControlsAndDirectionMarksAreEscapedAndTextIsKept) {
  EXPECT_EQ(Printable("plain text, ünïcödé, 日本, 🙂"), "plain text, ünïcödé, 日本, 🙂");
  EXPECT_EQ(Printable("a\nb\rc\td"), "a\\nb\\rc\\x09d");
  EXPECT_EQ(Printable("\x1b]0;title\x07\x7f"), "\\x1b]0;title\\x07\\x7f");
  EXPECT_EQ(Printable(std::string_view("nul\0!", 5)), "nul\\x00!");
  EXPECT_EQ(Printable("csi\xc2\x9b"
                      "31m"),
            "csi\\u009b31m");                            // C1, UTF-8 encoded
  EXPECT_EQ(Printable("\xc2\xa0nbsp"), "\xc2\xa0nbsp");  // U+00A0 is text
  EXPECT_EQ(Printable("rlo\xe2\x80\xae"
                      "x\xe2\x81\xa6"
                      "y\xe2\x80\x8f"),
            "rlo\\u202ex\\u2066y\\u200f");
  EXPECT_EQ(Printable("raw\x9b"
                      "31m"),
            "raw\\x9b31m");  // not UTF-8: each byte
  EXPECT_EQ(Printable("\xc0\xaf overlong"), "\\xc0\\xaf overlong");
  EXPECT_EQ(Printable("\xed\xa0\x80 surrogate"), "\\xed\\xa0\\x80 surrogate");
  EXPECT_EQ(Printable("cut \xe2\x80"), "cut \\xe2\\x80");
  EXPECT_EQ(Printable("back\\slash \"quoted\""), "back\\slash \"quoted\"");
  for (const char* text : {"a\x1b", "\xc2\x9b", "\xe2\x80\xae", "\xff"}) {
    EXPECT_NE(Printable(text), text) << "what the API refuses: Printable(x) != x";
  }
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
  // A cooldown ending later than any instance could have set it (a host far ahead, an edit) is over.
  s.open_until_epoch_sec = int64_t{1} << 62;
  EXPECT_EQ(breaker::PlanPermission(s, c, 99'250).step, PermissionPlan::Step::kClaimProbe);
  s.open_until_epoch_sec = breaker::LatestPlausibleOpenUntil(99'250, c);
  EXPECT_EQ(breaker::PlanPermission(s, c, 99'250).step, PermissionPlan::Step::kDefer);
  s.open_until_epoch_sec += 1;
  EXPECT_EQ(breaker::PlanPermission(s, c, 99'250).step, PermissionPlan::Step::kClaimProbe);
  s.open_until_epoch_sec = 100;

  s.state = State::kHalfOpen;
  s.half_open_probe_in_flight = true;
  s.half_open_probe_expires_at = 130;
  // Taken over once the claim's expiry and the clock skew allowed (S7) have passed.
  const int64_t take_over_ms = (130 + c.max_clock_skew_s) * 1000;
  p = breaker::PlanPermission(s, c, take_over_ms - 1);
  EXPECT_EQ(p.step, PermissionPlan::Step::kDefer);
  EXPECT_EQ(p.reason, DeferReason::kProbeInFlight);
  EXPECT_EQ(breaker::PlanPermission(s, c, take_over_ms).step, PermissionPlan::Step::kTakeOverProbe);
  c.max_clock_skew_s = 0;
  EXPECT_EQ(breaker::PlanPermission(s, c, 130'000).step, PermissionPlan::Step::kTakeOverProbe);
  c.max_clock_skew_s = 5;
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

// Every consequence of a downstream result, decided by one pure function (design §5, S5, S12, §8,
// §17.3): a table of cases.
TEST(DownstreamOutcomeTest, TheClassificationTable) {
  using Kind = DownstreamResult::Kind;
  struct Case {
    const char* name;
    DownstreamResult result;
    bool body_is_json;
    const char* outcome;
    const char* reason;  // as stored
    BreakerEffect breaker;
    IntentEffect intent;
    std::optional<int64_t> retry_after_s;
    bool throttles;
    bool counts_for_slo;
    bool error_bad;
  };
  const DownstreamResult ok{Kind::kResponse, 200, "{}", std::nullopt, 20};
  auto rpc = [](int code) {
    DownstreamResult r{Kind::kRpcError, 200, R"({"code":0,"message":"m"})", std::nullopt, 4};
    r.rpc_code = code;
    return r;
  };
  auto with = [](DownstreamResult r, int status, std::optional<int64_t> retry_after) {
    r.status = status;
    r.retry_after_s = retry_after;
    return r;
  };
  const std::vector<Case> cases = {
      {"2xx json",
       ok,
       true,
       "SUCCEEDED",
       "",
       BreakerEffect::kSuccess,
       IntentEffect::kSucceeded,
       {},
       false,
       true,
       false},
      {"2xx unreadable",
       ok,
       false,
       "FAILED",
       "downstream_error",
       BreakerEffect::kFailure,
       IntentEffect::kUnknown,
       {},
       false,
       true,
       true},
      {"400",
       with(ok, 400, {}),
       true,
       "FAILED",
       "downstream_rejected",
       BreakerEffect::kSuccess,
       IntentEffect::kFailed,
       {},
       false,
       true,
       false},
      {"429 no Retry-After", with(ok, 429, {}), true, "DEFERRED", "downstream_throttled", BreakerEffect::kThrottled,
       IntentEffect::kRelease, 1, false, true, false},
      {"429 Retry-After 7", with(ok, 429, 7), true, "DEFERRED", "downstream_throttled", BreakerEffect::kThrottled,
       IntentEffect::kRelease, 7, true, true, false},
      {"429 Retry-After huge", with(ok, 429, 999999), true, "DEFERRED", "downstream_throttled",
       BreakerEffect::kThrottled, IntentEffect::kRelease, breaker::kMaxThrottleS, true, true, false},
      {"503 Retry-After 2", with(ok, 503, 2), true, "DEFERRED", "downstream_throttled", BreakerEffect::kThrottled,
       IntentEffect::kRelease, 2, true, true, false},
      {"503 bare",
       with(ok, 503, {}),
       true,
       "FAILED",
       "downstream_error",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
      {"500",
       with(ok, 500, {}),
       true,
       "FAILED",
       "downstream_error",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
      {"timeout",
       {Kind::kTimeout, 0, "", {}, 1000},
       false,
       "FAILED",
       "timeout",
       BreakerEffect::kFailure,
       IntentEffect::kUnknown,
       {},
       false,
       true,
       true},
      {"connect failed",
       {Kind::kConnectFailed, 0, "", {}, 1},
       false,
       "FAILED",
       "connection_failed",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
      {"connection lost",
       {Kind::kConnectionLost, 0, "", {}, 5},
       false,
       "FAILED",
       "connection_lost",
       BreakerEffect::kFailure,
       IntentEffect::kUnknown,
       {},
       false,
       true,
       true},
      {"too large",
       {Kind::kResponseInvalid, 0, "", {}, 5},
       false,
       "FAILED",
       "downstream_error",
       BreakerEffect::kFailure,
       IntentEffect::kUnknown,
       {},
       false,
       true,
       true},
      {"local EMFILE",
       {Kind::kLocalResource, 0, "", {}, 0},
       false,
       "DEFERRED",
       "gateway_overloaded",
       BreakerEffect::kNone,
       IntentEffect::kRelease,
       1,
       false,
       false,
       false},
      // Design §13: a handshake or certificate failure and a token endpoint that fails are the
      // connector's trouble (breaker failures), and nothing reached the downstream's application.
      {"tls error",
       {Kind::kTlsError, 0, "", {}, 3},
       false,
       "FAILED",
       "tls_error",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
      {"credentials",
       {Kind::kCredentialsUnavailable, 0, "", {}, 3},
       false,
       "FAILED",
       "credentials_unavailable",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
      // Design §14, MCP: a result marked isError and the JSON-RPC errors that name the caller's
      // mistake are tool-level errors (never breaker failures, good for the SLO); -32603 and any
      // other code, and an MCP server's 5xx or 4xx over HTTP, are classified like any downstream's.
      {"mcp isError",
       {Kind::kToolError, 200, R"({"isError":true})", {}, 4},
       false,
       "FAILED",
       "tool_error",
       BreakerEffect::kSuccess,
       IntentEffect::kFailed,
       {},
       false,
       true,
       false},
      {"mcp -32600",
       rpc(-32600),
       false,
       "FAILED",
       "tool_rejected",
       BreakerEffect::kSuccess,
       IntentEffect::kFailed,
       {},
       false,
       true,
       false},
      {"mcp -32601",
       rpc(-32601),
       false,
       "FAILED",
       "tool_rejected",
       BreakerEffect::kSuccess,
       IntentEffect::kFailed,
       {},
       false,
       true,
       false},
      {"mcp -32602",
       rpc(-32602),
       false,
       "FAILED",
       "tool_rejected",
       BreakerEffect::kSuccess,
       IntentEffect::kFailed,
       {},
       false,
       true,
       false},
      {"mcp -32603",
       rpc(-32603),
       false,
       "FAILED",
       "downstream_error",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
      {"mcp -32000",
       rpc(-32000),
       false,
       "FAILED",
       "downstream_error",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
      {"mcp 1 (server-defined)",
       rpc(1),
       false,
       "FAILED",
       "downstream_error",
       BreakerEffect::kFailure,
       IntentEffect::kFailed,
       {},
       false,
       true,
       true},
  };
  breaker::Config config;
  for (const Case& c : cases) {
    const Classification k = ClassifyDownstream(c.result, c.body_is_json, config, 1000);
    EXPECT_EQ(ToString(k.outcome), c.outcome) << c.name;
    EXPECT_EQ(ToString(k.reason), c.reason) << c.name;
    EXPECT_EQ(k.breaker, c.breaker) << c.name;
    EXPECT_EQ(k.intent, c.intent) << c.name;
    EXPECT_EQ(k.retry_after_s, c.retry_after_s) << c.name;
    EXPECT_EQ(k.throttles_connector, c.throttles) << c.name;
    EXPECT_EQ(k.counts_for_slo, c.counts_for_slo) << c.name;
    EXPECT_EQ(k.error_bad, c.error_bad) << c.name;
  }
  // A slow success is a breaker failure when slow_call_ms says so, and slow for the latency SLI.
  config.slow_call_ms = 10;
  const Classification slow = ClassifyDownstream(ok, true, config, 15);
  EXPECT_EQ(slow.breaker, BreakerEffect::kFailure);
  EXPECT_TRUE(slow.latency_bad);
  EXPECT_FALSE(slow.error_bad);
}

TEST(DownstreamOutcomeTest, WhatTheDashboardCountsAsADownstreamFailure) {
  using Kind = DownstreamResult::Kind;
  auto of = [](Kind kind, int status = 0, int code = 0) {
    DownstreamResult r;
    r.kind = kind;
    r.status = status;
    r.rpc_code = code;
    return r;
  };
  EXPECT_FALSE(IsDownstreamFailure(of(Kind::kResponse, 200)));
  EXPECT_FALSE(IsDownstreamFailure(of(Kind::kResponse, 404)));
  EXPECT_TRUE(IsDownstreamFailure(of(Kind::kResponse, 503)));
  EXPECT_TRUE(IsDownstreamFailure(of(Kind::kTimeout)));
  EXPECT_FALSE(IsDownstreamFailure(of(Kind::kLocalResource)));
  EXPECT_FALSE(IsDownstreamFailure(of(Kind::kToolError, 200)));
  EXPECT_FALSE(IsDownstreamFailure(of(Kind::kRpcError, 200, -32602)));
  EXPECT_TRUE(IsDownstreamFailure(of(Kind::kRpcError, 200, -32603)));
}

// A Retry-After holds the connector whatever the state, except where the breaker already defers
// longer (its cooldown) or an operator forced it open.
TEST(BreakerRulesTest, AThrottledConnectorDefersEveryCallAndEveryProbe) {
  const int64_t now_ms = 1'700'000'000'500;
  breaker::Config config;
  Snapshot s;
  s.throttled_until_epoch_sec = now_ms / 1000 + 3;
  const PermissionPlan closed = breaker::PlanPermission(s, config, now_ms);
  EXPECT_EQ(closed.step, PermissionPlan::Step::kDefer);
  EXPECT_EQ(closed.reason, DeferReason::kDownstreamThrottled);
  EXPECT_EQ(closed.retry_after_ms, 2500);
  s.state = State::kOpen;
  s.open_until_epoch_sec = now_ms / 1000;  // cooldown over: the probe would run, but not while throttled
  EXPECT_EQ(breaker::PlanPermission(s, config, now_ms).reason, DeferReason::kDownstreamThrottled);
  s.throttled_until_epoch_sec = now_ms / 1000;  // over
  EXPECT_EQ(breaker::PlanPermission(s, config, now_ms).step, PermissionPlan::Step::kClaimProbe);
  EXPECT_EQ(breaker::ThrottledUntil(now_ms, 7), now_ms / 1000 + 1 + 7);
  EXPECT_EQ(breaker::ThrottledUntil(now_ms, 0), now_ms / 1000 + 1 + 1);
}

}  // namespace
}  // namespace toolgate

namespace toolgate {
namespace {

// Design §13: which attempts may be followed by another.
TEST(DecideRetryTest, OnlySafeAttemptsAreRetried) {
  using Kind = DownstreamResult::Kind;
  auto response = [](int status, std::optional<int64_t> retry_after = {}) {
    DownstreamResult r;
    r.status = status;
    r.retry_after_s = retry_after;
    return r;
  };
  auto of = [](Kind kind) {
    DownstreamResult r;
    r.kind = kind;
    return r;
  };
  struct Case {
    std::string name;
    DownstreamResult attempt;
    bool idempotent;
    bool retry;
    std::optional<int64_t> wait_ms;
  };
  const std::vector<Case> cases = {
      {"connect failed, POST", of(Kind::kConnectFailed), false, true, {}},
      {"timeout, POST (never)", of(Kind::kTimeout), false, false, {}},
      {"timeout, idempotent", of(Kind::kTimeout), true, true, {}},
      {"lost, POST", of(Kind::kConnectionLost), false, false, {}},
      {"lost, idempotent", of(Kind::kConnectionLost), true, true, {}},
      {"502 POST", response(502), false, false, {}},
      {"502 idempotent", response(502), true, true, {}},
      {"503 idempotent", response(503), true, true, {}},
      {"504 idempotent", response(504), true, true, {}},
      {"500 idempotent", response(500), true, false, {}},
      {"400 idempotent", response(400), true, false, {}},
      {"200", response(200), true, false, {}},
      {"429 POST", response(429), false, true, {}},
      {"429 POST Retry-After 2", response(429, 2), false, true, 2000},
      {"503 POST Retry-After 2", response(503, 2), false, false, {}},
      {"503 idempotent Retry-After 2", response(503, 2), true, true, 2000},
      {"tls", of(Kind::kTlsError), true, false, {}},
      {"mcp isError, idempotent", of(Kind::kToolError), true, false, {}},
      {"mcp JSON-RPC error, idempotent", of(Kind::kRpcError), true, false, {}},
      {"credentials", of(Kind::kCredentialsUnavailable), true, false, {}},
      {"local", of(Kind::kLocalResource), true, false, {}},
      {"invalid", of(Kind::kResponseInvalid), true, false, {}},
  };
  for (const Case& c : cases) {
    const RetryVerdict v = DecideRetry(c.attempt, c.idempotent);
    EXPECT_EQ(v.retry, c.retry) << c.name;
    EXPECT_EQ(v.wait_ms, c.wait_ms) << c.name;
  }
}

}  // namespace
}  // namespace toolgate

namespace toolgate {

// The scan before a body is parsed: values are counted as a parse makes them (the text itself, and
// one for each array element and object member), so the count bounds the tree, whatever the bytes.
TEST(JsonTextTest, ValuesAreCountedAsAParseMakesThemAndStringsDoNotCount) {
  struct Case {
    const char* text;
    int64_t values;
  };
  for (const Case& c :
       {Case{"0", 1}, Case{"{}", 1}, Case{"[ ]", 1}, Case{"[0]", 2}, Case{"[0,0,0]", 4}, Case{R"({"a":1,"b":[]})", 3},
        Case{R"({"a":{"b":{"c":[1,2]}}})", 6}, Case{R"(["a,b,c","[{,}]"])", 3}, Case{R"(["\",["])", 2},
        Case{"[[],[],{}]", 4}, Case{" [\n\t1 , 2 ]", 3}}) {
    EXPECT_EQ(CheckJsonText(c.text, 64, c.values), JsonTextFault::kNone) << c.text;
    if (c.values > 1) EXPECT_EQ(CheckJsonText(c.text, 64, c.values - 1), JsonTextFault::kTooManyValues) << c.text;
  }
  std::string many = "[0";
  for (int i = 1; i < 100'000; ++i) many += ",0";
  many += "]";  // 100,001 values in ~200 KB: a tree of ~1.6 MB
  EXPECT_EQ(CheckJsonText(many, 64, 100'001), JsonTextFault::kNone);
  EXPECT_EQ(CheckJsonText(many, 64, 100'000), JsonTextFault::kTooManyValues);
  // Depth is checked as before, in the same pass.
  EXPECT_EQ(CheckJsonText("[[[0]]]", 3, 100), JsonTextFault::kNone);
  EXPECT_EQ(CheckJsonText("[[[0]]]", 2, 100), JsonTextFault::kTooDeep);
  EXPECT_EQ(CheckJsonText(R"(["[[[[","{{{{"])", 1, 100), JsonTextFault::kNone);
}

// The scan's count is exactly the parsed value's, so a difference can only be a key the parser kept
// once of several: how a body that repeats a key is found without a parse of its own.
TEST(JsonTextTest, TheScansCountIsTheParsedValuesUnlessAKeyIsRepeated) {
  for (const char* text :
       {"0", "{}", "[ ]", "[0,0,0]", R"({"a":1,"b":[]})", R"({"a":{"b":{"c":[1,2]}}})", R"(["a,b,c","[{,}]"])",
        R"(["\",["])", "[[],[],{}]", " [\n\t1 , 2 ]", R"({"a":{"a":1},"b":{"a":2}})", R"([{"k":1},{"k":1}])"}) {
    int64_t counted = -1;
    ASSERT_EQ(CheckJsonText(text, 64, 1000, &counted), JsonTextFault::kNone) << text;
    EXPECT_EQ(counted, JsonValueCount(nlohmann::json::parse(text))) << text;
  }
  for (const char* repeated : {R"({"a":1,"a":2})", R"({"x":{"name":"a","name":"b"}})", R"([{"k":[],"k":{}}])"}) {
    int64_t counted = -1;
    ASSERT_EQ(CheckJsonText(repeated, 64, 1000, &counted), JsonTextFault::kNone) << repeated;
    EXPECT_EQ(counted, JsonValueCount(nlohmann::json::parse(repeated)) + 1) << repeated;
  }
}

}  // namespace toolgate
