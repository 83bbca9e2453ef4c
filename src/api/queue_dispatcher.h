#pragma once

// The queue's dispatchers (design §15, §17.4): per connector, `[connectors.X.queue] workers`
// coroutines on this instance work that connector's queue — and only it, so one connector's backlog
// never occupies another's workers.

#include <boost/asio/io_context.hpp>
#include <memory>
#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include "api/gateway_context.h"

namespace toolgate::api {

// Each worker, in turn by tenant (one call per tenant with ready calls per round): reads the tenant's
// next ready item, checks kill switches (S8), takes a slot (S6), then claims the item (a lease on the
// store); a lost claim gives the slot back. The claimed item runs through ToolInvoker::AdmitClaimed
// and the same connector call and Complete as a synchronous call (api/invocation.h). An OPEN breaker
// or a connector-wide Retry-After parks the connector's workers until it passes (no claims; one
// worker per lane still walks the queue, ending items past their deadline EXPIRED unrun). An idle worker polls with
// backoff (10 ms doubling up to
// `[queue] poll_interval_ms`) and writes nothing.
//
// Also publishes toolgate_queue_depth / toolgate_queue_oldest_age_seconds (fleet-wide) every
// poll interval (at least 1 s).
//
// Lives on the gateway's io_context; store work on the gateway's pool. Start once; the workers end
// when the gateway drains (a claimed item not yet running is given back at once; running ones finish
// and are counted in `in_flight`).
class QueueDispatcher {
 public:
  QueueDispatcher(GatewayContext& context, asio::io_context& io);
  ~QueueDispatcher();

  void Start();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace toolgate::api
