#pragma once

// Condition evaluation and update application over an in-memory item, shared by the adapters that
// evaluate conditions themselves (memory, SQLite). Pure functions; thread-compatible.

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "toolgate/store/condition.h"
#include "toolgate/store/item.h"
#include "toolgate/store/item_store.h"

namespace toolgate::store::internal {

// Evaluates `condition` on `current` (nullptr: the item does not exist).
bool Evaluate(const Condition& condition, const Item* current);

// Returns `current` (nullptr: an empty item) with `ops` applied in order.
// kInvalidArgument: ADD to a non-number, SET/REMOVE into an attribute that is not a map, a path into
// a map that does not exist (as DynamoDB), or an op on a reserved name.
absl::StatusOr<Item> ApplyUpdate(const Item* current, const std::vector<UpdateOp>& ops);
// The same on `item` itself (no copy), whole or not at all: on an error `item` is as it was (the
// ops applied before the failing one are undone, from what they replaced, without copying it).
absl::Status ApplyUpdateInPlace(Item& item, const std::vector<UpdateOp>& ops);

// kInvalidArgument when a key or query is malformed (empty pk, limit out of range).
absl::Status ValidateKey(const ItemKey& key);
absl::Status ValidateQuery(const QueryRequest& request);
absl::Status ValidateScan(const ScanRequest& request);

}  // namespace toolgate::store::internal
