#pragma once

// The asynchronous store port as Asio operations: `co_await AsyncWriteBatch(store, requests,
// asio::use_awaitable)` submits the batch and resumes the coroutine on its own executor once the
// store has finished it. No thread waits in between: the completion posts the result to that
// executor (a work guard keeps its io_context running meanwhile).
//
// Name the operation before awaiting it (`auto op = AsyncGet(...); auto r = co_await std::move(op);`):
// g++ 12 destroys non-trivial temporaries of a co_await expression, such as a key built in place,
// twice.

#include <utility>
#include <vector>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <type_traits>

#include "toolgate/store/async_item_store.h"

namespace toolgate::store {

namespace internal {

// A store completion that hands `result` to the Asio handler on the handler's own executor.
template <typename Handler, typename Result>
auto ResumeOnOwnExecutor(Handler handler) {
  auto work = boost::asio::make_work_guard(boost::asio::get_associated_executor(handler));
  return [handler = std::move(handler), work = std::move(work)](Result result) mutable {
    auto executor = work.get_executor();
    boost::asio::post(executor, [handler = std::move(handler), result = std::move(result)]() mutable {
      std::move(handler)(std::move(result));
    });
    work.reset();
  };
}

// The body of RunBlocking. `f` is a coroutine parameter so that it lives in the coroutine frame (a
// lambda coroutine's captures would die with the lambda object before the pool runs it).
template <typename F>
boost::asio::awaitable<std::invoke_result_t<F>> CallOnPool(F f) {
  co_return f();
}

}  // namespace internal

// Runs blocking store work (a synchronous ItemStore call, or a service's that makes them) on `pool`
// and resumes the awaiting coroutine on its own executor with the result. The one way the event
// loops (api) and the engine's coroutines (StoreDrive::blocking) keep a blocking call off a loop.
template <typename F>
boost::asio::awaitable<std::invoke_result_t<F>> RunBlocking(boost::asio::thread_pool& pool, F f) {
  co_return co_await boost::asio::co_spawn(pool, internal::CallOnPool(std::move(f)), boost::asio::use_awaitable);
}

template <typename CompletionToken>
auto AsyncGet(AsyncItemStore& store, ItemKey key, CompletionToken&& token) {
  using Result = absl::StatusOr<std::optional<Item>>;
  return boost::asio::async_initiate<CompletionToken, void(Result)>(
      [&store](auto handler, ItemKey key) {
        store.AsyncGet(std::move(key), internal::ResumeOnOwnExecutor<decltype(handler), Result>(std::move(handler)));
      },
      token, std::move(key));
}

template <typename CompletionToken>
auto AsyncQuery(AsyncItemStore& store, QueryRequest request, CompletionToken&& token) {
  using Result = absl::StatusOr<QueryPage>;
  return boost::asio::async_initiate<CompletionToken, void(Result)>(
      [&store](auto handler, QueryRequest request) {
        store.AsyncQuery(std::move(request),
                         internal::ResumeOnOwnExecutor<decltype(handler), Result>(std::move(handler)));
      },
      token, std::move(request));
}

template <typename CompletionToken>
auto AsyncWriteBatch(AsyncItemStore& store, std::vector<WriteRequest> requests, CompletionToken&& token) {
  using Result = AsyncItemStore::WriteResults;
  return boost::asio::async_initiate<CompletionToken, void(Result)>(
      [&store](auto handler, std::vector<WriteRequest> requests) {
        store.AsyncWriteBatch(std::move(requests),
                              internal::ResumeOnOwnExecutor<decltype(handler), Result>(std::move(handler)));
      },
      token, std::move(requests));
}

}  // namespace toolgate::store
