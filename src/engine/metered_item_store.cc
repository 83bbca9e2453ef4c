#include "toolgate/engine/metered_item_store.h"

#include <string>

namespace toolgate {

MeteredItemStore::MeteredItemStore(store::ItemStore& target, const Clock& clock, Metrics& metrics)
    : ForwardingItemStore(target), clock_(clock), metrics_(metrics) {}

template <typename F>
auto MeteredItemStore::Timed(const char* op, F f) -> decltype(f()) {
  const auto start = clock_.now_monotonic();
  auto r = f();
  metrics_.StoreOperation(std::string(backend_name()), op,
                          std::chrono::duration<double>(clock_.now_monotonic() - start).count());
  return r;
}

absl::StatusOr<std::optional<store::Item>> MeteredItemStore::Get(const store::ItemKey& key) {
  return Timed("get", [&] { return ForwardingItemStore::Get(key); });
}
absl::StatusOr<store::WriteResult> MeteredItemStore::Put(const store::ItemKey& key, const store::Item& item,
                                                         const store::Condition& c) {
  return Timed("put", [&] { return ForwardingItemStore::Put(key, item, c); });
}
absl::StatusOr<store::WriteResult> MeteredItemStore::Update(const store::ItemKey& key,
                                                            const std::vector<store::UpdateOp>& ops,
                                                            const store::Condition& c, store::ReturnValues r) {
  return Timed("update", [&] { return ForwardingItemStore::Update(key, ops, c, r); });
}
absl::StatusOr<store::WriteResult> MeteredItemStore::Erase(const store::ItemKey& key, const store::Condition& c) {
  return Timed("erase", [&] { return ForwardingItemStore::Erase(key, c); });
}
absl::StatusOr<store::QueryPage> MeteredItemStore::Query(const store::QueryRequest& q) {
  return Timed("query", [&] { return ForwardingItemStore::Query(q); });
}
std::vector<absl::StatusOr<store::WriteResult>> MeteredItemStore::WriteBatch(
    const std::vector<store::WriteRequest>& requests) {
  return Timed("batch", [&] { return ForwardingItemStore::WriteBatch(requests); });
}

}  // namespace toolgate
