#include "api/mcp_results.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <variant>

#include "absl/strings/str_cat.h"
#include "api/invocation.h"
#include "api/mcp_protocol.h"
#include "toolgate/domain/outcome.h"

namespace toolgate::api::mcp {

namespace {

using json = nlohmann::json;

std::string CompactJson(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string Str(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Why a DEFERRED call (or one refused with 503) did not run, in words a model can use.
std::string DeferredWhy(const InvokeResult& answer) {
  if (answer.error == InvokeError::kStoreUnavailable) return "toolgate cannot reach its store";
  if (answer.error == InvokeError::kShuttingDown) return "this toolgate instance is shutting down";
  if (const DeferReason* why = std::get_if<DeferReason>(&answer.reason); why != nullptr && !answer.error) {
    switch (*why) {
      case DeferReason::kBreakerOpen:
        return "the service is failing and toolgate's circuit breaker for it is open";
      case DeferReason::kProbeInFlight:
        return "the service is being probed after an outage";
      case DeferReason::kConcurrencyLimit:
        return "the service already has as many calls in flight as it allows";
      case DeferReason::kIntentInProgress:
        return "a call with the same idempotency key is running right now";
      case DeferReason::kDownstreamThrottled:
        return "the service asked for fewer calls (rate limited)";
      case DeferReason::kStoreUnavailable:
        return "toolgate cannot reach its store";
      case DeferReason::kGatewayOverloaded:
        return "toolgate is overloaded";
      case DeferReason::kTenantConcurrencyLimit:
        return "your calls to the service already hold as many of its slots as one tenant may";
    }
  }
  const std::string_view why = answer.error ? ToString(*answer.error) : ToString(answer.reason);
  return absl::StrCat("it was deferred (", std::string(why), ")");
}

std::string FailedText(const std::string& tool, const OutcomeReason& why, const json& body) {
  const std::string status = body.contains("downstream_status") && body["downstream_status"].is_number_integer()
                                 ? absl::StrCat(" with HTTP ", body["downstream_status"].get<int64_t>())
                                 : "";
  const std::string reason(ToString(why));
  auto is = [&why](std::initializer_list<FailureReason> any) {
    const FailureReason* r = std::get_if<FailureReason>(&why);
    return r != nullptr && std::find(any.begin(), any.end(), *r) != any.end();
  };
  if (is({FailureReason::kTimeout, FailureReason::kConnectionLost})) {
    return absl::StrCat("The call to ", tool, is({FailureReason::kTimeout}) ? " timed out" : " lost its connection",
                        " after the request was sent: it may or may not have taken effect. Calling again with the same "
                        "io.toolgate/idempotency_key lets the service deduplicate it.");
  }
  if (is({FailureReason::kDownstreamRejected, FailureReason::kToolRejected})) {
    return absl::StrCat(
        tool, " rejected the request", status,
        ": it did not succeed. Check the arguments before calling again; retrying unchanged will fail the same way.");
  }
  if (is({FailureReason::kConnectionFailed, FailureReason::kTlsError, FailureReason::kCredentialsUnavailable})) {
    return absl::StrCat("toolgate could not reach ", tool, " (", reason,
                        "): the tool did not run. Try again later; repeated failures open the circuit breaker.");
  }
  return absl::StrCat(tool, " failed (", reason, ")", status,
                      ": it ran and answered with an error, so it may have had effects. Try again later.");
}

json ErrorResult(std::string text, json structured, const std::string& execution_id) {
  json r = {{"content", json::array({{{"type", "text"}, {"text", std::move(text)}}})},
            {"structuredContent", std::move(structured)},
            {"isError", true}};
  if (!execution_id.empty()) r["_meta"] = {{"io.toolgate/execution_id", execution_id}};
  return r;
}

// An MCP server's own answer, as it gave it, with the execution id added (design §14): its result
// (SUCCEEDED), its isError result or its JSON-RPC error (FAILED). nullopt when there is none.
std::optional<CallAnswer> ServerAnswer(json& body, std::optional<Outcome> outcome, const std::string& id) {
  CallAnswer a;
  auto with_execution_id = [&id](json result) {
    if (!result.contains("_meta") || !result["_meta"].is_object()) result["_meta"] = json::object();
    result["_meta"]["io.toolgate/execution_id"] = id;
    return result;
  };
  if (outcome == Outcome::kSucceeded && body.contains("result") && body["result"].is_object()) {
    a.result = with_execution_id(std::move(body["result"]));
    return a;
  }
  if (outcome == Outcome::kFailed && body.contains("tool_result") && body["tool_result"].is_object()) {
    a.result = with_execution_id(std::move(body["tool_result"]));
    return a;
  }
  if (outcome == Outcome::kFailed && body.contains("rpc_error") && body["rpc_error"].is_object()) {
    const json& e = body["rpc_error"];
    a.is_rpc_error = true;
    a.error_code = e.contains("code") && e["code"].is_number_integer() ? e["code"].get<int>() : kInternalError;
    a.error_message = e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "error";
    a.error_data = e.contains("data") && e["data"].is_object() ? e["data"] : json::object();
    if (e.contains("data") && !e["data"].is_object()) a.error_data["data"] = e["data"];
    a.error_data["execution_id"] = id;
    return a;
  }
  return std::nullopt;
}

// A call that did not run now (DEFERRED, or refused with 503): when to try again, and why.
CallAnswer DeferredAnswer(const std::string& tool, const InvokeResult& response, const json& body,
                          const std::string& id) {
  int64_t retry_ms = 1000;
  if (body.contains("retry_after_ms") && body["retry_after_ms"].is_number()) {
    retry_ms = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(body["retry_after_ms"].get<double>())));
  } else if (response.retry_after_s) {
    retry_ms = *response.retry_after_s * 1000;
  }
  const bool deferred = !response.refused() && response.outcome == Outcome::kDeferred;
  const std::string why(deferred         ? ToString(response.reason)
                        : response.error ? ToString(*response.error)
                                         : std::string_view());
  json structured = {{"outcome", Outcome::kDeferred}, {"reason", why}, {"retry_after_ms", retry_ms}};
  if (!id.empty()) structured["execution_id"] = id;
  CallAnswer a;
  a.result = ErrorResult(absl::StrCat(tool, " did not run: ", DeferredWhy(response), ". Try again in ",
                                      (retry_ms + 999) / 1000, " s (retry_after_ms ", retry_ms, ")."),
                         std::move(structured), id);
  return a;
}

// toolgate refused the call before running it: unknown_tool (a JSON-RPC error), invalid_input,
// idempotency_key_reused, ...
CallAnswer RefusedAnswer(const std::string& tool, const InvokeResult& response, const std::string& id) {
  CallAnswer a;
  if (response.error == InvokeError::kUnknownTool) {
    a.is_rpc_error = true;
    a.error_code = kInvalidParams;
    a.error_message = "unknown tool: " + tool;
    return a;
  }
  const std::string error = response.error ? std::string(ToString(*response.error)) : "";
  const std::string& message = response.message;
  json structured = {{"error", error}, {"message", message}};
  std::string advice = "Fix the arguments and call again.";
  if (response.error == InvokeError::kIdempotencyKeyReused) {
    advice = "This idempotency key was already used with other arguments; use a new key for a new call.";
  } else if (response.error == InvokeError::kQueueFull) {
    // Nothing is wrong with the arguments: the tenant's queue on this connector is full for now.
    advice = "Your queued calls to this tool's connector are at their limit; try again in 1 s (retry_after_ms 1000).";
    structured["retry_after_ms"] = 1000;
  } else if (response.error == InvokeError::kNotImplemented) {
    advice = "Queued calls are not available on this gateway; call the tool without the queued mode.";
  }
  a.result =
      ErrorResult(absl::StrCat("toolgate refused the call before running ", tool, " (", error.empty() ? "error" : error,
                               "): ", message, ". The tool did not run. ", advice),
                  std::move(structured), id);
  return a;
}

}  // namespace

CallAnswer ToCallAnswer(const std::string& tool, InvokeResult response, bool from_mcp_server) {
  // What the answer says beyond its outcome and reason (the downstream's result, a kill switch's scope, ...).
  if (!response.details.is_object()) response.details = json::object();
  json& body = response.details;
  const std::string id = response.refused() ? "" : response.execution_id;
  const std::optional<Outcome> outcome =
      response.refused() ? std::nullopt : std::optional<Outcome>(response.outcome);  // nullopt: a refusal
  const std::string reason(ToString(response.reason));

  if (from_mcp_server) {
    if (std::optional<CallAnswer> server = ServerAnswer(body, outcome, id)) return *std::move(server);
  }
  CallAnswer a;
  if (outcome == Outcome::kSucceeded) {
    json value = body.contains("result") ? std::move(body["result"]) : json(nullptr);
    json structured = value.is_object() ? value : json{{"result", value}};
    a.result = {{"content", json::array({{{"type", "text"}, {"text", CompactJson(value)}}})},
                {"structuredContent", std::move(structured)},
                {"isError", false},
                {"_meta", {{"io.toolgate/execution_id", id}}}};
    return a;
  }
  if (outcome == Outcome::kFailed) {
    a.result = ErrorResult(FailedText(tool, response.reason, body),
                           {{"execution_id", id}, {"outcome", *outcome}, {"reason", reason}}, id);
    return a;
  }
  if (outcome == Outcome::kBlocked) {
    const std::string scope = Str(body, "scope");
    a.result =
        ErrorResult(absl::StrCat(tool, " did not run: an operator's kill switch (scope ", scope,
                                 ") blocks it. Do not retry; it stays blocked until an operator clears the switch."),
                    {{"execution_id", id}, {"outcome", *outcome}, {"reason", reason}}, id);
    return a;
  }
  if (outcome == Outcome::kDeferred || InvocationHttpStatus(response) == 503)
    return DeferredAnswer(tool, response, body, id);
  return RefusedAnswer(tool, response, id);
}

}  // namespace toolgate::api::mcp
