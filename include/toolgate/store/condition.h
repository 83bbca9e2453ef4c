#pragma once

#include <memory>
#include <string>
#include <vector>

#include "toolgate/store/item.h"

namespace toolgate::store {

// A typed condition on one item, evaluated atomically with the write it guards. Built from the
// factory functions, never from strings; adapters render it to their own language (DynamoDB's
// ConditionExpression) or evaluate it directly (memory, SQLite).
//
// Semantics follow DynamoDB: a comparison with an absent attribute is false, except `<>` which is
// true; `=` / `<>` across types are false / true; ordering compares numbers with numbers and strings
// with strings (byte order) and is false across types. Immutable and cheap to copy.
class Condition {
 public:
  enum class Kind {
    kAlways,      // no condition
    kItemExists,  // the item exists (DynamoDB: attribute_exists(pk))
    kItemAbsent,  // the item does not exist
    kExists,      // attribute_exists(path)
    kNotExists,   // attribute_not_exists(path)
    kCompare,
    kAnd,
    kOr,
    kNot,
  };
  enum class Op { kEq, kNe, kLt, kLe, kGt, kGe };

  // One side of a comparison: an attribute of the item or a literal value.
  struct Operand {
    std::optional<AttributePath> path;
    std::optional<AttributeValue> value;
  };

  Condition() : Condition(Kind::kAlways) {}

  static Condition Always() { return Condition(Kind::kAlways); }
  static Condition ItemExists() { return Condition(Kind::kItemExists); }
  static Condition ItemAbsent() { return Condition(Kind::kItemAbsent); }
  // The item is absent, or present with a `ttl` at or before `now_epoch_sec` (reads see it absent).
  static Condition ItemAbsentOrExpired(int64_t now_epoch_sec);
  static Condition Exists(AttributePath path);
  static Condition NotExists(AttributePath path);

  static Condition Compare(Operand lhs, Op op, Operand rhs);
  // Shorthands comparing an attribute with a literal.
  static Condition Eq(AttributePath p, AttributeValue v) {
    return Compare(Attr(std::move(p)), Op::kEq, Lit(std::move(v)));
  }
  static Condition Ne(AttributePath p, AttributeValue v) {
    return Compare(Attr(std::move(p)), Op::kNe, Lit(std::move(v)));
  }
  static Condition Lt(AttributePath p, AttributeValue v) {
    return Compare(Attr(std::move(p)), Op::kLt, Lit(std::move(v)));
  }
  static Condition Le(AttributePath p, AttributeValue v) {
    return Compare(Attr(std::move(p)), Op::kLe, Lit(std::move(v)));
  }
  static Condition Gt(AttributePath p, AttributeValue v) {
    return Compare(Attr(std::move(p)), Op::kGt, Lit(std::move(v)));
  }
  static Condition Ge(AttributePath p, AttributeValue v) {
    return Compare(Attr(std::move(p)), Op::kGe, Lit(std::move(v)));
  }
  static Operand Attr(AttributePath p) { return Operand{std::move(p), std::nullopt}; }
  static Operand Lit(AttributeValue v) { return Operand{std::nullopt, std::move(v)}; }

  static Condition And(std::vector<Condition> terms);
  static Condition Or(std::vector<Condition> terms);
  static Condition Not(Condition c);

  Kind kind() const { return kind_; }
  Op op() const { return op_; }
  const std::optional<AttributePath>& path() const { return path_; }  // kExists, kNotExists
  const Operand& lhs() const { return lhs_; }                         // kCompare
  const Operand& rhs() const { return rhs_; }                         // kCompare
  const std::vector<Condition>& terms() const { return *terms_; }     // kAnd, kOr, kNot (one term)

  // A readable rendering for logs and error messages (not a DynamoDB expression).
  std::string ToString() const;

 private:
  explicit Condition(Kind k) : kind_(k), terms_(std::make_shared<const std::vector<Condition>>()) {}

  Kind kind_;
  Op op_ = Op::kEq;
  std::optional<AttributePath> path_;
  Operand lhs_, rhs_;
  std::shared_ptr<const std::vector<Condition>> terms_;  // shared: conditions are immutable values
};

// One update operation on an item (DynamoDB's UpdateExpression clauses).
struct UpdateOp {
  enum class Kind {
    kSet,     // path = value
    kAdd,     // path += value (numbers); an absent attribute counts as 0
    kRemove,  // delete path; removing an absent attribute is a no-op
  };
  Kind kind;
  AttributePath path;
  AttributeValue value;

  static UpdateOp Set(AttributePath p, AttributeValue v) { return {Kind::kSet, std::move(p), std::move(v)}; }
  static UpdateOp Add(AttributePath p, int64_t delta) { return {Kind::kAdd, std::move(p), AttributeValue(delta)}; }
  static UpdateOp Remove(AttributePath p) { return {Kind::kRemove, std::move(p), AttributeValue()}; }
};

}  // namespace toolgate::store
