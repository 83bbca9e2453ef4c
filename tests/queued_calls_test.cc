// QueuedCalls (design §15, §17.5) racing a dispatcher, on every store backend: a cancel (or a purge,
// or a deadline) that read a queued execution just before a dispatcher claimed it and put it back
// (the breaker had opened) still ends it — the record ends EXPIRED with its chain intact, the queue
// item is gone, and nothing is left QUEUED without an item. The interleaving is forced with a sync
// point between the cancel's read of the record and its first write.

#include "toolgate/engine/queued_calls.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "invoker_support.h"
#include "nlohmann/json.hpp"
#include "sync_point_store.h"
#include "test_support.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using toolgate::testing::Backend;
using toolgate::testing::SyncPointStore;
using toolgate::testing::TempDir;

constexpr char kConn[] = "crm";
constexpr char kTenant[] = "tenant-a";

class QueuedCallsRaceTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    store_ = GetParam().open(clock_, dir_);
    ASSERT_NE(store_, nullptr);
    racing_ = std::make_unique<SyncPointStore>(*store_);
    auto c = ParseConfig(
        "[connectors.crm]\nbase_url = \"http://127.0.0.1:1\"\nmax_in_flight = 2\n"
        "[connectors.crm.queue]\nworkers = 1\n",
        "queued_calls_test.toml");
    ASSERT_TRUE(c.ok()) << c.status();
    stack_ = std::make_unique<toolgate::testing::InvokerStack>(*racing_, clock_, std::move(*c));
    ASSERT_TRUE(stack_->slots.EnsureConnector(kConn, stack_->config.connectors.at(kConn).concurrency).ok());
  }

  // A queued call of kTenant; its execution id.
  std::string Enqueue(const std::string& idempotency_key) {
    InvokeRequest r;
    r.principal = {"user-1", kTenant, "", {}};
    r.tool_name = "crm.update";
    r.input_json = R"({"k":"v"})";
    r.idempotency_key = idempotency_key;
    const InvokeResult answer = stack_->invoker.Enqueue(r, QueueOrder{});
    EXPECT_FALSE(answer.refused()) << answer.message;
    EXPECT_EQ(answer.outcome, Outcome::kQueued);
    return answer.execution_id;
  }

  // Claims the oldest ready call as "dispatcher-1" (a 30 s lease) into `claim`.
  void ClaimOldest(std::optional<QueueClaim>& claim) {
    QueueService& queue = stack_->engine->queue();
    auto next = queue.NextReady(kConn, kTenant, 5);
    ASSERT_TRUE(next.ok() && next->has_value()) << next.status();
    auto claimed = queue.Claim(**next, "dispatcher-1", 30'000, 5);
    ASSERT_TRUE(claimed.ok() && claimed->has_value()) << claimed.status();
    claim = std::move(**claimed);
  }

  // What a dispatcher does when the breaker opened after it last looked: claim the oldest ready item
  // and admit it, which finds the breaker open and puts the call back (TOOL_ATTEMPT_FAILED).
  void ClaimAndPutBack() {
    std::optional<QueueClaim> claim;
    ASSERT_NO_FATAL_FAILURE(ClaimOldest(claim));
    auto admitted = stack_->invoker.AdmitClaimed(*claim, std::nullopt, "instance-1");
    auto* answer = std::get_if<InvokeResult>(&admitted);
    ASSERT_NE(answer, nullptr) << "the breaker is open: the call must not be admitted";
    EXPECT_FALSE(answer->refused()) << answer->message;
    EXPECT_EQ(answer->outcome, Outcome::kQueued) << ToString(answer->reason);
    EXPECT_EQ(answer->details.value("status_url", ""), "/v1/executions/" + answer->execution_id);
  }

  // A dispatcher that claimed the oldest ready call just as its breaker opened and admits it 100 ms
  // later, on a thread of its own: the breaker is open, so it puts the call back. Join `thread`
  // before reading `not_run` (true when the call was not run).
  struct LateDispatcher {
    std::optional<QueueClaim> claim;
    std::atomic<bool> not_run{false};
    std::thread thread;
  };
  void ClaimAndAdmitLater(LateDispatcher& d) {
    ASSERT_NO_FATAL_FAILURE(ClaimOldest(d.claim));
    d.thread = std::thread([this, &d] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      auto admitted = stack_->invoker.AdmitClaimed(*d.claim, std::nullopt, "instance-1");
      d.not_run = std::holds_alternative<InvokeResult>(admitted);
    });
  }

  void OpenBreaker() {
    auto opened = stack_->breakers.ForceOpen(kConn, stack_->config.connectors.at(kConn).breaker);
    ASSERT_TRUE(opened.ok()) << opened.status();
  }

  // Each of `ids` ended EXPIRED by the purge, and the queue is empty.
  void ExpectAllPurged(std::initializer_list<std::string> ids) {
    for (const std::string& id : ids) {
      auto record = stack_->executions.Get(kTenant, id);
      ASSERT_TRUE(record.ok()) << record.status();
      EXPECT_EQ(ToString(record->outcome), "EXPIRED") << id;
      EXPECT_EQ(record->reason, "purged") << id;
    }
    auto stats = stack_->engine->queue().Stats(kConn);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->depth, 0);
  }

  std::vector<std::string> EventTypes(const std::string& execution_id) {
    auto record = stack_->executions.Get(kTenant, execution_id);
    EXPECT_TRUE(record.ok()) << record.status();
    if (!record.ok()) return {};
    auto events = stack_->ledger.ReadExecution(*record);
    EXPECT_TRUE(events.ok()) << events.status();
    std::vector<std::string> types;
    if (!events.ok()) return types;
    EXPECT_TRUE(Ledger::VerifyChain(*events).ok()) << "the chain verifies";
    for (const auto& e : *events) types.push_back(e.type);
    return types;
  }

  ManualClock clock_{1'800'000'000'000};
  TempDir dir_;
  std::unique_ptr<store::ItemStore> store_;
  std::unique_ptr<SyncPointStore> racing_;
  std::unique_ptr<toolgate::testing::InvokerStack> stack_;
};

TEST_P(QueuedCallsRaceTest, ACancelThatReadTheCallBeforeADispatcherPutItBackStillEndsIt) {
  const std::string id = Enqueue("k-1");
  ASSERT_FALSE(id.empty());
  OpenBreaker();
  auto item = stack_->engine->queue().Get(kConn, kTenant, stack_->executions.Get(kTenant, id)->created_at_ms, id);
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  // The cancel's first write is the removal of the item: just before it, the dispatcher claims the
  // item and puts it back, so the chain the cancel read has moved on by one event.
  racing_->BeforeWrite(1, SyncPointStore::KeyIs(QueueService::ItemKey(**item)), [&] { ClaimAndPutBack(); });

  auto cancelled = stack_->engine->queued_calls().Cancel(kTenant, id, "tenant:tenant-a");
  ASSERT_EQ(racing_->fired(), 1) << "the race did not happen";
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(ToString(cancelled->outcome), "EXPIRED");
  EXPECT_EQ(cancelled->reason, "cancelled");

  auto record = stack_->executions.Get(kTenant, id);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(ToString(record->outcome), "EXPIRED") << "never left QUEUED without a queue item";
  auto after = stack_->engine->queue().Get(kConn, kTenant, record->created_at_ms, id);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_FALSE(after->has_value()) << "the item is gone";
  const std::vector<std::string> types = EventTypes(id);
  ASSERT_GE(types.size(), 2u);
  EXPECT_EQ(types[types.size() - 2], "TOOL_ATTEMPT_FAILED") << "the put-back is on record";
  EXPECT_EQ(types.back(), "EXECUTION_CANCELLED");
  auto stats = stack_->engine->queue().Stats(kConn);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->depth, 0) << "the tenant's count follows the removed item";

  // The intent was given back: the same key queues a new call.
  const std::string again = Enqueue("k-1");
  EXPECT_FALSE(again.empty());
  EXPECT_NE(again, id);
}

TEST_P(QueuedCallsRaceTest, APurgeRacingAPutBackEndsEveryCall) {
  const std::string first = Enqueue("k-1");
  const std::string second = Enqueue("k-2");
  OpenBreaker();
  auto item = stack_->engine->queue().Get(kConn, kTenant, stack_->executions.Get(kTenant, first)->created_at_ms, first);
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  racing_->BeforeWrite(1, SyncPointStore::KeyIs(QueueService::ItemKey(**item)), [&] { ClaimAndPutBack(); });

  auto purged = stack_->engine->queued_calls().Purge(kConn, "admin:ops");
  ASSERT_EQ(racing_->fired(), 1) << "the race did not happen";
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(purged->purged, 2);
  EXPECT_EQ(purged->running, 0);
  ExpectAllPurged({first, second});
  for (const std::string& id : {first, second}) EXPECT_EQ(EventTypes(id).back(), "EXECUTION_EXPIRED") << id;
}

// A dispatcher holds its claim when the purge reaches the call, and puts the call back (its breaker
// opened) a moment later: the purge waits for that put-back and ends the call too. Where a batch is
// not one transaction (memory, DynamoDB) the purge may see the item unclaimed before the put-back's
// event is written; then the two race for the chain's head, and either order ends the call EXPIRED
// on a chain that verifies.
TEST_P(QueuedCallsRaceTest, APurgeThatMeetsAClaimEndsTheCallWhenItIsPutBack) {
  const std::string first = Enqueue("k-1");
  const std::string second = Enqueue("k-2");
  OpenBreaker();
  LateDispatcher dispatcher;
  ASSERT_NO_FATAL_FAILURE(ClaimAndAdmitLater(dispatcher));
  auto purged = stack_->engine->queued_calls().Purge(kConn, "admin:ops", std::chrono::seconds(30));
  dispatcher.thread.join();
  ASSERT_TRUE(dispatcher.not_run) << "the breaker is open: the dispatcher must not run the call";
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(purged->purged, 2);
  EXPECT_EQ(purged->running, 0);
  ExpectAllPurged({first, second});
  EXPECT_EQ(EventTypes(dispatcher.claim->item.execution_id).back(), "EXECUTION_EXPIRED");
}

// A dispatcher holds its claim when the cancel reaches the call, and puts the call back (its breaker
// opened) a moment later: the cancel waits for that put-back and ends the call, rather than telling
// the tenant its still-queued call is "being dispatched". Where a batch is not one transaction
// (memory, DynamoDB) the cancel may see the item unclaimed before the put-back's event is written;
// then the two race for the chain's head, and either order ends the call cancelled on a chain that
// verifies (with the put-back's TOOL_ATTEMPT_FAILED or without it).
TEST_P(QueuedCallsRaceTest, ACancelThatMeetsAClaimEndsTheCallWhenItIsPutBack) {
  const std::string id = Enqueue("k-1");
  OpenBreaker();
  QueueService& queue = stack_->engine->queue();
  LateDispatcher dispatcher;
  ASSERT_NO_FATAL_FAILURE(ClaimAndAdmitLater(dispatcher));
  auto cancelled = stack_->engine->queued_calls().Cancel(kTenant, id, "tenant:tenant-a", std::chrono::seconds(30));
  dispatcher.thread.join();
  ASSERT_TRUE(dispatcher.not_run) << "the breaker is open: the dispatcher must not run the call";
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(ToString(cancelled->outcome), "EXPIRED");
  EXPECT_EQ(cancelled->reason, "cancelled");
  auto after = queue.Get(kConn, kTenant, cancelled->created_at_ms, id);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_FALSE(after->has_value()) << "the item is gone";
  const std::vector<std::string> types = EventTypes(id);
  if (GetParam().name == "sqlite") {
    EXPECT_THAT(types, ::testing::Contains("TOOL_ATTEMPT_FAILED")) << "the put-back is on record";
  }
  EXPECT_EQ(types.back(), "EXECUTION_CANCELLED");
}

// A claim still held when the cancel stops waiting is a call about to run: the cancel is refused and
// the call is left to its dispatcher (item, record and chain untouched).
TEST_P(QueuedCallsRaceTest, ACancelOfACallStillClaimedWhenItStopsWaitingIsRefusedAndChangesNothing) {
  const std::string id = Enqueue("k-1");
  QueueService& queue = stack_->engine->queue();
  std::optional<QueueClaim> claim;
  ASSERT_NO_FATAL_FAILURE(ClaimOldest(claim));
  auto cancelled =
      stack_->engine->queued_calls().Cancel(kTenant, id, "tenant:tenant-a", std::chrono::milliseconds(100));
  ASSERT_TRUE(absl::IsFailedPrecondition(cancelled.status())) << cancelled.status();
  auto record = stack_->executions.Get(kTenant, id);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(ToString(record->outcome), "QUEUED");
  auto item = queue.Get(kConn, kTenant, record->created_at_ms, id);
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  EXPECT_EQ((*item)->claim_owner, "dispatcher-1");
  EXPECT_EQ(EventTypes(id).back(), "EXECUTION_QUEUED");
}

// A claim still held when the purge stops waiting is a call being run: it is counted `running` and
// left alone (item, record and chain), while the others end.
TEST_P(QueuedCallsRaceTest, APurgeLeavesACallStillClaimedToRunAndCountsIt) {
  const std::string first = Enqueue("k-1");
  const std::string second = Enqueue("k-2");
  QueueService& queue = stack_->engine->queue();
  std::optional<QueueClaim> claim;
  ASSERT_NO_FATAL_FAILURE(ClaimOldest(claim));
  const std::string held = claim->item.execution_id;
  const std::string other = held == first ? second : first;

  auto purged = stack_->engine->queued_calls().Purge(kConn, "admin:ops", std::chrono::milliseconds(100));
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(purged->purged, 1);
  EXPECT_EQ(purged->running, 1);
  auto ended = stack_->executions.Get(kTenant, other);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ToString(ended->outcome), "EXPIRED");
  auto running = stack_->executions.Get(kTenant, held);
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(ToString(running->outcome), "QUEUED") << "untouched: its dispatcher decides";
  auto item = queue.Get(kConn, kTenant, running->created_at_ms, held);
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  EXPECT_EQ((*item)->claim_owner, "dispatcher-1");
  EXPECT_EQ(EventTypes(held).back(), "EXECUTION_QUEUED");
}

// A call put back because its breaker is open is ready again within a second, whatever the open
// breaker's retry-after: the dispatchers park on the breaker themselves, so a close drains the queue
// at once rather than after the retry-after a caller would have been told.
TEST_P(QueuedCallsRaceTest, ACallPutBackByAnOpenBreakerIsReadyAgainWithinASecond) {
  const std::string id = Enqueue("k-1");
  OpenBreaker();
  const int64_t put_back_at_ms = clock_.now_epoch_ms();
  ClaimAndPutBack();
  auto record = stack_->executions.Get(kTenant, id);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(ToString(record->outcome), "QUEUED");
  auto item = stack_->engine->queue().Get(kConn, kTenant, record->created_at_ms, id);
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  EXPECT_TRUE((*item)->claim_owner.empty()) << "unclaimed";
  EXPECT_LE((*item)->ready_at_ms, put_back_at_ms + 1000);
  auto events = stack_->ledger.ReadExecution(*record);
  ASSERT_TRUE(events.ok());
  const json failed = json::parse(events->back().data);
  EXPECT_EQ(events->back().type, "TOOL_ATTEMPT_FAILED");
  EXPECT_EQ(failed.value("reason", ""), "breaker_open");
}

INSTANTIATE_TEST_SUITE_P(Backends, QueuedCallsRaceTest, ::testing::ValuesIn(toolgate::testing::AllBackends()),
                         toolgate::testing::BackendName);

}  // namespace
}  // namespace toolgate
