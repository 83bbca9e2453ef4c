// The alert webhook's delivery (docs/slo.md, "Notification"): one alarm's notifications reach the
// receiver in the order they were given, and a newer one stops the retries of an older one, so a
// receiver that was down never ends on a stale state. The receiver is a real HTTP server on loopback;
// the backoff is shortened to 50 ms so the test runs the whole retry chain without waiting seconds.

#include "api/webhook_notifier.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>

#include "fake_downstream.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::FakeDownstream;
using Reply = FakeDownstream::Reply;

class WebhookNotifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    work_.reset();
    io_.stop();
    thread_.join();
  }
  api::WebhookNotifier& Notifier(std::chrono::milliseconds first_backoff = std::chrono::milliseconds(50)) {
    notifier_.emplace(io_, HostPort{"127.0.0.1", receiver_.port()}, "/hooks", first_backoff);
    return *notifier_;
  }
  // Polls `done` (bounded: ~10 s), for what happens on another thread over real sockets.
  static bool Eventually(const std::function<bool()>& done) {
    for (int i = 0; i < 1000; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  }
  static std::string Payload(const std::string& event, int seq) {
    return json{{"event", event}, {"connector_id", "crm"}, {"tier", "1h/5m"}, {"seq", seq}}.dump();
  }

  // Before the loop, so destroyed after it: the loop's destructor destroys the deliveries still
  // outstanding, and each one's cleanup takes the notifier's lock (as in the gateway, whose loops go
  // before its notifier).
  std::optional<api::WebhookNotifier> notifier_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ = boost::asio::make_work_guard(io_);
  std::thread thread_;
  FakeDownstream receiver_;
};

// The review's repro: the receiver is down while RESOLVED is sent and while FIRING is given, then
// comes back. The stale RESOLVED must not be retried after FIRING, or the receiver ends "resolved"
// while the alarm fires: it never accepts the RESOLVED at all.
TEST_F(WebhookNotifierTest, ANewerChangeOfTheAlarmStopsTheRetriesOfAnOlderOne) {
  std::atomic<bool> up{false};
  std::mutex mu;
  std::vector<std::string> accepted;  // what the receiver answered 204, in order
  receiver_.set_behavior([&](const FakeDownstream::Request& r) {
    if (!up) return Reply{503, "{}"};
    const json j = json::parse(r.body);
    std::lock_guard lock(mu);
    accepted.push_back(j["event"].get<std::string>() + " " + std::to_string(j["seq"].get<int>()));
    return Reply{204, ""};
  });
  api::WebhookNotifier& notifier = Notifier();
  const std::string alarm = "crm#tool_error#1h/5m";
  notifier.Notify(alarm, Payload("SLO_ALARM_RESOLVED", 2));
  ASSERT_TRUE(Eventually([&] { return receiver_.total() >= 1; })) << "the first attempt never came";
  notifier.Notify(alarm, Payload("SLO_ALARM_FIRING", 3));
  up = true;
  notifier.Notify("billing#tool_error#1h/5m", Payload("SLO_ALARM_FIRING", 1));  // another alarm: its own
  ASSERT_TRUE(Eventually([&] { return notifier.alarms_outstanding() == 0; })) << "deliveries never ended";
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(std::count(accepted.begin(), accepted.end(), "SLO_ALARM_RESOLVED 2"), 0)
        << "the older change was retried after the newer one was given";
    EXPECT_EQ(std::count(accepted.begin(), accepted.end(), "SLO_ALARM_FIRING 3"), 1);
  }

  std::vector<std::string> crm_events;  // as the receiver got them, refused or accepted
  int billing = 0;
  for (const auto& r : receiver_.requests()) {
    const json j = json::parse(r.body);
    EXPECT_EQ(r.path, "/hooks");
    if (j["seq"] == 1) {
      ++billing;
      continue;
    }
    crm_events.push_back(j["event"].get<std::string>() + " " + std::to_string(j["seq"].get<int>()));
  }
  EXPECT_EQ(billing, 1);
  ASSERT_FALSE(crm_events.empty());
  EXPECT_EQ(crm_events.back(), "SLO_ALARM_FIRING 3") << "the receiver's last word on the alarm is the newest";
  // Every RESOLVED attempt came before the first FIRING one: none was sent once FIRING was.
  const auto first_firing = std::find(crm_events.begin(), crm_events.end(), "SLO_ALARM_FIRING 3");
  EXPECT_EQ(std::count(first_firing, crm_events.end(), "SLO_ALARM_RESOLVED 2"), 0);
}

// A receiver down for longer than five attempts (here 50 ms backoff, doubling; five attempts are
// 15 s in production) still gets the notification once it is back: the change was claimed
// in the store and no instance would send it again.
TEST_F(WebhookNotifierTest, ANotificationIsTriedUntilTheReceiverIsBack) {
  std::atomic<bool> up{false};
  receiver_.set_behavior([&](const FakeDownstream::Request&) { return up ? Reply{204, ""} : Reply{503, "{}"}; });
  api::WebhookNotifier& notifier = Notifier();
  notifier.Notify("crm#tool_error#1h/5m", Payload("SLO_ALARM_FIRING", 1));
  ASSERT_TRUE(Eventually([&] { return receiver_.total() >= 6; })) << "the retries stopped while the receiver was down";
  EXPECT_EQ(notifier.alarms_outstanding(), 1u);
  up = true;
  ASSERT_TRUE(Eventually([&] { return notifier.alarms_outstanding() == 0; })) << "never delivered";
  const auto got = receiver_.requests();
  ASSERT_GE(got.size(), 7u);
  EXPECT_EQ(json::parse(got.back().body)["seq"], 1) << "the last request is the delivered notification";
}

// A newer change given while an older one waits out its backoff goes out at once, not when that
// backoff ends (64 s at most in production; an hour here, so only a cut-short wait delivers it
// within the test's bound).
TEST_F(WebhookNotifierTest, ANewerChangeDoesNotWaitOutAnOlderOnesBackoff) {
  std::atomic<bool> up{false};
  receiver_.set_behavior([&](const FakeDownstream::Request&) { return up ? Reply{204, ""} : Reply{503, "{}"}; });
  api::WebhookNotifier& notifier = Notifier(std::chrono::hours(1));
  const std::string alarm = "crm#tool_error#1h/5m";
  notifier.Notify(alarm, Payload("SLO_ALARM_FIRING", 1));
  ASSERT_TRUE(Eventually([&] { return receiver_.total() >= 1; })) << "the first attempt never came";
  up = true;
  notifier.Notify(alarm, Payload("SLO_ALARM_RESOLVED", 2));
  ASSERT_TRUE(Eventually([&] { return notifier.alarms_outstanding() == 0; }))
      << "the newer change waited out the older one's backoff";
  const auto got = receiver_.requests();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(json::parse(got[0].body)["seq"], 1);  // refused
  EXPECT_EQ(json::parse(got[1].body)["seq"], 2);  // delivered; the older one not tried again
}

// A receiver that answers: each notification once, in order.
TEST_F(WebhookNotifierTest, OneAlarmsNotificationsArriveInTheOrderGiven) {
  receiver_.set_behavior([](const FakeDownstream::Request&) { return Reply{200, "{}"}; });
  api::WebhookNotifier& notifier = Notifier();
  notifier.Notify("crm#tool_error#1h/5m", Payload("SLO_ALARM_FIRING", 1));
  ASSERT_TRUE(Eventually([&] { return notifier.alarms_outstanding() == 0; }));
  notifier.Notify("crm#tool_error#1h/5m", Payload("SLO_ALARM_RESOLVED", 2));
  ASSERT_TRUE(Eventually([&] { return notifier.alarms_outstanding() == 0; }));
  const auto got = receiver_.requests();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(json::parse(got[0].body)["seq"], 1);
  EXPECT_EQ(json::parse(got[1].body)["seq"], 2);
}

}  // namespace
}  // namespace toolgate
