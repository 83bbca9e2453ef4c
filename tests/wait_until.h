#pragma once

#include <chrono>
#include <thread>

namespace toolgate::testing {

// Polls `done` every `poll` until it holds or `timeout` has passed; whether it held. Bounded, so a
// condition that never comes fails the test's next check instead of hanging it.
template <typename Pred>
bool WaitUntil(Pred done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace toolgate::testing
