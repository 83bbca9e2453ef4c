#include "store/item_ops.h"

#include <limits>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "toolgate/status_macros.h"

namespace toolgate::store::internal {
namespace {

const AttributeValue* Resolve(const Condition::Operand& operand, const Item& item) {
  if (operand.path) return Find(item, *operand.path);
  return operand.value ? &*operand.value : nullptr;
}

// <0, 0, >0, or nullopt when the two are not ordered (absent, different types, maps, bools).
std::optional<int> Order(const AttributeValue& a, const AttributeValue& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() < b.as_int() ? -1 : (a.as_int() > b.as_int() ? 1 : 0);
    const double x = a.as_number(), y = b.as_number();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  return std::nullopt;
}

bool EvaluateCompare(const Condition& c, const Item& item) {
  const AttributeValue* lhs = Resolve(c.lhs(), item);
  const AttributeValue* rhs = Resolve(c.rhs(), item);
  if (c.op() == Condition::Op::kEq) return lhs && rhs && *lhs == *rhs;
  if (c.op() == Condition::Op::kNe) return !(lhs && rhs && *lhs == *rhs);
  if (!lhs || !rhs) return false;
  const std::optional<int> order = Order(*lhs, *rhs);
  if (!order) return false;
  switch (c.op()) {
    case Condition::Op::kLt:
      return *order < 0;
    case Condition::Op::kLe:
      return *order <= 0;
    case Condition::Op::kGt:
      return *order > 0;
    case Condition::Op::kGe:
      return *order >= 0;
    default:
      return false;
  }
}

absl::Status CheckName(const AttributePath& path) {
  if (path.name.empty() || (path.key && path.key->empty())) {
    return absl::InvalidArgumentError(absl::StrCat("empty attribute name in path '", path.ToString(), "'"));
  }
  return absl::OkStatus();
}

// The map that holds `path`'s last component: the item itself, or the map attribute `path.name`.
absl::StatusOr<AttributeMap*> Container(Item& item, const AttributePath& path) {
  if (!path.key) return &item;
  auto it = item.find(path.name);
  if (it == item.end() || !it->second.is_map()) {
    return absl::InvalidArgumentError(
        absl::StrCat("update path '", path.ToString(), "': '", path.name, "' is not a map attribute"));
  }
  return &it->second.as_map();
}

}  // namespace

bool Evaluate(const Condition& condition, const Item* current) {
  static const Item kEmpty;
  const Item& item = current ? *current : kEmpty;
  switch (condition.kind()) {
    case Condition::Kind::kAlways:
      return true;
    case Condition::Kind::kItemExists:
      return current != nullptr;
    case Condition::Kind::kItemAbsent:
      return current == nullptr;
    case Condition::Kind::kExists:
      return Find(item, *condition.path()) != nullptr;
    case Condition::Kind::kNotExists:
      return Find(item, *condition.path()) == nullptr;
    case Condition::Kind::kCompare:
      return EvaluateCompare(condition, item);
    case Condition::Kind::kAnd:
      for (const Condition& t : condition.terms()) {
        if (!Evaluate(t, current)) return false;
      }
      return true;
    case Condition::Kind::kOr:
      for (const Condition& t : condition.terms()) {
        if (Evaluate(t, current)) return true;
      }
      return false;
    case Condition::Kind::kNot:
      return !Evaluate(condition.terms()[0], current);
  }
  return false;
}

namespace {

// What one applied op replaced at its path: the value before it (nullopt: there was none).
struct Replaced {
  const AttributePath* path;
  std::optional<AttributeValue> before;
};

using ReplacedList = absl::InlinedVector<Replaced, 4>;

// Puts back, newest first, what the applied ops replaced: the item as it was before the first.
void Undo(Item& item, ReplacedList& replaced) {
  for (auto r = replaced.rbegin(); r != replaced.rend(); ++r) {
    // The state right after this op was applied, so its container is there.
    absl::StatusOr<AttributeMap*> container = Container(item, *r->path);
    if (!container.ok()) continue;  // unreachable: the op found it
    const std::string& leaf = r->path->key ? *r->path->key : r->path->name;
    if (r->before) {
      (*container)->insert_or_assign(leaf, std::move(*r->before));
    } else {
      (*container)->erase(leaf);
    }
  }
}

// One op on `m`'s `leaf`; what it replaced goes to `replaced` (when given). An error changes nothing.
absl::Status ApplyOne(AttributeMap& m, const std::string& leaf, const UpdateOp& op,
                      std::optional<AttributeValue>* replaced) {
  auto it = m.lower_bound(leaf);
  const bool found = it != m.end() && it->first == leaf;
  switch (op.kind) {
    case UpdateOp::Kind::kSet:
      if (!found) {
        m.emplace_hint(it, leaf, op.value);
      } else {
        if (replaced != nullptr) *replaced = std::move(it->second);
        it->second = op.value;
      }
      return absl::OkStatus();
    case UpdateOp::Kind::kRemove:
      if (found) {
        if (replaced != nullptr) *replaced = std::move(it->second);
        m.erase(it);
      }
      return absl::OkStatus();
    case UpdateOp::Kind::kAdd:
      if (!op.value.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat("ADD to '", op.path.ToString(), "' needs a number"));
      }
      if (!found) {
        m.emplace_hint(it, leaf, op.value);
        return absl::OkStatus();
      }
      if (!it->second.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat("ADD to '", op.path.ToString(), "', which holds a non-number"));
      }
      if (it->second.is_int() && op.value.is_int()) {
        int64_t sum = 0;
        if (__builtin_add_overflow(it->second.as_int(), op.value.as_int(), &sum)) {
          return absl::InvalidArgumentError(absl::StrCat("ADD to '", op.path.ToString(), "' overflows"));
        }
        if (replaced != nullptr) *replaced = it->second;
        it->second = AttributeValue(sum);
      } else {
        if (replaced != nullptr) *replaced = it->second;
        it->second = AttributeValue(it->second.as_number() + op.value.as_number());
      }
      return absl::OkStatus();
  }
  return absl::InternalError("unknown update op");
}

// `ops` applied to `item` in order. `undo`: an error leaves `item` as it was (a single op fails
// before it changes anything; with more, what each replaced is kept to undo them); otherwise the
// caller discards `item` on an error.
absl::Status ApplyOps(Item& item, const std::vector<UpdateOp>& ops, bool undo) {
  const bool keep = undo && ops.size() > 1;
  ReplacedList replaced;
  for (const UpdateOp& op : ops) {
    absl::Status s = CheckName(op.path);
    absl::StatusOr<AttributeMap*> container = s.ok() ? Container(item, op.path) : s;
    if (container.ok()) {
      const std::string& leaf = op.path.key ? *op.path.key : op.path.name;
      std::optional<AttributeValue> before;
      s = ApplyOne(**container, leaf, op, keep ? &before : nullptr);
      if (s.ok() && keep) replaced.push_back(Replaced{&op.path, std::move(before)});
    } else {
      s = container.status();
    }
    if (!s.ok()) {
      Undo(item, replaced);
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Item> ApplyUpdate(const Item* current, const std::vector<UpdateOp>& ops) {
  Item item = current ? *current : Item{};
  RETURN_IF_ERROR(ApplyOps(item, ops, /*undo=*/false));  // a copy: dropped on an error
  return item;
}

absl::Status ApplyUpdateInPlace(Item& item, const std::vector<UpdateOp>& ops) {
  return ApplyOps(item, ops, /*undo=*/true);
}

absl::Status ValidateKey(const ItemKey& key) {
  if (key.pk.empty() || key.sk.empty()) return absl::InvalidArgumentError("item key needs a non-empty pk and sk");
  return absl::OkStatus();
}

absl::Status ValidateQuery(const QueryRequest& request) {
  if (request.pk.empty()) return absl::InvalidArgumentError("query needs a non-empty pk");
  if (request.limit < 1 || request.limit > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("query limit ", request.limit, " is outside 1..1000"));
  }
  return absl::OkStatus();
}

absl::Status ValidateScan(const ScanRequest& request) {
  if (request.limit < 1 || request.limit > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("scan limit ", request.limit, " is outside 1..1000"));
  }
  return absl::OkStatus();
}

}  // namespace toolgate::store::internal
