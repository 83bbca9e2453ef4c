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
// Keeps what the evaluator gave the notifier.
struct RecordingNotifier final : AlarmNotifier {
  void Notify(std::string alarm_key, std::string json_payload) override {
    sent.emplace_back(std::move(alarm_key), json::parse(json_payload));
  }
  std::vector<std::pair<std::string, json>> sent;
};

struct Instance {
  Instance(store::ItemStore& store, ManualClock& clock, const Config& config, Ledger& ledger,
           AlarmNotifier* notifier = nullptr)
      : counters(store, clock), evaluator(config, counters, ledger, metrics, clock, notifier, NextId()) {}
  static std::string NextId() {
    static int n = 0;
    return "instance-" + std::to_string(++n);
  }
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
    auto both = ParseConfig(
        "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\n[connectors.flap]\nbase_url = \"http://127.0.0.1:2\"\n",
        "slo.toml");
    ASSERT_TRUE(both.ok()) << both.status();
    with_flap_ = *both;
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
  // The SLO_ALARM_FIRING audit events of the page tier 1h/5m.
  size_t PageEvents() {
    size_t n = 0;
    for (const auto& e : AuditOf("SLO_ALARM_FIRING")) n += json::parse(e.data)["tier"] == "1h/5m" ? 1 : 0;
    return n;
  }
  void Minute() { clock_.advance(std::chrono::minutes(1)); }
  // An instance whose config still has connector `flap` (besides crm) fires all four of flap's
  // alarms and goes: the fixture's config_ no longer has flap. Call it in ASSERT_NO_FATAL_FAILURE.
  void FireFlapOnAnInstanceThatStillHasIt() {
    Instance old(store_, clock_, with_flap_, ledger_);
    for (int i = 0; i < 30; ++i) old.counters.Record("flap", true, 20, false);
    ASSERT_TRUE(old.evaluator.Tick().ok());
    ASSERT_EQ(AuditOf("SLO_ALARM_FIRING").size(), 4u);
  }

  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore store_{clock_};
  Ledger ledger_{store_, clock_};
  Config config_;     // crm
  Config with_flap_;  // crm and flap (no SLO settings of their own)
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
  EXPECT_EQ(PageEvents(), 1u) << "each alarm change is announced once across the fleet";
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

// A counter item that is not as toolgate writes it (a count that is not a count, a key that is not a
// bucket) is left out of the counts, named and counted as damage at every evaluation; the rest of
// the connector's counts are evaluated as usual.
TEST_F(SloEvaluationTest, ADamagedCounterIsLeftOutNamedAndCounted) {
  Instance a(store_, clock_, config_, ledger_);
  const int64_t damaged_minute = clock_.now_epoch_ms() / 60'000;
  Traffic(a, 40, 0);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  Minute();
  Traffic(a, 20, 0);
  ASSERT_TRUE(a.counters.Flush().ok());
  char sk[32];
  std::snprintf(sk, sizeof sk, "MIN#%010lld", static_cast<long long>(damaged_minute));
  ASSERT_TRUE(store_
                  .Update({"SLO#crm", sk}, {store::UpdateOp::Set(store::AttributePath::Top("total"), "lots")},
                          store::Condition::Always(), store::ReturnValues::kNone)
                  .ok());
  ASSERT_TRUE(store_.Put({"SLO#crm", "MIN#12ab"}, {{"total", 7}}, store::Condition::Always()).ok());

  auto series = SloCounters(store_, clock_).Read("crm");
  ASSERT_TRUE(series.ok()) << series.status();
  EXPECT_EQ(series->minutes.count(damaged_minute), 0u);
  EXPECT_EQ(series->minutes.at(damaged_minute + 1).counts.total, 20);
  ASSERT_EQ(series->damaged.size(), 2u);
  const std::string both = series->damaged[0] + "; " + series->damaged[1];
  EXPECT_NE(both.find(std::string("SLO#crm/") + sk + ": total is not a count"), std::string::npos) << both;
  EXPECT_NE(both.find("SLO#crm/MIN#12ab: not a bucket key"), std::string::npos) << both;

  EXPECT_TRUE(a.evaluator.Tick().ok()) << "damage is reported, and is no failure of the evaluation";
  const SloSnapshot snap = a.evaluator.Snapshot();
  EXPECT_EQ(View(snap, slo::Sli::kToolError).windows.at("5m").total, 20);  // evaluated, without the damaged minute
  EXPECT_NE(snap.error.find(std::string("SLO#crm/") + sk), std::string::npos) << snap.error;
  EXPECT_NE(a.metrics.Serialize().find(R"(toolgate_slo_evaluation_errors_total{kind="damaged_item"} 1)"),
            std::string::npos);
  EXPECT_TRUE(a.evaluator.Tick().ok());  // counted at every evaluation, until the item goes
  const std::string text = a.metrics.Serialize();
  EXPECT_NE(text.find(R"(toolgate_slo_evaluation_errors_total{kind="damaged_item"} 2)"), std::string::npos);
  EXPECT_NE(text.find(R"(toolgate_slo_evaluation_errors_total{kind="store_error"} 0)"), std::string::npos);
}

// An evaluation the store failed is counted as such: the alarms are not being evaluated, which an
// operator must be able to alert on (the flush, the connector's reads: one each per evaluation).
TEST_F(SloEvaluationTest, AnEvaluationTheStoreFailedIsCounted) {
  testing::FaultInjectingStore faulty(store_);
  Metrics metrics;
  SloCounters counters(faulty, clock_);
  SloEvaluator evaluator(config_, counters, ledger_, metrics, clock_, nullptr, "instance-down");
  counters.Record("crm", false, 10, false);
  faulty.SetDown(true);
  EXPECT_EQ(evaluator.Tick().code(), absl::StatusCode::kUnavailable);
  // The flush, the pass over removed connectors and crm's evaluation.
  EXPECT_NE(metrics.Serialize().find(R"(toolgate_slo_evaluation_errors_total{kind="store_error"} 3)"),
            std::string::npos)
      << metrics.Serialize();
  faulty.SetDown(false);
  EXPECT_TRUE(evaluator.Tick().ok());
  EXPECT_NE(metrics.Serialize().find(R"(toolgate_slo_evaluation_errors_total{kind="store_error"} 3)"),
            std::string::npos);
  EXPECT_NE(metrics.Serialize().find(R"(toolgate_slo_evaluation_errors_total{kind="damaged_item"} 0)"),
            std::string::npos);
}

// An hour item is kept 31 days: a damaged one must not keep the connector's alarms quiet that long.
TEST_F(SloEvaluationTest, ADamagedHourCounterDoesNotSilenceTheConnectorsAlarms) {
  Instance a(store_, clock_, config_, ledger_);
  const int64_t hour = clock_.now_epoch_ms() / 3'600'000;
  char sk[32];
  std::snprintf(sk, sizeof sk, "HOUR#%08lld", static_cast<long long>(hour - 2));
  ASSERT_TRUE(store_.Put({"SLO#crm", sk}, {{"total", 1000}, {"error_bad", "many"}}, store::Condition::Always()).ok());
  Traffic(a, 100, 100);  // every call fails

  EXPECT_TRUE(a.evaluator.Tick().ok());
  EXPECT_TRUE(Firing(a.evaluator.Snapshot(), "1h/5m"));
  EXPECT_EQ(PageEvents(), 1u);
  EXPECT_NE(a.evaluator.Snapshot().error.find(std::string("SLO#crm/") + sk + ": error_bad is not a count"),
            std::string::npos)
      << a.evaluator.Snapshot().error;
}

// A damaged alarm item (here `firing` and `seq` not of their types) would never change again: its
// conditions and its ADD fail. It is rewritten as a change by one instance, announced once, and its
// sequence set above any change count so that receivers ordering by `seq` still order correctly.
TEST_F(SloEvaluationTest, ADamagedAlarmItemIsRewrittenAndItsAlarmStillFires) {
  ASSERT_TRUE(store_
                  .Put({"SLO#crm", "ALARM#tool_error#1h/5m"},
                       {{"firing", "yes"}, {"seq", "x"}, {"since_ms", 5}, {"announced", true}},
                       store::Condition::Always())
                  .ok());
  RecordingNotifier notifier;
  Instance a(store_, clock_, config_, ledger_, &notifier);
  Instance b(store_, clock_, config_, ledger_);
  Traffic(a, 100, 100);

  EXPECT_TRUE(a.evaluator.Tick().ok());  // the damage is reported (the snapshot's error), and repaired
  EXPECT_TRUE(Firing(a.evaluator.Snapshot(), "1h/5m"));
  EXPECT_NE(a.evaluator.Snapshot().error.find("SLO#crm/ALARM#tool_error#1h/5m: firing is not a boolean, seq is not a "
                                              "whole number"),
            std::string::npos)
      << a.evaluator.Snapshot().error;
  auto stored = a.counters.ReadAlarms("crm");
  ASSERT_TRUE(stored.ok()) << stored.status();
  const SloAlarmState& page = stored->at("tool_error#1h/5m");
  EXPECT_TRUE(page.damage.empty()) << page.damage;
  EXPECT_TRUE(page.firing);
  EXPECT_EQ(page.seq, clock_.now_epoch_ms());
  EXPECT_TRUE(page.announced);
  EXPECT_EQ(PageEvents(), 1u);
  size_t page_notes = 0;
  for (const auto& [key, payload] : notifier.sent) {
    if (key == "crm#tool_error#1h/5m") {
      ++page_notes;
      EXPECT_EQ(payload["seq"], clock_.now_epoch_ms());
    }
  }
  EXPECT_EQ(page_notes, 1u);

  ASSERT_TRUE(b.evaluator.Tick().ok());  // repaired: nothing to report, nothing announced again
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_EQ(PageEvents(), 1u);
  EXPECT_TRUE(a.evaluator.Snapshot().error.empty()) << a.evaluator.Snapshot().error;
}

// A damaged counter of one connector is that connector's problem: the connectors after it (config
// order) are still evaluated, their alarms fire and their gauges follow.
TEST_F(SloEvaluationTest, ADamagedCounterOfOneConnectorDoesNotBlindTheOthers) {
  Instance a(store_, clock_, with_flap_, ledger_);
  Traffic(a, 50, 0);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  ASSERT_EQ(View(a.evaluator.Snapshot(), slo::Sli::kToolError).windows.at("5m").total, 50);
  const int64_t minute = clock_.now_epoch_ms() / 60'000;
  char sk[32];
  std::snprintf(sk, sizeof sk, "MIN#%010lld", static_cast<long long>(minute));
  ASSERT_TRUE(store_
                  .Update({"SLO#crm", sk}, {store::UpdateOp::Set(store::AttributePath::Top("error_bad"), -1)},
                          store::Condition::Always(), store::ReturnValues::kNone)
                  .ok());
  for (int i = 0; i < 30; ++i) a.counters.Record("flap", true, 20, false);  // flap: every call fails

  EXPECT_TRUE(a.evaluator.Tick().ok());
  const SloSnapshot snap = a.evaluator.Snapshot();
  EXPECT_NE(snap.error.find(std::string("SLO#crm/") + sk), std::string::npos) << snap.error;
  bool flap_paged = false;
  for (const auto& v : snap.slos) {
    for (const auto& al : v.alarms) flap_paged |= v.connector == "flap" && v.sli == slo::Sli::kToolError && al.firing;
  }
  EXPECT_TRUE(flap_paged) << "flap is evaluated although one of crm's counters is damaged";
  const auto fired = AuditOf("SLO_ALARM_FIRING");
  EXPECT_EQ(fired.size(), 4u);  // every tier of flap's tool_error: 100 % errors burn at 200
  for (const auto& e : fired) EXPECT_EQ(json::parse(e.data)["connector_id"], "flap");
  EXPECT_NE(a.metrics.Serialize().find(R"(toolgate_slo_alarm{connector="flap",severity="page",slo="tool_error"} 1)"),
            std::string::npos);
  // crm is evaluated too, without its damaged minute.
  EXPECT_EQ(View(snap, slo::Sli::kToolError).windows.at("5m").total, 0);
  EXPECT_EQ(snap.last_hour.count("crm"), 1u);
}

// The webhook's payload names the alarm's change count and time, so a receiver can order what
// different instances (or retries) deliver in any order.
TEST_F(SloEvaluationTest, AnAlarmsNotificationsCarryItsSequenceAndTimeOfChange) {
  RecordingNotifier notifier;
  Instance a(store_, clock_, config_, ledger_, &notifier);
  Traffic(a, 30, 30);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  const int64_t fired_at = clock_.now_epoch_ms();
  for (int m = 0; m < 6; ++m) Minute();  // the 5-minute window empties: the fast page resolves
  Traffic(a, 30, 0);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  std::vector<json> page;
  for (const auto& [key, payload] : notifier.sent) {
    if (key == "crm#tool_error#1h/5m") page.push_back(payload);
  }
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0]["event"], "SLO_ALARM_FIRING");
  EXPECT_EQ(page[0]["seq"], 1);
  EXPECT_EQ(page[0]["changed_at_ms"], fired_at);
  EXPECT_EQ(page[1]["event"], "SLO_ALARM_RESOLVED");
  EXPECT_EQ(page[1]["seq"], 2);
  EXPECT_EQ(page[1]["changed_at_ms"], clock_.now_epoch_ms());
  EXPECT_EQ(a.counters.ReadAlarms("crm")->at("tool_error#1h/5m").seq, 2);
}

// Exactly one instance announces each change, also when the write that made it was applied but
// its answer was lost (a DynamoDB timeout): the change is left unclaimed, and the next evaluation
// (this instance's or another's) claims and announces it, once.
TEST_F(SloEvaluationTest, AChangeWhoseWriteAnswerWasLostIsStillAnnouncedOnce) {
  testing::FaultInjectingStore faulty(store_);
  Instance a(faulty, clock_, config_, ledger_);
  Instance b(store_, clock_, config_, ledger_);
  Traffic(a, 30, 30);
  faulty.ApplyThenFailOnce([](const store::ItemKey& k) { return k.sk == "ALARM#tool_error#1h/5m"; });
  EXPECT_FALSE(a.evaluator.Tick().ok());
  ASSERT_EQ(faulty.injected(), 1);
  ASSERT_TRUE(a.counters.ReadAlarms("crm")->at("tool_error#1h/5m").firing) << "the write went in";
  EXPECT_EQ(PageEvents(), 0u);

  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_EQ(PageEvents(), 1u) << "the change the lost answer hid is announced by the next evaluation";
  ASSERT_TRUE(b.evaluator.Tick().ok());
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_EQ(PageEvents(), 1u) << "and only once across the fleet";
  EXPECT_TRUE(a.counters.ReadAlarms("crm")->at("tool_error#1h/5m").announced);
}

// The same when the claim's answer is lost: the claimant finds its name on the change and announces.
TEST_F(SloEvaluationTest, AClaimWhoseAnswerWasLostIsAnnouncedByItsClaimantOnce) {
  testing::FaultInjectingStore faulty(store_);
  Instance a(faulty, clock_, config_, ledger_);
  Instance b(store_, clock_, config_, ledger_);
  Traffic(a, 30, 30);
  int alarm_writes = 0;  // the second write to the alarm is the claim
  faulty.ApplyThenFailOnce(
      [&alarm_writes](const store::ItemKey& k) { return k.sk == "ALARM#tool_error#1h/5m" && ++alarm_writes == 2; });
  EXPECT_FALSE(a.evaluator.Tick().ok());
  ASSERT_EQ(faulty.injected(), 1);
  EXPECT_EQ(PageEvents(), 0u);
  ASSERT_TRUE(b.evaluator.Tick().ok());
  EXPECT_EQ(PageEvents(), 0u) << "the claim went in: another instance does not announce it";
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_EQ(PageEvents(), 1u) << "the claimant does";
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_EQ(PageEvents(), 1u);
}

// A connector taken out of the config leaves no alarm firing for good: the first evaluation of an
// instance started without it resolves its alarms and announces each once, reason connector_removed.
TEST_F(SloEvaluationTest, TheAlarmsOfARemovedConnectorAreResolvedOnceAtStart) {
  ASSERT_NO_FATAL_FAILURE(FireFlapOnAnInstanceThatStillHasIt());
  RecordingNotifier notifier;
  Instance a(store_, clock_, config_, ledger_, &notifier);  // crm only
  Instance b(store_, clock_, config_, ledger_);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  ASSERT_TRUE(b.evaluator.Tick().ok());
  ASSERT_TRUE(a.evaluator.Tick().ok());
  auto alarms = a.counters.ReadAlarms("flap");
  ASSERT_TRUE(alarms.ok());
  for (const auto& [key, state] : *alarms) EXPECT_FALSE(state.firing) << key;
  const auto resolved = AuditOf("SLO_ALARM_RESOLVED");
  EXPECT_EQ(resolved.size(), 4u) << "each of flap's alarms resolved once across the fleet";
  for (const auto& e : resolved) {
    const json data = json::parse(e.data);
    EXPECT_EQ(data["connector_id"], "flap");
    EXPECT_EQ(data["reason"], "connector_removed");
  }
  ASSERT_EQ(notifier.sent.size(), 4u);
  EXPECT_EQ(notifier.sent[0].second["event"], "SLO_ALARM_RESOLVED");
  EXPECT_EQ(notifier.sent[0].second["seq"], 2);
}

// A removed connector's alarm that an instance resolved but died before claiming (or lost its
// write's answer) is still announced, once, by the next instance's pass.
TEST_F(SloEvaluationTest, ARemovedConnectorsAlarmResolvedButNeverClaimedIsAnnouncedOnce) {
  ASSERT_NO_FATAL_FAILURE(FireFlapOnAnInstanceThatStillHasIt());
  // An instance on the new config resolves every alarm, then dies before claiming any.
  SloCounters dying(store_, clock_);
  int resolved = 0;
  for (slo::Sli sli : slo::kSlis) {
    for (const slo::Tier& tier : slo::kTiers) {
      auto changed = dying.SetAlarm("flap", sli, tier.name, false);
      ASSERT_TRUE(changed.ok()) << changed.status();
      resolved += changed->has_value() ? 1 : 0;
    }
  }
  ASSERT_EQ(resolved, 4);
  RecordingNotifier notifier;
  Instance a(store_, clock_, config_, ledger_, &notifier);  // crm only
  Instance b(store_, clock_, config_, ledger_);
  ASSERT_TRUE(a.evaluator.Tick().ok());
  ASSERT_TRUE(b.evaluator.Tick().ok());
  const auto announced = AuditOf("SLO_ALARM_RESOLVED");
  EXPECT_EQ(announced.size(), 4u) << "each resolve announced once across the fleet";
  for (const auto& e : announced) EXPECT_EQ(json::parse(e.data)["reason"], "connector_removed");
  ASSERT_EQ(notifier.sent.size(), 4u);
  EXPECT_EQ(notifier.sent[0].second["seq"], 2);
}

// A surge deployment: an instance on the new config resolves the removed connector's alarms, then an
// instance still on the old one (its windows still holding the errors) fires them again and goes. An
// instance on the new config resolves them again within a minute; it does not wait for a restart.
TEST_F(SloEvaluationTest, ARemovedConnectorsAlarmFiredAgainByAnOlderInstanceIsResolvedAgain) {
  ASSERT_NO_FATAL_FAILURE(FireFlapOnAnInstanceThatStillHasIt());
  Instance fresh(store_, clock_, config_, ledger_);  // crm only
  ASSERT_TRUE(fresh.evaluator.Tick().ok());
  EXPECT_EQ(AuditOf("SLO_ALARM_RESOLVED").size(), 4u);
  clock_.advance(std::chrono::seconds(10));
  {
    Instance still_old(store_, clock_, with_flap_, ledger_);
    ASSERT_TRUE(still_old.evaluator.Tick().ok());
  }
  ASSERT_EQ(AuditOf("SLO_ALARM_FIRING").size(), 8u) << "the older instance fired flap's alarms again";
  clock_.advance(std::chrono::seconds(20));
  ASSERT_TRUE(fresh.evaluator.Tick().ok());
  EXPECT_EQ(AuditOf("SLO_ALARM_RESOLVED").size(), 4u) << "the pass runs once a minute, not at every evaluation";
  clock_.advance(std::chrono::seconds(31));
  ASSERT_TRUE(fresh.evaluator.Tick().ok());
  auto alarms = fresh.counters.ReadAlarms("flap");
  ASSERT_TRUE(alarms.ok());
  for (const auto& [key, state] : *alarms) EXPECT_FALSE(state.firing) << key;
  EXPECT_EQ(AuditOf("SLO_ALARM_RESOLVED").size(), 8u) << "each firing resolved and announced once";

  // The wall clock stepped back an hour (an operator, NTP) does not put the next pass off by as much.
  clock_.step_wall(-std::chrono::hours(1));
  {
    Instance still_old(store_, clock_, with_flap_, ledger_);
    for (int i = 0; i < 30; ++i)
      still_old.counters.Record("flap", true, 20, false);  // its earlier counts are "ahead" now
    ASSERT_TRUE(still_old.evaluator.Tick().ok());
  }
  ASSERT_EQ(AuditOf("SLO_ALARM_FIRING").size(), 12u);
  clock_.advance(std::chrono::seconds(61));
  ASSERT_TRUE(fresh.evaluator.Tick().ok());
  EXPECT_EQ(AuditOf("SLO_ALARM_RESOLVED").size(), 12u) << "resolved a minute later, by the monotonic clock";
}

// Two instances whose clocks differ by 4 s (within max_clock_skew_s, 5 s by default) see a bad
// minute leave the 5-minute window 4 s apart: the one ahead resolves the page, and the one behind,
// its window still holding that minute, does not fire it again.
TEST_F(SloEvaluationTest, AResolveByAClockAheadIsNotReversedByOneBehind) {
  ManualClock ahead{clock_.now_epoch_ms() + 4'000};
  Instance a(store_, ahead, config_, ledger_);
  Instance b(store_, clock_, config_, ledger_);
  clock_.advance(std::chrono::seconds(30));  // mid-minute on both clocks
  ahead.advance(std::chrono::seconds(30));
  Traffic(b, 30, 30);
  ASSERT_TRUE(b.evaluator.Tick().ok());
  ASSERT_EQ(PageEvents(), 1u);
  // To two seconds before b's minute 5 begins; a is 2 s into it: the bad minute left a's 5 m window.
  clock_.advance(std::chrono::seconds(4 * 60 + 28));
  ahead.advance(std::chrono::seconds(4 * 60 + 28));
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_FALSE(Firing(a.evaluator.Snapshot(), "1h/5m")) << "a's 5 m window no longer holds the bad minute";
  ASSERT_EQ(AuditOf("SLO_ALARM_RESOLVED").size(), 1u) << "a resolved the page";
  ASSERT_TRUE(b.evaluator.Tick().ok());
  EXPECT_FALSE(Firing(b.evaluator.Snapshot(), "1h/5m")) << "b shows the fleet's state";
  EXPECT_EQ(PageEvents(), 1u) << "b, 4 s behind, did not page again";
  clock_.advance(std::chrono::seconds(10));
  ahead.advance(std::chrono::seconds(10));
  ASSERT_TRUE(b.evaluator.Tick().ok());
  ASSERT_TRUE(a.evaluator.Tick().ok());
  EXPECT_EQ(PageEvents(), 1u);
  EXPECT_EQ(AuditOf("SLO_ALARM_RESOLVED").size(), 1u);
}

// A change held on an instance whose clock is behind, and claimed there because its maker lost the
// answer of its write, is announced without this instance's burn rates: they point the other way.
TEST_F(SloEvaluationTest, AHeldChangeClaimedByAnInstanceBehindCarriesNoBurnRatesOfItsOwn) {
  ManualClock ahead{clock_.now_epoch_ms() + 4'000};
  testing::FaultInjectingStore faulty(store_);
  Instance a(faulty, ahead, config_, ledger_);
  Instance b(store_, clock_, config_, ledger_);
  clock_.advance(std::chrono::seconds(30));
  ahead.advance(std::chrono::seconds(30));
  Traffic(b, 30, 30);
  ASSERT_TRUE(b.evaluator.Tick().ok());
  ASSERT_EQ(PageEvents(), 1u);
  clock_.advance(std::chrono::seconds(4 * 60 + 28));  // as above: a's window lost the bad minute, b's not
  ahead.advance(std::chrono::seconds(4 * 60 + 28));
  faulty.ApplyThenFailOnce([](const store::ItemKey& k) { return k.sk == "ALARM#tool_error#1h/5m"; });
  EXPECT_FALSE(a.evaluator.Tick().ok());
  ASSERT_EQ(faulty.injected(), 1);
  ASSERT_EQ(AuditOf("SLO_ALARM_RESOLVED").size(), 0u) << "a lost the answer of its resolve: not announced by it";

  ASSERT_TRUE(b.evaluator.Tick().ok());  // b holds the resolve and claims it
  const auto resolved = AuditOf("SLO_ALARM_RESOLVED");
  ASSERT_EQ(resolved.size(), 1u);
  const json data = json::parse(resolved.front().data);
  EXPECT_EQ(data["tier"], "1h/5m");
  EXPECT_EQ(data["reason"], "clock_skew");
  EXPECT_FALSE(data.contains("long_burn_rate")) << data.dump();
  EXPECT_FALSE(data.contains("short_burn_rate")) << data.dump();
  EXPECT_EQ(PageEvents(), 1u);
}

// Counts a host whose clock runs ahead (within max_clock_skew_s, 5 s by default) stamped with the
// next minute are counted now, as this host's current minute, not held back until this clock
// reaches that minute (and then page as if new). Further ahead than the skew they are not trusted.
TEST_F(SloEvaluationTest, CountsStampedAheadWithinTheSkewCountAsTheCurrentMinute) {
  Instance a(store_, clock_, config_, ledger_);
  clock_.advance(std::chrono::seconds(58));                   // two seconds before a new minute
  ManualClock ahead{clock_.now_epoch_ms() + 4'000};           // 4 s ahead: in the next minute
  ManualClock far_ahead{clock_.now_epoch_ms() + 3 * 60'000};  // beyond any skew
  SloCounters fast(store_, ahead), faster(store_, far_ahead);
  for (int i = 0; i < 30; ++i) fast.Record("crm", true, 20, false);
  for (int i = 0; i < 7; ++i) faster.Record("crm", true, 20, false);
  ASSERT_TRUE(fast.Flush().ok());
  ASSERT_TRUE(faster.Flush().ok());

  ASSERT_TRUE(a.evaluator.Tick().ok());
  const SloSnapshot s = a.evaluator.Snapshot();
  EXPECT_EQ(View(s, slo::Sli::kToolError).windows.at("5m").total, 30) << "the 4 s lead counted, the 3 min one not";
  EXPECT_EQ(s.last_hour.at("crm").back().counts.total, 30) << "shown in the current minute";
  EXPECT_TRUE(Firing(s, "1h/5m")) << "100 % errors page now, not a minute later";
}

// The damage rules in each backend's own conditions and values (DynamoDB renders them; a whole
// double may come back from it as an integer): a damaged counter is left out, a damaged alarm item
// is repaired by exactly one caller, and a repair that keeps a readable state is no news.
class SloStoreTest : public ::testing::TestWithParam<testing::Backend> {
 protected:
  void SetUp() override {
    store_ = GetParam().open(clock_, dir_);
    ASSERT_NE(store_, nullptr);
  }
  SloAlarmState Alarm(SloCounters& counters, const std::string& key) {
    auto alarms = counters.ReadAlarms("crm");
    EXPECT_TRUE(alarms.ok()) << alarms.status();
    return alarms.ok() && alarms->contains(key) ? alarms->at(key) : SloAlarmState{};
  }

  ManualClock clock_;
  testing::TempDir dir_;
  std::unique_ptr<store::ItemStore> store_;
};

TEST_P(SloStoreTest, ADamagedCounterIsLeftOutAndTheRestCounted) {
  SloCounters counters(*store_, clock_);
  const int64_t minute = clock_.now_epoch_ms() / 60'000;
  counters.Record("crm", true, 10, false);
  ASSERT_TRUE(counters.Flush().ok());
  char sk[32];
  std::snprintf(sk, sizeof sk, "MIN#%010lld", static_cast<long long>(minute - 1));
  ASSERT_TRUE(store_->Put({"SLO#crm", sk}, {{"total", "lots"}}, store::Condition::Always()).ok());
  auto series = counters.Read("crm");
  ASSERT_TRUE(series.ok()) << series.status();
  EXPECT_EQ(series->minutes.count(minute - 1), 0u);
  EXPECT_EQ(series->minutes.at(minute).counts.error_bad, 1);
  ASSERT_EQ(series->damaged.size(), 1u);
  EXPECT_NE(series->damaged[0].find("total is not a count"), std::string::npos) << series->damaged[0];
}

TEST_P(SloStoreTest, ADamagedAlarmIsRepairedByExactlyOneCaller) {
  SloCounters a(*store_, clock_), b(*store_, clock_);
  ASSERT_TRUE(store_
                  ->Put({"SLO#crm", "ALARM#tool_error#1h/5m"}, {{"firing", "yes"}, {"seq", 2.5}, {"announced", 1}},
                        store::Condition::Always())
                  .ok());
  const SloAlarmState read = Alarm(a, "tool_error#1h/5m");
  EXPECT_EQ(read.damage, "firing is not a boolean, announced is not a boolean, seq is not a whole number");
  const SloAlarmState read_by_b = Alarm(b, "tool_error#1h/5m");

  auto repaired = a.RepairAlarm("crm", slo::Sli::kToolError, "1h/5m", true, read);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  ASSERT_TRUE(repaired->has_value()) << "the item was as read: repaired";
  EXPECT_TRUE((*repaired)->damage.empty());
  EXPECT_TRUE((*repaired)->firing);
  EXPECT_EQ((*repaired)->seq, clock_.now_epoch_ms());
  EXPECT_FALSE((*repaired)->announced) << "its state was unknown: a change to announce";
  auto again = b.RepairAlarm("crm", slo::Sli::kToolError, "1h/5m", false, read_by_b);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->has_value()) << "b read it before a's repair: its repair must not apply";
  EXPECT_TRUE(Alarm(a, "tool_error#1h/5m").firing);

  // Only the sequence damaged (beyond what an int64 holds), the state readable and announced:
  // repaired with nothing to announce, its time of change kept.
  ASSERT_TRUE(store_
                  ->Put({"SLO#crm", "ALARM#tool_error#6h/30m"},
                        {{"firing", false}, {"seq", 1e19}, {"since_ms", 5}, {"announced", true}},
                        store::Condition::Always())
                  .ok());
  const SloAlarmState seq_only = Alarm(a, "tool_error#6h/30m");
  EXPECT_EQ(seq_only.damage, "seq is not a whole number");
  auto quiet = a.RepairAlarm("crm", slo::Sli::kToolError, "6h/30m", false, seq_only);
  ASSERT_TRUE(quiet.ok() && quiet->has_value());
  EXPECT_TRUE((*quiet)->announced);
  EXPECT_EQ((*quiet)->since_ms, 5);
  EXPECT_TRUE(Alarm(a, "tool_error#6h/30m").damage.empty());

  // A change still waiting for its announcement keeps waiting for it.
  ASSERT_TRUE(store_
                  ->Put({"SLO#crm", "ALARM#tool_error#1d/2h"}, {{"firing", true}, {"seq", "x"}, {"announced", false}},
                        store::Condition::Always())
                  .ok());
  auto pending = a.RepairAlarm("crm", slo::Sli::kToolError, "1d/2h", true, Alarm(a, "tool_error#1d/2h"));
  ASSERT_TRUE(pending.ok() && pending->has_value());
  EXPECT_FALSE((*pending)->announced);
}

// Counts for a current bucket whose item is damaged cannot be added to it: the store refuses the
// ADD as malformed, and the counts are dropped rather than failing every flush while it is current.
TEST_P(SloStoreTest, CountsForADamagedCurrentBucketAreDroppedNotRetriedForever) {
  SloCounters counters(*store_, clock_);
  char sk[32];
  std::snprintf(sk, sizeof sk, "MIN#%010lld", static_cast<long long>(clock_.now_epoch_ms() / 60'000));
  ASSERT_TRUE(store_->Put({"SLO#crm", sk}, {{"total", "lots"}}, store::Condition::Always()).ok());
  counters.Record("crm", false, 10, false);
  const absl::Status first = counters.Flush();
  EXPECT_EQ(first.code(), absl::StatusCode::kInvalidArgument) << first;
  EXPECT_EQ(counters.pending_calls(), 0) << "dropped with the item they cannot be added to";
  EXPECT_TRUE(counters.Flush().ok()) << "nothing retried";
  auto series = counters.Read("crm");
  ASSERT_TRUE(series.ok()) << series.status();
  EXPECT_EQ(series->hours.at(clock_.now_epoch_ms() / 3'600'000).counts.total, 1) << "the hour's item took its count";
}

INSTANTIATE_TEST_SUITE_P(Backends, SloStoreTest, ::testing::ValuesIn(testing::AllBackends()), testing::BackendName);

}  // namespace
}  // namespace toolgate
