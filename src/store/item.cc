#include "toolgate/store/item.h"

#include <cmath>
#include <limits>

namespace toolgate::store {

bool operator==(const AttributeValue& a, const AttributeValue& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return a.as_number() == b.as_number();
  }
  return a.variant() == b.variant();
}

const AttributeValue* Find(const Item& item, const AttributePath& path) {
  auto it = item.find(path.name);
  if (it == item.end()) return nullptr;
  if (!path.key) return &it->second;
  if (!it->second.is_map()) return nullptr;
  const AttributeMap& m = it->second.as_map();
  auto inner = m.find(*path.key);
  return inner == m.end() ? nullptr : &inner->second;
}

std::optional<std::string> GetString(const Item& item, std::string_view name) {
  auto it = item.find(name);
  if (it == item.end() || !it->second.is_string()) return std::nullopt;
  return it->second.as_string();
}

std::optional<int64_t> GetInt(const Item& item, std::string_view name) {
  auto it = item.find(name);
  if (it == item.end() || !it->second.is_number()) return std::nullopt;
  if (std::isnan(it->second.as_number())) return std::nullopt;
  return SaturatedInt(it->second);
}

int64_t SaturatedInt(const AttributeValue& number) {
  if (number.is_int()) return number.as_int();
  const double d = number.as_number();
  constexpr double kTwoTo63 = 9223372036854775808.0;
  if (std::isnan(d)) return 0;
  if (d >= kTwoTo63) return std::numeric_limits<int64_t>::max();
  if (d < -kTwoTo63) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(d);
}

std::optional<bool> GetBool(const Item& item, std::string_view name) {
  auto it = item.find(name);
  if (it == item.end() || !it->second.is_bool()) return std::nullopt;
  return it->second.as_bool();
}

const AttributeMap* GetMap(const Item& item, std::string_view name) {
  auto it = item.find(name);
  if (it == item.end() || !it->second.is_map()) return nullptr;
  return &it->second.as_map();
}

bool IsExpired(const Item& item, int64_t now_epoch_sec) {
  auto ttl = GetInt(item, kTtlAttribute);
  return ttl.has_value() && *ttl <= now_epoch_sec;
}

}  // namespace toolgate::store
