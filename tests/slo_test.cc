// SLO evaluation (design §8): the burn-rate arithmetic, the SRE Workbook's multiwindow tiers over
// fleet-wide counters in the store, the low-traffic guard, counts of two instances adding up, one
// announcement per alarm change across instances, and counts kept through a store outage.
// Time is a ManualClock; the store is the memory backend (the counters' own conformance is the
// store suite's: they are ordinary ADD updates and queries).

#include <cmath>

#include "fault_injecting_store.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_support.h"
#include "toolgate/config.h"
#include "toolgate/domain/slo.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/slo_evaluator.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/slo_counters.h"

namespace toolgate {
namespace {

using json = nlohmann::json;

TEST(SloMathTest, BurnRateIsErrorRatioOverAllowedRatio) {
  EXPECT_NEAR(slo::BurnRate({1000, 1}, 0.999), 1.0, 1e-9);
  EXPECT_NEAR(slo::BurnRate({100, 15}, 0.999), 150.0, 1e-9);
  EXPECT_EQ(slo::BurnRate({0, 0}, 0.999), 0.0);
}

TEST(SloMathTest, TargetsThatMakeATierImpossibleAreRefused) {
  EXPECT_TRUE(slo::ValidateTarget(0.999).ok());
  EXPECT_TRUE(slo::ValidateTarget(0.95).ok());      // 14.4 × 0.05 = 0.72 < 1
  const absl::Status s = slo::ValidateTarget(0.9);  // 14.4 × 0.1 ≥ 1: the 1h/5m page could never fire
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("1h/5m"), std::string::npos) << s;
  EXPECT_FALSE(slo::ValidateTarget(1.0).ok());

  auto c = ParseConfig(
      "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n[connectors.crm.slo]\nerror_target = 0.9\n", "t.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("connectors.crm.slo.error_target"), std::string::npos) << c.status();
}

TEST(SloMathTest, BudgetAndTimeToExhaustion) {
  EXPECT_DOUBLE_EQ(slo::BudgetRemaining({0, 0}, 0.999), 1.0);
  EXPECT_NEAR(slo::BudgetRemaining({100'000, 25}, 0.999), 0.75, 1e-9);  // 25 of 100 allowed
  EXPECT_NEAR(slo::BudgetRemaining({100'000, 200}, 0.999), -1.0, 1e-9);
  // Half the budget left, burning at 1: half the period (15 days).
  EXPECT_EQ(*slo::SecondsToExhaustion(0.5, 1.0), 15 * 24 * 3600);
  EXPECT_EQ(*slo::SecondsToExhaustion(0.5, 10.0), 15 * 24 * 360);
  EXPECT_FALSE(slo::SecondsToExhaustion(0.5, 0.0).has_value());
  EXPECT_EQ(*slo::SecondsToExhaustion(-0.1, 3.0), 0);
}

TEST(SloMathTest, SumLastCoversExactlyTheWindow) {
  slo::Buckets b;
  for (int64_t m = 100; m < 110; ++m) b[m] = {10, 1, 2};
  EXPECT_EQ(slo::SumLast(b, 109, 5, slo::Sli::kToolError).total, 50);  // 105..109
  EXPECT_EQ(slo::SumLast(b, 109, 5, slo::Sli::kToolLatency).bad, 10);
  EXPECT_EQ(slo::SumLast(b, 104, 100, slo::Sli::kToolError).total, 50);  // up to 104 only
}

TEST(SloMathTest, PercentilesInterpolateWithinTheHistogramBucket) {
  std::array<int64_t, kLatencyBucketCount> h{};
  h[static_cast<size_t>(SloCounters::LatencyBucket(40))] = 100;  // all in (25, 50]
  EXPECT_NEAR(*SloEvaluator::Percentile(h, 0.5), 37.5, 1e-9);
  EXPECT_NEAR(*SloEvaluator::Percentile(h, 1.0), 50.0, 1e-9);
  h[static_cast<size_t>(SloCounters::LatencyBucket(999'999))] = 100;  // and as many over 30 s
  EXPECT_EQ(*SloEvaluator::Percentile(h, 0.99), 30'000.0);
  EXPECT_FALSE(SloEvaluator::Percentile({}, 0.5).has_value());
  EXPECT_EQ(SloCounters::LatencyBucket(5), 0);
  EXPECT_EQ(SloCounters::LatencyBucket(6), 1);
}

// One instance's view of the fleet: its counters and evaluator over a shared store, ledger and clock.
struct Instance {
  Instance(store::ItemStore& store, ManualClock& clock, const Config& config, Ledger& ledger)
      : counters(store, clock), evaluator(config, counters, ledger, metrics, clock, nullptr) {}
  Metrics metrics;
  SloCounters counters;
  SloEvaluator evaluator;
};

class SloEvaluationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseConfig(
        "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n[connectors.crm.slo]\nerror_target = 0.999\n"
        "latency_target = 0.99\nlatency_threshold_ms = 500\n",
        "slo.toml");
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
  }
  // `calls` calls this minute on `inst`, the first `bad` of them errors.
  void Traffic(Instance& inst, int calls, int bad) {
    for (int i = 0; i < calls; ++i) inst.counters.Record("crm", i < bad, 20, false);
  }
  const SloView& View(const SloSnapshot& s, slo::Sli sli) {
    for (const auto& v : s.slos) {
      if (v.connector == "crm" && v.sli == sli) return v;
    }
    ADD_FAILURE() << "no view";
    static SloView none;
    return none;
  }
  bool Firing(const SloSnapshot& s, std::string_view tier) {
    for (const auto& a : View(s, slo::Sli::kToolError).alarms) {
      if (a.tier->name == tier) return a.firing;
    }
    return false;
  }
  std::vector<LedgerEvent> AuditOf(std::string_view type) {
    auto events = ledger_.ReadAudit(1000, std::nullopt);
    EXPECT_TRUE(events.ok()) << events.status();
    std::vector<LedgerEvent> out;
    for (const auto& e : *events) {
      if (e.type == type) out.push_back(e);
    }
    return out;
  }
  void Minute() { clock_.advance(std::chrono::minutes(1)); }

  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore store_{clock_};
  Ledger ledger_{store_, clock_};
  Config config_;
};

// The SRE Workbook (ch. 5, "Alerting on SLOs"): at a 99.9 % target, a 15 % error ratio makes the
// 1 h / 5 m tier (factor 14.4) page once the hour holds 1.44 % errors, 5.76 minutes after onset.
TEST_F(SloEvaluationTest, TheWorkbookExamplePagesAboutSixMinutesAfterOnsetAndResolves) {
  Instance a(store_, clock_, config_, ledger_);
  for (int m = 0; m < 3 * 24 * 60; ++m) {  // three healthy days at 100 calls a minute
    Traffic(a, 100, 0);
    ASSERT_TRUE(a.counters.Flush().ok());
    Minute();
  }
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_FALSE(Firing(a.evaluator.Snapshot(), "1h/5m"));
  int fired_after = -1;
  for (int m = 1; m <= 10; ++m) {  // 15 % errors for ten minutes
    Traffic(a, 100, 15);
    ASSERT_TRUE(a.evaluator.Tick().ok());
    if (fired_after < 0 && Firing(a.evaluator.Snapshot(), "1h/5m")) fired_after = m;
    Minute();
  }
  EXPECT_GE(fired_after, 5);
  EXPECT_LE(fired_after, 7);
  const SloSnapshot during = a.evaluator.Snapshot();
  EXPECT_NEAR(View(during, slo::Sli::kToolError).burn_rates.at("5m"), 150.0, 1e-6);
  EXPECT_EQ(View(during, slo::Sli::kToolLatency).burn_rates.at("5m"), 0.0);  // fast errors are not slow calls
  // Only the fast page: over 6 h the ratio is 0.42 % (< 6 × 0.1 %), over a day 0.1 % (< 3 × 0.1 %).
  ASSERT_EQ(AuditOf("SLO_ALARM_FIRING").size(), 1u);
  EXPECT_FALSE(Firing(during, "6h/30m"));
  EXPECT_FALSE(Firing(during, "1d/2h"));
  const json data = json::parse(AuditOf("SLO_ALARM_FIRING").front().data);
  EXPECT_EQ(data["tier"], "1h/5m");
  EXPECT_EQ(data["severity"], "page");
  EXPECT_EQ(data["slo"], "tool_error");
  EXPECT_GT(data["long_burn_rate"].get<double>(), 14.4);
  EXPECT_NE(a.metrics.Serialize().find(R"(toolgate_slo_alarm{connector="crm",severity="page",slo="tool_error"} 1)"),
            std::string::npos);

  int resolved_after = -1;  // healthy again: the 5 m window empties and the page resolves
  for (int m = 1; m <= 10; ++m) {
    Traffic(a, 100, 0);
    ASSERT_TRUE(a.evaluator.Tick().ok());
    if (resolved_after < 0 && !Firing(a.evaluator.Snapshot(), "1h/5m")) resolved_after = m;
    Minute();
  }
  EXPECT_GE(resolved_after, 1);
  EXPECT_LE(resolved_after, 6);
  const auto resolved = AuditOf("SLO_ALARM_RESOLVED");
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(json::parse(resolved.back().data)["tier"], "1h/5m");
  EXPECT_NE(a.metrics.Serialize().find(R"(toolgate_slo_alarm{connector="crm",severity="page",slo="tool_error"} 0)"),
            std::string::npos);
  // The budget spent: 150 bad of 0.1 % of the calls in the period.
  const SloSnapshot after = a.evaluator.Snapshot();
  const SloView& v = View(after, slo::Sli::kToolError);
  EXPECT_NEAR(v.budget_remaining, 1.0 - 150.0 / (0.001 * static_cast<double>(v.period.total)), 1e-9);
  EXPECT_GT(v.budget_remaining, 0.0);  // 150 of about 450 allowed bad calls in 3 days of traffic
  EXPECT_LT(v.budget_remaining, 0.7);
}

TEST_F(SloEvaluationTest, FewCallsNeverPageButEnoughDo) {
  Instance a(store_, clock_, config_, ledger_);
  Traffic(a, 10, 5);  // half failing, but only 10 calls in the hour: below min_events (20)
  ASSERT_TRUE(a.evaluator.Tick().ok());
  const SloSnapshot quiet = a.evaluator.Snapshot();
  EXPECT_GT(View(quiet, slo::Sli::kToolError).burn_rates.at("1h"), 14.4);
  EXPECT_FALSE(Firing(quiet, "1h/5m"));
  EXPECT_TRUE(AuditOf("SLO_ALARM_FIRING").empty());
  Traffic(a, 10, 5);  // 20 calls: now it counts
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_TRUE(Firing(a.evaluator.Snapshot(), "1h/5m"));
}

TEST_F(SloEvaluationTest, LatencySloCountsSlowCallsAgainstTheThreshold) {
  Instance a(store_, clock_, config_, ledger_);
  for (int i = 0; i < 100; ++i) a.counters.Record("crm", false, i < 30 ? 900 : 40, i < 30);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  const SloSnapshot s = a.evaluator.Snapshot();
  EXPECT_NEAR(View(s, slo::Sli::kToolLatency).burn_rates.at("5m"), 0.30 / 0.01, 1e-9);
  EXPECT_EQ(View(s, slo::Sli::kToolError).burn_rates.at("5m"), 0.0);
  EXPECT_EQ(View(s, slo::Sli::kToolLatency).latency_threshold_ms, 500);
  const auto& minutes = s.last_hour.at("crm");
  ASSERT_EQ(minutes.size(), 60u);
  EXPECT_EQ(minutes.back().counts.total, 100);
  ASSERT_TRUE(minutes.back().p99_ms.has_value());
  EXPECT_GT(*minutes.back().p99_ms, 500.0);  // 30 % of calls in (500, 1000]
  EXPECT_LT(*minutes.back().p50_ms, 50.0);
  EXPECT_EQ(minutes.front().counts.total, 0);
}

TEST_F(SloEvaluationTest, TwoInstancesCountsAddUpAndOneOfThemAnnounces) {
  Instance a(store_, clock_, config_, ledger_);
  Instance b(store_, clock_, config_, ledger_);
  Traffic(a, 30, 0);
  Traffic(b, 40, 0);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  ASSERT_TRUE(b.evaluator.Tick().ok());
  EXPECT_EQ(View(b.evaluator.Snapshot(), slo::Sli::kToolError).windows.at("5m").total, 70);
  ASSERT_TRUE(a.evaluator.Tick().ok());  // a sees b's counts too
  EXPECT_EQ(View(a.evaluator.Snapshot(), slo::Sli::kToolError).windows.at("1h").total, 70);

  Traffic(a, 20, 20);  // a storm seen by both: each evaluates "firing"
  Traffic(b, 20, 20);
  ASSERT_TRUE(a.counters.Flush().ok());
  ASSERT_TRUE(b.evaluator.Tick().ok());
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_TRUE(Firing(a.evaluator.Snapshot(), "1h/5m"));
  EXPECT_TRUE(Firing(b.evaluator.Snapshot(), "1h/5m"));
  size_t page_events = 0;
  for (const auto& e : AuditOf("SLO_ALARM_FIRING")) page_events += json::parse(e.data)["tier"] == "1h/5m" ? 1 : 0;
  EXPECT_EQ(page_events, 1u) << "each alarm change is announced once across the fleet";
  auto alarms = a.counters.ReadAlarms("crm");
  ASSERT_TRUE(alarms.ok());
  EXPECT_TRUE(alarms->at("tool_error#1h/5m").firing);
}

TEST_F(SloEvaluationTest, CountsSurviveAStoreOutageAndAreWrittenOnce) {
  testing::FaultInjectingStore faulty(store_);
  SloCounters counters(faulty, clock_);
  for (int i = 0; i < 25; ++i) counters.Record("crm", i < 5, 10, false);
  faulty.SetDown(true);
  EXPECT_FALSE(counters.Flush().ok());
  EXPECT_EQ(counters.pending_calls(), 25);
  counters.Record("crm", false, 10, false);
  faulty.SetDown(false);
  ASSERT_TRUE(counters.Flush().ok());
  EXPECT_EQ(counters.pending_calls(), 0);
  ASSERT_TRUE(counters.Flush().ok());  // nothing pending: nothing added twice
  auto series = SloCounters(store_, clock_).Read("crm");
  ASSERT_TRUE(series.ok()) << series.status();
  const int64_t minute = clock_.now_epoch_ms() / 60'000;
  EXPECT_EQ(series->minutes.at(minute).counts.total, 26);
  EXPECT_EQ(series->minutes.at(minute).counts.error_bad, 5);
  EXPECT_EQ(series->hours.at(minute / 60).counts.total, 26);
}

TEST_F(SloEvaluationTest, ADamagedCounterIsReportedNotTrusted) {
  const int64_t minute = clock_.now_epoch_ms() / 60'000;
  char sk[32];
  std::snprintf(sk, sizeof sk, "MIN#%010lld", static_cast<long long>(minute));
  ASSERT_TRUE(store_.Put({"SLO#crm", sk}, {{"total", std::string("lots")}}, store::Condition::Always()).ok());
  auto series = SloCounters(store_, clock_).Read("crm");
  ASSERT_FALSE(series.ok());
  EXPECT_EQ(series.status().code(), absl::StatusCode::kDataLoss);
  Instance a(store_, clock_, config_, ledger_);
  EXPECT_FALSE(a.evaluator.Tick().ok());
  EXPECT_FALSE(a.evaluator.Snapshot().error.empty());
}

}  // namespace
}  // namespace toolgate
