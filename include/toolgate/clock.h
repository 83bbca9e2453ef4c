#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace toolgate {

// The only way toolgate code reads time. Wall time (`now_system`) is what is shown to people and
// shared between hosts through the store (cooldowns, lease expiries); monotonic time
// (`now_monotonic`) measures intervals (latencies, timeouts). Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point now_system() const = 0;
  virtual std::chrono::steady_clock::time_point now_monotonic() const = 0;

  // Convenience views of now_system().
  int64_t now_epoch_ms() const;
  // Wall time in whole epoch seconds, rounded down.
  int64_t now_epoch_sec() const;
  // Convenience view of now_monotonic(): ms since an arbitrary start, never stepping back.
  int64_t now_monotonic_ms() const;
};

// The real clock. Stateless; construct one in main and pass it down.
class SystemClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now_system() const override;
  std::chrono::steady_clock::time_point now_monotonic() const override;
};

// A clock that moves only when told to, for tests and simulations. Both views advance together.
// Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_epoch_ms = 1'800'000'000'000);

  std::chrono::system_clock::time_point now_system() const override;
  std::chrono::steady_clock::time_point now_monotonic() const override;

  void advance(std::chrono::milliseconds d);
  void set_epoch_ms(int64_t epoch_ms);
  // The wall clock stepped (an operator, NTP) by `d`, either way; monotonic time does not move.
  void step_wall(std::chrono::milliseconds d);

 private:
  std::atomic<int64_t> epoch_ms_;
  std::atomic<int64_t> monotonic_ms_{0};
};

}  // namespace toolgate
