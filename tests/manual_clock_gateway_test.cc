// The gateway on a manual clock (in process, real SQLite, real HTTP on loopback, a fake downstream):
// the behaviours whose subject is a wait — a breaker's cooldown, a downstream's Retry-After — checked
// at the exact second each wait ends, instead of by sleeping through it on the real clock.

#include <atomic>

#include "fake_downstream.h"
#include "gmock/gmock.h"
#include "in_process_gateway.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::HeaderOf;
using testing::InProcessGateway;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;
using std::chrono::milliseconds;
using std::chrono::seconds;

int64_t RealNowMs() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class ManualClockGatewayTest : public ::testing::Test {
 protected:
  // Starts on a whole second, so "now + cooldown rounded up to a second" is exact.
  ManualClockGatewayTest() : clock_(RealNowMs() / 1000 * 1000) {}

  InProcessGateway& Start() {
    std::string config = testing::BaseConfig(dir_.file("store.db"));
    config = testing::WithKeys(config, "[server]", "breaker_cache_ms = 0\n");
    config += "[connectors.crm]\nbase_url = \"" + crm_.base_url() +
              "\"\ntimeout_ms = 1000\nmax_in_flight = 8\n"
              "[connectors.crm.breaker]\nfailure_threshold = 3\ncooldown_s = 1\n";
    gw_ = std::make_unique<InProcessGateway>(config, clock_);
    EXPECT_TRUE(gw_->Start());
    return *gw_;
  }
  json Crm() {
    const json all = Body(gw_->Admin("GET", "/admin/connectors"));
    for (const auto& c : all["connectors"]) {
      if (c["id"] == "crm") return c;
    }
    return json();
  }
  api::ClientResult Call() { return gw_->Invoke("crm.x", {{"input", json::object()}}, alice_); }

  ManualClock clock_;
  TempDir dir_;
  FakeDownstream crm_;
  std::unique_ptr<InProcessGateway> gw_;
  const std::string alice_ = Token("tenant-a");
};

// A Retry-After holds for the whole connector (also from a 503), and a throttled probe never closes
// the breaker: it stays OPEN for the Retry-After, to the second.
TEST_F(ManualClockGatewayTest, AThrottledProbeKeepsTheBreakerOpenForItsRetryAfterAndA503Throttles) {
  std::atomic<int> mode{0};  // 0: 500, 1: 429 Retry-After 3, 2: 503 Retry-After 2, 3: 200
  crm_.set_behavior([&](const auto&) {
    switch (mode.load()) {
      case 1:
        return Reply{429, "{}", {{"Retry-After", "3"}}};
      case 2:
        return Reply{503, "{}", {{"Retry-After", "2"}}};
      case 3:
        return Reply{200, R"({"ok":true})"};
      default:
        return Reply{500, "{}"};
    }
  });
  InProcessGateway& gw = Start();
  if (HasFatalFailure()) return;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Call().status, 502);
  ASSERT_EQ(Crm()["breaker"]["state"], "OPEN");
  EXPECT_EQ(Body(Call())["reason"], "breaker_open");
  // The cooldown (1 s) has not passed until it has: still OPEN a millisecond before.
  clock_.advance(milliseconds(999));
  EXPECT_EQ(Body(Call())["reason"], "breaker_open");
  clock_.advance(milliseconds(1));

  mode = 1;
  const int before = crm_.total();
  auto probe = Call();
  ASSERT_EQ(probe.status, 503) << probe.body;
  EXPECT_EQ(Body(probe)["reason"], "downstream_throttled");
  EXPECT_EQ(crm_.total(), before + 1) << "the probe did not reach the downstream";
  json c = Crm();
  EXPECT_EQ(c["breaker"]["state"], "OPEN") << "a throttled probe closed the breaker";
  EXPECT_EQ(c["breaker"]["cooldown_remaining_s"].get<int64_t>(), 3) << c;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(Call().status, 503);
  clock_.advance(milliseconds(2999));  // the last millisecond of the Retry-After
  EXPECT_EQ(Call().status, 503);
  EXPECT_EQ(crm_.total(), before + 1) << "calls reached the downstream inside its Retry-After";
  auto audit = Body(gw.Admin("GET", "/admin/audit?limit=5"));
  EXPECT_EQ(audit["events"][0]["data"]["cause"], "probe_throttled") << audit;

  // The Retry-After over, the next call is the probe; it succeeds and closes the breaker.
  clock_.advance(milliseconds(1));
  mode = 3;
  auto recovered = Call();
  EXPECT_EQ(recovered.status, 200) << recovered.body;
  EXPECT_EQ(crm_.total(), before + 2);
  EXPECT_EQ(Crm()["breaker"]["state"], "CLOSED");

  // A 503 with Retry-After on a closed connector throttles it the same way and is not a breaker
  // failure; the connector takes calls again when the Retry-After ends.
  mode = 2;
  const int closed_before = crm_.total();
  auto unavailable = Call();
  ASSERT_EQ(unavailable.status, 503) << unavailable.body;
  EXPECT_EQ(Body(unavailable)["reason"], "downstream_throttled");
  EXPECT_EQ(HeaderOf(unavailable, "retry-after"), "2");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Body(Call())["reason"], "downstream_throttled");
  EXPECT_EQ(crm_.total(), closed_before + 1);
  c = Crm();
  EXPECT_EQ(c["breaker"]["state"], "CLOSED");
  EXPECT_EQ(c["throttled_remaining_s"].get<int64_t>(), 2) << c;
  clock_.advance(seconds(2));
  mode = 3;
  EXPECT_EQ(Call().status, 200);
  EXPECT_EQ(crm_.total(), closed_before + 2);
  EXPECT_EQ(Crm()["breaker"]["window_failures"].get<int64_t>(), 0) << "a throttle is not a failure: " << Crm();
}

// A bulk replay takes the originals that exist when it is asked for: one failed in the job's own
// millisecond too (`until` is exclusive; a call takes about a millisecond, so on the real clock the
// last of a burst and the job often share one).
TEST_F(ManualClockGatewayTest, ABulkReplayTakesAnOriginalOfItsOwnMillisecond) {
  crm_.set_behavior([](const auto&) { return Reply{500, "{}"}; });
  InProcessGateway& gw = Start();
  if (HasFatalFailure()) return;
  const auto failed = Call();
  ASSERT_EQ(failed.status, 502) << failed.body;
  const json ask = {{"connector", "crm"},
                    {"outcome", "FAILED"},
                    {"replay_reason", "crm recovered"},
                    {"requested_by", "oncall"},
                    {"dry_run", true}};
  const auto job = gw.Admin("POST", "/admin/replays", ask.dump());
  ASSERT_EQ(job.status, 200) << job.body;
  EXPECT_EQ(Body(job)["matched"], 1) << "the original of the job's own millisecond left out: " << job.body;
  clock_.advance(milliseconds(1));
  EXPECT_EQ(Body(gw.Admin("POST", "/admin/replays", ask.dump()))["matched"], 1);
}

}  // namespace
}  // namespace toolgate
