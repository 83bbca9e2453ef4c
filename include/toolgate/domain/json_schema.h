#pragma once

// A tool's `input_schema` (design §13): a small JSON Schema (draft 2020-12 subset) validator. The
// schema is checked once, at config load, and compiled into a tree; each call's input is then
// validated against the tree without looking at the schema document again. Pure: no I/O.
//
// Supported keywords:
//   type                 a name or an array of distinct names: object, array, string, integer, number,
//                        boolean, null ("integer" is any number without a fractional part, 3.0 too)
//   enum, const          the value equals one of the listed values / the constant (numbers by value)
//   minimum, maximum, exclusiveMinimum, exclusiveMaximum      numbers (a non-number passes)
//   minLength, maxLength                                      strings, counted in Unicode code points
//   minItems, maxItems, items (one schema for every element)  arrays
//   required, properties, additionalProperties (bool or schema)  objects
//   annotations, accepted and ignored: $schema, $id, $comment, title, description, default, examples,
//   format, deprecated, readOnly, writeOnly
// A schema is an object of those keywords or a boolean (`true` accepts anything, `false` nothing).
// Any other keyword (a typo such as "requird" included) is refused by Compile, so a schema never
// silently checks less than its author meant.
//
// Why not a library: Debian 12's JSON Schema library for C++ is libvalijson-dev (valijson 1.0,
// header-only, maintained, with an nlohmann adapter). It was weighed and not taken because
//   - it ignores keywords it does not know, so a typo ("requird") silently checks nothing; refusing
//     them would need our own keyword walk over every schema anyway;
//   - its errors name a location as a list of segments ("<root>", "[deal_id]", "[3]"), a missing
//     property at its parent's location, and several errors per failure (an item's, then its
//     array's); the 400 invalid_input contract (one RFC 6901 pointer, the first failing location)
//     would need a translation layer over them;
//   - it parses drafts 3, 4 and 7, not 2020-12, throws exceptions where the project returns
//     absl::Status, and brings `pattern` on std::regex (recursive, so a long agent input could
//     exhaust the stack) and remote $ref fetching, which tool inputs do not need.
// The §13 subset here is ~430 lines with its own tests (json_schema_test), returns the pointer
// directly and compiles once at load. If schemas ever need $ref, oneOf or pattern, revisit.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace toolgate {

// Where and why a value does not match its schema. Neither field ever holds (part of) the value: an
// input may carry secrets or personal data, and this text ends up in the caller's error response.
struct SchemaViolation {
  // RFC 6901 JSON Pointer of the first failing location: "" is the whole value, "/deal_id" a
  // top-level field (missing or wrong), "/items/3/qty" deeper; "~" and "/" in names are written
  // "~0" and "~1".
  std::string pointer;
  // "<pointer>: <what is wrong>", e.g. "/deal_id: required property missing",
  // "/amount: expected number, got string", "/qty: less than minimum 1". The whole value's pointer
  // is shown as "(root)".
  std::string message;
};

// A compiled schema. Immutable once compiled: every method is const and safe to call from any
// number of threads at once. Copies are cheap and share the compiled tree.
class JsonSchema {
 public:
  // Schemas nested deeper than this (a "properties" or "items" level is one step) are refused.
  static constexpr int kMaxDepth = 32;

  // Checks `schema` and compiles it. InvalidArgument, naming the location inside the schema as a
  // JSON Pointer, when the schema is not an object or boolean, uses an unsupported keyword, gives a
  // keyword a value of the wrong type ("type": "strng", "required": "id", "minLength": -1), lists a
  // type or required name twice, has an empty "enum", or nests deeper than kMaxDepth. The message may
  // quote the schema (configuration, not caller data).
  static absl::StatusOr<JsonSchema> Compile(const nlohmann::json& schema);

  // nullopt when `value` matches; otherwise the first violation found. The checks run in a fixed
  // order, so the same input always gets the same answer: at each location first the keywords on the
  // value itself (type, enum, const, numeric limits, length, item count); then, for an object, the
  // "required" names in the schema's order, then each present property in key order (nlohmann's
  // objects keep keys sorted) against its "properties" schema or "additionalProperties"; for an
  // array, the elements in order against "items". Allocates only when it reports a violation.
  std::optional<SchemaViolation> Validate(const nlohmann::json& value) const;

  // The schema as given to Compile (for publishing it, e.g. as an MCP tool's inputSchema).
  const nlohmann::json& document() const;

  // Whether the top-level "properties" names `name` (config checks each path placeholder with it).
  bool HasProperty(std::string_view name) const;
  // Whether the top-level "required" lists `name`.
  bool Requires(std::string_view name) const;

  struct Node;  // the compiled tree (json_schema.cc)

 private:
  JsonSchema(std::shared_ptr<const nlohmann::json> document, std::shared_ptr<const Node> root);

  std::shared_ptr<const nlohmann::json> document_;
  std::shared_ptr<const Node> root_;
};

}  // namespace toolgate
