#pragma once

// Callbacks of queued calls (design §15, §17.5): the final execution view POSTed to the call's
// `callback_url`, signed, retried with backoff, at least once.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "api/gateway_context.h"

namespace toolgate::api {

// `sha256=<hex HMAC-SHA256(secret, delivery_id + "." + timestamp + "." + body)>`: the value of
// X-Toolgate-Signature. A receiver recomputes it from the X-Toolgate-Delivery-Id and
// X-Toolgate-Timestamp headers and the raw body, compares in constant time, and refuses timestamps
// too far from its own clock (replays).
std::string CallbackSignature(std::string_view secret, std::string_view delivery_id, std::string_view timestamp,
                              std::string_view body);

// The secret of [queue] callback_secret_env / callback_secret_file (a file's trailing newlines
// dropped); empty when neither is set or it cannot be read.
std::string ReadCallbackSecret(const QueueConfig& config);

// Works the store's pending deliveries (CallbackOutbox) on every instance: claims due ones (a
// lease of callback_timeout_ms + 30 s), reads the execution, POSTs its view as
// GET /v1/executions/{id} shows it with
//
//   Content-Type: application/json
//   X-Toolgate-Delivery-Id: dlv_<execution_id>   (the same on every attempt: deduplicate by it)
//   X-Toolgate-Timestamp:   <epoch seconds of this attempt>
//   X-Toolgate-Signature:   sha256=<hex>         (CallbackSignature)
//   X-Toolgate-Execution-Id: <execution_id>
//
// A 2xx answer ends it: CALLBACK_DELIVERED (delivery id, attempts, status) in the execution's
// ledger. Anything else is retried after callback_backoff_ms doubling up to callback_max_backoff_ms,
// for callback_retry_s from the first attempt; then CALLBACK_FAILED (attempts, last error). A
// delivery in flight when its instance stops is made again by whoever claims it after the lease.
// Redirects are not followed (a 3xx is a failure). At most 32 deliveries at once per instance.
//
// The secret is never logged. Lives on the gateway's io_context; store work on the gateway's pool.
// Start once; it stops when the gateway drains.
class CallbackDeliverer {
 public:
  CallbackDeliverer(GatewayContext& context, asio::io_context& io, std::string secret);
  ~CallbackDeliverer();
  void Start();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace toolgate::api
