#include "toolgate/domain/concurrency_rules.h"

#include "absl/strings/str_cat.h"

namespace toolgate {

absl::Status Validate(const ConcurrencyConfig& c) {
  if (c.max_in_flight < 1 || c.max_in_flight > kMaxInFlightLimit) {
    return absl::InvalidArgumentError(absl::StrCat("max_in_flight must be in 1..", kMaxInFlightLimit));
  }
  if (c.lease_ttl_s < 1) return absl::InvalidArgumentError("lease_ttl_s must be at least 1");
  if (c.max_clock_skew_s < 0 || c.max_clock_skew_s > 300) {
    return absl::InvalidArgumentError("max_clock_skew_s must be in 0..300");
  }
  if (c.shards < 1 || c.shards > kMaxConcurrencyShards) {
    return absl::InvalidArgumentError(absl::StrCat("concurrency_shards must be in 1..", kMaxConcurrencyShards));
  }
  if (c.shards > c.max_in_flight) {
    return absl::InvalidArgumentError("concurrency_shards must not exceed max_in_flight (each shard holds a slot)");
  }
  if (c.max_in_flight_per_tenant < 0 || c.max_in_flight_per_tenant > c.max_in_flight) {
    return absl::InvalidArgumentError("max_in_flight_per_tenant must be in 0..max_in_flight (0: no share)");
  }
  return absl::OkStatus();
}

}  // namespace toolgate
