// Ledger retention ([ledger] retention_s, deferred_retention_s): executions and their chains expire
// as a whole, so the store stays bounded and `ledger verify` stays meaningful. ToolInvoker over the
// real services and a memory store on a manual clock (the downstream's answer is handed in, as the
// gateway does after its HTTP call).

#include "api/invocation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "invoker_support.h"
#include "nlohmann/json.hpp"
#include "toolgate/services/ledger_verifier.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

using json = nlohmann::json;

constexpr int64_t kRetention = 3600;
constexpr int64_t kDeferredRetention = 120;

TEST(LedgerRetentionTest, ExpiriesFollowTheConfiguredRetentions) {
  const LedgerRetention r{kRetention, kDeferredRetention};
  EXPECT_EQ(r.ExecutionExpiry(1'800'000'000'500, false), 1'800'000'000 + kRetention);
  EXPECT_EQ(r.ExecutionExpiry(1'800'000'000'500, true), 1'800'000'000 + kDeferredRetention);
  // An audit day's chain lives until the day's end plus the retention: 2027-01-15 ends at 1'800'057'600.
  EXPECT_EQ(r.AuditExpiry(1'800'000'000'000), 1'800'057'600 + kRetention);
  EXPECT_EQ(r.AuditExpiry(1'800'057'599'999), 1'800'057'600 + kRetention);
  EXPECT_EQ(r.AuditExpiry(1'800'057'600'000), 1'800'057'600 + 86'400 + kRetention);
  const LedgerRetention forever{};
  EXPECT_EQ(forever.ExecutionExpiry(1'800'000'000'000, false), 0);
  EXPECT_EQ(forever.AuditExpiry(1'800'000'000'000), 0);
}

TEST(LedgerRetentionTest, AnAuditDayKeepsTheExpiryOfItsFirstEventWhenTheRetentionChanges) {
  ManualClock clock{1'800'000'000'000};
  store::MemoryItemStore memory{clock};
  Ledger before(memory, clock, {kRetention, kDeferredRetention});
  Ledger after(memory, clock, {10 * kRetention, kDeferredRetention});  // a restart with a longer retention
  ASSERT_TRUE(before.Audit("KILL_SWITCH_SET", "ops", "{}").ok());
  clock.advance(std::chrono::milliseconds(1000));
  ASSERT_TRUE(after.Audit("KILL_SWITCH_CLEARED", "ops", "{}").ok());
  auto chain = before.Read(Ledger::AuditChain(clock.now_epoch_ms()));
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain->size(), 2u);
  EXPECT_EQ((*chain)[0].expires_at_s, 1'800'057'600 + kRetention);
  EXPECT_EQ((*chain)[1].expires_at_s, (*chain)[0].expires_at_s) << "one chain, one expiry";
  EXPECT_TRUE(Ledger::VerifyChain(*chain).ok());

  clock.set_epoch_ms((1'800'057'600 + kRetention) * 1000);
  auto gone = before.Read(Ledger::AuditChain(1'800'000'000'000));
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->empty()) << "the whole day went at once";
}

TEST(LedgerRetentionTest, VerifyNamesAnEventSetToExpireApartFromItsChain) {
  ManualClock clock{1'800'000'000'000};
  store::MemoryItemStore memory{clock};
  Ledger ledger(memory, clock, {kRetention, kDeferredRetention});
  Ledger::Tail tail{0, "", 1'800'000'000 + kRetention};
  const std::string chain = Ledger::ExecutionChain("e1");
  for (const char* type : {"EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED"}) {
    ASSERT_TRUE(ledger.Append(chain, tail, type, "u", "{}", Ledger::ExecutionAnchor("t1", "e1")).ok());
  }
  auto events = ledger.Read(chain);
  ASSERT_TRUE(events.ok());
  ASSERT_TRUE(Ledger::VerifyChain(*events).ok());
  // Someone shortens one event's life: when it goes, the chain has a hole. Verify says so at once.
  (*events)[1].expires_at_s -= 1000;
  const absl::Status s = Ledger::VerifyChain(*events);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("event 2 (TOOL_INVOKED) expires at"), std::string::npos) << s;
}

class RetentionInvokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseConfig(
        "[ledger]\nretention_s = 3600\ndeferred_retention_s = 120\n"
        "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 1\n",
        "retention.toml");
    ASSERT_TRUE(c.ok()) << c.status();
    stack_ = std::make_unique<toolgate::testing::InvokerStack>(memory_, clock_, std::move(*c));
    config_ = &stack_->config;
    slots_ = &stack_->slots;
    ledger_ = &stack_->ledger;
    executions_ = &stack_->executions;
    invoker_ = &stack_->invoker;
    ASSERT_TRUE(slots_->EnsureConnector("crm", config_->connectors.at("crm").concurrency).ok());
  }

  InvokeRequest Request(const std::string& idempotency_key = "") const {
    InvokeRequest r;
    r.principal = {"user-1", "tenant-a", "", {}};
    r.tool_name = "crm.update";
    r.input_json = R"({"k":"v"})";
    r.idempotency_key = idempotency_key;
    return r;
  }
  static DownstreamResult Ok() {
    DownstreamResult d;
    d.status = 200;
    d.body = R"({"ok":true})";
    d.latency_ms = 3;
    return d;
  }
  json Call(const std::string& idempotency_key = "") {
    auto admitted = invoker_->Admit(Request(idempotency_key));
    if (auto* r = std::get_if<InvokeResult>(&admitted)) return api::InvocationBody(*r);
    auto ticket = std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted));
    return api::InvocationBody(invoker_->Complete(std::move(ticket), Ok()));
  }
  // Every item in the store, expired or not (Scan hides expired ones, so sweep first when counting
  // what is kept).
  int LiveItems(const std::string& pk_prefix) {
    int n = 0;
    store::ScanRequest req{pk_prefix, "", 1000, std::nullopt};
    for (;;) {
      auto page = memory_.Scan(req);
      EXPECT_TRUE(page.ok());
      if (!page.ok()) return -1;
      n += static_cast<int>(page->items.size());
      if (!page->last_key) return n;
      req.after = page->last_key;
    }
  }

  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore memory_{clock_};
  std::unique_ptr<toolgate::testing::InvokerStack> stack_;
  const Config* config_ = nullptr;
  ConnectorConcurrencyService* slots_ = nullptr;
  Ledger* ledger_ = nullptr;
  ExecutionStore* executions_ = nullptr;
  ToolInvoker* invoker_ = nullptr;
};

TEST_F(RetentionInvokerTest, AnExecutionAndItsWholeChainExpireTogetherAtItsRetention) {
  const json done = Call();
  ASSERT_EQ(done["outcome"], "SUCCEEDED") << done;
  const std::string id = done["execution_id"];
  auto rec = executions_->Get("tenant-a", id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->expires_at_s, 1'800'000'000 + kRetention);
  auto events = ledger_->ReadExecution(*rec);  // held in the record (DESIGN §16)
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 3u);
  for (const auto& e : *events) EXPECT_EQ(e.expires_at_s, rec->expires_at_s) << e.type;
  EXPECT_TRUE(Ledger::VerifyChain(*events).ok());

  clock_.set_epoch_ms((rec->expires_at_s - 1) * 1000);
  EXPECT_TRUE(executions_->Get("tenant-a", id).ok()) << "kept for the whole retention";
  clock_.set_epoch_ms(rec->expires_at_s * 1000);
  EXPECT_EQ(executions_->Get("tenant-a", id).status().code(), absl::StatusCode::kNotFound);
  auto gone = ledger_->Read(Ledger::ExecutionChain(id));
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->empty());
  EXPECT_EQ(memory_.SweepExpired(), 1) << "the record, which holds its three events, is deleted";
}

TEST_F(RetentionInvokerTest, AnExecutionDeferredBeforeTheConnectorIsKeptForTheDeferredRetention) {
  auto held = invoker_->Admit(Request());  // holds the connector's only slot
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<InvocationTicket>>(held));
  const json deferred = Call();
  ASSERT_EQ(deferred["outcome"], "DEFERRED") << deferred;
  ASSERT_EQ(deferred["reason"], "concurrency_limit");
  auto ticket = std::move(std::get<std::unique_ptr<InvocationTicket>>(held));
  const json done = api::InvocationBody(invoker_->Complete(std::move(ticket), Ok()));
  ASSERT_EQ(done["outcome"], "SUCCEEDED");

  auto d = executions_->Get("tenant-a", deferred["execution_id"].get<std::string>());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->expires_at_s, 1'800'000'000 + kDeferredRetention);
  auto chain = ledger_->ReadExecution(*d);
  ASSERT_TRUE(chain.ok());
  ASSERT_FALSE(chain->empty());
  EXPECT_EQ(chain->back().type, "EXECUTION_DEFERRED");
  for (const auto& e : *chain) EXPECT_EQ(e.expires_at_s, d->expires_at_s);

  clock_.advance(std::chrono::milliseconds(kDeferredRetention * 1000));
  EXPECT_EQ(executions_->Get("tenant-a", d->execution_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(executions_->Get("tenant-a", done["execution_id"].get<std::string>()).ok())
      << "an execution that reached the connector keeps the full retention";
}

TEST_F(RetentionInvokerTest, AnIntentHitOnAnExpiredOriginalIsAnsweredFromTheIntentRecord) {
  const json first = Call("order-1");
  ASSERT_EQ(first["outcome"], "SUCCEEDED") << first;
  const std::string id = first["execution_id"];

  const json hit = Call("order-1");  // while the original is kept: INTENT_HIT on its chain, same expiry
  EXPECT_EQ(hit["intent_hit"], true) << hit;
  auto original = executions_->Get("tenant-a", id);
  ASSERT_TRUE(original.ok());
  auto chain = ledger_->ReadExecution(*original);
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(chain->back().type, "INTENT_HIT");
  EXPECT_EQ(chain->back().seq, original->last_seq) << "an item after the events the record holds, anchored";
  EXPECT_TRUE(Ledger::VerifyChain(*chain).ok()) << "the late event expires with its chain";

  // The intent record (24 h) outlives the execution (1 h): a retry still gets the earlier answer.
  clock_.advance(std::chrono::milliseconds((kRetention + 1) * 1000));
  ASSERT_EQ(executions_->Get("tenant-a", id).status().code(), absl::StatusCode::kNotFound);
  const json late = Call("order-1");
  EXPECT_EQ(late["outcome"], "SUCCEEDED") << late;
  EXPECT_EQ(late["intent_hit"], true);
  EXPECT_EQ(late["execution_id"], id);
  EXPECT_EQ(late["result"], json({{"ok", true}}));
  auto after = ledger_->Read(Ledger::ExecutionChain(id));
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty()) << "nothing is appended to a chain that is gone";
  // The intent keeps its execution's retention: verify accepts the execution gone with it, as it
  // would name one missing before it.
  auto report = LedgerVerifier(memory_, clock_).VerifyAll();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok()) << report->problem;
}

TEST_F(RetentionInvokerTest, UnderSteadyTrafficTheStoreHoldsOnlyTheRetentionsWorth) {
  // 20 calls a minute for three hours (3 h ≫ 1 h retention), a sweep every minute as the server runs
  // it: the number of execution records and events stops growing once the first ones expire.
  constexpr int kPerMinute = 20;
  int peak_exec = 0, peak_events = 0;
  std::vector<int> exec_at_hour;
  for (int minute = 0; minute < 180; ++minute) {
    for (int i = 0; i < kPerMinute; ++i) {
      ASSERT_EQ(Call()["outcome"], "SUCCEEDED");
      clock_.advance(std::chrono::milliseconds(60'000 / kPerMinute));
    }
    memory_.SweepExpired();
    if (minute % 5 != 4) continue;
    const int exec = LiveItems("TENANT#"), events = LiveItems("EXEC#");
    peak_exec = std::max(peak_exec, exec);
    peak_events = std::max(peak_events, events);
    if (minute % 60 == 59) exec_at_hour.push_back(exec);
  }
  // An hour's worth: 60 × 20 records, three events each.
  EXPECT_LE(peak_exec, 60 * kPerMinute);
  EXPECT_LE(peak_events, 3 * 60 * kPerMinute);
  ASSERT_EQ(exec_at_hour.size(), 3u);
  EXPECT_EQ(exec_at_hour[1], exec_at_hour[2]) << "flat after the first hour, not growing";
  EXPECT_GE(exec_at_hour[2], 59 * kPerMinute) << "and nothing younger than the retention was deleted";
}

// §15 item 9: a queued call's record and its whole chain — EXECUTION_QUEUED, EXECUTION_DISPATCHED,
// the call's own events and its callback's — expire together at the [ledger] retention counted from
// the enqueue, like any execution; its queue item goes when it ends; the delivery it owed is gone
// once delivered.
TEST_F(RetentionInvokerTest, AQueuedExecutionAndItsWholeChainFollowTheLedgerRetention) {
  Engine& engine = *stack_->engine;
  QueueOrder order;
  order.deadline_s = 600;
  order.callback_url = "http://127.0.0.1:1/hook";
  const json queued = api::InvocationBody(invoker_->Enqueue(Request(), order));
  ASSERT_EQ(queued["outcome"], "QUEUED") << queued;
  const std::string id = queued["execution_id"];
  EXPECT_EQ(LiveItems("QUEUE#"), 1);
  clock_.set_epoch_ms(1'800'000'000'000 + 300'000);  // five minutes in the queue

  auto next = engine.queue().NextReady("crm", "tenant-a", 1);
  ASSERT_TRUE(next.ok() && next->has_value());
  auto claim = engine.queue().Claim(**next, "instance-1", 30'000, 1);
  ASSERT_TRUE(claim.ok() && claim->has_value());
  auto lease = slots_->TryAcquire("crm", config_->connectors.at("crm").concurrency);
  ASSERT_TRUE(lease.ok() && lease->has_value());
  auto admitted = invoker_->AdmitClaimed(**claim, **lease, "instance-1");
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<InvocationTicket>>(admitted));
  const json done =
      api::InvocationBody(invoker_->Complete(std::move(std::get<std::unique_ptr<InvocationTicket>>(admitted)), Ok()));
  ASSERT_EQ(done["outcome"], "SUCCEEDED") << done;
  EXPECT_EQ(LiveItems("QUEUE#"), 0) << "the queue item ends with the call";

  // The callback it owed, delivered: CALLBACK_DELIVERED joins the chain with the chain's expiry.
  auto due = engine.callbacks().Due(10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 1u);
  auto cb = engine.callbacks().Claim((*due)[0], "instance-1", 30'000);
  ASSERT_TRUE(cb.ok() && cb->has_value());
  auto ended = engine.queued_calls().EndCallback(**cb, "CALLBACK_DELIVERED", {{"delivery_id", (*cb)->delivery_id()}});
  ASSERT_TRUE(ended.ok() && *ended) << ended.status();
  EXPECT_EQ(LiveItems("CALLBACKS"), 0);

  auto rec = executions_->Get("tenant-a", id);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->expires_at_s, 1'800'000'000 + kRetention) << "counted from the enqueue";
  auto events = ledger_->ReadExecution(*rec);
  ASSERT_TRUE(events.ok());
  std::vector<std::string> types;
  for (const auto& e : *events) {
    types.push_back(e.type);
    EXPECT_EQ(e.expires_at_s, rec->expires_at_s) << e.type;
  }
  EXPECT_THAT(types, ::testing::IsSupersetOf(
                         {"EXECUTION_QUEUED", "EXECUTION_DISPATCHED", "TOOL_SUCCEEDED", "CALLBACK_DELIVERED"}));
  EXPECT_TRUE(Ledger::VerifyChain(*events).ok());

  clock_.set_epoch_ms(rec->expires_at_s * 1000);
  EXPECT_EQ(executions_->Get("tenant-a", id).status().code(), absl::StatusCode::kNotFound);
  // The record holds the events of the enqueue (RECEIVED, QUEUED); the rest are items of their own.
  auto held = Ledger::DecodeOwnPath(*rec);
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->size(), 2u);
  EXPECT_EQ(memory_.SweepExpired(), static_cast<int>(events->size() - held->size()) + 1)
      << "the record and its whole chain";
}

// A queued call nobody ever runs (every dispatcher gone) does not stay forever: its queue item and a
// pending callback carry TTLs (a day past its deadline; eight days past its end).
TEST_F(RetentionInvokerTest, AQueueItemNobodyRunsLeavesADayAfterItsDeadline) {
  QueueOrder order;
  order.deadline_s = 600;
  const json queued = api::InvocationBody(invoker_->Enqueue(Request(), order));
  ASSERT_EQ(queued["outcome"], "QUEUED") << queued;
  EXPECT_EQ(LiveItems("QUEUE#"), 1);
  clock_.set_epoch_ms(1'800'000'000'000 + (600 + 86'400) * int64_t{1000} - 1000);
  memory_.SweepExpired();
  EXPECT_EQ(LiveItems("QUEUE#"), 1) << "kept until a day past its deadline";
  clock_.set_epoch_ms(1'800'000'000'000 + (600 + 86'400) * int64_t{1000});
  memory_.SweepExpired();
  EXPECT_EQ(LiveItems("QUEUE#"), 0);
}
}  // namespace
}  // namespace toolgate
