#pragma once

#include <atomic>
#include <mutex>
#include <vector>

#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/store/forwarding_item_store.h"

namespace toolgate::testing {

// Records every breaker transition reported to it.
class RecordingListener final : public BreakerTransitionListener {
 public:
  void OnTransition(const BreakerTransition& t) override {
    std::lock_guard lock(mu_);
    transitions_.push_back(t);
  }
  std::vector<BreakerTransition> transitions() const {
    std::lock_guard lock(mu_);
    return transitions_;
  }
  int count(BreakerTransition::Cause cause) const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& t : transitions_) n += t.cause == cause ? 1 : 0;
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::vector<BreakerTransition> transitions_;
};

// Counts the writes (Put, Update, Erase) and reads that reach the store.
class CountingItemStore final : public store::ForwardingItemStore {
 public:
  using ForwardingItemStore::ForwardingItemStore;
  absl::StatusOr<std::optional<store::Item>> Get(const store::ItemKey& key) override {
    reads.fetch_add(1);
    return ForwardingItemStore::Get(key);
  }
  absl::StatusOr<store::WriteResult> Put(const store::ItemKey& key, const store::Item& item,
                                         const store::Condition& c) override {
    writes.fetch_add(1);
    return ForwardingItemStore::Put(key, item, c);
  }
  using ForwardingItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& c, store::ReturnValues returns) override {
    writes.fetch_add(1);
    return ForwardingItemStore::Update(key, ops, c, returns);
  }
  absl::StatusOr<store::WriteResult> Erase(const store::ItemKey& key, const store::Condition& c) override {
    writes.fetch_add(1);
    return ForwardingItemStore::Erase(key, c);
  }
  std::atomic<int> reads{0};
  std::atomic<int> writes{0};
};

}  // namespace toolgate::testing
