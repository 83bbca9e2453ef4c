// Micro-benchmarks of the per-call input work of design §13: validating a tool's input against its
// compiled input_schema, and shaping the downstream request. Both run once per call, before
// admission, on the caller's thread.

#include <benchmark/benchmark.h>

#include "nlohmann/json.hpp"
#include "toolgate/domain/json_schema.h"
#include "toolgate/domain/request_shape.h"

namespace {

using nlohmann::json;
using toolgate::JsonSchema;

const char kSchema[] = R"({
  "type":"object",
  "required":["deal_id","amount","currency","stage","owner","tags","close_date","probability","notes","urgent"],
  "additionalProperties":false,
  "properties":{
    "deal_id":{"type":"string","minLength":1,"maxLength":64},
    "amount":{"type":"number","minimum":0},
    "currency":{"enum":["EUR","USD","GBP"]},
    "stage":{"type":"string","maxLength":32},
    "owner":{"type":"integer","minimum":1},
    "tags":{"type":"array","items":{"type":"string"},"maxItems":5},
    "close_date":{"type":"string","format":"date"},
    "probability":{"type":"number","minimum":0,"maximum":1},
    "notes":{"type":["string","null"],"maxLength":1000},
    "urgent":{"type":"boolean"}
  }})";

const char kInput[] = R"({"deal_id":"D-1","amount":1200.5,"currency":"EUR","stage":"won","owner":7,
  "tags":["a","b"],"close_date":"2026-01-01","probability":0.9,"notes":"call back","urgent":false})";

void BM_ValidateTenFields(benchmark::State& state) {
  const JsonSchema schema = JsonSchema::Compile(json::parse(kSchema)).value();
  const json input = json::parse(kInput);
  for (auto _ : state) {
    auto violation = schema.Validate(input);
    benchmark::DoNotOptimize(violation);
  }
}
BENCHMARK(BM_ValidateTenFields);

// The failing path: the last property (key order) is mistyped, so the pointer and message are built.
void BM_ValidateTenFieldsViolation(benchmark::State& state) {
  const JsonSchema schema = JsonSchema::Compile(json::parse(kSchema)).value();
  json input = json::parse(kInput);
  input["urgent"] = "yes";
  for (auto _ : state) {
    auto violation = schema.Validate(input);
    benchmark::DoNotOptimize(violation);
  }
}
BENCHMARK(BM_ValidateTenFieldsViolation);

void BM_ShapeGetTwoPlaceholdersThreeQuery(benchmark::State& state) {
  const auto shape = toolgate::ParseRequestShape("GET", "/v2/orgs/{org}/deals/{deal_id}").value();
  const json input = json::parse(R"({"org":"acme corp","deal_id":4711,"limit":20,"q":"open deals","active":true})");
  for (auto _ : state) {
    auto request = toolgate::ShapeRequest(shape, "crm.get_deal", input);
    benchmark::DoNotOptimize(request);
  }
}
BENCHMARK(BM_ShapeGetTwoPlaceholdersThreeQuery);

void BM_ShapePostOnePlaceholder(benchmark::State& state) {
  const auto shape = toolgate::ParseRequestShape("PUT", "/v2/deals/{deal_id}").value();
  const json input = json::parse(kInput);
  for (auto _ : state) {
    auto request = toolgate::ShapeRequest(shape, "crm.update_deal", input);
    benchmark::DoNotOptimize(request);
  }
}
BENCHMARK(BM_ShapePostOnePlaceholder);

}  // namespace

BENCHMARK_MAIN();
