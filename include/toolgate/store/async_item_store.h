#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "toolgate/store/item_store.h"

namespace toolgate::store {

// The asynchronous store port (DESIGN §16 item 1): an operation is submitted with a completion, and
// no thread of the caller's waits for it. The store calls the completion exactly once, from the
// thread that finished the operation — for SQLite a write from its writer thread, a read at once on
// the caller's own thread (a WAL reader never waits for the writer). The completion moves the
// result to wherever the caller goes on: store/awaitable_item_store.h resumes a coroutine on its
// own executor.
//
// Same semantics as ItemStore (each write decided by its own condition, `requires_back`, TTL,
// the status codes); WriteBatch's results come back as one vector, in request order.
//
// Thread-safe. A store must outlive the completions it has not called yet; destroying one finishes
// (or fails) every submitted operation and calls its completion first.
class AsyncItemStore {
 public:
  using WriteResults = std::vector<absl::StatusOr<WriteResult>>;
  using GetCompletion = absl::AnyInvocable<void(absl::StatusOr<std::optional<Item>>) &&>;
  using QueryCompletion = absl::AnyInvocable<void(absl::StatusOr<QueryPage>) &&>;
  using WriteCompletion = absl::AnyInvocable<void(WriteResults) &&>;

  virtual ~AsyncItemStore() = default;

  virtual void AsyncGet(ItemKey key, GetCompletion done) = 0;
  virtual void AsyncQuery(QueryRequest request, QueryCompletion done) = 0;
  virtual void AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) = 0;
  // Returns once every operation submitted before the call has finished and its completion has
  // returned. For an owner about to destroy what the completions post to (a gateway's event loops,
  // after they stopped): nothing the store still holds can reach them afterwards.
  virtual void WaitIdle() = 0;
  // Whether a read costs no more than a local lookup (SQLite: a WAL reader on the caller's own
  // thread), so that a caller on an event loop may make it through the synchronous port there.
  // False (DynamoDB): each read is a round trip, which an event loop must not wait for.
  virtual bool ReadsAreLocal() const { return false; }
};

// Any ItemStore on the port: each operation runs on one of `threads` threads of the adapter's own,
// as the gateway's store threads run them. For a backend without an asynchronous path of its own
// (memory; SQLite and DynamoDB have theirs), and for tests over a wrapped store. `store` must outlive
// the adapter; the destructor waits for the operations under way and runs the queued ones.
class PooledAsyncItemStore final : public AsyncItemStore {
 public:
  PooledAsyncItemStore(ItemStore& store, int threads);
  ~PooledAsyncItemStore() override;

  PooledAsyncItemStore(const PooledAsyncItemStore&) = delete;
  PooledAsyncItemStore& operator=(const PooledAsyncItemStore&) = delete;

  void AsyncGet(ItemKey key, GetCompletion done) override;
  void AsyncQuery(QueryRequest request, QueryCompletion done) override;
  void AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) override;
  void WaitIdle() override;

 private:
  struct Pool;
  // Runs `operation` (the store call and its completion) on the pool, counted until it returns.
  template <typename F>
  void Run(F operation);
  ItemStore& store_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace toolgate::store
