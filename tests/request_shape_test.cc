// Request shaping (design §13 "Request shape per tool"): method and path template checked at config
// load, and each call's input turned into target, query and body.

#include "toolgate/domain/request_shape.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"

namespace toolgate {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

struct Case {
  const char* name;
  const char* method;
  const char* path;
  const char* input;
  const char* want_method;
  const char* want_target;  // nullptr: InvalidArgument expected
  const char* want_body;    // or the expected error message
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ShapeCase : public ::testing::TestWithParam<Case> {};

TEST_P(ShapeCase, Shapes) {
  const Case& c = GetParam();
  auto shape = ParseRequestShape(c.method, c.path);
  ASSERT_TRUE(shape.ok()) << shape.status();
  auto request = ShapeRequest(*shape, "crm.get_deal", json::parse(c.input));
  if (c.want_target == nullptr) {
    ASSERT_FALSE(request.ok()) << request->target;
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(request.status().message(), c.want_body);
    return;
  }
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->method, c.want_method);
  EXPECT_EQ(request->target, c.want_target);
  EXPECT_EQ(request->body, c.want_body);
  // The same with the input's dump handed over (the public routes have it): the same request.
  const json input = json::parse(c.input);
  auto from_text = ShapeRequest(*shape, "crm.get_deal", input, input.dump());
  ASSERT_TRUE(from_text.ok()) << from_text.status();
  EXPECT_EQ(from_text->method, request->method);
  EXPECT_EQ(from_text->target, request->target);
  EXPECT_EQ(from_text->body, request->body);
}

const Case kCases[] = {
    // The default shape: POST /{tool_name}, the input as the body.
    {"default_post", "", "", R"({"deal_id":"d1","n":2})", "POST", "/crm.get_deal", R"({"deal_id":"d1","n":2})"},
    {"default_post_empty_object", "POST", "", R"({})", "POST", "/crm.get_deal", "{}"},
    {"default_post_non_object_passes_through", "POST", "", R"([1,"a"])", "POST", "/crm.get_deal", R"([1,"a"])"},
    {"default_post_scalar_passes_through", "post", "", R"("text")", "POST", "/crm.get_deal", R"("text")"},
    // GET: path fields out, the rest as the query in key order (sorted), no body.
    {"get_path_and_query", "GET", "/v2/deals/{deal_id}", R"({"deal_id":"D-17","limit":5,"active":true,"q":"a b"})",
     "GET", "/v2/deals/D-17?active=true&limit=5&q=a%20b", ""},
    {"get_no_query", "GET", "/v2/deals/{deal_id}", R"({"deal_id":"D-17"})", "GET", "/v2/deals/D-17", ""},
    {"get_without_template", "GET", "", R"({"x":1})", "GET", "/crm.get_deal?x=1", ""},
    {"get_null_left_out", "GET", "/d", R"({"a":null,"b":"x"})", "GET", "/d?b=x", ""},
    {"get_numbers_as_written", "GET", "/d", R"({"f":1.5,"neg":-3,"big":18446744073709551615})", "GET",
     "/d?big=18446744073709551615&f=1.5&neg=-3", ""},
    {"get_false", "GET", "/d", R"({"on":false})", "GET", "/d?on=false", ""},
    {"get_query_encoding", "GET", "/d", R"({"a&b=c":"x/y?z#","k":"é"})", "GET", "/d?a%26b%3Dc=x%2Fy%3Fz%23&k=%C3%A9",
     ""},
    {"get_empty_string_value", "GET", "/d", R"({"q":""})", "GET", "/d?q=", ""},
    {"get_object_in_query", "GET", "/d", R"({"filter":{"a":1}})", "GET", nullptr,
     "/filter: a query field must be a string, number, boolean or null, got object"},
    {"get_array_in_query", "GET", "/d", R"({"ids":[1,2]})", "GET", nullptr,
     "/ids: a query field must be a string, number, boolean or null, got array"},
    {"get_non_object", "GET", "/d", R"([1])", "GET", nullptr, "(root): expected object, got array"},
    // Path placeholder encoding.
    {"encode_slash_space", "GET", "/files/{name}", R"({"name":"a/b c"})", "GET", "/files/a%2Fb%20c", ""},
    {"encode_unicode", "GET", "/u/{name}", R"({"name":"日本"})", "GET", "/u/%E6%97%A5%E6%9C%AC", ""},
    {"encode_reserved", "GET", "/u/{name}", R"({"name":"a?b#c%d+e&f=g@h:i"})", "GET",
     "/u/a%3Fb%23c%25d%2Be%26f%3Dg%40h%3Ai", ""},
    {"unreserved_kept", "GET", "/u/{name}", R"({"name":"Az09-._~"})", "GET", "/u/Az09-._~", ""},
    {"integer_placeholders", "GET", "/o/{org}/i/{id}", R"({"org":-7,"id":18446744073709551615})", "GET",
     "/o/-7/i/18446744073709551615", ""},
    {"integral_float_placeholder", "GET", "/i/{id}", R"({"id":42.0})", "GET", "/i/42", ""},
    {"placeholder_inside_segment", "GET", "/files/{name}.json", R"({"name":"x"})", "GET", "/files/x.json", ""},
    {"placeholder_used_twice", "PUT", "/a/{id}/b/{id}", R"({"id":"z","v":1})", "PUT", "/a/z/b/z", R"({"v":1})"},
    {"template_escape_kept", "POST", "/a%20b/{id}", R"({"id":"1"})", "POST", "/a%20b/1", "{}"},
    // Path field errors: name the field, never the value.
    {"missing_path_field", "GET", "/v2/deals/{deal_id}", R"({"other":"x"})", "GET", nullptr,
     "/deal_id: path field missing"},
    {"path_field_object", "GET", "/v2/deals/{deal_id}", R"({"deal_id":{"k":"v"}})", "GET", nullptr,
     "/deal_id: path field must be a string or integer, got object"},
    {"path_field_bool", "GET", "/v/{id}", R"({"id":true})", "GET", nullptr,
     "/id: path field must be a string or integer, got boolean"},
    {"path_field_null", "GET", "/v/{id}", R"({"id":null})", "GET", nullptr,
     "/id: path field must be a string or integer, got null"},
    {"path_field_fraction", "GET", "/v/{id}", R"({"id":1.5})", "GET", nullptr,
     "/id: path field must be a string or integer, got number"},
    {"path_field_empty", "GET", "/v/{id}", R"({"id":""})", "GET", nullptr,
     "/id: path field must not be empty, \".\" or \"..\""},
    {"path_field_dotdot", "DELETE", "/v/{id}", R"({"id":".."})", "DELETE", nullptr,
     "/id: path field must not be empty, \".\" or \"..\""},
    {"path_field_dot", "PUT", "/v/{id}", R"({"id":"."})", "PUT", nullptr,
     "/id: path field must not be empty, \".\" or \"..\""},
    {"path_field_dots_in_name_ok", "GET", "/v/{id}", R"({"id":"a..b"})", "GET", "/v/a..b", ""},
    {"post_non_object_with_placeholder", "POST", "/v/{id}", R"("x")", "POST", nullptr,
     "(root): expected object, got string"},
    // PUT / PATCH / DELETE.
    {"put_body_without_path_fields", "PUT", "/v2/deals/{deal_id}", R"({"deal_id":"d1","stage":"won","amount":5})",
     "PUT", "/v2/deals/d1", R"({"amount":5,"stage":"won"})"},
    {"patch_body", "PATCH", "/v2/deals/{deal_id}", R"({"deal_id":"d1","stage":{"name":"won"}})", "PATCH",
     "/v2/deals/d1", R"({"stage":{"name":"won"}})"},
    {"post_only_path_fields_left", "POST", "/v2/deals/{deal_id}/close", R"({"deal_id":"d1"})", "POST",
     "/v2/deals/d1/close", "{}"},
    {"delete_query", "delete", "/v2/deals/{deal_id}", R"({"deal_id":"d1","reason":"dup"})", "DELETE",
     "/v2/deals/d1?reason=dup", ""},
};

INSTANTIATE_TEST_SUITE_P(Table, ShapeCase, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(RequestShapeTest, DefaultConstructedIsPostToolName) {
  RequestShape shape;
  EXPECT_EQ(shape.method(), "POST");
  EXPECT_TRUE(shape.path_template().empty());
  EXPECT_TRUE(shape.placeholders().empty());
  auto r = ShapeRequest(shape, "a b/c", json{{"x", 1}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->target, "/a%20b%2Fc");  // the tool name is one encoded segment
  EXPECT_EQ(r->body, R"({"x":1})");
}

// The input's text, when handed over, is the body as it is where the whole input is the body (no
// second dump); where fields leave the input for the path, the body is built from the tree.
TEST(RequestShapeTest, AHandedOverInputTextIsTheBodyOnlyWhereTheWholeInputIs) {
  const json input = {{"deal_id", "d1"}, {"n", 2}};
  const std::string text = R"({"deal_id":"d1", "n":2})";  // not dump()'s spelling: shows which was sent
  auto whole = ShapeRequest(RequestShape(), "crm.update", input, text);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->body, text);
  auto shape = ParseRequestShape("POST", "/deals/{deal_id}");
  ASSERT_TRUE(shape.ok()) << shape.status();
  auto part = ShapeRequest(*shape, "crm.update", input, text);
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(part->target, "/deals/d1");
  EXPECT_EQ(part->body, R"({"n":2})");
}

TEST(RequestShapeTest, PlaceholdersListedOnceInOrder) {
  auto shape = ParseRequestShape("GET", "/o/{org}/deals/{deal_id}/{org}/{_x9}");
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_THAT(shape->placeholders(), ElementsAre("org", "deal_id", "_x9"));
  EXPECT_EQ(shape->path_template(), "/o/{org}/deals/{deal_id}/{org}/{_x9}");
  EXPECT_TRUE(shape->sends_query());
  EXPECT_FALSE(ParseRequestShape("PATCH", "/x")->sends_query());
}

TEST(RequestShapeTest, MethodNormalised) {
  for (const char* m : {"get", "Post", "PUT", "patch", "DeLeTe"}) {
    auto shape = ParseRequestShape(m, "");
    ASSERT_TRUE(shape.ok()) << m;
    EXPECT_EQ(shape->method(), absl::AsciiStrToUpper(m));
  }
}

TEST(RequestShapeTest, ErrorsNeverHoldInputValues) {
  const std::string secret = "tok-SECRET-42";
  auto get = ParseRequestShape("GET", "/v/{id}");
  ASSERT_TRUE(get.ok());
  for (const json& input : {json{{"id", json{{"k", secret}}}}, json{{"id", secret}, {"q", json::array({secret})}},
                            json{{"nope", secret}}, json::array({secret})}) {
    auto r = ShapeRequest(*get, "t", input);
    ASSERT_FALSE(r.ok()) << input.dump();
    EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr("SECRET"))) << r.status();
  }
}

struct BadShape {
  const char* name;
  const char* method;
  const char* path;
  const char* message;
};

void PrintTo(const BadShape& c, std::ostream* os) { *os << c.name; }

class BadShapeCase : public ::testing::TestWithParam<BadShape> {};

TEST_P(BadShapeCase, Refused) {
  auto shape = ParseRequestShape(GetParam().method, GetParam().path);
  ASSERT_FALSE(shape.ok()) << GetParam().path;
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(shape.status().message(), GetParam().message);
}

const BadShape kBadShapes[] = {
    {"unknown_method", "HEAD", "", "method \"HEAD\" is not one of GET, POST, PUT, PATCH, DELETE"},
    {"method_typo", "GETT", "/x", "method \"GETT\" is not one of GET, POST, PUT, PATCH, DELETE"},
    {"no_leading_slash", "GET", "v2/deals", "path template, offset 0: must start with \"/\""},
    {"unclosed_brace", "GET", "/v2/{deal_id", "path template, offset 4: \"{\" without a closing \"}\""},
    {"stray_close", "GET", "/v2/deal_id}", "path template, offset 11: \"}\" without an opening \"{\""},
    {"empty_braces", "GET", "/v2/{}", "path template, offset 4: empty placeholder \"{}\""},
    {"nested_braces", "GET", "/v2/{a{b}}",
     "path template, offset 4: a placeholder name is a letter or \"_\" followed by letters, digits or \"_\""},
    {"digit_first", "GET", "/v2/{9a}",
     "path template, offset 4: a placeholder name is a letter or \"_\" followed by letters, digits or \"_\""},
    {"dash_in_name", "GET", "/v2/{deal-id}",
     "path template, offset 4: a placeholder name is a letter or \"_\" followed by letters, digits or \"_\""},
    {"query_in_template", "GET", "/v2/deals?x=1",
     "path template, offset 9: a path may not hold a query or fragment (\"?\", \"#\")"},
    {"fragment", "GET", "/v2#x", "path template, offset 3: a path may not hold a query or fragment (\"?\", \"#\")"},
    {"space", "GET", "/v2/a b", "path template, offset 5: character not allowed in a URI path (percent-encode it)"},
    {"bad_escape", "GET", "/v2/%zz", "path template, offset 4: \"%\" must start a %XX escape"},
    {"truncated_escape", "GET", "/v2/%4", "path template, offset 4: \"%\" must start a %XX escape"},
};

INSTANTIATE_TEST_SUITE_P(Templates, BadShapeCase, ::testing::ValuesIn(kBadShapes),
                         [](const ::testing::TestParamInfo<BadShape>& info) { return std::string(info.param.name); });

TEST(PercentEncodeTest, EveryByteOutsideUnreserved) {
  EXPECT_EQ(PercentEncode(""), "");
  EXPECT_EQ(PercentEncode("/ "), "%2F%20");
  EXPECT_EQ(PercentEncode(std::string("\0\x7f\xff", 3)), "%00%7F%FF");
  EXPECT_EQ(PercentEncode("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(PercentEncode("!*'();:@&=+$,/?#[]"), "%21%2A%27%28%29%3B%3A%40%26%3D%2B%24%2C%2F%3F%23%5B%5D");
}

}  // namespace
}  // namespace toolgate
