#pragma once

#include <string_view>

namespace toolgate {

// Why a call was told to DEFER and retry later (design section 5). Stable strings: clients match them.
enum class DeferReason {
  kBreakerOpen,
  kProbeInFlight,
  kConcurrencyLimit,
  kIntentInProgress,
  kDownstreamThrottled,
  kStoreUnavailable,
  kGatewayOverloaded,  // this host ran out of descriptors, buffers or memory (never the connector's fault)
};

std::string_view ToString(DeferReason reason);

}  // namespace toolgate
