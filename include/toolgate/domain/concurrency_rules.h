#pragma once

#include "absl/status/status.h"

namespace toolgate {

// One connector's in-flight limit settings (`[connectors.X]` max_in_flight, lease_ttl_s, ...; S6, S7).
struct ConcurrencyConfig {
  int max_in_flight = 16;    // slots summed over every thread, process and host (S6); 1..100000
  int lease_ttl_s = 35;      // a slot whose holder vanished comes back after this (S7)
  int max_clock_skew_s = 5;  // how far ahead another host's clock may run (S7)
  int shards = 1;            // items the semaphore is split over (`concurrency_shards`); 1..64, <= max_in_flight
  // The most of those slots one tenant may hold at once (`max_in_flight_per_tenant`), so that one
  // tenant's slow or abandoned calls cannot take every slot; 0: no share, any tenant may take them all.
  int max_in_flight_per_tenant = 0;
};

inline constexpr int kMaxInFlightLimit = 100000;
inline constexpr int kMaxConcurrencyShards = 64;

// kInvalidArgument naming the first bad field.
absl::Status Validate(const ConcurrencyConfig& config);

}  // namespace toolgate
