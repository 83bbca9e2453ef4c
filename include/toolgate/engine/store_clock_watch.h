#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace toolgate {

// What a gateway says about its host's clock against the store's (DynamoDB's `Date`, see
// DynamoDbItemStore::clock_reading). Leases, probe claims and queue claims are taken over only once
// they are `max_clock_skew_s` past their end, which assumes no two hosts' clocks are further apart;
// each host measures itself against the same clock, so a host off by more than half the smallest
// allowance could be beyond it from a host off the other way. Such a reading is warned about, again
// every kRepeatMs while it lasts, and its end noted once the readings have stayed within for kCalmMs
// (a clock near the bound, its readings each side of it by the header's 1 s steps, is one warning,
// not a warning and a note every few seconds). Not thread-safe (one loop reads).
class StoreClockWatch {
 public:
  static constexpr int64_t kRepeatMs = 300'000;
  static constexpr int64_t kCalmMs = 60'000;

  // `smallest_skew_s`: the smallest `max_clock_skew_s` of the configured connectors.
  explicit StoreClockWatch(int smallest_skew_s) : allowed_ms_(int64_t{smallest_skew_s} * 1000 / 2) {}

  struct Say {
    bool warning = false;  // else a note (back within)
    std::string text;
  };
  // The log line the reading `ahead_ms` (this host ahead of the store's clock; negative: behind) calls
  // for at `now_ms`, if any. `now_ms` is monotonic time (Clock::now_monotonic_ms): a wall clock that
  // steps, the very thing watched, would stretch or cut the repeat and the calm.
  std::optional<Say> Observe(int64_t ahead_ms, int64_t now_ms);

 private:
  const int64_t allowed_ms_;
  bool off_ = false;
  int64_t last_warned_ms_ = 0;
  std::optional<int64_t> within_since_ms_;  // while off_: since when the readings are within
};

}  // namespace toolgate
