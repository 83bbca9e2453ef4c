#pragma once

#include "toolgate/clock.h"
#include "toolgate/engine/metrics.h"
#include "toolgate/engine/store_write_health.h"
#include "toolgate/store/forwarding_item_store.h"

namespace toolgate {

// Times every store operation for `toolgate_store_operation_seconds{backend, op}`, and records every
// write's outcome in `write_health` (/readyz, `toolgate status`). Thread-safe as its target is; the
// target, clock, metrics and write health must outlive it.
class MeteredItemStore final : public store::ForwardingItemStore {
 public:
  MeteredItemStore(store::ItemStore& target, const Clock& clock, Metrics& metrics, StoreWriteHealth& write_health);

  absl::StatusOr<std::optional<store::Item>> Get(const store::ItemKey& key) override;
  absl::StatusOr<store::WriteResult> Put(const store::ItemKey& key, const store::Item& item,
                                         const store::Condition& c) override;
  using ForwardingItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& c, store::ReturnValues r) override;
  absl::StatusOr<store::WriteResult> Erase(const store::ItemKey& key, const store::Condition& c) override;
  absl::StatusOr<store::QueryPage> Query(const store::QueryRequest& q) override;
  std::vector<absl::StatusOr<store::WriteResult>> WriteBatch(const std::vector<store::WriteRequest>& requests) override;

 private:
  template <typename F>
  auto Timed(const char* op, F f) -> decltype(f());

  const Clock& clock_;
  Metrics& metrics_;
  StoreWriteHealth& write_health_;
};

}  // namespace toolgate
