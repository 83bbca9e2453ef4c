#include "toolgate/domain/json_schema.h"
#include "toolgate/domain/json_type_name.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace toolgate {

namespace {

using nlohmann::json;

// One bit per JSON Schema type. A number with no fractional part is kInteger, any other number
// kNumber; the type name "number" allows both.
enum TypeBit : uint8_t {
  kNull = 1 << 0,
  kBoolean = 1 << 1,
  kObject = 1 << 2,
  kArray = 1 << 3,
  kString = 1 << 4,
  kInteger = 1 << 5,
  kNumber = 1 << 6,
  kAnyType = 0x7f,
};

struct TypeName {
  std::string_view name;
  uint8_t bits;
};
// In the order "expected ..." lists them.
constexpr TypeName kTypeNames[] = {
    {"object", kObject},
    {"array", kArray},
    {"string", kString},
    {"integer", kInteger},
    {"number", kInteger | kNumber},
    {"boolean", kBoolean},
    {"null", kNull},
};

bool IsIntegral(const json& v) {
  if (v.is_number_integer()) return true;  // signed and unsigned
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && std::trunc(d) == d;
}

uint8_t TypeBitOf(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return kNull;
    case json::value_t::boolean:
      return kBoolean;
    case json::value_t::object:
      return kObject;
    case json::value_t::array:
      return kArray;
    case json::value_t::string:
      return kString;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return kInteger;
    case json::value_t::number_float:
      return IsIntegral(v) ? kInteger : kNumber;
    default:
      return 0;  // binary, discarded: matches no type
  }
}

// The name a value's type is reported by ("got ..."): a float is a number even when integral.

std::string ExpectedTypes(uint8_t bits) {
  std::string out;
  for (const TypeName& t : kTypeNames) {
    if ((bits & t.bits) != t.bits) continue;
    if (t.bits == kInteger && (bits & kNumber)) continue;  // "number" says it
    if (!out.empty()) out += " or ";
    out += t.name;
  }
  return out;
}

// -1, 0 or 1 as a < b, a == b, a > b; both are numbers. Integers compare exactly; with a float on
// either side, long double (64-bit mantissa on x86-64: exact for every int64).
int CompareNumbers(const json& a, const json& b) {
  if (a.is_number_integer() && b.is_number_integer()) {
    const bool a_unsigned = a.is_number_unsigned();
    const bool b_unsigned = b.is_number_unsigned();
    if (a_unsigned && b_unsigned) {
      const auto x = a.get<uint64_t>(), y = b.get<uint64_t>();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    if (!a_unsigned && !b_unsigned) {
      const auto x = a.get<int64_t>(), y = b.get<int64_t>();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    // One signed, one unsigned: a negative signed is below every unsigned.
    if (a_unsigned) {
      const auto y = b.get<int64_t>();
      if (y < 0) return 1;
      const auto x = a.get<uint64_t>(), yu = static_cast<uint64_t>(y);
      return x < yu ? -1 : (x > yu ? 1 : 0);
    }
    const auto x = a.get<int64_t>();
    if (x < 0) return -1;
    const auto xu = static_cast<uint64_t>(x), y = b.get<uint64_t>();
    return xu < y ? -1 : (xu > y ? 1 : 0);
  }
  const long double x = a.get<long double>(), y = b.get<long double>();
  return x < y ? -1 : (x > y ? 1 : 0);
}

// Unicode code points in valid UTF-8 (nlohmann checks UTF-8 when it parses): every byte that is not
// a continuation byte starts one.
size_t CodePoints(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// RFC 6901: "~" is written "~0", "/" is written "~1".
std::string EscapePointerToken(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

struct JsonSchema::Node {
  struct Property {
    std::string name;
    std::unique_ptr<Node> schema;
  };

  bool reject_all = false;  // the schema `false`
  uint8_t types = kAnyType;
  std::vector<json> enum_values;  // empty: no "enum" (Compile refuses an empty one)
  std::optional<json> const_value;
  std::optional<json> minimum, maximum, exclusive_minimum, exclusive_maximum;  // numbers
  std::optional<size_t> min_length, max_length, min_items, max_items;
  std::vector<std::string> required;
  std::vector<Property> properties;  // sorted by name
  std::unique_ptr<Node> additional;  // null: any additional property is allowed
  std::unique_ptr<Node> items;       // null: any element is allowed

  const Node* FindProperty(std::string_view name) const {
    auto it = std::lower_bound(properties.begin(), properties.end(), name,
                               [](const Property& p, std::string_view n) { return p.name < n; });
    return it != properties.end() && it->name == name ? it->schema.get() : nullptr;
  }
};

namespace {

using Node = JsonSchema::Node;

// ---------------------------------------------------------------- compiling

absl::Status SchemaError(const std::string& where, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("input_schema ", where.empty() ? std::string("(root)") : where, ": ", std::string(what)));
}

bool IsAnnotation(std::string_view keyword) {
  static constexpr std::string_view kAnnotations[] = {
      "$schema",  "$id",    "$comment",   "title",    "description", "default",
      "examples", "format", "deprecated", "readOnly", "writeOnly",
  };
  return std::find(std::begin(kAnnotations), std::end(kAnnotations), keyword) != std::end(kAnnotations);
}

absl::StatusOr<size_t> NonNegativeInteger(const json& v, const std::string& where) {
  if (!v.is_number() || !IsIntegral(v) || CompareNumbers(v, json(0)) < 0) {
    return SchemaError(where, "must be a non-negative integer");
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    return d >= static_cast<double>(std::numeric_limits<size_t>::max()) ? std::numeric_limits<size_t>::max()
                                                                        : static_cast<size_t>(d);
  }
  return v.is_number_unsigned() ? static_cast<size_t>(v.get<uint64_t>()) : static_cast<size_t>(v.get<int64_t>());
}

absl::StatusOr<uint8_t> TypeBits(const json& v, const std::string& where) {
  auto one = [&](const json& name, const std::string& at) -> absl::StatusOr<uint8_t> {
    if (!name.is_string()) return SchemaError(at, "a type must be a string");
    const auto& s = name.get_ref<const std::string&>();
    for (const TypeName& t : kTypeNames) {
      if (t.name == s) return t.name == "number" ? static_cast<uint8_t>(kInteger | kNumber) : t.bits;
    }
    return SchemaError(
        at, absl::StrCat("unknown type \"", s, "\" (object, array, string, integer, number, boolean or null)"));
  };
  if (!v.is_array()) return one(v, where);
  if (v.empty()) return SchemaError(where, "must name at least one type");
  uint8_t bits = 0;
  std::vector<std::string_view> seen;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string at = absl::StrCat(where, "/", i);
    auto b = one(v[i], at);
    if (!b.ok()) return b.status();
    const auto& name = v[i].get_ref<const std::string&>();
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) return SchemaError(at, "type listed twice");
    seen.push_back(name);
    bits |= *b;
  }
  return bits;
}

absl::StatusOr<std::unique_ptr<Node>> CompileNode(const json& s, const std::string& where, int depth);

absl::Status CompileKeyword(Node& node, std::string_view key, const json& v, const std::string& where, int depth) {
  if (key == "type") {
    auto bits = TypeBits(v, where);
    if (!bits.ok()) return bits.status();
    node.types = *bits;
  } else if (key == "enum") {
    if (!v.is_array() || v.empty()) return SchemaError(where, "must be a non-empty array");
    node.enum_values.assign(v.begin(), v.end());
  } else if (key == "const") {
    node.const_value = v;
  } else if (key == "minimum" || key == "maximum" || key == "exclusiveMinimum" || key == "exclusiveMaximum") {
    if (!v.is_number()) return SchemaError(where, "must be a number");
    if (v.is_number_float() && !std::isfinite(v.get<double>())) return SchemaError(where, "must be finite");
    (key == "minimum"            ? node.minimum
     : key == "maximum"          ? node.maximum
     : key == "exclusiveMinimum" ? node.exclusive_minimum
                                 : node.exclusive_maximum) = v;
  } else if (key == "minLength" || key == "maxLength" || key == "minItems" || key == "maxItems") {
    auto n = NonNegativeInteger(v, where);
    if (!n.ok()) return n.status();
    (key == "minLength"   ? node.min_length
     : key == "maxLength" ? node.max_length
     : key == "minItems"  ? node.min_items
                          : node.max_items) = *n;
  } else if (key == "required") {
    if (!v.is_array()) return SchemaError(where, "must be an array of property names");
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string at = absl::StrCat(where, "/", i);
      if (!v[i].is_string()) return SchemaError(at, "must be a string");
      const auto& name = v[i].get_ref<const std::string&>();
      if (std::find(node.required.begin(), node.required.end(), name) != node.required.end()) {
        return SchemaError(at, "property listed twice");
      }
      node.required.push_back(name);
    }
  } else if (key == "properties") {
    if (!v.is_object()) return SchemaError(where, "must be an object of schemas");
    for (const auto& [name, sub] : v.items()) {  // keys come sorted: `properties` stays sorted
      auto compiled = CompileNode(sub, absl::StrCat(where, "/", EscapePointerToken(name)), depth + 1);
      if (!compiled.ok()) return compiled.status();
      node.properties.push_back({name, std::move(*compiled)});
    }
  } else if (key == "additionalProperties" || key == "items") {
    if (key == "items" && v.is_array()) {
      return SchemaError(where, "must be one schema (an array of schemas is prefixItems, not supported)");
    }
    auto compiled = CompileNode(v, where, depth + 1);
    if (!compiled.ok()) return compiled.status();
    (key == "items" ? node.items : node.additional) = std::move(*compiled);
  } else if (!IsAnnotation(key)) {
    return SchemaError(where, "unsupported keyword");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Node>> CompileNode(const json& s, const std::string& where, int depth) {
  if (depth > JsonSchema::kMaxDepth) {
    return SchemaError(where, absl::StrCat("nested deeper than ", JsonSchema::kMaxDepth, " levels"));
  }
  auto node = std::make_unique<Node>();
  if (s.is_boolean()) {
    node->reject_all = !s.get<bool>();
    return node;
  }
  if (!s.is_object()) return SchemaError(where, "a schema must be an object or a boolean");
  for (const auto& [key, v] : s.items()) {
    absl::Status st = CompileKeyword(*node, key, v, absl::StrCat(where, "/", EscapePointerToken(key)), depth);
    if (!st.ok()) return st;
  }
  return node;
}

// ---------------------------------------------------------------- validating

// What Check reports: the failing location's pointer tokens, innermost first (each frame adds its
// own on the way out), and what is wrong there.
struct Failure {
  std::vector<std::string> tokens;
  std::string what;
};

bool Fail(Failure& f, std::string what) {
  f.what = std::move(what);
  return false;
}

bool Check(const Node& n, const json& v, Failure& f);

bool CheckObject(const Node& n, const json& v, Failure& f) {
  for (const std::string& name : n.required) {
    if (!v.contains(name)) {
      f.tokens.push_back(name);
      return Fail(f, "required property missing");
    }
  }
  if (n.properties.empty() && !n.additional) return true;
  // The value's keys and `properties` are both sorted byte-wise (nlohmann's objects are std::maps):
  // one merge walk pairs them.
  auto p = n.properties.begin();
  for (const auto& [name, member] : v.items()) {
    while (p != n.properties.end() && p->name < name) ++p;
    const Node* sub = p != n.properties.end() && p->name == name ? p->schema.get() : n.additional.get();
    if (sub == nullptr) continue;
    if (sub->reject_all && sub == n.additional.get()) {
      f.tokens.push_back(name);
      return Fail(f, "property not allowed");
    }
    if (!Check(*sub, member, f)) {
      f.tokens.push_back(name);
      return false;
    }
  }
  return true;
}

bool Check(const Node& n, const json& v, Failure& f) {
  if (n.reject_all) return Fail(f, "not allowed by the schema");
  if ((n.types & TypeBitOf(v)) == 0) {
    return Fail(f, absl::StrCat("expected ", ExpectedTypes(n.types), ", got ", std::string(TypeNameOf(v))));
  }
  if (!n.enum_values.empty() && std::find(n.enum_values.begin(), n.enum_values.end(), v) == n.enum_values.end()) {
    return Fail(f, n.enum_values.size() == 1
                       ? std::string("not the allowed value")
                       : absl::StrCat("not one of the ", n.enum_values.size(), " allowed values"));
  }
  if (n.const_value && v != *n.const_value) return Fail(f, "not the constant value");
  switch (v.type()) {
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      if (n.minimum && CompareNumbers(v, *n.minimum) < 0) return Fail(f, "less than minimum " + n.minimum->dump());
      if (n.maximum && CompareNumbers(v, *n.maximum) > 0) return Fail(f, "greater than maximum " + n.maximum->dump());
      if (n.exclusive_minimum && CompareNumbers(v, *n.exclusive_minimum) <= 0) {
        return Fail(f, "not greater than exclusiveMinimum " + n.exclusive_minimum->dump());
      }
      if (n.exclusive_maximum && CompareNumbers(v, *n.exclusive_maximum) >= 0) {
        return Fail(f, "not less than exclusiveMaximum " + n.exclusive_maximum->dump());
      }
      return true;
    case json::value_t::string:
      if (n.min_length || n.max_length) {
        const size_t length = CodePoints(v.get_ref<const std::string&>());
        if (n.min_length && length < *n.min_length)
          return Fail(f, absl::StrCat("shorter than minLength ", *n.min_length));
        if (n.max_length && length > *n.max_length)
          return Fail(f, absl::StrCat("longer than maxLength ", *n.max_length));
      }
      return true;
    case json::value_t::array:
      if (n.min_items && v.size() < *n.min_items)
        return Fail(f, absl::StrCat("fewer items than minItems ", *n.min_items));
      if (n.max_items && v.size() > *n.max_items)
        return Fail(f, absl::StrCat("more items than maxItems ", *n.max_items));
      if (n.items) {
        for (size_t i = 0; i < v.size(); ++i) {
          if (!Check(*n.items, v[i], f)) {
            f.tokens.push_back(absl::StrCat(i));
            return false;
          }
        }
      }
      return true;
    case json::value_t::object:
      return CheckObject(n, v, f);
    default:
      return true;
  }
}

}  // namespace

JsonSchema::JsonSchema(std::shared_ptr<const nlohmann::json> document, std::shared_ptr<const Node> root)
    : document_(std::move(document)), root_(std::move(root)) {}

absl::StatusOr<JsonSchema> JsonSchema::Compile(const nlohmann::json& schema) {
  auto root = CompileNode(schema, "", 0);
  if (!root.ok()) return root.status();
  return JsonSchema(std::make_shared<const json>(schema), std::shared_ptr<const Node>(std::move(*root)));
}

std::optional<SchemaViolation> JsonSchema::Validate(const nlohmann::json& value) const {
  Failure f;
  if (Check(*root_, value, f)) return std::nullopt;
  SchemaViolation violation;
  for (auto it = f.tokens.rbegin(); it != f.tokens.rend(); ++it) {
    violation.pointer += '/';
    violation.pointer += EscapePointerToken(*it);
  }
  violation.message = absl::StrCat(violation.pointer.empty() ? std::string("(root)") : violation.pointer, ": ", f.what);
  return violation;
}

const nlohmann::json& JsonSchema::document() const { return *document_; }

bool JsonSchema::HasProperty(std::string_view name) const { return root_->FindProperty(name) != nullptr; }

bool JsonSchema::Requires(std::string_view name) const {
  return std::find(root_->required.begin(), root_->required.end(), name) != root_->required.end();
}

}  // namespace toolgate
