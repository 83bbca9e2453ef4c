#include "toolgate/store/async_item_store.h"

#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "absl/synchronization/mutex.h"

namespace toolgate::store {

struct PooledAsyncItemStore::Pool {
  explicit Pool(int threads) : threads(static_cast<size_t>(threads < 1 ? 1 : threads)) {}
  boost::asio::thread_pool threads;
  absl::Mutex mu;
  int64_t outstanding ABSL_GUARDED_BY(mu) = 0;
  absl::CondVar idle;  // signalled when outstanding drops to 0
};

PooledAsyncItemStore::PooledAsyncItemStore(ItemStore& store, int threads)
    : store_(store), pool_(std::make_unique<Pool>(threads)) {}

PooledAsyncItemStore::~PooledAsyncItemStore() { pool_->threads.join(); }

template <typename F>
void PooledAsyncItemStore::Run(F operation) {
  {
    absl::MutexLock lock(&pool_->mu);
    ++pool_->outstanding;
  }
  boost::asio::post(pool_->threads, [pool = pool_.get(), operation = std::move(operation)]() mutable {
    operation();
    absl::MutexLock lock(&pool->mu);
    if (--pool->outstanding == 0) pool->idle.SignalAll();
  });
}

void PooledAsyncItemStore::AsyncGet(ItemKey key, GetCompletion done) {
  Run([this, key = std::move(key), done = std::move(done)]() mutable { std::move(done)(store_.Get(key)); });
}

void PooledAsyncItemStore::AsyncQuery(QueryRequest request, QueryCompletion done) {
  Run([this, request = std::move(request), done = std::move(done)]() mutable {
    std::move(done)(store_.Query(request));
  });
}

void PooledAsyncItemStore::AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) {
  Run([this, requests = std::move(requests), done = std::move(done)]() mutable {
    std::move(done)(store_.WriteBatch(requests));
  });
}

void PooledAsyncItemStore::WaitIdle() {
  // A CondVar wait, not an absl::Condition: no code of ours runs inside Abseil (the TSan wrapper).
  absl::MutexLock lock(&pool_->mu);
  while (pool_->outstanding > 0) pool_->idle.Wait(&pool_->mu);
}

}  // namespace toolgate::store
