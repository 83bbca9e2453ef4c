#include "toolgate/engine/store_clock_watch.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace toolgate {

std::optional<StoreClockWatch::Say> StoreClockWatch::Observe(int64_t ahead_ms, int64_t now_ms) {
  const bool off = std::llabs(ahead_ms) > allowed_ms_;
  if (!off) {
    if (!off_) return std::nullopt;
    if (!within_since_ms_) within_since_ms_ = now_ms;
    if (now_ms - *within_since_ms_ < kCalmMs) return std::nullopt;
    off_ = false;
    within_since_ms_.reset();
    return Say{false, absl::StrFormat("this host's clock agrees with the store's again (within %.1f s)",
                                      static_cast<double>(allowed_ms_) / 1000)};
  }
  within_since_ms_.reset();
  if (off_ && now_ms - last_warned_ms_ < kRepeatMs) return std::nullopt;
  off_ = true;
  last_warned_ms_ = now_ms;
  return Say{
      true, absl::StrFormat("this host's clock is %.1f s %s the store's (DynamoDB's Date): more than half the smallest "
                            "max_clock_skew_s (%.1f s), so another host off the other way could take over this host's "
                            "live slot leases, probe and queue claims, or this host theirs. Fix its time sync (NTP)",
                            static_cast<double>(std::llabs(ahead_ms)) / 1000, ahead_ms > 0 ? "ahead of" : "behind",
                            static_cast<double>(allowed_ms_) * 2 / 1000)};
}

}  // namespace toolgate
