#include "toolgate/domain/request_shape.h"
#include "toolgate/domain/json_type_name.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace toolgate {

namespace {

using nlohmann::json;

bool IsUnreserved(unsigned char c) { return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~'; }

// RFC 3986 pchar minus pct-encoded (checked apart), plus "/".
bool IsPathChar(unsigned char c) {
  static constexpr std::string_view kOthers = "!$&'()*+,;=:@/";
  return IsUnreserved(c) || kOthers.find(static_cast<char>(c)) != std::string_view::npos;
}

bool IsNameStart(char c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_'; }

absl::Status TemplateError(size_t offset, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("path template, offset ", offset, ": ", std::string(what)));
}

std::string FieldPointer(std::string_view name) {
  std::string out = "/";
  for (char c : name) {
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

absl::Status InputError(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(FieldPointer(field), ": ", std::string(what)));
}

// A path field's text: a string as written, an integer (also 3.0) in decimal.
absl::StatusOr<std::string> PathFieldText(const json& input, const std::string& name) {
  auto it = input.find(name);
  if (it == input.end()) return InputError(name, "path field missing");
  const json& v = *it;
  std::string text;
  if (v.is_string()) {
    text = v.get_ref<const std::string&>();
  } else if (v.is_number_integer()) {
    text = v.dump();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    // Within ±2^63 every integral double converts exactly to int64.
    if (!std::isfinite(d) || std::trunc(d) != d || std::fabs(d) >= 9223372036854775808.0) {
      return InputError(name, "path field must be a string or integer, got number");
    }
    text = absl::StrCat(static_cast<int64_t>(d));
  } else {
    return InputError(name, absl::StrCat("path field must be a string or integer, got ", std::string(TypeNameOf(v))));
  }
  if (text.empty() || text == "." || text == "..")
    return InputError(name, "path field must not be empty, \".\" or \"..\"");
  return text;
}

// A query value's text; nullopt for null (left out).
absl::StatusOr<std::optional<std::string>> QueryFieldText(const std::string& name, const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return std::optional<std::string>();
    case json::value_t::string:
      return std::optional<std::string>(v.get_ref<const std::string&>());
    case json::value_t::boolean:
      return std::optional<std::string>(v.get<bool>() ? "true" : "false");
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return std::optional<std::string>(v.dump());
    default:
      return InputError(name, absl::StrCat("a query field must be a string, number, boolean or null, got ",
                                           std::string(TypeNameOf(v))));
  }
}

bool UsedInPath(const RequestShape& shape, const std::string& name) {
  const auto& p = shape.placeholders();
  return std::find(p.begin(), p.end(), name) != p.end();
}

}  // namespace

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c)) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

absl::StatusOr<RequestShape> ParseRequestShape(std::string_view method, std::string_view path_template) {
  RequestShape shape;
  std::string m = absl::AsciiStrToUpper(std::string(method));
  if (m.empty()) m = "POST";
  if (m != "GET" && m != "POST" && m != "PUT" && m != "PATCH" && m != "DELETE") {
    return absl::InvalidArgumentError(
        absl::StrCat("method \"", std::string(method), "\" is not one of GET, POST, PUT, PATCH, DELETE"));
  }
  shape.method_ = std::move(m);
  shape.path_template_ = std::string(path_template);
  if (path_template.empty()) return shape;
  if (path_template.front() != '/') return TemplateError(0, "must start with \"/\"");

  std::string literal;
  for (size_t i = 0; i < path_template.size();) {
    const char c = path_template[i];
    if (c == '{') {
      const size_t close = path_template.find('}', i + 1);
      if (close == std::string_view::npos) return TemplateError(i, "\"{\" without a closing \"}\"");
      const std::string_view name = path_template.substr(i + 1, close - i - 1);
      if (name.empty()) return TemplateError(i, "empty placeholder \"{}\"");
      if (!IsNameStart(name.front()) || !std::all_of(name.begin(), name.end(), IsNameChar)) {
        return TemplateError(i, "a placeholder name is a letter or \"_\" followed by letters, digits or \"_\"");
      }
      if (!literal.empty()) shape.parts_.push_back({std::move(literal), false});
      literal.clear();
      shape.parts_.push_back({std::string(name), true});
      if (std::find(shape.placeholders_.begin(), shape.placeholders_.end(), name) == shape.placeholders_.end()) {
        shape.placeholders_.emplace_back(name);
      }
      i = close + 1;
    } else if (c == '}') {
      return TemplateError(i, "\"}\" without an opening \"{\"");
    } else if (c == '%') {
      if (i + 2 >= path_template.size() || !absl::ascii_isxdigit(static_cast<unsigned char>(path_template[i + 1])) ||
          !absl::ascii_isxdigit(static_cast<unsigned char>(path_template[i + 2]))) {
        return TemplateError(i, "\"%\" must start a %XX escape");
      }
      literal.append(path_template.substr(i, 3));
      i += 3;
    } else if (c == '?' || c == '#') {
      return TemplateError(i, "a path may not hold a query or fragment (\"?\", \"#\")");
    } else if (!IsPathChar(static_cast<unsigned char>(c))) {
      return TemplateError(i, "character not allowed in a URI path (percent-encode it)");
    } else {
      literal += c;
      ++i;
    }
  }
  if (!literal.empty()) shape.parts_.push_back({std::move(literal), false});
  return shape;
}

absl::StatusOr<ShapedRequest> ShapeRequest(const RequestShape& shape, std::string_view tool_name,
                                           const nlohmann::json& input, std::string_view input_text) {
  ShapedRequest out;
  out.method = shape.method();
  const bool needs_fields = !shape.placeholders().empty() || shape.sends_query();
  if (!input.is_object()) {
    if (needs_fields) {
      return absl::InvalidArgumentError(absl::StrCat("(root): expected object, got ", std::string(TypeNameOf(input))));
    }
  }

  // The path.
  if (shape.path_template().empty()) {
    out.target = "/" + PercentEncode(tool_name);
  } else {
    for (const RequestShape::Part& part : shape.parts()) {
      if (!part.placeholder) {
        out.target += part.text;
        continue;
      }
      auto text = PathFieldText(input, part.text);
      if (!text.ok()) return text.status();
      out.target += PercentEncode(*text);
    }
  }

  try {
    if (shape.sends_query()) {
      std::string query;
      for (const auto& [name, value] : input.items()) {
        if (UsedInPath(shape, name)) continue;
        auto text = QueryFieldText(name, value);
        if (!text.ok()) return text.status();
        if (!text->has_value()) continue;
        if (!query.empty()) query += '&';
        query += PercentEncode(name);
        query += '=';
        query += PercentEncode(**text);
      }
      if (!query.empty()) {
        out.target += '?';
        out.target += query;
      }
    } else if (!input.is_object() || shape.placeholders().empty()) {
      out.body = input_text.empty() ? input.dump() : std::string(input_text);
    } else {
      json body = json::object();
      for (const auto& [name, value] : input.items()) {
        if (!UsedInPath(shape, name)) body.emplace(name, value);
      }
      out.body = body.dump();
    }
  } catch (const json::exception&) {
    // dump() refuses a string that is not UTF-8 (a parsed input never holds one).
    return absl::InvalidArgumentError("(root): a string is not valid UTF-8");
  }
  return out;
}

}  // namespace toolgate
