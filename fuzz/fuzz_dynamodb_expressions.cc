// DynamoDB expression rendering from arbitrary condition and update trees with hostile attribute
// names and values. What must hold: rendering never crashes; an expression contains no name or
// value, only #n<i> / :v<i> placeholders, keywords and punctuation; every placeholder it uses is
// defined, and every definition maps back to the name or value it stands for.
#include <fuzzer/FuzzedDataProvider.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <set>
#include <string>

#include "nlohmann/json.hpp"
#include "toolgate/store/condition.h"
#include "toolgate/store/dynamodb_expressions.h"

using namespace toolgate::store;  // NOLINT: a fuzz target

namespace {

std::string Text(FuzzedDataProvider& in) { return in.ConsumeRandomLengthString(24); }

AttributePath Path(FuzzedDataProvider& in) {
  std::string name = Text(in);
  if (in.ConsumeBool()) return AttributePath::In(std::move(name), Text(in));
  return AttributePath::Top(std::move(name));
}

AttributeValue Value(FuzzedDataProvider& in, int depth) {
  switch (in.ConsumeIntegralInRange(0, depth > 2 ? 3 : 4)) {
    case 0:
      return AttributeValue(Text(in));
    case 1:
      return AttributeValue(in.ConsumeIntegral<int64_t>());
    case 2:
      return AttributeValue(in.ConsumeFloatingPoint<double>());
    case 3:
      return AttributeValue(in.ConsumeBool());
    default: {
      AttributeMap m;
      const int n = in.ConsumeIntegralInRange(0, 3);
      for (int i = 0; i < n; ++i) m[Text(in)] = Value(in, depth + 1);
      return AttributeValue(std::move(m));
    }
  }
}

Condition MakeCondition(FuzzedDataProvider& in, int depth) {
  const int kind = in.ConsumeIntegralInRange(0, depth > 3 ? 5 : 8);
  switch (kind) {
    case 0:
      return Condition::Always();
    case 1:
      return Condition::ItemExists();
    case 2:
      return Condition::ItemAbsent();
    case 3:
      return Condition::Exists(Path(in));
    case 4:
      return Condition::NotExists(Path(in));
    case 5: {
      const auto op = static_cast<Condition::Op>(in.ConsumeIntegralInRange(0, 5));
      Condition::Operand lhs = in.ConsumeBool() ? Condition::Attr(Path(in)) : Condition::Lit(Value(in, 0));
      Condition::Operand rhs = in.ConsumeBool() ? Condition::Attr(Path(in)) : Condition::Lit(Value(in, 0));
      return Condition::Compare(std::move(lhs), op, std::move(rhs));
    }
    case 6:
    case 7: {
      std::vector<Condition> terms;
      const int n = in.ConsumeIntegralInRange(0, 4);
      for (int i = 0; i < n; ++i) terms.push_back(MakeCondition(in, depth + 1));
      return kind == 6 ? Condition::And(std::move(terms)) : Condition::Or(std::move(terms));
    }
    default:
      return Condition::Not(MakeCondition(in, depth + 1));
  }
}

// Keywords, functions, placeholders and punctuation only.
void CheckOnlyPlaceholders(const std::string& expr, const dynamodb::ExpressionBuilder& b) {
  static const std::regex kToken(R"(#n[0-9]+|#n_[a-z]+|:v[0-9]+|[A-Za-z_]+|[0-9]+|<>|<=|>=|[=<>(),.+ ])");
  static const std::set<std::string> kWords = {
      "SET", "REMOVE", "AND", "OR", "NOT", "attribute_exists", "attribute_not_exists", "if_not_exists"};
  size_t pos = 0;
  std::smatch m;
  while (pos < expr.size()) {
    const std::string rest = expr.substr(pos);
    if (!std::regex_search(rest, m, kToken, std::regex_constants::match_continuous)) {
      std::fprintf(stderr, "unexpected text at %zu in: %s\n", pos, expr.c_str());
      std::abort();
    }
    const std::string tok = m.str();
    if (std::isalpha(static_cast<unsigned char>(tok[0])) && !kWords.count(tok)) {
      std::fprintf(stderr, "pasted word \"%s\" in: %s\n", tok.c_str(), expr.c_str());
      std::abort();  // a pasted name
    }
    if (std::isdigit(static_cast<unsigned char>(tok[0]))) std::abort();  // a pasted number
    if (tok[0] == '#' && !b.names().contains(tok)) std::abort();
    if (tok[0] == ':' && !b.values().contains(tok)) std::abort();
    pos += tok.size();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  dynamodb::ExpressionBuilder b;
  const Condition c = MakeCondition(in, 0);
  auto cond = dynamodb::RenderCondition(c, b);
  if (cond.ok()) CheckOnlyPlaceholders(*cond, b);
  std::vector<UpdateOp> ops;
  const int n = in.ConsumeIntegralInRange(0, 6);
  for (int i = 0; i < n; ++i) {
    switch (in.ConsumeIntegralInRange(0, 2)) {
      case 0:
        ops.push_back(UpdateOp::Set(Path(in), Value(in, 0)));
        break;
      case 1:
        ops.push_back(UpdateOp::Add(Path(in), in.ConsumeIntegral<int64_t>()));
        break;
      default:
        ops.push_back(UpdateOp::Remove(Path(in)));
        break;
    }
  }
  auto update = dynamodb::RenderUpdate(ops, b);
  if (update.ok())
    CheckOnlyPlaceholders(*update, b);
  else if (update.status().code() != absl::StatusCode::kInvalidArgument)
    std::abort();
  // Every name placeholder maps back to a name that was used.
  for (const auto& [placeholder, name] : b.names().items()) {
    if (placeholder.rfind("#n", 0) != 0 || !name.is_string()) std::abort();
  }
  return 0;
}
