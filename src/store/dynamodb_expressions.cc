#include "toolgate/store/dynamodb_expressions.h"

#include <charconv>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "toolgate/status_macros.h"

namespace toolgate::store::dynamodb {
namespace {

using nlohmann::json;

bool IsKeyAttribute(std::string_view name) { return name == kPartitionKey || name == kSortKey; }

// True for the always-true condition, which has no DynamoDB spelling of its own.
constexpr std::string_view kTrue = "(attribute_not_exists(#n_pk) OR attribute_exists(#n_pk))";
constexpr std::string_view kFalse = "(attribute_not_exists(#n_pk) AND attribute_exists(#n_pk))";

std::string_view OpText(Condition::Op op) {
  switch (op) {
    case Condition::Op::kEq:
      return "=";
    case Condition::Op::kNe:
      return "<>";
    case Condition::Op::kLt:
      return "<";
    case Condition::Op::kLe:
      return "<=";
    case Condition::Op::kGt:
      return ">";
    case Condition::Op::kGe:
      return ">=";
  }
  return "=";
}

absl::StatusOr<std::string> Operand(const Condition::Operand& o, ExpressionBuilder& b) {
  if (o.path) return b.Path(*o.path);
  if (o.value) return b.Value(*o.value);
  return absl::InvalidArgumentError("condition operand has neither an attribute nor a value");
}

}  // namespace

absl::StatusOr<json> ValueToWire(const AttributeValue& value) {
  if (value.is_string()) return json{{"S", value.as_string()}};
  if (value.is_int()) return json{{"N", std::to_string(value.as_int())}};
  if (value.is_bool()) return json{{"BOOL", value.as_bool()}};
  if (value.is_double()) {
    const double d = value.as_number();
    if (!std::isfinite(d)) return absl::InvalidArgumentError("DynamoDB cannot store NaN or infinity");
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
    if (ec != std::errc()) return absl::InvalidArgumentError("number out of range");
    std::string text(buf, end);
    // A whole double keeps a fraction so that engines that keep the text give a double back.
    if (text.find_first_of(".eE") == std::string::npos) text += ".0";
    return json{{"N", text}};
  }
  json m = json::object();
  for (const auto& [k, v] : value.as_map()) {
    ASSIGN_OR_RETURN(m[k], ValueToWire(v));
  }
  return json{{"M", std::move(m)}};
}

absl::StatusOr<json> ItemToWire(const Item& item) {
  json out = json::object();
  for (const auto& [name, value] : item) {
    if (IsKeyAttribute(name)) {
      return absl::InvalidArgumentError(absl::StrCat("attribute name '", name, "' is reserved for the table key"));
    }
    ASSIGN_OR_RETURN(out[name], ValueToWire(value));
  }
  return out;
}

absl::StatusOr<AttributeValue> ValueFromWire(const json& wire) {
  if (!wire.is_object() || wire.size() != 1) return absl::DataLossError("malformed DynamoDB attribute value");
  const auto first = wire.begin();
  const std::string& type = first.key();
  const json& v = first.value();
  if (type == "S" && v.is_string()) return AttributeValue(v.get<std::string>());
  if (type == "BOOL" && v.is_boolean()) return AttributeValue(v.get<bool>());
  if (type == "N" && v.is_string()) {
    const std::string& text = v.get_ref<const std::string&>();
    const char* first = text.data();
    const char* last = text.data() + text.size();
    if (text.find_first_of(".eE") == std::string::npos) {
      int64_t n = 0;
      auto [p, ec] = std::from_chars(first, last, n);
      if (ec == std::errc() && p == last) return AttributeValue(n);
    }
    double d = 0;
    auto [p, ec] = std::from_chars(first, last, d);
    if (ec == std::errc() && p == last && std::isfinite(d)) return AttributeValue(d);
    return absl::DataLossError(absl::StrCat("malformed DynamoDB number '", text.substr(0, 40), "'"));
  }
  if (type == "M" && v.is_object()) {
    AttributeMap m;
    for (const auto& [k, inner] : v.items()) {
      ASSIGN_OR_RETURN(AttributeValue value, ValueFromWire(inner));
      m.emplace(k, std::move(value));
    }
    return AttributeValue(std::move(m));
  }
  return absl::DataLossError(
      absl::StrCat("DynamoDB attribute of type '", type.substr(0, 10), "' is not one toolgate writes"));
}

absl::StatusOr<Item> ItemFromWire(const json& wire) {
  if (!wire.is_object()) return absl::DataLossError("malformed DynamoDB item");
  Item item;
  for (const auto& [name, v] : wire.items()) {
    if (IsKeyAttribute(name)) continue;
    absl::StatusOr<AttributeValue> value = ValueFromWire(v);
    if (!value.ok()) return absl::DataLossError(absl::StrCat("attribute '", name, "': ", value.status().message()));
    item.emplace(name, std::move(*value));
  }
  return item;
}

std::string ExpressionBuilder::Name(std::string_view attribute) {
  auto it = name_ids_.find(attribute);
  if (it != name_ids_.end()) return it->second;
  std::string id =
      IsKeyAttribute(attribute) ? absl::StrCat("#n_", std::string(attribute)) : absl::StrCat("#n", name_ids_.size());
  names_[id] = std::string(attribute);
  name_ids_.emplace(std::string(attribute), id);
  return id;
}

std::string ExpressionBuilder::Path(const AttributePath& path) {
  std::string out = Name(path.name);
  if (path.key) absl::StrAppend(&out, ".", Name(*path.key));
  return out;
}

absl::StatusOr<std::string> ExpressionBuilder::Value(const AttributeValue& value) {
  ASSIGN_OR_RETURN(json wire, ValueToWire(value));
  std::string id = absl::StrCat(":v", next_value_++);
  values_[id] = std::move(wire);
  return id;
}

void ExpressionBuilder::AddTo(json& request) const {
  if (!names_.empty()) request["ExpressionAttributeNames"] = names_;
  if (!values_.empty()) request["ExpressionAttributeValues"] = values_;
}

absl::StatusOr<std::string> RenderCondition(const Condition& c, ExpressionBuilder& b) {
  using K = Condition::Kind;
  const auto always_or = [&](std::string_view fixed) {
    b.Name(kPartitionKey);  // registers #n_pk
    return std::string(fixed);
  };
  switch (c.kind()) {
    case K::kAlways:
      return std::string();
    case K::kItemExists:
      return absl::StrCat("attribute_exists(", b.Name(kPartitionKey), ")");
    case K::kItemAbsent:
      return absl::StrCat("attribute_not_exists(", b.Name(kPartitionKey), ")");
    case K::kExists:
      return absl::StrCat("attribute_exists(", b.Path(*c.path()), ")");
    case K::kNotExists:
      return absl::StrCat("attribute_not_exists(", b.Path(*c.path()), ")");
    case K::kCompare: {
      ASSIGN_OR_RETURN(std::string lhs, Operand(c.lhs(), b));
      ASSIGN_OR_RETURN(std::string rhs, Operand(c.rhs(), b));
      return absl::StrCat(lhs, " ", std::string(OpText(c.op())), " ", rhs);
    }
    case K::kAnd:
    case K::kOr: {
      const bool is_and = c.kind() == K::kAnd;
      std::vector<std::string> parts;
      for (const Condition& t : c.terms()) {
        ASSIGN_OR_RETURN(std::string part, RenderCondition(t, b));
        if (part.empty()) {  // an Always term
          if (!is_and) return always_or(kTrue);
          continue;
        }
        parts.push_back(absl::StrCat("(", part, ")"));
      }
      if (parts.empty()) return is_and ? std::string() : always_or(kFalse);  // And() true, Or() false
      return absl::StrJoin(parts, is_and ? " AND " : " OR ");
    } break;
    case K::kNot: {
      ASSIGN_OR_RETURN(std::string inner, RenderCondition(c.terms().at(0), b));
      if (inner.empty()) return always_or(kFalse);
      return absl::StrCat("NOT (", inner, ")");
    }
  }
  return absl::InvalidArgumentError("unknown condition kind");
}

absl::StatusOr<std::string> RenderUpdate(const std::vector<UpdateOp>& ops, ExpressionBuilder& b) {
  std::vector<std::string> sets;
  std::vector<std::string> removes;
  std::set<std::string> seen;
  for (const UpdateOp& op : ops) {
    if (IsKeyAttribute(op.path.name)) {
      return absl::InvalidArgumentError(absl::StrCat("attribute '", op.path.name, "' is the table key"));
    }
    // DynamoDB refuses two clauses on one path, or on a map and a path into it.
    const std::string whole = op.path.name;
    const std::string full = op.path.ToString();
    if (seen.contains(full) || seen.contains(whole) || (!op.path.key && seen.contains(whole + "."))) {
      return absl::InvalidArgumentError(absl::StrCat("two update operations touch '", full, "'"));
    }
    seen.insert(full);
    if (op.path.key) seen.insert(whole + ".");
    const std::string path = b.Path(op.path);
    switch (op.kind) {
      case UpdateOp::Kind::kSet: {
        ASSIGN_OR_RETURN(std::string v, b.Value(op.value));
        sets.push_back(absl::StrCat(path, " = ", v));
        break;
      }
      case UpdateOp::Kind::kAdd: {
        if (!op.value.is_number()) return absl::InvalidArgumentError("ADD needs a number");
        ASSIGN_OR_RETURN(std::string zero, b.Value(AttributeValue(int64_t{0})));
        ASSIGN_OR_RETURN(std::string v, b.Value(op.value));
        sets.push_back(absl::StrCat(path, " = if_not_exists(", path, ", ", zero, ") + ", v));
        break;
      }
      case UpdateOp::Kind::kRemove:
        removes.push_back(path);
        break;
    }
  }
  std::string out;
  if (!sets.empty()) absl::StrAppend(&out, "SET ", absl::StrJoin(sets, ", "));
  if (!removes.empty()) absl::StrAppend(&out, out.empty() ? "" : " ", "REMOVE ", absl::StrJoin(removes, ", "));
  return out;
}

}  // namespace toolgate::store::dynamodb
