// Metrics updates on the hot path come from a per-thread memory of the metrics already added (no
// lock, no label map per update): the counts must still add up across threads, a Metrics made later
// at the same address must not reach an earlier one's metrics, and the tool label cap must hold.

#include <optional>
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
