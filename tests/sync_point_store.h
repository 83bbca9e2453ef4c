#pragma once

// Sync points for race tests, after RocksDB's test_util/sync_point.h: a test-only hook at a named
// point of a caller's store traffic — between its read and its conditional write — where the test
// runs the other party of the race it means to check, so the interleaving happens every time rather
// than once in a thousand runs.
//
//   SyncPointStore racing(store);
//   racing.BeforeWrite(1, SyncPointStore::KeyIs(key), [&] { /* the other caller wins here */ });
//   Service under_test(racing, clock);  // its first write to `key` now meets a changed item
//
// An action runs once, on the thread that reached the point, outside any lock of this store, so it
// may use the store (preferably the one underneath, so it meets no sync points itself) or block on a
// latch to order other threads. `fired()` counts the actions that ran: assert on it when a race that
// never happened would let the test pass for nothing.

#include <atomic>
#include <functional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "toolgate/store/forwarding_item_store.h"

namespace toolgate::testing {

// Thread-safe. The wrapped store must outlive it.
class SyncPointStore final : public store::ForwardingItemStore {
 public:
  using KeyPredicate = std::function<bool(const store::ItemKey&)>;
  using Action = std::function<void()>;

  static KeyPredicate AnyKey() {
    return [](const store::ItemKey&) { return true; };
  }
  static KeyPredicate KeyIs(store::ItemKey key) {
    return [key = std::move(key)](const store::ItemKey& k) { return k.pk == key.pk && k.sk == key.sk; };
  }

  using ForwardingItemStore::ForwardingItemStore;

  // Runs `action` right after the `nth` (1-based) read that `where` accepts has returned, before the
  // caller sees its result: a Get of the key, or a Query of its partition (seen as key {pk, ""}).
  void AfterRead(int nth, KeyPredicate where, Action action) {
    Add(Point::kAfterRead, nth, std::move(where), std::move(action));
  }
  // Runs `action` right before the `nth` (1-based) write that `where` accepts reaches the store: a
  // Put, Update or Erase of the key, or a request of a WriteBatch that writes it.
  void BeforeWrite(int nth, KeyPredicate where, Action action) {
    Add(Point::kBeforeWrite, nth, std::move(where), std::move(action));
  }

  // How many actions have run.
  int fired() const { return fired_.load(); }

  absl::StatusOr<std::optional<store::Item>> Get(const store::ItemKey& key) override {
    auto r = ForwardingItemStore::Get(key);
    Reach(Point::kAfterRead, key);
    return r;
  }
  absl::StatusOr<store::QueryPage> Query(const store::QueryRequest& request) override {
    auto r = ForwardingItemStore::Query(request);
    Reach(Point::kAfterRead, {request.pk, ""});
    return r;
  }
  absl::StatusOr<store::WriteResult> Put(const store::ItemKey& key, const store::Item& item,
                                         const store::Condition& condition) override {
    Reach(Point::kBeforeWrite, key);
    return ForwardingItemStore::Put(key, item, condition);
  }
  using ForwardingItemStore::Update;
  absl::StatusOr<store::WriteResult> Update(const store::ItemKey& key, const std::vector<store::UpdateOp>& ops,
                                            const store::Condition& condition, store::ReturnValues returns) override {
    Reach(Point::kBeforeWrite, key);
    return ForwardingItemStore::Update(key, ops, condition, returns);
  }
  absl::StatusOr<store::WriteResult> Erase(const store::ItemKey& key, const store::Condition& condition) override {
    Reach(Point::kBeforeWrite, key);
    return ForwardingItemStore::Erase(key, condition);
  }
  std::vector<absl::StatusOr<store::WriteResult>> WriteBatch(
      const std::vector<store::WriteRequest>& requests) override {
    for (const store::WriteRequest& r : requests) Reach(Point::kBeforeWrite, r.key);
    return ForwardingItemStore::WriteBatch(requests);
  }

 private:
  enum class Point { kAfterRead, kBeforeWrite };
  struct Armed {
    Point point;
    int nth;
    KeyPredicate where;
    Action action;  // empty once run
    int seen = 0;
  };

  void Add(Point point, int nth, KeyPredicate where, Action action) {
    absl::MutexLock lock(&mu_);
    armed_.push_back({point, nth, std::move(where), std::move(action)});
  }

  // Counts this pass at every armed point it matches and runs the actions that came due.
  void Reach(Point point, const store::ItemKey& key) {
    std::vector<Action> due;
    {
      absl::MutexLock lock(&mu_);
      for (Armed& a : armed_) {
        if (a.point != point || !a.action || !a.where(key)) continue;
        if (++a.seen == a.nth) due.push_back(std::exchange(a.action, nullptr));
      }
    }
    for (Action& action : due) {
      action();
      fired_.fetch_add(1);
    }
  }

  absl::Mutex mu_;
  std::vector<Armed> armed_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> fired_{0};
};

}  // namespace toolgate::testing
