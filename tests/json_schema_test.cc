// JsonSchema (design §13 input_schema): every supported keyword passing and failing, the first
// failing location as an RFC 6901 pointer, messages that never hold the value, and the schema
// errors Compile reports at config load.

#include "toolgate/domain/json_schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace toolgate {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

struct Case {
  const char* name;
  const char* schema;
  const char* value;
  const char* pointer;  // nullptr: the value matches
  const char* message;  // the expected message when it does not
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class SchemaCase : public ::testing::TestWithParam<Case> {};

TEST_P(SchemaCase, ValidatesAsExpected) {
  const Case& c = GetParam();
  auto schema = JsonSchema::Compile(json::parse(c.schema));
  ASSERT_TRUE(schema.ok()) << schema.status();
  auto violation = schema->Validate(json::parse(c.value));
  if (c.pointer == nullptr) {
    EXPECT_FALSE(violation.has_value()) << violation->message;
    return;
  }
  ASSERT_TRUE(violation.has_value()) << "accepted " << c.value;
  EXPECT_EQ(violation->pointer, c.pointer);
  EXPECT_EQ(violation->message, c.message);
}

const Case kCases[] = {
    // type
    {"type_object_ok", R"({"type":"object"})", R"({})", nullptr, nullptr},
    {"type_object_bad", R"({"type":"object"})", R"([])", "", "(root): expected object, got array"},
    {"type_string_bad", R"({"properties":{"amount":{"type":"number"}}})", R"({"amount":"12"})", "/amount",
     "/amount: expected number, got string"},
    {"type_integer_ok", R"({"type":"integer"})", R"(7)", nullptr, nullptr},
    {"type_integer_accepts_3_0", R"({"type":"integer"})", R"(3.0)", nullptr, nullptr},
    {"type_integer_refuses_fraction", R"({"type":"integer"})", R"(3.5)", "", "(root): expected integer, got number"},
    {"type_integer_negative_ok", R"({"type":"integer"})", R"(-9223372036854775808)", nullptr, nullptr},
    {"type_integer_unsigned_ok", R"({"type":"integer"})", R"(18446744073709551615)", nullptr, nullptr},
    {"type_number_accepts_integer", R"({"type":"number"})", R"(7)", nullptr, nullptr},
    {"type_number_refuses_bool", R"({"type":"number"})", R"(true)", "", "(root): expected number, got boolean"},
    {"type_boolean_ok", R"({"type":"boolean"})", R"(false)", nullptr, nullptr},
    {"type_null_ok", R"({"type":"null"})", R"(null)", nullptr, nullptr},
    {"type_null_bad", R"({"type":"null"})", R"(0)", "", "(root): expected null, got integer"},
    {"type_array_ok", R"({"type":"array"})", R"([1])", nullptr, nullptr},
    {"type_list_ok", R"({"type":["string","null"]})", R"(null)", nullptr, nullptr},
    {"type_list_bad", R"({"type":["null","string"]})", R"(1)", "", "(root): expected string or null, got integer"},
    {"type_list_integer_number", R"({"type":["integer","number"]})", R"(true)", "",
     "(root): expected number, got boolean"},
    // enum, const
    {"enum_ok", R"({"enum":["open","won",3]})", R"("won")", nullptr, nullptr},
    {"enum_number_by_value", R"({"enum":[1,2]})", R"(2.0)", nullptr, nullptr},
    {"enum_bad", R"({"enum":["open","won","lost"]})", R"("secret-value")", "",
     "(root): not one of the 3 allowed values"},
    {"enum_object_ok", R"({"enum":[{"a":1}]})", R"({"a":1})", nullptr, nullptr},
    {"const_ok", R"({"const":"v1"})", R"("v1")", nullptr, nullptr},
    {"const_bad", R"({"const":"v1"})", R"("v2")", "", "(root): not the constant value"},
    // numeric limits
    {"minimum_ok_equal", R"({"minimum":1})", R"(1)", nullptr, nullptr},
    {"minimum_bad", R"({"minimum":1})", R"(0)", "", "(root): less than minimum 1"},
    {"minimum_float_bad", R"({"minimum":0.5})", R"(0.25)", "", "(root): less than minimum 0.5"},
    {"maximum_ok_equal", R"({"maximum":10})", R"(10.0)", nullptr, nullptr},
    {"maximum_bad", R"({"maximum":10})", R"(11)", "", "(root): greater than maximum 10"},
    {"maximum_huge_unsigned_bad", R"({"maximum":9223372036854775807})", R"(18446744073709551615)", "",
     "(root): greater than maximum 9223372036854775807"},
    {"minimum_negative_vs_unsigned", R"({"minimum":-5})", R"(18446744073709551615)", nullptr, nullptr},
    {"exclusive_minimum_ok", R"({"exclusiveMinimum":0})", R"(0.001)", nullptr, nullptr},
    {"exclusive_minimum_bad", R"({"exclusiveMinimum":0})", R"(0)", "", "(root): not greater than exclusiveMinimum 0"},
    {"exclusive_maximum_ok", R"({"exclusiveMaximum":100})", R"(99)", nullptr, nullptr},
    {"exclusive_maximum_bad", R"({"exclusiveMaximum":100})", R"(100)", "",
     "(root): not less than exclusiveMaximum 100"},
    {"minimum_ignores_strings", R"({"minimum":5})", R"("1")", nullptr, nullptr},
    // string length in code points
    {"min_length_ok", R"({"minLength":2})", R"("ab")", nullptr, nullptr},
    {"min_length_bad", R"({"minLength":2})", R"("a")", "", "(root): shorter than minLength 2"},
    {"max_length_ok_unicode", R"({"maxLength":2})", R"("é日")", nullptr, nullptr},         // 5 bytes, 2 code points
    {"max_length_ok_emoji", R"({"maxLength":1})", R"("\ud83d\ude00")", nullptr, nullptr},  // 4 bytes
    {"max_length_bad", R"({"maxLength":2})", R"("abc")", "", "(root): longer than maxLength 2"},
    {"min_length_unicode_bad", R"({"minLength":3})", R"("日本")", "", "(root): shorter than minLength 3"},
    {"min_length_ignores_numbers", R"({"minLength":3})", R"(1)", nullptr, nullptr},
    // arrays
    {"items_ok", R"({"items":{"type":"integer"}})", R"([1,2,3])", nullptr, nullptr},
    {"items_bad", R"({"items":{"type":"integer"}})", R"([1,2,"x"])", "/2", "/2: expected integer, got string"},
    {"min_items_bad", R"({"minItems":1})", R"([])", "", "(root): fewer items than minItems 1"},
    {"max_items_bad", R"({"maxItems":2})", R"([1,2,3])", "", "(root): more items than maxItems 2"},
    {"items_false", R"({"items":false})", R"([1])", "/0", "/0: not allowed by the schema"},
    {"items_false_empty_ok", R"({"items":false})", R"([])", nullptr, nullptr},
    // objects
    {"required_ok", R"({"required":["deal_id"]})", R"({"deal_id":"d1"})", nullptr, nullptr},
    {"required_missing", R"({"type":"object","required":["deal_id"],"properties":{"deal_id":{"type":"string"}}})",
     R"({})", "/deal_id", "/deal_id: required property missing"},
    {"required_first_in_schema_order", R"({"required":["b","a"]})", R"({})", "/b", "/b: required property missing"},
    {"required_ignores_non_objects", R"({"required":["a"]})", R"("x")", nullptr, nullptr},
    {"mistyped_deal_id", R"({"type":"object","required":["deal_id"],"properties":{"deal_id":{"type":"string"}}})",
     R"({"deal_id":42})", "/deal_id", "/deal_id: expected string, got integer"},
    {"properties_first_in_key_order", R"({"properties":{"a":{"type":"string"},"b":{"type":"string"}}})",
     R"({"b":1,"a":2})", "/a", "/a: expected string, got integer"},
    {"additional_allowed_by_default", R"({"properties":{"a":{}}})", R"({"a":1,"z":[]})", nullptr, nullptr},
    {"additional_false", R"({"properties":{"a":{}},"additionalProperties":false})", R"({"a":1,"extra":2})", "/extra",
     "/extra: property not allowed"},
    {"additional_true", R"({"properties":{"a":{}},"additionalProperties":true})", R"({"extra":2})", nullptr, nullptr},
    {"additional_schema_ok", R"({"additionalProperties":{"type":"integer"}})", R"({"x":1,"y":2})", nullptr, nullptr},
    {"additional_schema_bad", R"({"additionalProperties":{"type":"integer"}})", R"({"x":1,"y":"2"})", "/y",
     "/y: expected integer, got string"},
    {"property_false", R"({"properties":{"a":false}})", R"({"a":null})", "/a", "/a: not allowed by the schema"},
    {"schema_true", R"(true)", R"({"anything":[1]})", nullptr, nullptr},
    {"schema_false", R"(false)", R"(null)", "", "(root): not allowed by the schema"},
    // nesting and pointer escaping
    {"nested_array_of_objects",
     R"({"properties":{"items":{"type":"array","items":{"type":"object","required":["qty"],
        "properties":{"qty":{"type":"integer","minimum":1}}}}}})",
     R"({"items":[{"qty":1},{"qty":2},{"qty":3},{"qty":0}]})", "/items/3/qty", "/items/3/qty: less than minimum 1"},
    {"nested_missing", R"({"properties":{"a":{"properties":{"b":{"required":["c"]}}}}})", R"({"a":{"b":{}}})", "/a/b/c",
     "/a/b/c: required property missing"},
    {"escape_slash_and_tilde", R"({"properties":{"a/b":{"properties":{"m~n":{"type":"string"}}}}})",
     R"({"a/b":{"m~n":1}})", "/a~1b/m~0n", "/a~1b/m~0n: expected string, got integer"},
    {"escape_required", R"({"required":["x/~y"]})", R"({})", "/x~1~0y", "/x~1~0y: required property missing"},
    {"empty_name", R"({"properties":{"":{"type":"null"}}})", R"({"":1})", "/", "/: expected null, got integer"},
    // annotations are accepted and do nothing
    {"annotations", R"({"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x","title":"t",
        "description":"d","default":1,"examples":[1],"format":"email","$comment":"c","deprecated":false,
        "readOnly":true,"writeOnly":false,"type":"string"})",
     R"("not an email")", nullptr, nullptr},
};

INSTANTIATE_TEST_SUITE_P(Keywords, SchemaCase, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(JsonSchemaTest, MessagesNeverHoldTheValue) {
  auto schema = JsonSchema::Compile(json::parse(R"({
      "properties":{"s":{"type":"integer"},"e":{"enum":["a"]},"c":{"const":"k"},"l":{"maxLength":3},
                    "n":{"maximum":1}},
      "additionalProperties":false})"));
  ASSERT_TRUE(schema.ok()) << schema.status();
  const std::string secret = "hunter2-SECRET";
  for (const json& input :
       {json{{"s", secret}}, json{{"e", secret}}, json{{"c", secret}}, json{{"l", secret}}, json{{"x", secret}}}) {
    auto v = schema->Validate(input);
    ASSERT_TRUE(v.has_value()) << input.dump();
    EXPECT_THAT(v->message, Not(HasSubstr("hunter2"))) << v->message;
    EXPECT_THAT(v->pointer, Not(HasSubstr("hunter2")));
  }
  auto v = schema->Validate(json{{"n", 123456789}});
  ASSERT_TRUE(v.has_value());
  EXPECT_THAT(v->message, Not(HasSubstr("123456789")));
}

TEST(JsonSchemaTest, TenFieldObject) {
  auto schema = JsonSchema::Compile(json::parse(R"({
    "type":"object",
    "required":["deal_id","amount","currency","stage","owner","tags","close_date","probability","notes","urgent"],
    "additionalProperties":false,
    "properties":{
      "deal_id":{"type":"string","minLength":1,"maxLength":64},
      "amount":{"type":"number","minimum":0},
      "currency":{"enum":["EUR","USD","GBP"]},
      "stage":{"type":"string"},
      "owner":{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}},
      "tags":{"type":"array","items":{"type":"string"},"maxItems":5},
      "close_date":{"type":"string","format":"date"},
      "probability":{"type":"number","minimum":0,"maximum":1},
      "notes":{"type":["string","null"],"maxLength":1000},
      "urgent":{"type":"boolean"}
    }})"));
  ASSERT_TRUE(schema.ok()) << schema.status();
  json good = json::parse(R"({"deal_id":"D-1","amount":1200.5,"currency":"EUR","stage":"won","owner":{"id":7},
      "tags":["a","b"],"close_date":"2026-01-01","probability":0.9,"notes":null,"urgent":false})");
  EXPECT_FALSE(schema->Validate(good).has_value());

  json bad = good;
  bad["probability"] = 1.5;
  EXPECT_EQ(schema->Validate(bad)->pointer, "/probability");
  bad = good;
  bad["owner"]["id"] = "7";
  EXPECT_EQ(schema->Validate(bad)->message, "/owner/id: expected integer, got string");
  bad = good;
  bad.erase("urgent");
  EXPECT_EQ(schema->Validate(bad)->message, "/urgent: required property missing");
  bad = good;
  bad["tags"][1] = 2;
  EXPECT_EQ(schema->Validate(bad)->pointer, "/tags/1");
  bad = good;
  bad["zzz"] = 1;
  EXPECT_EQ(schema->Validate(bad)->message, "/zzz: property not allowed");
}

TEST(JsonSchemaTest, HelpersAndDocument) {
  const json doc = json::parse(R"({"type":"object","required":["deal_id"],
      "properties":{"deal_id":{"type":"string"},"limit":{"type":"integer"}}})");
  auto schema = JsonSchema::Compile(doc);
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_TRUE(schema->HasProperty("deal_id"));
  EXPECT_TRUE(schema->HasProperty("limit"));
  EXPECT_FALSE(schema->HasProperty("deal"));
  EXPECT_TRUE(schema->Requires("deal_id"));
  EXPECT_FALSE(schema->Requires("limit"));
  EXPECT_EQ(schema->document(), doc);

  JsonSchema copy = *schema;  // shares the tree
  EXPECT_TRUE(copy.Validate(json::object()).has_value());
  EXPECT_EQ(copy.document(), doc);
}

TEST(JsonSchemaTest, SharedBetweenThreads) {
  auto schema = JsonSchema::Compile(json::parse(R"({"properties":{"n":{"type":"integer","maximum":100}}})"));
  ASSERT_TRUE(schema.ok());
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) failures[t] += schema->Validate(json{{"n", i % 200}}).has_value();
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) EXPECT_EQ(f, 990);  // 101..199 out of each 200, ten times
}

struct BadSchema {
  const char* name;
  const char* schema;
  const char* message;  // a substring of the error
};

void PrintTo(const BadSchema& c, std::ostream* os) { *os << c.name; }

class CompileError : public ::testing::TestWithParam<BadSchema> {};

TEST_P(CompileError, RefusedWithLocation) {
  auto schema = JsonSchema::Compile(json::parse(GetParam().schema));
  ASSERT_FALSE(schema.ok()) << GetParam().schema;
  EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(schema.status().message()), HasSubstr(GetParam().message));
}

const BadSchema kBadSchemas[] = {
    {"typo_required", R"({"type":"object","requird":["a"]})", "input_schema /requird: unsupported keyword"},
    {"typo_nested", R"({"properties":{"a":{"maxLenght":3}}})", "/properties/a/maxLenght: unsupported keyword"},
    {"unknown_type", R"({"type":"strng"})", "input_schema /type: unknown type \"strng\""},
    {"unknown_type_in_list", R"({"type":["string","nul"]})", "/type/1: unknown type"},
    {"type_not_string", R"({"type":3})", "/type: a type must be a string"},
    {"type_empty_list", R"({"type":[]})", "/type: must name at least one type"},
    {"type_twice", R"({"type":["string","string"]})", "/type/1: type listed twice"},
    {"required_not_array", R"({"required":"id"})", "/required: must be an array"},
    {"required_not_string", R"({"required":["a",1]})", "/required/1: must be a string"},
    {"required_twice", R"({"required":["a","a"]})", "/required/1: property listed twice"},
    {"properties_not_object", R"({"properties":[]})", "/properties: must be an object of schemas"},
    {"property_not_schema", R"({"properties":{"a":"string"}})",
     "/properties/a: a schema must be an object or a boolean"},
    {"property_pointer_escaped", R"({"properties":{"a/b":{"type":"x"}}})", "/properties/a~1b/type: unknown type"},
    {"enum_not_array", R"({"enum":"a"})", "/enum: must be a non-empty array"},
    {"enum_empty", R"({"enum":[]})", "/enum: must be a non-empty array"},
    {"minimum_not_number", R"({"minimum":"1"})", "/minimum: must be a number"},
    {"exclusive_maximum_bool", R"({"exclusiveMaximum":true})", "/exclusiveMaximum: must be a number"},
    {"min_length_negative", R"({"minLength":-1})", "/minLength: must be a non-negative integer"},
    {"max_length_fraction", R"({"maxLength":1.5})", "/maxLength: must be a non-negative integer"},
    {"min_items_string", R"({"minItems":"1"})", "/minItems: must be a non-negative integer"},
    {"items_array", R"({"items":[{}]})", "/items: must be one schema"},
    {"items_bad_sub", R"({"items":{"type":"int"}})", "/items/type: unknown type"},
    {"additional_not_schema", R"({"additionalProperties":"no"})", "/additionalProperties: a schema must be"},
    {"unsupported_ref", R"({"$ref":"#/defs/a"})", "/$ref: unsupported keyword"},
    {"unsupported_pattern", R"({"pattern":"^a"})", "/pattern: unsupported keyword"},
    {"unsupported_one_of", R"({"oneOf":[{}]})", "/oneOf: unsupported keyword"},
    {"root_not_schema", R"("object")", "input_schema (root): a schema must be an object or a boolean"},
};

INSTANTIATE_TEST_SUITE_P(Schemas, CompileError, ::testing::ValuesIn(kBadSchemas),
                         [](const ::testing::TestParamInfo<BadSchema>& info) { return std::string(info.param.name); });

TEST(JsonSchemaTest, DepthIsBounded) {
  auto nest = [](int levels) {
    json s = {{"type", "integer"}};
    for (int i = 0; i < levels; ++i) s = json{{"items", s}};
    return s;
  };
  EXPECT_TRUE(JsonSchema::Compile(nest(JsonSchema::kMaxDepth)).ok());
  auto too_deep = JsonSchema::Compile(nest(JsonSchema::kMaxDepth + 1));
  ASSERT_FALSE(too_deep.ok());
  EXPECT_THAT(std::string(too_deep.status().message()), HasSubstr("nested deeper than 32 levels"));

  // A value deeper than the schema is not walked past the schema's own depth.
  json deep = 1;
  for (int i = 0; i < 10000; ++i) {
    json outer = json::array();
    outer.push_back(std::move(deep));
    deep = std::move(outer);
  }
  auto shallow = JsonSchema::Compile(json::parse(R"({"items":{"type":"array"}})"));
  ASSERT_TRUE(shallow.ok());
  EXPECT_FALSE(shallow->Validate(deep).has_value());
}

}  // namespace
}  // namespace toolgate
