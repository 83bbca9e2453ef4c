#include "toolgate/store/memory_item_store.h"

#include "store/item_ops.h"
#include "toolgate/status_macros.h"

namespace toolgate::store {

using internal::ApplyUpdate;
using internal::Evaluate;

const Item* MemoryItemStore::Current(const Key& key) const {
  auto it = items_.find(key);
  return it == items_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::optional<Item>> MemoryItemStore::Get(const ItemKey& key) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  absl::MutexLock lock(&mu_);
  const Item* item = Current({key.pk, key.sk});
  if (item == nullptr || IsExpired(*item, clock_.now_epoch_sec())) return std::nullopt;
  return std::optional<Item>(*item);
}

absl::StatusOr<WriteResult> MemoryItemStore::Put(const ItemKey& key, const Item& item, const Condition& condition) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  absl::MutexLock lock(&mu_);
  if (!Evaluate(condition, Current({key.pk, key.sk}))) return WriteResult::ConditionFailed();
  items_.insert_or_assign(Key{key.pk, key.sk}, item);
  return WriteResult{true, item};
}

absl::StatusOr<WriteResult> MemoryItemStore::Update(const ItemKey& key, const std::vector<UpdateOp>& ops,
                                                    const Condition& condition, ReturnValues returns) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  absl::MutexLock lock(&mu_);
  Key k{key.pk, key.sk};
  const Item* current = Current(k);
  if (!Evaluate(condition, current)) return WriteResult::ConditionFailed();
  ASSIGN_OR_RETURN(Item updated, ApplyUpdate(current, ops));
  WriteResult result{true, returns == ReturnValues::kAllNew ? updated : Item{}};
  items_.insert_or_assign(std::move(k), std::move(updated));
  return result;
}

absl::StatusOr<WriteResult> MemoryItemStore::Erase(const ItemKey& key, const Condition& condition) {
  RETURN_IF_ERROR(internal::ValidateKey(key));
  absl::MutexLock lock(&mu_);
  if (!Evaluate(condition, Current({key.pk, key.sk}))) return WriteResult::ConditionFailed();
  items_.erase(Key{key.pk, key.sk});
  return WriteResult{true, {}};
}

absl::StatusOr<QueryPage> MemoryItemStore::Query(const QueryRequest& request) {
  RETURN_IF_ERROR(internal::ValidateQuery(request));
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.now_epoch_sec();
  QueryPage page;
  auto take = [&](const auto& entry) {
    const std::string& sk = entry.first.second;
    if (entry.first.first != request.pk || sk.compare(0, request.sk_prefix.size(), request.sk_prefix) != 0) {
      return true;
    }
    if (IsExpired(entry.second, now)) return true;
    if (static_cast<int>(page.items.size()) == request.limit) {
      page.last_sk = page.items.back().first;
      return false;
    }
    page.items.emplace_back(sk, entry.second);
    return true;
  };
  if (!request.descending) {
    auto it = request.after ? items_.upper_bound({request.pk, *request.after})
                            : items_.lower_bound({request.pk, request.sk_prefix});
    for (; it != items_.end() && it->first.first == request.pk; ++it) {
      if (!take(*it)) break;
    }
  } else {
    // Start just before `after`, or after the last key with the prefix.
    auto it = request.after ? items_.lower_bound({request.pk, *request.after})
                            : items_.lower_bound({request.pk, request.sk_prefix + "\xff"});
    while (it != items_.begin()) {
      --it;
      if (it->first.first != request.pk) break;
      if (!take(*it)) break;
    }
  }
  return page;
}

absl::StatusOr<ScanPage> MemoryItemStore::Scan(const ScanRequest& request) {
  RETURN_IF_ERROR(internal::ValidateScan(request));
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.now_epoch_sec();
  ScanPage page;
  auto it = request.after ? items_.upper_bound({request.after->pk, request.after->sk})
                          : items_.lower_bound({request.pk_prefix, ""});
  int examined = 0;
  for (; it != items_.end(); ++it) {
    const auto& [pk, sk] = it->first;
    if (pk.compare(0, request.pk_prefix.size(), request.pk_prefix) != 0) break;  // past the prefix range
    if (examined == request.limit) {
      page.last_key = ItemKey{std::prev(it)->first.first, std::prev(it)->first.second};
      break;
    }
    ++examined;
    if (sk.compare(0, request.sk_prefix.size(), request.sk_prefix) != 0 || IsExpired(it->second, now)) continue;
    page.items.push_back({ItemKey{pk, sk}, it->second});
  }
  return page;
}

int MemoryItemStore::SweepExpired() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_.now_epoch_sec();
  int swept = 0;
  for (auto it = items_.begin(); it != items_.end();) {
    if (IsExpired(it->second, now)) {
      it = items_.erase(it);
      ++swept;
    } else {
      ++it;
    }
  }
  return swept;
}

}  // namespace toolgate::store
