// S10 and recovery under store faults, on the invocation path itself (ToolInvoker over the real
// services and a memory store behind a fault-injecting wrapper; the downstream's answer is handed in,
// as the gateway does after its HTTP call).
//   - on_store_error = "defer": a store error answers DEFERRED store_unavailable and nothing is called;
//   - on_store_error = "allow": the call runs without breaker and slot and is recorded as unguarded;
//   - a store that dies mid-burst and comes back: no slot leaked beyond its lease, no breaker stuck,
//     and every call answered SUCCEEDED/FAILED has its full, verifiable ledger.
// Each test runs twice: through the blocking entry points (Admit, Complete), and through the
// coroutines over the asynchronous store port (AdmitAsync, CompleteAsync with a StoreDrive), the way
// the gateway runs a call on its event loop — batches through the port, a service's own writes on a
// pool — with the faults injected under the port.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>
#include <thread>

#include "fault_injecting_store.h"
#include "gtest/gtest.h"
#include "invoker_support.h"
#include "spdlog/spdlog.h"
#include "nlohmann/json.hpp"
#include "test_support.h"
#include "toolgate/services/ledger_verifier.h"
#include "toolgate/store/async_item_store.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using toolgate::testing::FaultInjectingStore;

bool IsConnectorItem(const store::ItemKey& k) { return k.pk.rfind("CONNECTOR#", 0) == 0; }

class StoreFaultTest : public ::testing::TestWithParam<bool> {
 protected:
  bool ThroughPort() const { return GetParam(); }

  void Build(const std::string& on_store_error) {
    auto c =
        ParseConfig("[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 64\non_store_error = \"" +
                        on_store_error + "\"\n[connectors.crm.breaker]\nfailure_threshold = 1000\ncooldown_s = 5\n",
                    "fault.toml");
    ASSERT_TRUE(c.ok()) << c.status();
    stack_ = std::make_unique<toolgate::testing::InvokerStack>(faulty_, clock_, std::move(*c));
    config_ = &stack_->config;
    slots_ = &stack_->slots;
    breakers_ = &stack_->breakers;
    ledger_ = &stack_->ledger;
    executions_ = &stack_->executions;
    invoker_ = &stack_->invoker;
    ASSERT_TRUE(slots_->EnsureConnector("crm", config_->connectors.at("crm").concurrency).ok());
  }

  InvokeRequest Request() const {
    InvokeRequest r;
    r.principal = {"user-1", "tenant-a", "", {}};
    r.tool_name = "crm.update";
    r.input_json = R"({"k":"v"})";
    r.idempotency_key = key_;
    return r;
  }
  // The call's two halves apart (a store that goes down between them), through either path.
  std::unique_ptr<InvocationTicket> AdmitOnly() { return AdmitOnly(Request()); }
  std::unique_ptr<InvocationTicket> AdmitOnly(const InvokeRequest& request) {
    ToolInvoker::Admitted admitted;
    if (!ThroughPort()) {
      admitted = invoker_->Admit(request);
    } else {
      RunOnLoop([&](StoreDrive drive) -> boost::asio::awaitable<void> {
        auto admit = invoker_->AdmitAsync(request, drive);
        admitted = co_await std::move(admit);
      });
    }
    auto* ticket = std::get_if<std::unique_ptr<InvocationTicket>>(&admitted);
    EXPECT_NE(ticket, nullptr) << "not admitted: " << ToString(std::get<InvokeResult>(admitted).reason);
    return ticket == nullptr ? nullptr : std::move(*ticket);
  }
  InvokeResult CompleteOnly(std::unique_ptr<InvocationTicket> ticket, int status) {
    if (!ThroughPort()) return invoker_->Complete(std::move(ticket), testing::DownstreamAnswer(status));
    InvokeResult out;
    RunOnLoop([&](StoreDrive drive) -> boost::asio::awaitable<void> {
      auto complete = invoker_->CompleteAsync(std::move(ticket), testing::DownstreamAnswer(status), drive);
      out = co_await std::move(complete);
    });
    return out;
  }
  template <typename F>
  void RunOnLoop(F f) {
    boost::asio::io_context loop;
    boost::asio::co_spawn(loop, f(StoreDrive{&port_, &blocking_}), boost::asio::detached);
    loop.run();
  }
  // A call with `key` admitted while the store works; the store goes down before its close.
  InvokeResult LoseTheOutcome(const std::string& key) {
    Build("defer");
    key_ = key;
    std::unique_ptr<InvocationTicket> ticket = AdmitOnly();
    if (ticket == nullptr) return InvokeResult::Refused(InvokeError::kStoreUnavailable, "not admitted");
    faulty_.SetDown(true);
    return CompleteOnly(std::move(ticket), 200);
  }
  UnrecordedOutcomes& Unrecorded() { return stack_->engine->unrecorded_outcomes(); }
  // An operator's replay of `original_id`, prepared (not run).
  auto PrepareReplay(const std::string& original_id, const std::string& reason) {
    ReplayOrder order;
    order.principal = {"op-1", "tenant-a", "", {"operator"}};
    order.original_id = original_id;
    order.reason = reason;
    order.requested_by = "on-call";
    return stack_->engine->replayer().Prepare(order);
  }
  // Admit and, when admitted, complete with `status`. The response, and whether the downstream was called.
  std::pair<InvokeResult, bool> Invoke(int status) {
    if (ThroughPort()) return InvokeThroughPort(status);
    auto admitted = invoker_->Admit(Request());
    if (auto* r = std::get_if<InvokeResult>(&admitted)) return {*r, false};
    auto ticket = std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted));
    return {invoker_->Complete(std::move(ticket), testing::DownstreamAnswer(status)), true};
  }
  std::pair<InvokeResult, bool> InvokeThroughPort(int status) {
    boost::asio::io_context loop;  // this call's own event loop
    const StoreDrive drive{&port_, &blocking_};
    std::pair<InvokeResult, bool> out;
    boost::asio::co_spawn(
        loop,
        [&]() -> boost::asio::awaitable<void> {
          auto admit = invoker_->AdmitAsync(Request(), drive);
          ToolInvoker::Admitted admitted = co_await std::move(admit);
          if (auto* r = std::get_if<InvokeResult>(&admitted)) {
            out = {*r, false};
            co_return;
          }
          auto complete = invoker_->CompleteAsync(std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted)),
                                                  testing::DownstreamAnswer(status), drive);
          out = {co_await std::move(complete), true};
        },
        boost::asio::detached);
    loop.run();
    return out;
  }
  int64_t InFlight() {
    auto s = slots_->Read("crm", config_->connectors.at("crm").concurrency);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->in_flight : -1;
  }

  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore memory_{clock_};
  FaultInjectingStore faulty_{memory_};
  store::PooledAsyncItemStore port_{faulty_, 4};  // the port over the faulty store
  boost::asio::thread_pool blocking_{2};          // the gateway's store threads
  std::unique_ptr<toolgate::testing::InvokerStack> stack_;
  const Config* config_ = nullptr;
  ConnectorConcurrencyService* slots_ = nullptr;
  CircuitBreakerService* breakers_ = nullptr;
  Ledger* ledger_ = nullptr;
  ExecutionStore* executions_ = nullptr;
  ToolInvoker* invoker_ = nullptr;
  std::string key_;  // the calls' idempotency key (none: each call its own)
};

TEST_P(StoreFaultTest, DeferAnswersStoreUnavailableAndCallsNothingThenRecovers) {
  Build("defer");
  faulty_.FailWhere(IsConnectorItem);  // breaker and semaphore unreachable, the rest works
  const auto [r, called] = Invoke(200);
  EXPECT_FALSE(called) << "with on_store_error = defer nothing may reach the downstream unguarded";
  ASSERT_FALSE(r.refused()) << r.message;
  EXPECT_EQ(r.outcome, Outcome::kDeferred);
  EXPECT_EQ(r.reason, OutcomeReason{DeferReason::kStoreUnavailable});
  EXPECT_EQ(r.retry_after_s, 1);
  EXPECT_GT(faulty_.injected(), 0);

  faulty_.SetDown(false);
  const auto [ok, called_now] = Invoke(200);
  EXPECT_TRUE(called_now);
  EXPECT_EQ(ok.outcome, Outcome::kSucceeded) << ToString(ok.reason);
  EXPECT_EQ(InFlight(), 0);
}

TEST_P(StoreFaultTest, AllowRunsTheCallUnguardedAndRecordsItSo) {
  Build("allow");
  faulty_.FailWhere(IsConnectorItem);
  const auto [r, called] = Invoke(200);
  EXPECT_TRUE(called);
  ASSERT_FALSE(r.refused()) << r.message;
  ASSERT_EQ(r.outcome, Outcome::kSucceeded) << ToString(r.reason);
  auto rec = executions_->Get("tenant-a", r.execution_id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_TRUE(rec->unguarded) << "a call that ran without breaker and slot must say so";
  auto events = ledger_->ReadExecution(*rec);
  ASSERT_TRUE(events.ok());
  bool invoked_unguarded = false;
  for (const auto& e : *events) {
    if (e.type == "TOOL_INVOKED") invoked_unguarded = json::parse(e.data).value("unguarded", false);
  }
  EXPECT_TRUE(invoked_unguarded);
  EXPECT_TRUE(Ledger::VerifyChain(*events).ok());

  faulty_.SetDown(false);
  EXPECT_EQ(InFlight(), 0) << "an unguarded call took no slot";
  const auto [again, called_again] = Invoke(200);
  EXPECT_TRUE(called_again);
  auto rec2 = executions_->Get("tenant-a", again.execution_id);
  ASSERT_TRUE(rec2.ok());
  EXPECT_FALSE(rec2->unguarded) << "guarded again once the store is back";
}

// S10 applies to store trouble only: a malformed request (kInvalidArgument — a bug, not an outage)
// never makes a call run without its breaker and slot, even with on_store_error = allow.
TEST_P(StoreFaultTest, ABugIsNotStoreTroubleAllowDoesNotRunTheCallUnguarded) {
  Build("allow");
  faulty_.FailWhere(IsConnectorItem, absl::InvalidArgumentError("injected: malformed update"));
  auto [r, called] = Invoke(200);
  EXPECT_FALSE(called) << "a call ran unguarded because of a bug";
  EXPECT_EQ(r.outcome, Outcome::kDeferred) << ToString(r.reason);
  EXPECT_EQ(r.reason, OutcomeReason{DeferReason::kStoreUnavailable});
  // The same fault as an outage (kUnavailable) is what `allow` is for.
  faulty_.FailWhere(IsConnectorItem);
  auto [allowed, ran] = Invoke(200);
  EXPECT_TRUE(ran);
  EXPECT_EQ(allowed.outcome, Outcome::kSucceeded) << ToString(allowed.reason);
}

TEST_P(StoreFaultTest, AllowStillNeedsTheLedgerAWholeStoreOutageDefers) {
  Build("allow");
  faulty_.SetDown(true);
  const auto [r, called] = Invoke(200);
  EXPECT_FALSE(called) << "no call runs without its record (S9), whatever on_store_error says";
  ASSERT_FALSE(r.refused()) << r.message;
  EXPECT_EQ(r.outcome, Outcome::kDeferred);
}

TEST_P(StoreFaultTest, AStoreThatDiesMidBurstLeavesNoLeakNoStuckBreakerAndNoLedgerGap) {
  Build("defer");
  // The logger is created on first use inside the uninstrumented spdlog library: create it here,
  // before the threads, so ThreadSanitizer does not see its lazy construction race.
  spdlog::default_logger();
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> answered;  // (execution id, outcome) with a record
  const auto answered_count = [&] {
    std::lock_guard lock(mu);
    return answered.size();
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back([&, w] {
      std::minstd_rand rng(static_cast<unsigned>(w));
      for (int i = 0; i < 5000 && !stop.load(); ++i) {
        const auto [r, called] = Invoke(rng() % 5 == 0 ? 500 : 200);
        const std::string outcome = r.refused() ? "" : std::string(ToString(r.outcome));
        // A store_unavailable answer says plainly that nothing (or the outcome) could be recorded.
        if (ToString(r.reason) != "store_unavailable" && (outcome == "SUCCEEDED" || outcome == "FAILED")) {
          std::lock_guard lock(mu);
          answered.emplace_back(r.execution_id, outcome);
        }
      }
    });
  }
  // The store dies twice while calls are flowing, each time after progress (bounded waits), and
  // comes back. Slots whose release it swallowed stay held until their leases end, so the limit is
  // roomy enough for the burst to go on.
  const auto wait_for = [&](size_t n) {
    for (int i = 0; i < 1000 && answered_count() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  for (size_t round = 1; round <= 2; ++round) {
    wait_for(round * 15);
    faulty_.SetDown(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    faulty_.SetDown(false);
  }
  wait_for(answered_count() + 15);
  stop = true;
  for (auto& t : workers) t.join();
  EXPECT_GT(faulty_.injected(), 0) << "the outage hit nothing: the test proves nothing";
  EXPECT_GT(answered.size(), 40u);

  // Every call answered SUCCEEDED/FAILED has its record, its full chain, and a matching last event.
  for (const auto& [id, outcome] : answered) {
    auto rec = executions_->Get("tenant-a", id);
    ASSERT_TRUE(rec.ok()) << id << ": " << rec.status();
    EXPECT_EQ(ToString(rec->outcome), outcome) << id;
    auto events = ledger_->ReadExecution(*rec);
    ASSERT_TRUE(events.ok()) << id;
    ASSERT_FALSE(events->empty()) << id;
    EXPECT_TRUE(Ledger::VerifyChain(*events).ok()) << id;
    EXPECT_EQ(events->back().type, outcome == "SUCCEEDED" ? "TOOL_SUCCEEDED" : "TOOL_FAILED") << id;
    EXPECT_EQ(rec->last_seq, events->back().seq) << id;
  }

  // Slots whose release the outage swallowed come back by lease (S7): after lease + skew the whole
  // limit can be taken again, and not more.
  const ConcurrencyConfig& cc = config_->connectors.at("crm").concurrency;
  clock_.advance(std::chrono::seconds(cc.lease_ttl_s + cc.max_clock_skew_s));
  std::vector<SlotLease> held;
  for (int i = 0; i < cc.max_in_flight; ++i) {
    auto lease = slots_->TryAcquire("crm", cc);
    ASSERT_TRUE(lease.ok() && lease->has_value()) << "slot " << i << " leaked";
    held.push_back(**lease);
  }
  EXPECT_FALSE(slots_->TryAcquire("crm", cc)->has_value());
  for (const auto& l : held) EXPECT_TRUE(*slots_->Release(l));

  // The breaker is in a legal state and not stuck: past cooldown and probe timeout, a caller is let in.
  auto state = breakers_->Read("crm");
  ASSERT_TRUE(state.ok()) << state.status();
  clock_.advance(std::chrono::seconds(60));
  const auto [after, called] = Invoke(200);
  EXPECT_TRUE(called) << ToString(after.reason);
  EXPECT_EQ(after.outcome, Outcome::kSucceeded) << ToString(after.reason);
  EXPECT_EQ(InFlight(), 0);
}

// S9 and idempotency after a store outage: a call that reached its downstream while the store went
// down is answered FAILED store_unavailable, and its close (outcome, last event, intent, slot) is
// held and written once the store is back — so the key's retry is answered from the recorded
// success instead of being sent again, and the slot is given back without waiting for its lease.
TEST_P(StoreFaultTest, AnOutcomeTheStoreDidNotTakeIsWrittenOnceItIsBackAndTheKeyAnsweredFromIt) {
  const InvokeResult lost = LoseTheOutcome("order-1");
  EXPECT_EQ(lost.outcome, Outcome::kFailed);
  EXPECT_EQ(lost.reason, OutcomeReason{FailureReason::kStoreUnavailable});
  ASSERT_EQ(Unrecorded().held(), 1u) << "the outcome the store did not take is not held";
  EXPECT_EQ(lost.details.value("outcome_held", false), true) << lost.details;

  // Still down: tried (due or not), not recorded, still held.
  EXPECT_EQ(Unrecorded().RetryDue(/*all=*/true), 0);
  EXPECT_EQ(Unrecorded().held(), 1u);
  faulty_.SetDown(false);
  EXPECT_EQ(Unrecorded().RetryDue(), 0) << "retried before its backoff was due";
  clock_.advance(std::chrono::seconds(UnrecordedOutcomes::kLongestRetryMs / 1000));
  EXPECT_EQ(Unrecorded().RetryDue(), 1);
  EXPECT_EQ(Unrecorded().held(), 0u);

  auto rec = executions_->Get("tenant-a", lost.execution_id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->outcome, Outcome::kSucceeded);
  auto events = ledger_->ReadExecution(*rec);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_FALSE(events->empty());
  EXPECT_TRUE(Ledger::VerifyChain(*events).ok());
  EXPECT_EQ(events->back().type, "TOOL_SUCCEEDED");
  EXPECT_EQ(rec->last_seq, events->back().seq);
  EXPECT_EQ(InFlight(), 0) << "the held close gives the slot back";

  // The key's retry is answered from the recorded success; nothing is sent again.
  const auto [retry, called] = Invoke(200);
  EXPECT_FALSE(called) << "the call was sent twice";
  EXPECT_EQ(retry.outcome, Outcome::kSucceeded) << ToString(retry.reason);
  EXPECT_EQ(retry.execution_id, lost.execution_id);
}

// A held close is not forced over what happened meanwhile: once the intent's hold has run out and
// another call took the key over, the old execution's record still gets its true outcome, but the
// intent stays the new call's.
TEST_P(StoreFaultTest, AHeldOutcomeDoesNotTakeBackAnIntentAnotherCallTookOver) {
  const InvokeResult lost = LoseTheOutcome("order-2");
  ASSERT_EQ(lost.reason, OutcomeReason{FailureReason::kStoreUnavailable});
  faulty_.SetDown(false);
  const ConnectorConfig& c = config_->connectors.at("crm");
  clock_.advance(std::chrono::milliseconds(c.timeout_ms + 30'000 + c.concurrency.lease_ttl_s * 1000 +
                                           c.concurrency.max_clock_skew_s * 1000 + 1000));
  const auto [other, called] = Invoke(200);
  ASSERT_TRUE(called) << ToString(other.reason);
  ASSERT_EQ(other.outcome, Outcome::kSucceeded);
  ASSERT_NE(other.execution_id, lost.execution_id);

  EXPECT_EQ(Unrecorded().RetryDue(), 0) << "recorded whole over another call's intent";
  EXPECT_EQ(Unrecorded().held(), 0u) << "a refused part is not tried forever";
  auto rec = executions_->Get("tenant-a", lost.execution_id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->outcome, Outcome::kSucceeded) << "the record still says what happened";
  auto intent = memory_.Get(IntentStore::Key("tenant-a", "order-2"));
  ASSERT_TRUE(intent.ok() && intent->has_value());
  EXPECT_EQ((*intent)->at("execution_id").as_string(), other.execution_id);
  EXPECT_EQ(InFlight(), 0);
}

// A replay of the abandoned execution came first (REPLAY_REQUESTED moved the original's anchor):
// the held finish is refused, and what would name the execution as ended goes with it — its intent
// is not written SUCCEEDED over a record that stays IN_PROGRESS (which `ledger verify` would fail,
// and the key would be answered store_unavailable).
TEST_P(StoreFaultTest, AHeldOutcomeAReplayCameBeforeLeavesTheIntentAsItWas) {
  const InvokeResult lost = LoseTheOutcome("order-4");
  ASSERT_EQ(lost.reason, OutcomeReason{FailureReason::kStoreUnavailable});
  ASSERT_EQ(Unrecorded().held(), 1u);
  faulty_.SetDown(false);
  clock_.advance(std::chrono::hours(1));  // abandoned: a replay may run it
  auto prepared = PrepareReplay(lost.execution_id, "abandoned");
  ASSERT_TRUE(std::holds_alternative<InvokeRequest>(prepared)) << ToString(std::get<InvokeResult>(prepared).reason);
  auto intent_before = memory_.Get(IntentStore::Key("tenant-a", "order-4"));
  ASSERT_TRUE(intent_before.ok() && intent_before->has_value());

  EXPECT_EQ(Unrecorded().RetryDue(/*all=*/true), 0) << "recorded over the replay's event";
  EXPECT_EQ(Unrecorded().held(), 0u) << "a refused finish is not tried forever";
  auto rec = executions_->Get("tenant-a", lost.execution_id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->outcome, Outcome::kInProgress) << "the replay's event hidden by the held finish";
  auto events = ledger_->ReadExecution(*rec);
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_TRUE(LedgerVerifier::CheckExecution(*rec, "tenant-a", *events, nullptr).ok());
  EXPECT_EQ(events->back().type, "REPLAY_REQUESTED");
  auto intent = memory_.Get(IntentStore::Key("tenant-a", "order-4"));
  ASSERT_TRUE(intent.ok() && intent->has_value());
  EXPECT_EQ(**intent, **intent_before) << "the intent was finished for a record still IN_PROGRESS";
  EXPECT_EQ(InFlight(), 0) << "the slot is given back all the same";
}

// A replay's close names the replay's success in two places, its original's record and the key's
// intent, each only after the replay's own record says so. The original swept by its retention while
// the replay ran (its kept result then refused) must not leave the intent IN_PROGRESS: once its hold
// ran out, the key would send the call again.
TEST_P(StoreFaultTest, AReplaysIntentIsFinishedEvenWhenItsOriginalWasSweptMeanwhile) {
  Build("defer");
  key_ = "order-6";
  const auto [failed, called] = Invoke(500);
  ASSERT_TRUE(called);
  ASSERT_EQ(failed.outcome, Outcome::kFailed) << ToString(failed.reason);
  auto prepared = PrepareReplay(failed.execution_id, "downstream fixed");
  ASSERT_TRUE(std::holds_alternative<InvokeRequest>(prepared)) << ToString(std::get<InvokeResult>(prepared).reason);
  std::unique_ptr<InvocationTicket> replay = AdmitOnly(std::get<InvokeRequest>(prepared));
  ASSERT_NE(replay, nullptr);
  // Retention sweeps the original while the replay is at its downstream.
  auto erased = memory_.Erase(ExecutionStore::Key("tenant-a", failed.execution_id), store::Condition::Always());
  ASSERT_TRUE(erased.ok() && erased->applied);

  const InvokeResult replayed = CompleteOnly(std::move(replay), 200);
  ASSERT_EQ(replayed.outcome, Outcome::kSucceeded) << ToString(replayed.reason);
  auto intent = memory_.Get(IntentStore::Key("tenant-a", "order-6"));
  ASSERT_TRUE(intent.ok() && intent->has_value());
  EXPECT_EQ((*intent)->at("execution_id").as_string(), replayed.execution_id);
  EXPECT_EQ((*intent)->at("state").as_string(), "SUCCEEDED") << "the key's intent left held by a finished replay";
  EXPECT_EQ(Unrecorded().held(), 0u) << "a refusal is not store trouble";
  EXPECT_EQ(InFlight(), 0);

  // Long after any hold: the key is answered from the replay's success, not sent again.
  clock_.advance(std::chrono::hours(2));
  const auto [again, sent] = Invoke(200);
  EXPECT_FALSE(sent) << "the key ran the call again";
  EXPECT_EQ(again.execution_id, replayed.execution_id);
}

// The held closes alone, over a memory store behind a fault-injecting wrapper.
class UnrecordedOutcomesTest : public ::testing::Test {
 protected:
  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore memory_{clock_};
  FaultInjectingStore faulty_{memory_};
  Metrics metrics_;
  const UnrecordedOutcomes::WriteResults down_ = {absl::UnavailableError("down")};
};

// What is left to write after an attempt, write by write.
TEST_F(UnrecordedOutcomesTest, RemainingKeepsStoreTroubleDropsRefusalsAndFollowsChains) {
  using store::WriteRequest;
  using Results = UnrecordedOutcomes::WriteResults;
  const auto w = [](std::string sk, size_t back) {
    WriteRequest r = WriteRequest::Put({"pk", std::move(sk)}, {}, store::Condition());
    r.requires_back = back;
    return r;
  };
  store::WriteResult applied;
  applied.applied = true;
  const store::WriteResult refused = store::WriteResult::ConditionFailed();
  const absl::Status unavailable = absl::UnavailableError("down");
  const std::vector<WriteRequest> writes = {w("event", 0), w("record", 1), w("intent", 0), w("slot", 0)};
  const auto names = [](const std::vector<WriteRequest>& left) {
    std::vector<std::string> out;
    for (const auto& r : left)
      out.push_back(r.key.sk + (r.requires_back > 0 ? "+" + std::to_string(r.requires_back) : ""));
    return out;
  };
  bool was_refused = false;
  // Everything failed: everything is left, the chain kept.
  EXPECT_EQ(names(UnrecordedOutcomes::Remaining(writes, Results{unavailable, refused, unavailable, unavailable},
                                                was_refused)),
            (std::vector<std::string>{"event", "record+1", "intent", "slot"}));
  EXPECT_FALSE(was_refused) << "a write skipped after its chain's failed head is not a refusal";
  // The event went in, the record did not: the record is left, no longer chained.
  EXPECT_EQ(names(UnrecordedOutcomes::Remaining(writes, Results{applied, unavailable, applied, applied}, was_refused)),
            (std::vector<std::string>{"record"}));
  EXPECT_FALSE(was_refused);
  // The event refused: it and the record chained to it are dropped; the rest still goes in.
  EXPECT_EQ(names(UnrecordedOutcomes::Remaining(writes, Results{refused, refused, unavailable, applied}, was_refused)),
            (std::vector<std::string>{"intent"}));
  EXPECT_TRUE(was_refused);
  // A malformed write is not store trouble: not tried again.
  was_refused = false;
  EXPECT_TRUE(
      UnrecordedOutcomes::Remaining({w("x", 0)}, Results{absl::InvalidArgumentError("bad")}, was_refused).empty());
  EXPECT_TRUE(was_refused);
  // Two writes chained to the same one (a replay's kept result and its intent, both to the record).
  const std::vector<WriteRequest> fan = {w("event", 0), w("record", 1), w("replayed", 1), w("intent", 2)};
  was_refused = false;
  // The record left: both go with it, each chained to it where it now stands.
  EXPECT_EQ(names(UnrecordedOutcomes::Remaining(fan, Results{applied, unavailable, refused, refused}, was_refused)),
            (std::vector<std::string>{"record", "replayed+1", "intent+2"}));
  EXPECT_FALSE(was_refused);
  // The record applied, the kept result refused: the intent is not dropped with it.
  EXPECT_EQ(names(UnrecordedOutcomes::Remaining(fan, Results{applied, applied, refused, unavailable}, was_refused)),
            (std::vector<std::string>{"intent"}));
  EXPECT_TRUE(was_refused);
  // The event left, the record skipped behind it: the chain of three kept, re-aimed.
  was_refused = false;
  EXPECT_EQ(names(UnrecordedOutcomes::Remaining(fan, Results{unavailable, refused, refused, refused}, was_refused)),
            (std::vector<std::string>{"event", "record+1", "replayed+1", "intent+2"}));
  EXPECT_FALSE(was_refused);
}

// Held closes are bounded, by count and by bytes: beyond either limit one is not held (the
// execution stays IN_PROGRESS, as before), and the ones held are kept.
TEST_F(UnrecordedOutcomesTest, BeyondItsLimitsACloseIsNotHeld) {
  const auto put = [](const std::string& by, size_t size = 1) {
    return std::vector<store::WriteRequest>{store::WriteRequest::Put(
        {"pk", "sk"}, {{"by", by}, {"pad", std::string(size, 'x')}}, store::Condition::ItemAbsent())};
  };
  UnrecordedOutcomes held(memory_, clock_, metrics_, /*max_held=*/2);
  EXPECT_TRUE(held.Hold("e1", "SUCCEEDED", put("e1"), down_));
  EXPECT_TRUE(held.Hold("e2", "SUCCEEDED", put("e2"), down_));
  EXPECT_FALSE(held.Hold("e3", "SUCCEEDED", put("e3"), down_));
  EXPECT_EQ(held.held(), 2u);
  // Both are written once due; the second finds the item the first wrote (not its own) and is
  // refused, not retried.
  clock_.advance(std::chrono::seconds(2));
  EXPECT_EQ(held.RetryDue(), 1);
  EXPECT_EQ(held.held(), 0u);
  EXPECT_EQ(held.held_bytes(), 0u);
  EXPECT_EQ(store::GetString(**memory_.Get({"pk", "sk"}), "by"), "e1");

  UnrecordedOutcomes small(memory_, clock_, metrics_, /*max_held=*/100, /*max_held_bytes=*/64 * 1024);
  EXPECT_TRUE(small.Hold("big-1", "SUCCEEDED", put("big-1", 40 * 1024), down_));
  EXPECT_GT(small.held_bytes(), 40u * 1024);
  EXPECT_FALSE(small.Hold("big-2", "SUCCEEDED", put("big-2", 40 * 1024), down_)) << "held beyond the byte budget";
  EXPECT_TRUE(small.Hold("small", "SUCCEEDED", put("small"), down_));
  EXPECT_EQ(small.held(), 2u);
}

// A write whose first try's outcome was unknown (a DynamoDB timeout that had in fact applied it) is
// refused by its own condition when tried again: read back, the item holds what it writes, so it
// counts as applied and the write chained to it still goes in, in the same turn. An item holding
// something else is a refusal, and the chained write is dropped.
TEST_F(UnrecordedOutcomesTest, AWriteFoundAppliedOnReadingBackCountsAsApplied) {
  UnrecordedOutcomes held(memory_, clock_, metrics_);
  const auto close = [](const std::string& id) {
    store::WriteRequest event =
        store::WriteRequest::Put({"EXEC#" + id, "EV#1"}, {{"hash", "h-" + id}}, store::Condition::ItemAbsent());
    store::WriteRequest finish = store::WriteRequest::Update(
        {"EXEC#" + id, "REC"}, {store::UpdateOp::Set(store::Attr("outcome"), "SUCCEEDED")}, store::Condition::Always());
    return std::vector<store::WriteRequest>{event, std::move(finish).AfterPrevious()};
  };
  const UnrecordedOutcomes::WriteResults both_down = {absl::UnavailableError("timed out"), absl::UnavailableError("")};
  ASSERT_TRUE(held.Hold("ours", "SUCCEEDED", close("ours"), both_down));
  ASSERT_TRUE(held.Hold("theirs", "SUCCEEDED", close("theirs"), both_down));
  // The first try of "ours" had applied its event after all; "theirs" finds another writer's.
  ASSERT_TRUE(memory_.Put({"EXEC#ours", "EV#1"}, {{"hash", "h-ours"}}, store::Condition::Always()).ok());
  ASSERT_TRUE(memory_.Put({"EXEC#theirs", "EV#1"}, {{"hash", "h-other"}}, store::Condition::Always()).ok());

  // A stop's last try: the finish behind the event found applied goes in within the same turn.
  EXPECT_EQ(held.RetryDue(/*all=*/true), 1);
  EXPECT_EQ(held.held(), 0u) << "the finish after the event found applied left for a turn a stop does not have";
  EXPECT_FALSE(memory_.Get({"EXEC#theirs", "REC"})->has_value()) << "written after another writer's event";
  auto rec = memory_.Get({"EXEC#ours", "REC"});
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ(store::GetString(**rec, "outcome"), "SUCCEEDED");

  // What a read-back can vouch for: a Put's whole item, an Update's Sets and Removes; not a count.
  const store::Item item{{"a", "1"}, {"n", int64_t{3}}};
  using store::UpdateOp;
  const auto update = [](std::vector<UpdateOp> ops) {
    return store::WriteRequest::Update({"pk", "sk"}, std::move(ops), store::Condition::Always());
  };
  EXPECT_TRUE(UnrecordedOutcomes::AlreadyWritten(
      update({UpdateOp::Set(store::Attr("a"), "1"), UpdateOp::Remove(store::Attr("b"))}), item));
  EXPECT_FALSE(UnrecordedOutcomes::AlreadyWritten(update({UpdateOp::Set(store::Attr("a"), "2")}), item));
  EXPECT_FALSE(UnrecordedOutcomes::AlreadyWritten(update({UpdateOp::Remove(store::Attr("n"))}), item));
  EXPECT_FALSE(UnrecordedOutcomes::AlreadyWritten(update({UpdateOp::Add(store::Attr("n"), -1)}), item));
  EXPECT_FALSE(UnrecordedOutcomes::AlreadyWritten(update({UpdateOp::Set(store::Attr("a"), "1")}), std::nullopt));
  EXPECT_FALSE(
      UnrecordedOutcomes::AlreadyWritten(store::WriteRequest::Erase({"pk", "sk"}, store::Condition()), std::nullopt));
  EXPECT_TRUE(
      UnrecordedOutcomes::AlreadyWritten(store::WriteRequest::Put({"pk", "sk"}, item, store::Condition()), item));
}

// Only a store unreachable or timing out holds the other closes back: a close failing with an error
// of its own (a damaged item) does not stall the rest. Once one is recorded after trouble, every
// other held close is tried at the next turn, whatever its backoff.
TEST_F(UnrecordedOutcomesTest, OnlyStoreTroubleStallsTheOthersAndARecordedCloseMakesTheRestDue) {
  UnrecordedOutcomes held(faulty_, clock_, metrics_);
  const auto put = [](const std::string& sk) {
    return std::vector<store::WriteRequest>{store::WriteRequest::Put({"pk", sk}, {{"v", sk}}, store::Condition())};
  };
  for (const std::string sk : {"a", "b", "c"}) ASSERT_TRUE(held.Hold("e-" + sk, "SUCCEEDED", put(sk), down_));
  faulty_.FailWhere([](const store::ItemKey& k) { return k.sk == "a"; }, absl::DataLossError("damaged"));
  EXPECT_EQ(held.RetryDue(/*all=*/true), 2) << "one close's own error stalled the others";
  EXPECT_EQ(held.held(), 1u);

  // The store goes down_; "a"'s backoff grows while only the first due is tried per turn.
  faulty_.SetDown(true);
  for (int i = 0; i < 4; ++i) {
    clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kLongestRetryMs));
    EXPECT_EQ(held.RetryDue(), 0);
  }
  ASSERT_TRUE(held.Hold("e-d", "SUCCEEDED", put("d"), down_));
  faulty_.SetDown(false);
  // "d" is due first and goes in; "a", not due for up to kLongestRetryMs, is due at the next turn.
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kFirstRetryMs));
  held.RetryDue();
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kFirstRetryMs));
  held.RetryDue();
  EXPECT_EQ(held.held(), 0u) << "a close held back by its backoff after the store came back";
  EXPECT_TRUE(memory_.Get({"pk", "a"})->has_value());
  EXPECT_TRUE(memory_.Get({"pk", "d"})->has_value());
}

// A close whose writes went in but for one refused (its slot's lease reclaimed meanwhile) says the
// store takes writes again as well as one recorded whole: the others are due at the next turn.
TEST_F(UnrecordedOutcomesTest, AClosePartlyRefusedAlsoMakesTheRestDue) {
  UnrecordedOutcomes held(faulty_, clock_, metrics_);
  ASSERT_TRUE(held.Hold("e-b", "SUCCEEDED", {store::WriteRequest::Put({"pk", "b"}, {}, store::Condition())}, down_));
  faulty_.SetDown(true);
  for (int i = 0; i < 4; ++i) {
    clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kLongestRetryMs));
    EXPECT_EQ(held.RetryDue(), 0);
  }
  const store::AttributePath holder = store::AttributePath::In("holders", "lease-1");
  ASSERT_TRUE(held.Hold(
      "e-r", "SUCCEEDED",
      {store::WriteRequest::Put({"pk", "r"}, {}, store::Condition()),
       store::WriteRequest::Update(
           {"pk", "slot"}, {store::UpdateOp::Remove(holder), store::UpdateOp::Add(store::Attr("in_flight"), -1)},
           store::Condition::Exists(holder))},
      down_));
  faulty_.SetDown(false);
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kFirstRetryMs));
  EXPECT_EQ(held.RetryDue(), 0) << "the release was refused: not recorded whole";
  EXPECT_TRUE(memory_.Get({"pk", "r"})->has_value());
  EXPECT_EQ(held.held(), 1u) << "\"b\" was not due yet";
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kFirstRetryMs));
  EXPECT_EQ(held.RetryDue(), 1);
  EXPECT_EQ(held.held(), 0u) << "a close held back by its backoff after the store took writes again";
}

// Once the store takes a write, a close that failed in the same turn for the store's trouble is due
// at the next turn too; one failing with an error of its own (a damaged item) keeps its backoff.
TEST_F(UnrecordedOutcomesTest, ClosesThatWaitedForTheStoreAreDueOnceItTakesAWriteTheirOwnErrorsKeepTheirBackoff) {
  UnrecordedOutcomes held(faulty_, clock_, metrics_);
  const auto put = [](const std::string& sk) {
    return std::vector<store::WriteRequest>{store::WriteRequest::Put({"pk", sk}, {}, store::Condition())};
  };
  const auto only = [](const std::string& sk) { return [sk](const store::ItemKey& k) { return k.sk == sk; }; };
  // Two closes, the second failing with `error` as the store takes the first; how many are recorded
  // a second later.
  const auto second_later = [&](const std::string& ok, const std::string& failing, absl::Status error) {
    EXPECT_TRUE(held.Hold("e-" + ok, "SUCCEEDED", put(ok), down_));
    EXPECT_TRUE(held.Hold("e-" + failing, "SUCCEEDED", put(failing), down_));
    faulty_.FailWhere(only(failing), std::move(error));
    EXPECT_EQ(held.RetryDue(/*all=*/true), 1);
    faulty_.FailWhere({});
    clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kFirstRetryMs));
    return held.RetryDue();
  };
  EXPECT_EQ(second_later("b", "a", absl::UnavailableError("timed out")), 1)
      << "a close that failed beside one the store took kept its backoff";
  EXPECT_EQ(second_later("c", "d", absl::DataLossError("damaged")), 0)
      << "a close failing on its own was made due as the store came back";
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kFirstRetryMs));
  EXPECT_EQ(held.RetryDue(), 1);
  EXPECT_EQ(held.held(), 0u);
}

// Backoff and age are timed on monotonic time: the wall clock stepped an hour ahead gives no held
// close up, stepped back it stalls none.
TEST_F(UnrecordedOutcomesTest, AWallClockStepNeitherGivesUpNorStallsHeldCloses) {
  UnrecordedOutcomes held(faulty_, clock_, metrics_);
  ASSERT_TRUE(held.Hold("e-m", "SUCCEEDED", {store::WriteRequest::Put({"pk", "m"}, {}, store::Condition())}, down_));
  faulty_.SetDown(true);
  clock_.step_wall(std::chrono::hours(2));
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kFirstRetryMs));
  EXPECT_EQ(held.RetryDue(), 0);
  EXPECT_EQ(held.held(), 1u) << "given up for a step of the wall clock";
  faulty_.SetDown(false);
  clock_.step_wall(-std::chrono::hours(3));
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kLongestRetryMs));
  EXPECT_EQ(held.RetryDue(), 1) << "stalled by a step back of the wall clock";
  EXPECT_TRUE(memory_.Get({"pk", "m"})->has_value());
}

// While the store is still in trouble, one held close is tried per turn, not each (each would wait
// out the store's own timeout); an hour on, still refused, they are given up.
TEST_F(UnrecordedOutcomesTest, AStoreStillInTroubleIsTriedOncePerTurnAndHeldClosesExpire) {
  UnrecordedOutcomes held(faulty_, clock_, metrics_);
  for (const std::string sk : {"a", "b", "c"}) {
    ASSERT_TRUE(
        held.Hold("e-" + sk, "SUCCEEDED", {store::WriteRequest::Put({"pk", sk}, {}, store::Condition())}, down_));
  }
  faulty_.SetDown(true);
  EXPECT_EQ(held.RetryDue(/*all=*/true), 0);
  EXPECT_EQ(faulty_.injected(), 1) << "every held close waited out the store";
  EXPECT_EQ(held.held(), 3u);
  // An hour on, still down_: given up (one store that comes back in time takes them, however late).
  clock_.advance(std::chrono::milliseconds(UnrecordedOutcomes::kMaxAgeMs));
  EXPECT_EQ(held.RetryDue(), 0);
  EXPECT_EQ(held.held(), 0u) << "held past their age";
  EXPECT_EQ(faulty_.injected(), 2);
  faulty_.SetDown(false);
  EXPECT_EQ(held.RetryDue(/*all=*/true), 0);
  EXPECT_FALSE(memory_.Get({"pk", "a"})->has_value());
}

INSTANTIATE_TEST_SUITE_P(Paths, StoreFaultTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Port" : "Blocking"; });

}  // namespace
}  // namespace toolgate
