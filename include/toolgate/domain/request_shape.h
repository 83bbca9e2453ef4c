#pragma once

// How a tool call becomes an HTTP request (design §13 "Request shape per tool"): the method, the
// path below the connector's base_url with the input's fields in its placeholders, the query string
// and the JSON body. Checked once at config load (ParseRequestShape), applied per call
// (ShapeRequest). Pure: no I/O.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace toolgate {

// A tool's method and path template, parsed. Immutable: safe to share between threads. The default
// (a default-constructed value) is the design's default shape: POST /{tool_name}, input as the body.
class RequestShape {
 public:
  RequestShape() = default;

  // "GET", "POST", "PUT", "PATCH" or "DELETE" (upper case).
  const std::string& method() const { return method_; }
  // The template as configured (e.g. "/v2/deals/{deal_id}"); empty: the path is "/{tool_name}".
  const std::string& path_template() const { return path_template_; }
  // The distinct placeholder names, in order of first appearance. Config checks each one against the
  // tool's input_schema (JsonSchema::HasProperty) when the tool has one.
  const std::vector<std::string>& placeholders() const { return placeholders_; }
  // GET and DELETE send the fields outside the path as the query string, and no body; the other
  // methods send them as the JSON body.
  bool sends_query() const { return method_ == "GET" || method_ == "DELETE"; }

  // The template cut into literal text and placeholders, in order.
  struct Part {
    std::string text;  // the literal text, or the placeholder's name
    bool placeholder = false;
  };
  const std::vector<Part>& parts() const { return parts_; }

 private:
  friend absl::StatusOr<RequestShape> ParseRequestShape(std::string_view method, std::string_view path_template);

  std::string method_ = "POST";
  std::string path_template_;
  std::vector<Part> parts_;
  std::vector<std::string> placeholders_;
};

// Checks a tool's `method` and `path` (config load). `method` is matched case-insensitively and
// stored upper case; empty means POST. `path_template` empty means the default "/{tool_name}";
// otherwise it starts with "/", holds only characters allowed in a URI path (RFC 3986 pchar and
// "/"; a "%" starts a %XX escape; no "?" or "#") and placeholders "{name}" with name
// [A-Za-z_][A-Za-z0-9_]*. InvalidArgument, naming the problem and its offset in the template, for
// an unknown method, a missing leading "/", an unbalanced or empty brace, a bad placeholder name or
// a character not allowed in a path.
absl::StatusOr<RequestShape> ParseRequestShape(std::string_view method, std::string_view path_template);

// The request for one call.
struct ShapedRequest {
  std::string method;
  // The path below base_url, plus "?query" when there is one: append it to base_url's path.
  std::string target;
  // The JSON body; empty: no body (GET and DELETE).
  std::string body;
};

// Builds the request for a call of `tool_name` with `input`:
//  - target path: the template with each {f} replaced by the input's top-level field f, a string (as
//    written) or an integer (a number without fractional part, written without one), percent-encoded
//    as a path segment (PercentEncode); without a template, "/" + the encoded tool name.
//  - fields used in the path are left out of the query and the body.
//  - GET/DELETE: the remaining top-level fields as the query string, "key=value" joined by "&", in
//    the input object's key order (nlohmann keeps object keys sorted, so: sorted by key, byte-wise);
//    keys and values percent-encoded like path segments; strings as written, numbers as nlohmann
//    dumps them, booleans true/false; a null field is left out. No body.
//  - other methods: the input minus the path fields as the JSON body ("{}" when nothing is left). An
//    input that is not an object is sent unchanged as the body when the template has no placeholders.
// InvalidArgument (the caller's `invalid_input`) when a path field is missing, is not a string or
// integer, or is "", "." or ".." (a dot segment would move the request to another resource); when a
// GET/DELETE field is an object or array; or when the input is not an object and the shape needs
// its fields. The message names the field as a JSON Pointer ("/deal_id: ...") and never holds a
// value from the input.
// `input_text`, when not empty, is `input.dump()` made already: sent as it is where the whole input
// is the body.
absl::StatusOr<ShapedRequest> ShapeRequest(const RequestShape& shape, std::string_view tool_name,
                                           const nlohmann::json& input, std::string_view input_text = {});

// RFC 3986 percent-encoding for a path segment or a query key/value: every byte except the
// unreserved ALPHA DIGIT "-" "." "_" "~" becomes %XX (upper-case hex), so "/" is "%2F", a space
// "%20", and a non-ASCII character its UTF-8 bytes, each escaped.
std::string PercentEncode(std::string_view s);

}  // namespace toolgate
