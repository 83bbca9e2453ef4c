#include "api/api_support.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/strings/match.h"
#include "api/json_limits.h"
#include "toolgate/domain/control_bytes.h"
#include "spdlog/spdlog.h"

namespace toolgate::api {

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

HttpResponse Json(int status, const json& body) { return {status, Dump(body), "application/json", {}, {}, {}}; }

HttpResponse Error(int status, std::string_view code, std::string_view message) {
  return {
      status, Dump(json{{"error", std::string(code)}, {"message", std::string(message)}}), "application/json", {}, {},
      {}};
}

HttpResponse StoreWriteError(const absl::Status& why) {
  spdlog::warn("admin change not made: {}", why.ToString());
  if (absl::IsDataLoss(why)) {
    return Error(503, "store_unavailable",
                 absl::StrCat("the store holds an item that cannot be read: ", why.message()));
  }
  return Error(503, "store_unavailable", "the store cannot be written right now");
}

ParsedBody ParseJsonObject(std::string_view body, bool empty_is_object) {
  ParsedBody out;
  if (body.empty() && empty_is_object) {
    out.value = json::object();
    return out;
  }
  int64_t values = 0;
  switch (CheckJsonText(body, kMaxJsonDepth, kMaxJsonValues, &values)) {
    case JsonTextFault::kTooDeep:
      out.error = Error(400, "invalid_json", absl::StrCat("the body nests deeper than ", kMaxJsonDepth, " levels"));
      return out;
    case JsonTextFault::kTooManyValues:
      out.error = Error(400, "invalid_json",
                        absl::StrCat("the body holds more than ", kMaxJsonValues,
                                     " JSON values (array elements and object members)"));
      return out;
    case JsonTextFault::kNone:
      break;
  }
  out.value = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (out.value.is_discarded()) {
    out.error = Error(400, "invalid_json", "the body is not valid JSON");
  } else if (JsonValueCount(out.value) != values) {
    // The parser keeps the last of a repeated key, where a proxy or filter in front may read the
    // first: a body that means two things is refused.
    out.error = Error(400, "invalid_json", "the body repeats a key within an object");
  } else if (!out.value.is_object()) {
    out.error = Error(400, "invalid_request", "the body must be a JSON object");
  }
  return out;
}

json ParseBoundedJson(std::string_view text) { return ParseJsonWithin(text, kMaxJsonDepth); }

bool IsLoopback(const std::string& host) { return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0; }

std::optional<std::string> BearerToken(const HttpRequest& req) {
  const std::string h = req.Header("authorization");
  constexpr size_t kPrefix = 7;  // "Bearer ", the scheme case-insensitive (RFC 9110 §11.1)
  if (h.size() <= kPrefix || !absl::StartsWithIgnoreCase(h, "Bearer ")) return std::nullopt;
  return h.substr(kPrefix);
}

bool HasTenantFields(const HttpRequest& req, const json* body) {
  for (const char* f : {"tenant_id", "account_id"}) {
    if (req.query.count(f)) return true;
    if (body && body->is_object() && body->contains(f)) return true;
  }
  return false;
}

namespace {

// Each field a string of 1..max bytes of text (Printable): it is the audit's and the ledger's record
// of who and why, shown in operators' terminals and logs, so no control character, no
// text-reordering mark, nothing that is not UTF-8 — but a reason may have lines and tabs, which
// every view shows escaped.
std::optional<HttpResponse> CheckTextFields(const json& body, std::pair<const char*, int> reason,
                                            std::pair<const char*, int> who) {
  for (auto [field, max] : {reason, who}) {
    if (!body.contains(field) || !body[field].is_string() || body[field].get<std::string>().empty() ||
        body[field].get<std::string>().size() > static_cast<size_t>(max)) {
      return Error(400, "invalid_request", absl::StrCat(field, " is required: a string of 1..", max, " characters"));
    }
    std::string v = body[field].get<std::string>();
    if (field == reason.first) std::erase_if(v, [](char c) { return c == '\n' || c == '\t'; });
    if (Printable(v) != v) {
      return Error(400, "invalid_request",
                   absl::StrCat(field, " must be UTF-8 text without control characters or direction marks"));
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<HttpResponse> CheckAudit(const json& body) {
  return CheckTextFields(body, {"reason", 1000}, {"requested_by", 200});
}

std::optional<HttpResponse> CheckReplayBody(const json& b) {
  if (auto bad = CheckTextFields(b, {"replay_reason", 1000}, {"requested_by", 200})) return bad;
  if (b.contains("force") && !b["force"].is_boolean()) return Error(400, "invalid_request", "force must be a boolean");
  return std::nullopt;
}

std::optional<int64_t> ParseTimeMs(const std::string& text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  if (text.find_first_not_of("0123456789") == std::string::npos) {
    if (text.size() > 15) return std::nullopt;
    return std::stoll(text);
  }
  for (const char* format : {"%Y-%m-%d%ET%H:%M:%E*S%Ez", "%Y-%m-%d%ET%H:%M%Ez", "%Y-%m-%d"}) {
    absl::Time t;
    std::string err;
    if (absl::ParseTime(format, text, absl::UTCTimeZone(), &t, &err)) return absl::ToUnixMillis(t);
  }
  return std::nullopt;
}

}  // namespace toolgate::api
