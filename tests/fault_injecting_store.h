#pragma once

// A store wrapper that injects faults (hardening tests): errors on chosen keys or on everything (a
// store that dies and comes back), and a count of what it refused. Reads and writes are refused before
// they reach the store, so a refused write never happened — but for ApplyThenFailOnce's.

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "toolgate/store/forwarding_item_store.h"

namespace toolgate::testing {

class FaultInjectingStore final : public store::ForwardingItemStore {
 public:
  using KeyPredicate = std::function<bool(const store::ItemKey&)>;
  using ForwardingItemStore::ForwardingItemStore;

  // Every operation on a key `pred` accepts fails with `error` (scans and queries: when their pk does).
  void FailWhere(KeyPredicate pred, absl::Status error = absl::UnavailableError("injected: store unreachable")) {
    std::lock_guard lock(mu_);
    pred_ = std::move(pred);
    code_ = error.code();
    message_ = std::string(error.message());
  }
  // Every operation fails (the store is down), or none does.
  void SetDown(bool down) {
    FailWhere(down ? KeyPredicate([](const store::ItemKey&) { return true; }) : KeyPredicate());
  }
  int injected() const { return injected_.load(); }
  // The next write to a key `pred` accepts is applied, then answered with `error`: a write whose
  // outcome its caller cannot know (a DynamoDB timeout or 500 after the request went out). Once.
  void ApplyThenFailOnce(KeyPredicate pred, absl::Status error = absl::UnavailableError("injected: no answer")) {
    std::lock_guard lock(mu_);
    after_pred_ = std::move(pred);
    after_code_ = error.code();
    after_message_ = std::string(error.message());
  }

  absl::StatusOr<std::optional<store::Item>> Get(const store::ItemKey& key) override {
    if (auto e = Fault(key)) return *e;
    return ForwardingItemStore::Get(key);
  }
  absl::StatusOr<store::WriteResult> Put(const store::ItemKey& key, const store::Item& item,
                                         const store::Condition& condition) override {
    if (auto e = Fault(key)) return *e;
    auto r = ForwardingItemStore::Put(key, item, condition);
    if (auto e = FaultAfter(key)) return *e;
    return r;
  }
  using ItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& condition, store::ReturnValues returns) override {
    if (auto e = Fault(key)) return *e;
    auto r = ForwardingItemStore::Update(key, ops, condition, returns);
    if (auto e = FaultAfter(key)) return *e;
    return r;
  }
  absl::StatusOr<store::WriteResult> Erase(const store::ItemKey& key, const store::Condition& condition) override {
    if (auto e = Fault(key)) return *e;
    auto r = ForwardingItemStore::Erase(key, condition);
    if (auto e = FaultAfter(key)) return *e;
    return r;
  }
  absl::StatusOr<store::QueryPage> Query(const store::QueryRequest& request) override {
    if (auto e = Fault({request.pk, ""})) return *e;
    return ForwardingItemStore::Query(request);
  }
  // Batches go through the single-item operations above, one by one, so each meets its fault.
  std::vector<absl::StatusOr<store::WriteResult>> WriteBatch(
      const std::vector<store::WriteRequest>& requests) override {
    return ItemStore::WriteBatch(requests);
  }

 private:
  std::optional<absl::Status> Fault(const store::ItemKey& key) {
    std::lock_guard lock(mu_);
    if (!pred_ || !pred_(key)) return std::nullopt;
    injected_.fetch_add(1);
    // A fresh Status per call: a shared one would be a refcounted rep freed on whichever thread drops
    // it last, through atomics ThreadSanitizer cannot see inside the uninstrumented Abseil library.
    return absl::Status(code_, message_);
  }
  std::optional<absl::Status> FaultAfter(const store::ItemKey& key) {
    std::lock_guard lock(mu_);
    if (!after_pred_ || !after_pred_(key)) return std::nullopt;
    after_pred_ = {};
    injected_.fetch_add(1);
    return absl::Status(after_code_, after_message_);
  }
  std::mutex mu_;
  KeyPredicate pred_;
  KeyPredicate after_pred_;
  absl::StatusCode after_code_ = absl::StatusCode::kOk;
  std::string after_message_;
  absl::StatusCode code_ = absl::StatusCode::kOk;
  std::string message_;
  std::atomic<int> injected_{0};
};

}  // namespace toolgate::testing
