#pragma once

#include "toolgate/engine/metrics.h"
#include "toolgate/services/circuit_breaker_service.h"
#include "toolgate/services/ledger.h"

namespace toolgate {

// Breaker transitions this instance won, into the metrics and the system audit ledger (CIRCUIT_OPENED,
// CIRCUIT_HALF_OPENED, CIRCUIT_CLOSED). Operator overrides are audited by the admin route itself,
// with their reason and requester. Thread-safe; an audit write that fails is logged, not retried.
class TransitionAuditor final : public BreakerTransitionListener {
 public:
  explicit TransitionAuditor(Metrics& metrics) : metrics_(metrics) {}
  // The ledger exists only once the services do; transitions before it are counted, not audited.
  void set_ledger(Ledger* ledger) { ledger_ = ledger; }
  void OnTransition(const BreakerTransition& t) override;

 private:
  Metrics& metrics_;
  Ledger* ledger_ = nullptr;
};

}  // namespace toolgate
