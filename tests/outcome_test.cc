// The outcome vocabulary (design §1, §5, §15): every outcome and reason has exactly the string
// clients and stored records hold, parsing is strict, and one table gives an invocation answer's
// HTTP status. A stored record with an outcome nobody wrote is reported, not guessed at.

#include "toolgate/domain/outcome.h"

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "api/api_support.h"
#include "api/invocation.h"
#include "api/json_limits.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "toolgate/clock.h"
#include "toolgate/services/execution_store.h"
#include "toolgate/services/ledger_verifier.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate {
namespace {

using json = nlohmann::json;

TEST(OutcomeTest, EveryOutcomeHasItsStoredStringAndParsesBack) {
  const std::vector<std::pair<Outcome, std::string>> cases = {
      {Outcome::kInProgress, "IN_PROGRESS"}, {Outcome::kSucceeded, "SUCCEEDED"}, {Outcome::kFailed, "FAILED"},
      {Outcome::kDeferred, "DEFERRED"},      {Outcome::kBlocked, "BLOCKED"},     {Outcome::kQueued, "QUEUED"},
      {Outcome::kRunning, "RUNNING"},        {Outcome::kExpired, "EXPIRED"},
  };
  ASSERT_EQ(cases.size(), std::size(kAllOutcomes)) << "a new outcome needs its row here";
  for (const auto& [outcome, text] : cases) {
    EXPECT_EQ(ToString(outcome), text);
    EXPECT_EQ(ParseOutcome(text), outcome) << text;
    EXPECT_EQ(json(outcome), json(text)) << "written to JSON as its string, never its number";
  }
}

TEST(OutcomeTest, ParsingIsStrict) {
  for (const char* text : {"", "succeeded", "Succeeded", " SUCCEEDED", "SUCCEEDED ", "SUCCEEDED\n", "UNKNOWN",
                           "NOT_FOUND", "DONE", "0", "IN PROGRESS"}) {
    EXPECT_FALSE(ParseOutcome(text).has_value()) << "'" << text << "'";
  }
  EXPECT_FALSE(ParseOutcome(std::string_view("FAILED\0", 7)).has_value()) << "a trailing NUL is not FAILED";
}

TEST(OutcomeTest, WaitingIsQueuedOrRunningOnly) {
  for (Outcome o : kAllOutcomes) {
    EXPECT_EQ(IsWaiting(o), o == Outcome::kQueued || o == Outcome::kRunning) << ToString(o);
  }
}

TEST(OutcomeTest, DeferReasonsKeepTheirStrings) {
  const std::vector<std::pair<DeferReason, std::string>> cases = {
      {DeferReason::kBreakerOpen, "breaker_open"},
      {DeferReason::kProbeInFlight, "probe_in_flight"},
      {DeferReason::kConcurrencyLimit, "concurrency_limit"},
      {DeferReason::kIntentInProgress, "intent_in_progress"},
      {DeferReason::kDownstreamThrottled, "downstream_throttled"},
      {DeferReason::kStoreUnavailable, "store_unavailable"},
      {DeferReason::kGatewayOverloaded, "gateway_overloaded"},
  };
  for (const auto& [reason, text] : cases) {
    EXPECT_EQ(ToString(reason), text);
    EXPECT_EQ(ParseDeferReason(text), reason) << text;
    EXPECT_EQ(json(reason), json(text));
  }
  EXPECT_FALSE(ParseDeferReason("Breaker_Open").has_value());
  EXPECT_FALSE(ParseDeferReason("timeout").has_value()) << "a failure reason is not a defer reason";
}

TEST(OutcomeTest, FailureReasonsKeepTheirStringsAndTheirSliVerdict) {
  struct Case {
    FailureReason reason;
    std::string text;
    bool against_connector;  // the tool_error SLI (design §8)
  };
  const std::vector<Case> cases = {
      {FailureReason::kDownstreamError, "downstream_error", true},
      {FailureReason::kDownstreamRejected, "downstream_rejected", false},
      {FailureReason::kTimeout, "timeout", true},
      {FailureReason::kConnectionFailed, "connection_failed", true},
      {FailureReason::kConnectionLost, "connection_lost", true},
      {FailureReason::kTlsError, "tls_error", true},
      {FailureReason::kCredentialsUnavailable, "credentials_unavailable", true},
      {FailureReason::kToolError, "tool_error", false},
      {FailureReason::kToolRejected, "tool_rejected", false},
      {FailureReason::kStoreUnavailable, "store_unavailable", true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ToString(c.reason), c.text);
    EXPECT_EQ(ParseFailureReason(c.text), c.reason) << c.text;
    EXPECT_EQ(CountsAgainstConnector(c.reason), c.against_connector) << c.text;
    EXPECT_EQ(json(c.reason), json(c.text));
  }
  EXPECT_FALSE(ParseFailureReason("TIMEOUT").has_value());
  EXPECT_FALSE(ParseFailureReason("breaker_open").has_value()) << "a defer reason is not a failure reason";
}

// The API reference lists exactly the reasons an answer can carry: every DeferReason and
// FailureReason (walked through the enums, so a new one fails here until docs/openapi.json has it),
// and nothing else.
TEST(OutcomeTest, TheOpenApiDocumentListsEveryOutcomeReason) {
  std::ifstream in(TOOLGATE_SOURCE_DIR "/docs/openapi.json");
  ASSERT_TRUE(in) << "docs/openapi.json";
  const json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(doc.is_object());
  const json& schemas = doc["components"]["schemas"];
  std::set<std::string> documented;
  for (const auto& r : schemas["OutcomeReason"]["enum"]) documented.insert(r.get<std::string>());
  std::set<std::string> reasons;
  for (int i = 0;; ++i) {  // declaration order, no explicit values: 0, 1, ... until the fallback
    const std::string text(ToString(static_cast<DeferReason>(i)));
    if (text == "unknown") break;
    reasons.insert(text);
  }
  for (int i = 0;; ++i) {
    const std::string text(ToString(static_cast<FailureReason>(i)));
    if (text == "unknown") break;
    reasons.insert(text);
  }
  EXPECT_GE(reasons.size(), 15u);
  EXPECT_EQ(documented, reasons);
  EXPECT_EQ(schemas["InvokeResponse"]["properties"]["reason"]["$ref"], "#/components/schemas/OutcomeReason");
  std::set<std::string> outcomes;
  for (const auto& o : schemas["Outcome"]["enum"]) outcomes.insert(o.get<std::string>());
  for (Outcome o : kAllOutcomes) EXPECT_TRUE(outcomes.count(std::string(ToString(o)))) << ToString(o);
  EXPECT_EQ(outcomes.size(), std::size(kAllOutcomes));
}

// Design §5's table (and §15's 202 for a call that has not ended).
TEST(OutcomeTest, InvocationHttpStatusTable) {
  struct Case {
    Outcome outcome;
    std::string reason;
    int status;
  };
  const std::vector<Case> cases = {
      {Outcome::kSucceeded, "", 200},
      {Outcome::kFailed, "downstream_error", 502},
      {Outcome::kFailed, "downstream_rejected", 502},  // a downstream 4xx is still 502
      {Outcome::kFailed, "connection_failed", 502},
      {Outcome::kFailed, "tool_error", 502},
      {Outcome::kFailed, "invalid_input", 502},  // a claimed call whose input no longer fits
      {Outcome::kFailed, "timeout", 504},
      {Outcome::kFailed, "store_unavailable", 503},  // ran, but the outcome could not be recorded
      {Outcome::kDeferred, "breaker_open", 503},
      {Outcome::kDeferred, "downstream_throttled", 503},
      {Outcome::kDeferred, "store_unavailable", 503},
      {Outcome::kBlocked, "kill_switch", 403},
      {Outcome::kQueued, "", 202},
      {Outcome::kRunning, "", 202},
      {Outcome::kInProgress, "", 202},
      {Outcome::kExpired, "deadline", 410},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(InvocationHttpStatus(c.outcome, c.reason), c.status) << ToString(c.outcome) << " " << c.reason;
  }
}

TEST(OutcomeTest, AnEngineAnswerBecomesHttpInOnePlace) {
  InvokeResponse deferred{503, R"({"outcome":"DEFERRED"})", 3};
  api::HttpResponse h = api::ToHttp(deferred);
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(h.body, R"({"outcome":"DEFERRED"})");
  EXPECT_EQ(h.content_type, "application/json");
  ASSERT_EQ(h.headers.size(), 1u);
  EXPECT_EQ(h.headers[0], (std::pair<std::string, std::string>{"Retry-After", "3"}));

  InvokeResponse ok{200, R"({"outcome":"SUCCEEDED"})", std::nullopt};
  h = api::ToHttp(ok);
  EXPECT_EQ(h.status, 200);
  EXPECT_TRUE(h.headers.empty()) << "no Retry-After without one";
}

TEST(OutcomeTest, BoundedJsonParseRefusesDeepNesting) {
  const std::string deep = std::string(api::kMaxJsonDepth + 1, '[') + std::string(api::kMaxJsonDepth + 1, ']');
  EXPECT_TRUE(api::ParseBoundedJson(deep).is_discarded());
  const std::string fits = std::string(api::kMaxJsonDepth, '[') + std::string(api::kMaxJsonDepth, ']');
  EXPECT_FALSE(api::ParseBoundedJson(fits).is_discarded());
  EXPECT_TRUE(api::ParseBoundedJson("{not json").is_discarded());
  EXPECT_EQ(api::ParseBoundedJson(R"({"reason":"x"})").value("reason", ""), "x");
}

// The store format: the record holds the outcome's string; an outcome nobody wrote is kDataLoss.
TEST(OutcomeTest, StoredOutcomeIsItsStringAndAnUnknownOneIsDataLoss) {
  ManualClock clock;
  store::MemoryItemStore store(clock);
  ExecutionStore executions(store, clock);
  ExecutionRecord r;
  r.execution_id = "0190f0f0-0000-7000-8000-000000000001";
  r.tenant_id = "t1";
  r.tool_name = "crm.x";
  r.connector_id = "crm";
  r.outcome = Outcome::kQueued;
  ASSERT_TRUE(executions.Create(r).ok());

  const store::ItemKey key = ExecutionStore::Key("t1", r.execution_id);
  absl::StatusOr<std::optional<store::Item>> stored = store.Get(key);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ(store::GetString(**stored, "outcome").value_or(""), "QUEUED");
  absl::StatusOr<ExecutionRecord> read = executions.Get("t1", r.execution_id);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->outcome, Outcome::kQueued);

  store::Item edited = **stored;
  edited.insert_or_assign("outcome", store::AttributeValue(std::string("HACKED")));
  ASSERT_TRUE(store.Put(key, edited, store::Condition::Always()).ok());
  read = executions.Get("t1", r.execution_id);
  ASSERT_FALSE(read.ok());
  EXPECT_TRUE(absl::IsDataLoss(read.status())) << read.status();
  EXPECT_NE(read.status().message().find("HACKED"), std::string_view::npos) << read.status();

  // `ledger verify` names the record as its problem rather than failing as if the store were down.
  LedgerVerifier verifier(store, clock);
  absl::StatusOr<LedgerVerifier::Report> report = verifier.VerifyAll();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->ok());
  EXPECT_NE(report->problem.find("HACKED"), std::string::npos) << report->problem;
}

}  // namespace
}  // namespace toolgate
