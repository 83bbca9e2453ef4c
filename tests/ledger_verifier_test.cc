// LedgerVerifier without the binary: a chain one event past its anchor (a crash between the event's
// write and the anchor's, DESIGN §17.1) is reported, not failed; two past it fail; an audit day is
// checked against its head item the same way.

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/services/ledger.h"
#include "toolgate/services/kill_switch_service.h"
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

// An event whose expiry was changed is the one named, against the expiry its anchor holds (the
// day's head item, the record): the first event's own expiry is no authority, and taking it for the
// chain's blamed the untouched second event and called the changed value the chain's. An anchor
// changed alone is named itself.
TEST_F(LedgerVerifierTest, AChangedExpiryNamesTheEventOrTheAnchorItWasChangedOn) {
  Ledger kept(store_, clock_, {/*retention_s=*/30 * 86'400, /*deferred_retention_s=*/0});
  for (const char* type : {"KILL_SWITCH_SET", "ADMIN_REQUEST_REFUSED", "KILL_SWITCH_CLEARED"}) {
    ASSERT_TRUE(kept.Audit(type, "operator:me", "{}").ok());
  }
  const std::string day = Ledger::AuditChain(clock_.now_epoch_ms());
  const store::ItemKey first{day, "EVENT#000000000001"};
  auto item = store_.Get(first);
  ASSERT_TRUE(item.ok() && item->has_value());
  const int64_t chain_expiry = store::GetInt(**item, store::kTtlAttribute).value_or(0);
  ASSERT_GT(chain_expiry, 0);
  const int64_t changed = clock_.now_epoch_sec() + 600;
  (**item)[std::string(store::kTtlAttribute)] = changed;
  ASSERT_TRUE(store_.Put(first, **item, store::Condition::Always()).ok());
  LedgerVerifier verifier(store_, clock_);
  auto report = verifier.VerifyAll();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->problem, absl::StrCat(day, ": event 1 (KILL_SWITCH_SET) expires at ", changed,
                                          ", not with its chain (", chain_expiry, ", as its head item holds)"));

  // An execution's chain against its record's expiry, the same way.
  auto events = Chain({"EXECUTION_RECEIVED", "TOOL_INVOKED", "TOOL_SUCCEEDED"});
  events[0].expires_at_s = changed;
  const absl::Status s = LedgerVerifier::CheckExecution(Record(events, 3, Outcome::kSucceeded), "t1", events, nullptr);
  EXPECT_EQ(std::string(s.message()), absl::StrCat("event 1 (EXECUTION_RECEIVED) expires at ", changed,
                                                   ", not with its chain (0, as its record holds)"));
  // Every event agrees and the record does not: the record is named.
  events[0].expires_at_s = 0;
  ExecutionRecord moved = Record(events, 3, Outcome::kSucceeded);
  moved.expires_at_s = changed;
  EXPECT_EQ(std::string(LedgerVerifier::CheckExecution(moved, "t1", events, nullptr).message()),
            absl::StrCat("its events expire at 0, its record at ", changed));
}

// The engine appends events from JSON values and hashes their canonical text without parsing it back
// (Ledger::PrepareAppendJson). Whatever the value, the event must be the one the text overload writes
// and its hash the one `ledger verify` recomputes from the stored text, or every chain would fail.
TEST_F(LedgerVerifierTest, AnEventAppendedFromAJsonValueHashesAsVerifyRecomputesIt) {
  using nlohmann::json;
  const std::vector<json> values = {
      json::object(),
      json::array(),
      json{{"outcome", "SUCCEEDED"}, {"latency_ms", 12}},
      json{{"z", 1}, {"a", {{"y", json::array({1, 2.5, -0.0, 1e300, nullptr, true})}}}, {"m", "x"}},
      json{{"text", "quote \" backslash \\ newline \n tab \t nul " + std::string(1, '\0') + " é ✓ 𝄞"}},
      json{{"bad_utf8", std::string("\xff\xfe ok \xc3")}},  // replaced, as the text overload's parse would
      json{{"big", 18446744073709551615ULL}, {"neg", -9223372036854775807LL - 1}, {"third", 1.0 / 3}},
      json(std::numeric_limits<double>::quiet_NaN()),
      json("a bare string"),
      json(42),
  };
  const std::string chain = Ledger::ExecutionChain("e2");
  Ledger::Tail tail{7, "abc", 0};
  for (const json& v : values) {
    for (const std::string actor : {"u", "agent \"π\"\n", ""}) {
      const auto [w_value, from_value] = ledger_.PrepareAppendJson(chain, tail, "TOOL_SUCCEEDED", actor, v);
      const auto [w_text, from_text] = ledger_.PrepareAppend(chain, tail, "TOOL_SUCCEEDED", actor, from_value.data);
      EXPECT_EQ(from_value.data, v.dump(-1, ' ', false, json::error_handler_t::replace));
      EXPECT_EQ(from_value.hash, from_text.hash) << from_value.data;
      EXPECT_EQ(from_value.hash, Ledger::Hash(tail.hash, from_value)) << from_value.data;
      EXPECT_EQ(from_value.seq, 8);
      EXPECT_EQ(w_value.item, w_text.item);
    }
  }
  // Appended for real, a chain of them verifies; an edit of one event's data does not.
  Ledger::Tail t;
  std::vector<LedgerEvent> events;
  for (const json& v : values) {
    auto [w, e] = ledger_.PrepareAppendJson(chain, t, "TOOL_ATTEMPT_FAILED", "u", v);
    t = {e.seq, e.hash, e.expires_at_s};
    events.push_back(std::move(e));
  }
  EXPECT_TRUE(Ledger::VerifyChain(events).ok());
  events[2].data = R"({"outcome":"FAILED","latency_ms":12})";
  EXPECT_EQ(Ledger::VerifyChain(events).code(), absl::StatusCode::kDataLoss);
}

// A missing execution vouches for the intent or the original naming it only once the expiry they keep
// has passed; a forgery leaves the expiry out (0), and vouches for nothing, however late.
TEST_F(LedgerVerifierTest, AMissingExecutionVouchesOnlyPastAKeptExpiry) {
  const int64_t now = 1'800'000'000;
  EXPECT_EQ(IntentVouchProblem(nullptr, "x1", "k", "{}", now - 1, now), "");
  EXPECT_EQ(IntentVouchProblem(nullptr, "x1", "k", "{}", now + 1, now),
            "it names execution x1, which is missing though its retention runs until 1800000001");
  EXPECT_EQ(IntentVouchProblem(nullptr, "x1", "k", "{}", 0, now),
            "it names execution x1, which is missing, and no expiry is kept for it: it cannot have gone with its "
            "retention");
  ExecutionRecord original;
  original.execution_id = "f1";
  original.replay_succeeded_in = "x1";
  original.replay_result_json = "{}";
  original.replay_expires_at_s = now - 1;
  EXPECT_EQ(ReplayResultVouchProblem(original, {}, nullptr, now), "");
  original.replay_expires_at_s = 0;
  EXPECT_EQ(ReplayResultVouchProblem(original, {}, nullptr, now),
            "the replay whose result its record keeps for replays, x1, is missing, and no expiry is kept for it: it "
            "cannot have gone with its retention");
}

// A replay vouches for the result its original keeps only as one of that original's replays: its
// record's replay_of, the original's tool and intent key, and a REPLAY_REQUESTED of the original's
// chain naming it.
TEST_F(LedgerVerifierTest, AReplayVouchesOnlyForItsOwnOriginal) {
  ExecutionRecord original;
  original.execution_id = "f1";
  original.tool_name = "crm.x";
  original.intent_key = "f1";
  original.outcome = Outcome::kFailed;
  original.replay_succeeded_in = "x1";
  original.replay_result_json = R"({"ok":true})";
  ExecutionRecord replay = original;
  replay.execution_id = "x1";
  replay.replay_of = "f1";
  replay.outcome = Outcome::kSucceeded;
  replay.result_json = original.replay_result_json;
  replay.replay_succeeded_in.clear();
  replay.replay_result_json.clear();
  const std::string chain = Ledger::ExecutionChain("f1");
  Ledger::Tail tail;
  std::vector<LedgerEvent> events;
  for (const char* requested : {"x0", "x1"}) {
    auto [w, e] = ledger_.PrepareAppendJson(chain, tail, "REPLAY_REQUESTED", "u", {{"execution_id", requested}});
    tail = {e.seq, e.hash, e.expires_at_s};
    events.push_back(std::move(e));
  }
  const int64_t now = clock_.now_epoch_sec();
  EXPECT_EQ(ReplayResultVouchProblem(original, events, &replay, now), "");
  EXPECT_EQ(ReplayResultVouchProblem(original, {events.front()}, &replay, now),
            "the result its record keeps for replays names x1, which no REPLAY_REQUESTED of its chain names");
  ExecutionRecord other_tool = replay;
  other_tool.tool_name = "crm.refund";
  EXPECT_EQ(ReplayResultVouchProblem(original, events, &other_tool, now),
            "the result its record keeps for replays names x1, which ran another tool or intent key than it");
  ExecutionRecord other_key = replay;
  other_key.intent_key = "pay-42";
  EXPECT_EQ(ReplayResultVouchProblem(original, events, &other_key, now),
            "the result its record keeps for replays names x1, which ran another tool or intent key than it");
}

// Every event's `at` (hashed, so its spelling is part of the chain): the calendar computed without
// gmtime, checked against Abseil's formatting of the same instants.
TEST(Rfc3339Test, SpellsEachInstantAsAbseilDoes) {
  std::vector<int64_t> instants = {0,
                                   1,
                                   999,
                                   1000,
                                   86'399'999,
                                   86'400'000,
                                   951'782'400'000,    // 2000-02-29
                                   1'709'164'800'123,  // 2024-02-29
                                   4'107'542'399'999,  // 2100-02-28, the last ms
                                   4'107'542'400'000,  // 2100-03-01 (not a leap year)
                                   1'800'000'000'000,
                                   253'402'300'799'999};  // 9999-12-31T23:59:59.999
  std::mt19937_64 random(7);
  for (int i = 0; i < 20'000; ++i) instants.push_back(static_cast<int64_t>(random() % 253'402'300'800'000));
  for (const int64_t ms : instants) {
    const std::string expected =
        absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
    ASSERT_EQ(Rfc3339(ms), expected) << ms;
  }
}

}  // namespace
}  // namespace toolgate
