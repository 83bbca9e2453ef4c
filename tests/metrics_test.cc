// Metrics updates on the hot path come from a per-thread memory of the metrics already added (no
// lock, no label map per update): the counts must still add up across threads, a Metrics made later
// at the same address must not reach an earlier one's metrics, and the tool label cap must hold.
// Every family is listed from the start, once each, and the series known in advance start at 0.

#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/store_clock_watch.h"

namespace toolgate {
namespace {

// The value of the series whose line starts with `series` ("name{labels}") in the text format; -1
// when absent.
double Value(const std::string& text, const std::string& series) {
  size_t at = 0;
  while ((at = text.find(series, at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
    at += series.size();
  }
  return -1;
}

// The names of the `# TYPE <name> <type>` lines, in order.
std::vector<std::string> TypedFamilies(const std::string& text) {
  std::vector<std::string> names;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) == 0) names.push_back(line.substr(7, line.find(' ', 7) - 7));
  }
  return names;
}

// How many lines of `text` start with `prefix`.
int LinesStartingWith(const std::string& text, const std::string& prefix) {
  int n = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) n += line.rfind(prefix, 0) == 0 ? 1 : 0;
  return n;
}

// Every family of design §8 and docs/operations.md, as a fresh Metrics must list it.
const std::map<std::string, std::string> kFamilies = {
    {"toolgate_tool_latency_seconds", "histogram"},
    {"toolgate_tool_errors_total", "counter"},
    {"toolgate_tool_calls_total", "counter"},
    {"toolgate_breaker_state", "gauge"},
    {"toolgate_breaker_transitions_total", "counter"},
    {"toolgate_in_flight", "gauge"},
    {"toolgate_in_flight_limit", "gauge"},
    {"toolgate_downstream_connections_total", "counter"},
    {"toolgate_queue_depth", "gauge"},
    {"toolgate_queue_oldest_age_seconds", "gauge"},
    {"toolgate_callback_attempts_total", "counter"},
    {"toolgate_unrecorded_outcomes", "gauge"},
    {"toolgate_unrecorded_outcomes_ended_total", "counter"},
    {"toolgate_store_clock_ahead_seconds", "gauge"},
    {"toolgate_store_writes_failing", "gauge"},
    {"toolgate_store_requests_in_flight", "gauge"},
    {"toolgate_store_requests_waiting", "gauge"},
    {"toolgate_store_max_requests_in_flight", "gauge"},
    {"toolgate_deferred_total", "counter"},
    {"toolgate_blocked_total", "counter"},
    {"toolgate_replays_total", "counter"},
    {"toolgate_store_operation_seconds", "histogram"},
    {"toolgate_store_retries_total", "counter"},
    {"toolgate_store_throttles_total", "counter"},
    {"toolgate_store_write_units_total", "counter"},
    {"toolgate_store_writes_total", "counter"},
    {"toolgate_slo_events_total", "counter"},
    {"toolgate_slo_bad_events_total", "counter"},
    {"toolgate_slo_burn_rate", "gauge"},
    {"toolgate_slo_alarm", "gauge"},
    {"toolgate_slo_error_budget_remaining", "gauge"},
    {"toolgate_slo_evaluation_errors_total", "counter"},
    {"toolgate_breaker_cooldown_remaining_seconds", "gauge"},
    {"toolgate_kill_switches_active", "gauge"},
    {"toolgate_http_responses_total", "counter"},
    {"toolgate_build_info", "gauge"},
};

// Before: a family was left out of /metrics until its first sample, so a dashboard read "no data"
// and an absent() alert fired on a quiet gateway. Each is listed once, samples or not, in one order.
TEST(MetricsTest, EveryFamilyIsListedOnceFromTheStartInAStableOrder) {
  Metrics m;
  const std::string fresh = m.Serialize();
  for (const auto& [name, type] : kFamilies) {
    EXPECT_EQ(LinesStartingWith(fresh, "# TYPE " + name + " " + type), 1) << name << "\n" << fresh;
    EXPECT_EQ(LinesStartingWith(fresh, "# HELP " + name + " "), 1) << name;
  }
  const std::vector<std::string> order = TypedFamilies(fresh);
  EXPECT_EQ(order.size(), kFamilies.size()) << fresh;

  // A sample in every family (a histogram of each kind too) moves no family and lists none twice.
  m.KnownConnector("crm", /*callbacks=*/true);
  m.ToolCall("crm", "crm.x", Outcome::kSucceeded, 0.01, true);
  m.ToolError("crm", "crm.x", "timeout");
  m.BreakerState("crm", breaker::State::kClosed);
  m.InFlight("crm", 1, 8);
  m.DownstreamPool(1, 0, 0);
  m.Queue("crm", 0, 0);
  m.UnrecordedOutcomesHeld(0);
  m.StoreClockAhead(0);
  m.StoreRequests("dynamodb", 0, 0, 64);
  m.StoreOperation("sqlite", "get", 0.001);
  m.StoreRetry("dynamodb", "update", "throttled");
  m.StoreWriteUnits("dynamodb", store::ItemKey{"AUDIT#1", "x"}, 1);
  m.SloBurnRate("crm", "tool_error", "5m", 0);
  m.SloAlarm("crm", "tool_error", "page", false);
  m.SloBudgetRemaining("crm", "tool_error", 1);
  m.SloEvaluationError("store_error");
  m.BreakerCooldownRemaining("crm", 0);
  m.KillSwitchesActive({});
  m.HttpResponse("admin", "/metrics", 200);
  m.BuildInfo("1", "abc");
  const std::string full = m.Serialize();
  EXPECT_EQ(TypedFamilies(full), order) << full;
  for (const auto& [name, type] : kFamilies) {
    EXPECT_GT(LinesStartingWith(full, name), 0) << name << " has a sample now";
  }
}

// The counters of fixed label values start at 0: per connector from KnownConnector, this instance's
// from the start. Never per tool (callers choose tool names). An update finds the zero series as its
// own: one series, counting from 0.
TEST(MetricsTest, SeriesKnownInAdvanceStartAtZeroAndCountInThatSeries) {
  Metrics m;
  m.KnownConnector("crm", /*callbacks=*/true);
  m.KnownConnector("billing", /*callbacks=*/false);
  std::string text = m.Serialize();
  for (const std::string connector : {"crm", "billing"}) {
    const std::string c = "connector=\"" + connector + "\"";
    for (const char* reason : {"breaker_open", "probe_in_flight", "concurrency_limit", "intent_in_progress",
                               "downstream_throttled", "store_unavailable", "gateway_overloaded"}) {
      EXPECT_EQ(Value(text, "toolgate_deferred_total{" + c + ",reason=\"" + reason + "\"}"), 0) << reason << text;
    }
    for (const char* scope : {"global", "connector", "tenant", "action_type", "tenant_action"}) {
      EXPECT_EQ(Value(text, "toolgate_blocked_total{" + c + ",scope=\"" + scope + "\"}"), 0) << scope;
    }
    EXPECT_EQ(LinesStartingWith(text, "toolgate_breaker_transitions_total{" + c), 12);
    for (const char* pair :
         {R"(from="CLOSED",to="OPEN")", R"(from="OPEN",to="HALF_OPEN")", R"(from="HALF_OPEN",to="CLOSED")",
          R"(from="HALF_OPEN",to="OPEN")", R"(from="FORCED_OPEN",to="CLOSED")", R"(from="CLOSED",to="FORCED_OPEN")"}) {
      EXPECT_EQ(Value(text, "toolgate_breaker_transitions_total{" + c + "," + pair + "}"), 0) << pair;
    }
    EXPECT_EQ(Value(text, "toolgate_breaker_transitions_total{" + c + R"(,from="CLOSED",to="HALF_OPEN"})"), -1)
        << "a transition no breaker makes";
    for (const char* slo : {"tool_error", "tool_latency_ms"}) {
      EXPECT_EQ(Value(text, "toolgate_slo_events_total{" + c + ",slo=\"" + slo + "\"}"), 0) << slo;
      EXPECT_EQ(Value(text, "toolgate_slo_bad_events_total{" + c + ",slo=\"" + slo + "\"}"), 0) << slo;
    }
  }
  for (const char* result : {"delivered", "retried", "failed"}) {
    EXPECT_EQ(Value(text, R"(toolgate_callback_attempts_total{connector="crm",result=")" + std::string(result) + "\"}"),
              0)
        << result;
  }
  EXPECT_EQ(LinesStartingWith(text, R"(toolgate_callback_attempts_total{connector="billing")"), 0)
      << "a gateway without callbacks lists none";
  for (const char* result : {"executed", "forced", "deduped", "refused"}) {
    EXPECT_EQ(Value(text, R"(toolgate_replays_total{result=")" + std::string(result) + "\"}"), 0) << result;
  }
  for (const char* result : {"recorded", "refused", "expired", "full"}) {
    EXPECT_EQ(Value(text, R"(toolgate_unrecorded_outcomes_ended_total{result=")" + std::string(result) + "\"}"), 0)
        << result;
  }
  for (const char* event : {"opened", "tls_handshake", "reused"}) {
    EXPECT_EQ(Value(text, R"(toolgate_downstream_connections_total{event=")" + std::string(event) + "\"}"), 0);
  }
  EXPECT_EQ(text.find("tool=\""), std::string::npos) << "no series per tool before a call";
  EXPECT_EQ(LinesStartingWith(text, "toolgate_tool_calls_total"), 0);

  // One event each: the zero series reads 1, and it is still the only series of its labels.
  m.Deferred("crm", "breaker_open");
  m.Blocked("crm", "tenant");
  m.OnTransition(BreakerTransition{"crm", breaker::State::kClosed, breaker::State::kOpen,
                                   BreakerTransition::Cause::kFailureThreshold, 1, 0});
  m.SloEvent("crm", "tool_error", /*bad=*/true);
  m.CallbackAttempt("crm", "failed");
  m.Replay("refused");
  m.UnrecordedOutcomeEnded("full");
  m.DownstreamPool(1, 0, 0);
  text = m.Serialize();
  for (const std::string series :
       {R"(toolgate_deferred_total{connector="crm",reason="breaker_open"})",
        R"(toolgate_blocked_total{connector="crm",scope="tenant"})",
        R"(toolgate_breaker_transitions_total{connector="crm",from="CLOSED",to="OPEN"})",
        R"(toolgate_slo_events_total{connector="crm",slo="tool_error"})",
        R"(toolgate_slo_bad_events_total{connector="crm",slo="tool_error"})",
        R"(toolgate_callback_attempts_total{connector="crm",result="failed"})",
        R"(toolgate_replays_total{result="refused"})", R"(toolgate_unrecorded_outcomes_ended_total{result="full"})",
        R"(toolgate_downstream_connections_total{event="opened"})"}) {
    EXPECT_EQ(Value(text, series), 1) << series << "\n" << text;
    EXPECT_EQ(LinesStartingWith(text, series + " "), 1) << series;
  }
  EXPECT_EQ(Value(text, R"(toolgate_slo_events_total{connector="crm",slo="tool_latency_ms"})"), 0);
  EXPECT_EQ(Value(text, R"(toolgate_deferred_total{connector="billing",reason="breaker_open"})"), 0);
}

TEST(MetricsTest, UpdatesFromManyThreadsAddUpInOneSeries) {
  Metrics m;
  constexpr int kThreads = 4, kEach = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < kEach; ++i) {
        m.ToolCall("crm", "crm.update", Outcome::kSucceeded, 0.002, true);
        m.HttpResponse("public", "/v1/tools/{tool}/invoke", i % 2 == 0 ? 200 : 502);
        m.StoreOperation("sqlite", t % 2 == 0 ? "get" : "write_batch", 0.0001);
      }
    });
  }
  for (auto& th : threads) th.join();
  const std::string text = m.Serialize();
  EXPECT_EQ(Value(text, R"(toolgate_tool_calls_total{connector="crm",outcome="SUCCEEDED",tool="crm.update"})"),
            kThreads * kEach)
      << text;
  EXPECT_EQ(
      Value(text, R"(toolgate_tool_latency_seconds_count{connector="crm",outcome="SUCCEEDED",tool="crm.update"})"),
      kThreads * kEach);
  EXPECT_EQ(
      Value(text, R"(toolgate_http_responses_total{code="200",listener="public",route="/v1/tools/{tool}/invoke"})"),
      kThreads * kEach / 2);
  EXPECT_EQ(
      Value(text, R"(toolgate_http_responses_total{code="502",listener="public",route="/v1/tools/{tool}/invoke"})"),
      kThreads * kEach / 2);
  EXPECT_EQ(Value(text, R"(toolgate_store_operation_seconds_count{backend="sqlite",op="get"})"), 2 * kEach);
  EXPECT_EQ(Value(text, R"(toolgate_store_operation_seconds_count{backend="sqlite",op="write_batch"})"), 2 * kEach);
}

TEST(MetricsTest, AMetricsMadeLaterAtTheSameAddressStartsFromZero) {
  std::optional<Metrics> m;
  m.emplace();
  const Metrics* first = &*m;
  for (int i = 0; i < 3; ++i) m->Deferred("crm", "breaker_open");  // remembered by this thread
  EXPECT_EQ(Value(m->Serialize(), R"(toolgate_deferred_total{connector="crm",reason="breaker_open"})"), 3);
  m.reset();
  m.emplace();
  ASSERT_EQ(&*m, first) << "the second lives where the first did";
  m->Deferred("crm", "breaker_open");
  EXPECT_EQ(Value(m->Serialize(), R"(toolgate_deferred_total{connector="crm",reason="breaker_open"})"), 1)
      << "its own counter, not the first one's";
}

TEST(MetricsTest, ToolsPastTheCapAreCountedAsOther) {
  Metrics m;
  for (size_t i = 0; i < Metrics::kMaxToolsPerConnector + 3; ++i) {
    m.ToolCall("crm", "crm.t" + std::to_string(i), Outcome::kFailed, 0.01, true);
  }
  const std::string last = "crm.t" + std::to_string(Metrics::kMaxToolsPerConnector + 2);
  m.ToolCall("crm", last, Outcome::kFailed, 0.01, true);  // again: from the memory this time
  const std::string text = m.Serialize();
  EXPECT_EQ(Value(text, R"(toolgate_tool_calls_total{connector="crm",outcome="FAILED",tool="other"})"), 4) << text;
  EXPECT_EQ(Value(text, R"(toolgate_tool_calls_total{connector="crm",outcome="FAILED",tool="crm.t0"})"), 1);
  EXPECT_EQ(text.find("tool=\"" + last + "\""), std::string::npos);
}

// A tenant calling made-up names of an http connector (it forwards any) took every label first:
// the tools the config lists were then counted as "other", and their dashboards went quiet.
TEST(MetricsTest, AToolTheConfigListsKeepsItsLabelPastTheCap) {
  Metrics m;
  m.KnownTool("crm", "crm.update_opportunity");
  for (size_t i = 0; i < Metrics::kMaxToolsPerConnector + 3; ++i) {
    m.ToolCall("crm", "crm.made_up" + std::to_string(i), Outcome::kFailed, 0.01, true);
  }
  m.ToolCall("crm", "crm.update_opportunity", Outcome::kSucceeded, 0.01, true);
  m.ToolError("crm", "crm.update_opportunity", "timeout");
  const std::string text = m.Serialize();
  EXPECT_EQ(
      Value(text, R"(toolgate_tool_calls_total{connector="crm",outcome="SUCCEEDED",tool="crm.update_opportunity"})"), 1)
      << text;
  EXPECT_EQ(Value(text, R"(toolgate_tool_calls_total{connector="crm",outcome="FAILED",tool="other"})"), 3)
      << "the known tool took no place of the made-up ones";
  EXPECT_NE(text.find(R"(tool="crm.update_opportunity")"), std::string::npos);
}

// A host off the store's clock by more than half the smallest max_clock_skew_s is warned about once,
// again every five minutes while it lasts, and its end noted; within, nothing is said.
TEST(StoreClockWatchTest, WarnsBeyondHalfTheSmallestSkewRepeatsAndNotesTheEnd) {
  StoreClockWatch watch(/*smallest_skew_s=*/5);
  int64_t now = 1'000'000;
  EXPECT_FALSE(watch.Observe(2'500, now).has_value()) << "2.5 s is within half of 5 s";
  EXPECT_FALSE(watch.Observe(-2'500, now).has_value());
  auto warned = watch.Observe(3'200, now);
  ASSERT_TRUE(warned.has_value());
  EXPECT_TRUE(warned->warning);
  EXPECT_THAT(warned->text, ::testing::HasSubstr("3.2 s ahead of the store's"));
  EXPECT_FALSE(watch.Observe(3'300, now + 60'000).has_value()) << "repeated within five minutes";
  auto again = watch.Observe(-4'000, now + StoreClockWatch::kRepeatMs);
  ASSERT_TRUE(again.has_value());
  EXPECT_THAT(again->text, ::testing::HasSubstr("4.0 s behind the store's"));
  // Back within: noted once the readings have stayed within for kCalmMs; a reading beyond the bound
  // meanwhile (a clock near it) starts the wait again and is not warned about anew.
  const int64_t t = now + StoreClockWatch::kRepeatMs + 10'000;
  EXPECT_FALSE(watch.Observe(0, t).has_value()) << "noted before the readings stayed within";
  EXPECT_FALSE(watch.Observe(-2'600, t + 20'000).has_value()) << "warned anew within five minutes";
  EXPECT_FALSE(watch.Observe(2'000, t + 30'000).has_value());
  EXPECT_FALSE(watch.Observe(0, t + 30'000 + StoreClockWatch::kCalmMs - 1).has_value());
  auto back = watch.Observe(0, t + 30'000 + StoreClockWatch::kCalmMs);
  ASSERT_TRUE(back.has_value());
  EXPECT_FALSE(back->warning);
  EXPECT_FALSE(watch.Observe(0, t + 40'000 + StoreClockWatch::kCalmMs).has_value());
  // A fleet that allows no skew at all hears of any lead the header can show.
  StoreClockWatch strict(0);
  EXPECT_TRUE(strict.Observe(1, now).has_value());
  EXPECT_FALSE(strict.Observe(0, now + 1).has_value());
  auto ended = strict.Observe(0, now + 1 + StoreClockWatch::kCalmMs);
  ASSERT_TRUE(ended.has_value());
  EXPECT_FALSE(ended->warning);
}

}  // namespace
}  // namespace toolgate
