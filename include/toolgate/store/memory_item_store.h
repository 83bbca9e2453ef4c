#pragma once

#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/clock.h"
#include "toolgate/store/item_store.h"

namespace toolgate::store {

// An ItemStore held in process memory: the test double, and the `memory` backend for a single
// process that needs no durability. One mutex guards every operation. Thread-safe.
class MemoryItemStore final : public ItemStore {
 public:
  // `clock` must outlive the store; it decides which items have expired.
  explicit MemoryItemStore(const Clock& clock) : clock_(clock) {}

  absl::StatusOr<std::optional<Item>> Get(const ItemKey& key) override;
  absl::StatusOr<WriteResult> Put(const ItemKey& key, const Item& item, const Condition& condition) override;
  using ItemStore::Update;
  absl::StatusOr<WriteResult> Update(const ItemKey& key, const std::vector<UpdateOp>& ops, const Condition& condition,
                                     ReturnValues returns) override;
  absl::StatusOr<WriteResult> Erase(const ItemKey& key, const Condition& condition) override;
  absl::StatusOr<QueryPage> Query(const QueryRequest& request) override;
  absl::StatusOr<ScanPage> Scan(const ScanRequest& request) override;
  std::string_view backend_name() const override { return "memory"; }

  // Deletes every expired item now; returns how many.
  int SweepExpired();

 private:
  using Key = std::pair<std::string, std::string>;
  const Item* Current(const Key& key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // nullptr when absent

  const Clock& clock_;
  mutable absl::Mutex mu_;
  std::map<Key, Item> items_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolgate::store
