#include "toolgate/engine/transition_auditor.h"

#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace toolgate {

void TransitionAuditor::OnTransition(const BreakerTransition& t) {
  metrics_.OnTransition(t);
  if (ledger_ == nullptr) return;
  using Cause = BreakerTransition::Cause;
  std::string type;
  switch (t.cause) {
    case Cause::kFailureThreshold:
    case Cause::kProbeFailed:
    case Cause::kProbeThrottled: type = "CIRCUIT_OPENED"; break;
    case Cause::kProbeClaimed:
    case Cause::kProbeTakenOver: type = "CIRCUIT_HALF_OPENED"; break;
    case Cause::kProbeSucceeded: type = "CIRCUIT_CLOSED"; break;
    default: return;  // operator actions and returned probes
  }
  const nlohmann::json data = {{"connector_id", t.connector_id},
                               {"from", std::string(breaker::ToString(t.from))},
                               {"to", std::string(breaker::ToString(t.to))},
                               {"cause", std::string(ToString(t.cause))},
                               {"generation", t.generation}};
  if (auto e = ledger_->Audit(type, "system", data.dump()); !e.ok()) {
    spdlog::warn("audit of {} for {} not written: {}", type, t.connector_id, e.status().ToString());
  }
}

}  // namespace toolgate
