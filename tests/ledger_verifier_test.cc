// LedgerVerifier without the binary: a chain one event past its anchor (a crash between the event's
// write and the anchor's, DESIGN §17.1) is reported, not failed; two past it fail; an audit day is
// checked against its head item the same way.

#include "gtest/gtest.h"
#include "toolgate/clock.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/ledger_verifier.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

class LedgerVerifierTest : public ::testing::Test {
 protected:
  std::vector<LedgerEvent> Chain(const std::vector<std::string>& types) {
    const std::string chain = Ledger::ExecutionChain("e1");
    Ledger::Tail tail;
    for (const auto& type : types) {
      const std::string data = type == "EXECUTION_RECEIVED"
                                   ? R"({"tenant_id":"t1","tool_name":"crm.x","connector_id":"crm"})"
                                   : R"({"outcome":"SUCCEEDED"})";
      EXPECT_TRUE(ledger_.Append(chain, tail, type, "u", data, Ledger::ExecutionAnchor("t1", "e1")).ok());
    }
    auto events = ledger_.Read(chain);
    EXPECT_TRUE(events.ok());
    return *events;
  }
  ExecutionRecord Record(const std::vector<LedgerEvent>& events, int64_t anchored, Outcome outcome) {
    ExecutionRecord r;
    r.execution_id = "e1";
    r.tenant_id = "t1";
    r.tool_name = "crm.x";
    r.connector_id = "crm";
    r.outcome = outcome;
    r.last_seq = anchored;
    r.last_hash = events[static_cast<size_t>(anchored - 1)].hash;
    return r;
  }

  ManualClock clock_{1'800'000'000'000};
  store::MemoryItemStore store_{clock_};
  Ledger ledger_{store_, clock_};
};

TEST_F(LedgerVerifierTest, OneEventPastTheAnchorIsPendingTwoFail) {
  const auto events = Chain({"EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED"});
  bool pending = false;
  // The record still says IN_PROGRESS and names event 2: the crash left TOOL_SUCCEEDED unanchored.
  EXPECT_TRUE(LedgerVerifier::CheckExecution(Record(events, 2, Outcome::kInProgress), "t1", events, &pending).ok());
  EXPECT_TRUE(pending);
  const absl::Status two =
      LedgerVerifier::CheckExecution(Record(events, 1, Outcome::kInProgress), "t1", events, &pending);
  EXPECT_EQ(two.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(two.message().find("events 2..3 are not covered"), std::string::npos) << two;
  EXPECT_TRUE(LedgerVerifier::CheckExecution(Record(events, 3, Outcome::kSucceeded), "t1", events, &pending).ok());
  EXPECT_FALSE(pending);
  // An anchored final event that the record contradicts fails.
  EXPECT_FALSE(LedgerVerifier::CheckExecution(Record(events, 3, Outcome::kInProgress), "t1", events, &pending).ok());
}

TEST_F(LedgerVerifierTest, AnAuditDayIsCheckedAgainstItsHead) {
  for (const char* type : {"KILL_SWITCH_SET", "KILL_SWITCH_CLEARED", "LIMIT_CHANGED"}) {
    ASSERT_TRUE(ledger_.Audit(type, "operator:me", "{}").ok());
  }
  const std::string day = Ledger::AuditChain(clock_.now_epoch_ms());
  auto events = ledger_.Read(day);
  auto head = ledger_.ReadAnchor(Ledger::AuditAnchor(day));
  ASSERT_TRUE(events.ok() && head.ok());
  EXPECT_EQ(head->seq, 3);
  EXPECT_TRUE(LedgerVerifier::CheckAuditDay(*events, *head, nullptr).ok());
  events->pop_back();
  const absl::Status cut = LedgerVerifier::CheckAuditDay(*events, *head, nullptr);
  EXPECT_NE(cut.message().find("event 3, the last its head item names, is missing"), std::string::npos) << cut;
  LedgerVerifier verifier(store_, clock_);
  auto report = verifier.VerifyAll();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << report->problem;
  EXPECT_EQ(report->audit_days, 1);
}

}  // namespace
}  // namespace toolgate
