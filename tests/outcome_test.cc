// The outcome vocabulary (design §1, §5, §15): every outcome and reason has exactly the string
// clients and stored records hold, parsing is strict, and one table gives an invocation answer's
// HTTP status. A stored record with an outcome nobody wrote is reported, not guessed at.

#include "toolgate/domain/outcome.h"

#include <fstream>
#include <optional>
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
      {DeferReason::kTenantConcurrencyLimit, "tenant_concurrency_limit"},
  };
  ASSERT_EQ(cases.size(), std::size(kAllDeferReasons)) << "a new defer reason needs its row here";
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
      {FailureReason::kInvalidInput, "invalid_input", false},
  };
  ASSERT_EQ(cases.size(), std::size(kAllFailureReasons)) << "a new failure reason needs its row here";
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
// FailureReason and the BLOCKED reason (walked through the enums' lists, so a new one fails here
// until docs/openapi.json has it), and nothing else.
TEST(OutcomeTest, TheOpenApiDocumentListsEveryOutcomeReason) {
  std::ifstream in(TOOLGATE_SOURCE_DIR "/docs/openapi.json");
  ASSERT_TRUE(in) << "docs/openapi.json";
  const json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(doc.is_object());
  const json& schemas = doc["components"]["schemas"];
  std::set<std::string> documented;
  for (const auto& r : schemas["OutcomeReason"]["enum"]) documented.insert(r.get<std::string>());
  std::set<std::string> reasons;
  for (DeferReason r : kAllDeferReasons) reasons.insert(std::string(ToString(r)));
  for (FailureReason r : kAllFailureReasons) reasons.insert(std::string(ToString(r)));
  reasons.insert(std::string(ToString(BlockReason::kKillSwitch)));
  EXPECT_GE(reasons.size(), 15u);
  EXPECT_EQ(documented, reasons);
  EXPECT_EQ(schemas["InvokeResponse"]["properties"]["reason"]["$ref"], "#/components/schemas/OutcomeReason");
  std::set<std::string> outcomes;
  for (const auto& o : schemas["Outcome"]["enum"]) outcomes.insert(o.get<std::string>());
  for (Outcome o : kAllOutcomes) EXPECT_TRUE(outcomes.count(std::string(ToString(o)))) << ToString(o);
  EXPECT_EQ(outcomes.size(), std::size(kAllOutcomes));
}

// Design §5's table (and §15's 202 for a call that has not ended), typed: every reason of every kind.
TEST(OutcomeTest, InvocationHttpStatusTable) {
  struct Case {
    Outcome outcome;
    OutcomeReason reason;
    int status;
  };
  const std::vector<Case> cases = {
      {Outcome::kSucceeded, {}, 200},
      {Outcome::kFailed, FailureReason::kDownstreamError, 502},
      {Outcome::kFailed, FailureReason::kDownstreamRejected, 502},  // a downstream 4xx is still 502
      {Outcome::kFailed, FailureReason::kConnectionFailed, 502},
      {Outcome::kFailed, FailureReason::kConnectionLost, 502},
      {Outcome::kFailed, FailureReason::kTlsError, 502},
      {Outcome::kFailed, FailureReason::kCredentialsUnavailable, 502},
      {Outcome::kFailed, FailureReason::kToolError, 502},
      {Outcome::kFailed, FailureReason::kToolRejected, 502},
      {Outcome::kFailed, FailureReason::kInvalidInput, 502},  // a claimed call whose input no longer fits
      {Outcome::kFailed, FailureReason::kTimeout, 504},
      {Outcome::kFailed, FailureReason::kStoreUnavailable, 503},  // ran, but the outcome could not be recorded
      {Outcome::kDeferred, DeferReason::kBreakerOpen, 503},
      {Outcome::kDeferred, DeferReason::kProbeInFlight, 503},
      {Outcome::kDeferred, DeferReason::kConcurrencyLimit, 503},
      {Outcome::kDeferred, DeferReason::kIntentInProgress, 503},
      {Outcome::kDeferred, DeferReason::kDownstreamThrottled, 503},
      {Outcome::kDeferred, DeferReason::kStoreUnavailable, 503},
      {Outcome::kDeferred, DeferReason::kGatewayOverloaded, 503},
      {Outcome::kDeferred, DeferReason::kTenantConcurrencyLimit, 503},
      {Outcome::kBlocked, BlockReason::kKillSwitch, 403},
      {Outcome::kQueued, {}, 202},
      {Outcome::kRunning, {}, 202},
      {Outcome::kInProgress, {}, 202},
      {Outcome::kExpired, ExpiryReason::kDeadline, 410},
      {Outcome::kExpired, ExpiryReason::kCancelled, 410},
      {Outcome::kExpired, ExpiryReason::kPurged, 410},
  };
  std::set<Outcome> outcomes;
  std::set<std::string> reasons;
  for (const Case& c : cases) {
    EXPECT_EQ(InvocationHttpStatus(c.outcome, c.reason), c.status) << ToString(c.outcome) << " " << ToString(c.reason);
    // The table's reasons are the ones their outcome takes (what the store reads back).
    EXPECT_EQ(ParseOutcomeReason(c.outcome, ToString(c.reason)), c.reason) << ToString(c.reason);
    outcomes.insert(c.outcome);
    reasons.insert(std::string(ToString(c.outcome)) + " " + std::string(ToString(c.reason)));
  }
  // Every outcome and every reason of its kind has its row.
  EXPECT_EQ(outcomes.size(), std::size(kAllOutcomes));
  EXPECT_EQ(reasons.size(), cases.size());
  EXPECT_EQ(cases.size(),
            4 + std::size(kAllFailureReasons) + std::size(kAllDeferReasons) + 1 + std::size(kAllExpiryReasons));
}

// A requeue's cause keeps its stored string, whichever kind it is.
TEST(OutcomeTest, RequeueCauseKeepsItsString) {
  EXPECT_EQ(ToString(RequeueCause{RequeueReason::kThrottled}), "throttled");
  EXPECT_EQ(ToString(RequeueCause{RequeueReason::kClaimExpired}), "claim_expired");
  for (DeferReason r : kAllDeferReasons) EXPECT_EQ(ToString(RequeueCause{r}), ToString(r));
}

// Every kind of engine answer (design §5, §15, S12) through the api layer's one table: its status,
// its Retry-After and its body — an execution's {execution_id, outcome, reason?, details...}, a
// refusal's {error, message} — byte for byte.
TEST(OutcomeTest, EveryEngineResultBecomesHttpThroughOneTable) {
  struct Case {
    std::string name;
    InvokeResult result;
    int status;
    std::optional<std::string> retry_after;  // the Retry-After header, when there is one
    std::string body;
  };
  const json crm = {{"connector_id", "crm"}};
  auto answered = [&](Outcome o, OutcomeReason r, std::optional<int64_t> retry = std::nullopt, json more = {}) {
    json details = crm;
    if (more.is_object()) details.update(more);
    return InvokeResult::Answered(o, r, "e1", details, retry);
  };
  const std::vector<Case> cases = {
      {"succeeded", answered(Outcome::kSucceeded, {}, std::nullopt, {{"result", {{"ok", true}}}}), 200, std::nullopt,
       R"({"connector_id":"crm","execution_id":"e1","outcome":"SUCCEEDED","result":{"ok":true}})"},
      {"failed downstream_error", answered(Outcome::kFailed, FailureReason::kDownstreamError), 502, std::nullopt,
       R"({"connector_id":"crm","execution_id":"e1","outcome":"FAILED","reason":"downstream_error"})"},
      {"failed timeout", answered(Outcome::kFailed, FailureReason::kTimeout), 504, std::nullopt,
       R"({"connector_id":"crm","execution_id":"e1","outcome":"FAILED","reason":"timeout"})"},
      {"failed invalid_input (a claimed call)", answered(Outcome::kFailed, FailureReason::kInvalidInput), 502,
       std::nullopt, R"({"connector_id":"crm","execution_id":"e1","outcome":"FAILED","reason":"invalid_input"})"},
      {"failed store_unavailable (not recorded)", answered(Outcome::kFailed, FailureReason::kStoreUnavailable, 1), 503,
       "1", R"({"connector_id":"crm","execution_id":"e1","outcome":"FAILED","reason":"store_unavailable"})"},
      {"deferred breaker_open", answered(Outcome::kDeferred, DeferReason::kBreakerOpen, 7, {{"retry_after_ms", 6500}}),
       503, "7",
       R"({"connector_id":"crm","execution_id":"e1","outcome":"DEFERRED","reason":"breaker_open","retry_after_ms":6500})"},
      {"deferred store_unavailable", answered(Outcome::kDeferred, DeferReason::kStoreUnavailable, 1), 503, "1",
       R"({"connector_id":"crm","execution_id":"e1","outcome":"DEFERRED","reason":"store_unavailable"})"},
      {"blocked kill_switch", answered(Outcome::kBlocked, BlockReason::kKillSwitch, std::nullopt, {{"scope", "tool"}}),
       403, std::nullopt,
       R"({"connector_id":"crm","execution_id":"e1","outcome":"BLOCKED","reason":"kill_switch","scope":"tool"})"},
      {"queued", answered(Outcome::kQueued, {}), 202, std::nullopt,
       R"({"connector_id":"crm","execution_id":"e1","outcome":"QUEUED"})"},
      {"running (the intent's other execution)", answered(Outcome::kRunning, {}), 202, std::nullopt,
       R"({"connector_id":"crm","execution_id":"e1","outcome":"RUNNING"})"},
      {"expired deadline", answered(Outcome::kExpired, ExpiryReason::kDeadline), 410, std::nullopt,
       R"({"connector_id":"crm","execution_id":"e1","outcome":"EXPIRED","reason":"deadline"})"},
      {"unknown_tool", InvokeResult::Refused(InvokeError::kUnknownTool, "m"), 404, std::nullopt,
       R"({"error":"unknown_tool","message":"m"})"},
      {"invalid_input", InvokeResult::Refused(InvokeError::kInvalidInput, "/a: required"), 400, std::nullopt,
       R"({"error":"invalid_input","message":"/a: required"})"},
      {"idempotency_key_reused", InvokeResult::Refused(InvokeError::kIdempotencyKeyReused, "m"), 422, std::nullopt,
       R"({"error":"idempotency_key_reused","message":"m"})"},
      {"queue_full", InvokeResult::Refused(InvokeError::kQueueFull, "m", 1), 429, "1",
       R"({"error":"queue_full","message":"m"})"},
      {"not_implemented", InvokeResult::Refused(InvokeError::kNotImplemented, "m"), 501, std::nullopt,
       R"({"error":"not_implemented","message":"m"})"},
      {"gone", InvokeResult::Refused(InvokeError::kGone, "m"), 410, std::nullopt, R"({"error":"gone","message":"m"})"},
      {"store_unavailable with retry", InvokeResult::Refused(InvokeError::kStoreUnavailable, "m", 1), 503, "1",
       R"({"error":"store_unavailable","message":"m"})"},
      {"store_unavailable (replay)", InvokeResult::Refused(InvokeError::kStoreUnavailable, "m"), 503, std::nullopt,
       R"({"error":"store_unavailable","message":"m"})"},
      {"shutting_down", InvokeResult::Refused(InvokeError::kShuttingDown, "m"), 503, std::nullopt,
       R"({"error":"shutting_down","message":"m"})"},
      {"forbidden", InvokeResult::Refused(InvokeError::kForbidden, "m"), 403, std::nullopt,
       R"({"error":"forbidden","message":"m"})"},
      {"not_found", InvokeResult::Refused(InvokeError::kNotFound, "m"), 404, std::nullopt,
       R"({"error":"not_found","message":"m"})"},
      {"not_replayable", InvokeResult::Refused(InvokeError::kNotReplayable, "m"), 409, std::nullopt,
       R"({"error":"not_replayable","message":"m"})"},
      {"execution_in_progress", InvokeResult::Refused(InvokeError::kExecutionInProgress, "m"), 409, std::nullopt,
       R"({"error":"execution_in_progress","message":"m"})"},
      {"replay_limit_reached", InvokeResult::Refused(InvokeError::kReplayLimitReached, "m"), 409, std::nullopt,
       R"({"error":"replay_limit_reached","message":"m"})"},
  };
  std::set<InvokeError> covered;
  for (const Case& c : cases) {
    const api::HttpResponse h = api::ToHttp(c.result);
    EXPECT_EQ(h.status, c.status) << c.name;
    EXPECT_EQ(api::InvocationHttpStatus(c.result), c.status) << c.name;
    EXPECT_EQ(h.content_type, "application/json") << c.name;
    EXPECT_EQ(h.body, c.body) << c.name;
    std::optional<std::string> retry_after;
    for (const auto& [name, value] : h.headers) {
      EXPECT_EQ(name, "Retry-After") << c.name << ": no other header";
      retry_after = value;
    }
    EXPECT_EQ(retry_after, c.retry_after) << c.name;
    if (c.result.error) covered.insert(*c.result.error);
  }
  EXPECT_EQ(covered.size(), std::size(kAllInvokeErrors)) << "a new refusal needs its row here";
}

TEST(OutcomeTest, EveryRefusalHasItsErrorCodeAndAClientOrServerStatus) {
  std::set<std::string> codes;
  for (InvokeError e : kAllInvokeErrors) {
    const std::string code(ToString(e));
    EXPECT_TRUE(codes.insert(code).second) << code << " twice";
    EXPECT_EQ(ParseInvokeError(code), e) << code;
    EXPECT_EQ(json(e), json(code));
    const int status = api::InvokeErrorHttpStatus(e);
    EXPECT_GE(status, 400) << code;
    EXPECT_LT(status, 600) << code;
    EXPECT_NE(status, 500) << code << ": every refusal has its own row";
  }
  EXPECT_FALSE(ParseInvokeError("Unknown_Tool").has_value());
  EXPECT_FALSE(ParseInvokeError("timeout").has_value()) << "an outcome reason is not a refusal";
}

TEST(OutcomeTest, BlockExpiryAndRequeueReasonsKeepTheirStrings) {
  EXPECT_EQ(ToString(BlockReason::kKillSwitch), "kill_switch");
  EXPECT_EQ(ParseBlockReason("kill_switch"), BlockReason::kKillSwitch);
  EXPECT_FALSE(ParseBlockReason("Kill_Switch").has_value());
  const std::vector<std::pair<ExpiryReason, std::string>> expiry = {{ExpiryReason::kDeadline, "deadline"},
                                                                    {ExpiryReason::kCancelled, "cancelled"},
                                                                    {ExpiryReason::kPurged, "purged"}};
  ASSERT_EQ(expiry.size(), std::size(kAllExpiryReasons));
  for (const auto& [reason, text] : expiry) {
    EXPECT_EQ(ToString(reason), text);
    EXPECT_EQ(ParseExpiryReason(text), reason) << text;
    EXPECT_EQ(json(reason), json(text));
  }
  EXPECT_FALSE(ParseExpiryReason("canceled").has_value());
  for (const auto& [reason, text] : std::vector<std::pair<RequeueReason, std::string>>{
           {RequeueReason::kThrottled, "throttled"}, {RequeueReason::kClaimExpired, "claim_expired"}}) {
    EXPECT_EQ(ToString(reason), text);
    EXPECT_EQ(ParseRequeueReason(text), reason) << text;
    EXPECT_EQ(json(reason), json(text));
  }
  EXPECT_FALSE(ParseRequeueReason("breaker_open").has_value());
}

// A reason is read as the kind its outcome takes, and only that kind.
TEST(OutcomeTest, OutcomeReasonParsesByItsOutcomeStrictly) {
  struct Case {
    Outcome outcome;
    std::string text;
    std::optional<OutcomeReason> want;
  };
  const std::vector<Case> cases = {
      {Outcome::kSucceeded, "", OutcomeReason{}},
      {Outcome::kQueued, "", OutcomeReason{}},
      {Outcome::kFailed, "timeout", OutcomeReason{FailureReason::kTimeout}},
      {Outcome::kFailed, "store_unavailable", OutcomeReason{FailureReason::kStoreUnavailable}},
      {Outcome::kDeferred, "store_unavailable", OutcomeReason{DeferReason::kStoreUnavailable}},
      {Outcome::kBlocked, "kill_switch", OutcomeReason{BlockReason::kKillSwitch}},
      {Outcome::kExpired, "purged", OutcomeReason{ExpiryReason::kPurged}},
      {Outcome::kFailed, "breaker_open", std::nullopt},
      {Outcome::kDeferred, "timeout", std::nullopt},
      {Outcome::kBlocked, "deadline", std::nullopt},
      {Outcome::kSucceeded, "timeout", std::nullopt},
      {Outcome::kRunning, "claim_expired", std::nullopt},
      {Outcome::kFailed, "TIMEOUT", std::nullopt},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ParseOutcomeReason(c.outcome, c.text), c.want) << ToString(c.outcome) << " '" << c.text << "'";
    if (c.want) {
      EXPECT_EQ(ToString(*c.want), c.text);
    }
  }
}

TEST(OutcomeTest, BoundedJsonParseRefusesDeepNesting) {
  const std::string deep = std::string(api::kMaxJsonDepth + 1, '[') + std::string(api::kMaxJsonDepth + 1, ']');
  EXPECT_TRUE(api::ParseBoundedJson(deep).is_discarded());
  const std::string fits = std::string(api::kMaxJsonDepth, '[') + std::string(api::kMaxJsonDepth, ']');
  EXPECT_FALSE(api::ParseBoundedJson(fits).is_discarded());
  EXPECT_TRUE(api::ParseBoundedJson("{not json").is_discarded());
  EXPECT_EQ(api::ParseBoundedJson(R"({"reason":"x"})").value("reason", ""), "x");
}

// A record of tenant t1's call to crm.x.
ExecutionRecord ARecord(std::string execution_id, Outcome outcome) {
  ExecutionRecord r;
  r.execution_id = std::move(execution_id);
  r.tenant_id = "t1";
  r.tool_name = "crm.x";
  r.connector_id = "crm";
  r.outcome = outcome;
  return r;
}

// The store format: the record holds the outcome's string; an outcome nobody wrote is kDataLoss.
TEST(OutcomeTest, StoredOutcomeIsItsStringAndAnUnknownOneIsDataLoss) {
  ManualClock clock;
  store::MemoryItemStore store(clock);
  ExecutionStore executions(store, clock);
  ExecutionRecord r = ARecord("0190f0f0-0000-7000-8000-000000000001", Outcome::kQueued);
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

// A finish whose events are items of their own (no anchor to expect) never moves the record's anchor
// backwards: written again after the store came back, it is refused once another writer appended
// to the chain (a replay's REPLAY_REQUESTED), and taken again when it is the same finish.
TEST(OutcomeTest, AFinishWithoutAnAnchorNeverMovesTheRecordsAnchorBack) {
  ManualClock clock;
  store::MemoryItemStore store(clock);
  ExecutionStore executions(store, clock);
  ExecutionRecord r = ARecord("0190f0f0-0000-7000-8000-000000000002", Outcome::kInProgress);
  r.last_seq = 3;
  r.last_hash = "h3";
  ASSERT_TRUE(executions.Create(r).ok());
  r.outcome = Outcome::kSucceeded;
  r.last_seq = 5;
  r.last_hash = "h5";
  const store::WriteRequest finish = ExecutionStore::FinishRequest(r);
  const auto write = [&] { return store.Update(finish.key, finish.ops, finish.condition).value().applied; };
  EXPECT_TRUE(write());
  EXPECT_TRUE(write()) << "the same finish again (its first try's outcome unknown) refused";
  ASSERT_TRUE(
      store.Update(finish.key, {store::UpdateOp::Set(store::Attr("last_seq"), int64_t{6})}, store::Condition::Always())
          .ok());
  EXPECT_FALSE(write()) << "the finish hid an event appended after it";
  EXPECT_EQ(store::GetInt(**store.Get(finish.key), "last_seq"), 6);
}

}  // namespace
}  // namespace toolgate
