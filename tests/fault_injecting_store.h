#pragma once

// A store wrapper that injects faults (hardening tests): errors on chosen keys or on everything (a
// store that dies and comes back), errors or refusals of writes only, and a count of what it refused. Reads and writes
// are refused before they reach the store, so a refused write never happened — but for ApplyThenFailOnce's.

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
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
  // Every write (Put, Update, Erase; a batch's one by one) to a key `pred` accepts fails with `error`
  // while reads go through: a store that can be read but not written (a full disk, a volume gone
  // read-only). `pred` is asked once for every write that reaches this store, so it can count them.
  void FailWritesWhere(KeyPredicate pred,
                       absl::Status error = absl::UnavailableError("injected: database or disk is full")) {
    std::lock_guard lock(mu_);
    write_pred_ = std::move(pred);
    write_refuses_ = false;
    write_code_ = error.code();
    write_message_ = std::string(error.message());
    write_nothing_written_ = store::NothingWritten(error);
  }
  // Every write to a key `pred` accepts is answered "the condition did not hold" without reaching
  // the store: a normal refusal (a full slot, a breaker probe another call took), not a fault.
  void RefuseWritesWhere(KeyPredicate pred) {
    std::lock_guard lock(mu_);
    write_pred_ = std::move(pred);
    write_refuses_ = true;
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
    if (auto w = WriteFault(key)) return *w;
    auto r = ForwardingItemStore::Put(key, item, condition);
    if (auto e = FaultAfter(key)) return *e;
    return r;
  }
  using ItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& condition, store::ReturnValues returns) override {
    if (auto e = Fault(key)) return *e;
    if (auto w = WriteFault(key)) return *w;
    auto r = ForwardingItemStore::Update(key, ops, condition, returns);
    if (auto e = FaultAfter(key)) return *e;
    return r;
  }
  absl::StatusOr<store::WriteResult> Erase(const store::ItemKey& key, const store::Condition& condition) override {
    if (auto e = Fault(key)) return *e;
    if (auto w = WriteFault(key)) return *w;
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
  std::optional<absl::StatusOr<store::WriteResult>> WriteFault(const store::ItemKey& key) {
    std::lock_guard lock(mu_);
    if (!write_pred_ || !write_pred_(key)) return std::nullopt;
    injected_.fetch_add(1);
    if (write_refuses_) return store::WriteResult::ConditionFailed();
    absl::Status error(write_code_, write_message_);
    return write_nothing_written_ ? store::MarkNothingWritten(std::move(error)) : error;
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
  KeyPredicate write_pred_;
  bool write_refuses_ = false;
  absl::StatusCode write_code_ = absl::StatusCode::kOk;
  std::string write_message_;
  bool write_nothing_written_ = false;  // the error carries the store's "nothing written" mark
  absl::StatusCode after_code_ = absl::StatusCode::kOk;
  std::string after_message_;
  absl::StatusCode code_ = absl::StatusCode::kOk;
  std::string message_;
  std::atomic<int> injected_{0};
};

}  // namespace toolgate::testing
