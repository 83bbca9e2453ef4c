#include "toolgate/store/item_json.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// How many bytes AppendString writes for a byte: 1 copied, 2 for nlohmann's short escapes (\" \\ \b
// \f \n \r \t), 6 for another control character (\u00xx); 0 for a byte above 0x7f, whose string
// goes to nlohmann.
constexpr std::array<uint8_t, 256> kWidths = [] {
  std::array<uint8_t, 256> widths{};
  for (int b = 0; b < 256; ++b) {
    const bool short_escape = b == '"' || b == '\\' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t';
    widths[b] = b >= 0x80 ? 0 : short_escape ? 2 : b < 0x20 ? 6 : 1;
  }
  return widths;
}();

// Calls `at(i)` for each byte s[i] that is not copied as it is (a width other than 1), in order,
// until it returns false; whether none did. Sixteen bytes at a time where SSE2 is there (the last
// few through a padded copy): the strings written are mostly JSON text — a call's events, input and
// result — whose runs between quotes are short, and a byte-at-a-time scan of every byte, twice, was
// ~6 % of a call's instructions (a quarter of that is gone; what is left is mostly the keys' calls).
template <typename At>
bool ForEachSpecial(std::string_view s, At&& at) {
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20);
  for (size_t base = 0; base < s.size(); base += 16) {
    __m128i v;
    if (base + 16 <= s.size()) {
      v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + base));
    } else {
      alignas(16) char tail[16];
      std::memset(tail, 'a', sizeof tail);
      std::memcpy(tail, s.data() + base, s.size() - base);
      v = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
    }
    // Compared as signed bytes, one above 0x7f is negative, so "below 0x20" takes it in as well.
    const __m128i special =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)), _mm_cmplt_epi8(v, space));
    for (auto mask = static_cast<unsigned>(_mm_movemask_epi8(special)); mask != 0; mask &= mask - 1) {
      if (!at(base + static_cast<size_t>(__builtin_ctz(mask)))) return false;
    }
  }
#else
  for (size_t i = 0; i < s.size(); ++i) {
    if (kWidths[static_cast<unsigned char>(s[i])] != 1 && !at(i)) return false;
  }
#endif
  return true;
}

// A string as nlohmann writes it (ensure_ascii off): ASCII written here, with nlohmann's escapes;
// a string with any byte above 0x7f goes through nlohmann itself (UTF-8 checked, invalid bytes
// replaced). Two passes: the written length first, then the bytes straight into the space made,
// the runs between the bytes to escape copied whole.
void AppendString(std::string& out, std::string_view s) {
  size_t width = s.size() + 2;  // and the quotes
  const bool ascii = ForEachSpecial(s, [&](size_t i) {
    const uint8_t w = kWidths[static_cast<unsigned char>(s[i])];
    width += w - 1;
    return w != 0;
  });
  if (!ascii) {
    out += Dump(nlohmann::json(std::string(s)));
    return;
  }
  const size_t start = out.size();
  out.resize(start + width);
  char* p = out.data() + start;
  *p++ = '"';
  size_t from = 0;  // the start of the run not copied yet
  if (width != s.size() + 2) {
    static constexpr char kHex[] = "0123456789abcdef";
    ForEachSpecial(s, [&](size_t i) {
      s.copy(p, i - from, from);
      p += i - from;
      from = i + 1;
      const auto u = static_cast<unsigned char>(s[i]);
      *p++ = '\\';
      if (kWidths[u] == 2) {
        *p++ = u == '"'    ? '"'
               : u == '\\' ? '\\'
               : u == '\b' ? 'b'
               : u == '\f' ? 'f'
               : u == '\n' ? 'n'
               : u == '\r' ? 'r'
                           : 't';
      } else {
        *p++ = 'u';
        *p++ = '0';
        *p++ = '0';
        *p++ = kHex[u >> 4];
        *p++ = kHex[u & 0xf];
      }
      return true;
    });
  }
  s.copy(p, s.size() - from, from);
  p += s.size() - from;
  *p = '"';
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

void AppendJsonString(std::string& out, std::string_view s) { AppendString(out, s); }

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

namespace {

// Builds an item straight from the parser's events (no JSON tree, then a copy of it): the store
// reads an item for every conditional write it does not find cached.
class ItemBuilder final : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool null() override { return Unsupported("null"); }
  bool boolean(bool v) override { return Value(AttributeValue(v)); }
  bool number_integer(number_integer_t v) override { return Value(AttributeValue(static_cast<int64_t>(v))); }
  bool number_unsigned(number_unsigned_t v) override {
    if (v > static_cast<uint64_t>(INT64_MAX)) {
      return Fail(absl::StrCat("attribute '", key_, "' holds an integer beyond int64"));
    }
    return Value(AttributeValue(static_cast<int64_t>(v)));
  }
  bool number_float(number_float_t v, const string_t& /*text*/) override { return Value(AttributeValue(v)); }
  bool string(string_t& v) override { return Value(AttributeValue(std::move(v))); }
  bool binary(binary_t& /*v*/) override { return Unsupported("binary"); }
  bool start_object(std::size_t /*size*/) override {
    if (stack_.empty()) {
      if (started_) return Fail("stored item is not a JSON object");
      started_ = true;
      stack_.push_back(&item_);
      return true;
    }
    if (stack_.size() >= kMaxDepth) return Fail("item nests deeper than 32 levels");
    auto [it, fresh] = stack_.back()->insert_or_assign(std::move(key_), AttributeValue(AttributeMap{}));
    stack_.push_back(&it->second.as_map());
    return true;
  }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t /*size*/) override {
    if (stack_.empty()) return Fail("stored item is not a JSON object");
    return Unsupported("array");
  }
  bool end_array() override { return false; }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& /*ex*/) override {
    return Fail("stored item is not valid JSON");
  }

  absl::StatusOr<Item> Result() && {
    if (!error_.ok()) return error_;
    if (!started_ || !stack_.empty()) return absl::DataLossError("stored item is not a JSON object");
    return std::move(item_);
  }

 private:
  bool Value(AttributeValue v) {
    if (stack_.empty()) return Fail("stored item is not a JSON object");
    stack_.back()->insert_or_assign(std::move(key_), std::move(v));  // a repeated name: the last wins
    return true;
  }
  bool Unsupported(std::string_view type) {
    if (stack_.empty()) return Fail("stored item is not a JSON object");
    return Fail(absl::StrCat("attribute '", key_, "' has unsupported JSON type ", std::string(type)));
  }
  bool Fail(std::string message) {
    if (error_.ok()) error_ = absl::DataLossError(std::move(message));
    return false;
  }

  Item item_;
  std::vector<AttributeMap*> stack_;  // the maps being filled, innermost last
  std::string key_;
  bool started_ = false;
  absl::Status error_;
};

}  // namespace

absl::StatusOr<Item> ItemFromJsonText(std::string_view text) {
  ItemBuilder builder;
  const bool parsed = nlohmann::json::sax_parse(text, &builder, nlohmann::json::input_format_t::json, /*strict=*/true);
  absl::StatusOr<Item> item = std::move(builder).Result();
  if (!parsed && item.ok()) return absl::DataLossError("stored item is not valid JSON");
  return item;
}

}  // namespace toolgate::store
