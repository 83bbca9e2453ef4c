#pragma once

#include "toolgate/store/item_store.h"

namespace toolgate::store {

// An ItemStore that forwards every call to another. Subclass it to observe or alter some calls
// (counting writes, injecting faults, adding latency) and leave the rest alone. Thread-safe when
// the target is. The target must outlive the wrapper.
class ForwardingItemStore : public ItemStore {
 public:
  explicit ForwardingItemStore(ItemStore& target) : target_(target) {}

  absl::StatusOr<std::optional<Item>> Get(const ItemKey& key) override { return target_.Get(key); }
  absl::StatusOr<WriteResult> Put(const ItemKey& key, const Item& item, const Condition& condition) override {
    return target_.Put(key, item, condition);
  }
  using ItemStore::Update;
  absl::StatusOr<WriteResult> Update(const ItemKey& key, const std::vector<UpdateOp>& ops, const Condition& condition,
                                     ReturnValues returns) override {
    return target_.Update(key, ops, condition, returns);
  }
  absl::StatusOr<WriteResult> Erase(const ItemKey& key, const Condition& condition) override {
    return target_.Erase(key, condition);
  }
  absl::StatusOr<QueryPage> Query(const QueryRequest& request) override { return target_.Query(request); }
  absl::StatusOr<ScanPage> Scan(const ScanRequest& request) override { return target_.Scan(request); }
  std::vector<absl::StatusOr<WriteResult>> WriteBatch(const std::vector<WriteRequest>& requests) override {
    return target_.WriteBatch(requests);
  }
  std::string_view backend_name() const override { return target_.backend_name(); }

 protected:
  ItemStore& target() { return target_; }

 private:
  ItemStore& target_;
};

}  // namespace toolgate::store
