#include "toolgate/store/condition.h"

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "toolgate/store/item_store.h"

namespace toolgate::store {

Condition Condition::ItemAbsentOrExpired(int64_t now_epoch_sec) {
  const AttributePath ttl = AttributePath::Top(std::string(kTtlAttribute));
  return Or({ItemAbsent(), Le(ttl, now_epoch_sec)});
}

Condition Condition::Exists(AttributePath path) {
  Condition c(Kind::kExists);
  c.path_ = std::move(path);
  return c;
}

Condition Condition::NotExists(AttributePath path) {
  Condition c(Kind::kNotExists);
  c.path_ = std::move(path);
  return c;
}

Condition Condition::Compare(Operand lhs, Op op, Operand rhs) {
  Condition c(Kind::kCompare);
  c.op_ = op;
  c.lhs_ = std::move(lhs);
  c.rhs_ = std::move(rhs);
  return c;
}

Condition Condition::And(std::vector<Condition> terms) {
  Condition c(Kind::kAnd);
  c.terms_ = std::make_shared<const std::vector<Condition>>(std::move(terms));
  return c;
}

Condition Condition::Or(std::vector<Condition> terms) {
  Condition c(Kind::kOr);
  c.terms_ = std::make_shared<const std::vector<Condition>>(std::move(terms));
  return c;
}

Condition Condition::Not(Condition inner) {
  Condition c(Kind::kNot);
  c.terms_ = std::make_shared<const std::vector<Condition>>(std::vector<Condition>{std::move(inner)});
  return c;
}

namespace {

std::string ValueToString(const AttributeValue& v) {
  if (v.is_string()) return absl::StrCat("\"", v.as_string(), "\"");
  if (v.is_int()) return absl::StrCat(v.as_int());
  if (v.is_double()) return absl::StrCat(v.as_number());
  if (v.is_bool()) return v.as_bool() ? "true" : "false";
  return "{map}";
}

std::string OperandToString(const Condition::Operand& o) {
  if (o.path) return o.path->ToString();
  return o.value ? ValueToString(*o.value) : "?";
}

const char* OpToString(Condition::Op op) {
  switch (op) {
    case Condition::Op::kEq:
      return "=";
    case Condition::Op::kNe:
      return "<>";
    case Condition::Op::kLt:
      return "<";
    case Condition::Op::kLe:
      return "<=";
    case Condition::Op::kGt:
      return ">";
    case Condition::Op::kGe:
      return ">=";
  }
  return "?";
}

}  // namespace

std::string Condition::ToString() const {
  switch (kind_) {
    case Kind::kAlways:
      return "always";
    case Kind::kItemExists:
      return "item_exists";
    case Kind::kItemAbsent:
      return "item_absent";
    case Kind::kExists:
      return absl::StrCat("exists(", path_->ToString(), ")");
    case Kind::kNotExists:
      return absl::StrCat("not_exists(", path_->ToString(), ")");
    case Kind::kCompare:
      return absl::StrCat(OperandToString(lhs_), " ", OpToString(op_), " ", OperandToString(rhs_));
    case Kind::kAnd:
    case Kind::kOr: {
      std::vector<std::string> parts;
      for (const Condition& t : *terms_) parts.push_back(t.ToString());
      return absl::StrCat("(", absl::StrJoin(parts, kind_ == Kind::kAnd ? " and " : " or "), ")");
    }
    case Kind::kNot:
      return absl::StrCat("not ", (*terms_)[0].ToString());
  }
  return "?";
}

std::vector<absl::StatusOr<WriteResult>> ItemStore::WriteBatch(const std::vector<WriteRequest>& requests) {
  std::vector<absl::StatusOr<WriteResult>> results;
  results.reserve(requests.size());
  for (const WriteRequest& r : requests) {
    if (ChainBroken(r, results, results.size())) {
      results.push_back(WriteResult::ConditionFailed());
      continue;
    }
    switch (r.kind) {
      case WriteRequest::Kind::kPut:
        results.push_back(Put(r.key, r.item, r.condition));
        break;
      case WriteRequest::Kind::kUpdate:
        results.push_back(Update(r.key, r.ops, r.condition, r.returns));
        break;
      case WriteRequest::Kind::kErase:
        results.push_back(Erase(r.key, r.condition));
        break;
    }
  }
  return results;
}

bool IsStoreError(const absl::Status& status) {
  return !status.ok() && status.code() != absl::StatusCode::kInvalidArgument;
}

namespace {
constexpr char kNothingWrittenUrl[] = "type.toolgate/store.nothing_written";
}  // namespace

absl::Status MarkNothingWritten(absl::Status status) {
  if (!status.ok()) status.SetPayload(kNothingWrittenUrl, absl::Cord("1"));
  return status;
}

bool NothingWritten(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kNothingWrittenUrl).has_value();
}

}  // namespace toolgate::store
