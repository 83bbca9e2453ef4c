#include "toolgate/store/item_json.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace toolgate::store {
namespace {

constexpr int kMaxDepth = 32;

nlohmann::json ValueToJson(const AttributeValue& v) {
  if (v.is_string()) return v.as_string();
  if (v.is_int()) return v.as_int();
  if (v.is_double()) return v.as_number();
  if (v.is_bool()) return v.as_bool();
  return ItemToJson(v.as_map());
}

absl::StatusOr<AttributeValue> ValueFromJson(const nlohmann::json& j, int depth, std::string_view name) {
  switch (j.type()) {
    case nlohmann::json::value_t::string:
      return AttributeValue(j.get<std::string>());
    case nlohmann::json::value_t::boolean:
      return AttributeValue(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return AttributeValue(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        return absl::DataLossError(absl::StrCat("attribute '", std::string(name), "' holds an integer beyond int64"));
      }
      return AttributeValue(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return AttributeValue(j.get<double>());
    case nlohmann::json::value_t::object: {
      if (depth >= kMaxDepth) return absl::DataLossError("item nests deeper than 32 levels");
      AttributeMap m;
      for (const auto& [k, v] : j.items()) {
        absl::StatusOr<AttributeValue> inner = ValueFromJson(v, depth + 1, k);
        if (!inner.ok()) return inner.status();
        m.emplace(k, std::move(*inner));
      }
      return AttributeValue(std::move(m));
    }
    default:
      return absl::DataLossError(
          absl::StrCat("attribute '", std::string(name), "' has unsupported JSON type ", j.type_name()));
  }
}

}  // namespace

nlohmann::json ItemToJson(const Item& item) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : item) j[k] = ValueToJson(v);
  return j;
}

namespace {

std::string Dump(const nlohmann::json& j) {
  // Invalid UTF-8 cannot come from parsed JSON input; replace rather than throw if it ever does.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A string as nlohmann writes it: printable ASCII as it is, anything else through nlohmann itself
// (escapes, UTF-8, invalid bytes replaced).
void AppendString(std::string& out, const std::string& s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      out += Dump(nlohmann::json(s));
      return;
    }
  }
  out += '"';
  out += s;
  out += '"';
}

void AppendMap(std::string& out, const AttributeMap& map) {
  out += '{';
  bool first = true;
  for (const auto& [k, v] : map) {
    if (!first) out += ',';
    first = false;
    AppendString(out, k);
    out += ':';
    if (v.is_string()) {
      AppendString(out, v.as_string());
    } else if (v.is_int()) {
      absl::StrAppend(&out, v.as_int());
    } else if (v.is_bool()) {
      out += v.as_bool() ? "true" : "false";
    } else if (v.is_map()) {
      AppendMap(out, v.as_map());
    } else {
      out += Dump(nlohmann::json(v.as_number()));
    }
  }
  out += '}';
}

}  // namespace

// The same text as ItemToJson(item).dump(), written straight into one string: no JSON tree built
// for every write of an item (design §16: no avoidable allocation per request).
std::string ItemToJsonText(const Item& item) {
  std::string out;
  out.reserve(256);
  AppendMap(out, item);
  return out;
}

absl::StatusOr<Item> ItemFromJson(const nlohmann::json& json) {
  if (!json.is_object()) return absl::DataLossError("stored item is not a JSON object");
  absl::StatusOr<AttributeValue> v = ValueFromJson(json, 0, "");
  if (!v.ok()) return v.status();
  return std::move(v->as_map());
}

absl::StatusOr<Item> ItemFromJsonText(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError("stored item is not valid JSON");
  return ItemFromJson(j);
}

}  // namespace toolgate::store
