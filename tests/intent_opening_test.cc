// A call with an idempotency key claims its intent in the opening batch, with the slot and the
// record (design §16: two commits per successful call, a key or not), on the way the gateway runs a
// call: AdmitAsync and CompleteAsync over the asynchronous store port. What leaves that path first
// (an intent that is there, a breaker not CLOSED, a full connector, the store failing) is answered as
// when the intent was claimed on its own before the breaker was asked.

#include <thread>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <atomic>

#include "fault_injecting_store.h"
#include "gtest/gtest.h"
#include "invoker_support.h"
#include "nlohmann/json.hpp"
#include "test_support.h"
#include "toolgate/store/async_item_store.h"
#include "toolgate/store/forwarding_item_store.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using toolgate::testing::FaultInjectingStore;

// Counts the writes that reach the store: a batch (one commit) or a single write.
class CountingStore final : public store::ForwardingItemStore {
 public:
  using ForwardingItemStore::ForwardingItemStore;
  absl::StatusOr<store::WriteResult> Put(const store::ItemKey& key, const store::Item& item,
                                         const store::Condition& condition) override {
    ++writes;
    return ForwardingItemStore::Put(key, item, condition);
  }
  using ItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& condition, store::ReturnValues returns) override {
    ++writes;
    return ForwardingItemStore::Update(key, ops, condition, returns);
  }
  absl::StatusOr<store::WriteResult> Erase(const store::ItemKey& key, const store::Condition& condition) override {
    ++writes;
    return ForwardingItemStore::Erase(key, condition);
  }
  std::vector<absl::StatusOr<store::WriteResult>> WriteBatch(const std::vector<store::WriteRequest>& r) override {
    ++writes;
    return ForwardingItemStore::WriteBatch(r);
  }
  absl::StatusOr<std::optional<store::Item>> Get(const store::ItemKey& key) override {
    CountRead();
    return ForwardingItemStore::Get(key);
  }
  absl::StatusOr<store::QueryPage> Query(const store::QueryRequest& request) override {
    CountRead();
    return ForwardingItemStore::Query(request);
  }
  void CountRead() {
    ++reads;
    if (std::this_thread::get_id() == loop_thread) ++reads_on_loop;
  }
  std::atomic<int> writes{0};
  std::atomic<int> reads{0};
  std::atomic<int> reads_on_loop{0};  // made on `loop_thread`: the thread that runs the calls' loop
  std::thread::id loop_thread = std::this_thread::get_id();
};

class IntentOpeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseConfig(
        "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 1\n"
        "[connectors.crm.breaker]\nfailure_threshold = 1\ncooldown_s = 30\n",
        "intent.toml");
    ASSERT_TRUE(c.ok()) << c.status();
    stack_ = std::make_unique<toolgate::testing::InvokerStack>(counting_, clock_, std::move(*c));
    ASSERT_TRUE(stack_->slots.EnsureConnector("crm", stack_->config.connectors.at("crm").concurrency).ok());
  }

  static InvokeRequest Request(std::string key, std::string input = R"({"k":"v"})") {
    InvokeRequest r;
    r.principal = {"user-1", "tenant-a", "", {}};
    r.tool_name = "crm.update";
    r.input_json = std::move(input);
    r.idempotency_key = std::move(key);
    return r;
  }

  // Admits on a loop of its own, through the port; the ticket when admitted.
  ToolInvoker::Admitted Admit(const InvokeRequest& req) {
    boost::asio::io_context loop;
    ToolInvoker::Admitted out = InvokeResult{};
    boost::asio::co_spawn(
        loop,
        [&]() -> boost::asio::awaitable<void> {
          auto admit = stack_->invoker.AdmitAsync(req, Drive());
          out = co_await std::move(admit);
        },
        boost::asio::detached);
    loop.run();
    return out;
  }
  InvokeResult Complete(std::unique_ptr<InvocationTicket> ticket, int status) {
    boost::asio::io_context loop;
    InvokeResult out;
    boost::asio::co_spawn(
        loop,
        [&]() -> boost::asio::awaitable<void> {
          auto complete = stack_->invoker.CompleteAsync(std::move(ticket), testing::DownstreamAnswer(status), Drive());
          out = co_await std::move(complete);
        },
        boost::asio::detached);
    loop.run();
    return out;
  }
  // The whole call; whether the downstream was reached.
  std::pair<InvokeResult, bool> Invoke(const InvokeRequest& req, int status = 200) {
    ToolInvoker::Admitted admitted = Admit(req);
    if (auto* r = std::get_if<InvokeResult>(&admitted)) return {*r, false};
    return {Complete(std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted)), status), true};
  }
  StoreDrive Drive() { return StoreDrive{&port_, &blocking_}; }
  int64_t InFlight() {
    auto s = stack_->slots.Read("crm", stack_->config.connectors.at("crm").concurrency);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->in_flight : -1;
  }
  std::optional<std::string> IntentState(const std::string& key) {
    auto item = memory_.Get(IntentStore::Key("tenant-a", key));
    if (!item.ok() || !item->has_value()) return std::nullopt;
    return store::GetString(**item, "state");
  }

  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore memory_{clock_};
  FaultInjectingStore faulty_{memory_};
  CountingStore counting_{faulty_};  // above the faults: a batch is counted once, as one commit
  store::PooledAsyncItemStore port_{counting_, 2};
  boost::asio::thread_pool blocking_{2};
  std::unique_ptr<toolgate::testing::InvokerStack> stack_;
};

TEST_F(IntentOpeningTest, ACallWithAKeyCommitsTwiceAsACallWithoutOne) {
  ASSERT_EQ(Invoke(Request("")).first.outcome, Outcome::kSucceeded);  // the tenant's entry, once per process
  for (const std::string& key : {std::string(""), std::string("order-1")}) {
    SCOPED_TRACE("key '" + key + "'");
    const int before = counting_.writes.load();
    auto [answer, called] = Invoke(Request(key, R"({"k":")" + key + "\"}"));
    ASSERT_EQ(answer.outcome, Outcome::kSucceeded);
    EXPECT_TRUE(called);
    EXPECT_EQ(counting_.writes.load() - before, 2) << "the opening (slot, record, intent) and the close";
  }
  EXPECT_EQ(IntentState("order-1"), "SUCCEEDED");
  EXPECT_EQ(InFlight(), 0);
}

// Over a port whose reads are round trips (DynamoDB's; here the pooled adapter, which says the
// same), a call's loop makes no store read: the kill switches' refresh and the breaker's read go to
// the pool. (The test's thread runs the loop.)
TEST_F(IntentOpeningTest, OverAPortWhoseReadsAreRoundTripsTheLoopReadsNothing) {
  ASSERT_FALSE(port_.ReadsAreLocal());
  auto [answer, called] = Invoke(Request(""));
  ASSERT_EQ(answer.outcome, Outcome::kSucceeded);
  EXPECT_TRUE(called);
  EXPECT_GT(counting_.reads.load(), 0) << "cold caches: the kill switches and the breaker were read";
  EXPECT_EQ(counting_.reads_on_loop.load(), 0) << "a store read held the call's loop";
}

TEST_F(IntentOpeningTest, AnIntentThatIsThereIsAnsweredAsBeforeAndTakesNoSlot) {
  auto first = Admit(Request("order-2"));
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<InvocationTicket>>(first));
  // In progress: the second is deferred, and the only slot stays the first's.
  auto [busy, called] = Invoke(Request("order-2"));
  EXPECT_FALSE(called);
  EXPECT_EQ(busy.outcome, Outcome::kDeferred);
  EXPECT_EQ(busy.reason, OutcomeReason(DeferReason::kIntentInProgress));
  EXPECT_EQ(InFlight(), 1);
  // Another input under the key: refused, nothing written for it.
  auto [reused, reused_called] = Invoke(Request("order-2", R"({"k":"other"})"));
  EXPECT_FALSE(reused_called);
  EXPECT_EQ(reused.error, InvokeError::kIdempotencyKeyReused);
  const InvokeResult done = Complete(std::move(std::get<std::unique_ptr<InvocationTicket>>(first)), 200);
  ASSERT_EQ(done.outcome, Outcome::kSucceeded);
  // Succeeded: the same call is answered from it, the downstream not called again.
  auto [hit, hit_called] = Invoke(Request("order-2"));
  EXPECT_FALSE(hit_called);
  EXPECT_EQ(hit.outcome, Outcome::kSucceeded);
  EXPECT_EQ(hit.execution_id, done.execution_id);
  EXPECT_EQ(InFlight(), 0);
}

TEST_F(IntentOpeningTest, WithTheBreakerOpenASucceededIntentIsStillAnsweredFromItsRecord) {
  auto [ok, ok_called] = Invoke(Request("order-3"));
  ASSERT_EQ(ok.outcome, Outcome::kSucceeded);
  auto [failed, failed_called] = Invoke(Request("other", R"({"k":"x"})"), 503);  // threshold 1: opens it
  ASSERT_TRUE(failed_called);
  auto [deferred, deferred_called] = Invoke(Request("order-4", R"({"k":"y"})"));
  ASSERT_EQ(deferred.outcome, Outcome::kDeferred);
  EXPECT_EQ(deferred.reason, OutcomeReason(DeferReason::kBreakerOpen));
  EXPECT_FALSE(IntentState("order-4").has_value() && IntentState("order-4") == "IN_PROGRESS")
      << "a deferred call holds no intent";
  auto [hit, hit_called] = Invoke(Request("order-3"));
  EXPECT_FALSE(hit_called);
  EXPECT_EQ(hit.outcome, Outcome::kSucceeded) << "the earlier answer, not breaker_open";
  EXPECT_EQ(hit.execution_id, ok.execution_id);
}

TEST_F(IntentOpeningTest, AFullConnectorDefersTheCallAndGivesItsIntentBack) {
  auto holder = Admit(Request(""));  // max_in_flight = 1: the only slot
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<InvocationTicket>>(holder));
  auto [full, called] = Invoke(Request("order-5"));
  EXPECT_FALSE(called);
  EXPECT_EQ(full.outcome, Outcome::kDeferred);
  EXPECT_EQ(full.reason, OutcomeReason(DeferReason::kConcurrencyLimit));
  EXPECT_NE(IntentState("order-5"), "IN_PROGRESS") << "given back: a retry is not told intent_in_progress";
  ASSERT_EQ(Complete(std::move(std::get<std::unique_ptr<InvocationTicket>>(holder)), 200).outcome, Outcome::kSucceeded);
  auto [retry, retry_called] = Invoke(Request("order-5"));
  EXPECT_TRUE(retry_called);
  EXPECT_EQ(retry.outcome, Outcome::kSucceeded);
  EXPECT_EQ(InFlight(), 0);
}

TEST_F(IntentOpeningTest, AnOpeningTheStoreRefusesHoldsNeitherIntentNorSlot) {
  faulty_.FailWhere([](const store::ItemKey& k) { return k.sk.rfind("INTENT#", 0) == 0; });
  auto [down, called] = Invoke(Request("order-6"));
  EXPECT_FALSE(called);
  EXPECT_EQ(down.outcome, Outcome::kDeferred);
  EXPECT_EQ(down.reason, OutcomeReason(DeferReason::kStoreUnavailable));
  faulty_.FailWhere({});
  EXPECT_EQ(InFlight(), 0);
  EXPECT_NE(IntentState("order-6"), "IN_PROGRESS");
  auto [back, back_called] = Invoke(Request("order-6"));
  EXPECT_TRUE(back_called);
  EXPECT_EQ(back.outcome, Outcome::kSucceeded);
}

// An opening whose slot acquire was applied but answered with an error (DynamoDB: a timeout or a
// 500 after the request went out) gives that slot back before the call takes another the long way:
// left, it would count as a call in flight until its lease ran out — a connector's whole limit, in a
// brownout, taken by calls that are not running.
TEST_F(IntentOpeningTest, AnAcquireWhoseOutcomeIsUnknownHoldsNoSlotOnceTheCallIsOver) {
  const store::ItemKey shard = ConnectorConcurrencyService::Key("crm");
  faulty_.ApplyThenFailOnce([shard](const store::ItemKey& k) { return k == shard; });
  auto [result, called] = Invoke(Request(""));
  EXPECT_EQ(faulty_.injected(), 1) << "the opening's acquire met the fault";
  EXPECT_TRUE(called) << "max_in_flight = 1: the slot taken the long way is the only one";
  EXPECT_EQ(result.outcome, Outcome::kSucceeded);
  EXPECT_EQ(InFlight(), 0);
  auto [next, next_called] = Invoke(Request(""));
  EXPECT_TRUE(next_called);
  EXPECT_EQ(next.outcome, Outcome::kSucceeded);
}

}  // namespace
}  // namespace toolgate
