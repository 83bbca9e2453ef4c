// The pure pieces of the MCP front door: the JSON-RPC reader (ids echoed exactly), stateless session
// ids (any instance with the same key accepts them; bound to a tenant; expiring; tamper-evident) and
// the one table from the engine's answer to a tools/call result (design §14, §17.7); and the cache of
// sessions' logging levels.

#include "api/mcp_protocol.h"

#include <functional>

#include "api/invocation.h"
#include "api/mcp_log_levels.h"
#include "api/mcp_results.h"
#include "api/mcp_session.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "toolgate/store/forwarding_item_store.h"
#include "toolgate/store/memory_item_store.h"

namespace toolgate::api {
namespace {

using json = nlohmann::json;

TEST(McpProtocolTest, ReadsRequestsNotificationsAndResponsesAndEchoesIdsExactly) {
  auto m = std::get<mcp::JsonRpcMessage>(mcp::ParseJsonRpc(R"({"jsonrpc":"2.0","id":1.0,"method":"ping"})"));
  EXPECT_EQ(m.kind, mcp::JsonRpcMessage::Kind::kRequest);
  EXPECT_EQ(m.id_json, "1.0");
  EXPECT_EQ(m.params, json::object());
  EXPECT_EQ(mcp::ResultResponse(m.id_json, json::object()), R"({"jsonrpc":"2.0","id":1.0,"result":{}})");
  auto big = std::get<mcp::JsonRpcMessage>(
      mcp::ParseJsonRpc(R"({"id" : 98765432109876543210987654321 ,"jsonrpc":"2.0","method":"x"})"));
  EXPECT_EQ(big.id_json, "98765432109876543210987654321");
  auto s = std::get<mcp::JsonRpcMessage>(mcp::ParseJsonRpc(R"({"jsonrpc":"2.0","id":"a\u00e9\"","method":"x"})"));
  EXPECT_EQ(json::parse(s.id_json), "aé\"");
  EXPECT_EQ(std::get<mcp::JsonRpcMessage>(mcp::ParseJsonRpc(R"({"jsonrpc":"2.0","method":"n"})")).kind,
            mcp::JsonRpcMessage::Kind::kNotification);
  EXPECT_EQ(std::get<mcp::JsonRpcMessage>(mcp::ParseJsonRpc(R"({"jsonrpc":"2.0","id":4,"error":{"code":1}})")).kind,
            mcp::JsonRpcMessage::Kind::kResponse);
  EXPECT_EQ(mcp::RawTopLevelMember(R"({"a":{"id":1},"\u0069d":[1,"]"],"id":"last"})", "id"), "\"last\"");
  EXPECT_EQ(mcp::RawTopLevelMember(R"({"a":{"id":1}})", "id"), std::nullopt);

  // A progress token keeps its text as an id does (the call's own `_meta`'s, not one in its
  // arguments); a string is re-encoded; anything else is no token.
  auto token = [](std::string_view body) { return std::get<mcp::JsonRpcMessage>(mcp::ParseJsonRpc(body)); };
  EXPECT_EQ(
      token(
          R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken": 12345678901234567890123 }}})")
          .progress_token_json,
      "12345678901234567890123");
  EXPECT_EQ(
      token(
          R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"arguments":{"_meta":{"progressToken":1}},"_meta":{"progressToken":2.50e3}}})")
          .progress_token_json,
      "2.50e3");
  EXPECT_EQ(json::parse(token(R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progressToken":"p\u00e9"}}})")
                            .progress_token_json),
            "pé");
  EXPECT_EQ(
      token(R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"progressToken":true}}})").progress_token_json,
      "");
  EXPECT_EQ(token(R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":[1]}})").progress_token_json, "");
  EXPECT_EQ(token(R"({"jsonrpc":"2.0","id":1,"method":"x"})").progress_token_json, "");

  auto err = [](std::string_view body) { return std::get<mcp::JsonRpcError>(mcp::ParseJsonRpc(body)); };
  // A repeated key means one thing to toolgate's parser (the last) and may mean another to a proxy
  // in front (the first): refused, with no id, since the id may be the one repeated.
  for (const char* twice : {R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}})",
                            R"({"jsonrpc":"2.0","id":1,"id":2,"method":"ping"})",
                            R"({"jsonrpc":"2.0","id":1,"method":"x","params":{"arguments":{"to":"a","to":"b"}}})"}) {
    EXPECT_EQ(err(twice).code, mcp::kInvalidRequest) << twice;
    EXPECT_EQ(err(twice).id_json, "null") << twice;
  }
  EXPECT_EQ(err("nope").code, mcp::kParseError);
  EXPECT_EQ(err(std::string(100, '[') + std::string(100, ']')).code, mcp::kParseError);
  EXPECT_EQ(err("[]").code, mcp::kInvalidRequest);
  EXPECT_EQ(err(R"({"jsonrpc":"2.0","id":null,"method":"x"})").code, mcp::kInvalidRequest);
  EXPECT_EQ(err(R"({"jsonrpc":"2.0","id":2,"method":"x","params":3})").id_json, "2");
  EXPECT_EQ(err(R"({"id":"k","method":"x"})").id_json, "\"k\"");
  // A request and a response at once (a hostile client's "ping" that carries a result) is neither.
  EXPECT_EQ(err(R"({"jsonrpc":"2.0","id":5,"method":"tools/call","result":{}})").code, mcp::kInvalidRequest);
  EXPECT_EQ(err(R"({"jsonrpc":"2.0","id":6,"method":"ping","error":{"code":1}})").id_json, "6");
}

TEST(McpSessionTest, IdsAreStatelessTenantBoundExpiringAndTamperEvident) {
  const McpSessionIds a(McpSessionIds::DeriveKey("shared-secret-0123456789"), 1000);
  const McpSessionIds b(McpSessionIds::DeriveKey("shared-secret-0123456789"), 1000);
  const McpSessionIds other(McpSessionIds::DeriveKey("another-secret-0123456789"), 1000);
  const std::string id = a.Issue("tenant-a", "2025-06-18", 5000);
  for (char c : id) EXPECT_TRUE(c > 0x20 && c < 0x7f) << "a header value";
  auto s = b.Verify(id, "tenant-a", 5500);  // another instance, same config
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->protocol_version, "2025-06-18");
  EXPECT_FALSE(other.Verify(id, "tenant-a", 5500));
  EXPECT_FALSE(a.Verify(id, "tenant-b", 5500));
  EXPECT_FALSE(a.Verify(id, "tenant-a", 6001)) << "expired";
  std::string tampered = id;
  tampered[4] = tampered[4] == '1' ? '2' : '1';
  EXPECT_FALSE(a.Verify(tampered, "tenant-a", 5500));
  EXPECT_FALSE(a.Verify("", "tenant-a", 5500));
  EXPECT_NE(McpSessionIds::DeriveKey(""), McpSessionIds::DeriveKey("")) << "no secret: a random key";
}

// The engine's typed answer that the HTTP API writes as `status` and `body` (checked through the one
// table, so these cases are the answers the gateway really gives).
InvokeResult Engine(int status, const json& body, std::optional<int64_t> retry_after_s = std::nullopt) {
  InvokeResult r;
  if (body.contains("error")) {
    std::optional<InvokeError> error = ParseInvokeError(body["error"].get<std::string>());
    EXPECT_TRUE(error.has_value()) << body;
    r = InvokeResult::Refused(error.value_or(InvokeError::kStoreUnavailable), body.value("message", ""), retry_after_s);
  } else {
    const std::optional<Outcome> outcome = ParseOutcome(body.value("outcome", ""));
    EXPECT_TRUE(outcome.has_value()) << body;
    const std::optional<OutcomeReason> reason =
        ParseOutcomeReason(outcome.value_or(Outcome::kFailed), body.value("reason", ""));
    EXPECT_TRUE(reason.has_value()) << body;
    json details = body;
    for (const char* key : {"execution_id", "outcome", "reason"}) details.erase(key);
    r = InvokeResult::Answered(outcome.value_or(Outcome::kFailed), reason.value_or(OutcomeReason{}),
                               body.value("execution_id", ""), std::move(details), retry_after_s);
  }
  EXPECT_EQ(InvocationHttpStatus(r), status) << body;
  EXPECT_EQ(InvocationBody(r), body) << "the HTTP body of this answer";
  return r;
}

TEST(McpResultsTest, EveryOutcomeMapsToOneResultShape) {
  auto ok =
      mcp::ToCallAnswer("crm.x", Engine(200, {{"execution_id", "e1"}, {"outcome", "SUCCEEDED"}, {"result", "plain"}}));
  EXPECT_EQ(ok.result["structuredContent"], json({{"result", "plain"}}));
  EXPECT_EQ(ok.result["content"][0]["text"], "\"plain\"");
  EXPECT_EQ(ok.result["_meta"]["io.toolgate/execution_id"], "e1");

  auto timeout =
      mcp::ToCallAnswer("crm.x", Engine(504, {{"execution_id", "e2"}, {"outcome", "FAILED"}, {"reason", "timeout"}}));
  EXPECT_EQ(timeout.result["isError"], true);
  EXPECT_THAT(timeout.result["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("may or may not"));
  EXPECT_EQ(timeout.result["structuredContent"],
            json({{"execution_id", "e2"}, {"outcome", "FAILED"}, {"reason", "timeout"}}));

  auto deferred = mcp::ToCallAnswer(
      "crm.x", Engine(503, {{"execution_id", "e3"}, {"outcome", "DEFERRED"}, {"reason", "concurrency_limit"}}, 2));
  EXPECT_EQ(deferred.result["structuredContent"]["retry_after_ms"], 2000) << "always there for DEFERRED";
  auto draining = mcp::ToCallAnswer("crm.x", Engine(503, {{"error", "shutting_down"}, {"message", "m"}}));
  EXPECT_EQ(draining.result["structuredContent"]["reason"], "shutting_down");
  EXPECT_EQ(draining.result["structuredContent"]["retry_after_ms"], 1000);
  EXPECT_FALSE(draining.result.contains("_meta")) << "no execution";

  auto invalid =
      mcp::ToCallAnswer("crm.x", Engine(400, {{"error", "invalid_input"}, {"message", "/deal_id: required"}}));
  EXPECT_EQ(invalid.result["isError"], true);
  EXPECT_THAT(invalid.result["content"][0]["text"].get<std::string>(), ::testing::HasSubstr("/deal_id: required"));

  auto unknown = mcp::ToCallAnswer("crm.x", Engine(404, {{"error", "unknown_tool"}, {"message", "m"}}));
  EXPECT_TRUE(unknown.is_rpc_error);
  EXPECT_EQ(unknown.error_code, mcp::kInvalidParams);
}

}  // namespace
}  // namespace toolgate::api

namespace toolgate::api {
namespace {

// Design §14: an MCP connector's own answers pass through, with the execution id added.
TEST(McpResultsTest, AnMcpServersAnswersPassThroughWithTheExecutionId) {
  auto engine = [](int status, const nlohmann::json& body) { return Engine(status, body); };
  const nlohmann::json server_result = {{"content", {{{"type", "text"}, {"text", "Echo: hi"}}}},
                                        {"structuredContent", {{"n", 1}}},
                                        {"_meta", {{"server/key", "v"}}}};
  auto ok = mcp::ToCallAnswer(
      "ev.echo", engine(200, {{"execution_id", "e1"}, {"outcome", "SUCCEEDED"}, {"result", server_result}}), true);
  ASSERT_FALSE(ok.is_rpc_error);
  nlohmann::json expected = server_result;
  expected["_meta"]["io.toolgate/execution_id"] = "e1";
  EXPECT_EQ(ok.result, expected) << "unchanged, not wrapped into structuredContent";
  // The same body for an http connector's tool is wrapped (the downstream JSON as structuredContent).
  auto wrapped = mcp::ToCallAnswer(
      "crm.x", engine(200, {{"execution_id", "e1"}, {"outcome", "SUCCEEDED"}, {"result", server_result}}), false);
  EXPECT_EQ(wrapped.result["structuredContent"], server_result);

  const nlohmann::json is_error = {{"content", {{{"type", "text"}, {"text", "bad a"}}}}, {"isError", true}};
  auto tool_error = mcp::ToCallAnswer(
      "ev.sum",
      engine(502, {{"execution_id", "e2"}, {"outcome", "FAILED"}, {"reason", "tool_error"}, {"tool_result", is_error}}),
      true);
  ASSERT_FALSE(tool_error.is_rpc_error);
  EXPECT_EQ(tool_error.result["content"], is_error["content"]);
  EXPECT_EQ(tool_error.result["isError"], true);
  EXPECT_FALSE(tool_error.result.contains("structuredContent"));
  EXPECT_EQ(tool_error.result["_meta"]["io.toolgate/execution_id"], "e2");

  auto rpc = mcp::ToCallAnswer(
      "ev.sum",
      engine(502, {{"execution_id", "e3"},
                   {"outcome", "FAILED"},
                   {"reason", "tool_rejected"},
                   {"rpc_error", {{"code", -32602}, {"message", "Invalid params"}, {"data", {{"field", "a"}}}}}}),
      true);
  ASSERT_TRUE(rpc.is_rpc_error);
  EXPECT_EQ(rpc.error_code, -32602);
  EXPECT_EQ(rpc.error_message, "Invalid params");
  EXPECT_EQ(rpc.error_data, nlohmann::json({{"field", "a"}, {"execution_id", "e3"}}));

  // toolgate's own outcomes for an MCP tool keep toolgate's shape.
  auto lost = mcp::ToCallAnswer(
      "ev.sum", engine(502, {{"execution_id", "e4"}, {"outcome", "FAILED"}, {"reason", "connection_lost"}}), true);
  EXPECT_EQ(lost.result["structuredContent"]["reason"], "connection_lost");
}

// A store whose Get runs `during` once after reading: another request of the same instance doing its
// work while this one's read is on its way back.
class WorkDuringRead : public store::ForwardingItemStore {
 public:
  using ForwardingItemStore::ForwardingItemStore;
  std::function<void()> during;
  int reads = 0;
  absl::StatusOr<std::optional<store::Item>> Get(const store::ItemKey& key) override {
    ++reads;
    absl::StatusOr<std::optional<store::Item>> read = ForwardingItemStore::Get(key);
    if (during) std::exchange(during, nullptr)();
    return read;
  }
};

TEST(McpLogLevelsTest, ALevelSetWhileAReadWasOnItsWayIsWhatTheInstanceKeeps) {
  ManualClock clock;
  store::MemoryItemStore memory(clock);
  WorkDuringRead store(memory);
  McpLogLevels levels(store, clock);
  const int64_t expiry = clock.now_epoch_sec() + 3600;
  EXPECT_EQ(levels.Get("acme", "s1"), -1) << "no level set";
  EXPECT_EQ(levels.Cached("acme", "s1"), -1) << "kept for 5 s";
  ASSERT_TRUE(levels.Set("acme", "s1", 4, expiry).ok());  // error
  EXPECT_EQ(levels.Cached("acme", "s1"), 4);
  EXPECT_EQ(levels.Cached("other-tenant", "s1"), std::nullopt);

  clock.advance(std::chrono::seconds(6));  // the copy is stale: the next call reads the store
  EXPECT_EQ(levels.Cached("acme", "s1"), std::nullopt);
  store.during = [&] { ASSERT_TRUE(levels.Set("acme", "s1", 0, expiry).ok()); };  // debug, meanwhile
  const int reads = store.reads;
  EXPECT_EQ(levels.Get("acme", "s1"), 0) << "the read found error; the level set meanwhile is debug";
  EXPECT_EQ(store.reads, reads + 1);
  EXPECT_EQ(levels.Cached("acme", "s1"), 0) << "and the stale read did not replace it for the next 5 s";

  clock.advance(std::chrono::seconds(6));
  EXPECT_EQ(levels.Get("acme", "s1"), 0) << "read again: the store holds debug";
  EXPECT_EQ(store.reads, reads + 2);
}

}  // namespace
}  // namespace toolgate::api
