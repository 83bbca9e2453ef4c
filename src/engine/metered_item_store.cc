#include "toolgate/engine/metered_item_store.h"

#include <string>

namespace toolgate {

MeteredItemStore::MeteredItemStore(store::ItemStore& target, const Clock& clock, Metrics& metrics,
                                   StoreWriteHealth& write_health)
    : ForwardingItemStore(target), clock_(clock), metrics_(metrics), write_health_(write_health) {}

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
  auto result = Timed("put", [&] { return ForwardingItemStore::Put(key, item, c); });
  write_health_.Record(result);
  return result;
}
absl::StatusOr<store::WriteResult> MeteredItemStore::Update(const store::ItemKey& key,
                                                            const std::vector<store::UpdateOp>& ops,
                                                            const store::Condition& c, store::ReturnValues r) {
  auto result = Timed("update", [&] { return ForwardingItemStore::Update(key, ops, c, r); });
  write_health_.Record(result);
  return result;
}
absl::StatusOr<store::WriteResult> MeteredItemStore::Erase(const store::ItemKey& key, const store::Condition& c) {
  auto result = Timed("erase", [&] { return ForwardingItemStore::Erase(key, c); });
  write_health_.Record(result);
  return result;
}
absl::StatusOr<store::QueryPage> MeteredItemStore::Query(const store::QueryRequest& q) {
  return Timed("query", [&] { return ForwardingItemStore::Query(q); });
}
std::vector<absl::StatusOr<store::WriteResult>> MeteredItemStore::WriteBatch(
    const std::vector<store::WriteRequest>& requests) {
  auto result = Timed("batch", [&] { return ForwardingItemStore::WriteBatch(requests); });
  write_health_.Record(result);
  return result;
}

}  // namespace toolgate
