#pragma once

#include <map>
#include <mutex>
#include <utility>

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
  absl::StatusOr<WriteResult> Update(const ItemKey& key, const std::vector<UpdateOp>& ops,
                                     const Condition& condition, ReturnValues returns) override;
  absl::StatusOr<WriteResult> Erase(const ItemKey& key, const Condition& condition) override;
  absl::StatusOr<QueryPage> Query(const QueryRequest& request) override;
  absl::StatusOr<ScanPage> Scan(const ScanRequest& request) override;
  std::string_view backend_name() const override { return "memory"; }

  // Deletes every expired item now; returns how many.
  int SweepExpired();

 private:
  using Key = std::pair<std::string, std::string>;
  const Item* Current(const Key& key) const;  // nullptr when absent. REQUIRES: mu_ held

  const Clock& clock_;
  mutable std::mutex mu_;
  std::map<Key, Item> items_;  // GUARDED_BY(mu_)
};

}  // namespace toolgate::store
