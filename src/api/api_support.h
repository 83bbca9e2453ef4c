#pragma once

// What every route of the api layer shares: JSON answers and errors, the one body parser (depth and
// shape checked), running blocking store work off the event loop, and the request checks that apply
// to every route (bearer token, tenant fields, audit fields).

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "api/http.h"
#include "toolgate/store/awaitable_item_store.h"
#include "nlohmann/json.hpp"

namespace toolgate::api {

using json = nlohmann::json;

// Compact JSON; invalid UTF-8 is replaced, never thrown.
std::string Dump(const json& j);
HttpResponse Json(int status, const json& body);
// A JSON error body {"error": code, "message": message}.
HttpResponse Error(int status, std::string_view code, std::string_view message);
// 503 store_unavailable for an admin write the store refused, logged with its status. An item that
// cannot be read (kDataLoss: edited by hand, corrupted) is named in the message, so the operator
// knows which item to look at rather than waiting for an outage that is not there.
HttpResponse StoreWriteError(const absl::Status& why);

// A request body as a JSON object: the one parser every route uses. Nesting is checked before
// parsing (JsonDepthWithin); an empty body is `{}` when `empty_is_object`. Otherwise the error to
// answer: 400 invalid_json (not JSON, too deep) or invalid_request (not an object).
struct ParsedBody {
  json value;
  std::optional<HttpResponse> error;
};
ParsedBody ParseJsonObject(std::string_view body, bool empty_is_object);
// A caller's JSON text, any kind, parsed only when it nests at most kMaxJsonDepth deep; discarded
// (is_discarded()) when it is deeper or not JSON. For text read from a request beyond a route's
// validation (ParseJsonObject uses it).
json ParseBoundedJson(std::string_view text);

// Runs blocking work (store calls) on the pool and resumes the caller with its result.
using store::RunBlocking;

bool IsLoopback(const std::string& host);
// The token of `Authorization: Bearer <token>`, or nullopt.
std::optional<std::string> BearerToken(const HttpRequest& req);
// True when the query (or the body, if given) carries tenant_id or account_id (S11: refused).
bool HasTenantFields(const HttpRequest& req, const json* body);
// Required admin change fields: reason (1..1000) and requested_by (1..200); the error to answer.
std::optional<HttpResponse> CheckAudit(const json& body);
// A replay's fields (design §6): replay_reason (1..1000), requested_by (1..200), force? (bool); the
// error to answer. The public and the admin replay routes both check with this.
std::optional<HttpResponse> CheckReplayBody(const json& body);
// A point in time as operators write it (DESIGN §17.9): epoch milliseconds, or RFC 3339 with or
// without seconds ("2026-11-30T10:00Z", "2026-11-30T10:00:00.5+01:00"), or a date (UTC midnight).
std::optional<int64_t> ParseTimeMs(const std::string& text);

}  // namespace toolgate::api
