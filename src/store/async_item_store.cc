#include "toolgate/store/async_item_store.h"

#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

namespace toolgate::store {

struct PooledAsyncItemStore::Pool {
  explicit Pool(int threads) : threads(static_cast<size_t>(threads < 1 ? 1 : threads)) {}
  boost::asio::thread_pool threads;
};

PooledAsyncItemStore::PooledAsyncItemStore(ItemStore& store, int threads)
    : store_(store), pool_(std::make_unique<Pool>(threads)) {}

PooledAsyncItemStore::~PooledAsyncItemStore() { pool_->threads.join(); }

void PooledAsyncItemStore::AsyncGet(ItemKey key, GetCompletion done) {
  boost::asio::post(pool_->threads, [this, key = std::move(key), done = std::move(done)]() mutable {
    std::move(done)(store_.Get(key));
  });
}

void PooledAsyncItemStore::AsyncQuery(QueryRequest request, QueryCompletion done) {
  boost::asio::post(pool_->threads, [this, request = std::move(request), done = std::move(done)]() mutable {
    std::move(done)(store_.Query(request));
  });
}

void PooledAsyncItemStore::AsyncWriteBatch(std::vector<WriteRequest> requests, WriteCompletion done) {
  boost::asio::post(pool_->threads, [this, requests = std::move(requests), done = std::move(done)]() mutable {
    std::move(done)(store_.WriteBatch(requests));
  });
}

}  // namespace toolgate::store
