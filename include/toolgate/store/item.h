#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace toolgate::store {

class AttributeValue;

// Attribute name -> value. Ordered, so an item has one canonical serialization.
using AttributeMap = std::map<std::string, AttributeValue, std::less<>>;

// One attribute value of a store item: a string, a number (int64 or double), a bool or a nested map
// (DynamoDB's S, N, BOOL and M). Numbers compare by value across int and double.
class AttributeValue {
 public:
  using Variant = std::variant<std::string, int64_t, double, bool, AttributeMap>;

  AttributeValue() : value_(int64_t{0}) {}
  AttributeValue(std::string s) : value_(std::move(s)) {}         // NOLINT(google-explicit-constructor)
  AttributeValue(const char* s) : value_(std::string(s)) {}       // NOLINT(google-explicit-constructor)
  AttributeValue(std::string_view s) : value_(std::string(s)) {}  // NOLINT(google-explicit-constructor)
  AttributeValue(int64_t n) : value_(n) {}                        // NOLINT(google-explicit-constructor)
  AttributeValue(int n) : value_(int64_t{n}) {}                   // NOLINT(google-explicit-constructor)
  AttributeValue(double d) : value_(d) {}                         // NOLINT(google-explicit-constructor)
  AttributeValue(bool b) : value_(b) {}                           // NOLINT(google-explicit-constructor)
  AttributeValue(AttributeMap m) : value_(std::move(m)) {}        // NOLINT(google-explicit-constructor)

  bool is_string() const { return std::holds_alternative<std::string>(value_); }
  bool is_int() const { return std::holds_alternative<int64_t>(value_); }
  bool is_double() const { return std::holds_alternative<double>(value_); }
  bool is_number() const { return is_int() || is_double(); }
  bool is_bool() const { return std::holds_alternative<bool>(value_); }
  bool is_map() const { return std::holds_alternative<AttributeMap>(value_); }

  // REQUIRES: the matching is_*() is true.
  const std::string& as_string() const { return std::get<std::string>(value_); }
  int64_t as_int() const { return std::get<int64_t>(value_); }
  double as_number() const { return is_int() ? static_cast<double>(as_int()) : std::get<double>(value_); }
  bool as_bool() const { return std::get<bool>(value_); }
  const AttributeMap& as_map() const { return std::get<AttributeMap>(value_); }
  AttributeMap& as_map() { return std::get<AttributeMap>(value_); }

  const Variant& variant() const { return value_; }

  friend bool operator==(const AttributeValue& a, const AttributeValue& b);
  friend bool operator!=(const AttributeValue& a, const AttributeValue& b) { return !(a == b); }

 private:
  Variant value_;
};

// A store item: its attributes, without the key.
using Item = AttributeMap;

// The address of an item.
struct ItemKey {
  std::string pk;
  std::string sk;
  friend bool operator==(const ItemKey& a, const ItemKey& b) { return a.pk == b.pk && a.sk == b.sk; }
};

// A top-level attribute (`name`) or one level into a map attribute (`name.key`, e.g. `holders.<id>`).
struct AttributePath {
  std::string name;
  std::optional<std::string> key;

  static AttributePath Top(std::string name) { return {std::move(name), std::nullopt}; }
  static AttributePath In(std::string name, std::string key) { return {std::move(name), std::move(key)}; }
  std::string ToString() const { return key ? name + "." + *key : name; }
};

// Shorthand for AttributePath::Top(name), the services' most common path.
inline AttributePath Attr(std::string name) { return AttributePath::Top(std::move(name)); }

// The value at `path` in `item`, or nullptr when absent.
const AttributeValue* Find(const Item& item, const AttributePath& path);

// Typed accessors for services reading items they wrote. Absent or of another type -> nullopt.
// GetInt truncates a fractional number and saturates one beyond int64's range (SaturatedInt).
std::optional<std::string> GetString(const Item& item, std::string_view name);
std::optional<int64_t> GetInt(const Item& item, std::string_view name);
std::optional<bool> GetBool(const Item& item, std::string_view name);
const AttributeMap* GetMap(const Item& item, std::string_view name);
// A number (is_number()) as an int64: truncated, beyond int64's range the nearest end, NaN 0. For
// numbers read from the store, where a plain conversion of a damaged value would be undefined.
int64_t SaturatedInt(const AttributeValue& number);

// The reserved attribute holding an item's expiry in epoch seconds (section 3 of the design).
inline constexpr std::string_view kTtlAttribute = "ttl";

// True when `item` carries a `ttl` that is at or before `now_epoch_sec`: readers treat it as absent.
bool IsExpired(const Item& item, int64_t now_epoch_sec);

}  // namespace toolgate::store
